//! How the binaries reach a store's service: connect to the running service over the store's
//! socket, starting it first when none runs (nothing to set up), or, with
//! `DISKSHADOW_IN_PROCESS=1`, open the engine in this process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::core::EngineOptions;
use crate::engine::model::RequesterId;
use crate::engine::Engine;
use crate::service::local::LocalService;
use crate::service::remote::{EngineHandler, RemoteService};
use crate::service::transport::{self, ServerOptions, ServicePaths, StopReason};
use crate::service::way_out::{engine_error, engine_failure, EngineFailure};
use crate::service::{ServiceError, ServiceErrorKind, ShadowService};

/// The engine of a store, for this process.
pub fn open_engine(store: &Path) -> Result<Engine, ServiceError> {
    open_engine_typed(store).map_err(|error| {
        engine_error(error.vss_code(), error.to_string())
            .with_help("another diskshadow service may own this store: `diskshadow service status`")
            .with_way_out(error.way_out())
    })
}

fn open_engine_typed(store: &Path) -> Result<Engine, crate::engine::core::OpenError> {
    let mut options = EngineOptions::system();
    options.machine_name = crate::engine::core::host_name();
    Engine::open(store, options)
}

/// How long a starting service waits for a stopping one to let go of the store.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping service waits for the engine's handles to close.
const SERVICE_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Drops `value` on a helper thread and waits at most `bound` for it; returns whether the
/// drop finished. A drop still running is left to the process's exit.
fn drop_within(value: Box<dyn Send>, bound: Duration) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("diskshadow-close".to_string())
        .spawn(move || {
            drop(value);
            let _ = done.send(());
        });
    match spawned {
        Ok(_) => finished.recv_timeout(bound).is_ok(),
        // No thread: close here, unbounded, as before.
        Err(_) => true,
    }
}

/// `check-store`: asks the store's running service, or, when none runs, opens the store
/// read-only in this process. It never starts a service and never changes the store: a
/// damaged store is looked at, not repaired.
pub fn check_store(store: &Path) -> Result<crate::service::api::StoreCheck, ServiceError> {
    let in_process = std::env::var_os("DISKSHADOW_IN_PROCESS").is_some_and(|value| value == "1");
    if !in_process {
        if let Ok(client) = transport::Client::connect_store(store) {
            return RemoteService::new(client).check_store();
        }
    }
    let mut options = EngineOptions::system();
    options.machine_name = crate::engine::core::host_name();
    let engine = Engine::open_read_only(store, options).map_err(|error| {
        engine_error(error.vss_code(), error.to_string())
            .with_help("`check-store` opened the store read-only and changed nothing")
    })?;
    LocalService::new(Arc::new(engine), RequesterId(u64::from(std::process::id()))).check_store()
}

fn unavailable(error: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(ServiceErrorKind::Unavailable, error.to_string())
}

/// A transport failure as the requester sees it; a refusal by the service's access control
/// carries VSS's `E_ACCESSDENIED`.
fn transport_error(store: &Path, error: transport::TransportError) -> ServiceError {
    match error {
        transport::TransportError::AccessDenied { message } => {
            ServiceError::new(ServiceErrorKind::Unavailable, message)
                .with_code(crate::engine::vss::VssCode::E_ACCESSDENIED)
                .with_help(format!(
                    "ask the store's owner to add your user to {} (and to let you reach the store directory)",
                    store.join(transport::access::ACCESS_FILE_NAME).display()
                ))
        }
        other => unavailable(other),
    }
}

/// Connects to the store's service, starting it if none runs.
pub fn connect(store: &Path) -> Result<Box<dyn ShadowService>, ServiceError> {
    if std::env::var_os("DISKSHADOW_IN_PROCESS").is_some_and(|value| value == "1") {
        let engine = open_engine(store)?;
        return Ok(Box::new(LocalService::new(
            Arc::new(engine),
            RequesterId(u64::from(std::process::id())),
        )));
    }
    crate::engine::store::create_private_dir_all(store).map_err(|error| {
        ServiceError::io(format!(
            "the store {} cannot be created: {error}",
            store.display()
        ))
    })?;
    let client = connect_client(store)?;
    let store = store.to_path_buf();
    Ok(Box::new(RemoteService::with_reconnect(
        client,
        Box::new(move || connect_client(&store)),
    )))
}

/// Set on every service process this module starts. A process that has it is a service (or
/// runs under one) and must never start another: a binary that does not understand
/// `service run` would otherwise connect, find no service and spawn again, without end.
pub const SPAWNED_SERVICE_ENV: &str = "DISKSHADOW_SPAWNED_SERVICE";

/// Names the `diskshadow` binary that runs the service, for requesters installed elsewhere.
pub const SERVICE_BINARY_ENV: &str = "DISKSHADOW_SERVICE_BINARY";

/// The binary that understands `service run`: `DISKSHADOW_SERVICE_BINARY`, else this binary
/// when it is `diskshadow`, else the `diskshadow` installed beside it (as `vssadmin` is).
pub fn service_binary() -> Result<PathBuf, ServiceError> {
    if let Some(path) = std::env::var_os(SERVICE_BINARY_ENV).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(unavailable(format!(
            "{SERVICE_BINARY_ENV} names {}, which is not a file",
            path.display()
        ))
        .with_help(format!(
            "point {SERVICE_BINARY_ENV} at the diskshadow binary, or unset it"
        )));
    }
    let current = std::env::current_exe().map_err(|error| {
        unavailable(format!("the path of this program is unknown: {error}"))
            .with_help(format!("set {SERVICE_BINARY_ENV} to the diskshadow binary"))
    })?;
    if current.file_name().is_some_and(|name| name == "diskshadow") {
        return Ok(current);
    }
    let beside = current.with_file_name("diskshadow");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(unavailable(format!(
        "no service runs for this store, and the diskshadow binary that starts it is not beside {} ({} is missing)",
        current.display(),
        beside.display()
    ))
    .with_help(format!(
        "install diskshadow next to it, set {SERVICE_BINARY_ENV}, or start `diskshadow service run` first"
    )))
}

/// One connection to the store's service, starting it if none runs.
fn connect_client(store: &Path) -> Result<transport::Client, ServiceError> {
    let paths = ServicePaths::for_store(store);
    let spawned = std::env::var_os(SPAWNED_SERVICE_ENV).is_some_and(|value| value == "1");
    if spawned {
        // A started service (or a program it runs) only connects; it never starts a service.
        return transport::Client::connect_store(store).map_err(|error| {
            unavailable(format!(
                "{error}; this process runs as a started service ({SPAWNED_SERVICE_ENV}=1) and starts no other"
            ))
            .with_help(format!("the service log is {}", paths.log_file.display()))
        });
    }
    if let Ok(client) = transport::Client::connect_store(store) {
        return Ok(client);
    }
    // Only a start needs the binary: a running service is reached from anywhere.
    let executable = service_binary()?;
    let start = || {
        let mut command = Command::new(&executable);
        command
            .arg("--store")
            .arg(store)
            .args(["service", "run"])
            .env(SPAWNED_SERVICE_ENV, "1");
        transport::spawn_detached(command, &paths.log_file)
    };
    transport::connect_or_start(store, &start).map_err(|error| match error {
        transport::TransportError::AccessDenied { .. } => transport_error(store, error),
        other => {
            unavailable(other).with_help(format!("the service log is {}", paths.log_file.display()))
        }
    })
}

/// `diskshadow service run`: owns the store until idle, stopped, or signalled.
pub fn run_service(store: &Path, idle_timeout: Option<u64>) -> Result<(), ServiceError> {
    crate::engine::store::create_private_dir_all(store).map_err(|error| {
        ServiceError::io(format!(
            "the store {} cannot be created: {error}",
            store.display()
        ))
    })?;
    // The store is locked either by a service that won the start race (it answers on the
    // socket: nothing to do) or by one that is still exiting after a stop (wait for it).
    let deadline = std::time::Instant::now() + HANDOVER_WAIT;
    let engine = loop {
        match open_engine_typed(store) {
            Ok(engine) => break engine,
            Err(error @ crate::engine::core::OpenError::Locked { .. }) => {
                if transport::Client::connect_store(store).is_ok() {
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    return Err(engine_failure(&error));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => return Err(engine_failure(&error)),
        }
    };
    let seconds = idle_timeout
        .or_else(|| {
            std::env::var("DISKSHADOW_IDLE_TIMEOUT")
                .ok()
                .and_then(|text| text.parse().ok())
        })
        .unwrap_or(180);
    let log = Arc::new(
        transport::ServiceLog::open(&ServicePaths::for_store(store).log_file)
            .map_err(unavailable)?,
    );
    let options = ServerOptions {
        idle_timeout: Some(Duration::from_secs(seconds)),
        handle_termination_signals: true,
        log: Some(log.clone()),
    };
    let engine = Arc::new(engine);
    // Full copies a crash cut off are served from their points in time; the service makes
    // them again from there, in the background (it does not idle out meanwhile). A copy still
    // running when the service stops is cut off the same way, and made again next time.
    let pending = engine.pending_full_copies();
    if !pending.is_empty() {
        let copier = engine.clone();
        std::thread::spawn(move || {
            for shadow in pending {
                let _ = copier.complete_full_copy(shadow, &crate::engine::progress::NoProgress);
            }
        });
    }
    let handler = Arc::new(EngineHandler::new(engine.clone()));
    // After the coordinator took the engine's sink: it removes what it kept for a deleted
    // shadow, then passes the event to the log.
    handler.set_deletion_sink(log);
    match transport::serve_store(store, handler, options) {
        Ok(server) => {
            let reason = server.wait();
            // The background copier may still hold the engine, so its last handle may not be
            // dropped here: acknowledged writes are flushed now.
            let _ = engine.flush();
            // Everything is durable: closing what the engine holds (librbd images and cluster
            // connections among them) must not keep a stopped service alive when a cluster
            // went away and its shutdown waits for it; past the bound the process exits with
            // them open (the kernel closes them; the store's lock goes with the process).
            drop_within(Box::new(engine), SERVICE_CLOSE_WAIT);
            match reason {
                StopReason::Crashed => Err(unavailable(
                    "the service stopped after an internal failure; see service.log",
                )),
                _ => Ok(()),
            }
        }
        Err(error) if error.is_already_running() => Ok(()),
        Err(error) => Err(unavailable(error)),
    }
}

/// `diskshadow service status`.
pub fn service_status(store: &Path) -> Result<Option<transport::ServiceStatus>, ServiceError> {
    match transport::Client::connect_store(store) {
        Ok(mut client) => client.status().map(Some).map_err(unavailable),
        Err(error @ transport::TransportError::AccessDenied { .. }) => {
            Err(transport_error(store, error))
        }
        Err(_) => Ok(None),
    }
}

/// How long `service stop` waits for the service process to exit: its grace period for
/// running requests, then the bound on closing the engine, and some slack.
const STOP_WAIT: Duration =
    Duration::from_secs(transport::STOP_GRACE_PERIOD.as_secs() + SERVICE_CLOSE_WAIT.as_secs() + 10);

/// `diskshadow service stop`: asks the service to stop and waits until its process has exited,
/// so the next command starts a new service on a free store. False when none was running.
pub fn stop_service(store: &Path) -> Result<bool, ServiceError> {
    let pid = match transport::Client::connect_store(store) {
        Ok(mut client) => {
            client.request_stop().map_err(unavailable)?;
            client.service_pid()
        }
        Err(error @ transport::TransportError::AccessDenied { .. }) => {
            return Err(transport_error(store, error))
        }
        Err(_) => return Ok(false),
    };
    let deadline = std::time::Instant::now() + STOP_WAIT;
    while process_lives(pid) {
        if std::time::Instant::now() >= deadline {
            return Err(unavailable(format!(
                "the service (pid {pid}) is still stopping after {} s",
                STOP_WAIT.as_secs()
            ))
            .with_help(format!(
                "see {} for what it waits on; `kill {pid}` ends it at once (volatile shadow copies are lost)",
                ServicePaths::for_store(store).log_file.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// True while process `pid` runs: it exists and is not a zombie waiting to be reaped.
fn process_lives(pid: u32) -> bool {
    if pid == std::process::id() {
        // A service in this very process (tests) stops with its server, not with a process.
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SlowDrop(Duration, Arc<std::sync::atomic::AtomicBool>);

    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_close_that_hangs_does_not_hold_the_stopping_service_past_the_bound() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = std::time::Instant::now();
        let slow = SlowDrop(Duration::from_secs(30), dropped.clone());
        assert!(!drop_within(Box::new(slow), Duration::from_millis(200)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));

        let quick = SlowDrop(Duration::from_millis(10), dropped.clone());
        assert!(drop_within(Box::new(quick), Duration::from_secs(10)));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
