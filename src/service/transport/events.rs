//! What a running request sends its requester besides the response: events and questions
//! ([`EventSink`]), and the request's binary payloads and descriptor.

use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};

use super::descriptor::DescriptorStream;
use super::error::TransportError;
use super::wire::{read_frame_line, write_frame, ClientFrame, ServerFrame, MAX_FRAME_BYTES};

/// A message from the service during a request, as the requester sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A progress, log or step event; any answer is ignored.
    Event(serde_json::Value),
    /// A question; the requester answers with `Some(answer)` or declines with `None`.
    Question(serde_json::Value),
}

/// The reading and writing halves of one connection.
pub(crate) struct ConnectionIo {
    pub(crate) reader: BufReader<DescriptorStream>,
    pub(crate) writer: UnixStream,
}

pub(super) type Callback = Box<dyn FnMut(Incoming) -> Option<serde_json::Value> + Send>;

pub(super) enum SinkTarget {
    Connection(Mutex<ConnectionIo>),
    Callback(Mutex<Callback>),
    Discard,
}

/// Sends events and questions to the requester of the running request.
///
/// Usable from several threads of one request (it is `Sync`); frames never interleave.
pub struct EventSink {
    target: SinkTarget,
    /// The binary payload that came with the request (`bytes` frame), until taken.
    request_bytes: Mutex<Vec<u8>>,
    /// The binary payload to send before the response, if the handler set one.
    response_bytes: Mutex<Option<Vec<u8>>>,
    /// The file descriptor that came with the request (`descriptor` frame), until taken.
    request_descriptor: Mutex<Option<OwnedFd>>,
}

pub(super) fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl EventSink {
    /// A sink that hands events and questions to `callback`, for running a handler in-process
    /// (tests, or an embedded service) with the same code path as over the socket.
    pub fn from_callback(
        callback: impl FnMut(Incoming) -> Option<serde_json::Value> + Send + 'static,
    ) -> EventSink {
        EventSink::with_target(SinkTarget::Callback(Mutex::new(Box::new(callback))))
    }

    /// A sink that drops events; questions fail with [`TransportError::AskUnavailable`].
    pub fn discard() -> EventSink {
        EventSink::with_target(SinkTarget::Discard)
    }

    pub(crate) fn connection(io: ConnectionIo) -> EventSink {
        EventSink::with_target(SinkTarget::Connection(Mutex::new(io)))
    }

    fn with_target(target: SinkTarget) -> EventSink {
        EventSink {
            target,
            request_bytes: Mutex::new(Vec::new()),
            response_bytes: Mutex::new(None),
            request_descriptor: Mutex::new(None),
        }
    }

    /// Gives the request its binary payload (what the requester sent in a `bytes` frame).
    pub fn with_request_bytes(self, bytes: Vec<u8>) -> EventSink {
        *lock_ignoring_poison(&self.request_bytes) = bytes;
        self
    }

    /// Gives the request the file descriptor the requester sent in a `descriptor` frame.
    pub fn with_request_descriptor(self, descriptor: Option<OwnedFd>) -> EventSink {
        *lock_ignoring_poison(&self.request_descriptor) = descriptor;
        self
    }

    /// Takes the request's file descriptor, if it came with one.
    pub fn take_request_descriptor(&self) -> Option<OwnedFd> {
        lock_ignoring_poison(&self.request_descriptor).take()
    }

    /// Takes the request's binary payload (empty when it had none).
    pub fn take_request_bytes(&self) -> Vec<u8> {
        std::mem::take(&mut *lock_ignoring_poison(&self.request_bytes))
    }

    /// Sets the binary payload sent as raw bytes before the response.
    pub fn set_response_bytes(&self, bytes: Vec<u8>) {
        *lock_ignoring_poison(&self.response_bytes) = Some(bytes);
    }

    /// Takes the response's binary payload, if the handler set one.
    pub fn take_response_bytes(&self) -> Option<Vec<u8>> {
        lock_ignoring_poison(&self.response_bytes).take()
    }

    pub(super) fn into_connection(self) -> Option<ConnectionIo> {
        match self.target {
            SinkTarget::Connection(io) => Some(match io.into_inner() {
                Ok(io) => io,
                Err(poisoned) => poisoned.into_inner(),
            }),
            _ => None,
        }
    }

    /// Writes `{"event": event}` to the requester.
    pub fn send(&self, event: serde_json::Value) -> Result<(), TransportError> {
        match &self.target {
            SinkTarget::Connection(io) => {
                let mut io = lock_ignoring_poison(io);
                write_frame(&mut io.writer, &ServerFrame::Event(event)).map_err(|source| {
                    TransportError::Send {
                        peer: "requester",
                        source,
                    }
                })
            }
            SinkTarget::Callback(callback) => {
                (lock_ignoring_poison(callback))(Incoming::Event(event));
                Ok(())
            }
            SinkTarget::Discard => Ok(()),
        }
    }

    /// Writes `{"ask": question}` and waits for the requester's answer.
    pub fn ask(&self, question: serde_json::Value) -> Result<serde_json::Value, TransportError> {
        match &self.target {
            SinkTarget::Connection(io) => {
                let mut io = lock_ignoring_poison(io);
                write_frame(&mut io.writer, &ServerFrame::Ask(question)).map_err(|source| {
                    TransportError::Send {
                        peer: "requester",
                        source,
                    }
                })?;
                let line = read_frame_line(&mut io.reader, MAX_FRAME_BYTES)
                    .map_err(|source| TransportError::Receive {
                        peer: "requester",
                        source,
                    })?
                    .ok_or(TransportError::ConnectionClosed { peer: "requester" })?;
                match serde_json::from_slice::<ClientFrame>(&line) {
                    Ok(ClientFrame::Answer(answer)) => Ok(answer),
                    Ok(ClientFrame::Decline {}) => Err(TransportError::AskDeclined),
                    Ok(_) => Err(TransportError::MalformedFrame {
                        peer: "requester",
                        message: "expected an answer to the pending question".to_string(),
                    }),
                    Err(error) => Err(TransportError::MalformedFrame {
                        peer: "requester",
                        message: error.to_string(),
                    }),
                }
            }
            SinkTarget::Callback(callback) => {
                (lock_ignoring_poison(callback))(Incoming::Question(question))
                    .ok_or(TransportError::AskDeclined)
            }
            SinkTarget::Discard => Err(TransportError::AskUnavailable),
        }
    }
}
