//! An export's transmission flags, against an empty device.

use super::*;

struct Empty;

impl BlockDevice for Empty {
    fn size(&self) -> u64 {
        0
    }
    fn read_at(&self, _offset: u64, _buffer: &mut [u8]) -> io::Result<()> {
        Ok(())
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        false
    }
}

#[test]
fn only_read_only_exports_offer_several_connections() {
    let export = |read_only| ExportSpec {
        device: Arc::new(Empty),
        name: "x".to_string(),
        read_only,
    };
    let share = export(true).transmission_flags();
    assert_ne!(share & TRANSMISSION_CAN_MULTI_CONN, 0);
    assert_ne!(share & TRANSMISSION_READ_ONLY, 0);
    let attachment = export(false).transmission_flags();
    assert_eq!(attachment & TRANSMISSION_CAN_MULTI_CONN, 0);
    assert_ne!(attachment & TRANSMISSION_SEND_TRIM, 0);
}
