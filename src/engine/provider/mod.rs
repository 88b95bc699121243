//! Providers: what makes and keeps shadow copies. The system provider is copy-on-write
//! ([`cow`]) over a flat block map ([`index`]).

pub mod cow;
pub mod index;
pub mod plex;
pub mod stamp;

use crate::engine::ids::ProviderId;
use crate::engine::model::{ProviderInfo, ProviderKind};
use crate::engine::vss::{providers, Attributes};

/// The providers this engine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Copy-on-write: `Microsoft Software Shadow Copy provider 1.0`.
    System,
    /// A full copy of the image (a reflink clone where the file system can, else a streamed
    /// copy): independent of later changes to the volume.
    FullCopy,
}

/// `{8c4a3e5f-2b1d-4f6e-9a7c-3d5e6f708192}`: diskshadow's full-copy (plex) provider.
pub const FULL_COPY_PROVIDER_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x8c4a3e5f_2b1d_4f6e_9a7c_3d5e6f708192);
pub const FULL_COPY_PROVIDER_NAME: &str = "diskshadow Full Copy (Plex) provider 1.0";

impl ProviderChoice {
    pub fn from_id(id: Option<ProviderId>) -> Option<ProviderChoice> {
        match id {
            None => Some(ProviderChoice::System),
            Some(id) if id.0 == providers::SYSTEM_PROVIDER_ID => Some(ProviderChoice::System),
            Some(id) if id.0 == FULL_COPY_PROVIDER_ID => Some(ProviderChoice::FullCopy),
            Some(_) => None,
        }
    }

    pub fn id(self) -> ProviderId {
        match self {
            ProviderChoice::System => ProviderId(providers::SYSTEM_PROVIDER_ID),
            ProviderChoice::FullCopy => ProviderId(FULL_COPY_PROVIDER_ID),
        }
    }

    /// The attribute bits this provider adds to every shadow it makes.
    pub fn attributes(self) -> Attributes {
        match self {
            ProviderChoice::System => Attributes(Attributes::DIFFERENTIAL),
            ProviderChoice::FullCopy => Attributes(Attributes::PLEX),
        }
    }

    /// Attribute bits a requester may ask for that this provider cannot honour.
    pub fn unsupported_attributes(self) -> u32 {
        match self {
            ProviderChoice::System => {
                Attributes::PLEX | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
            }
            ProviderChoice::FullCopy => {
                Attributes::DIFFERENTIAL | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
            }
        }
    }

    pub fn info(self) -> ProviderInfo {
        match self {
            ProviderChoice::System => ProviderInfo {
                id: ProviderId(providers::SYSTEM_PROVIDER_ID),
                name: providers::SYSTEM_PROVIDER_NAME.to_string(),
                kind: ProviderKind::System,
                version: providers::SYSTEM_PROVIDER_VERSION.to_string(),
                clsid: ProviderId(providers::SYSTEM_PROVIDER_CLSID),
            },
            ProviderChoice::FullCopy => ProviderInfo {
                id: ProviderId(FULL_COPY_PROVIDER_ID),
                name: FULL_COPY_PROVIDER_NAME.to_string(),
                kind: ProviderKind::Software,
                version: "1.0.0.0".to_string(),
                clsid: ProviderId(FULL_COPY_PROVIDER_ID),
            },
        }
    }

    /// True for the provider whose shadows live in the copy-on-write block map.
    pub fn is_copy_on_write(self) -> bool {
        self == ProviderChoice::System
    }

    pub fn all() -> Vec<ProviderChoice> {
        vec![ProviderChoice::System, ProviderChoice::FullCopy]
    }
}
