//! `diskshadow volume ...`: a volume's or shadow copy's bytes read and written through the
//! service (a regular file passed as a descriptor, anything else as bytes over the socket),
//! with a progress bar on a terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use crate::engine::ids::parse_guid;
use crate::service::file_io::{read_full, write_sparse, IO_CHUNK};
use crate::service::{ServiceError, ServiceObserver, ShadowService};
use crate::ui::{self, table::plain_table};

use super::{base_dir, VolumeCommand};

/// True when the service can use the descriptor directly: a regular file or a pipe (a
/// terminal, socket or device goes over the socket as bytes).
fn passable(descriptor: BorrowedFd<'_>) -> bool {
    let Ok(owned) = descriptor.try_clone_to_owned() else {
        return false;
    };
    File::from(owned)
        .metadata()
        .is_ok_and(|metadata| metadata.file_type().is_file() || metadata.file_type().is_fifo())
}

/// Renames a fully read output into place.
fn persist_output(file: tempfile::NamedTempFile, path: &Path) -> Result<(), ServiceError> {
    file.persist(path).map(|_| ()).map_err(|error| {
        ServiceError::io(format!(
            "{} cannot be written: {}",
            path.display(),
            error.error
        ))
    })
}

/// Shows the service's progress of a `volume read|write` as a bar (on a terminal only).
struct BarObserver {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl BarObserver {
    fn new(enabled: bool) -> BarObserver {
        BarObserver { enabled, bar: None }
    }
}

impl ServiceObserver for BarObserver {
    fn verbose_line(&mut self, _line: &str) {}
    fn line(&mut self, line: &str) {
        eprintln!("{line}");
    }
    fn progress_begin(&mut self, what: &str, total: u64) {
        if self.enabled {
            self.bar = ui::progress_bar(what, (total > 0).then_some(total));
        }
    }
    fn progress_advance(&mut self, units: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(units);
        }
    }
    fn progress_end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The sequence of the newest diff-area deletion the store remembers (0: none).
fn newest_deletion(service: &mut dyn ShadowService) -> Result<u64, ServiceError> {
    Ok(service
        .storage()?
        .iter()
        .flat_map(|entry| &entry.recent_deletions)
        .map(|event| event.sequence)
        .max()
        .unwrap_or(0))
}

pub fn volume(service: &mut dyn ShadowService, command: VolumeCommand) -> Result<(), ServiceError> {
    let base = base_dir();
    match command {
        VolumeCommand::Write {
            volume,
            offset,
            input,
        } => {
            let file = match &input {
                Some(path) => Some(File::open(path).map_err(|error| {
                    ServiceError::io(format!("{} cannot be read: {error}", path.display()))
                })?),
                None => None,
            };
            let stdin = std::io::stdin();
            let descriptor = match &file {
                Some(file) => file.as_fd(),
                None => stdin.as_fd(),
            };
            let deletions_before = newest_deletion(service)?;
            let written = if passable(descriptor) {
                // The service reads the file or pipe itself: no byte crosses the socket.
                let mut observer = BarObserver::new(true);
                service
                    .write_from(&volume, offset, descriptor, &base, &mut observer)
                    .map(|_| ())
            } else {
                let mut reader: Box<dyn Read> = match file {
                    Some(file) => Box::new(file),
                    None => Box::new(stdin.lock()),
                };
                let progress = ui::progress_bar("writing", None);
                let mut position = offset;
                let mut buffer = vec![0u8; IO_CHUNK];
                let written = (|| loop {
                    let filled = read_full(&mut reader, &mut buffer)
                        .map_err(|error| ServiceError::io(format!("reading the input: {error}")))?;
                    if filled == 0 {
                        return Ok(());
                    }
                    service.write(&volume, position, &buffer[..filled], &base)?;
                    position += filled as u64;
                    if let Some(bar) = &progress {
                        bar.inc(filled as u64);
                    }
                })();
                if let Some(bar) = progress {
                    bar.finish_and_clear();
                }
                written
            };
            // Shadows deleted to make room are said, whether or not the write then succeeded.
            if let Ok(storage) = service.storage() {
                for event in storage
                    .iter()
                    .flat_map(|entry| &entry.recent_deletions)
                    .filter(|event| event.sequence > deletions_before)
                {
                    eprintln!("Warning: {}", event.describe());
                }
            }
            written
        }
        VolumeCommand::Read {
            target,
            offset,
            length,
            output,
            no_sparse,
            ..
        } => {
            let sparse = !no_sparse;
            // A file output is written beside its final name and renamed into place only when
            // every byte was read: a failed read leaves no partial file and keeps an older one.
            let partial = match &output {
                Some(path) => {
                    let directory = match path.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent,
                        _ => Path::new("."),
                    };
                    Some(tempfile::NamedTempFile::new_in(directory).map_err(|error| {
                        ServiceError::io(format!("{} cannot be created: {error}", path.display()))
                    })?)
                }
                None => None,
            };
            let stdout_handle = std::io::stdout();
            let descriptor = match &partial {
                Some(file) => Some(file.as_file().as_fd()),
                None if passable(stdout_handle.as_fd()) => Some(stdout_handle.as_fd()),
                None => None,
            };
            if let Some(descriptor) = descriptor {
                // The service writes the file or pipe itself: no byte crosses the socket.
                let mut observer = BarObserver::new(output.is_some());
                service.read_into(
                    &target,
                    offset,
                    length.unwrap_or(u64::MAX),
                    descriptor,
                    sparse,
                    &base,
                    &mut observer,
                )?;
                return match (partial, &output) {
                    (Some(file), Some(path)) => persist_output(file, path),
                    _ => Ok(()),
                };
            }
            let size = target_size(service, &target, &base)?;
            let mut stdout = stdout_handle.lock();
            let mut written_to_file: u64 = 0;
            let mut position = offset;
            let mut remaining = length.unwrap_or(u64::MAX).min(size.saturating_sub(offset));
            // Progress only when the bytes go to a file: stdout may be the terminal itself.
            let progress = if output.is_some() {
                ui::progress_bar("reading", Some(remaining))
            } else {
                None
            };
            while remaining > 0 {
                let want = remaining.min(IO_CHUNK as u64);
                let data = service.read(&target, position, want, &base)?;
                if data.is_empty() {
                    break;
                }
                match &partial {
                    // A file stays sparse: blocks of zeros are skipped (the new file reads
                    // zeros there) and the length is set at the end.
                    Some(file) if sparse => write_sparse(file.as_file(), written_to_file, &data),
                    Some(file) => file.as_file().write_all_at(&data, written_to_file),
                    None => stdout.write_all(&data),
                }
                .map_err(|error| ServiceError::io(format!("writing the output: {error}")))?;
                written_to_file += data.len() as u64;
                position += data.len() as u64;
                remaining -= data.len() as u64;
                if let Some(bar) = &progress {
                    bar.inc(data.len() as u64);
                }
                if (data.len() as u64) < want {
                    break;
                }
            }
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            match &partial {
                Some(file) => file.as_file().set_len(written_to_file),
                None => stdout.flush(),
            }
            .map_err(|error| ServiceError::io(format!("writing the output: {error}")))?;
            match (partial, &output) {
                (Some(file), Some(path)) => persist_output(file, path),
                _ => Ok(()),
            }
        }
        VolumeCommand::Attach { volume, target } => {
            let attachment = service.attach(&volume, &target, &base)?;
            println!(
                "{volume} is attached read-write as {} ({}).",
                attachment.name, attachment.location
            );
            if let Some(warning) = attachment.access_warning("the volume", "read and write") {
                println!("{warning}");
            }
            Ok(())
        }
        VolumeCommand::Detach { target } => {
            let volume = service.detach(&target, &base)?;
            println!("{} is detached.", volume.display_name());
            Ok(())
        }
        VolumeCommand::Register {
            image,
            chunk_size,
            provider,
        } => {
            let volume = service.register_volume(&image, chunk_size, provider, &base)?;
            println!(
                "{} is registered with {}-byte chunks.",
                volume.display_name(),
                volume.chunk_size
            );
            Ok(())
        }
        VolumeCommand::Attachments => {
            let attachments = service.attachments()?;
            if !attachments.is_empty() {
                let rows = attachments.iter().map(|(volume, attachment)| {
                    vec![
                        volume.display_name(),
                        attachment.name.clone(),
                        attachment.location.clone(),
                    ]
                });
                for line in plain_table(&["VOLUME", "NAME", "LOCATION"], rows) {
                    println!("{line}");
                }
            }
            println!(
                "{} volume{} attached.",
                attachments.len(),
                if attachments.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        VolumeCommand::Info { target, json } => {
            if let Some(uuid) = parse_guid(&target) {
                if let Some(shadow) = service
                    .shadows()?
                    .into_iter()
                    .find(|shadow| shadow.id.0 == uuid)
                {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&shadow).unwrap_or_default()
                        );
                    } else {
                        println!("Shadow copy {}", shadow.id);
                        println!("  Shadow copy set: {}", shadow.set_id);
                        println!("  Original volume: {}", shadow.volume.display_name());
                        println!("  Size: {} bytes", shadow.volume.size);
                        println!("  Attributes: {}", shadow.attributes.diskshadow_words());
                    }
                    return Ok(());
                }
            }
            let info = service.resolve_volume(&target, &base)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                let shadows = service
                    .shadows()?
                    .into_iter()
                    .filter(|shadow| shadow.volume.id == info.id)
                    .count();
                println!("Volume {}", info.display_name());
                println!("  Image file: {}", info.path.display());
                println!("  Size: {} bytes", info.size);
                println!("  Chunk size: {} bytes", info.chunk_size);
                println!("  Shadow copies: {shadows}");
            }
            Ok(())
        }
    }
}

/// The size of a volume or shadow copy, for progress and for reads "to the end".
fn target_size(
    service: &mut dyn ShadowService,
    target: &str,
    base: &Path,
) -> Result<u64, ServiceError> {
    if let Some(uuid) = parse_guid(target) {
        if let Some(shadow) = service
            .shadows()?
            .into_iter()
            .find(|shadow| shadow.id.0 == uuid)
        {
            return Ok(shadow.volume.size);
        }
    }
    Ok(service.resolve_volume(target, base)?.size)
}
