//! Typed identifiers. Every ID is a UUID shown as VSS shows it: lower case, in braces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Parses `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (braces optional, any case).
pub fn parse_guid(text: &str) -> Option<Uuid> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(trimmed);
    if inner.len() != 36 {
        return None;
    }
    Uuid::parse_str(inner).ok()
}

macro_rules! guid_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn nil() -> Self {
                Self(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{{{}}}", self.0.hyphenated())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = InvalidGuid;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_guid(text).map(Self).ok_or_else(|| InvalidGuid(text.to_string()))
            }
        }
    };
}

guid_type!(
    /// A volume's stable GUID, given when the image file is first registered.
    VolumeId
);
guid_type!(
    /// One shadow copy.
    ShadowId
);
guid_type!(
    /// A shadow copy set: every shadow created by one `create`, sharing one point in time.
    ShadowSetId
);
guid_type!(
    /// A provider (system copy-on-write, redirect-on-write, full copy).
    ProviderId
);
guid_type!(
    /// A writer class ID (stable across versions of the writer).
    WriterId
);
guid_type!(
    /// A writer instance ID (one per running writer process).
    WriterInstanceId
);

/// Text that should have been a GUID and is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a GUID; expected the form {{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}}")]
pub struct InvalidGuid(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_with_and_without_braces_in_any_case() {
        let text = "{80E56935-d434-4518-bfa8-74886732b972}";
        let id: ShadowId = text.parse().expect("valid GUID");
        assert_eq!(id.to_string(), "{80e56935-d434-4518-bfa8-74886732b972}");
        assert_eq!(parse_guid("80e56935-d434-4518-bfa8-74886732b972"), Some(id.0));
        assert!("{80e56935}".parse::<ShadowId>().is_err());
        assert!("80e56935d4344518bfa874886732b972".parse::<ShadowId>().is_err());
    }
}
