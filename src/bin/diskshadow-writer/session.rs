//! A client program (`psql`, `mariadb`, `sqlite3`) kept open as a child process: statements go
//! to its input, and each batch ends with a marker on standard output and one on standard
//! error, so the writer knows when the batch is done and which error lines belong to it.
//!
//! **Invariant:** whatever the session holds on the server (a lock, a backup) is tied to the
//! client's connection, and the client ends when its input closes: when this session is
//! dropped, when the writer exits, or when the writer is killed (the pipe closes with it).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a client program is told to mark the end of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    Psql,
    Mariadb,
    Sqlite,
}

impl Dialect {
    fn markers(self, token: &str) -> String {
        match self {
            Dialect::Psql => format!("\\echo {token}\n\\warn {token}\n"),
            // The second statement fails on purpose: its error line is the stderr marker.
            Dialect::Mariadb => format!("SELECT '{token}';\nSELECT {token};\n"),
            Dialect::Sqlite => format!(".print {token}\nSELECT {token};\n"),
        }
    }

    fn is_error(self, line: &str) -> bool {
        match self {
            Dialect::Psql => ["ERROR:", "FATAL:", "PANIC:", "error:"]
                .iter()
                .any(|word| line.contains(word)),
            Dialect::Mariadb => line.starts_with("ERROR"),
            Dialect::Sqlite => line.to_ascii_lowercase().contains("error"),
        }
    }
}

enum Line {
    Out(String),
    Err(String),
    OutClosed,
}

#[derive(Debug)]
pub enum SessionError {
    /// The program could not be started.
    Start(String),
    /// The program ended (it could not connect, or the server went away); its last words.
    Ended(String),
    /// A statement failed; the client's error lines.
    Statement(String),
    /// The batch did not finish in time; the client was killed, which releases its holds.
    Timeout(Duration),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Start(message) => write!(formatter, "cannot start the client: {message}"),
            SessionError::Ended(message) => write!(formatter, "the client ended: {message}"),
            SessionError::Statement(message) => write!(formatter, "{message}"),
            SessionError::Timeout(limit) => {
                write!(formatter, "no answer within {} ms", limit.as_millis())
            }
        }
    }
}

pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    dialect: Dialect,
    batches: u64,
    alive: bool,
}

fn forward<R: Read + Send + 'static>(
    reader: R,
    sender: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
    closed: Option<Line>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if sender.send(wrap(line)).is_err() {
                return;
            }
        }
        if let Some(closed) = closed {
            let _ = sender.send(closed);
        }
    });
}

impl Session {
    /// Starts `command` (the client with its connection options).
    pub fn start(mut command: Command, dialect: Dialect) -> Result<Self, SessionError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the client is killed if this writer dies even
        // before its input pipe is seen closed.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let program = format!("{:?}", command.get_program());
        let mut child = command
            .spawn()
            .map_err(|error| SessionError::Start(format!("{program}: {error}")))?;
        let (sender, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SessionError::Start("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| SessionError::Start("no stderr".into()))?;
        forward(stdout, sender.clone(), Line::Out, Some(Line::OutClosed));
        forward(stderr, sender, Line::Err, None);
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines,
            dialect,
            batches: 0,
            alive: true,
        })
    }

    pub fn is_alive(&mut self) -> bool {
        self.alive && matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs `statements` and returns what they printed on standard output.
    pub fn run(&mut self, statements: &str, limit: Duration) -> Result<Vec<String>, SessionError> {
        self.batches += 1;
        let token = format!("__diskshadow_end_{}__", self.batches);
        let mut text = statements.trim_end().to_string();
        text.push('\n');
        text.push_str(&self.dialect.markers(&token));
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("the session is closed")),
        };
        let started = Instant::now();
        let mut output = Vec::new();
        let mut errors = Vec::new();
        let mut stderr_tail = Vec::new();
        let (mut out_done, mut err_done) = (false, false);
        let failed_write = written.err();
        while !(out_done && err_done) {
            let left = limit.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(Line::Out(line)) if line.trim() == token => out_done = true,
                Ok(Line::Out(line)) => output.push(line),
                Ok(Line::Err(line)) if line.contains(&token) => err_done = true,
                Ok(Line::Err(line)) => {
                    // Context lines (indented) and what is left of earlier markers are not
                    // errors of this batch.
                    let context =
                        line.starts_with(char::is_whitespace) || line.contains("__diskshadow_end_");
                    if !context && self.dialect.is_error(&line) {
                        errors.push(line.clone());
                    }
                    stderr_tail.push(line);
                }
                Ok(Line::OutClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Let the last error lines arrive before reporting them.
                    while let Ok(Line::Err(line)) =
                        self.lines.recv_timeout(Duration::from_millis(200))
                    {
                        stderr_tail.push(line);
                    }
                    self.close();
                    let mut message = stderr_tail.join(" ").trim().to_string();
                    if message.is_empty() {
                        message = failed_write
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_else(|| "it exited".to_string());
                    }
                    return Err(SessionError::Ended(message));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.close();
                    return Err(SessionError::Timeout(limit));
                }
            }
        }
        if errors.is_empty() {
            Ok(output)
        } else {
            Err(SessionError::Statement(errors.join(" ")))
        }
    }

    /// Ends the client now: its connection closes and the server releases what it held.
    pub fn close(&mut self) {
        self.alive = false;
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}
