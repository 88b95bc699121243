//! Providers: what makes and keeps shadow copies, behind one seam the engine calls.
//!
//! - [`Provider`]: a provider as VSS lists it (ID, name, type, version), what it supports,
//!   per-set commit hooks (prepare / commit / abort across the set's volumes) and the life of
//!   shadows that are independent of the volume's data path (full copies; hardware clones),
//!   including copies deferred to after thaw ([`DeferredCopies`],
//!   [`Provider::finish_deferred_copy`], made with [`plex::copy_point_in_time`]).
//! - [`VolumeProvider`]: the data path of one volume (every write, live read, shadow read,
//!   revert source, delete, check, space accounting and crash recovery) for the
//!   differential providers: copy-on-write ([`cow`]) and redirect-on-write ([`row`]), both
//!   over the flat block map of [`index`].
//!
//! The engine (`core.rs`) calls only these traits; nothing outside this module asks which
//! provider a shadow or a volume has.

pub mod api;
mod builtin;
pub use builtin::{FullCopyProvider, RedirectOnWriteProvider, SystemProvider};
pub mod cow;
pub mod index;
pub mod plex;
pub mod row;
pub mod stamp;
mod writeback;

pub use api::{
    DataPathKind, DeferredCopies, Provider, ProviderContext, SetMember, VolumeProvider,
    FULL_COPY_PROVIDER_ID, FULL_COPY_PROVIDER_NAME, ROW_PROVIDER_ID, ROW_PROVIDER_NAME,
};
