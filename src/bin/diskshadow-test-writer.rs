//! A configurable writer for tests, in the spirit of the VSS SDK test writer. It speaks the
//! protocol of `docs/writer-protocol.md` and can be told, per event, to succeed, fail with any
//! error code, hang, crash, answer late, log, or write a line that breaks the protocol. With
//! `--record FILE` it appends every request it receives (one JSON line each) so tests can
//! assert the exact event sequence.
//!
//! Configuration: `--config FILE` (TOML, or JSON when the name ends in `.json`) and/or flags:
//! `--name`, `--id`, `--component NAME=VOLUME`, `--on EVENT=ACTION` where ACTION is `succeed`,
//! `fail:CODE`, `hang`, `crash`, `garbage`, `delay:MS`, `log:TEXT`, `wrong_id`, `duplicate`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "diskshadow-test-writer",
    about = "A configurable VSS test writer for diskshadow"
)]
struct Arguments {
    /// A TOML (or .json) file with the writer's configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Append every request received to this file, one JSON line each.
    #[arg(long)]
    record: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    id: Option<String>,
    /// A component `NAME=VOLUME` (repeatable).
    #[arg(long = "component")]
    components: Vec<String>,
    /// A behaviour `EVENT=ACTION` (repeatable).
    #[arg(long = "on")]
    behaviours: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    writer_restore: Option<String>,
    #[serde(default)]
    components: Vec<ComponentConfig>,
    /// Replaces the whole `metadata` of the identify answer (for schema tests).
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    events: BTreeMap<String, Behaviour>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentConfig {
    name: String,
    #[serde(default)]
    logical_path: String,
    #[serde(default = "filegroup")]
    r#type: String,
    #[serde(default = "yes")]
    selectable: bool,
    #[serde(default)]
    volumes: Vec<String>,
}

fn filegroup() -> String {
    "filegroup".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Behaviour {
    /// `succeed` (default), `fail`, `hang`, `crash`, `garbage`, `wrong_id`, `duplicate`.
    #[serde(default)]
    action: Option<String>,
    /// The error code for `fail`.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// Wait this long before answering.
    #[serde(default)]
    delay_ms: u64,
    /// Log lines to write before answering.
    #[serde(default)]
    logs: Vec<String>,
    /// Also write these lines to standard error.
    #[serde(default)]
    stderr: Vec<String>,
}

fn parse_flag_behaviour(
    text: &str,
    events: &mut BTreeMap<String, Behaviour>,
) -> Result<(), String> {
    let (event, action) = text
        .split_once('=')
        .ok_or_else(|| format!("--on {text}: expected EVENT=ACTION"))?;
    let behaviour = events.entry(event.to_string()).or_default();
    let (verb, argument) = match action.split_once(':') {
        Some((verb, argument)) => (verb, Some(argument)),
        None => (action, None),
    };
    match verb {
        "delay" => {
            behaviour.delay_ms = argument
                .and_then(|ms| ms.parse().ok())
                .ok_or_else(|| format!("--on {text}: delay needs MS"))?;
        }
        "log" => behaviour
            .logs
            .push(argument.unwrap_or_default().to_string()),
        "fail" => {
            behaviour.action = Some("fail".to_string());
            behaviour.error = Some(argument.unwrap_or("retryable").to_string());
        }
        "succeed" | "hang" | "crash" | "garbage" | "wrong_id" | "duplicate" => {
            behaviour.action = Some(verb.to_string());
        }
        other => return Err(format!("--on {text}: unknown action '{other}'")),
    }
    Ok(())
}

fn load_config(arguments: &Arguments) -> Result<Config, String> {
    let mut config = match &arguments.config {
        None => Config::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                serde_json::from_str(&text)
                    .map_err(|error| format!("{}: {error}", path.display()))?
            } else {
                toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))?
            }
        }
    };
    if let Some(name) = &arguments.name {
        config.name = Some(name.clone());
    }
    if let Some(id) = &arguments.id {
        config.id = Some(id.clone());
    }
    for component in &arguments.components {
        let (name, volume) = component
            .split_once('=')
            .ok_or_else(|| format!("--component {component}: expected NAME=VOLUME"))?;
        config.components.push(ComponentConfig {
            name: name.to_string(),
            logical_path: String::new(),
            r#type: filegroup(),
            selectable: true,
            volumes: vec![volume.to_string()],
        });
    }
    for behaviour in &arguments.behaviours {
        parse_flag_behaviour(behaviour, &mut config.events)?;
    }
    Ok(config)
}

fn metadata(config: &Config) -> Value {
    if let Some(metadata) = &config.metadata {
        return metadata.clone();
    }
    let components: Vec<Value> = config
        .components
        .iter()
        .map(|component| {
            let files: Vec<Value> = component
                .volumes
                .iter()
                .map(|volume| json!({"volume": volume, "path": "/", "filespec": "*", "recursive": true}))
                .collect();
            json!({
                "name": component.name,
                "logical_path": component.logical_path,
                "type": component.r#type,
                "caption": component.name,
                "selectable": component.selectable,
                "selectable_for_restore": true,
                "notify_on_backup_complete": true,
                "files": files,
            })
        })
        .collect();
    let mut metadata = json!({
        "usage": "user_data",
        "source": "other",
        "restore_method": {
            "method": "restore_if_can_replace",
            "writer_restore": config.writer_restore.clone().unwrap_or_else(|| "always".to_string()),
            "reboot_required": false,
        },
        "components": components,
        "excludes": [],
    });
    if let (Some(instance_id), Some(object)) = (&config.instance_id, metadata.as_object_mut()) {
        object.insert("instance_id".to_string(), Value::from(instance_id.clone()));
    }
    metadata
}

struct Output {
    stdout: std::io::Stdout,
}

impl Output {
    fn line(&mut self, value: &Value) {
        let mut handle = self.stdout.lock();
        let _ = writeln!(handle, "{value}");
        let _ = handle.flush();
    }

    fn raw(&mut self, text: &str) {
        let mut handle = self.stdout.lock();
        let _ = writeln!(handle, "{text}");
        let _ = handle.flush();
    }
}

fn run() -> Result<(), String> {
    let arguments = Arguments::parse();
    let config = load_config(&arguments)?;
    let mut record = match &arguments.record {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| format!("{}: {error}", path.display()))?,
        ),
        None => None,
    };
    let mut output = Output {
        stdout: std::io::stdout(),
    };
    let mut frozen_until: Option<Instant> = None;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|error| error.to_string())?;
        let request: Value =
            serde_json::from_str(&line).map_err(|error| format!("bad request {line}: {error}"))?;
        if let Some(file) = record.as_mut() {
            let _ = writeln!(file, "{request}");
            let _ = file.flush();
        }
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let event = request
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let behaviour = config.events.get(&event).cloned().unwrap_or_default();
        for text in &behaviour.stderr {
            eprintln!("{text}");
        }
        for text in &behaviour.logs {
            output.line(&json!({"log": text}));
        }
        if behaviour.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(behaviour.delay_ms));
        }
        let mut answer = json!({"id": id, "ok": true});
        match event.as_str() {
            "identify" => answer["metadata"] = metadata(&config),
            "freeze" => {
                let deadline = request
                    .get("deadline_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(60_000);
                frozen_until = Some(Instant::now() + Duration::from_millis(deadline));
            }
            "thaw" => {
                // A writer whose freeze outlived its deadline has thawed on its own: the shadow
                // copy may not be consistent, so it says so, as VSS writers do.
                let overran = frozen_until
                    .take()
                    .is_some_and(|until| Instant::now() > until);
                if overran {
                    answer = json!({"id": id, "ok": false, "error": "timeout", "message": "the freeze deadline passed before thaw"});
                }
            }
            "abort" => frozen_until = None,
            _ => {}
        }
        match behaviour.action.as_deref().unwrap_or("succeed") {
            "succeed" => output.line(&answer),
            "fail" => output.line(&json!({
                "id": id,
                "ok": false,
                "error": behaviour.error.clone().unwrap_or_else(|| "retryable".to_string()),
                "message": behaviour.message.clone().unwrap_or_else(|| format!("test writer fails {event} as configured")),
            })),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "crash" => std::process::exit(3),
            "garbage" => output.raw("this line is not JSON"),
            "wrong_id" => {
                answer["id"] = Value::from(id.as_u64().unwrap_or(0) + 1000);
                output.line(&answer);
            }
            "duplicate" => {
                output.line(&answer);
                output.line(&answer);
            }
            other => return Err(format!("unknown action '{other}' for {event}")),
        }
    }
    // End of input means abort: a frozen writer thaws and exits.
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("diskshadow-test-writer: {message}");
            ExitCode::from(2)
        }
    }
}
