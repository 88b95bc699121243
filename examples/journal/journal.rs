//! The journal: an append-only file of fixed-size records, the lock that holds appends during
//! a freeze, and the check that a copy holds only whole, consecutive records.
//!
//! **Invariant:** an append happens only under a shared lock on `<journal>.lock`, and the
//! writer's freeze takes that lock exclusively, so while a freeze holds, the journal file does
//! not change and every record in it is whole and durable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes per record.
pub const RECORD_SIZE: usize = 64;
const MAGIC: &[u8; 4] = b"JRNL";
const PAYLOAD_SIZE: usize = RECORD_SIZE - 4 - 8 - 8 - 4;

/// Where the append lock of a journal lives.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock takes a valid descriptor (borrowed from `file`) and an operation constant.
    let result = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_lock(journal: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path(journal))
}

/// Encodes one record: magic, sequence, time, payload, CRC-32 of everything before it.
pub fn encode_record(sequence: u64, unix_nanos: u64, payload: &[u8]) -> [u8; RECORD_SIZE] {
    let mut record = [0u8; RECORD_SIZE];
    record[..4].copy_from_slice(MAGIC);
    record[4..12].copy_from_slice(&sequence.to_le_bytes());
    record[12..20].copy_from_slice(&unix_nanos.to_le_bytes());
    let length = payload.len().min(PAYLOAD_SIZE);
    record[20..20 + length].copy_from_slice(&payload[..length]);
    let crc = crc32fast::hash(&record[..RECORD_SIZE - 4]);
    record[RECORD_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    record
}

/// An open journal that appends records.
pub struct Journal {
    file: File,
    lock: File,
    next_sequence: u64,
}

impl Journal {
    /// Opens (or creates) the journal; the next sequence follows the records already there.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let length = file.metadata()?.len();
        Ok(Self {
            file,
            lock: open_lock(path)?,
            next_sequence: length / RECORD_SIZE as u64,
        })
    }

    /// Appends one record and makes it durable, waiting while a freeze holds appends.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<u64> {
        flock(&self.lock, libc::LOCK_SH)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        let sequence = self.next_sequence;
        let written = self
            .file
            .write_all(&encode_record(sequence, nanos, payload))
            .and_then(|()| self.file.sync_data());
        let unlocked = flock(&self.lock, libc::LOCK_UN);
        written?;
        unlocked?;
        self.next_sequence += 1;
        Ok(sequence)
    }
}

/// Appends are held while this value lives.
pub struct AppendHold {
    lock: File,
}

impl AppendHold {
    /// Waits (up to `timeout`) for the append in progress to finish, then holds all appends
    /// and makes the journal durable.
    pub fn acquire(journal: &Path, timeout: Duration) -> std::io::Result<Self> {
        let lock = open_lock(journal)?;
        let deadline = Instant::now() + timeout;
        loop {
            match flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => break,
                Err(error)
                    if error.raw_os_error() == Some(libc::EWOULDBLOCK)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => return Err(error),
            }
        }
        if let Ok(file) = File::open(journal) {
            file.sync_all()?;
        }
        Ok(Self { lock })
    }
}

impl Drop for AppendHold {
    fn drop(&mut self) {
        let _ = flock(&self.lock, libc::LOCK_UN);
    }
}

/// Why a journal (or a copy of one) is not consistent.
#[derive(Debug, PartialEq, Eq)]
pub struct Inconsistency {
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "at byte {}: {}", self.offset, self.reason)
    }
}

/// Checks that `bytes` holds only whole records with sequences 0, 1, 2, … and returns how
/// many there are.
pub fn verify_bytes(bytes: &[u8]) -> Result<u64, Inconsistency> {
    if bytes.len() % RECORD_SIZE != 0 {
        return Err(Inconsistency {
            offset: (bytes.len() - bytes.len() % RECORD_SIZE) as u64,
            reason: "a torn record at the end".to_string(),
        });
    }
    for (index, record) in bytes.chunks_exact(RECORD_SIZE).enumerate() {
        let offset = (index * RECORD_SIZE) as u64;
        if &record[..4] != MAGIC {
            return Err(Inconsistency {
                offset,
                reason: "no record magic".to_string(),
            });
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&record[RECORD_SIZE - 4..]);
        if crc32fast::hash(&record[..RECORD_SIZE - 4]) != u32::from_le_bytes(crc) {
            return Err(Inconsistency {
                offset,
                reason: "checksum mismatch".to_string(),
            });
        }
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&record[4..12]);
        let sequence = u64::from_le_bytes(sequence);
        if sequence != index as u64 {
            return Err(Inconsistency {
                offset,
                reason: format!("sequence {sequence} where {index} belongs"),
            });
        }
    }
    Ok((bytes.len() / RECORD_SIZE) as u64)
}

/// [`verify_bytes`] on a file.
pub fn verify_file(path: &Path) -> Result<u64, Inconsistency> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|error| Inconsistency {
            offset: 0,
            reason: format!("cannot read {}: {error}", path.display()),
        })?;
    verify_bytes(&bytes)
}
