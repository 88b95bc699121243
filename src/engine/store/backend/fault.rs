//! The backend crash tests use: [`FaultBackend`] remembers, until they are synced, the bytes
//! each write replaced and the creations, renames and removals, and at the chosen sync point
//! simulates a power loss by undoing what [`CrashMode`] says did not survive.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{seek_hole, set_modified_time, DurableBackend, DurableFile, FileFingerprint, RealFile};

/// What survives the simulated power loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashMode {
    /// Every write and name change not yet synced is lost.
    DropUnsynced,
    /// Unsynced writes to files outside this directory (the live volumes) reach the disk
    /// anyway, while unsynced writes inside it (the store) are lost: the worst case for the
    /// copy-on-write ordering rule.
    KeepUnsyncedOutside(PathBuf),
}

enum Undo {
    Write {
        inode: u64,
        /// The written file itself: the undo reaches it even if it was renamed or removed
        /// since (a log replaced by rename, a file removed and made again at the same path).
        file: Arc<File>,
        path: PathBuf,
        offset: u64,
        old_bytes: Vec<u8>,
        old_length: u64,
    },
    Create {
        dir: PathBuf,
        path: PathBuf,
    },
    Rename {
        dir: PathBuf,
        from: PathBuf,
        to: PathBuf,
        backup: Option<PathBuf>,
    },
    Remove {
        dir: PathBuf,
        path: PathBuf,
        backup: PathBuf,
    },
}

struct FaultState {
    crash_at_sync: Option<u64>,
    sync_points: u64,
    crashed: bool,
    mode: CrashMode,
    undo: Vec<Undo>,
    backup_counter: u64,
}

/// A disk that loses power at a chosen sync point. Writes go to real files at once (as into a
/// page cache), with the bytes they replace remembered until the file is synced; at the crash
/// those bytes are put back (newest first) and unsynced renames, creations and removals are
/// undone. After the crash every call fails, as I/O to a dead disk would.
#[derive(Clone)]
pub struct FaultBackend {
    state: Arc<Mutex<FaultState>>,
}

fn simulated_power_loss() -> io::Error {
    io::Error::other("simulated power loss: the fault-injecting backend has crashed")
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl FaultBackend {
    /// `crash_at_sync`: the 0-based sync point at which power is lost (that sync does not
    /// happen); `None` never crashes and only counts.
    pub fn new(crash_at_sync: Option<u64>, mode: CrashMode) -> Self {
        Self {
            state: Arc::new(Mutex::new(FaultState {
                crash_at_sync,
                sync_points: 0,
                crashed: false,
                mode,
                undo: Vec::new(),
                backup_counter: 0,
            })),
        }
    }

    /// Sync points reached so far.
    pub fn sync_points(&self) -> u64 {
        self.lock().sync_points
    }

    /// True once power was lost.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn alive(state: &FaultState) -> io::Result<()> {
        if state.crashed {
            Err(simulated_power_loss())
        } else {
            Ok(())
        }
    }

    /// Counts one sync point; at the chosen one, loses power instead.
    fn sync_point(state: &mut FaultState) -> io::Result<()> {
        Self::alive(state)?;
        let this_point = state.sync_points;
        state.sync_points += 1;
        if state.crash_at_sync == Some(this_point) {
            Self::lose_power(state);
            return Err(simulated_power_loss());
        }
        Ok(())
    }

    fn lose_power(state: &mut FaultState) {
        state.crashed = true;
        let undo = std::mem::take(&mut state.undo);
        for entry in undo.into_iter().rev() {
            // Best effort: the simulation runs on a healthy real disk.
            let _ = Self::apply_undo(&state.mode, entry);
        }
    }

    fn apply_undo(mode: &CrashMode, entry: Undo) -> io::Result<()> {
        match entry {
            Undo::Write {
                file,
                path,
                offset,
                old_bytes,
                old_length,
                ..
            } => {
                if let CrashMode::KeepUnsyncedOutside(store) = mode {
                    if !path.starts_with(store) {
                        return Ok(());
                    }
                }
                // Undoing the bytes is the simulation's doing, not a writer's: the file keeps
                // its modification time (as after a real power loss, the inode's time is one
                // the file had, never one of the moment of recovery).
                let modified = FileFingerprint::from_metadata(&file.metadata()?).modified_ns;
                file.write_all_at(&old_bytes, offset)?;
                file.set_len(old_length)?;
                set_modified_time(&file, modified)?;
            }
            Undo::Create { path, .. } => {
                let _ = std::fs::remove_file(&path);
            }
            Undo::Rename {
                from, to, backup, ..
            } => {
                std::fs::rename(&to, &from)?;
                if let Some(backup) = backup {
                    std::fs::rename(&backup, &to)?;
                }
            }
            Undo::Remove { path, backup, .. } => {
                std::fs::rename(&backup, &path)?;
            }
        }
        Ok(())
    }

    fn backup_path(state: &mut FaultState, path: &Path) -> PathBuf {
        state.backup_counter += 1;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        parent_of(path).join(format!(".{name}.fault-backup-{}", state.backup_counter))
    }
}

struct FaultFile {
    backend: FaultBackend,
    path: PathBuf,
    inode: u64,
    file: Arc<File>,
}

impl DurableFile for FaultFile {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        FaultBackend::alive(&self.backend.lock())?;
        self.file.read_at(buffer, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.backend.lock();
        FaultBackend::alive(&state)?;
        let old_length = self.file.metadata()?.len();
        let keep = old_length.saturating_sub(offset).min(data.len() as u64) as usize;
        let mut old_bytes = vec![0u8; keep];
        self.file.read_exact_at(&mut old_bytes, offset)?;
        state.undo.push(Undo::Write {
            inode: self.inode,
            file: self.file.clone(),
            path: self.path.clone(),
            offset,
            old_bytes,
            old_length,
        });
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.backend.lock();
        FaultBackend::sync_point(&mut state)?;
        let inode = self.inode;
        state.undo.retain(
            |entry| !matches!(entry, Undo::Write { inode: written, .. } if *written == inode),
        );
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        FaultBackend::alive(&self.backend.lock())?;
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let mut state = self.backend.lock();
        FaultBackend::alive(&state)?;
        let old_length = self.file.metadata()?.len();
        let mut old_bytes = vec![0u8; old_length.saturating_sub(length) as usize];
        self.file
            .read_exact_at(&mut old_bytes, length.min(old_length))?;
        state.undo.push(Undo::Write {
            inode: self.inode,
            file: self.file.clone(),
            path: self.path.clone(),
            offset: length.min(old_length),
            old_bytes,
            old_length,
        });
        self.file.set_len(length)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        FaultBackend::alive(&self.backend.lock())?;
        RealFile {
            file: self.file.try_clone()?,
        }
        .next_data(offset)
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        FaultBackend::alive(&self.backend.lock())?;
        seek_hole(&self.file, offset)
    }

    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        FaultBackend::alive(&self.backend.lock())?;
        Ok(FileFingerprint::from_metadata(&self.file.metadata()?))
    }

    fn set_modified(&self, modified_ns: i128) -> io::Result<()> {
        FaultBackend::alive(&self.backend.lock())?;
        set_modified_time(&self.file, modified_ns)
    }
}

impl DurableBackend for FaultBackend {
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DurableFile>> {
        let mut state = self.lock();
        FaultBackend::alive(&state)?;
        let existed = path.exists();
        let file = crate::engine::store::private_open_options()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        if !existed {
            state.undo.push(Undo::Create {
                dir: parent_of(path),
                path: path.to_path_buf(),
            });
        }
        let inode = file.metadata()?.ino();
        Ok(Arc::new(FaultFile {
            backend: self.clone(),
            path: path.to_path_buf(),
            inode,
            file: Arc::new(file),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultBackend::alive(&state)?;
        let backup = if to.exists() {
            let backup = FaultBackend::backup_path(&mut state, to);
            std::fs::hard_link(to, &backup)?;
            Some(backup)
        } else {
            None
        };
        std::fs::rename(from, to)?;
        state.undo.push(Undo::Rename {
            dir: parent_of(to),
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            backup,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultBackend::alive(&state)?;
        let backup = FaultBackend::backup_path(&mut state, path);
        std::fs::rename(path, &backup)?;
        state.undo.push(Undo::Remove {
            dir: parent_of(path),
            path: path.to_path_buf(),
            backup,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultBackend::sync_point(&mut state)?;
        let mut kept = Vec::new();
        for entry in std::mem::take(&mut state.undo) {
            let entry_dir = match &entry {
                Undo::Write { .. } => None,
                Undo::Create { dir, .. } | Undo::Rename { dir, .. } | Undo::Remove { dir, .. } => {
                    Some(dir)
                }
            };
            if entry_dir.is_some_and(|entry_dir| entry_dir == dir) {
                match entry {
                    Undo::Rename {
                        backup: Some(backup),
                        ..
                    }
                    | Undo::Remove { backup, .. } => {
                        let _ = std::fs::remove_file(backup);
                    }
                    _ => {}
                }
            } else {
                kept.push(entry);
            }
        }
        state.undo = kept;
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FaultBackend::alive(&self.lock())?;
        // Directories are created once at store set-up; the simulation treats them as durable.
        crate::engine::store::create_private_dir_all(dir)
    }
}
