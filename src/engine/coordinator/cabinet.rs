//! The metadata cabinet's documents made from a backup, and a restore's writers read from a
//! loaded cabinet: the coordinator's side of the cabinet, so the cabinet (a file format)
//! names nothing of the coordinator.

use crate::engine::cabinet::{
    BackupComponent, BackupComponents, BackupComponentsWriter, MetadataCabinet, WriterDocument,
};

use super::{BackupSession, GatheredMetadata, RestoreWriter};

impl BackupComponents {
    /// The backup components document of a backup session (the writers and components that
    /// took part).
    pub fn from_session(session: &BackupSession) -> Self {
        Self {
            backup_type: session.backup_type,
            writers: session
                .writers
                .iter()
                .map(|writer| BackupComponentsWriter {
                    writer_id: writer.writer_id,
                    instance_id: writer.instance_id,
                    components: writer
                        .components
                        .iter()
                        .map(|component| BackupComponent {
                            logical_path: component.logical_path.clone(),
                            name: component.name.clone(),
                            component_type: component.component_type,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl WriterDocument {
    /// One document per writer that took part in the backup, excluded ones too, in the
    /// order they were identified: DiskShadow writes `WM0.xml` … `WM10.xml` for 11 writers
    /// whatever the selection kept.
    pub fn for_identified(gathered: &GatheredMetadata) -> Vec<Self> {
        gathered
            .writers
            .iter()
            .map(|writer| WriterDocument {
                name: writer.name.clone(),
                writer_id: writer.writer_id,
                instance_id: writer.instance_id,
                metadata: writer.metadata.clone(),
            })
            .collect()
    }
}

impl MetadataCabinet {
    /// The writers and selected components of the loaded backup, for `begin restore` /
    /// `simulate restore`. Writers without a metadata document are left out.
    pub fn restore_writers(&self) -> Vec<RestoreWriter> {
        let Some(backup_components) = &self.backup_components else {
            return Vec::new();
        };
        backup_components
            .writers
            .iter()
            .filter_map(|selected| {
                let document = self
                    .writers
                    .iter()
                    .find(|document| document.writer_id == selected.writer_id)?;
                Some(RestoreWriter {
                    writer_id: document.writer_id,
                    name: document.name.clone(),
                    metadata: document.metadata.clone(),
                    components: selected
                        .components
                        .iter()
                        .map(BackupComponent::full_path)
                        .collect(),
                })
            })
            .collect()
    }
}
