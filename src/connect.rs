//! How the binaries reach a store's service.

use std::path::Path;
use std::sync::Arc;

use crate::engine::core::EngineOptions;
use crate::engine::model::RequesterId;
use crate::engine::Engine;
use crate::service::local::LocalService;
use crate::service::{ServiceError, ShadowService};

/// Opens the store's service for this process.
pub fn connect(store: &Path) -> Result<Box<dyn ShadowService>, ServiceError> {
    let engine = open_engine(store)?;
    Ok(Box::new(LocalService::new(
        Arc::new(engine),
        RequesterId(u64::from(std::process::id())),
    )))
}

fn open_engine(store: &Path) -> Result<Engine, ServiceError> {
    let options = {
        let mut options = EngineOptions::system();
        options.machine_name = crate::ui::machine_name();
        options
    };
    Engine::open(store, options).map_err(|error| {
        crate::service::local::engine_error(error.vss_code(), error.to_string())
            .with_help("another diskshadow may be using this store; wait for it or use --store DIR")
    })
}

/// `diskshadow check-store`.
pub fn check_store(store: &Path) -> Result<crate::engine::core::CheckReport, ServiceError> {
    Ok(open_engine(store)?.check())
}
