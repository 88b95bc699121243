//! `list providers|shadows|writers`, as DiskShadow lays them out or, with `--json`, as JSON.

use super::super::render;
use super::super::{CommandError, Session};
use super::SessionAliases;
use crate::service::model::ShadowInfo;
use crate::service::vss::VssCode;
use crate::session::writer_listing::{self, WriterListing};
use crate::syntax::ast::{ListCommand, ShadowSelector, WriterListDetail};

pub(super) fn list(
    session: &mut Session<'_>,
    list: &ListCommand,
    json: bool,
) -> Result<(), CommandError> {
    if json {
        return list_json(session, list);
    }
    match list {
        ListCommand::Providers => {
            let providers = session.service.providers()?;
            session.out_lines(render::provider_listing(&providers));
        }
        ListCommand::Shadows(selector) => {
            let all = session.service.shadows()?;
            let (header, shadows): (String, Vec<ShadowInfo>) = match selector {
                ShadowSelector::All => (
                    "Querying all shadow copies on the computer ...".to_string(),
                    all,
                ),
                ShadowSelector::Set(word) => {
                    let set = session.set_argument(word, "list")?;
                    (
                        format!("Querying all shadow copies with the shadow copy set ID {set}"),
                        all.into_iter()
                            .filter(|shadow| shadow.set_id == set)
                            .collect(),
                    )
                }
                ShadowSelector::Id(word) => {
                    let id = session.shadow_argument(word, "list")?;
                    (
                        format!("Querying shadow copy with ID {id}"),
                        all.into_iter().filter(|shadow| shadow.id == id).collect(),
                    )
                }
            };
            let mut lines = render::shadow_listing(
                &header,
                &shadows,
                &SessionAliases(&session.variables),
                session.config.time_zone,
            );
            if matches!(selector, ShadowSelector::All) {
                // Nothing may remove a shadow without saying so: the newest deletion to fit
                // each volume's diff-area limit is told after the listing.
                for storage in session.service.storage()? {
                    if let Some(event) = storage.recent_deletions.last() {
                        lines.push(format!("Note: {}", event.describe()));
                    }
                }
            }
            session.out_lines(lines);
        }
        ListCommand::Writers(detail) => {
            let listing = match detail {
                WriterListDetail::Metadata => WriterListing::Metadata,
                WriterListDetail::Detailed => WriterListing::Detailed,
                WriterListDetail::Status => WriterListing::Status,
            };
            let report = session
                .service
                .list_writers(listing != WriterListing::Status)?;
            let lines = writer_listing::listing_lines(&report, listing);
            session.out_lines(lines);
        }
    }
    Ok(())
}

/// `list … --json`: the same selection as JSON (the writers as their status), as
/// `diskshadow list … --json` prints it.
fn list_json(session: &mut Session<'_>, list: &ListCommand) -> Result<(), CommandError> {
    let value = match list {
        ListCommand::Providers => serde_json::to_value(session.service.providers()?),
        ListCommand::Writers(_) => serde_json::to_value(session.service.writer_statuses()?),
        ListCommand::Shadows(selector) => {
            let mut shadows = session.service.shadows()?;
            match selector {
                ShadowSelector::All => {}
                ShadowSelector::Set(word) => {
                    let set = session.set_argument(word, "list")?;
                    shadows.retain(|shadow| shadow.set_id == set);
                }
                ShadowSelector::Id(word) => {
                    let id = session.shadow_argument(word, "list")?;
                    shadows.retain(|shadow| shadow.id == id);
                }
            }
            serde_json::to_value(shadows)
        }
    };
    let text = value
        .and_then(|value| serde_json::to_string_pretty(&value))
        .map_err(|error| {
            CommandError::new(format!("the listing cannot be written as JSON: {error}"))
                .with_code(VssCode::VSS_E_UNEXPECTED)
        })?;
    session.out_lines(text.lines().map(str::to_string));
    Ok(())
}
