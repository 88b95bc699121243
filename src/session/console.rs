//! Where a session's output goes: a terminal (with an optional log file), or a transcript in
//! tests. The session decides what to say; the console decides how it reaches the user.

/// The output side of a session.
pub trait Console: Send {
    /// One line of normal output (no trailing newline).
    fn out(&mut self, line: &str);
    /// An error or warning, possibly several lines (no trailing newline).
    fn err(&mut self, text: &str);
    /// Long work started; `total` units expected.
    fn progress_begin(&mut self, what: &str, total: u64);
    fn progress_advance(&mut self, units: u64);
    fn progress_end(&mut self);
    /// Asks the user a question (step-through mode) and returns the answer line, or `None` when
    /// there is no one to answer (end of input).
    fn ask(&mut self, prompt: &str) -> Option<String>;
    /// As [`Console::ask`], but gives up at `deadline`. Consoles that cannot wait (transcripts,
    /// whose answers are given in advance) answer as `ask` does.
    fn ask_until(
        &mut self,
        prompt: &str,
        _deadline: std::time::Instant,
    ) -> Result<Option<String>, AskTimedOut> {
        Ok(self.ask(prompt))
    }
    /// A line the user typed at the interactive prompt: the `-l` log keeps it, as it keeps a
    /// script's `->` echo; the screen already shows it.
    fn typed(&mut self, _line: &str) {}
    /// Whether Ctrl-C was pressed since the last call (a script stops at the end of the running
    /// command); consoles without a keyboard are never interrupted.
    fn interrupted(&mut self) -> bool {
        false
    }
    /// Whether Ctrl-C was pressed, without clearing it (so that a script still stops after
    /// the command): a running request that can be stopped is asked to stop.
    fn stop_requested(&mut self) -> bool {
        false
    }
    /// Whether the running request can be stopped where that is safe (true from the service's
    /// word until the request ends), for what Ctrl-C is said to do.
    fn set_stoppable(&mut self, _stoppable: bool) {}
    /// Whether errors may use colour and Unicode art (a terminal), or must be plain.
    fn is_terminal(&self) -> bool {
        false
    }
}

/// No answer came before the deadline of [`Console::ask_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskTimedOut;

/// Collects everything, as a transcript: normal lines as they are, error lines prefixed with
/// `! `. Used by the transcript tests and by anything that wants a session's output as text.
#[derive(Debug, Default, Clone)]
pub struct TranscriptConsole {
    pub text: String,
    /// Answers to give to `ask`, in order; the questions and answers are part of the transcript.
    pub answers: std::collections::VecDeque<String>,
}

impl Console for TranscriptConsole {
    fn out(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn err(&mut self, text: &str) {
        for line in text.lines() {
            self.text.push_str("! ");
            self.text.push_str(line);
            self.text.push('\n');
        }
    }

    fn progress_begin(&mut self, _what: &str, _total: u64) {}
    fn progress_advance(&mut self, _units: u64) {}
    fn progress_end(&mut self) {}

    fn ask(&mut self, prompt: &str) -> Option<String> {
        let answer = self.answers.pop_front();
        self.text.push_str(prompt);
        self.text
            .push_str(answer.as_deref().unwrap_or("<end of input>"));
        self.text.push('\n');
        answer
    }
}
