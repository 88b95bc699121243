//! Transportable shadow copy sets: `import`, `mask` and `break`.

use super::super::render;
use super::super::{CommandError, Session};
use super::SessionAliases;
use crate::syntax::ast::Word;

pub(super) fn import(session: &mut Session<'_>) -> Result<(), CommandError> {
    let imported = session.service.import()?;
    let Some(set_id) = imported.first().map(|shadow| shadow.set_id) else {
        return Ok(());
    };
    session.out(format!(
        "The shadow copy set {set_id} was imported: {} shadow copies.",
        imported.len()
    ));
    session.out(String::new());
    let lines = render::shadow_listing(
        &format!("Querying all shadow copies with the shadow copy set ID {set_id}"),
        &imported,
        &SessionAliases(&session.variables),
        session.config.time_zone,
    );
    session.out_lines(lines);
    Ok(())
}

pub(super) fn mask(session: &mut Session<'_>, shadow_set: &Word) -> Result<(), CommandError> {
    let set_id = session.set_argument(shadow_set, "mask")?;
    let masked = session.service.mask(set_id)?;
    for shadow in &masked {
        session.out(format!(
            "The shadow copy {} was removed from this host.",
            shadow.id
        ));
    }
    session.out(format!("Number of shadow copies masked: {}", masked.len()));
    Ok(())
}

pub(super) fn break_set(
    session: &mut Session<'_>,
    writable: bool,
    shadow_set: &Word,
) -> Result<(), CommandError> {
    let set_id = session.set_argument(shadow_set, "break")?;
    let volumes = session.service.break_set(set_id, writable)?;
    let access = if writable { "read-write" } else { "read-only" };
    for volume in &volumes {
        session.out(format!(
            "The shadow copy LUN is now the volume {} ({access}).",
            volume.display_name()
        ));
    }
    session.out(format!("Number of shadow copies broken: {}", volumes.len()));
    Ok(())
}
