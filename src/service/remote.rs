//! The service API over the store's socket: [`Request`] (generated from the protocol table in
//! [`super::protocol`]) is the wire message, [`EngineHandler`] serves it in the service
//! process (one [`LocalService`] per requester connection), and [`RemoteService`] is the
//! requester's side of the same trait.
//!
//! Stopping a request: the service names a request that can stop in a `{"cancellable": ID}`
//! event; the requester's connection is busy until the answer, so [`RemoteService`] sends
//! [`Request::Cancel`] naming it on a second connection when its observer says the user asked
//! to stop. The request then answers on the first connection, with the state it left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use super::api::{OperationId, ShadowService};
use super::error::{ServiceError, ServiceErrorKind};
use super::events::ServiceObserver;
use super::events::{Event, EventObserver};
use super::local::{LocalService, ServiceCore};
use super::protocol::*;
use super::transport::{self, EventSink, Handler, SessionId};
use crate::engine::model::RequesterId;
use crate::engine::Engine;

/// The service process's handler: the engine, shared; one requester per connection.
pub struct EngineHandler {
    core: Arc<ServiceCore>,
    sessions: Mutex<HashMap<u64, Arc<Mutex<LocalService>>>>,
}

impl EngineHandler {
    /// The handler of a service that just opened the store. Exposures the catalog records now
    /// were left by a service that ended without taking them down: they are cleaned first, and
    /// so are overlays of shadows that are gone.
    pub fn new(engine: Arc<Engine>) -> Self {
        let core = ServiceCore::new(engine);
        core.clear_stale_exposures();
        // Overlays a crash left behind its shadows' deletion: check-store reported them as
        // leaked; the service owning the store removes them.
        core.coordinator.reclaim_leaked_overlays();
        Self {
            core,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, session: SessionId) -> Arc<Mutex<LocalService>> {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions
            .entry(session.0)
            .or_insert_with(|| {
                Arc::new(Mutex::new(LocalService::with_core(
                    self.core.clone(),
                    RequesterId(session.0),
                )))
            })
            .clone()
    }
}

impl Handler for EngineHandler {
    type Request = Request;
    type Response = Result<serde_json::Value, ServiceError>;

    fn handle(&self, session: SessionId, request: Request, events: &EventSink) -> Self::Response {
        let service = self.session(session);
        let mut service = service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut observer = EventObserver { events };
        let mut response_bytes = Vec::new();
        let payload = RequestPayload {
            bytes: events.take_request_bytes(),
            descriptor: events.take_request_descriptor(),
        };
        let reply = dispatch(
            &mut *service,
            request,
            payload,
            &mut response_bytes,
            &mut observer,
        );
        if !response_bytes.is_empty() {
            events.set_response_bytes(response_bytes);
        }
        reply
    }

    fn session_ended(&self, session: SessionId) {
        let ended = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            sessions.remove(&session.0)
        };
        let service = ended.unwrap_or_else(|| {
            Arc::new(Mutex::new(LocalService::with_core(
                self.core.clone(),
                RequesterId(session.0),
            )))
        });
        let mut service = service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The requester is gone however it went: its volatile shadows go with it.
        let _ = service.release_requester();
    }

    fn keeps_service_alive(&self) -> bool {
        // Polled on every tick of the service: also the moment to notice shadows the engine
        // deleted under an exposure.
        self.core.reap_dangling_exposures();
        // A full copy restarted in the background (`connect::run_service`) keeps it too.
        self.core.has_exposures() || self.core.engine.full_copies_running()
    }
}

impl EngineHandler {
    /// Where each shadow deleted to fit a diff-area limit is told (the service log).
    pub fn set_deletion_sink(&self, sink: Arc<dyn crate::engine::deletions::DeletionSink>) {
        self.core.set_deletion_sink(sink);
    }
}

/// How often a requester waiting for an answer looks whether its user asked to stop.
const STOP_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The requester's half of stopping a request: remembers the name the service gave the
/// running request (its `cancellable` event) and, once the user asks to stop (the observer's
/// [`ServiceObserver::stop_requested`], Ctrl-C in the shell), sends `cancel` once on a second
/// connection, since the first is busy waiting for the request's answer.
struct Stopper {
    socket: PathBuf,
    operation: Option<OperationId>,
    sent: bool,
}

impl Stopper {
    fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            operation: None,
            sent: false,
        }
    }

    fn offered(&mut self, observer: &mut dyn ServiceObserver, operation: OperationId) {
        self.operation = Some(operation);
        observer.cancellable(operation);
    }

    fn poll(&mut self, observer: &mut dyn ServiceObserver) {
        let Some(operation) = self.operation.filter(|_| !self.sent) else {
            return;
        };
        if !observer.stop_requested() {
            return;
        }
        self.sent = true;
        let sent = transport::Client::connect(&self.socket).and_then(|mut client| {
            client
                .call::<_, Result<(), ServiceError>>(&Request::Cancel { operation }, &mut |_| None)
        });
        match sent {
            Ok(Ok(_)) => {}
            // It ended meanwhile: its own answer follows on the first connection.
            Ok(Err(error)) if error.kind == ServiceErrorKind::NotFound => {}
            Ok(Err(error)) => {
                observer.line(&format!("The service could not be asked to stop: {error}"))
            }
            Err(error) => {
                observer.line(&format!("The service could not be asked to stop: {error}"))
            }
        }
    }
}

/// The requester's side: every call goes over the socket.
/// Connects (or reconnects) to the service, starting it if needed.
pub type Connector = Box<dyn Fn() -> Result<transport::Client, ServiceError> + Send>;

pub struct RemoteService {
    /// `None` after the connection broke: the next request reconnects.
    client: Option<transport::Client>,
    reconnect: Option<Connector>,
}

impl RemoteService {
    pub fn new(client: transport::Client) -> Self {
        Self {
            client: Some(client),
            reconnect: None,
        }
    }

    /// A requester that reconnects (starting a new service) after its service went away. The
    /// request that found the connection broken fails; it is not sent again, since it may have
    /// been carried out. What the lost connection owned (volatile shadows) is gone with it.
    pub fn with_reconnect(client: transport::Client, reconnect: Connector) -> Self {
        Self {
            client: Some(client),
            reconnect: Some(reconnect),
        }
    }

    /// Sends one request (with what travels beside it) and returns its reply in its wire
    /// form `W` with the response's binary payload; events are replayed on `observer`. The
    /// protocol table's generated methods are its only callers.
    pub(super) fn send<W: DeserializeOwned>(
        &mut self,
        request: &Request,
        payload: OutgoingPayload<'_>,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(W, Vec<u8>), ServiceError> {
        if self.client.is_none() {
            if let Some(reconnect) = &self.reconnect {
                self.client = Some(reconnect()?);
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Err(ServiceError::new(
                ServiceErrorKind::Unavailable,
                "the connection to the service is closed",
            )
            .with_help("start the shell again"));
        };
        let mut stopper = Stopper::new(client.socket_path());
        let answer: Result<(Result<W, ServiceError>, Vec<u8>), _> = client.call_waiting(
            request,
            payload.bytes,
            payload.descriptor,
            STOP_POLL_INTERVAL,
            &mut |incoming| {
                let answer = match incoming {
                    Some(
                        transport::Incoming::Event(event) | transport::Incoming::Question(event),
                    ) => match Event::parse(event) {
                        Some(Event::Cancellable(operation)) => {
                            stopper.offered(observer, operation);
                            None
                        }
                        Some(event) => event.replay(observer),
                        None => None,
                    },
                    None => None,
                };
                stopper.poll(observer);
                answer
            },
        );
        match answer {
            Ok((reply, bytes)) => reply.map(|reply| (reply, bytes)),
            Err(error) => {
                self.client = None;
                let mut failure = ServiceError::new(
                    ServiceErrorKind::Unavailable,
                    format!("the service did not answer: {error}"),
                );
                if self.reconnect.is_some() {
                    failure = failure.with_help(
                        "the next command connects to a new service; volatile shadow copies of this session are gone",
                    );
                }
                Err(failure)
            }
        }
    }
}

// The socket client's methods, one per line of the protocol table: each sends its request and
// reads its reply back as the type it asked for.
with_service_table!(service_protocol remote);
