//! The wire format: one JSON object per line (`\n`-terminated) in each direction.
//!
//! Requester to service:
//!
//! | frame | meaning |
//! |---|---|
//! | `{"request": R}` | run one request; requests on a connection are sequential (a running request that can stop is stopped by a `cancel` request on another connection) |
//! | `{"bytes": {"length": N}}` then N raw bytes | the binary payload of the next request (`volume write` data) |
//! | `{"descriptor": {}}`, one file descriptor attached (`SCM_RIGHTS`) | the file the next request reads or writes directly (`volume read|write` to or from a regular file or pipe) |
//! | `{"answer": V}` | the answer to the pending `ask` |
//! | `{"decline": {}}` | the requester will not answer the pending `ask` |
//! | `{"control": "status"}` / `{"control": "stop"}` | transport-level status or graceful stop |
//!
//! Service to requester:
//!
//! | frame | meaning |
//! |---|---|
//! | `{"hello": {"protocol": 4, "pid": P}}` | sent once when the connection is accepted |
//! | `{"error": {"kind": "access_denied", …}}` | sent instead of `hello` to a user the service does not serve; the connection is closed |
//! | `{"event": V}` | progress, log or step output of the running request |
//! | `{"ask": V}` | a question; the requester replies with `answer` or `decline` |
//! | `{"bytes": {"length": N}}` then N raw bytes | the binary payload of the response that follows (`volume read` data) |
//! | `{"response": R}` | the final response; the request is over |
//! | `{"error": {"kind": K, "message": M}}` | the request was refused; the connection stays usable |
//! | `{"status": S}` / `{"stopping": {}}` | replies to the control frames |
//!
//! The outer object always has exactly one key, so a frame's kind never depends on the content
//! of the payload that the handler chose. Volume data travels as raw bytes after a `bytes`
//! frame, never inside JSON: no base64, no escaping, one copy.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol version in the `hello` frame. Bump it whenever a frame changes meaning.
pub const PROTOCOL_VERSION: u32 = 4;

/// The longest frame line accepted, in bytes. A longer line is refused rather than buffered,
/// so a confused peer cannot make the other side allocate without bound.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// A frame from the requester to the service.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientFrame {
    Request(serde_json::Value),
    Bytes(BytesHeader),
    /// Sent with one descriptor attached; the descriptor goes to the next request.
    Descriptor {},
    Answer(serde_json::Value),
    Decline {},
    Control(ControlRequest),
}

/// Requests that the transport answers itself, without the handler.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ControlRequest {
    Status,
    Stop,
}

/// A frame from the service to the requester.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ServerFrame {
    Hello(Hello),
    Event(serde_json::Value),
    Ask(serde_json::Value),
    Response(serde_json::Value),
    Bytes(BytesHeader),
    Error(RemoteError),
    Status(ServiceStatus),
    Stopping {},
}

/// Announces `length` raw bytes right after the frame's newline. At most [`MAX_FRAME_BYTES`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BytesHeader {
    pub length: u64,
}

/// Writes a `bytes` frame and the raw bytes after it.
pub(crate) fn write_bytes<W: Write>(
    writer: &mut W,
    frame: &impl Serialize,
    bytes: &[u8],
) -> io::Result<()> {
    let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.write_all(bytes)?;
    writer.flush()
}

/// Reads the raw bytes announced by a `bytes` frame; longer than [`MAX_FRAME_BYTES`] is an
/// `InvalidData` error (nothing is read, so the caller must close the connection).
pub(crate) fn read_bytes<R: io::Read>(reader: &mut R, header: BytesHeader) -> io::Result<Vec<u8>> {
    if header.length > MAX_FRAME_BYTES as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a binary payload of {} bytes is longer than {MAX_FRAME_BYTES} bytes",
                header.length
            ),
        ));
    }
    let mut bytes = vec![0u8; header.length as usize];
    reader.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The greeting the service sends on every new connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub protocol: u32,
    pub pid: u32,
}

/// Why the service refused a frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    pub kind: RemoteErrorKind,
    pub message: String,
}

/// The kinds of refusal in an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteErrorKind {
    /// The line was not JSON, not a known frame, or its request did not fit the request type.
    MalformedRequest,
    /// An `answer` or `decline` arrived when no question was pending.
    UnexpectedFrame,
    /// The handler panicked while handling the request; the service itself keeps running.
    HandlerPanicked,
    /// The handler's response could not be turned into JSON.
    ResponseNotSerializable,
    /// The connecting user may not use this service (sent instead of the greeting; the
    /// connection is then closed).
    AccessDenied,
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            RemoteErrorKind::MalformedRequest => "malformed request",
            RemoteErrorKind::UnexpectedFrame => "unexpected frame",
            RemoteErrorKind::HandlerPanicked => "handler panicked",
            RemoteErrorKind::ResponseNotSerializable => "response not serializable",
            RemoteErrorKind::AccessDenied => "access denied",
        })
    }
}

/// What `status` reports about a running service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's process ID.
    pub pid: u32,
    /// When the service started (UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Whole seconds since the service started.
    pub uptime_seconds: u64,
    /// Connected requester sessions, the asking one included.
    pub sessions: usize,
    /// The store the service owns, when it was started for a store.
    pub store: Option<PathBuf>,
    /// The socket it listens on.
    pub socket: PathBuf,
    /// The idle timeout in milliseconds, or `None` when the service never idles out.
    pub idle_timeout_milliseconds: Option<u64>,
}

/// Writes one frame as a single line. The frame is serialized first so that a frame is either
/// written whole or not at all from the serializer's point of view.
pub(crate) fn write_frame<W: Write, F: Serialize>(writer: &mut W, frame: &F) -> io::Result<()> {
    let mut line = serde_json::to_vec(frame).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// Reads one line (without its `\n`), or `None` at a clean end of stream. A final line without
/// `\n` is returned as a line. Lines longer than `limit` are an `InvalidData` error.
pub(crate) fn read_frame_line<R: BufRead>(
    reader: &mut R,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    read_frame_line_waiting(reader, limit, None)
}

/// As [`read_frame_line`], on a reader with a read timeout: each time the timeout passes with
/// the line not complete, `on_wait` is called and the read goes on, keeping what it has.
/// Without `on_wait`, a timeout is an error as any other.
pub(crate) fn read_frame_line_waiting<R: BufRead>(
    reader: &mut R,
    limit: usize,
    mut on_wait: Option<&mut dyn FnMut()>,
) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && on_wait.is_some() =>
            {
                if let Some(on_wait) = on_wait.as_mut() {
                    on_wait();
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (taken, complete) = match available.iter().position(|byte| *byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        let content = if complete { taken - 1 } else { taken };
        if line.len() + content > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame is longer than {limit} bytes"),
            ));
        }
        line.extend_from_slice(&available[..content]);
        reader.consume(taken);
        if complete {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_round_trip_raw_and_oversized_ones_are_refused() {
        let payload: Vec<u8> = (0..=255u8).chain(b"\n\"{}".iter().copied()).collect();
        let mut wire = Vec::new();
        let header = ClientFrame::Bytes(BytesHeader {
            length: payload.len() as u64,
        });
        write_bytes(&mut wire, &header, &payload).unwrap();
        let mut reader = io::BufReader::new(&wire[..]);
        let line = read_frame_line(&mut reader, MAX_FRAME_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(line, br#"{"bytes":{"length":260}}"#);
        let Ok(ClientFrame::Bytes(header)) = serde_json::from_slice::<ClientFrame>(&line) else {
            panic!("a bytes frame");
        };
        assert_eq!(read_bytes(&mut reader, header).unwrap(), payload);
        let oversized = BytesHeader {
            length: MAX_FRAME_BYTES as u64 + 1,
        };
        assert_eq!(
            read_bytes(&mut &b""[..], oversized).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn frames_have_one_outer_key_naming_their_kind() {
        let event =
            serde_json::to_value(ServerFrame::Event(serde_json::json!({"response": 1}))).unwrap();
        assert_eq!(event, serde_json::json!({"event": {"response": 1}}));
        let decline = serde_json::to_value(ClientFrame::Decline {}).unwrap();
        assert_eq!(decline, serde_json::json!({"decline": {}}));
        let control: ClientFrame = serde_json::from_str(r#"{"control":"status"}"#).unwrap();
        assert!(matches!(
            control,
            ClientFrame::Control(ControlRequest::Status)
        ));
    }

    /// A reader that times out between the bytes it gives, as a socket with a read timeout.
    struct Slow {
        chunks: std::collections::VecDeque<Option<&'static [u8]>>,
    }

    impl io::Read for Slow {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            match self.chunks.pop_front() {
                Some(Some(bytes)) => {
                    buffer[..bytes.len()].copy_from_slice(bytes);
                    Ok(bytes.len())
                }
                Some(None) => Err(io::Error::new(io::ErrorKind::WouldBlock, "timed out")),
                None => Ok(0),
            }
        }
    }

    #[test]
    fn a_wait_inside_a_line_keeps_what_was_read() {
        let slow = || Slow {
            chunks: [Some(&b"{\"ev"[..]), None, None, Some(&b"ent\":1}\n"[..])]
                .into_iter()
                .collect(),
        };
        let mut waits = 0;
        let mut reader = io::BufReader::new(slow());
        let line = read_frame_line_waiting(&mut reader, 64, Some(&mut || waits += 1)).unwrap();
        assert_eq!(line, Some(br#"{"event":1}"#.to_vec()));
        assert_eq!(waits, 2);
        let mut reader = io::BufReader::new(slow());
        let error = read_frame_line(&mut reader, 64).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn lines_are_split_at_newlines_and_bounded() {
        let mut input = io::Cursor::new(b"one\ntwo\nthree".to_vec());
        assert_eq!(
            read_frame_line(&mut input, 16).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            read_frame_line(&mut input, 16).unwrap(),
            Some(b"two".to_vec())
        );
        assert_eq!(
            read_frame_line(&mut input, 16).unwrap(),
            Some(b"three".to_vec())
        );
        assert_eq!(read_frame_line(&mut input, 16).unwrap(), None);
        let mut long = io::Cursor::new(vec![b'x'; 40]);
        let error = read_frame_line(&mut long, 16).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
