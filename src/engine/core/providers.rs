//! The providers this engine has, as VSS's provider registration lists them: the built-in
//! software providers and the hardware ones (a LUN array, Ceph RBD). It stands above every
//! provider, so the provider seam (`provider/`) names none of them.

use crate::engine::array::ArrayProvider;
use crate::engine::ids::ProviderId;
use crate::engine::provider::{
    FullCopyProvider, Provider, RedirectOnWriteProvider, SystemProvider,
};
use crate::engine::rbd::RbdProvider;

static SYSTEM: SystemProvider = SystemProvider;
static REDIRECT_ON_WRITE: RedirectOnWriteProvider = RedirectOnWriteProvider;
static FULL_COPY: FullCopyProvider = FullCopyProvider;
static ARRAY: ArrayProvider = ArrayProvider;
static RBD: RbdProvider = RbdProvider;

/// Every provider, in `list providers` order.
pub fn providers() -> [&'static dyn Provider; 5] {
    [&SYSTEM, &REDIRECT_ON_WRITE, &FULL_COPY, &ARRAY, &RBD]
}

/// The provider with this ID; `None` (no ID) is the system provider.
pub fn provider_by_id(id: Option<ProviderId>) -> Option<&'static dyn Provider> {
    match id {
        None => Some(&SYSTEM),
        Some(id) => providers().into_iter().find(|provider| provider.id() == id),
    }
}

/// The provider a volume registration names: `cow`, `row`, `plex` or a provider ID.
pub fn provider_by_name(name: &str) -> Option<&'static dyn Provider> {
    match name.trim().to_ascii_lowercase().as_str() {
        "cow" | "system" | "copy-on-write" => Some(&SYSTEM),
        "row" | "redirect-on-write" => Some(&REDIRECT_ON_WRITE),
        "plex" | "full-copy" => Some(&FULL_COPY),
        "array" | "hardware" => Some(&ARRAY),
        "rbd" | "ceph" => Some(&RBD),
        other => crate::engine::ids::parse_guid(other)
            .and_then(|id| provider_by_id(Some(ProviderId(id)))),
    }
}
