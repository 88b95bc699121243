//! `volume read|write` straight to and from the requester's own file or pipe: the requester
//! passes its descriptor (`SCM_RIGHTS` over the socket, or as is in-process) and the service
//! reads the device into it or writes the device from it, with the requester's access to it.
//! No byte crosses the socket; a read into a file leaves holes where the device has none.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::sync::mpsc;

use super::error::ServiceError;
use super::events::ServiceObserver;
use crate::engine::device::BlockDevice;

/// Bytes per device read or write.
pub const IO_CHUNK: usize = 4 << 20;
/// The granularity at which a read into a file skips blocks of zeros (leaves holes).
pub const SPARSE_BLOCK: usize = 64 << 10;

/// Writes `data` at `at` of a file whose bytes from `at` on read as zeros, skipping blocks that
/// are all zeros.
pub fn write_sparse(file: &File, at: u64, data: &[u8]) -> io::Result<()> {
    for (index, block) in data.chunks(SPARSE_BLOCK).enumerate() {
        if block.iter().all(|byte| *byte == 0) {
            continue;
        }
        file.write_all_at(block, at + (index * SPARSE_BLOCK) as u64)?;
    }
    Ok(())
}

/// What a passed descriptor is.
enum Endpoint {
    /// A regular file: read or written from its current position, which is moved past the
    /// bytes at the end as `cat` would move it.
    File {
        start: u64,
        size: u64,
        append: bool,
    },
    Pipe,
}

/// Duplicates `descriptor` (the same open file: position and access mode are shared) and
/// says what it is; `want_write` checks the access mode the operation needs.
fn open_endpoint(
    descriptor: BorrowedFd<'_>,
    want_write: bool,
) -> Result<(File, Endpoint), ServiceError> {
    let role = if want_write { "output" } else { "input" };
    let file = File::from(descriptor.try_clone_to_owned().map_err(|error| {
        ServiceError::io(format!("the {role} descriptor cannot be used: {error}"))
    })?);
    // SAFETY: F_GETFL on a descriptor this function owns has no other effect.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(ServiceError::io(format!(
            "the {role} descriptor cannot be used: {}",
            io::Error::last_os_error()
        )));
    }
    let access = flags & libc::O_ACCMODE;
    if want_write && access == libc::O_RDONLY {
        return Err(ServiceError::invalid(
            "the output is open for reading only, so the service cannot write to it",
        )
        .with_help("give an output the requester can write (--output FILE, or redirect standard output to a writable file or pipe)"));
    }
    if !want_write && access == libc::O_WRONLY {
        return Err(ServiceError::invalid(
            "the input is open for writing only, so the service cannot read from it",
        )
        .with_help(
            "give a readable input (--input FILE, or standard input from a readable file or pipe)",
        ));
    }
    let metadata = file.metadata().map_err(|error| {
        ServiceError::io(format!("the {role} descriptor cannot be examined: {error}"))
    })?;
    let kind = metadata.file_type();
    let endpoint = if kind.is_file() {
        let start = (&file).stream_position().map_err(|error| {
            ServiceError::io(format!("the {role} file's position is unknown: {error}"))
        })?;
        Endpoint::File {
            start,
            size: metadata.len(),
            append: flags & libc::O_APPEND != 0,
        }
    } else if kind.is_fifo() {
        Endpoint::Pipe
    } else {
        return Err(ServiceError::invalid(format!(
            "the {role} descriptor is neither a regular file nor a pipe"
        ))
        .with_help("the requester passes only files and pipes; others go over the socket"));
    };
    Ok((file, endpoint))
}

fn output_error(error: io::Error) -> ServiceError {
    if error.kind() == io::ErrorKind::BrokenPipe {
        ServiceError::io("the output pipe was closed by its reader")
    } else {
        ServiceError::io(format!("writing the output: {error}"))
    }
}

/// Reads `[offset, offset + length)` of `device` (clamped to its end) into `output`; returns
/// the bytes delivered. With `sparse`, a regular file output that ends where the bytes go
/// (nothing to overwrite) gets holes for the device's holes and for blocks of zeros, and its
/// length is set at the end.
pub fn read_into(
    device: &dyn BlockDevice,
    target: &str,
    offset: u64,
    length: u64,
    output: BorrowedFd<'_>,
    sparse: bool,
    observer: &mut dyn ServiceObserver,
) -> Result<u64, ServiceError> {
    let size = device.size();
    if offset > size {
        return Err(ServiceError::invalid(format!(
            "offset {offset} is past the end ({size} bytes)"
        ))
        .with_help("`diskshadow volume info` shows the size"));
    }
    let (mut file, endpoint) = open_endpoint(output, true)?;
    let total = length.min(size - offset);
    let read_error = |error: io::Error| ServiceError::io(format!("reading {target}: {error}"));
    // Where in the output file byte `offset` goes, and whether holes may be left.
    let (placed, holes) = match endpoint {
        Endpoint::File {
            start,
            size,
            append: false,
        } => (Some(start), sparse && start >= size),
        _ => (None, false),
    };
    observer.progress_begin("reading", total);
    let piece_bytes = IO_CHUNK.min(total as usize).max(1);
    let mut done = 0u64;
    while done < total {
        let extents = if holes {
            device
                .allocation(offset + done, total - done)
                .map_err(read_error)?
        } else {
            vec![crate::engine::device::Extent::data(
                offset + done,
                total - done,
            )]
        };
        for extent in extents {
            let extent_end = (extent.offset + extent.length).min(offset + total);
            if holes && extent.zero {
                let skipped = extent_end - (offset + done);
                done += skipped;
                observer.progress_advance(skipped);
                continue;
            }
            let from = offset + done;
            let copied = copy_pipelined(device, from, extent_end, piece_bytes, |at, data| {
                let written = at - offset;
                match placed {
                    Some(start) if holes => write_sparse(&file, start + written, data),
                    Some(start) => file.write_all_at(data, start + written),
                    None => (&file).write_all(data),
                }
                .map_err(PipelineError::Sink)?;
                observer.progress_advance(data.len() as u64);
                Ok(())
            });
            match copied {
                Ok(()) => done = extent_end - offset,
                Err(PipelineError::Source(error)) => return Err(read_error(error)),
                Err(PipelineError::Sink(error)) => return Err(output_error(error)),
            }
        }
    }
    if let Some(start) = placed {
        let end = start + total;
        let current = file
            .metadata()
            .map_err(|error| ServiceError::io(format!("writing the output: {error}")))?
            .len();
        if current < end {
            // Holes at the end: the file must still be as long as the bytes read.
            file.set_len(end).map_err(output_error)?;
        }
        file.seek(SeekFrom::Start(end)).map_err(output_error)?;
    }
    observer.progress_end();
    Ok(total)
}

/// Which end of a pipelined copy failed.
enum PipelineError<E = io::Error> {
    Source(io::Error),
    Sink(E),
}

/// Fills buffers of `piece_bytes` with `fill` on a helper thread (a buffer left empty ends
/// the stream) and hands them in order to `sink` on this one, two buffers in flight, so the
/// source's reads overlap the sink's writes. Stops at the first error of either side.
fn pipelined<E>(
    piece_bytes: usize,
    mut fill: impl FnMut(&mut Vec<u8>) -> io::Result<()> + Send,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), PipelineError<E>> {
    let (full_sender, full_receiver) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (empty_sender, empty_receiver) = mpsc::channel::<Vec<u8>>();
    for _ in 0..2 {
        let _ = empty_sender.send(vec![0u8; piece_bytes]);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Ok(mut buffer) = empty_receiver.recv() {
                buffer.resize(piece_bytes, 0);
                let piece = fill(&mut buffer).map(|()| buffer);
                let last = !matches!(&piece, Ok(piece) if !piece.is_empty());
                if full_sender.send(piece).is_err() || last {
                    return;
                }
            }
        });
        // Dropping the receiving end (on return) stops the reader.
        let full_receiver = full_receiver;
        let empty_sender = empty_sender;
        while let Ok(piece) = full_receiver.recv() {
            let piece = piece.map_err(PipelineError::Source)?;
            if piece.is_empty() {
                break;
            }
            sink(&piece).map_err(PipelineError::Sink)?;
            let _ = empty_sender.send(piece);
        }
        Ok(())
    })
}

/// Reads `[from, to)` of `device` in pieces of `piece_bytes` on a helper thread and hands them
/// to `sink` in order (with their device offset) on this one, so the device's reads overlap
/// the sink's writes. Stops at the first error of either side.
fn copy_pipelined(
    device: &dyn BlockDevice,
    from: u64,
    to: u64,
    piece_bytes: usize,
    mut sink: impl FnMut(u64, &[u8]) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    let mut read = from;
    let mut handed = from;
    let copied = pipelined(
        piece_bytes,
        |buffer| {
            buffer.truncate((to.saturating_sub(read) as usize).min(piece_bytes));
            if !buffer.is_empty() {
                device.read_at(read, buffer)?;
                read += buffer.len() as u64;
            }
            Ok(())
        },
        |data| {
            sink(handed, data)?;
            handed += data.len() as u64;
            Ok(())
        },
    );
    match copied {
        Ok(()) => Ok(()),
        Err(PipelineError::Source(error)) => Err(PipelineError::Source(error)),
        Err(PipelineError::Sink(inner)) => Err(inner),
    }
}

/// Reads `input` to its end and writes it through `device` from `offset`, then makes it
/// durable; returns the bytes written. A regular file's length is checked against the device
/// before anything is written; a pipe's bytes past the device's end fail the write there.
pub fn write_from(
    device: &dyn BlockDevice,
    volume: &str,
    offset: u64,
    input: BorrowedFd<'_>,
    observer: &mut dyn ServiceObserver,
) -> Result<u64, ServiceError> {
    let (mut file, endpoint) = open_endpoint(input, false)?;
    let size = device.size();
    let past_end = |end: u64| {
        ServiceError::invalid(format!(
            "the write ends at byte {end}, past the end of the volume ({size} bytes)"
        ))
        .with_help("volumes keep their size; write inside it")
    };
    let known = match endpoint {
        Endpoint::File { start, size, .. } => Some((start, size.saturating_sub(start))),
        Endpoint::Pipe => None,
    };
    if let Some((_, length)) = known {
        let end = offset.saturating_add(length);
        if end > size {
            return Err(past_end(end));
        }
    }
    let write_error = |error: io::Error| ServiceError::io(format!("writing {volume}: {error}"));
    let input_error = |error: io::Error| ServiceError::io(format!("reading the input: {error}"));
    observer.progress_begin("writing", known.map_or(0, |(_, length)| length));
    // A helper thread reads the next piece of the input while this one writes the last.
    let input_file = &file;
    let mut read = 0u64;
    let mut done = 0u64;
    let copied = pipelined(
        IO_CHUNK,
        |buffer| {
            let filled = match known {
                Some((start, length)) => {
                    let want = ((length - read) as usize).min(IO_CHUNK);
                    read_full_at(input_file, &mut buffer[..want], start + read)?
                }
                None => read_full(&mut &*input_file, buffer)?,
            };
            buffer.truncate(filled);
            read += filled as u64;
            Ok(())
        },
        |piece| {
            let end = offset + done + piece.len() as u64;
            if end > size {
                return Err(past_end(end));
            }
            device.write_at(offset + done, piece).map_err(write_error)?;
            done += piece.len() as u64;
            observer.progress_advance(piece.len() as u64);
            Ok(())
        },
    );
    match copied {
        Ok(()) => {}
        Err(PipelineError::Source(error)) => return Err(input_error(error)),
        Err(PipelineError::Sink(error)) => return Err(error),
    }
    device.flush().map_err(write_error)?;
    if let Some((start, _)) = known {
        file.seek(SeekFrom::Start(start + done))
            .map_err(input_error)?;
    }
    observer.progress_end();
    Ok(done)
}

/// Fills `buffer` from a stream unless it ends first; returns how much was read.
pub fn read_full(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn read_full_at(file: &File, buffer: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose byte at offset `n` is `n % 251`, failing reads at or past `fail_at`.
    struct Pattern {
        size: u64,
        fail_at: u64,
    }

    impl BlockDevice for Pattern {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
            if offset + buffer.len() as u64 > self.fail_at {
                return Err(io::Error::other("injected read failure"));
            }
            for (index, byte) in buffer.iter_mut().enumerate() {
                *byte = ((offset + index as u64) % 251) as u8;
            }
            Ok(())
        }
        fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
            Err(io::Error::other("read-only"))
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn is_read_only(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_pipelined_copy_hands_every_piece_in_order_and_stops_at_either_sides_failure() {
        let device = Pattern {
            size: 1000,
            fail_at: u64::MAX,
        };
        let mut seen = Vec::new();
        copy_pipelined(&device, 10, 1000, 64, |at, data| {
            assert_eq!(at, 10 + seen.len() as u64);
            seen.extend_from_slice(data);
            Ok(())
        })
        .map_err(|_| "copy failed")
        .unwrap_or_else(|error| panic!("{error}"));
        let expected: Vec<u8> = (10..1000u64).map(|n| (n % 251) as u8).collect();
        assert_eq!(seen, expected);

        // A read failure: the pieces before it were handed over, nothing after it.
        let failing = Pattern {
            size: 1000,
            fail_at: 300,
        };
        let mut handed = 0u64;
        let result = copy_pipelined(&failing, 0, 1000, 64, |_, data| {
            handed += data.len() as u64;
            Ok(())
        });
        assert!(matches!(result, Err(PipelineError::Source(_))));
        assert_eq!(handed, 256, "pieces past the failure were handed over");

        // A sink failure stops the copy there (the reader is not left running).
        let mut calls = 0;
        let result = copy_pipelined(&device, 0, 1000, 64, |_, _| {
            calls += 1;
            if calls == 3 {
                return Err(PipelineError::Sink(io::Error::other("disk full")));
            }
            Ok(())
        });
        assert!(matches!(result, Err(PipelineError::Sink(_))));
        assert_eq!(calls, 3);
    }
}
