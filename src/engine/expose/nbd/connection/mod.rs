//! One NBD client: the fixed newstyle handshake, option haggling, then transmission until the
//! client disconnects or the export stops.

use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use super::protocol::*;
use crate::engine::device::BlockDevice;

/// What a connection serves: one named export.
pub(super) struct ExportSpec {
    pub device: Arc<dyn BlockDevice>,
    pub name: String,
    pub read_only: bool,
}

impl ExportSpec {
    fn transmission_flags(&self) -> u16 {
        // Multi-connection is offered on read-only exports only, as qemu-nbd does by
        // default. It would be safe on writable ones too (a flush on one connection makes every
        // completed write durable), but a client then splits a sequential copy over several
        // connections, the provider sees its writes out of order and its copy-ahead misses:
        // first writes with `nbdcopy` took two to three times as long with four connections
        // as with one.
        let mut flags = TRANSMISSION_HAS_FLAGS | TRANSMISSION_SEND_FLUSH;
        if self.read_only {
            flags |= TRANSMISSION_READ_ONLY | TRANSMISSION_CAN_MULTI_CONN;
        } else {
            flags |=
                TRANSMISSION_SEND_FUA | TRANSMISSION_SEND_WRITE_ZEROES | TRANSMISSION_SEND_TRIM;
        }
        flags
    }

    /// The empty name selects the default export, and this server has exactly one.
    fn answers_to(&self, requested_name: &[u8]) -> bool {
        requested_name.is_empty() || requested_name == self.name.as_bytes()
    }
}

/// What the client chose during negotiation, which shapes the transmission phase.
#[derive(Debug, Default, Clone, Copy)]
struct Session {
    /// `NBD_OPT_STRUCTURED_REPLY` was acknowledged: reads and block status answer in chunks.
    structured: bool,
    /// `base:allocation` was selected with `NBD_OPT_SET_META_CONTEXT`.
    base_allocation: bool,
}

/// How negotiation ended.
enum Negotiated {
    /// Transmission starts.
    Transmit(Session),
    /// The client aborted or asked for an export we do not have: close the connection.
    Close,
}

/// Serves one client to the end. I/O errors on the socket end the connection; they are the
/// normal way a client (or [`super::NbdExport::stop`]) ends it.
pub(super) fn serve_client<S: NbdStream>(stream: &mut S, export: &ExportSpec) -> io::Result<()> {
    match negotiate(stream, export)? {
        Negotiated::Transmit(session) => transmit(stream, export, session),
        Negotiated::Close => Ok(()),
    }
}

fn negotiate<S: Read + Write>(stream: &mut S, export: &ExportSpec) -> io::Result<Negotiated> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&INITIAL_MAGIC.to_be_bytes());
    greeting.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
    greeting.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&greeting)?;
    stream.flush()?;

    let client_flags = read_u32(stream)?;
    if client_flags & CLIENT_FLAG_FIXED_NEWSTYLE == 0 {
        // Old-style newstyle clients cannot receive error replies; the protocol says to close.
        return Ok(Negotiated::Close);
    }
    if client_flags & !(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES) != 0 {
        return Ok(Negotiated::Close);
    }
    let no_zeroes = client_flags & CLIENT_FLAG_NO_ZEROES != 0;
    let mut session = Session::default();

    loop {
        if read_u64(stream)? != OPTION_MAGIC {
            return Ok(Negotiated::Close);
        }
        let option = read_u32(stream)?;
        let length = read_u32(stream)?;
        if length > MAX_OPTION_LENGTH {
            // We cannot skip an absurd payload safely; a conforming client never sends one.
            return Ok(Negotiated::Close);
        }
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload)?;

        match option {
            OPT_EXPORT_NAME => {
                if !export.answers_to(&payload) {
                    // EXPORT_NAME has no error reply: the protocol says to close.
                    return Ok(Negotiated::Close);
                }
                let mut reply = Vec::with_capacity(10 + 124);
                reply.extend_from_slice(&export.device.size().to_be_bytes());
                reply.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&reply)?;
                stream.flush()?;
                return Ok(Negotiated::Transmit(session));
            }
            OPT_ABORT => {
                // The client may already have closed; an error here changes nothing.
                let _ = send_option_reply(stream, option, REP_ACK, &[]);
                return Ok(Negotiated::Close);
            }
            OPT_LIST => {
                if !payload.is_empty() {
                    send_option_reply(stream, option, REP_ERR_INVALID, b"LIST takes no data")?;
                    continue;
                }
                let mut server = Vec::with_capacity(4 + export.name.len());
                server.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                server.extend_from_slice(export.name.as_bytes());
                send_option_reply(stream, option, REP_SERVER, &server)?;
                send_option_reply(stream, option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let Some(request) = parse_info_request(&payload) else {
                    send_option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"malformed INFO/GO request",
                    )?;
                    continue;
                };
                if !export.answers_to(request.name) {
                    send_option_reply(stream, option, REP_ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                send_export_information(stream, option, export, &request)?;
                send_option_reply(stream, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    return Ok(Negotiated::Transmit(session));
                }
            }
            OPT_STARTTLS => {
                send_option_reply(
                    stream,
                    option,
                    REP_ERR_POLICY,
                    b"TLS is not offered on a local export",
                )?;
            }
            OPT_STRUCTURED_REPLY => {
                if !payload.is_empty() {
                    send_option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"STRUCTURED_REPLY takes no data",
                    )?;
                    continue;
                }
                session.structured = true;
                send_option_reply(stream, option, REP_ACK, &[])?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let Some(request) = parse_meta_context_request(&payload) else {
                    send_option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"malformed meta context request",
                    )?;
                    continue;
                };
                if option == OPT_SET_META_CONTEXT && !session.structured {
                    send_option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"meta contexts need structured replies; negotiate STRUCTURED_REPLY first",
                    )?;
                    continue;
                }
                if !export.answers_to(request.name) {
                    send_option_reply(stream, option, REP_ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                let listing = option == OPT_LIST_META_CONTEXT;
                let offered = request.queries.iter().any(|query| {
                    *query == META_CONTEXT_BASE_ALLOCATION.as_bytes()
                        || (listing && *query == b"base:")
                }) || (listing && request.queries.is_empty());
                if offered {
                    let mut context = Vec::with_capacity(4 + META_CONTEXT_BASE_ALLOCATION.len());
                    context.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
                    context.extend_from_slice(META_CONTEXT_BASE_ALLOCATION.as_bytes());
                    send_option_reply(stream, option, REP_META_CONTEXT, &context)?;
                }
                if !listing {
                    // Each SET replaces the previous selection.
                    session.base_allocation = offered;
                }
                send_option_reply(stream, option, REP_ACK, &[])?;
            }
            _ => {
                send_option_reply(stream, option, REP_ERR_UNSUP, b"option not supported")?;
            }
        }
    }
}

struct InfoRequest<'a> {
    name: &'a [u8],
    requested: Vec<u16>,
}

fn parse_info_request(payload: &[u8]) -> Option<InfoRequest<'_>> {
    let name_length = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let name_end = 4usize.checked_add(name_length)?;
    let name = payload.get(4..name_end)?;
    let count = u16::from_be_bytes(payload.get(name_end..name_end + 2)?.try_into().ok()?) as usize;
    let list = payload.get(name_end + 2..)?;
    if list.len() != count * 2 {
        return None;
    }
    let requested = list
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    Some(InfoRequest { name, requested })
}

struct MetaContextRequest<'a> {
    name: &'a [u8],
    queries: Vec<&'a [u8]>,
}

/// `u32` name length, name, `u32` query count, then each query as `u32` length and bytes.
fn parse_meta_context_request(payload: &[u8]) -> Option<MetaContextRequest<'_>> {
    let take_u32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            payload.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let name_length = take_u32(0)? as usize;
    let name_end = 4usize.checked_add(name_length)?;
    let name = payload.get(4..name_end)?;
    let count = take_u32(name_end)?;
    let mut position = name_end + 4;
    let mut queries = Vec::new();
    for _ in 0..count {
        let length = take_u32(position)? as usize;
        let start = position + 4;
        let end = start.checked_add(length)?;
        queries.push(payload.get(start..end)?);
        position = end;
    }
    if position != payload.len() {
        return None;
    }
    Some(MetaContextRequest { name, queries })
}

fn send_export_information<S: Write>(
    stream: &mut S,
    option: u32,
    export: &ExportSpec,
    request: &InfoRequest<'_>,
) -> io::Result<()> {
    let mut information = Vec::with_capacity(12);
    information.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    information.extend_from_slice(&export.device.size().to_be_bytes());
    information.extend_from_slice(&export.transmission_flags().to_be_bytes());
    send_option_reply(stream, option, REP_INFO, &information)?;

    // Block sizes are always sent: they tell the client our request limit.
    let mut block_size = Vec::with_capacity(14);
    block_size.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    block_size.extend_from_slice(&1u32.to_be_bytes());
    block_size.extend_from_slice(&PREFERRED_BLOCK_SIZE.to_be_bytes());
    block_size.extend_from_slice(&MAX_REQUEST_LENGTH.to_be_bytes());
    send_option_reply(stream, option, REP_INFO, &block_size)?;

    if request.requested.contains(&INFO_NAME) {
        let mut name = Vec::with_capacity(2 + export.name.len());
        name.extend_from_slice(&INFO_NAME.to_be_bytes());
        name.extend_from_slice(export.name.as_bytes());
        send_option_reply(stream, option, REP_INFO, &name)?;
    }
    if request.requested.contains(&INFO_DESCRIPTION) {
        let text = if export.read_only {
            "diskshadow read-only export"
        } else {
            "diskshadow read-write export"
        };
        let mut description = Vec::with_capacity(2 + text.len());
        description.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
        description.extend_from_slice(text.as_bytes());
        send_option_reply(stream, option, REP_INFO, &description)?;
    }
    Ok(())
}

fn send_option_reply<S: Write>(
    stream: &mut S,
    option: u32,
    reply_type: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut reply = Vec::with_capacity(20 + data.len());
    reply.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&option.to_be_bytes());
    reply.extend_from_slice(&reply_type.to_be_bytes());
    reply.extend_from_slice(&(data.len() as u32).to_be_bytes());
    reply.extend_from_slice(data);
    stream.write_all(&reply)?;
    stream.flush()
}

/// A client socket: the transmission phase reads requests on one handle and writes replies
/// from several threads through a clone of it.
pub(super) trait NbdStream: Read + Write + Send + Sized {
    fn try_clone_stream(&self) -> io::Result<Self>;
    /// Ends the connection in both directions (wakes a thread blocked reading it).
    fn shutdown_stream(&self);
}

impl NbdStream for std::os::unix::net::UnixStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_stream(&self) {
        // The peer may already be gone; closing is all that matters.
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl NbdStream for std::net::TcpStream {
    fn try_clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_stream(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// How many reads (and block status requests) of one connection run at the same time.
/// Replies carry the client's cookie, so they may leave in any order; clients that need
/// ordering wait for replies.
const READ_WORKERS_PER_CONNECTION: usize = 3;
/// Requests read ahead of the workers, per lane. With the workers' own, this bounds what one
/// connection holds in memory to 3 + 1 + 2 * 2 requests of at most `MAX_REQUEST_LENGTH`.
const QUEUED_PER_LANE: usize = 2;

/// One request as read from the socket, with its payload (writes only).
struct Job {
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    payload: Vec<u8>,
}

/// Where the reading thread hands requests: changes (writes, zeroing, trims, flushes) go to
/// one worker in the order they arrived, so a sequential writer stays sequential for the
/// provider (its copy-ahead depends on it) and a flush follows the writes before it; reads
/// and block status go to a few workers in parallel.
struct Lanes {
    changes: mpsc::SyncSender<Job>,
    reads: mpsc::SyncSender<Job>,
}

/// The transmission phase: this thread reads requests (and write payloads, so the stream
/// stays in step) and hands them to the workers, which answer each as soon as it is done,
/// reads and block status in structured replies when the client negotiated them. The
/// connection ends at DISC, end of stream or a protocol error, after every request already
/// read has been answered.
fn transmit<S: NbdStream>(stream: &mut S, export: &ExportSpec, session: Session) -> io::Result<()> {
    let writer = Mutex::new(stream.try_clone_stream()?);
    let (changes, change_receiver) = mpsc::sync_channel::<Job>(QUEUED_PER_LANE);
    let (reads, read_receiver) = mpsc::sync_channel::<Job>(QUEUED_PER_LANE);
    let change_receiver = Mutex::new(change_receiver);
    let read_receiver = Mutex::new(read_receiver);
    std::thread::scope(|scope| {
        scope.spawn(|| work(&change_receiver, &writer, export, session));
        for _ in 0..READ_WORKERS_PER_CONNECTION {
            scope.spawn(|| work(&read_receiver, &writer, export, session));
        }
        let lanes = Lanes { changes, reads };
        let result = read_requests(stream, &lanes, &writer);
        // Dropping the lanes lets the workers finish what was read, then end.
        drop(lanes);
        result
    })
}

/// One worker: answers the jobs of its lane until the lane closes or the client is gone.
fn work<S: NbdStream>(
    receiver: &Mutex<mpsc::Receiver<Job>>,
    writer: &Mutex<S>,
    export: &ExportSpec,
    session: Session,
) {
    loop {
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else {
            return;
        };
        let cookie = job.cookie;
        // The device work runs unlocked; only the reply holds the writer.
        let reply = answer(export, session, job);
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        if send_reply(&mut *writer, session, cookie, &reply).is_err() {
            // The client cannot hear us any more: end the connection, which also wakes the
            // reading thread.
            writer.shutdown_stream();
            return;
        }
    }
}

/// Reads requests until the connection ends, answering at once what needs no device access
/// (oversized writes), queueing the rest.
fn read_requests<S: NbdStream>(stream: &mut S, lanes: &Lanes, writer: &Mutex<S>) -> io::Result<()> {
    loop {
        let mut header = [0u8; 28];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            // A client that closes without DISC is common (and allowed to be treated as DISC).
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if magic != REQUEST_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad NBD request magic",
            ));
        }
        let mut job = Job {
            flags: u16::from_be_bytes([header[4], header[5]]),
            command: u16::from_be_bytes([header[6], header[7]]),
            cookie: u64::from_be_bytes(header[8..16].try_into().unwrap_or_default()),
            offset: u64::from_be_bytes(header[16..24].try_into().unwrap_or_default()),
            length: u32::from_be_bytes([header[24], header[25], header[26], header[27]]),
            payload: Vec::new(),
        };
        match job.command {
            CMD_DISC => return Ok(()),
            CMD_WRITE => {
                // The payload follows the header whatever we answer; read it (or skip it) first.
                if job.length > MAX_REQUEST_LENGTH {
                    discard(stream, u64::from(job.length))?;
                    let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                    send_simple_reply(&mut *writer, job.cookie, ERROR_INVALID, &[])?;
                    continue;
                }
                job.payload = vec![0u8; job.length as usize];
                stream.read_exact(&mut job.payload)?;
            }
            _ => {}
        }
        let lane = match job.command {
            CMD_READ | CMD_BLOCK_STATUS => &lanes.reads,
            _ => &lanes.changes,
        };
        if lane.send(job).is_err() {
            return Err(io::Error::other("the connection's workers ended"));
        }
    }
}

/// What a request is answered with.
enum Reply {
    /// A simple reply without data (0 or an error).
    Status(u32),
    /// A failed read or block status: an error chunk with structured replies.
    Error(u32),
    Data {
        offset: u64,
        data: Vec<u8>,
    },
    BlockStatus(Vec<u8>),
}

fn send_reply<W: Write>(
    stream: &mut W,
    session: Session,
    cookie: u64,
    reply: &Reply,
) -> io::Result<()> {
    match reply {
        Reply::Status(error) => send_simple_reply(stream, cookie, *error, &[]),
        Reply::Error(error) => send_error_reply(stream, session, cookie, *error),
        Reply::Data { offset, data } => send_read_reply(stream, session, cookie, *offset, data),
        Reply::BlockStatus(descriptors) => {
            send_structured_chunk(stream, cookie, REPLY_TYPE_BLOCK_STATUS, descriptors)
        }
    }
}

/// Runs one request against the device.
fn answer(export: &ExportSpec, session: Session, job: Job) -> Reply {
    let device = export.device.as_ref();
    let size = device.size();
    let Job {
        flags,
        command,
        offset,
        length,
        payload,
        ..
    } = job;
    let in_range = offset
        .checked_add(u64::from(length))
        .is_some_and(|end| end <= size);
    match command {
        CMD_READ => {
            if length > MAX_REQUEST_LENGTH || !in_range {
                return Reply::Error(ERROR_INVALID);
            }
            let mut data = vec![0u8; length as usize];
            match device.read_at(offset, &mut data) {
                Ok(()) => Reply::Data { offset, data },
                Err(error) => Reply::Error(error_code(&error)),
            }
        }
        CMD_WRITE => {
            let error = if export.read_only {
                ERROR_PERM
            } else if !in_range {
                ERROR_NO_SPACE
            } else {
                write_and_maybe_flush(device, offset, &payload, flags)
            };
            Reply::Status(error)
        }
        CMD_WRITE_ZEROES | CMD_TRIM => {
            // A trim may leave anything behind; zeros punched as a hole are the cheapest
            // and keep the volume sparse. WRITE_ZEROES punches too unless told NO_HOLE.
            let may_punch = command == CMD_TRIM || flags & CMD_FLAG_NO_HOLE == 0;
            let error = if export.read_only {
                ERROR_PERM
            } else if !in_range {
                if command == CMD_TRIM {
                    ERROR_INVALID
                } else {
                    ERROR_NO_SPACE
                }
            } else {
                write_zeroes(device, offset, length, flags, may_punch)
            };
            Reply::Status(error)
        }
        CMD_FLUSH => Reply::Status(match device.flush() {
            Ok(()) => 0,
            Err(error) => error_code(&error),
        }),
        CMD_BLOCK_STATUS => {
            if !session.base_allocation || length == 0 || !in_range {
                return Reply::Error(ERROR_INVALID);
            }
            match block_status(device, offset, length, flags) {
                Ok(descriptors) => Reply::BlockStatus(descriptors),
                Err(error) => Reply::Error(error_code(&error)),
            }
        }
        _ => Reply::Status(ERROR_NOT_SUPPORTED),
    }
}

/// The `base:allocation` payload for `[offset, offset + length)`: the context ID, then one
/// (length, flags) descriptor per extent of the device's map. It may cover only a prefix, as
/// the protocol allows; with `REQ_ONE` it is exactly one extent.
fn block_status(
    device: &dyn BlockDevice,
    offset: u64,
    length: u32,
    flags: u16,
) -> io::Result<Vec<u8>> {
    let mut extents = device.allocation(offset, u64::from(length))?;
    if extents.is_empty() {
        return Err(io::Error::other("the device reported no extents"));
    }
    if flags & CMD_FLAG_REQ_ONE != 0 {
        extents.truncate(1);
    }
    let mut payload = Vec::with_capacity(4 + 8 * extents.len());
    payload.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
    let end = offset + u64::from(length);
    let mut expected = offset;
    for extent in extents {
        // A device that answers outside the request, or with gaps, must not confuse the
        // client: stop at the first extent that does not continue the answer.
        if extent.offset != expected || extent.length == 0 || extent.end() > end {
            break;
        }
        let mut state = 0;
        if extent.hole {
            state |= STATE_HOLE;
        }
        if extent.zero {
            state |= STATE_ZERO;
        }
        // Extents lie within a request of at most u32::MAX bytes.
        payload.extend_from_slice(&(extent.length as u32).to_be_bytes());
        payload.extend_from_slice(&state.to_be_bytes());
        expected = extent.end();
    }
    if payload.len() == 4 {
        return Err(io::Error::other(
            "the device's map does not start at the requested offset",
        ));
    }
    Ok(payload)
}

fn write_and_maybe_flush(device: &dyn BlockDevice, offset: u64, data: &[u8], flags: u16) -> u32 {
    let result = device.write_at(offset, data).and_then(|()| {
        if flags & CMD_FLAG_FUA != 0 {
            device.flush()
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => 0,
        Err(error) => error_code(&error),
    }
}

fn write_zeroes(
    device: &dyn BlockDevice,
    offset: u64,
    length: u32,
    flags: u16,
    may_punch: bool,
) -> u32 {
    if let Err(error) = device.write_zeroes(offset, u64::from(length), may_punch) {
        return error_code(&error);
    }
    if flags & CMD_FLAG_FUA != 0 {
        if let Err(error) = device.flush() {
            return error_code(&error);
        }
    }
    0
}

fn discard<S: Read>(stream: &mut S, length: u64) -> io::Result<()> {
    let copied = io::copy(&mut stream.take(length), &mut io::sink())?;
    if copied != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "client closed mid-request",
        ));
    }
    Ok(())
}

fn error_code(error: &io::Error) -> u32 {
    match error.kind() {
        io::ErrorKind::PermissionDenied => ERROR_PERM,
        io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => ERROR_INVALID,
        io::ErrorKind::StorageFull => ERROR_NO_SPACE,
        io::ErrorKind::Unsupported => ERROR_NOT_SUPPORTED,
        _ => ERROR_IO,
    }
}

fn send_simple_reply<S: Write>(
    stream: &mut S,
    cookie: u64,
    error: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    header[4..8].copy_from_slice(&error.to_be_bytes());
    header[8..16].copy_from_slice(&cookie.to_be_bytes());
    if data.is_empty() {
        stream.write_all(&header)?;
    } else {
        stream.write_all(&header)?;
        stream.write_all(data)?;
    }
    stream.flush()
}

/// A successful read: one data chunk when structured replies are on, else a simple reply.
fn send_read_reply<S: Write>(
    stream: &mut S,
    session: Session,
    cookie: u64,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    if !session.structured {
        return send_simple_reply(stream, cookie, 0, data);
    }
    let mut header = [0u8; 28];
    header[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    header[4..6].copy_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    header[6..8].copy_from_slice(&REPLY_TYPE_OFFSET_DATA.to_be_bytes());
    header[8..16].copy_from_slice(&cookie.to_be_bytes());
    header[16..20].copy_from_slice(&(8 + data.len() as u32).to_be_bytes());
    header[20..28].copy_from_slice(&offset.to_be_bytes());
    stream.write_all(&header)?;
    stream.write_all(data)?;
    stream.flush()
}

/// A failed request: an error chunk when structured replies are on, else a simple reply.
fn send_error_reply<S: Write>(
    stream: &mut S,
    session: Session,
    cookie: u64,
    error: u32,
) -> io::Result<()> {
    if !session.structured {
        return send_simple_reply(stream, cookie, error, &[]);
    }
    // The error number and an empty message.
    let mut payload = [0u8; 6];
    payload[0..4].copy_from_slice(&error.to_be_bytes());
    send_structured_chunk(stream, cookie, REPLY_TYPE_ERROR, &payload)
}

/// One structured reply chunk that completes the request.
fn send_structured_chunk<S: Write>(
    stream: &mut S,
    cookie: u64,
    reply_type: u16,
    payload: &[u8],
) -> io::Result<()> {
    let mut chunk = Vec::with_capacity(20 + payload.len());
    chunk.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    chunk.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    chunk.extend_from_slice(&reply_type.to_be_bytes());
    chunk.extend_from_slice(&cookie.to_be_bytes());
    chunk.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    chunk.extend_from_slice(payload);
    stream.write_all(&chunk)?;
    stream.flush()
}

fn read_u32<S: Read>(stream: &mut S) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_u64<S: Read>(stream: &mut S) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    stream.read_exact(&mut bytes)?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests;
