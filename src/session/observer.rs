//! The session's [`ServiceObserver`]: service reports rendered through the console (verbose lines,
//! the writer trace, progress, the Ctrl-C stop), and the step prompt
//! ([`super::step_prompt`]) when `set step on` holds each writer event.

use super::state::SessionState;
use crate::service::ServiceObserver;

/// Renders service reports through the session's console: verbose lines (what DiskShadow's
/// verbose mode prints) only when verbose, the writer trace only with `set trace on`.
pub(super) struct ConsoleObserver<'c> {
    console: &'c mut dyn super::console::Console,
    verbose: bool,
    trace: bool,
    show_latencies: bool,
    step_hold: bool,
}

/// The observer for a command's service call. It takes the session's parts, not the session, so
/// the service can be borrowed beside it.
pub(super) fn console_observer<'c>(
    console: &'c mut dyn super::console::Console,
    state: &SessionState,
    config: &super::SessionConfig,
) -> ConsoleObserver<'c> {
    ConsoleObserver {
        console,
        verbose: state.verbose,
        trace: state.trace,
        show_latencies: config.show_latencies,
        step_hold: state.step_hold,
    }
}

impl ServiceObserver for ConsoleObserver<'_> {
    fn verbose_line(&mut self, line: &str) {
        if self.verbose {
            self.console.out(line);
        }
    }
    fn trace_line(&mut self, line: &str) {
        if self.trace {
            self.console.out(line);
        }
    }
    fn line(&mut self, line: &str) {
        self.console.out(line);
    }
    fn progress_begin(&mut self, what: &str, total: u64) {
        self.console.progress_begin(what, total);
    }
    fn progress_advance(&mut self, units: u64) {
        self.console.progress_advance(units);
    }
    fn progress_end(&mut self) {
        self.console.progress_end();
    }
    fn cancellable(&mut self, _operation: crate::service::OperationId) {
        self.console.set_stoppable(true);
    }
    fn stop_requested(&mut self) -> bool {
        self.console.stop_requested()
    }
    fn writer_reply(&mut self, reply: &crate::service::events::WriterReply) {
        if self.trace {
            self.console.out(&reply.line(self.show_latencies));
        }
    }
    fn step(
        &mut self,
        event: &str,
        writers: &[crate::service::WriterStatusView],
        freeze_left: Option<std::time::Duration>,
    ) -> bool {
        super::step_prompt::ask(
            &mut *self.console,
            self.step_hold,
            event,
            writers,
            freeze_left,
        )
    }
}
