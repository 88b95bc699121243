//! A small NBD client for tests that must see every failure (a service killed mid-request
//! answers nothing): fixed newstyle negotiation with NBD_OPT_GO, then one request at a time.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_FLUSH: u16 = 3;

const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub struct NbdClient {
    stream: UnixStream,
    pub size: u64,
    pub transmission_flags: u16,
    next_handle: u64,
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl NbdClient {
    /// Connects to the export `name` on the Unix socket `socket`.
    pub fn connect(socket: &Path, name: &str) -> io::Result<NbdClient> {
        let mut stream = UnixStream::connect(socket)?;
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting)?;
        if &greeting[0..8] != b"NBDMAGIC" || &greeting[8..16] != b"IHAVEOPT" {
            return Err(protocol_error("not a newstyle NBD server"));
        }
        // NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES.
        stream.write_all(&3u32.to_be_bytes())?;
        let mut option = Vec::new();
        option.extend_from_slice(b"IHAVEOPT");
        option.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
        option.extend_from_slice(&((4 + name.len() + 2) as u32).to_be_bytes());
        option.extend_from_slice(&(name.len() as u32).to_be_bytes());
        option.extend_from_slice(name.as_bytes());
        option.extend_from_slice(&0u16.to_be_bytes());
        stream.write_all(&option)?;
        let mut size = 0;
        let mut transmission_flags = 0;
        loop {
            let mut header = [0u8; 20];
            stream.read_exact(&mut header)?;
            let reply_type = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
            let length = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
            let mut data = vec![0u8; length as usize];
            stream.read_exact(&mut data)?;
            match reply_type {
                1 => break, // NBD_REP_ACK
                3 if data.len() >= 12 && data[0..2] == [0, 0] => {
                    size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                    transmission_flags = u16::from_be_bytes([data[10], data[11]]);
                }
                3 => {}
                error => return Err(protocol_error(format!("NBD_OPT_GO refused: {error:#x}"))),
            }
        }
        Ok(NbdClient {
            stream,
            size,
            transmission_flags,
            next_handle: 1,
        })
    }

    /// Sends one request and waits for its simple reply: the NBD error and any read data.
    pub fn request(
        &mut self,
        command: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> io::Result<(u32, Vec<u8>)> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut request = Vec::with_capacity(28 + payload.len());
        request.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        request.extend_from_slice(&0u16.to_be_bytes());
        request.extend_from_slice(&command.to_be_bytes());
        request.extend_from_slice(&handle.to_be_bytes());
        request.extend_from_slice(&offset.to_be_bytes());
        request.extend_from_slice(&length.to_be_bytes());
        request.extend_from_slice(payload);
        self.stream.write_all(&request)?;
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply)?;
        if u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) != SIMPLE_REPLY_MAGIC {
            return Err(protocol_error("bad reply magic"));
        }
        if u64::from_be_bytes(reply[8..16].try_into().expect("8 bytes")) != handle {
            return Err(protocol_error("reply to another request"));
        }
        let error = u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]);
        let mut data = Vec::new();
        if command == CMD_READ && error == 0 {
            data.resize(length as usize, 0);
            self.stream.read_exact(&mut data)?;
        }
        Ok((error, data))
    }

    /// Writes `data` at `offset`; an NBD error is an I/O error.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self.request(CMD_WRITE, offset, data.len() as u32, data)? {
            (0, _) => Ok(()),
            (error, _) => Err(io::Error::other(format!("NBD write error {error}"))),
        }
    }

    /// Flushes; when this returns Ok, every write acknowledged before it is durable.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.request(CMD_FLUSH, 0, 0, &[])? {
            (0, _) => Ok(()),
            (error, _) => Err(io::Error::other(format!("NBD flush error {error}"))),
        }
    }
}
