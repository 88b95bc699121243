//! The service transport with a toy handler: sessions, idle exit, the store lock, stale
//! sockets, events and questions, malformed frames, auto-start and signals.
//!
//! Some tests run a second process: this test binary re-executed with `TRANSPORT_TEST_ROLE`
//! set, which makes the `child_process_role` test play a requester or a service instead.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskshadow::service::transport::{
    connect_or_start, connect_or_start_within, serve, serve_store, spawn_detached, Client,
    EventSink, Handler, Incoming, RemoteErrorKind, ServerOptions, ServicePaths, SessionId,
    StopReason, TransportError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

const ROLE_VARIABLE: &str = "TRANSPORT_TEST_ROLE";

#[derive(Debug, Serialize, Deserialize)]
enum ToyRequest {
    Add(i64),
    Get,
    WhoAmI,
    Chatter(u32),
    Ask(String),
    Panic,
    Sleep(u64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ToyResponse {
    Count(i64),
    Session(u64),
    Answered(serde_json::Value),
    Failed(String),
}

/// A counter per session, released when the session ends.
#[derive(Default)]
struct ToyHandler {
    counters: Mutex<HashMap<SessionId, i64>>,
    ended: Mutex<Vec<SessionId>>,
    keep_alive: AtomicBool,
}

impl Handler for ToyHandler {
    type Request = ToyRequest;
    type Response = ToyResponse;

    fn handle(&self, session: SessionId, request: ToyRequest, events: &EventSink) -> ToyResponse {
        match request {
            ToyRequest::Add(amount) => {
                let mut counters = self.counters.lock().unwrap();
                let counter = counters.entry(session).or_default();
                *counter += amount;
                ToyResponse::Count(*counter)
            }
            ToyRequest::Get => ToyResponse::Count(
                self.counters
                    .lock()
                    .unwrap()
                    .get(&session)
                    .copied()
                    .unwrap_or(0),
            ),
            ToyRequest::WhoAmI => ToyResponse::Session(session.0),
            ToyRequest::Chatter(count) => {
                for step in 0..count {
                    if let Err(error) = events.send(json!({"step": step})) {
                        return ToyResponse::Failed(error.to_string());
                    }
                }
                ToyResponse::Count(i64::from(count))
            }
            ToyRequest::Ask(question) => match events.ask(json!({"question": question})) {
                Ok(answer) => ToyResponse::Answered(answer),
                Err(error) => ToyResponse::Failed(error.to_string()),
            },
            ToyRequest::Panic => panic!("the toy handler was asked to panic"),
            ToyRequest::Sleep(milliseconds) => {
                std::thread::sleep(Duration::from_millis(milliseconds));
                ToyResponse::Count(0)
            }
        }
    }

    fn session_ended(&self, session: SessionId) {
        self.counters.lock().unwrap().remove(&session);
        self.ended.lock().unwrap().push(session);
    }

    fn keeps_service_alive(&self) -> bool {
        self.keep_alive.load(Ordering::SeqCst)
    }
}

impl ToyHandler {
    fn has_ended(&self, session: SessionId) -> bool {
        self.ended.lock().unwrap().contains(&session)
    }
}

fn no_events(_event: serde_json::Value) -> Option<serde_json::Value> {
    None
}

fn call(client: &mut Client, request: ToyRequest) -> ToyResponse {
    client.call(&request, &mut no_events).unwrap()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn never_idle() -> ServerOptions {
    ServerOptions {
        idle_timeout: None,
        ..ServerOptions::default()
    }
}

fn idle_after(milliseconds: u64) -> ServerOptions {
    ServerOptions {
        idle_timeout: Some(Duration::from_millis(milliseconds)),
        ..ServerOptions::default()
    }
}

/// Re-executes this test binary in a role (see `child_process_role`).
fn child_command(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VARIABLE, role)
        .stdin(Stdio::null());
    command
}

/// Starts a detached child service for `store`, as the integrator's start closure would.
fn start_child_service(store: &Path, idle_milliseconds: u64) -> std::io::Result<Child> {
    spawn_detached(
        child_command(&format!("service:{idle_milliseconds}:{}", store.display())),
        &ServicePaths::for_store(store).log_file,
    )
}

/// Not a test of its own: the entry point of the child processes. Without
/// `TRANSPORT_TEST_ROLE` it returns at once.
#[test]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE_VARIABLE) else {
        return;
    };
    if let Some(socket) = role.strip_prefix("client:") {
        // A requester that makes session state, says who it is, and waits to be killed.
        let mut client = Client::connect(Path::new(socket)).unwrap();
        assert_eq!(call(&mut client, ToyRequest::Add(7)), ToyResponse::Count(7));
        let ToyResponse::Session(session) = call(&mut client, ToyRequest::WhoAmI) else {
            panic!("no session id")
        };
        println!("\nSESSION={session}");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(3);
    }
    if let Some(rest) = role.strip_prefix("service:") {
        let (idle, store) = rest.split_once(':').unwrap();
        let options = ServerOptions {
            idle_timeout: Some(Duration::from_millis(idle.parse().unwrap())),
            handle_termination_signals: true,
            log: None,
        };
        match serve_store(Path::new(store), Arc::new(ToyHandler::default()), options) {
            Ok(server) => {
                let reason = server.wait();
                std::process::exit(if reason == StopReason::Crashed { 4 } else { 0 });
            }
            // The loser of a start race exits quietly, as `service run` should.
            Err(error) if error.is_already_running() => std::process::exit(0),
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(5);
            }
        }
    }
    panic!("unknown role {role}");
}

#[test]
fn many_clients_at_once_keep_their_own_session_state() {
    let directory = tempfile::tempdir().unwrap();
    let handler = Arc::new(ToyHandler::default());
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::clone(&handler),
        never_idle(),
    )
    .unwrap();
    let socket = server.socket_path().to_path_buf();
    let workers: Vec<_> = (1..=12i64)
        .map(|worker| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket).unwrap();
                for _ in 0..20 {
                    call(&mut client, ToyRequest::Add(worker));
                }
                assert_eq!(
                    call(&mut client, ToyRequest::Get),
                    ToyResponse::Count(20 * worker)
                );
                let ToyResponse::Session(session) = call(&mut client, ToyRequest::WhoAmI) else {
                    panic!("no session id")
                };
                // Hold the connection until every worker is done, so all are connected at once.
                (session, client)
            })
        })
        .collect();
    let results: Vec<(u64, Client)> = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .collect();
    let mut sessions: Vec<u64> = results.iter().map(|(session, _)| *session).collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 12, "session IDs must be unique");
    assert_eq!(server.status().sessions, 12);
    drop(results);
    wait_until("every session ended", || {
        handler.ended.lock().unwrap().len() == 12
    });
    assert!(handler.counters.lock().unwrap().is_empty());
}

#[test]
fn session_ends_once_on_clean_close() {
    let directory = tempfile::tempdir().unwrap();
    let handler = Arc::new(ToyHandler::default());
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::clone(&handler),
        never_idle(),
    )
    .unwrap();
    let mut client = Client::connect(server.socket_path()).unwrap();
    call(&mut client, ToyRequest::Add(1));
    let ToyResponse::Session(session) = call(&mut client, ToyRequest::WhoAmI) else {
        panic!()
    };
    assert!(!handler.has_ended(SessionId(session)));
    drop(client);
    wait_until("the session ended", || {
        handler.has_ended(SessionId(session))
    });
    assert!(handler.counters.lock().unwrap().is_empty());
    drop(server);
    assert_eq!(
        handler.ended.lock().unwrap().as_slice(),
        &[SessionId(session)]
    );
}

#[test]
fn session_ends_when_the_requester_process_is_killed() {
    let directory = tempfile::tempdir().unwrap();
    let handler = Arc::new(ToyHandler::default());
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::clone(&handler),
        never_idle(),
    )
    .unwrap();
    let mut requester = child_command(&format!("client:{}", server.socket_path().display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(requester.stdout.take().unwrap()).lines();
    let session = loop {
        let line = lines
            .next()
            .expect("the requester ended without a session")
            .unwrap();
        // libtest may have written "test child_process_role ... " on the same line.
        if let Some((_, session)) = line.split_once("SESSION=") {
            break SessionId(session.trim().parse().unwrap());
        }
    };
    assert_eq!(handler.counters.lock().unwrap().get(&session), Some(&7));
    requester.kill().unwrap(); // SIGKILL: no chance to close anything cleanly.
    requester.wait().unwrap();
    wait_until("the killed requester's session ended", || {
        handler.has_ended(session)
    });
    assert!(handler.counters.lock().unwrap().get(&session).is_none());
}

#[test]
fn idle_service_exits_after_the_timeout_and_releases_the_store() {
    let store = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let server = serve_store(
        store.path(),
        Arc::new(ToyHandler::default()),
        idle_after(300),
    )
    .unwrap();
    let socket = server.socket_path().to_path_buf();
    assert_eq!(socket, store.path().join("service.sock"));
    assert_eq!(server.wait(), StopReason::IdleTimeout);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!socket.exists(), "the socket must be removed");
    // The lock is released: a new service can take the store.
    let again = serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
    again.stop();
    assert_eq!(again.wait(), StopReason::StopRequested);
    let log = std::fs::read_to_string(store.path().join("service.log")).unwrap();
    assert!(log.contains("service stopped: idle timeout"), "{log}");
}

#[test]
fn no_idle_exit_while_a_session_is_connected_or_something_is_kept_alive() {
    let store = tempfile::tempdir().unwrap();
    let handler = Arc::new(ToyHandler::default());
    let server = serve_store(store.path(), Arc::clone(&handler), idle_after(200)).unwrap();
    let client = Client::connect_store(store.path()).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !server.is_finished(),
        "a connected session keeps the service"
    );
    handler.keep_alive.store(true, Ordering::SeqCst);
    drop(client);
    std::thread::sleep(Duration::from_millis(700));
    assert!(!server.is_finished(), "a keep-alive keeps the service");
    let released = Instant::now();
    handler.keep_alive.store(false, Ordering::SeqCst);
    assert_eq!(server.wait(), StopReason::IdleTimeout);
    assert!(
        released.elapsed() >= Duration::from_millis(200),
        "the timer restarts after a keep-alive"
    );
}

#[test]
fn a_second_service_on_the_same_store_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let first = serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
    match serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()) {
        Err(TransportError::AlreadyRunning { pid, .. }) => {
            assert_eq!(pid, Some(std::process::id()))
        }
        other => panic!("expected AlreadyRunning, got {:?}", other.map(|_| ())),
    }
    // The refused one must not have disturbed the first.
    let mut client = Client::connect_store(store.path()).unwrap();
    assert_eq!(call(&mut client, ToyRequest::Add(2)), ToyResponse::Count(2));
    drop(client);
    drop(first);
}

#[test]
fn a_stale_socket_file_is_removed_at_start() {
    let store = tempfile::tempdir().unwrap();
    let socket = store.path().join("service.sock");
    drop(UnixListener::bind(&socket).unwrap()); // leaves the socket file behind
    assert!(Client::connect(&socket).is_err());
    let server = serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
    let mut client = Client::connect_store(store.path()).unwrap();
    assert_eq!(call(&mut client, ToyRequest::Get), ToyResponse::Count(0));
    drop(client);
    drop(server);

    // The plain `serve` refuses a live socket but takes over a stale one.
    let other = tempfile::tempdir().unwrap();
    let path = other.path().join("s.sock");
    let live = serve(&path, Arc::new(ToyHandler::default()), never_idle()).unwrap();
    assert!(matches!(
        serve(&path, Arc::new(ToyHandler::default()), never_idle()),
        Err(TransportError::AddressInUse { .. })
    ));
    drop(live);
    drop(UnixListener::bind(&path).unwrap());
    drop(serve(&path, Arc::new(ToyHandler::default()), never_idle()).unwrap());
}

#[test]
fn a_killed_service_leaves_a_store_that_the_next_service_takes_over() {
    let store = tempfile::tempdir().unwrap();
    let mut service = start_child_service(store.path(), 60_000).unwrap();
    wait_until("the child service listens", || {
        Client::connect_store(store.path()).is_ok()
    });
    service.kill().unwrap();
    service.wait().unwrap();
    assert!(
        store.path().join("service.sock").exists(),
        "SIGKILL leaves the socket file"
    );
    assert!(Client::connect_store(store.path()).is_err());
    let server = serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
    let mut client = Client::connect_store(store.path()).unwrap();
    assert_eq!(client.status().unwrap().pid, std::process::id());
    drop(client);
    drop(server);
}

#[test]
fn events_and_questions_reach_the_requester_before_the_response() {
    let directory = tempfile::tempdir().unwrap();
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::new(ToyHandler::default()),
        never_idle(),
    )
    .unwrap();
    let mut client = Client::connect(server.socket_path()).unwrap();

    let mut events = Vec::new();
    let response: ToyResponse = client
        .call(&ToyRequest::Chatter(3), &mut |event| {
            events.push(event);
            None
        })
        .unwrap();
    assert_eq!(response, ToyResponse::Count(3));
    assert_eq!(
        events,
        vec![json!({"step": 0}), json!({"step": 1}), json!({"step": 2})]
    );

    let mut asked = Vec::new();
    let response: ToyResponse = client
        .call_distinguishing(&ToyRequest::Ask("continue?".to_string()), &mut |incoming| {
            asked.push(incoming.clone());
            match incoming {
                Incoming::Question(_) => Some(json!("yes")),
                Incoming::Event(_) => None,
            }
        })
        .unwrap();
    assert_eq!(response, ToyResponse::Answered(json!("yes")));
    assert_eq!(
        asked,
        vec![Incoming::Question(json!({"question": "continue?"}))]
    );

    // Declining reaches the handler as an error, and the connection stays usable.
    let response: ToyResponse = client
        .call(&ToyRequest::Ask("again?".to_string()), &mut no_events)
        .unwrap();
    assert_eq!(
        response,
        ToyResponse::Failed(TransportError::AskDeclined.to_string())
    );
    assert_eq!(call(&mut client, ToyRequest::Add(1)), ToyResponse::Count(1));
}

#[test]
fn an_in_process_event_sink_runs_the_same_handler() {
    let handler = ToyHandler::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let sink = EventSink::from_callback(move |incoming| {
        recorder.lock().unwrap().push(incoming);
        Some(json!(42))
    });
    assert_eq!(
        handler.handle(SessionId(1), ToyRequest::Ask("x".to_string()), &sink),
        ToyResponse::Answered(json!(42))
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[Incoming::Question(json!({"question": "x"}))]
    );
    assert!(matches!(
        EventSink::discard().ask(json!(1)),
        Err(TransportError::AskUnavailable)
    ));
}

/// Reads one frame line from a raw connection.
fn read_json_line(reader: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line:?}"))
}

#[test]
fn malformed_frames_get_an_error_frame_and_the_connection_survives() {
    let directory = tempfile::tempdir().unwrap();
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::new(ToyHandler::default()),
        never_idle(),
    )
    .unwrap();
    let mut stream = UnixStream::connect(server.socket_path()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let hello = read_json_line(&mut reader);
    assert_eq!(
        hello["hello"]["protocol"],
        json!(diskshadow::service::transport::PROTOCOL_VERSION)
    );

    for bad in [
        "this is not json",
        r#"{"request": {"NoSuchRequest": 1}}"#,
        r#"{"nonsense": 1}"#,
        "[]",
    ] {
        writeln!(stream, "{bad}").unwrap();
        let reply = read_json_line(&mut reader);
        assert_eq!(
            reply["error"]["kind"],
            json!("malformed_request"),
            "for {bad}: {reply}"
        );
    }
    writeln!(stream, r#"{{"answer": 1}}"#).unwrap();
    assert_eq!(
        read_json_line(&mut reader)["error"]["kind"],
        json!("unexpected_frame")
    );
    writeln!(stream, r#"{{"request": {{"Add": 5}}}}"#).unwrap();
    assert_eq!(
        read_json_line(&mut reader),
        json!({"response": {"Count": 5}})
    );

    // Through the client, a request of the wrong type is a remote refusal, not a crash.
    let mut client = Client::connect(server.socket_path()).unwrap();
    let refused = client.call::<_, ToyResponse>(&"not a toy request", &mut no_events);
    assert!(matches!(
        refused,
        Err(TransportError::Remote {
            kind: RemoteErrorKind::MalformedRequest,
            ..
        })
    ));
    assert_eq!(call(&mut client, ToyRequest::Get), ToyResponse::Count(0));
}

#[test]
fn a_panicking_handler_refuses_the_request_and_the_service_keeps_serving() {
    let directory = tempfile::tempdir().unwrap();
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::new(ToyHandler::default()),
        never_idle(),
    )
    .unwrap();
    let mut client = Client::connect(server.socket_path()).unwrap();
    match client.call::<_, ToyResponse>(&ToyRequest::Panic, &mut no_events) {
        Err(TransportError::Remote {
            kind: RemoteErrorKind::HandlerPanicked,
            message,
        }) => {
            assert!(message.contains("asked to panic"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(call(&mut client, ToyRequest::Add(3)), ToyResponse::Count(3));
}

#[test]
fn status_and_stop_requests() {
    let store = tempfile::tempdir().unwrap();
    let server = serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
    let mut watcher = Client::connect_store(store.path()).unwrap();
    let mut client = Client::connect_store(store.path()).unwrap();
    let status = client.status().unwrap();
    assert_eq!(status.pid, std::process::id());
    assert_eq!(client.service_pid(), std::process::id());
    assert_eq!(status.sessions, 2);
    assert_eq!(
        status.store.as_deref(),
        Some(ServicePaths::for_store(store.path()).store.as_path())
    );
    assert_eq!(status.idle_timeout_milliseconds, None);
    client.request_stop().unwrap();
    assert_eq!(server.wait(), StopReason::StopRequested);
    // A stop ends every session: the other requester sees its connection closed.
    assert!(watcher.status().is_err());
}

/// A requester that connects after a stop was acknowledged is never greeted by the stopping
/// service (it would get a session cut at once): its connection closes before the greeting or
/// finds no socket, which `connect_or_start` answers by starting a new service. A flood of
/// other connections keeps the accept loop busy accepting while the stop is acknowledged.
#[test]
fn a_requester_after_a_stop_is_never_greeted_by_the_stopping_service() {
    for round in 0..10 {
        let store = tempfile::tempdir().unwrap();
        let server =
            serve_store(store.path(), Arc::new(ToyHandler::default()), never_idle()).unwrap();
        let mut stopper = Client::connect_store(store.path()).unwrap();
        let socket = ServicePaths::for_store(store.path()).socket_for_requesters();
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = {
            let flooding = flooding.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while flooding.load(Ordering::SeqCst) && held.len() < 3000 {
                    match UnixStream::connect(&socket) {
                        Ok(stream) => held.push(stream),
                        Err(_) => break,
                    }
                }
                held.len()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        stopper.request_stop().unwrap();
        let late = Client::connect_store(store.path());
        flooding.store(false, Ordering::SeqCst);
        let flooded = flood.join().unwrap();
        if let Ok(mut late) = late {
            panic!(
                "round {round} ({flooded} connections flooded): greeted after the stop; its request: {:?}",
                late.status()
            );
        }
        assert_eq!(server.wait(), StopReason::StopRequested);
    }
}

#[test]
fn a_long_store_path_puts_the_socket_elsewhere_and_records_it() {
    let directory = tempfile::tempdir().unwrap();
    let store: PathBuf = directory
        .path()
        .join("a-store-whose-path-is-far-too-long".repeat(4));
    assert!(store.join("service.sock").as_os_str().len() > 107);
    let server = serve_store(&store, Arc::new(ToyHandler::default()), never_idle()).unwrap();
    let paths = ServicePaths::for_store(&store);
    let recorded = std::fs::read_to_string(&paths.address_file).unwrap();
    assert_eq!(Path::new(recorded.trim_end()), server.socket_path());
    let mut client = Client::connect_store(&store).unwrap();
    assert_eq!(call(&mut client, ToyRequest::Add(4)), ToyResponse::Count(4));
    drop(client);
    let socket = server.socket_path().to_path_buf();
    drop(server);
    assert!(!socket.exists(), "the fallback socket is removed at stop");
    assert!(
        !paths.address_file.exists(),
        "the address file is removed at stop"
    );
}

#[test]
fn racing_requesters_start_one_service_and_both_connect_to_it() {
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().to_path_buf();
    let started = Arc::new(Mutex::new(0));
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let store_path = store_path.clone();
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let start = || {
                    *started.lock().unwrap() += 1;
                    start_child_service(&store_path, 60_000)
                };
                let mut client = connect_or_start(&store_path, &start).unwrap();
                client.status().unwrap().pid
            })
        })
        .collect();
    let pids: Vec<u32> = racers
        .into_iter()
        .map(|racer| racer.join().unwrap())
        .collect();
    assert_eq!(pids[0], pids[1], "both requesters reach the same service");
    assert_ne!(pids[0], std::process::id());
    assert!(*started.lock().unwrap() >= 1);

    // A third requester finds it running and starts nothing.
    let mut client = connect_or_start(&store_path, &|| panic!("must not start a service")).unwrap();
    assert_eq!(client.service_pid(), pids[0]);
    client.request_stop().unwrap();
    drop(client);
    wait_until("the service released the store", || {
        !store_path.join("service.sock").exists()
    });
}

#[test]
fn a_service_that_never_comes_up_is_reported_with_its_log() {
    let store = tempfile::tempdir().unwrap();
    let failing = || Command::new("sh").args(["-c", "exit 3"]).spawn();
    match connect_or_start(store.path(), &failing) {
        Err(error @ TransportError::ServiceExitedEarly { .. }) => {
            assert!(error.to_string().contains("service.log"), "{error}")
        }
        other => panic!("expected ServiceExitedEarly, got {other:?}"),
    }
    let silent = || Command::new("sleep").arg("1").spawn();
    let started = Instant::now();
    match connect_or_start_within(store.path(), &silent, Duration::from_millis(300)) {
        Err(error @ TransportError::StartTimedOut { .. }) => {
            assert!(error.to_string().contains("service.log"), "{error}")
        }
        other => panic!("expected StartTimedOut, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn sigterm_stops_the_service_gracefully() {
    let store = tempfile::tempdir().unwrap();
    let mut service = start_child_service(store.path(), 60_000).unwrap();
    wait_until("the child service listens", || {
        Client::connect_store(store.path()).is_ok()
    });
    let mut client = Client::connect_store(store.path()).unwrap();
    let pid = i32::try_from(service.id()).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the service ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!store.path().join("service.sock").exists());
    assert!(client.status().is_err(), "the session was closed");
    let log = std::fs::read_to_string(store.path().join("service.log")).unwrap();
    assert!(log.contains("service stopped: termination signal"), "{log}");
}

#[test]
fn a_stop_lets_a_running_request_finish_and_answer() {
    let directory = tempfile::tempdir().unwrap();
    let handler = Arc::new(ToyHandler::default());
    let server = serve(
        &directory.path().join("s.sock"),
        Arc::clone(&handler),
        never_idle(),
    )
    .unwrap();
    let socket = server.socket_path().to_path_buf();
    let sleeper = std::thread::spawn(move || {
        let mut client = Client::connect(&socket).unwrap();
        call(&mut client, ToyRequest::Sleep(400))
    });
    wait_until("the request is running", || server.status().sessions == 1);
    std::thread::sleep(Duration::from_millis(100));
    server.stop();
    assert_eq!(server.wait(), StopReason::StopRequested);
    assert_eq!(sleeper.join().unwrap(), ToyResponse::Count(0));
    assert_eq!(
        handler.ended.lock().unwrap().len(),
        1,
        "the stop ended the session"
    );
}

#[test]
fn a_service_of_another_protocol_version_is_reported_not_restarted() {
    let store = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(store.path().join("service.sock")).unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        writeln!(stream, r#"{{"hello": {{"protocol": 99, "pid": 1}}}}"#).unwrap();
    });
    match connect_or_start(store.path(), &|| panic!("must not start a service")) {
        Err(TransportError::ProtocolMismatch { ours, theirs: 99 })
            if ours == diskshadow::service::transport::PROTOCOL_VERSION => {}
        other => panic!("expected ProtocolMismatch, got {other:?}"),
    }
    impostor.join().unwrap();
}

#[test]
fn a_store_named_through_a_symlink_reaches_the_same_service() {
    let directory = tempfile::tempdir().unwrap();
    let store = directory.path().join("store");
    let alias = directory.path().join("alias-with-a-much-longer-name");
    let server = serve_store(&store, Arc::new(ToyHandler::default()), never_idle()).unwrap();
    std::os::unix::fs::symlink(&store, &alias).unwrap();
    let mut client = Client::connect_store(&alias).unwrap();
    assert_eq!(client.status().unwrap().socket, server.socket_path());
    assert!(matches!(
        serve_store(&alias, Arc::new(ToyHandler::default()), never_idle()),
        Err(TransportError::AlreadyRunning { .. })
    ));
}
