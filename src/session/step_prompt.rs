//! The step prompt of `set step on`: before each writer event the user continues, looks at the
//! writers or aborts. Frozen writers wait on it, so it says how long they may and, unless `set
//! step on hold`, aborts the set at their freeze deadline.

use super::console::{AskTimedOut, Console};

/// Asks whether the writer event `event` may go ahead; `s` shows the `writers`' states. `freeze_left` is the time left before the frozen writers' deadline, when they are
/// frozen. Returns false to abort the shadow copy set.
pub(super) fn ask(
    console: &mut dyn Console,
    step_hold: bool,
    event: &str,
    writers: &[crate::service::WriterStatusView],
    freeze_left: Option<std::time::Duration>,
) -> bool {
    console.out(&format!("Step: the next writer event is {event}."));
    // Frozen writers wait on this prompt: say how long they may, and abort at their freeze
    // deadline unless `set step on hold` asked to keep them frozen past it.
    let deadline = freeze_left.map(|left| std::time::Instant::now() + left);
    if let Some(left) = freeze_left {
        let then = if step_hold {
            "they stay frozen past it (set step on hold)"
        } else {
            "the set is aborted then unless you answer (set step on hold keeps them frozen)"
        };
        console.out(&format!(
            "Warning: the writers are frozen; their freeze deadline passes in {} s, and {then}.",
            left.as_secs_f64().ceil() as u64
        ));
    }
    let mut warned_past_deadline = false;
    loop {
        let prompt = "Continue, show writer status, or abort? [c/s/a] ";
        let answer = match deadline {
            Some(deadline) if !warned_past_deadline => match console.ask_until(prompt, deadline) {
                Ok(answer) => answer,
                Err(AskTimedOut) if step_hold => {
                    warned_past_deadline = true;
                    console.out(
                            "Warning: the freeze deadline has passed; the writers are held frozen (set step on hold).",
                        );
                    continue;
                }
                Err(AskTimedOut) => {
                    console.out(
                            "The freeze deadline passed with the writers frozen: aborting the shadow copy set.",
                        );
                    return false;
                }
            },
            _ => console.ask(prompt),
        };
        match answer
            .as_deref()
            .map(|text| text.trim().to_ascii_lowercase())
        {
            Some(text) if text.is_empty() || text == "c" || text == "continue" => return true,
            Some(text) if text == "s" || text == "status" => {
                for line in super::writer_listing::status_lines(writers) {
                    console.out(&line);
                }
            }
            Some(text) if text == "a" || text == "abort" => return false,
            Some(other) => console.out(&format!(
                "`{other}` is not an answer: c continues, s shows the writers, a aborts."
            )),
            // No one to answer: abort rather than leave writers waiting.
            None => return false,
        }
    }
}
