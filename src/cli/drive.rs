//! `diskshadow drive map|unmap|list`: the drive map, over the service.

use crate::engine::model::DriveTarget;
use crate::service::{ServiceError, ShadowService};
use crate::ui::table::plain_table;

use super::{base_dir, DriveCommand};

pub fn drive(service: &mut dyn ShadowService, command: DriveCommand) -> Result<(), ServiceError> {
    let letter_of = |text: &str| -> Result<char, ServiceError> {
        crate::drive_letter::parse(text).ok_or_else(|| {
            ServiceError::invalid(format!("`{text}` is not a drive letter"))
                .with_help("write a letter and a colon, for example C:")
        })
    };
    match command {
        DriveCommand::List { json: true } => {
            let entries: Vec<serde_json::Value> = service
                .drive_map()?
                .into_iter()
                .map(|(letter, target)| {
                    let (kind, path) = match target {
                        DriveTarget::Volume(path) => ("volume", path),
                        DriveTarget::Directory(path) => ("directory", path),
                    };
                    serde_json::json!({"letter": letter.to_string(), "kind": kind, "path": path})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&entries).unwrap_or_default()
            );
            Ok(())
        }
        DriveCommand::List { json: false } => {
            let drives = service.drive_map()?;
            if drives.is_empty() {
                println!("No drive letters are mapped.");
                return Ok(());
            }
            let rows = drives.into_iter().map(|(letter, target)| {
                let (kind, path) = match target {
                    DriveTarget::Volume(path) => ("volume", path),
                    DriveTarget::Directory(path) => ("directory", path),
                };
                vec![
                    format!("{letter}:"),
                    kind.to_string(),
                    path.display().to_string(),
                ]
            });
            for line in plain_table(&["DRIVE", "KIND", "PATH"], rows) {
                println!("{line}");
            }
            Ok(())
        }
        DriveCommand::Map { letter, target } => {
            let letter = letter_of(&letter)?;
            // An RBD volume (`rbd:POOL/IMAGE`) is checked when the letter is used.
            if crate::engine::rbd::file::is_volume_path(&target) {
                return service.map_drive(letter, DriveTarget::Volume(target));
            }
            let path = if target.is_absolute() {
                target
            } else {
                base_dir().join(target)
            };
            let target = if path.is_dir() {
                DriveTarget::Directory(path)
            } else if path.is_file() {
                DriveTarget::Volume(path)
            } else {
                return Err(
                    ServiceError::invalid(format!("{} does not exist", path.display()))
                        .with_help("map a letter to an existing image file or directory"),
                );
            };
            service.map_drive(letter, target)
        }
        DriveCommand::Unmap { letter } => service.unmap_drive(letter_of(&letter)?),
    }
}
