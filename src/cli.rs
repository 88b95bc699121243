//! The command line of `docs/cli.md`, shared by the `diskshadow` binary and its tests.

use crate::engine::ids::ProviderId;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::service::ServiceError;
use crate::session::exit_status;

pub mod array;
pub mod check_store;
pub mod drive;
pub mod list;
pub mod service;
pub mod volume;
pub mod writer;

#[derive(Debug, Parser)]
#[command(
    name = "diskshadow",
    version,
    about = "The DiskShadow shell for image-file volumes on Linux",
    long_about = "Runs DiskShadow commands interactively, or a script with -s (or /s). \
                  Without -s and with standard input not a terminal, standard input is the script."
)]
pub struct Cli {
    /// The store (a directory holding the catalog, diff areas and writers); defaults to
    /// $DISKSHADOW_STORE, then to a per-user data directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Copy everything shown to LOGFILE as well (`/l` on Windows).
    #[arg(short = 'l', long = "log", value_name = "LOGFILE")]
    pub log: Option<PathBuf>,

    /// Run SCRIPT; the PARAMs that follow are %DISKSH_PARAM_1%, %DISKSH_PARAM_2%, …
    #[arg(short = 's', long = "script", num_args = 1.., value_name = "SCRIPT [PARAM]...", allow_hyphen_values = false)]
    pub script: Vec<String>,

    /// Drop the last character of each line of a script with LF-only line ends, as Windows'
    /// DiskShadow does (for scripts written with a sacrificial character at each line's end);
    /// also DISKSHADOW_LF_CHOP=1. Off by default; a CR LF script is read as it is.
    #[arg(long = "lf-chop")]
    pub lf_chop: bool,

    /// Parse SCRIPT only and report every syntax error (exit status 2 if any).
    #[arg(long, value_name = "SCRIPT", conflicts_with = "script")]
    pub check: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Subcommands>,
}

#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Read, write and describe volumes and shadow copies through the engine.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Map drive letters to image files (volumes) or directories (exposure targets).
    #[command(subcommand)]
    Drive(DriveCommand),
    /// Storage arrays this store (host) is attached to: where hardware shadow copies live.
    #[command(subcommand)]
    Array(ArrayCommand),
    /// Check the store's catalog and diff areas; changes nothing.
    CheckStore(CheckStoreArgs),
    /// Writers registered in the store.
    #[command(subcommand)]
    Writer(WriterCommand),
    /// The service that owns the store (started on demand by every requester).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List shadow copies, writers or providers, as the shell's `list` does (or as JSON).
    List {
        #[arg(value_enum)]
        what: ListWhat,
        /// Machine-readable output instead of DiskShadow's layout.
        #[arg(long)]
        json: bool,
    },
}

/// What `diskshadow list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListWhat {
    Shadows,
    Writers,
    Providers,
}

#[derive(Debug, Subcommand)]
pub enum WriterCommand {
    /// Drive a writer through a full backup, an abort after freeze, a freeze timeout and a
    /// restore, and report every breach of the writer protocol. WRITER is a registration
    /// file, or the name or ID of a writer registered in the store.
    Check { writer: String },
    /// Register an in-box writer: write its TOML file into the store's writers/ directory.
    #[command(subcommand)]
    Add(WriterAddCommand),
    /// List the registration files of the store, valid or not.
    List,
    /// Remove a registration, named by its writer name, its ID or its file name.
    Remove { name: String },
}

/// The in-box writers `writer add` registers (the `diskshadow-writer` program).
#[derive(Debug, Subcommand)]
pub enum WriterAddCommand {
    /// SQLite Writer for database files.
    Sqlite {
        #[arg(long = "db", value_name = "FILE", required = true, num_args = 1..)]
        databases: Vec<PathBuf>,
    },
    /// PostgreSQL Writer for one cluster.
    Postgresql {
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        #[arg(long, value_name = "DIR")]
        socket_dir: PathBuf,
        #[arg(long)]
        port: Option<u16>,
    },
    /// MySQL Writer for a MariaDB or MySQL server.
    Mysql {
        #[arg(long, value_name = "FILE")]
        socket: PathBuf,
        #[arg(long)]
        user: Option<String>,
    },
    /// File System Writer for file systems mounted from volumes.
    Filesystem {
        /// `DEVICE=VOLUME` for a block device that is not a loop device (repeatable).
        #[arg(long = "device", value_name = "DEVICE=VOLUME")]
        devices: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Run the service in the foreground (requesters start it this way when none runs).
    Run {
        /// Exit after this many seconds with no requester, exposure or attachment
        /// (default: $DISKSHADOW_IDLE_TIMEOUT, else 180, as the VSS service).
        #[arg(long, value_name = "SECONDS")]
        idle_timeout: Option<u64>,
    },
    /// Show whether the service runs, its pid, uptime and sessions; exit status 1 when none
    /// runs.
    Status {
        /// Only the status as JSON (`null` when no service runs).
        #[arg(long)]
        json: bool,
    },
    /// Ask the service to stop once its running requests finish.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Write FILE (or standard input) at BYTES; shadows keep what they show.
    Write {
        /// An image path, a mapped drive letter (C:) or a volume GUID.
        volume: String,
        #[arg(long, value_name = "BYTES", value_parser = parse_byte_count)]
        offset: u64,
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Read a volume or a shadow copy ({GUID}) to FILE or standard output.
    Read {
        target: String,
        #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = parse_byte_count)]
        offset: u64,
        /// Defaults to the rest of the volume.
        #[arg(long, value_name = "BYTES", value_parser = parse_byte_count)]
        length: Option<u64>,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Leave holes in a file output where the volume has holes or blocks of zeros (the
        /// default for files; a pipe gets every byte).
        #[arg(long, overrides_with = "no_sparse")]
        sparse: bool,
        /// Write every byte into a file output, zeros too.
        #[arg(long, overrides_with = "sparse")]
        no_sparse: bool,
    },
    /// Describe a volume or a shadow copy.
    Info {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Serve a live volume read-write, every write passing the provider: TARGET is an NBD URL
    /// (nbd://127.0.0.1:PORT/NAME, nbd+unix:///NAME?socket=PATH), a share (\\host\NAME), or a
    /// directory (a FUSE file).
    Attach { volume: String, target: String },
    /// End an attachment, named by its volume or its target.
    Detach { target: String },
    /// List the attached volumes.
    Attachments,
    /// Register an image file as a volume now, choosing its copy-on-write chunk size (a power
    /// of two from 4K to 1M; default 64K). Volumes are otherwise registered on first use.
    Register {
        image: String,
        #[arg(long, value_name = "BYTES", value_parser = parse_chunk_size)]
        chunk_size: Option<u32>,
        /// The provider of its shadow copies unless `add volume ... provider {ID}` names one:
        /// cow (copy-on-write, the default), row (redirect-on-write), plex (full copy) or a
        /// provider ID from `list providers`.
        #[arg(long, value_name = "PROVIDER", value_parser = parse_provider)]
        provider: Option<ProviderId>,
    },
}

/// `cow`, `row`, `plex` or a provider ID.
pub fn parse_provider(text: &str) -> Result<ProviderId, String> {
    crate::engine::core::provider_by_name(text)
        .map(|provider| provider.id())
        .ok_or_else(|| {
            format!(
                "unknown provider '{text}'; use cow (copy-on-write), row (redirect-on-write), \
                 plex (full copy) or a provider ID from `diskshadow list providers`"
            )
        })
}

/// A byte count: a number, or one with a binary suffix (`512`, `64K`, `1M`, `2G`, `1T`; `KiB`,
/// `MiB`… and `KB`, `MB`… mean the same).
pub fn parse_byte_count(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let trimmed = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B').filter(|rest| !rest.is_empty()))
        .unwrap_or(&upper);
    let (number, shift) = match trimmed.chars().last() {
        Some('K') => (&trimmed[..trimmed.len() - 1], 10),
        Some('M') => (&trimmed[..trimmed.len() - 1], 20),
        Some('G') => (&trimmed[..trimmed.len() - 1], 30),
        Some('T') => (&trimmed[..trimmed.len() - 1], 40),
        _ => (trimmed, 0),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count such as 4096, 64K, 1M or 2G"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `16K`, `64k`, `1M` or a number of bytes.
pub fn parse_chunk_size(text: &str) -> Result<u32, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (number, multiplier) = match upper.strip_suffix('K') {
        Some(number) => (number, 1024),
        None => match upper.strip_suffix('M') {
            Some(number) => (number, 1024 * 1024),
            None => (upper.as_str(), 1),
        },
    };
    let value: u32 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 16K or 1M"))?;
    let bytes = value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if !bytes.is_power_of_two() || !(4096..=1 << 20).contains(&bytes) {
        return Err(format!(
            "the chunk size must be a power of two from 4K to 1M, not {text}"
        ));
    }
    Ok(bytes)
}

/// Reports a failed request of a subcommand: the error and its help, on standard error.
pub fn fail(error: &ServiceError) -> i32 {
    eprintln!("error: {error}");
    if let Some(help) = &error.help {
        eprintln!("  help: {help}");
    }
    exit_status::COMMAND_FAILED
}

/// The directory relative paths of the command line are relative to.
pub fn base_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

#[cfg(test)]
mod byte_count_tests {
    use super::parse_byte_count;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_byte_count("4096"), Ok(4096));
        assert_eq!(parse_byte_count("64K"), Ok(64 << 10));
        assert_eq!(parse_byte_count("1m"), Ok(1 << 20));
        assert_eq!(parse_byte_count("2GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_count("3MB"), Ok(3 << 20));
        assert_eq!(parse_byte_count("1T"), Ok(1 << 40));
        assert!(parse_byte_count("x").is_err());
        assert!(parse_byte_count("99999999999T").is_err());
    }
}

#[derive(Debug, Subcommand)]
pub enum DriveCommand {
    /// List the drive map.
    List {
        /// As JSON: `[{"letter": "C", "kind": "volume", "path": "…"}]`.
        #[arg(long)]
        json: bool,
    },
    /// Map LETTER (e.g. C:) to an image file or a directory.
    Map { letter: String, target: PathBuf },
    /// Remove LETTER from the drive map.
    Unmap { letter: String },
}

#[derive(Debug, Subcommand)]
pub enum ArrayCommand {
    /// Attach this store to the array at DIR (a directory of LUN image files, possibly shared
    /// with other stores; the directory becomes an array if it is not one yet), or to the Ceph
    /// pool rbd:POOL of the cluster that --conf names.
    Attach {
        /// DIR, or rbd:POOL for a Ceph pool.
        #[arg(value_name = "DIR|rbd:POOL")]
        dir: PathBuf,
        /// The name this store gives the array (default: the array's own name; for a Ceph
        /// pool, the pool's name).
        #[arg(long)]
        name: Option<String>,
        /// The Ceph cluster's configuration file (ceph.conf); needed for rbd:POOL.
        #[arg(long, value_name = "FILE")]
        conf: Option<PathBuf>,
        /// The Ceph client ID to connect as (client.ID; default: admin).
        #[arg(long = "id", value_name = "CLIENT")]
        client_id: Option<String>,
    },
    /// List the arrays this store is attached to.
    List {
        /// As JSON: `[{"name": …, "id": …, "path": …, "hosts": […], "shadow_luns": N}]`.
        #[arg(long)]
        json: bool,
    },
    /// Detach this store from the array it calls NAME.
    Detach { name: String },
}

#[derive(Debug, Args)]
pub struct CheckStoreArgs {
    #[arg(long)]
    pub json: bool,
}

/// Accepts the Windows forms `/s`, `/l` and `/?` (any case) as `-s`, `-l` and `--help`, up to
/// the script name: what follows the script is its parameters and is left as written.
pub fn normalize_arguments(arguments: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut normalized = Vec::new();
    let mut after_script = false;
    let mut expect_script = false;
    for (index, argument) in arguments.into_iter().enumerate() {
        if index == 0 || after_script {
            normalized.push(argument);
            continue;
        }
        if expect_script {
            expect_script = false;
            after_script = true;
            normalized.push(argument);
            continue;
        }
        let text = argument.to_string_lossy().to_string();
        let replacement = match text.to_ascii_lowercase().as_str() {
            "/s" | "-s" | "--script" => {
                expect_script = true;
                Some("-s")
            }
            "/l" => Some("-l"),
            "/?" | "-?" => Some("--help"),
            _ => None,
        };
        normalized.push(replacement.map(OsString::from).unwrap_or(argument));
    }
    // After the script, `/l LOG` may still follow the parameters, as on Windows.
    let mut result = Vec::with_capacity(normalized.len());
    for argument in normalized {
        if argument.to_string_lossy().eq_ignore_ascii_case("/l") {
            result.push(OsString::from("-l"));
        } else {
            result.push(argument);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Cli {
        let arguments = normalize_arguments(arguments.iter().map(OsString::from));
        Cli::try_parse_from(arguments).expect("parses")
    }

    #[test]
    fn windows_switches_and_script_parameters() {
        let cli = parse(&[
            "diskshadow",
            "/s",
            "backup.dsh",
            "one",
            "two",
            "/l",
            "out.log",
        ]);
        assert_eq!(cli.script, vec!["backup.dsh", "one", "two"]);
        assert_eq!(cli.log, Some(PathBuf::from("out.log")));
        let cli = parse(&["diskshadow", "-l", "x.log", "-s", "a.dsh"]);
        assert_eq!(cli.script, vec!["a.dsh"]);
    }

    #[test]
    fn chunk_sizes_are_powers_of_two_from_4k_to_1m() {
        assert_eq!(parse_chunk_size("16K"), Ok(16384));
        assert_eq!(parse_chunk_size("1m"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("65536"), Ok(65536));
        assert!(parse_chunk_size("2K").is_err());
        assert!(parse_chunk_size("48K").is_err());
        assert!(parse_chunk_size("2M").is_err());
    }

    #[test]
    fn volume_subcommands_parse() {
        let cli = parse(&[
            "diskshadow",
            "--store",
            "/tmp/s",
            "volume",
            "read",
            "C:",
            "--length",
            "10",
        ]);
        assert!(matches!(
            cli.command,
            Some(Subcommands::Volume(VolumeCommand::Read {
                length: Some(10),
                ..
            }))
        ));
    }
}
