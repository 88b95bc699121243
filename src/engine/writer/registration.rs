//! Writer registrations: one TOML file per writer in the store's `writers/` directory
//! (`docs/writer-protocol.md`, "Registration").
//!
//! **Invariant:** a registration file that cannot be read or is invalid is reported with its
//! reason and never stops the other writers from loading.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::ids::{parse_guid, WriterId};

/// The longest freeze a writer may ask for, and the default (VSS's 60-second freeze window).
pub const MAX_FREEZE_TIMEOUT: Duration = Duration::from_secs(60);

/// One valid writer registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The friendly name, shown by `list writers`.
    pub name: String,
    /// The writer class ID, stable across versions.
    pub writer_id: WriterId,
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    pub working_dir: Option<PathBuf>,
    /// The writer's own Freeze->Thaw limit, at most [`MAX_FREEZE_TIMEOUT`].
    pub freeze_timeout: Duration,
    /// The file the registration was read from, if any.
    pub source: Option<PathBuf>,
}

impl Registration {
    /// A registration made in code (tests, conformance checks).
    pub fn new(name: impl Into<String>, writer_id: WriterId, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            writer_id,
            command,
            working_dir: None,
            freeze_timeout: MAX_FREEZE_TIMEOUT,
            source: None,
        }
    }

    /// Parses the TOML text of one registration file.
    pub fn from_toml(text: &str, source: Option<&Path>) -> Result<Self, RegistrationError> {
        let raw: RawRegistration = toml::from_str(text)
            .map_err(|error| RegistrationError::Syntax(error.message().to_string()))?;
        let name = raw.name.trim().to_string();
        if name.is_empty() {
            return Err(RegistrationError::EmptyName);
        }
        let writer_id = parse_guid(&raw.id)
            .map(WriterId)
            .ok_or_else(|| RegistrationError::InvalidId(raw.id.clone()))?;
        if raw
            .command
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            return Err(RegistrationError::EmptyCommand);
        }
        let freeze_timeout = match raw.freeze_timeout.as_deref() {
            None => MAX_FREEZE_TIMEOUT,
            Some(text) => {
                let timeout = parse_duration(text)
                    .ok_or_else(|| RegistrationError::InvalidDuration(text.to_string()))?;
                if timeout > MAX_FREEZE_TIMEOUT {
                    return Err(RegistrationError::FreezeTimeoutTooLong(text.to_string()));
                }
                if timeout.is_zero() {
                    return Err(RegistrationError::InvalidDuration(text.to_string()));
                }
                timeout
            }
        };
        Ok(Self {
            name,
            writer_id,
            command: raw.command,
            working_dir: raw.working_dir.map(PathBuf::from),
            freeze_timeout,
            source: source.map(Path::to_path_buf),
        })
    }

    /// Reads one registration file.
    pub fn from_file(path: &Path) -> Result<Self, RegistrationError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| RegistrationError::Unreadable(error.to_string()))?;
        Self::from_toml(&text, Some(path))
    }
}

/// Why a registration could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationChangeError {
    #[error("{0} is registered already (in {1})")]
    AlreadyRegistered(String, PathBuf),
    #[error("no registration in {0} is named '{1}'")]
    NotFound(PathBuf, String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl Registration {
    /// The registration as the TOML of `spec/writer-protocol.md`.
    pub fn to_toml(&self) -> String {
        let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
        let command: Vec<String> = self.command.iter().map(|part| quote(part)).collect();
        let mut text = format!(
            "name = {}\nid = {}\ncommand = [{}]\n",
            quote(&self.name),
            quote(&self.writer_id.to_string()),
            command.join(", ")
        );
        if let Some(directory) = &self.working_dir {
            text.push_str(&format!(
                "working_dir = {}\n",
                quote(&directory.display().to_string())
            ));
        }
        if self.freeze_timeout != MAX_FREEZE_TIMEOUT {
            text.push_str(&format!(
                "freeze_timeout = \"{}ms\"\n",
                self.freeze_timeout.as_millis()
            ));
        }
        text
    }
}

/// Writes `registration` as `<directory>/<file_stem>.toml`, refusing to replace a registration
/// of the same name or writer ID. The file is written beside and renamed into place, so the
/// service never reads half a file.
pub fn add_registration(
    directory: &Path,
    file_stem: &str,
    registration: &Registration,
) -> Result<PathBuf, RegistrationChangeError> {
    let existing = load_registrations(directory);
    if let Some(found) = existing.registrations.iter().find(|other| {
        other.writer_id == registration.writer_id
            || other.name.eq_ignore_ascii_case(&registration.name)
    }) {
        return Err(RegistrationChangeError::AlreadyRegistered(
            found.name.clone(),
            found.source.clone().unwrap_or_default(),
        ));
    }
    let path = directory.join(format!("{file_stem}.toml"));
    if path.exists() {
        return Err(RegistrationChangeError::AlreadyRegistered(
            file_stem.to_string(),
            path,
        ));
    }
    // Private like everything in the store (FORMAT.md, "Permissions"): a registration names
    // the programs the service runs and their arguments.
    crate::engine::store::create_private_dir_all(directory)
        .map_err(|error| RegistrationChangeError::Io(directory.to_path_buf(), error))?;
    let partial = directory.join(format!(".{file_stem}.toml.partial"));
    crate::engine::store::private_open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, registration.to_toml().as_bytes())
        })
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|error| RegistrationChangeError::Io(path.clone(), error))?;
    Ok(path)
}

/// Removes the registration named `name` (its writer name, ID or file name, any case). Invalid
/// files can be removed by file name.
pub fn remove_registration(
    directory: &Path,
    name: &str,
) -> Result<PathBuf, RegistrationChangeError> {
    let set = load_registrations(directory);
    let by_registration = set.registrations.iter().find(|registration| {
        registration.name.eq_ignore_ascii_case(name)
            || parse_guid(name).is_some_and(|id| id == registration.writer_id.0)
    });
    let path = match by_registration.and_then(|registration| registration.source.clone()) {
        Some(path) => path,
        None => {
            let file = if name.ends_with(".toml") {
                name.to_string()
            } else {
                format!("{name}.toml")
            };
            let path = directory.join(file);
            if !path.is_file() {
                return Err(RegistrationChangeError::NotFound(
                    directory.to_path_buf(),
                    name.to_string(),
                ));
            }
            path
        }
    };
    std::fs::remove_file(&path)
        .map_err(|error| RegistrationChangeError::Io(path.clone(), error))?;
    Ok(path)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    name: String,
    id: String,
    command: Vec<String>,
    working_dir: Option<String>,
    freeze_timeout: Option<String>,
}

/// Why one registration file is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    #[error("invalid TOML: {0}")]
    Syntax(String),
    #[error("`name` is empty")]
    EmptyName,
    #[error("`id` '{0}' is not a GUID; expected {{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}}")]
    InvalidId(String),
    #[error("`command` is empty; it must name the writer program")]
    EmptyCommand,
    #[error("`freeze_timeout` '{0}' is not a duration such as \"20s\" or \"500ms\"")]
    InvalidDuration(String),
    #[error("`freeze_timeout` '{0}' is longer than the 60s VSS allows")]
    FreezeTimeoutTooLong(String),
    #[error("writer ID {0} is already registered by {1}")]
    DuplicateId(WriterId, String),
}

/// A registration file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationProblem {
    pub file: PathBuf,
    pub error: RegistrationError,
}

impl fmt::Display for RegistrationProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.file.display(), self.error)
    }
}

/// Every registration of a directory, valid ones and problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationSet {
    /// In file-name order, so writer order is stable between runs.
    pub registrations: Vec<Registration>,
    pub problems: Vec<RegistrationProblem>,
}

/// Loads every `*.toml` file of `directory`. A missing directory holds no writers.
pub fn load_registrations(directory: &Path) -> RegistrationSet {
    let mut set = RegistrationSet::default();
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return set,
        Err(error) => {
            set.problems.push(RegistrationProblem {
                file: directory.to_path_buf(),
                error: RegistrationError::Unreadable(error.to_string()),
            });
            return set;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    for file in files {
        match Registration::from_file(&file) {
            Ok(registration) => {
                let duplicate = set
                    .registrations
                    .iter()
                    .find(|existing| existing.writer_id == registration.writer_id)
                    .map(|existing| existing.name.clone());
                match duplicate {
                    Some(existing_name) => set.problems.push(RegistrationProblem {
                        file,
                        error: RegistrationError::DuplicateId(
                            registration.writer_id,
                            existing_name,
                        ),
                    }),
                    None => set.registrations.push(registration),
                }
            }
            Err(error) => set.problems.push(RegistrationProblem { file, error }),
        }
    }
    set
}

/// What identifies the registration files of a directory as they are now: each `*.toml` file
/// with its size and modification time. A different fingerprint means a registration was
/// added, removed or changed.
pub type RegistrationsFingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

pub fn registrations_fingerprint(directory: &Path) -> RegistrationsFingerprint {
    let mut files: RegistrationsFingerprint = std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    entry
                        .path()
                        .extension()
                        .is_some_and(|extension| extension == "toml")
                })
                .map(|entry| {
                    let metadata = entry.metadata().ok();
                    (
                        entry.path(),
                        metadata
                            .as_ref()
                            .map(|metadata| metadata.len())
                            .unwrap_or(0),
                        metadata.and_then(|metadata| metadata.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Parses `20s`, `500ms`, `1m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|character: char| !character.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(value)),
        "s" => Some(Duration::from_secs(value)),
        "m" | "min" => value.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_registration_is_private_to_the_store_owner() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().expect("tempdir");
        let writers = directory.path().join("writers");
        let registration = Registration::new(
            "Journal Writer",
            WriterId(uuid::Uuid::from_u128(7)),
            vec!["/bin/true".into()],
        );
        let path = add_registration(&writers, "journal", &registration).expect("add");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&writers), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(!writers.join(".journal.toml.partial").exists());
        assert_eq!(load_registrations(&writers).registrations.len(), 1);
    }

    const VALID: &str = r#"
name = "Journal Writer"
id = "{6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b}"
command = ["/usr/local/bin/journal-writer", "--vss"]
freeze_timeout = "20s"
"#;

    #[test]
    fn a_valid_registration_parses_with_its_freeze_timeout() {
        let registration = Registration::from_toml(VALID, None).expect("valid");
        assert_eq!(registration.name, "Journal Writer");
        assert_eq!(registration.freeze_timeout, Duration::from_secs(20));
        assert_eq!(
            registration.writer_id.to_string(),
            "{6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b}"
        );
    }

    #[test]
    fn invalid_files_are_reported_and_do_not_stop_the_others() {
        let directory = tempfile::tempdir().expect("tempdir");
        std::fs::write(directory.path().join("a.toml"), VALID).expect("write");
        std::fs::write(
            directory.path().join("b.toml"),
            "name = \"x\"\nid = \"nope\"\ncommand = [\"x\"]",
        )
        .expect("write");
        std::fs::write(
            directory.path().join("c.toml"),
            VALID.replace("20s", "90s").replace("6f1b9d7e", "7f1b9d7e"),
        )
        .expect("write");
        std::fs::write(directory.path().join("d.toml"), "not toml [").expect("write");
        std::fs::write(directory.path().join("ignored.txt"), "anything").expect("write");
        let set = load_registrations(directory.path());
        assert_eq!(set.registrations.len(), 1);
        assert_eq!(set.problems.len(), 3);
        assert!(matches!(
            set.problems[0].error,
            RegistrationError::InvalidId(_)
        ));
        assert!(matches!(
            set.problems[1].error,
            RegistrationError::FreezeTimeoutTooLong(_)
        ));
        assert!(matches!(
            set.problems[2].error,
            RegistrationError::Syntax(_)
        ));
    }

    #[test]
    fn added_registrations_read_back_and_are_removed_by_name() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut registration = Registration::new(
            "SQLite Writer",
            WriterId(uuid::Uuid::from_u128(0x5117E)),
            vec![
                "/bin/writer".into(),
                "sqlite".into(),
                "--db".into(),
                "/a \"b\".db".into(),
            ],
        );
        registration.freeze_timeout = Duration::from_secs(20);
        let path = add_registration(directory.path(), "sqlite", &registration).expect("added");
        let mut read = Registration::from_file(&path).expect("valid");
        read.source = None;
        assert_eq!(read, registration);
        assert!(matches!(
            add_registration(directory.path(), "other", &registration),
            Err(RegistrationChangeError::AlreadyRegistered(..))
        ));
        assert!(matches!(
            remove_registration(directory.path(), "nobody"),
            Err(RegistrationChangeError::NotFound(..))
        ));
        assert_eq!(
            remove_registration(directory.path(), "sqlite writer").expect("removed"),
            path
        );
        assert!(load_registrations(directory.path())
            .registrations
            .is_empty());
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("soon"), None);
    }
}
