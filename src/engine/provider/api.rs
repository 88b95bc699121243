//! The provider seam: [`Provider`] (one per provider) and [`VolumeProvider`] (the data path
//! of one volume), and the providers this engine has.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::cabinet::ManifestShadow;
use crate::engine::catalog::{ShadowRecord, VolumeRecord};
use crate::engine::device::{BlockDevice, Extent};
use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
use crate::engine::model::ProviderInfo;
use crate::engine::progress::Progress;
use crate::engine::store::{DurableBackend, DurableFile, FileFingerprint, StoreLayout};
use crate::engine::vss::Attributes;

use crate::engine::model::RbdPool;

use super::cow::{CowVolume, DiffAreaError, DiffAreaProblem, OpenOptions};
use super::index::Tag;
use super::row::{self, RowVolume};

/// `{8c4a3e5f-2b1d-4f6e-9a7c-3d5e6f708192}`: diskshadow's full-copy (plex) provider.
pub const FULL_COPY_PROVIDER_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x8c4a3e5f_2b1d_4f6e_9a7c_3d5e6f708192);
pub const FULL_COPY_PROVIDER_NAME: &str = "diskshadow Full Copy (Plex) provider 1.0";
/// `{3f0c6a1e-9d42-4b7a-8e15-6c2d9b7f4a30}`: diskshadow's redirect-on-write provider.
pub const ROW_PROVIDER_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x3f0c6a1e_9d42_4b7a_8e15_6c2d9b7f4a30);
pub const ROW_PROVIDER_NAME: &str = "diskshadow Redirect-on-Write provider";

/// The data path a volume's writes take while it has differential shadows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPathKind {
    CopyOnWrite,
    RedirectOnWrite,
}

impl DataPathKind {
    /// Opens the volume's data path of this kind (replaying its diff area).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        self,
        backend: Arc<dyn DurableBackend>,
        volume: VolumeId,
        image: &Path,
        diff_dir: &Path,
        chunk_size: u32,
        shadows: BTreeSet<u64>,
        write_back_bytes: usize,
        options: &OpenOptions,
    ) -> Result<Box<dyn VolumeProvider>, DiffAreaError> {
        Ok(match self {
            DataPathKind::CopyOnWrite => Box::new(
                CowVolume::open(
                    backend,
                    volume,
                    image,
                    diff_dir,
                    chunk_size,
                    shadows,
                    write_back_bytes,
                    options,
                )?
                .0,
            ),
            DataPathKind::RedirectOnWrite => Box::new(RowVolume::open(
                backend,
                volume,
                image,
                diff_dir,
                chunk_size,
                shadows,
                write_back_bytes,
                options,
            )?),
        })
    }

    /// The data path a volume's diff area is in when it is opened: redirect-on-write while
    /// redirected versions remain (they hold live data), else copy-on-write.
    pub fn at_open(diff_dir: &Path, has_row_shadows: bool) -> DataPathKind {
        if has_row_shadows || row::has_versions(diff_dir) {
            DataPathKind::RedirectOnWrite
        } else {
            DataPathKind::CopyOnWrite
        }
    }
}

/// What a provider is given to work with.
pub struct ProviderContext<'a> {
    pub backend: &'a dyn DurableBackend,
    pub layout: &'a StoreLayout,
    /// Each registered volume's image file (where the array provider finds a LUN's array).
    pub volume_paths: BTreeMap<VolumeId, PathBuf>,
    /// Every shadow in the catalog with its set (the RBD provider removes a group snapshot
    /// with the last shadow of its set).
    pub shadow_sets: BTreeMap<ShadowId, ShadowSetId>,
    /// The Ceph pools the store is attached to, by name.
    pub rbd_pools: BTreeMap<String, RbdPool>,
}

impl ProviderContext<'_> {
    pub fn diff_dir(&self, volume: VolumeId) -> PathBuf {
        self.layout.diff_dir(volume)
    }

    pub fn volume_path(&self, volume: VolumeId) -> Option<PathBuf> {
        self.volume_paths.get(&volume).cloned()
    }
}

/// One volume of a set being committed, locked by the engine.
pub struct SetMember<'a> {
    pub volume: &'a dyn VolumeProvider,
    pub shadow: ShadowId,
    pub set_id: ShadowSetId,
    /// The volume's image file.
    pub image_path: &'a Path,
    /// The attributes the set's shadows get (context, requester's options, provider's).
    pub attributes: Attributes,
}

/// Shadows of a set whose content their provider makes after thaw, by
/// [`Provider::finish_deferred_copy`], from a point in time the engine keeps for them in
/// their volume's data path (at the shadow's own sequence) until the copy is complete.
pub type DeferredCopies = BTreeSet<ShadowId>;

/// A provider as VSS sees it.
pub trait Provider: Send + Sync {
    /// Its `list providers` entry.
    fn info(&self) -> ProviderInfo;

    fn id(&self) -> ProviderId {
        self.info().id
    }

    /// The attribute bits it adds to every shadow it makes.
    fn attributes(&self) -> Attributes;

    /// Attribute bits a requester may ask for that it cannot honour.
    fn unsupported_attributes(&self) -> u32;

    /// Whether it can shadow this volume (a hardware provider: only its array's LUNs). The
    /// default refuses RBD image volumes (`rbd:POOL/IMAGE`): only the Ceph provider, which
    /// overrides this, shadows them.
    fn supports(&self, volume: &VolumeRecord) -> bool {
        !crate::engine::model::is_rbd_volume_path(&volume.path)
    }

    /// Whether its shadows can be transported to another host.
    fn transportable(&self) -> bool {
        false
    }

    /// The data path its shadows live in; `None` when each shadow is independent of it (a
    /// full copy, an array clone).
    fn data_path(&self) -> Option<DataPathKind>;

    /// Before the catalog commit of a set, with every volume of the set locked at the point
    /// in time: what must exist durably before the shadows do. Undone by
    /// [`Provider::abort_set`] if the set fails. Must be O(1) or O(extents), never O(volume
    /// size): writes are held meanwhile. Returns the members whose copy is made after thaw.
    fn prepare_set(
        &self,
        _context: &ProviderContext<'_>,
        _members: &[SetMember<'_>],
        _progress: &dyn Progress,
    ) -> io::Result<DeferredCopies> {
        Ok(DeferredCopies::new())
    }

    /// After thaw, for a shadow [`Provider::prepare_set`] deferred: makes its content from
    /// `source` (the shadow's point in time, readable while the volume is written) durably,
    /// replacing anything an earlier, interrupted attempt left. The engine then records the
    /// shadow complete and releases the point in time. `plex::copy_point_in_time` does the
    /// copying for a provider whose shadow is a file.
    fn finish_deferred_copy(
        &self,
        _context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
        _source: &dyn BlockDevice,
        _progress: &dyn Progress,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "provider {} makes no copies after the commit (shadow copy {})",
                shadow.provider_id, shadow.id
            ),
        ))
    }

    /// After the catalog commit of the set.
    fn commit_set(&self, _context: &ProviderContext<'_>, _members: &[SetMember<'_>]) {}

    /// The set failed after `prepare_set` succeeded: remove what it made.
    fn abort_set(&self, _context: &ProviderContext<'_>, _members: &[SetMember<'_>]) {}

    /// The file an independent shadow is read from (`None` for a data-path shadow).
    fn open_shadow(
        &self,
        _context: &ProviderContext<'_>,
        _shadow: &ShadowRecord,
    ) -> io::Result<Option<Arc<dyn DurableFile>>> {
        Ok(None)
    }

    /// After the catalog commit of a delete: removes what an independent shadow held.
    /// Returns the directory to sync, if any.
    fn remove_shadow(
        &self,
        _context: &ProviderContext<'_>,
        _shadow: &ShadowRecord,
    ) -> io::Result<Option<PathBuf>> {
        Ok(None)
    }

    /// Problems with an independent shadow (`check`).
    fn check_shadow(&self, _context: &ProviderContext<'_>, _shadow: &ShadowRecord) -> Vec<String> {
        Vec::new()
    }

    /// Where an independent shadow is held, for its `list shadows` block (`Ok(None)`: nothing
    /// to say); an error when it is gone, which makes the shadow missing (never served).
    fn locate_shadow(
        &self,
        _context: &ProviderContext<'_>,
        _shadow: &ShadowRecord,
    ) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// Whether it finds its transportable shadows by itself, for `import` and `break`
    /// ([`Provider::find_transported`], [`Provider::break_off`]), rather than through an
    /// array's catalog (the array provider).
    fn finds_own_shadows(&self) -> bool {
        false
    }

    /// For `import`: the volume (as this store names it) and size of a transported shadow,
    /// or why it cannot be imported.
    fn find_transported(
        &self,
        _context: &ProviderContext<'_>,
        shadow: &ManifestShadow,
        _set: ShadowSetId,
    ) -> Result<(PathBuf, u64), String> {
        Err(format!(
            "provider {} does not find transported shadow copies itself",
            shadow.provider_id
        ))
    }

    /// For `break`: makes an ordinary volume holding the shadow (complete when this returns)
    /// and returns its path; the engine then forgets the shadow and removes it.
    fn break_off(
        &self,
        _context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
        _progress: &dyn Progress,
    ) -> io::Result<PathBuf> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "provider {} does not break shadow copies off itself (shadow copy {})",
                shadow.provider_id, shadow.id
            ),
        ))
    }

    /// For `check`: what it made that no shadow of this store owns (`is_shadow`, `is_set`
    /// say what the catalog holds). Reported, never removed.
    fn leaked(
        &self,
        _context: &ProviderContext<'_>,
        _is_shadow: &dyn Fn(ShadowId) -> bool,
        _is_set: &dyn Fn(ShadowSetId) -> bool,
    ) -> Vec<String> {
        Vec::new()
    }

    /// Files in a volume's diff directory this provider made that no catalog shadow owns (a
    /// create cut off between its preparation and the commit).
    fn orphans(&self, _diff_dir: &Path, _is_shadow: &dyn Fn(ShadowId) -> bool) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// The data path of one volume under a differential provider. The engine holds the
/// volume's lock around every call (shared for reads, exclusive for the rest).
pub trait VolumeProvider: Send + Sync {
    fn kind(&self) -> DataPathKind;
    fn volume(&self) -> VolumeId;
    fn chunk_size(&self) -> u64;
    /// The live volume's size.
    fn size(&self) -> u64;
    /// The image file.
    fn image(&self) -> &Arc<dyn DurableFile>;
    /// The image as diskshadow last left it.
    fn fingerprint(&self) -> FileFingerprint;
    /// Adopts `fingerprint` (and its size) as the baseline.
    fn set_fingerprint(&mut self, fingerprint: FileFingerprint);
    /// The catalog holds a fingerprint that is still true.
    fn persisted_clean(&self) -> bool;
    fn set_persisted_clean(&mut self, clean: bool);
    /// Shadows with sequence <= this are suspect and not served.
    fn suspect_through(&self) -> u64;
    fn set_suspect_through(&mut self, sequence: u64);
    fn set_max_diff_bytes(&mut self, max_bytes: Option<u64>);
    /// Until when diskshadow may write the image (the durable write stamp).
    fn write_stamp_until(&self) -> Option<i128>;

    /// Sequences of the volume's shadows in this data path.
    fn shadows(&self) -> &BTreeSet<u64>;
    /// Makes a point in time: the volume was drained (or flushed) and locked first. O(1).
    fn add_shadow(&mut self, sequence: u64);
    fn oldest_shadow(&self) -> Option<u64> {
        self.shadows().first().copied()
    }
    fn newest_shadow(&self) -> Option<u64> {
        self.shadows().last().copied()
    }

    /// The write path. The caller has made room in the diff area.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Whether a write of `length` bytes at `offset` may change the image file (the engine
    /// then marks the image as being written, durably, before it).
    fn write_reaches_image(&self, _offset: u64, _length: u64) -> bool {
        true
    }
    /// Upper bound on the diff-area bytes a write adds.
    fn bytes_needed(&self, offset: u64, length: u64) -> u64;
    fn read_live(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;
    fn read_shadow(&self, sequence: u64, offset: u64, buffer: &mut [u8]) -> io::Result<()>;
    /// Makes buffered writes reach their place (diff area first, durably where the
    /// provider's rule needs it).
    fn drain(&mut self) -> io::Result<()>;
    /// Zeros `[offset, offset + length)` of the live volume, punching holes where the
    /// provider can; shadows keep their bytes. The caller has made room in the diff area.
    fn punch_hole(&mut self, offset: u64, length: u64) -> io::Result<()>;
    /// Where the live volume / shadow `sequence` holds data, holes and zeros (NBD
    /// `base:allocation`, FUSE `SEEK_HOLE`): a hint that never calls data a hole.
    fn allocation_live(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>>;
    fn allocation_shadow(&self, sequence: u64, offset: u64, length: u64)
        -> io::Result<Vec<Extent>>;
    /// Drains and makes every acknowledged write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Chunks where shadow `sequence` and the live volume may differ: what revert rewrites.
    fn chunks_changed_since(&self, sequence: u64) -> Vec<u64>;
    /// Forgets a shadow and frees what only it needed. Returns the versions freed.
    fn delete_shadow(&mut self, sequence: u64) -> io::Result<u64>;
    /// Versions a delete left to be folded back into the image (redirect-on-write, after the
    /// oldest shadow went): the engine folds them in the background, a step at a time.
    fn versions_waiting_for_fold(&self) -> u64 {
        0
    }
    /// One step of the fold: up to `max_chunks` chunks, with the image synced before their
    /// versions are freed. It writes the image: the engine marks it as being written first.
    fn fold_step(&mut self, _max_chunks: usize) -> io::Result<()> {
        Ok(())
    }
    /// Crash recovery that writes the image (run after change detection at open, with the
    /// image marked as being written): whether there is any, and doing it.
    fn needs_recovery(&self) -> bool {
        false
    }
    fn recover(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The length of the index log known durable, which the catalog records so that a
    /// shorter log or a bad record below it is damage (`None`: not tracked, or not durable).
    fn durable_index_bytes(&self) -> Option<u64> {
        None
    }
    /// The open found the index log worth rewriting (the engine first forgets its recorded
    /// length), and the rewrite.
    fn index_rewrite_wanted(&self) -> bool {
        false
    }
    fn rewrite_index_log(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Chunks whose live content is not in the image (redirected writes): what a copy of the
    /// image must take from the live view instead.
    fn live_chunks_off_image(&self) -> Vec<u64> {
        Vec::new()
    }
    /// True when the volume could switch data path: no shadows and nothing kept.
    fn is_idle(&self) -> bool;
    fn check(&self) -> io::Result<Vec<DiffAreaProblem>>;
    fn used_bytes(&self) -> u64;
    fn allocated_bytes(&self) -> u64;
    fn versions(&self) -> usize;
    fn index_memory_bytes(&self) -> usize;
    fn max_tag(&self) -> Option<Tag>;
}

/// The accessors shared by both differential volumes (same field names).
macro_rules! volume_state_accessors {
    () => {
        fn volume(&self) -> VolumeId {
            self.volume
        }
        fn chunk_size(&self) -> u64 {
            self.chunk_size
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn image(&self) -> &Arc<dyn DurableFile> {
            &self.live
        }
        fn fingerprint(&self) -> FileFingerprint {
            self.fingerprint
        }
        fn set_fingerprint(&mut self, fingerprint: FileFingerprint) {
            self.fingerprint = fingerprint;
            self.size = fingerprint.size;
        }
        fn persisted_clean(&self) -> bool {
            self.persisted_clean
        }
        fn set_persisted_clean(&mut self, clean: bool) {
            self.persisted_clean = clean;
        }
        fn suspect_through(&self) -> u64 {
            self.suspect_through
        }
        fn set_suspect_through(&mut self, sequence: u64) {
            self.suspect_through = sequence;
        }
        fn set_max_diff_bytes(&mut self, max_bytes: Option<u64>) {
            self.max_diff_bytes = max_bytes;
        }
        fn write_stamp_until(&self) -> Option<i128> {
            self.write_stamp.until_ns()
        }
        fn shadows(&self) -> &BTreeSet<u64> {
            self.shadows()
        }
        fn add_shadow(&mut self, sequence: u64) {
            self.add_shadow(sequence)
        }
        fn read_live(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
            self.read_live(offset, buffer)
        }
        fn read_shadow(&self, sequence: u64, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
            self.read_shadow(sequence, offset, buffer)
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.write(offset, data)
        }
        fn punch_hole(&mut self, offset: u64, length: u64) -> io::Result<()> {
            self.punch_hole(offset, length)
        }
        fn allocation_live(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
            self.allocation_live(offset, length)
        }
        fn allocation_shadow(
            &self,
            sequence: u64,
            offset: u64,
            length: u64,
        ) -> io::Result<Vec<Extent>> {
            self.allocation_shadow(sequence, offset, length)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flush()
        }
        fn chunks_changed_since(&self, sequence: u64) -> Vec<u64> {
            self.chunks_changed_since(sequence)
        }
        fn delete_shadow(&mut self, sequence: u64) -> io::Result<u64> {
            self.delete_shadow(sequence)
        }
        fn check(&self) -> io::Result<Vec<DiffAreaProblem>> {
            self.check()
        }
        fn used_bytes(&self) -> u64 {
            self.used_bytes()
        }
        fn allocated_bytes(&self) -> u64 {
            self.allocated_bytes()
        }
        fn index_memory_bytes(&self) -> usize {
            self.index_memory_bytes()
        }
        fn max_tag(&self) -> Option<Tag> {
            self.max_tag()
        }
    };
}

impl VolumeProvider for CowVolume {
    volume_state_accessors!();

    fn kind(&self) -> DataPathKind {
        DataPathKind::CopyOnWrite
    }
    fn bytes_needed(&self, offset: u64, length: u64) -> u64 {
        self.preservation_bytes_needed(offset, length)
    }
    fn drain(&mut self) -> io::Result<()> {
        self.drain()
    }
    fn is_idle(&self) -> bool {
        self.shadows().is_empty() && !self.has_pending() && self.preserved_versions() == 0
    }
    fn versions(&self) -> usize {
        self.preserved_versions()
    }
    fn durable_index_bytes(&self) -> Option<u64> {
        self.durable_index_bytes()
    }
    fn index_rewrite_wanted(&self) -> bool {
        self.index_rewrite_wanted()
    }
    fn rewrite_index_log(&mut self) -> io::Result<()> {
        self.rewrite_index_log()
    }
}

impl VolumeProvider for RowVolume {
    volume_state_accessors!();

    fn kind(&self) -> DataPathKind {
        DataPathKind::RedirectOnWrite
    }
    fn bytes_needed(&self, offset: u64, length: u64) -> u64 {
        self.redirection_bytes_needed(offset, length)
    }
    /// While a shadow exists every write is redirected: the image keeps the shadows' bytes.
    fn write_reaches_image(&self, _offset: u64, _length: u64) -> bool {
        self.shadows().is_empty()
    }
    /// Redirected writes are durable only in pairs of syncs (data, then index): the same
    /// as a flush of the diff area; the image is synced by `flush`.
    fn drain(&mut self) -> io::Result<()> {
        self.sync()
    }
    fn versions_waiting_for_fold(&self) -> u64 {
        self.versions_waiting_for_fold()
    }
    fn fold_step(&mut self, max_chunks: usize) -> io::Result<()> {
        self.fold_batch(max_chunks).map(|_| ())
    }
    fn needs_recovery(&self) -> bool {
        self.needs_fold()
    }
    fn recover(&mut self) -> io::Result<()> {
        self.fold().map(|_| ())
    }
    fn is_idle(&self) -> bool {
        self.shadows().is_empty() && self.is_empty()
    }
    fn live_chunks_off_image(&self) -> Vec<u64> {
        self.chunks_changed_since(0)
    }
    fn versions(&self) -> usize {
        RowVolume::versions(self)
    }
}

/// Makes each member's shadow with `clone` (true: complete now; false: its copy is deferred
/// to after thaw, from the point in time the engine keeps). On a failure, the error and how
/// many members (the failed one included) may have left something to abort.
pub(crate) fn clone_or_defer(
    members: &[SetMember<'_>],
    mut clone: impl FnMut(&SetMember<'_>) -> io::Result<bool>,
) -> Result<DeferredCopies, (io::Error, usize)> {
    let mut deferred = DeferredCopies::new();
    for (position, member) in members.iter().enumerate() {
        match clone(member) {
            Ok(true) => {}
            Ok(false) => {
                deferred.insert(member.shadow);
            }
            Err(error) => return Err((error, position + 1)),
        }
    }
    Ok(deferred)
}

/// Writes the live view of the chunks the image does not hold into a copy of the image at
/// `path`, and syncs it (nothing to do for copy-on-write, whose image is the live volume).
pub(crate) fn copy_live_chunks(
    backend: &dyn DurableBackend,
    volume: &dyn VolumeProvider,
    path: &Path,
) -> io::Result<()> {
    let chunks = volume.live_chunks_off_image();
    if chunks.is_empty() {
        return Ok(());
    }
    let copy = backend.open_file(path, false)?;
    let chunk_size = volume.chunk_size();
    let mut buffer = vec![0u8; chunk_size as usize];
    for chunk in chunks {
        let start = chunk * chunk_size;
        let length = chunk_size.min(volume.size().saturating_sub(start)) as usize;
        volume.read_live(start, &mut buffer[..length])?;
        copy.write_at(start, &buffer[..length])?;
    }
    copy.sync_data()
}
