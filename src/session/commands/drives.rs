//! diskshadow's own drive commands: `map`, `unmap`, `attach` and `detach`.

use super::super::{CommandError, Session};
use crate::service::model::DriveTarget;
use crate::syntax::ast::{MapCommand, Word};

fn drive_letter(word: &Word, command: &'static str) -> Result<char, CommandError> {
    crate::drive_letter::parse(&word.text).ok_or_else(|| {
        CommandError::usage(command, format!("`{}` is not a drive letter", word.text))
            .with_help("write a letter and a colon, for example `c:`")
    })
}

pub(super) fn map(session: &mut Session<'_>, map: &MapCommand) -> Result<(), CommandError> {
    match map {
        MapCommand::Show => {
            let drives = session.service.drive_map()?;
            let mut lines = Vec::new();
            for (letter, target) in &drives {
                lines.push(match target {
                    DriveTarget::Volume(path) => {
                        format!("{letter}:\\  volume     {}", path.display())
                    }
                    DriveTarget::Directory(path) => {
                        format!("{letter}:\\  directory  {}", path.display())
                    }
                });
            }
            lines.push(format!(
                "{} drive letter{} mapped.",
                drives.len(),
                if drives.len() == 1 { "" } else { "s" }
            ));
            session.out_lines(lines);
        }
        MapCommand::Map { drive, target } => {
            let letter = drive_letter(drive, "map")?;
            // An RBD volume (`rbd:POOL/IMAGE`) names no local file: it is checked when the
            // letter is used, as `drive map` does.
            let named = std::path::Path::new(&target.text);
            if crate::service::is_rbd_volume(named) {
                session
                    .service
                    .map_drive(letter, DriveTarget::Volume(named.to_path_buf()))?;
                return Ok(());
            }
            let path = session.resolve_path(&target.text);
            let target = if path.is_dir() {
                DriveTarget::Directory(path)
            } else if path.is_file() {
                DriveTarget::Volume(path)
            } else {
                return Err(CommandError::new(format!("{} does not exist", path.display()))
                    .with_help("map a letter to an existing image file (a volume), an RBD image (rbd:POOL/IMAGE) or a directory (an exposure target)"));
            };
            session.service.map_drive(letter, target)?;
        }
        MapCommand::Unmap { drive } => {
            let letter = drive_letter(drive, "map")?;
            session.service.unmap_drive(letter)?;
        }
    }
    Ok(())
}

pub(super) fn attach(
    session: &mut Session<'_>,
    volume: &Word,
    target: &Word,
) -> Result<(), CommandError> {
    let base_dir = session.config.base_dir.clone();
    let attachment = session
        .service
        .attach(&volume.text, &target.text, &base_dir)?;
    session.out(format!(
        "The volume {} was attached read-write as {} ({}).",
        volume.text, attachment.name, attachment.location
    ));
    if let Some(warning) = attachment.access_warning("the volume", "read and write") {
        session.out(warning);
    }
    Ok(())
}

pub(super) fn detach(session: &mut Session<'_>, target: &Word) -> Result<(), CommandError> {
    let base_dir = session.config.base_dir.clone();
    let volume = session.service.detach(&target.text, &base_dir)?;
    session.out(format!(
        "The volume {} was detached.",
        volume.display_name()
    ));
    Ok(())
}
