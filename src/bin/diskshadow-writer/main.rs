//! `diskshadow-writer`: the in-box writers for real applications, each speaking the protocol of
//! `spec/writer-protocol.md`. One program with one subcommand per writer (`postgresql`,
//! `mysql`, `sqlite`, `filesystem`) so that the protocol loop, the per-event timeouts and the
//! kept-open client sessions are written once and built once; each registration runs its own
//! process (`command = ["diskshadow-writer", "sqlite", "--db", ...]`), so the writers stay
//! independent programs at run time.
//!
//! Every writer keeps what it holds (a backup mode, a lock, a frozen file system) tied to a
//! session that ends when this process ends: a client child process (`psql`, `mariadb`,
//! `sqlite3`) whose input closes when the writer dies, or a holder child that thaws on end of
//! input. So no lock or backup mode outlives an abort, a crash or a deadline overrun.

mod filesystem;
mod mounts;
mod mysql;
mod nbd;
mod postgresql;
mod protocol;
mod session;
mod sqlite;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "diskshadow-writer",
    about = "The in-box VSS writers of diskshadow: PostgreSQL, MariaDB/MySQL, SQLite, file systems"
)]
struct Arguments {
    /// The longest any event but freeze may take (freeze gets the service's deadline).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true)]
    event_timeout: u64,
    #[command(subcommand)]
    writer: WriterKind,
}

#[derive(Debug, Subcommand)]
enum WriterKind {
    /// PostgreSQL Writer: CHECKPOINT, then a non-exclusive base backup around the freeze.
    Postgresql(postgresql::Options),
    /// MySQL Writer (MariaDB or MySQL): FLUSH TABLES WITH READ LOCK held through the freeze.
    Mysql(mysql::Options),
    /// SQLite Writer: a checkpoint and a write lock (BEGIN IMMEDIATE) through the freeze.
    Sqlite(sqlite::Options),
    /// File System Writer: FIFREEZE on every file system mounted from a volume of the set.
    Filesystem(filesystem::Options),
    /// Internal: holds file systems frozen until its input closes or its deadline passes.
    #[command(hide = true)]
    FreezeHolder(filesystem::HolderOptions),
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let event_timeout = Duration::from_secs(arguments.event_timeout.max(1));
    let result = match arguments.writer {
        WriterKind::Postgresql(options) => {
            protocol::serve(postgresql::PostgresWriter::new(options), event_timeout)
        }
        WriterKind::Mysql(options) => {
            protocol::serve(mysql::MysqlWriter::new(options), event_timeout)
        }
        WriterKind::Sqlite(options) => {
            protocol::serve(sqlite::SqliteWriter::new(options), event_timeout)
        }
        WriterKind::Filesystem(options) => {
            protocol::serve(filesystem::FileSystemWriter::new(options), event_timeout)
        }
        WriterKind::FreezeHolder(options) => filesystem::run_holder(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("diskshadow-writer: {message}");
            ExitCode::from(2)
        }
    }
}
