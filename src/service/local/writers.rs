//! Writers outside creation: listings, `end backup`, and the restore sequence from loaded
//! metadata.

use std::collections::BTreeMap;
use std::path::Path;

use crate::engine::cabinet::MetadataCabinet;
use crate::engine::coordinator::RestoreWriter;
use crate::engine::progress::CancelToken;
use crate::engine::vss::VssCode;
use crate::service::api::{LoadedMetadata, ReportedWriter, WriterReport};
use crate::service::error::{ServiceError, ServiceErrorKind};
use crate::service::events::ServiceObserver;

use super::observe::{status_view, CoordinatorBridge};
use super::{coordinator_error, LocalService};

impl LocalService {
    fn writer_error(message: String, code: VssCode) -> ServiceError {
        ServiceError::new(ServiceErrorKind::Writer, message).with_code(code)
    }

    /// The restore's writers, after checking every `writer verify` entry is among them.
    fn restore_writers(&self, verify: &[String]) -> Result<Vec<RestoreWriter>, ServiceError> {
        let Some(cabinet) = &self.loaded else {
            return Err(ServiceError::invalid("no metadata is loaded")
                .with_code(VssCode::VSS_E_BAD_STATE)
                .with_help("`load metadata <file.cab>` first"));
        };
        let writers = cabinet.restore_writers();
        for wanted in verify {
            let found = writers.iter().any(|writer| {
                writer.name.eq_ignore_ascii_case(wanted)
                    || writer.writer_id.to_string().eq_ignore_ascii_case(wanted)
                    || writer.components.iter().any(|component| {
                        format!("{}:{}", writer.name, component).eq_ignore_ascii_case(wanted)
                    })
            });
            if !found {
                return Err(Self::writer_error(
                    format!("the writer or component `{wanted}` that `writer verify` requires is not in the loaded metadata"),
                    VssCode::VSS_E_WRITER_INFRASTRUCTURE,
                )
                .with_help("`simulate restore` lists the writers and components the metadata holds"));
            }
        }
        Ok(writers)
    }

    pub(super) fn writer_report(
        &mut self,
        with_metadata: bool,
    ) -> Result<WriterReport, ServiceError> {
        let host = self.core.coordinator.identified_writer_host();
        let engine = self.core.engine.clone();
        let writers = host
            .statuses()
            .into_iter()
            .map(|status| {
                // Only a metadata listing names volumes, and resolving one may register it.
                let metadata = status
                    .instance_id
                    .filter(|_| with_metadata)
                    .and_then(|_| host.metadata(status.index));
                let mut volume_names = BTreeMap::new();
                for component in metadata.iter().flat_map(|metadata| &metadata.components) {
                    for file in &component.files {
                        if let Ok(volume) = engine.resolve_volume(&file.volume, Path::new("/")) {
                            volume_names.insert(file.volume.clone(), volume.display_name());
                        }
                    }
                }
                ReportedWriter {
                    failure_message: status.failure_message.clone(),
                    metadata,
                    volume_names,
                    status: status_view(status),
                }
            })
            .collect();
        Ok(WriterReport {
            problems: host.problems().iter().map(ToString::to_string).collect(),
            writers,
        })
    }

    pub(super) fn writer_status_views(
        &mut self,
    ) -> Result<Vec<crate::service::api::WriterStatusView>, ServiceError> {
        let host = self.core.coordinator.identified_writer_host();
        Ok(host.statuses().into_iter().map(status_view).collect())
    }

    pub(super) fn finish_backup(
        &mut self,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .end_backup(&mut self.state, &bridge)
            .map_err(coordinator_error)
    }

    pub(super) fn keep_metadata(
        &mut self,
        cabinet: MetadataCabinet,
    ) -> Result<LoadedMetadata, ServiceError> {
        let mut files = vec![crate::engine::cabinet::MANIFEST_FILE.to_string()];
        if cabinet.backup_components.is_some() {
            files.push(crate::engine::cabinet::BACKUP_COMPONENTS_FILE.to_string());
        }
        files.extend((0..cabinet.writers.len()).map(|index| format!("WM{index}.xml")));
        files.push(cabinet.log_name.clone());
        let loaded = LoadedMetadata {
            set_id: cabinet.snapshot_set_id,
            aliases: cabinet.aliases.clone(),
            files,
            writers: cabinet
                .writers
                .iter()
                .map(|writer| writer.name.clone())
                .collect(),
        };
        self.loaded = Some(cabinet);
        Ok(loaded)
    }

    pub(super) fn restore_simulation(
        &mut self,
        verify: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        let writers = self.restore_writers(verify)?;
        let involvement = self
            .core
            .coordinator
            .simulate_restore(&writers)
            .map_err(coordinator_error)?;
        let mut lines = Vec::new();
        for writer in &involvement {
            lines.push(format!(
                "* WRITER \"{}\" {}: {}, {}",
                writer.name,
                writer.writer_id,
                if writer.registered {
                    "registered"
                } else {
                    "not registered here"
                },
                if writer.gets_restore_events {
                    "gets PreRestore and PostRestore"
                } else {
                    "gets no restore events"
                }
            ));
            for component in &writer.components {
                lines.push(format!("        + Component: {component}"));
            }
        }
        lines.push(format!(
            "{} writer{} involved in the restore.",
            involvement.len(),
            if involvement.len() == 1 { "" } else { "s" }
        ));
        Ok(lines)
    }

    pub(super) fn start_restore(
        &mut self,
        verify: &[String],
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let writers = self.restore_writers(verify)?;
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .begin_restore(&writers, &bridge)
            .map_err(coordinator_error)?;
        self.restoring = Some(writers);
        Ok(())
    }

    pub(super) fn finish_restore(
        &mut self,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let Some(writers) = self.restoring.take() else {
            return Err(ServiceError::invalid("no restore is in progress")
                .with_code(VssCode::VSS_E_BAD_STATE)
                .with_help("`begin restore` starts one"));
        };
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .end_restore(&writers, &bridge)
            .map_err(coordinator_error)
    }
}
