//! NTFS through the `ntfs` crate.

use std::sync::Arc;

use fuser::Errno;

use super::tree::{ListedEntry, NodeAttributes, TreeSource};
use crate::engine::device::BlockDevice;

/// Not readable yet: loading says so, and the mount fails with that reason.
pub(super) struct NtfsSource;

impl NtfsSource {
    pub(super) fn load(_device: Arc<dyn BlockDevice>) -> Result<NtfsSource, String> {
        Err(
            "showing NTFS files is not implemented yet; mount the image-file view instead"
                .to_string(),
        )
    }
}

impl TreeSource for NtfsSource {
    fn attributes(&mut self, _path: &[u8]) -> Result<NodeAttributes, Errno> {
        Err(Errno::ENOSYS)
    }
    fn list_directory(&mut self, _path: &[u8]) -> Result<Vec<ListedEntry>, Errno> {
        Err(Errno::ENOSYS)
    }
    fn read_link(&mut self, _path: &[u8]) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }
    fn open_file(&mut self, _path: &[u8]) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }
    fn read_file(&mut self, _handle: u64, _offset: u64, _size: u32) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }
    fn close_file(&mut self, _handle: u64) {}
    fn capacity(&mut self) -> (u64, u32) {
        (0, 4096)
    }
}
