//! Putting a volume back: `revert` (in place) and `resync` (each `add shadow` pair).

use super::super::observer::console_observer;
use super::super::{CommandError, Session};
use crate::syntax::ast::Word;

pub(super) fn revert(session: &mut Session<'_>, shadow: &Word) -> Result<(), CommandError> {
    let id = session.shadow_argument(shadow, "revert")?;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.revert(id, false, &mut observer)?;
    session.out(format!("The volume was reverted to the shadow copy {id}."));
    Ok(())
}

/// `resync [novolcheck] [revert_originalsig]`: LUN resync of every `add shadow` pair, in
/// order. The pairs stay, so the same resync can be run again.
pub(super) fn resync(
    session: &mut Session<'_>,
    no_volume_check: bool,
    revert_original_signature: bool,
) -> Result<(), CommandError> {
    if session.state.resync_set.is_empty() {
        return Err(CommandError::bad_state(
            "no shadow copy was added for resync",
            "pair a shadow copy with its target first: `add shadow <shadow ID> [<target volume>]`",
        ));
    }
    let pairs = session.state.resync_set.clone();
    for pair in &pairs {
        let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
        let outcome = session.service.resync(
            pair.shadow,
            pair.target.as_ref().map(|volume| volume.id),
            no_volume_check,
            &mut observer,
        )?;
        session.out(format!(
            "The shadow copy {} was resynchronized onto the volume {}: {} bytes copied, {} bytes left as holes, {} chunks written during the resync kept.",
            pair.shadow,
            pair.destination().display_name(),
            outcome.bytes_copied,
            outcome.bytes_punched,
            outcome.chunks_written_during
        ));
    }
    if revert_original_signature {
        session.out(
            "REVERT_ORIGINALSIG: image-file volumes carry no disk signature; each target keeps its own volume ID.",
        );
    }
    Ok(())
}
