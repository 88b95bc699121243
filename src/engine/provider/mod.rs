//! Providers: what makes and keeps shadow copies. The system provider is copy-on-write
//! ([`cow`]) over a flat block map ([`index`]).

pub mod cow;
pub mod index;

use crate::engine::ids::ProviderId;
use crate::engine::model::{ProviderInfo, ProviderKind};
use crate::engine::vss::{providers, Attributes};

/// The providers this engine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Copy-on-write: `Microsoft Software Shadow Copy provider 1.0`.
    System,
}

impl ProviderChoice {
    pub fn from_id(id: Option<ProviderId>) -> Option<ProviderChoice> {
        match id {
            None => Some(ProviderChoice::System),
            Some(id) if id.0 == providers::SYSTEM_PROVIDER_ID => Some(ProviderChoice::System),
            Some(_) => None,
        }
    }

    pub fn id(self) -> ProviderId {
        match self {
            ProviderChoice::System => ProviderId(providers::SYSTEM_PROVIDER_ID),
        }
    }

    /// The attribute bits this provider adds to every shadow it makes.
    pub fn attributes(self) -> Attributes {
        match self {
            ProviderChoice::System => Attributes(Attributes::DIFFERENTIAL),
        }
    }

    /// Attribute bits a requester may ask for that this provider cannot honour.
    pub fn unsupported_attributes(self) -> u32 {
        match self {
            ProviderChoice::System => {
                Attributes::PLEX | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
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
        }
    }

    pub fn all() -> Vec<ProviderChoice> {
        vec![ProviderChoice::System]
    }
}
