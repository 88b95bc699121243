//! One requester connection: reads its frames, runs each request through the handler, and
//! ends the session exactly once however the connection ends.

use std::io::{self, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::access::PeerCredentials;
use super::descriptor::DescriptorStream;
use super::error::TransportError;
use super::log::log_to;
use super::wire::{read_bytes, write_bytes, BytesHeader};
use super::wire::{
    read_frame_line, write_frame, ClientFrame, ControlRequest, Hello, RemoteError, RemoteErrorKind,
    ServerFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

use super::control::{Handler, SessionId, Shared};
use super::events::{lock_ignoring_poison, ConnectionIo, EventSink};

pub(super) fn run_session<H: Handler>(
    shared: &Shared<H>,
    session: SessionId,
    stream: UnixStream,
    peer: PeerCredentials,
) {
    let control = &shared.control;
    log_to(
        &control.log,
        &format!("{session} connected (pid {}, uid {})", peer.pid, peer.uid),
    );
    let ending = match serve_session(shared, session, stream) {
        Ok(ending) => ending.to_string(),
        Err(error) => error.to_string(),
    };
    if catch_unwind(AssertUnwindSafe(|| shared.handler.session_ended(session))).is_err() {
        log_to(
            &control.log,
            &format!("the handler panicked while ending {session}"),
        );
    }
    let mut state = lock_ignoring_poison(&control.state);
    state.sessions.remove(&session);
    if state.sessions.is_empty() {
        state.idle_since = Some(Instant::now());
    }
    drop(state);
    log_to(&control.log, &format!("{session} ended: {ending}"));
}

pub(super) fn send_to_requester(
    io: &mut ConnectionIo,
    frame: &ServerFrame,
) -> Result<(), TransportError> {
    write_frame(&mut io.writer, frame).map_err(|source| TransportError::Send {
        peer: "requester",
        source,
    })
}

pub(super) fn refusal(kind: RemoteErrorKind, message: String) -> ServerFrame {
    ServerFrame::Error(RemoteError { kind, message })
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Serves one connection until it ends; returns how it ended.
pub(super) fn serve_session<H: Handler>(
    shared: &Shared<H>,
    session: SessionId,
    stream: UnixStream,
) -> Result<&'static str, TransportError> {
    let control = &shared.control;
    let writer = stream.try_clone().map_err(|source| TransportError::Send {
        peer: "requester",
        source,
    })?;
    let mut io = ConnectionIo {
        reader: BufReader::new(DescriptorStream::new(stream)),
        writer,
    };
    send_to_requester(
        &mut io,
        &ServerFrame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }),
    )?;
    // The binary payload announced by a `bytes` frame, for the request that follows it.
    let mut request_bytes: Vec<u8> = Vec::new();
    // The descriptor taken by a `descriptor` frame, for the request that follows it.
    let mut request_descriptor: Option<OwnedFd> = None;
    loop {
        let line = match read_frame_line(&mut io.reader, MAX_FRAME_BYTES) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok("the requester closed the connection"),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                // The rest of the oversized line is still in the stream, so the connection
                // cannot be resynchronized: refuse and close.
                send_to_requester(
                    &mut io,
                    &refusal(RemoteErrorKind::MalformedRequest, error.to_string()),
                )?;
                return Ok("the requester sent an oversized frame");
            }
            Err(source) => {
                return Err(TransportError::Receive {
                    peer: "requester",
                    source,
                })
            }
        };
        let frame = match serde_json::from_slice::<ClientFrame>(&line) {
            Ok(frame) => frame,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("{session} sent a malformed frame: {error}"),
                );
                send_to_requester(
                    &mut io,
                    &refusal(
                        RemoteErrorKind::MalformedRequest,
                        format!("not a request frame: {error}"),
                    ),
                )?;
                continue;
            }
        };
        match frame {
            ClientFrame::Bytes(header) => match read_bytes(&mut io.reader, header) {
                Ok(bytes) => request_bytes = bytes,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    // The payload is still in the stream: the connection cannot go on.
                    send_to_requester(
                        &mut io,
                        &refusal(RemoteErrorKind::MalformedRequest, error.to_string()),
                    )?;
                    return Ok("the requester sent an oversized binary payload");
                }
                Err(source) => {
                    return Err(TransportError::Receive {
                        peer: "requester",
                        source,
                    })
                }
            },
            ClientFrame::Descriptor {} => match io.reader.get_mut().take_descriptor() {
                Some(descriptor) => request_descriptor = Some(descriptor),
                None => {
                    // A request that needs a descriptor then fails saying so.
                    request_descriptor = None;
                    log_to(
                        &control.log,
                        &format!("{session} sent a descriptor frame without a descriptor"),
                    );
                }
            },
            ClientFrame::Request(value) => {
                let bytes = std::mem::take(&mut request_bytes);
                let descriptor = request_descriptor.take();
                let request = match serde_json::from_value::<H::Request>(value) {
                    Ok(request) => request,
                    Err(error) => {
                        log_to(
                            &control.log,
                            &format!("{session} sent an unknown request: {error}"),
                        );
                        send_to_requester(
                            &mut io,
                            &refusal(
                                RemoteErrorKind::MalformedRequest,
                                format!("not a valid request: {error}"),
                            ),
                        )?;
                        continue;
                    }
                };
                let sink = EventSink::connection(io)
                    .with_request_bytes(bytes)
                    .with_request_descriptor(descriptor);
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    shared.handler.handle(session, request, &sink)
                }));
                let response_bytes = sink.take_response_bytes();
                io = sink
                    .into_connection()
                    .ok_or(TransportError::ConnectionClosed { peer: "requester" })?;
                if let (Some(bytes), Ok(_)) = (response_bytes, &outcome) {
                    let header = ServerFrame::Bytes(BytesHeader {
                        length: bytes.len() as u64,
                    });
                    write_bytes(&mut io.writer, &header, &bytes).map_err(|source| {
                        TransportError::Send {
                            peer: "requester",
                            source,
                        }
                    })?;
                }
                let reply = match outcome {
                    Ok(response) => match serde_json::to_value(&response) {
                        Ok(response) => ServerFrame::Response(response),
                        Err(error) => {
                            refusal(RemoteErrorKind::ResponseNotSerializable, error.to_string())
                        }
                    },
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        log_to(
                            &control.log,
                            &format!("the handler panicked on a request of {session}: {message}"),
                        );
                        refusal(RemoteErrorKind::HandlerPanicked, message)
                    }
                };
                send_to_requester(&mut io, &reply)?;
            }
            ClientFrame::Answer(_) | ClientFrame::Decline {} => {
                send_to_requester(
                    &mut io,
                    &refusal(
                        RemoteErrorKind::UnexpectedFrame,
                        "no question is pending".to_string(),
                    ),
                )?;
            }
            ClientFrame::Control(ControlRequest::Status) => {
                send_to_requester(&mut io, &ServerFrame::Status(control.status()))?;
            }
            ClientFrame::Control(ControlRequest::Stop) => {
                log_to(
                    &control.log,
                    &format!("{session} asked the service to stop"),
                );
                send_to_requester(&mut io, &ServerFrame::Stopping {})?;
                control.request_stop();
            }
        }
    }
}
