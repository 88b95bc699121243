//! `diskshadow list shadows|writers|providers [--json]`.

use crate::service::{ServiceError, ShadowService};
use crate::session::render::TimeZoneChoice;

use super::ListWhat;

/// No aliases outside a session: shadows are listed by ID alone.
struct NoAliases;

impl crate::session::render::AliasLookup for NoAliases {
    fn alias_for(&self, _value: &str) -> Option<String> {
        None
    }
}

/// `diskshadow list shadows|writers|providers [--json]`.
pub fn list(
    service: &mut dyn ShadowService,
    what: ListWhat,
    json: bool,
) -> Result<(), ServiceError> {
    use crate::session::render;
    let to_json = |value: serde_json::Result<String>| {
        value.map_err(|error| {
            ServiceError::io(format!("the listing cannot be written as JSON: {error}"))
        })
    };
    let lines = match (what, json) {
        (ListWhat::Shadows, true) => {
            vec![to_json(serde_json::to_string_pretty(&service.shadows()?))?]
        }
        (ListWhat::Shadows, false) => render::shadow_listing(
            "Querying all shadow copies on the computer ...",
            &service.shadows()?,
            &NoAliases,
            TimeZoneChoice::Local,
        ),
        (ListWhat::Writers, true) => {
            vec![to_json(serde_json::to_string_pretty(
                &service.writer_statuses()?,
            ))?]
        }
        (ListWhat::Writers, false) => crate::session::writer_listing::listing_lines(
            &service.list_writers(false)?,
            crate::session::writer_listing::WriterListing::Status,
        ),
        (ListWhat::Providers, true) => {
            vec![to_json(serde_json::to_string_pretty(
                &service.providers()?,
            ))?]
        }
        (ListWhat::Providers, false) => render::provider_listing(&service.providers()?),
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
