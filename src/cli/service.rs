//! `diskshadow service run|status|stop`.

use std::path::Path;

use crate::connect;
use crate::session::exit_status;

use super::{fail, ServiceCommand};

pub fn service(store: &Path, command: ServiceCommand) -> i32 {
    match command {
        ServiceCommand::Run { idle_timeout } => match connect::run_service(store, idle_timeout) {
            Ok(()) => exit_status::SUCCESS,
            Err(error) => fail(&error),
        },
        ServiceCommand::Status { json: true } => match connect::service_status(store) {
            Ok(status) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                if status.is_some() {
                    exit_status::SUCCESS
                } else {
                    exit_status::COMMAND_FAILED
                }
            }
            Err(error) => fail(&error),
        },
        ServiceCommand::Status { json: false } => match connect::service_status(store) {
            Ok(Some(status)) => {
                println!("The service for {} is running.", store.display());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                exit_status::SUCCESS
            }
            Ok(None) => {
                println!("No service is running for {}.", store.display());
                exit_status::COMMAND_FAILED
            }
            Err(error) => fail(&error),
        },
        ServiceCommand::Stop => match connect::stop_service(store) {
            Ok(true) => {
                println!("The service for {} has stopped.", store.display());
                exit_status::SUCCESS
            }
            Ok(false) => {
                println!("No service is running for {}.", store.display());
                exit_status::SUCCESS
            }
            Err(error) => fail(&error),
        },
    }
}
