//! The console of a real process: stdout and stderr, a copy of everything in the `-l` log, and
//! indicatif progress only when stderr is a terminal.

use std::fs::File;
use std::io::{IsTerminal, Write};

use indicatif::ProgressBar;

use super::interrupt::Waited;
use crate::session::console::{AskTimedOut, Console};

pub struct TerminalConsole {
    log: Option<File>,
    terminal: bool,
    progress: Option<ProgressBar>,
    /// What the running progress is about, to say what goes on after Ctrl-C.
    progress_what: String,
    interrupt_told: bool,
    /// The running request can be stopped (the service said so).
    stoppable: bool,
}

impl TerminalConsole {
    pub fn new(log: Option<File>) -> Self {
        Self {
            log,
            terminal: std::io::stderr().is_terminal(),
            progress: None,
            progress_what: String::new(),
            interrupt_told: false,
            stoppable: false,
        }
    }

    fn log_line(&mut self, line: &str) {
        if let Some(log) = &mut self.log {
            // A log that cannot be written must not stop the work it records.
            let _ = writeln!(log, "{line}");
        }
    }
}

impl TerminalConsole {
    fn ask_until_inner(
        &mut self,
        prompt: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<String>, AskTimedOut> {
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "{prompt}");
        let _ = stdout.flush();
        drop(stdout);
        match super::interrupt::wait_for_input(deadline) {
            Waited::Ready => {}
            Waited::Interrupted => {
                super::interrupt::take();
                let line = "Ctrl-C: aborting.";
                println!("\n{line}");
                self.log_line(&format!("{prompt}^C"));
                self.log_line(line);
                // Ctrl-C answers "abort": the writers get their abort, nothing is left frozen.
                return Ok(Some("abort".to_string()));
            }
            Waited::TimedOut => {
                println!();
                self.log_line(&format!("{prompt}(no answer before the deadline)"));
                return Err(AskTimedOut);
            }
        }
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(0) | Err(_) => Ok(None),
            Ok(_) => {
                let answer = answer.trim_end_matches(['\r', '\n']).to_string();
                self.log_line(&format!("{prompt}{answer}"));
                Ok(Some(answer))
            }
        }
    }
}

impl Console for TerminalConsole {
    fn out(&mut self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        drop(stdout);
        self.log_line(line);
    }

    fn err(&mut self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{text}");
        drop(stderr);
        let plain = strip_ansi(text);
        self.log_line(&plain);
    }

    fn progress_begin(&mut self, what: &str, total: u64) {
        self.progress = super::progress_bar(what, Some(total));
        self.progress_what = what.to_string();
        self.interrupt_told = false;
    }

    fn progress_advance(&mut self, units: u64) {
        if let Some(bar) = &self.progress {
            bar.inc(units);
        }
        if super::interrupt::pending() && !self.interrupt_told {
            self.interrupt_told = true;
            let line = if self.stoppable {
                format!(
                    "Ctrl-C: the {} stops at its next safe point.",
                    self.progress_what
                )
            } else {
                format!(
                    "Ctrl-C: {} cannot be stopped safely once begun; it goes on to its end.",
                    self.progress_what
                )
            };
            match &self.progress {
                Some(bar) => bar.println(&line),
                None => eprintln!("{line}"),
            }
            self.log_line(&line);
        }
    }

    fn progress_end(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }

    fn ask(&mut self, prompt: &str) -> Option<String> {
        self.ask_until_inner(prompt, None).unwrap_or(None)
    }

    fn ask_until(
        &mut self,
        prompt: &str,
        deadline: std::time::Instant,
    ) -> Result<Option<String>, AskTimedOut> {
        self.ask_until_inner(prompt, Some(deadline))
    }

    fn is_terminal(&self) -> bool {
        self.terminal
    }

    fn typed(&mut self, line: &str) {
        self.log_line(&format!("DISKSHADOW> {line}"));
    }

    fn interrupted(&mut self) -> bool {
        super::interrupt::take()
    }

    fn stop_requested(&mut self) -> bool {
        super::interrupt::pending()
    }

    fn set_stoppable(&mut self, stoppable: bool) {
        self.stoppable = stoppable;
    }
}

/// Removes ANSI colour sequences, so the log holds plain text.
fn strip_ansi(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for following in chars.by_ref() {
                if following.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            output.push(character);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_sequences_are_removed_from_the_log() {
        assert_eq!(super::strip_ansi("\u{1b}[31merror\u{1b}[0m: x"), "error: x");
    }
}
