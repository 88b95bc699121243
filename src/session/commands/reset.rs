//! `reset`: releases this requester's volatile shadow copies and forgets the session state and aliases.

use super::super::state::SessionState;
use super::super::{CommandError, Session};

pub(super) fn reset(session: &mut Session<'_>) -> Result<(), CommandError> {
    let released = session.service.release_requester()?;
    session.state = SessionState::default();
    session.variables.clear_aliases();
    if !released.is_empty() {
        session.out(format!(
            "Released {} volatile shadow cop{}.",
            released.len(),
            if released.len() == 1 { "y" } else { "ies" }
        ));
    }
    Ok(())
}
