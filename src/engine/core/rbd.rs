//! Ceph pools as arrays: `array attach rbd:POOL --conf FILE [--id CLIENT]`.
//!
//! An attached pool is recorded in the catalog like an array directory (an
//! [`ArrayAttachment`] whose `path` is `rbd:POOL` and whose `rbd` names the pool, the
//! cluster's configuration and the client), so that volumes `rbd:POOL/IMAGE` of it can be
//! named. Attaching checks that the cluster answers and has the pool.

use std::path::{Path, PathBuf};

use super::{lock_mutex, Engine, VolumeError};
use crate::engine::array::{self, ArrayAttachError, ArrayAttachment, ArrayInfo, RbdPool};
use crate::engine::catalog::CatalogChange;
use crate::engine::rbd::{self, Cluster};

/// Whether the volume at `path` (as the catalog records it) is an image of `pool`.
pub(super) fn volume_in_pool(path: &Path, pool: &str) -> bool {
    path.to_str()
        .and_then(|text| text.strip_prefix("rbd:"))
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(found, _)| found == pool)
}

impl Engine {
    /// Attaches this store to the Ceph pool `pool` of the cluster that `conf` names, as
    /// client `client_id`, under `name` (default: the pool's name). The cluster must answer
    /// within [`rbd::CONNECT_TIMEOUT`] and have the pool.
    pub fn attach_rbd_pool(
        &self,
        pool: &str,
        conf: &Path,
        client_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<ArrayInfo, ArrayAttachError> {
        if pool.is_empty() || pool.contains('/') || pool.contains('@') {
            return Err(ArrayAttachError::InvalidPool {
                pool: pool.to_string(),
            });
        }
        let conf = conf
            .canonicalize()
            .ok()
            .filter(|conf| conf.is_file())
            .ok_or_else(|| ArrayAttachError::RbdConfMissing {
                conf: conf.to_path_buf(),
            })?;
        let name = name.unwrap_or(pool).to_string();
        if !array::valid_name(&name) {
            return Err(ArrayAttachError::InvalidName { name });
        }
        let record = RbdPool {
            pool: pool.to_string(),
            conf,
            client_id: client_id.map(str::to_string),
        };
        let path = record.array_path();
        {
            let catalog = lock_mutex(&self.shared.catalog);
            let state = catalog.state();
            if let Some((known, _)) = state.arrays.iter().find(|(_, known)| known.path == path) {
                return Err(ArrayAttachError::AlreadyAttached {
                    name: known.clone(),
                    path,
                });
            }
            if let Some(known) = state.arrays.get(&name) {
                return Err(ArrayAttachError::NameInUse {
                    name,
                    path: known.path.clone(),
                });
            }
        }
        Cluster::shared(&record.conf, client_id, rbd::CONNECT_TIMEOUT)?.pool(pool)?;
        let attachment = ArrayAttachment {
            id: self.shared.ids.new_uuid(),
            path,
            rbd: Some(record.clone()),
        };
        let id = attachment.id;
        let mut catalog = lock_mutex(&self.shared.catalog);
        catalog.commit(vec![CatalogChange::AttachArray {
            name: name.clone(),
            attachment,
        }])?;
        self.shared.rbd_pools.set(catalog.state().arrays.values());
        drop(catalog);
        Ok(self.rbd_array_info(&name, id, &record))
    }

    /// Checks that `path` (`rbd:POOL/IMAGE`) names an image of an attached pool that can be
    /// opened, and returns it as the volume's path.
    pub(super) fn check_rbd_volume(&self, path: &Path) -> Result<PathBuf, VolumeError> {
        let spec = path.display().to_string();
        let (pool, image) =
            rbd::file::volume_path_parts(path).ok_or_else(|| VolumeError::NotAVolume {
                spec: spec.clone(),
                why: "an RBD volume is named rbd:POOL/IMAGE".to_string(),
            })?;
        let file = self
            .shared
            .rbd_pools
            .open(pool, image, true)
            .map_err(|source| VolumeError::Rbd {
                spec: spec.clone(),
                source,
            })?;
        let size = file.image().size().map_err(|error| VolumeError::Rbd {
            spec: spec.clone(),
            source: error.into(),
        })?;
        if size > crate::engine::core::limits::MAX_VOLUME_BYTES {
            return Err(VolumeError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        Ok(PathBuf::from(format!("rbd:{pool}/{image}")))
    }

    /// An attached pool as `array list` shows it, with why it cannot be reached now, if it
    /// cannot.
    pub(super) fn rbd_array_info(&self, name: &str, id: uuid::Uuid, pool: &RbdPool) -> ArrayInfo {
        let problem = Cluster::shared(&pool.conf, pool.client_id.as_deref(), rbd::CONNECT_TIMEOUT)
            .and_then(|cluster| cluster.pool(&pool.pool))
            .err()
            .map(|error| error.to_string());
        ArrayInfo {
            name: name.to_string(),
            id,
            path: pool.array_path(),
            hosts: Vec::new(),
            shadow_luns: 0,
            problem,
            rbd: Some(pool.clone()),
        }
    }
}
