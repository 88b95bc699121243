//! The service as a requester sees it when the store's access control refused it: every
//! request fails with that refusal (`E_ACCESSDENIED`), and there is nothing to release.
//!
//! DiskShadow starts without touching VSS and fails at the first command that needs it (`add
//! volume` calls `InitializeForBackup`); the shell does the same with this stand-in, so
//! `set context …` and the other settings still run and the refusal is told where Windows
//! tells it.

use std::os::fd::BorrowedFd;
use std::path::Path;

use super::api::{
    CreateOutcome, CreateRequest, LoadedMetadata, OperationId, ServiceObserver, ShadowService,
    StoreCheck, WriterListing, WriterStatusView,
};
use super::error::ServiceError;
use crate::engine::cabinet::MetadataCabinet;
use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId};
use crate::engine::model::{
    DeleteSelector, DriveTarget, Exposure, ProviderInfo, ShadowInfo, StorageInfo, VolumeInfo,
};

/// A service connection the store's access control refused.
#[derive(Debug, Clone)]
pub struct RefusedService {
    refusal: ServiceError,
}

impl RefusedService {
    pub fn new(refusal: ServiceError) -> Self {
        Self { refusal }
    }

    fn refused<T>(&self) -> Result<T, ServiceError> {
        Err(self.refusal.clone())
    }
}

impl ShadowService for RefusedService {
    fn resolve_volume(&mut self, _: &str, _: &Path) -> Result<VolumeInfo, ServiceError> {
        self.refused()
    }
    fn volumes(&mut self) -> Result<Vec<VolumeInfo>, ServiceError> {
        self.refused()
    }
    fn register_volume(
        &mut self,
        _: &str,
        _: Option<u32>,
        _: Option<ProviderId>,
        _: &Path,
    ) -> Result<VolumeInfo, ServiceError> {
        self.refused()
    }
    fn drive_map(&mut self) -> Result<Vec<(char, DriveTarget)>, ServiceError> {
        self.refused()
    }
    fn map_drive(&mut self, _: char, _: DriveTarget) -> Result<(), ServiceError> {
        self.refused()
    }
    fn unmap_drive(&mut self, _: char) -> Result<(), ServiceError> {
        self.refused()
    }
    fn create(
        &mut self,
        _: &CreateRequest,
        _: &mut dyn ServiceObserver,
    ) -> Result<CreateOutcome, ServiceError> {
        self.refused()
    }
    fn shadows(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.refused()
    }
    fn cancel(&mut self, _: OperationId) -> Result<(), ServiceError> {
        self.refused()
    }
    fn delete_shadows(&mut self, _: &DeleteSelector) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.refused()
    }
    fn revert(
        &mut self,
        _: ShadowId,
        _: bool,
        _: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.refused()
    }
    fn providers(&mut self) -> Result<Vec<ProviderInfo>, ServiceError> {
        self.refused()
    }
    fn storage(&mut self) -> Result<Vec<StorageInfo>, ServiceError> {
        self.refused()
    }
    fn set_max_diff_area(
        &mut self,
        _: &VolumeInfo,
        _: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.refused()
    }
    fn expose(&mut self, _: ShadowId, _: &str, _: &Path) -> Result<Exposure, ServiceError> {
        self.refused()
    }
    fn unexpose(&mut self, _: &str, _: &Path) -> Result<ShadowInfo, ServiceError> {
        self.refused()
    }
    fn attach(&mut self, _: &str, _: &str, _: &Path) -> Result<Exposure, ServiceError> {
        self.refused()
    }
    fn detach(&mut self, _: &str, _: &Path) -> Result<VolumeInfo, ServiceError> {
        self.refused()
    }
    fn attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError> {
        self.refused()
    }
    fn outside_users(&mut self, _: &VolumeInfo) -> Result<Vec<String>, ServiceError> {
        self.refused()
    }
    fn read(&mut self, _: &str, _: u64, _: u64, _: &Path) -> Result<Vec<u8>, ServiceError> {
        self.refused()
    }
    fn write(&mut self, _: &str, _: u64, _: &[u8], _: &Path) -> Result<(), ServiceError> {
        self.refused()
    }
    fn read_into(
        &mut self,
        _: &str,
        _: u64,
        _: u64,
        _: BorrowedFd<'_>,
        _: bool,
        _: &Path,
        _: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError> {
        self.refused()
    }
    fn write_from(
        &mut self,
        _: &str,
        _: u64,
        _: BorrowedFd<'_>,
        _: &Path,
        _: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError> {
        self.refused()
    }
    fn check_store(&mut self) -> Result<StoreCheck, ServiceError> {
        self.refused()
    }
    fn list_writers(&mut self, _: WriterListing) -> Result<Vec<String>, ServiceError> {
        self.refused()
    }
    fn writer_statuses(&mut self) -> Result<Vec<WriterStatusView>, ServiceError> {
        self.refused()
    }
    fn end_backup(&mut self, _: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.refused()
    }
    fn load_metadata(&mut self, _: MetadataCabinet) -> Result<LoadedMetadata, ServiceError> {
        self.refused()
    }
    fn simulate_restore(&mut self, _: &[String]) -> Result<Vec<String>, ServiceError> {
        self.refused()
    }
    fn begin_restore(
        &mut self,
        _: &[String],
        _: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.refused()
    }
    fn end_restore(&mut self, _: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.refused()
    }
    /// Nothing was ever made through a refused connection, so there is nothing to release.
    fn release_requester(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        Ok(Vec::new())
    }
    fn attach_array(
        &mut self,
        _: &Path,
        _: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError> {
        self.refused()
    }
    fn attach_rbd_pool(
        &mut self,
        _: &str,
        _: &Path,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError> {
        self.refused()
    }
    fn detach_array(&mut self, _: &str) -> Result<(), ServiceError> {
        self.refused()
    }
    fn arrays(&mut self) -> Result<Vec<crate::engine::array::ArrayInfo>, ServiceError> {
        self.refused()
    }
    fn import(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.refused()
    }
    fn mask(&mut self, _: ShadowSetId) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.refused()
    }
    fn break_set(&mut self, _: ShadowSetId, _: bool) -> Result<Vec<VolumeInfo>, ServiceError> {
        self.refused()
    }
    fn resync(
        &mut self,
        _: ShadowId,
        _: Option<crate::engine::ids::VolumeId>,
        _: bool,
        _: &mut dyn ServiceObserver,
    ) -> Result<crate::engine::resync::ResyncOutcome, ServiceError> {
        self.refused()
    }
}
