//! A byte-addressed device: what exposure (FUSE, NBD) and `volume read|write` serve.
//! The engine implements it for shadow copies (read-only) and live volumes (every write passes
//! the provider); tests implement it over plain files.

use std::io;

/// A fixed-size, byte-addressed device. Implementations are shared between threads.
pub trait BlockDevice: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills all of `buffer` from `offset`. Reading past the end is an
    /// `io::ErrorKind::UnexpectedEof` error; callers clamp to [`BlockDevice::size`].
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset`. Read-only devices answer
    /// `io::ErrorKind::PermissionDenied`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;

    /// True when every write is refused.
    fn is_read_only(&self) -> bool;

    /// Makes `[offset, offset + length)` read as zeros. With `may_punch` the device may free
    /// the storage behind it (a hole) instead of writing zeros; without it, zeros are written
    /// (NBD's `NO_HOLE`). The default writes zeros through [`BlockDevice::write_at`], which is
    /// right for every device; read-only devices refuse as `write_at` does.
    fn write_zeroes(&self, offset: u64, length: u64, may_punch: bool) -> io::Result<()> {
        let _ = may_punch;
        write_zeroes_through(self, offset, length)
    }

    /// Which parts of `[offset, offset + length)` hold data and which are holes, in order and
    /// without gaps, starting at `offset`. The extents may cover only a prefix of the range
    /// (at least one byte of it when `length > 0`); callers ask again from where they end.
    /// The answer comes from the device's map, never from reading its data. The default is
    /// the conservative answer: everything is data. `offset + length` must not pass
    /// [`BlockDevice::size`].
    fn allocation(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent::data(offset, length)])
    }
}

/// Zeros `[offset, offset + length)` by writing zeros through `write_at`, a megabyte at a time.
pub fn write_zeroes_through<D: BlockDevice + ?Sized>(
    device: &D,
    offset: u64,
    length: u64,
) -> io::Result<()> {
    const ZERO_PIECE: u64 = 1024 * 1024;
    let zeroes = vec![0u8; ZERO_PIECE.min(length) as usize];
    let mut done = 0;
    while done < length {
        let piece = (length - done).min(ZERO_PIECE) as usize;
        device.write_at(offset + done, &zeroes[..piece])?;
        done += piece as u64;
    }
    Ok(())
}

/// How a range of a device is stored, as [`BlockDevice::allocation`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// No storage backs the range (a hole in the image file, a chunk never written).
    pub hole: bool,
    /// The range is known to read as zeros.
    pub zero: bool,
}

impl Extent {
    pub fn data(offset: u64, length: u64) -> Extent {
        Extent {
            offset,
            length,
            hole: false,
            zero: false,
        }
    }

    pub fn hole(offset: u64, length: u64) -> Extent {
        Extent {
            offset,
            length,
            hole: true,
            zero: true,
        }
    }

    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// The most extents one [`BlockDevice::allocation`] call returns; a caller that needs more asks
/// again from the end of the last one. Bounds the memory a single client request can cost.
pub const MAX_EXTENTS_PER_CALL: usize = 64 * 1024;

/// Appends `extent` to `extents`, merging it into the last one when they touch and agree.
pub fn push_extent(extents: &mut Vec<Extent>, extent: Extent) {
    if extent.length == 0 {
        return;
    }
    if let Some(last) = extents.last_mut() {
        if last.end() == extent.offset && last.hole == extent.hole && last.zero == extent.zero {
            last.length += extent.length;
            return;
        }
    }
    extents.push(extent);
}

/// The data and holes of `[offset, offset + length)` of a file, found with `SEEK_DATA` and
/// `SEEK_HOLE` (passed in as `next_data` and `next_hole`, so any file abstraction can use it).
/// Bytes past the end of the file are holes (they read as zeros). At most
/// [`MAX_EXTENTS_PER_CALL`] extents are returned; they always cover a prefix of the range.
pub fn file_extents(
    offset: u64,
    length: u64,
    next_data: impl Fn(u64) -> io::Result<Option<u64>>,
    next_hole: impl Fn(u64) -> io::Result<u64>,
) -> io::Result<Vec<Extent>> {
    let end = offset.saturating_add(length);
    let mut extents = Vec::new();
    let mut position = offset;
    while position < end && extents.len() < MAX_EXTENTS_PER_CALL {
        let data_start = next_data(position)?.unwrap_or(end).clamp(position, end);
        push_extent(&mut extents, Extent::hole(position, data_start - position));
        if data_start >= end {
            break;
        }
        // A hole found before the data start would be a racing change; treat it as data.
        let data_end = next_hole(data_start)?.clamp(data_start + 1, end);
        push_extent(
            &mut extents,
            Extent::data(data_start, data_end - data_start),
        );
        position = data_end;
    }
    Ok(extents)
}

/// `extents` with the sorted, disjoint byte ranges `data_ranges` turned into data wherever they
/// fall in a hole (buffered writes that have not reached the file yet, for example).
pub fn mark_data(extents: &[Extent], data_ranges: &[(u64, u64)]) -> Vec<Extent> {
    let mut marked = Vec::with_capacity(extents.len());
    for extent in extents {
        if !extent.hole && !extent.zero {
            push_extent(&mut marked, *extent);
            continue;
        }
        let same_kind = |offset: u64, end: u64| Extent {
            offset,
            length: end - offset,
            hole: extent.hole,
            zero: extent.zero,
        };
        let mut position = extent.offset;
        for &(from, to) in data_ranges {
            let from = from.max(position);
            let to = to.min(extent.end());
            if from >= to {
                continue;
            }
            push_extent(&mut marked, same_kind(position, from));
            push_extent(&mut marked, Extent::data(from, to - from));
            position = to;
        }
        push_extent(&mut marked, same_kind(position, extent.end()));
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_extents_follow_seek_data_and_seek_hole() {
        // Data at [4096, 8192) and [12288, 16384) of a 16384-byte file.
        let next_data = |at: u64| {
            Ok(match at {
                0..4096 => Some(4096),
                4096..8192 => Some(at),
                8192..12288 => Some(12288),
                12288..16384 => Some(at),
                _ => None,
            })
        };
        let next_hole = |at: u64| {
            Ok(match at {
                0..8192 => 8192,
                8192..12288 => at,
                12288..16384 => 16384,
                _ => at,
            })
        };
        let extents = file_extents(0, 20000, next_data, next_hole).unwrap();
        assert_eq!(
            extents,
            vec![
                Extent::hole(0, 4096),
                Extent::data(4096, 4096),
                Extent::hole(8192, 4096),
                Extent::data(12288, 4096),
                Extent::hole(16384, 20000 - 16384),
            ]
        );
    }

    #[test]
    fn mark_data_splits_holes_and_merges_neighbours() {
        let extents = vec![Extent::hole(0, 100), Extent::data(100, 50)];
        let marked = mark_data(&extents, &[(10, 20), (90, 130)]);
        assert_eq!(
            marked,
            vec![
                Extent::hole(0, 10),
                Extent::data(10, 10),
                Extent::hole(20, 70),
                Extent::data(90, 60),
            ]
        );
    }
}
