//! The catalog's own on-disk form of the values it shares with the service API.
//!
//! The catalog keeps API values in memory (a drive target, an exposure, a context, attribute
//! bits, a requester), but never writes them with the API's serde: each is written through a
//! record type defined here, so editing an API or wire type cannot change the catalog's format
//! without a change in this file (and the format test in `tests.rs` fails when one does).
//! Fields use them with `#[serde(with = "records::via")]` (or `via_option`, `via_map`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::model::{DriveTarget, Exposure, ExposureKind, RequesterId};
use crate::engine::vss::{Attributes, Context};

/// A value the catalog stores through a record type of its own.
pub trait Recorded: Sized {
    type Record: Serialize + DeserializeOwned;
    fn to_record(&self) -> Self::Record;
    fn from_record(record: Self::Record) -> Self;
}

/// `#[serde(with = "records::via")]` for a field of a [`Recorded`] type.
pub mod via {
    use super::*;

    pub fn serialize<T: Recorded, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.to_record().serialize(serializer)
    }

    pub fn deserialize<'de, T: Recorded, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        T::Record::deserialize(deserializer).map(T::from_record)
    }
}

/// `#[serde(with = "records::via_option")]` for an `Option` of a [`Recorded`] type.
pub mod via_option {
    use super::*;

    pub fn serialize<T: Recorded, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(T::to_record).serialize(serializer)
    }

    pub fn deserialize<'de, T: Recorded, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<T::Record>::deserialize(deserializer).map(|record| record.map(T::from_record))
    }
}

/// `#[serde(with = "records::via_map")]` for a map whose values are [`Recorded`].
pub mod via_map {
    use super::*;

    pub fn serialize<K: Serialize + Ord, T: Recorded, S: Serializer>(
        map: &BTreeMap<K, T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(map.iter().map(|(key, value)| (key, value.to_record())))
    }

    pub fn deserialize<'de, K: DeserializeOwned + Ord, T: Recorded, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<K, T>, D::Error> {
        BTreeMap::<K, T::Record>::deserialize(deserializer).map(|map| {
            map.into_iter()
                .map(|(key, record)| (key, T::from_record(record)))
                .collect()
        })
    }
}

/// A drive map entry: `{"volume": PATH}` or `{"directory": PATH}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveRecord {
    Volume(PathBuf),
    Directory(PathBuf),
}

impl Recorded for DriveTarget {
    type Record = DriveRecord;
    fn to_record(&self) -> DriveRecord {
        match self {
            DriveTarget::Volume(path) => DriveRecord::Volume(path.clone()),
            DriveTarget::Directory(path) => DriveRecord::Directory(path.clone()),
        }
    }
    fn from_record(record: DriveRecord) -> Self {
        match record {
            DriveRecord::Volume(path) => DriveTarget::Volume(path),
            DriveRecord::Directory(path) => DriveTarget::Directory(path),
        }
    }
}

/// Where a shadow is exposed: `{"kind": "directory"|"drive"|"share", "name", "location"}`.
#[derive(Serialize, Deserialize)]
pub struct ExposureRecord {
    kind: ExposureKindRecord,
    name: String,
    location: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExposureKindRecord {
    Directory,
    Drive,
    Share,
}

impl Recorded for Exposure {
    type Record = ExposureRecord;
    fn to_record(&self) -> ExposureRecord {
        ExposureRecord {
            kind: match self.kind {
                ExposureKind::Directory => ExposureKindRecord::Directory,
                ExposureKind::Drive => ExposureKindRecord::Drive,
                ExposureKind::Share => ExposureKindRecord::Share,
            },
            name: self.name.clone(),
            location: self.location.clone(),
        }
    }
    fn from_record(record: ExposureRecord) -> Self {
        Exposure {
            kind: match record.kind {
                ExposureKindRecord::Directory => ExposureKind::Directory,
                ExposureKindRecord::Drive => ExposureKind::Drive,
                ExposureKindRecord::Share => ExposureKind::Share,
            },
            name: record.name,
            location: record.location,
        }
    }
}

/// A shadow's context, by name: `"volatile"`, `"persistent_no_writers"`, ….
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextRecord {
    Volatile,
    VolatileNoWriters,
    Persistent,
    PersistentNoWriters,
    ClientAccessible,
}

impl Recorded for Context {
    type Record = ContextRecord;
    fn to_record(&self) -> ContextRecord {
        match self {
            Context::Volatile => ContextRecord::Volatile,
            Context::VolatileNoWriters => ContextRecord::VolatileNoWriters,
            Context::Persistent => ContextRecord::Persistent,
            Context::PersistentNoWriters => ContextRecord::PersistentNoWriters,
            Context::ClientAccessible => ContextRecord::ClientAccessible,
        }
    }
    fn from_record(record: ContextRecord) -> Self {
        match record {
            ContextRecord::Volatile => Context::Volatile,
            ContextRecord::VolatileNoWriters => Context::VolatileNoWriters,
            ContextRecord::Persistent => Context::Persistent,
            ContextRecord::PersistentNoWriters => Context::PersistentNoWriters,
            ContextRecord::ClientAccessible => Context::ClientAccessible,
        }
    }
}

/// `VSS_VOLUME_SNAPSHOT_ATTRIBUTES` bits, as a number.
impl Recorded for Attributes {
    type Record = u32;
    fn to_record(&self) -> u32 {
        self.0
    }
    fn from_record(bits: u32) -> Self {
        Attributes(bits)
    }
}

/// The requester connection that owns a volatile shadow, as a number.
impl Recorded for RequesterId {
    type Record = u64;
    fn to_record(&self) -> u64 {
        self.0
    }
    fn from_record(id: u64) -> Self {
        RequesterId(id)
    }
}
