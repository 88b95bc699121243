//! Runs the third-party readers of a metadata file (the `cab` crate, quick-xml) so that a panic
//! on a hostile or corrupt file becomes an error, not the end of the process. The default
//! panic hook would print the panic to stderr, which the engine must not do, so a chained hook
//! stays quiet for panics inside [`catch_panic`] and leaves every other panic to the hook that
//! was installed before.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `work`, returning what it returns, or the panic's message if it panicked. `work` only
/// reads a file and builds values it returns, so nothing it shares is left half-changed.
pub fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    GUARDED.with(|guarded| guarded.set(guarded.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    GUARDED.with(|guarded| guarded.set(guarded.get().saturating_sub(1)));
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        let values: Vec<u8> = Vec::new();
        let index = values.len() + 3;
        let outcome = catch_panic(|| values[index]);
        let message = outcome.expect_err("panicked");
        assert!(message.contains("index out of bounds"), "{message}");
        assert_eq!(catch_panic(|| 7), Ok(7));
    }
}
