//! The service protocol, defined once. Each line of the table in `with_service_table!` is
//! one request: its [`Request`] variant with each argument's borrowed form (what
//! [`ShadowService`]'s method takes) and wire form (what the variant carries), the method that
//! answers it, whether it reports to a [`ServiceObserver`], and its reply type. From the table
//! come the [`ShadowService`] trait, the [`Request`] enum, [`dispatch`] (the service's side),
//! and the two stand-ins that implement the trait by forwarding: the socket client
//! (`super::remote::RemoteService`, whose methods `remote.rs` generates from the same table,
//! so this file does not name it) and the refused connection ([`RefusedService`]).
//!
//! Adding a request is one table line plus its [`super::local::LocalService`] method.
//!
//! On the wire a request is its variant (`{"resolve_volume": {"spec": …, "base_dir": …}}`,
//! `"volumes"`), and its answer is `{"Ok": REPLY}` or `{"Err": ServiceError}`, where REPLY is
//! the reply type's JSON: the requester knows which type it asked for. Arguments that never
//! travel in JSON (`#[serde(skip)]`) are the write data ([`RequestBytes`], a `bytes` frame)
//! and a passed file ([`RequestDescriptor`], `SCM_RIGHTS`); the data a read returns travels
//! as the response's `bytes` frame ([`ResponseBytes`]).

use std::os::fd::AsFd;

use serde::{Deserialize, Serialize};

use super::error::ServiceErrorKind;

// What the table names, re-exported so that a generator expanding it elsewhere (the socket
// client in `remote.rs`) finds the same names with `use super::protocol::*`.
pub(crate) use super::api::{
    CreateOutcome, CreateRequest, LoadedMetadata, OperationId, StoreCheck, WriterReport,
    WriterStatusView,
};
pub(crate) use super::error::ServiceError;
pub(crate) use super::events::{ServiceObserver, SilentObserver};
pub(crate) use crate::engine::array::ArrayInfo;
pub(crate) use crate::engine::cabinet::MetadataCabinet;
pub(crate) use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
pub(crate) use crate::engine::model::{
    DeleteSelector, DriveTarget, Exposure, ProviderInfo, ShadowInfo, StorageInfo, VolumeInfo,
};
pub(crate) use crate::engine::resync::ResyncOutcome;
pub(crate) use std::os::fd::{BorrowedFd, OwnedFd};
pub(crate) use std::path::{Path, PathBuf};

use super::refused::RefusedService;

/// Stands in a [`Request`] for the bytes a write sends: they travel as the request's binary
/// payload (a `bytes` frame), never in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestBytes;

/// Stands in a [`Request`] for the requester's file or pipe: it travels as the request's
/// descriptor (`SCM_RIGHTS`), never in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDescriptor;

/// The reply of a read: `null` in JSON, the bytes in the response's `bytes` frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseBytes;

/// What travels beside a request's JSON, as the requester sends it.
#[derive(Debug, Default)]
pub struct OutgoingPayload<'a> {
    pub bytes: Option<&'a [u8]>,
    pub descriptor: Option<BorrowedFd<'a>>,
}

/// What came beside a request's JSON, as the service received it.
#[derive(Debug, Default)]
pub struct RequestPayload {
    pub bytes: Vec<u8>,
    pub descriptor: Option<OwnedFd>,
}

/// How one argument goes between its borrowed form (`Self`, the trait method's parameter) and
/// its wire form `W` (the [`Request`] field).
pub trait Argument<'a, W>: Sized {
    /// The requester's side: the field to send; bytes and descriptors go to `payload`.
    fn to_wire(self, payload: &mut OutgoingPayload<'a>) -> W;
    /// The service's side: the argument to pass to the method.
    fn from_wire(wire: &'a W, payload: &'a RequestPayload) -> Result<Self, ServiceError>;
}

/// Plain values travel as they are.
impl<'a, T: Clone> Argument<'a, T> for T {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> T {
        self
    }
    fn from_wire(wire: &'a T, _: &'a RequestPayload) -> Result<T, ServiceError> {
        Ok(wire.clone())
    }
}

/// A borrowed value travels as a copy of it.
impl<'a, T: Clone> Argument<'a, T> for &'a T {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> T {
        self.clone()
    }
    fn from_wire(wire: &'a T, _: &'a RequestPayload) -> Result<&'a T, ServiceError> {
        Ok(wire)
    }
}

impl<'a> Argument<'a, String> for &'a str {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> String {
        self.to_string()
    }
    fn from_wire(wire: &'a String, _: &'a RequestPayload) -> Result<&'a str, ServiceError> {
        Ok(wire)
    }
}

impl<'a> Argument<'a, Option<String>> for Option<&'a str> {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> Option<String> {
        self.map(str::to_string)
    }
    fn from_wire(
        wire: &'a Option<String>,
        _: &'a RequestPayload,
    ) -> Result<Option<&'a str>, ServiceError> {
        Ok(wire.as_deref())
    }
}

impl<'a> Argument<'a, PathBuf> for &'a Path {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> PathBuf {
        self.to_path_buf()
    }
    fn from_wire(wire: &'a PathBuf, _: &'a RequestPayload) -> Result<&'a Path, ServiceError> {
        Ok(wire)
    }
}

impl<'a, T: Clone> Argument<'a, Vec<T>> for &'a [T] {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> Vec<T> {
        self.to_vec()
    }
    fn from_wire(wire: &'a Vec<T>, _: &'a RequestPayload) -> Result<&'a [T], ServiceError> {
        Ok(wire)
    }
}

/// A large value is boxed in the [`Request`], so every request stays small.
impl<'a, T: Clone> Argument<'a, Box<T>> for T {
    fn to_wire(self, _: &mut OutgoingPayload<'a>) -> Box<T> {
        Box::new(self)
    }
    fn from_wire(wire: &'a Box<T>, _: &'a RequestPayload) -> Result<T, ServiceError> {
        Ok(T::clone(wire))
    }
}

impl<'a> Argument<'a, RequestBytes> for &'a [u8] {
    fn to_wire(self, payload: &mut OutgoingPayload<'a>) -> RequestBytes {
        payload.bytes = Some(self);
        RequestBytes
    }
    fn from_wire(
        _: &'a RequestBytes,
        payload: &'a RequestPayload,
    ) -> Result<&'a [u8], ServiceError> {
        Ok(&payload.bytes)
    }
}

impl<'a> Argument<'a, RequestDescriptor> for BorrowedFd<'a> {
    fn to_wire(self, payload: &mut OutgoingPayload<'a>) -> RequestDescriptor {
        payload.descriptor = Some(self);
        RequestDescriptor
    }
    fn from_wire(
        _: &'a RequestDescriptor,
        payload: &'a RequestPayload,
    ) -> Result<BorrowedFd<'a>, ServiceError> {
        payload.descriptor.as_ref().map(AsFd::as_fd).ok_or_else(|| {
            ServiceError::invalid(
                "the request reads or writes a file descriptor, but none came with it",
            )
            .with_help(
                "send the descriptor in a `descriptor` frame (SCM_RIGHTS) before the request",
            )
        })
    }
}

/// How a reply goes between the method's return type (`Self`) and its wire form `W`.
pub trait Answer<W>: Sized {
    /// The service's side: the JSON reply; bytes go to `response_bytes`.
    fn into_wire(self, response_bytes: &mut Vec<u8>) -> W;
    /// The requester's side.
    fn from_wire(wire: W, response_bytes: Vec<u8>) -> Self;
}

impl<T> Answer<T> for T {
    fn into_wire(self, _: &mut Vec<u8>) -> T {
        self
    }
    fn from_wire(wire: T, _: Vec<u8>) -> T {
        wire
    }
}

impl Answer<ResponseBytes> for Vec<u8> {
    fn into_wire(self, response_bytes: &mut Vec<u8>) -> ResponseBytes {
        *response_bytes = self;
        ResponseBytes
    }
    fn from_wire(_: ResponseBytes, response_bytes: Vec<u8>) -> Vec<u8> {
        response_bytes
    }
}

/// The wire form of a reply: the one the table names after `as`, else the reply type itself.
macro_rules! reply_wire {
    (; $reply:ty) => {
        $reply
    };
    ($wire:ty ; $reply:ty) => {
        $wire
    };
}

/// The observer a forwarded request reports to: the method's, or none.
macro_rules! observer_or_silent {
    () => {
        &mut SilentObserver
    };
    ($observer:ident) => {
        $observer
    };
}

/// What a refused connection answers: the refusal, or the answer the table gives.
macro_rules! refused_answer {
    ($refusal:expr ;) => {
        Err($refusal)
    };
    ($refusal:expr ; $answer:expr) => {
        $answer
    };
}

/// Generates the protocol from its table; see the module documentation.
macro_rules! service_protocol {
    (core $(
        $(#[$meta:meta])*
        $Variant:ident $({ $( $(#[$field_meta:meta])* $arg:ident : $borrowed:ty => $wire:ty ),* $(,)? })?
            => fn $method:ident $(($observer:ident))? -> $reply:ty $(as $reply_wire:ty)?
            $(, refused: $refused:expr)? ;
    )*) => {
        /// The service, as requesters see it. `base_dir` arguments are the requester's working
        /// directory, against which relative paths are resolved.
        pub trait ShadowService {
            $(
                $(#[$meta])*
                fn $method(
                    &mut self,
                    $($($arg: $borrowed,)*)?
                    $($observer: &mut dyn ServiceObserver)?
                ) -> Result<$reply, ServiceError>;
            )*
        }

        /// One request of the service API, as it travels to the service.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Request {
            $(
                $(#[$meta])*
                $Variant $({ $( $(#[$field_meta])* $arg: $wire ),* })?,
            )*
        }

        /// Runs one request against a requester's service. `payload` is what came beside the
        /// request (a write's bytes, a passed descriptor); the bytes a read returns are put in
        /// `response_bytes`. The reply is the method's return value, as JSON.
        pub fn dispatch(
            service: &mut dyn ShadowService,
            request: Request,
            payload: RequestPayload,
            response_bytes: &mut Vec<u8>,
            observer: &mut dyn ServiceObserver,
        ) -> Result<serde_json::Value, ServiceError> {
            match request {
                $(
                    #[allow(unused_variables)]
                    Request::$Variant $({ $($arg),* })? => {
                        $(let $observer = &mut *observer;)?
                        let reply = service.$method(
                            $($(Argument::from_wire(&$arg, &payload)?,)*)?
                            $($observer)?
                        )?;
                        let wire: reply_wire!($($reply_wire)? ; $reply) =
                            Answer::into_wire(reply, response_bytes);
                        to_json(&wire)
                    }
                )*
            }
        }

        /// Every request fails with the refusal (a request marked `refused:` answers that).
        impl ShadowService for RefusedService {
            $(
                $(#[$meta])*
                fn $method(
                    &mut self,
                    $($(#[allow(unused_variables)] $arg: $borrowed,)*)?
                    $(#[allow(unused_variables)] $observer: &mut dyn ServiceObserver)?
                ) -> Result<$reply, ServiceError> {
                    refused_answer!(self.refusal() ; $($refused)?)
                }
            )*
        }
    };
    (remote $(
        $(#[$meta:meta])*
        $Variant:ident $({ $( $(#[$field_meta:meta])* $arg:ident : $borrowed:ty => $wire:ty ),* $(,)? })?
            => fn $method:ident $(($observer:ident))? -> $reply:ty $(as $reply_wire:ty)?
            $(, refused: $refused:expr)? ;
    )*) => {
        /// Every request goes over the socket; the reply comes back as the type it asked for.
        impl ShadowService for RemoteService {
            $(
                $(#[$meta])*
                fn $method(
                    &mut self,
                    $($($arg: $borrowed,)*)?
                    $($observer: &mut dyn ServiceObserver)?
                ) -> Result<$reply, ServiceError> {
                    #[allow(unused_mut)]
                    let mut payload = OutgoingPayload::default();
                    let request = Request::$Variant $({
                        $($arg: Argument::to_wire($arg, &mut payload)),*
                    })?;
                    let (wire, response_bytes) = self
                        .send::<reply_wire!($($reply_wire)? ; $reply)>(
                            &request,
                            payload,
                            observer_or_silent!($($observer)?),
                        )?;
                    Ok(Answer::from_wire(wire, response_bytes))
                }
            )*
        }
    };
}

fn to_json(reply: &impl Serialize) -> Result<serde_json::Value, ServiceError> {
    serde_json::to_value(reply).map_err(|error| {
        ServiceError::new(
            ServiceErrorKind::Unavailable,
            format!("the reply could not be encoded: {error}"),
        )
    })
}

/// The table: hands every request line to `$generator!` after `$part` (`core` here; the
/// socket client in `remote.rs` generates its methods from the same lines with `remote`).
macro_rules! with_service_table {
    ($generator:ident $part:ident) => {
        $generator! { $part
        /// Resolves an image path, drive letter or volume GUID to a volume, registering an image
        /// file the first time it is named.
        ResolveVolume { spec: &str => String, base_dir: &Path => PathBuf }
            => fn resolve_volume -> VolumeInfo;
        Volumes => fn volumes -> Vec<VolumeInfo>;
        /// Registers an image file with a chosen copy-on-write chunk size (a power of two, 4 KiB to
        /// 1 MiB; `None`: the default) and the provider its shadows get unless a create names
        /// one (`None`: the system provider). Both are fixed at registration.
        RegisterVolume {
            path: &str => String,
            chunk_size: Option<u32> => Option<u32>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            provider: Option<ProviderId> => Option<ProviderId>,
            base_dir: &Path => PathBuf,
        } => fn register_volume -> VolumeInfo;

        DriveMap => fn drive_map -> Vec<(char, DriveTarget)>;
        MapDrive { letter: char => char, target: DriveTarget => DriveTarget } => fn map_drive -> ();
        UnmapDrive { letter: char => char } => fn unmap_drive -> ();

        /// Runs the whole creation sequence (writers, when the context has them) and commits.
        Create { request: &CreateRequest => CreateRequest }
            => fn create(observer) -> CreateOutcome;
        Shadows => fn shadows -> Vec<ShadowInfo>;
        DeleteShadows { selector: &DeleteSelector => DeleteSelector }
            => fn delete_shadows -> Vec<ShadowInfo>;
        /// Reverts the shadow's volume to it. A volume in use (attached, or with a file system
        /// mounted from it) is refused with `VSS_E_VOLUME_IN_USE`; `force_dismount` detaches
        /// diskshadow's own attachment first (and says so), but never unmounts a file system.
        Revert {
            shadow: ShadowId => ShadowId,
            /// Detach diskshadow's own attachment of the volume first (vssadmin `/ForceDismount`).
            #[serde(default)]
            force_dismount: bool => bool,
        } => fn revert(observer) -> ();
        /// LUN resync: copies the shadow onto `destination` (its original volume when `None`).
        /// The destination stays usable while it runs; without `no_volume_check`, a destination
        /// that is mounted, attached or open elsewhere is refused with `VSS_E_VOLUME_IN_USE`.
        Resync {
            shadow: ShadowId => ShadowId,
            destination: Option<VolumeId> => Option<VolumeId>,
            no_volume_check: bool => bool,
        } => fn resync(observer) -> ResyncOutcome;
        Providers => fn providers -> Vec<ProviderInfo>;
        /// Asks a running request (named to its requester by [`ServiceObserver::cancellable`]) to
        /// stop at its next safe point. Returns at once; the request itself answers with the
        /// state it left. A request that already ended is `VSS_E_OBJECT_NOT_FOUND`. Over the
        /// socket it is sent on a second connection while the first waits for the answer.
        Cancel { operation: OperationId => OperationId } => fn cancel -> ();

        Storage => fn storage -> Vec<StorageInfo>;
        /// Sets (or with `None` removes) the diff-area limit; returns shadows deleted to fit.
        SetMaxDiffArea { volume: &VolumeInfo => VolumeInfo, max_bytes: Option<u64> => Option<u64> }
            => fn set_max_diff_area -> Vec<ShadowInfo>;

        /// Exposes a persistent shadow at a directory, drive letter or share.
        Expose { shadow: ShadowId => ShadowId, target: &str => String, base_dir: &Path => PathBuf }
            => fn expose -> Exposure;
        /// Removes an exposure named by shadow ID, drive, directory or share; returns the shadow.
        Unexpose { target: &str => String, base_dir: &Path => PathBuf }
            => fn unexpose -> ShadowInfo;

        /// Serves a live volume read-write at a target (a share or NBD URL, or a directory or
        /// drive for a FUSE file); every write passes the provider.
        Attach { volume: &str => String, target: &str => String, base_dir: &Path => PathBuf }
            => fn attach -> Exposure;
        /// Ends an attachment named by its volume or target; returns the volume.
        Detach { target: &str => String, base_dir: &Path => PathBuf } => fn detach -> VolumeInfo;
        /// The live attachments: volume and where it is served.
        Attachments => fn attachments -> Vec<(VolumeInfo, Exposure)>;
        /// Who writes to a volume's image outside diskshadow (loop devices backed by it, other
        /// processes holding it open for writing): each such write makes its shadows suspect.
        OutsideUsers { volume: &VolumeInfo => VolumeInfo } => fn outside_users -> Vec<String>;

        /// Reads `length` bytes of a volume or shadow at `offset`.
        Read {
            target: &str => String,
            offset: u64 => u64,
            length: u64 => u64,
            base_dir: &Path => PathBuf,
        } => fn read -> Vec<u8> as ResponseBytes;
        /// Writes through the provider, so every shadow keeps its content.
        Write {
            volume: &str => String,
            offset: u64 => u64,
            #[serde(skip)]
            data: &[u8] => RequestBytes,
            base_dir: &Path => PathBuf,
        } => fn write -> ();
        /// Reads `length` bytes of a volume or shadow at `offset` (clamped to its end) straight
        /// into `output`, the requester's regular file or pipe; returns the bytes delivered. With
        /// `sparse`, a file output ending where the bytes go gets holes where the device has
        /// holes or blocks of zeros. The bytes never cross the socket (the descriptor does).
        #[allow(clippy::too_many_arguments)] // `read`'s arguments and the descriptor's.
        ReadInto {
            target: &str => String,
            offset: u64 => u64,
            length: u64 => u64,
            #[serde(skip)]
            output: BorrowedFd<'_> => RequestDescriptor,
            sparse: bool => bool,
            base_dir: &Path => PathBuf,
        } => fn read_into(observer) -> u64;
        /// Writes all of `input` (the requester's regular file, from its position, or pipe)
        /// through the provider at `offset`, then makes it durable; returns the bytes written.
        WriteFrom {
            volume: &str => String,
            offset: u64 => u64,
            #[serde(skip)]
            input: BorrowedFd<'_> => RequestDescriptor,
            base_dir: &Path => PathBuf,
        } => fn write_from(observer) -> u64;

        /// Checks the store's catalog and diff areas without changing anything.
        CheckStore => fn check_store -> StoreCheck;

        /// The writers, for `list writers [metadata | detailed | status]`; with `metadata`, also
        /// what they said of themselves and the display names of the volumes they name.
        ListWriters { metadata: bool => bool } => fn list_writers -> WriterReport;
        /// Every registered writer's state (identifying writers never identified).
        WriterStatuses => fn writer_statuses -> Vec<WriterStatusView>;
        /// `end backup`: BackupComplete, then BackupShutdown, to the writers of the last set.
        EndBackup => fn end_backup(observer) -> ();
        /// `load metadata`: keeps a metadata .cab for `import` or a restore. The requester reads
        /// and parses the file ([`super::read_metadata_file`]), so a hostile file can only fail
        /// the requester that loads it, never the service and the other requesters' state.
        LoadMetadata { cabinet: MetadataCabinet => Box<MetadataCabinet> }
            => fn load_metadata -> LoadedMetadata;
        /// `simulate restore`: which writers a restore involves, sending no event. `verify` are
        /// the `writer verify` entries, each of which must be present.
        SimulateRestore { verify: &[String] => Vec<String> } => fn simulate_restore -> Vec<String>;
        /// `begin restore` (PreRestore) and `end restore` (PostRestore).
        BeginRestore { verify: &[String] => Vec<String> } => fn begin_restore(observer) -> ();
        EndRestore => fn end_restore(observer) -> ();

        /// Releases everything this requester owns (its volatile shadows). Called by `reset`,
        /// `exit` and when the requester ends. Nothing was ever made through a refused
        /// connection, so there is nothing to release there.
        ReleaseRequester => fn release_requester -> Vec<ShadowInfo>, refused: Ok(Vec::new());

        /// `array attach DIR [--name NAME]`: attaches this store (host) to a storage array (an
        /// absolute directory), making the directory an array if it is not one yet.
        AttachArray { dir: &Path => PathBuf, name: Option<&str> => Option<String> }
            => fn attach_array -> ArrayInfo;
        /// `array attach rbd:POOL --conf FILE [--id CLIENT] [--name NAME]`: attaches this store
        /// to a Ceph pool (`conf` absolute), which must be reachable and exist.
        AttachRbdPool {
            pool: &str => String,
            conf: &Path => PathBuf,
            client_id: Option<&str> => Option<String>,
            name: Option<&str> => Option<String>,
        } => fn attach_rbd_pool -> ArrayInfo;
        /// `array detach NAME`.
        DetachArray { name: &str => String } => fn detach_array -> ();
        /// `array list`.
        Arrays => fn arrays -> Vec<ArrayInfo>;
        /// `import`: surfaces the transportable shadows of the loaded metadata from the arrays
        /// this store is attached to.
        Import => fn import -> Vec<ShadowInfo>;
        /// `mask <setid>`: removes an imported set's shadows from this store.
        Mask { set_id: ShadowSetId => ShadowSetId } => fn mask -> Vec<ShadowInfo>;
        /// `break [writable] <setid>`: an imported set's shadow LUNs become volumes of this store.
        Break { set_id: ShadowSetId => ShadowSetId, writable: bool => bool }
            => fn break_set -> Vec<VolumeInfo>;
            }
    };
}
pub(crate) use {observer_or_silent, reply_wire, service_protocol, with_service_table};

with_service_table!(service_protocol core);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ShadowService;

    #[test]
    fn requests_keep_their_wire_json() {
        let encode = |request: &Request| serde_json::to_value(request).expect("encodes");
        assert_eq!(encode(&Request::Volumes), serde_json::json!("volumes"));
        assert_eq!(
            encode(&Request::Write {
                volume: "c:".into(),
                offset: 512,
                data: RequestBytes,
                base_dir: PathBuf::from("/work"),
            }),
            serde_json::json!({"write": {"volume": "c:", "offset": 512, "base_dir": "/work"}}),
        );
        let register: Request = serde_json::from_value(serde_json::json!(
            {"register_volume": {"path": "a.img", "chunk_size": null, "base_dir": "/"}}
        ))
        .expect("a request without the optional provider parses");
        assert!(matches!(
            register,
            Request::RegisterVolume { provider: None, .. }
        ));
    }

    #[test]
    fn a_missing_descriptor_is_a_clear_error_not_a_panic() {
        let payload = RequestPayload::default();
        let error = <BorrowedFd<'_> as Argument<'_, RequestDescriptor>>::from_wire(
            &RequestDescriptor,
            &payload,
        )
        .expect_err("no descriptor came");
        assert_eq!(error.kind, ServiceErrorKind::Invalid);
        assert!(error.message.contains("file descriptor"), "{error}");
    }

    #[test]
    fn a_refused_connection_refuses_every_request_but_has_nothing_to_release() {
        let refusal = ServiceError::new(ServiceErrorKind::Unavailable, "Access is denied.");
        let mut service = RefusedService::new(refusal.clone());
        assert_eq!(service.volumes(), Err(refusal.clone()));
        assert_eq!(
            service.read("c:", 0, 1, Path::new("/")),
            Err(refusal.clone())
        );
        assert_eq!(service.end_backup(&mut SilentObserver), Err(refusal));
        assert_eq!(service.release_requester(), Ok(Vec::new()));
    }
}
