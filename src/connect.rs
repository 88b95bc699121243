//! How the binaries reach a store's service: connect to the running service over the store's
//! socket, starting it first when none runs (nothing to set up), or, with
//! `DISKSHADOW_IN_PROCESS=1`, open the engine in this process.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::core::EngineOptions;
use crate::engine::model::RequesterId;
use crate::engine::Engine;
use crate::service::local::{engine_error, LocalService};
use crate::service::remote::{EngineHandler, RemoteService};
use crate::service::transport::{self, ServerOptions, ServicePaths, StopReason};
use crate::service::{ServiceError, ServiceErrorKind, ShadowService};

/// The engine of a store, for this process.
pub fn open_engine(store: &Path) -> Result<Engine, ServiceError> {
    let mut options = EngineOptions::system();
    options.machine_name = crate::ui::machine_name();
    Engine::open(store, options).map_err(|error| {
        engine_error(error.vss_code(), error.to_string())
            .with_help("another diskshadow service may own this store: `diskshadow service status`")
    })
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
    options.machine_name = crate::ui::machine_name();
    let engine = Engine::open_read_only(store, options).map_err(|error| {
        engine_error(error.vss_code(), error.to_string())
            .with_help("`check-store` opened the store read-only and changed nothing")
    })?;
    LocalService::new(Arc::new(engine), RequesterId(u64::from(std::process::id()))).check_store()
}

fn unavailable(error: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(ServiceErrorKind::Unavailable, error.to_string())
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
    std::fs::create_dir_all(store).map_err(|error| {
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

/// One connection to the store's service, starting it if none runs.
fn connect_client(store: &Path) -> Result<transport::Client, ServiceError> {
    let paths = ServicePaths::for_store(store);
    let start = || {
        let executable = std::env::current_exe()?;
        let mut command = Command::new(executable);
        command.arg("--store").arg(store).args(["service", "run"]);
        transport::spawn_detached(command, &paths.log_file)
    };
    transport::connect_or_start(store, &start).map_err(|error| {
        unavailable(error).with_help(format!("the service log is {}", paths.log_file.display()))
    })
}

/// `diskshadow service run`: owns the store until idle, stopped, or signalled.
pub fn run_service(store: &Path, idle_timeout: Option<u64>) -> Result<(), ServiceError> {
    std::fs::create_dir_all(store).map_err(|error| {
        ServiceError::io(format!(
            "the store {} cannot be created: {error}",
            store.display()
        ))
    })?;
    let engine = match open_engine(store) {
        Ok(engine) => engine,
        // Another service won the start race and owns the engine: nothing to do.
        Err(error) if error.message.contains("lock") => return Ok(()),
        Err(error) => return Err(error),
    };
    let seconds = idle_timeout
        .or_else(|| {
            std::env::var("DISKSHADOW_IDLE_TIMEOUT")
                .ok()
                .and_then(|text| text.parse().ok())
        })
        .unwrap_or(180);
    let options = ServerOptions {
        idle_timeout: Some(Duration::from_secs(seconds)),
        handle_termination_signals: true,
        ..ServerOptions::default()
    };
    let handler = Arc::new(EngineHandler::new(Arc::new(engine)));
    match transport::serve_store(store, handler, options) {
        Ok(server) => match server.wait() {
            StopReason::Crashed => Err(unavailable(
                "the service stopped after an internal failure; see service.log",
            )),
            _ => Ok(()),
        },
        Err(error) if error.is_already_running() => Ok(()),
        Err(error) => Err(unavailable(error)),
    }
}

/// `diskshadow service status`.
pub fn service_status(store: &Path) -> Result<Option<transport::ServiceStatus>, ServiceError> {
    match transport::Client::connect_store(store) {
        Ok(mut client) => client.status().map(Some).map_err(unavailable),
        Err(_) => Ok(None),
    }
}

/// `diskshadow service stop`.
pub fn stop_service(store: &Path) -> Result<bool, ServiceError> {
    match transport::Client::connect_store(store) {
        Ok(mut client) => client.request_stop().map(|()| true).map_err(unavailable),
        Err(_) => Ok(false),
    }
}
