//! The vssadmin command line: `/Name=value` switches and MaxSizeSpecs.

use super::Failure;
use crate::service::ids::parse_guid;

/// `/Name=value` and `/Name` switches, names case-insensitive.
#[derive(Debug, Default)]
pub(super) struct Switches(Vec<(String, Option<String>)>);

impl Switches {
    pub(super) fn parse(words: &[String]) -> Result<Self, String> {
        let mut switches = Vec::new();
        for word in words {
            let Some(body) = word.strip_prefix('/').or_else(|| word.strip_prefix('-')) else {
                return Err(format!("Error: Invalid option value: '{word}'"));
            };
            match body.split_once('=') {
                Some((name, value)) => {
                    switches.push((name.to_ascii_lowercase(), Some(value.to_string())))
                }
                None => switches.push((body.to_ascii_lowercase(), None)),
            }
        }
        Ok(Self(switches))
    }

    pub(super) fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// A switch that must be given: `/For=…` is named `For` in the error.
    pub(super) fn required(&self, name: &str, shown: &str) -> Result<&str, Failure> {
        self.value(name)
            .ok_or_else(|| Failure::Usage(format!("Error: Missing /{shown} option.")))
    }

    /// A switch holding a GUID, if given.
    pub(super) fn guid(&self, name: &str) -> Result<Option<uuid::Uuid>, Failure> {
        match self.value(name) {
            None => Ok(None),
            Some(text) => parse_guid(text)
                .map(Some)
                .ok_or_else(|| Failure::Usage(format!("Error: Invalid option value: '{text}'"))),
        }
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    pub(super) fn check_allowed(&self, allowed: &[&str]) -> Result<(), String> {
        for (name, _) in &self.0 {
            if !allowed.contains(&name.as_str()) {
                return Err(format!("Error: Invalid option: '/{name}'"));
            }
        }
        Ok(())
    }
}

/// Parses a MaxSizeSpec: `UNBOUNDED`, `N%` of the volume, or bytes with an optional suffix
/// (KB…EB or B, K…E). Byte sizes must be 320 MB or more, as the Windows binary requires.
pub fn parse_max_size(spec: &str, volume_size: u64) -> Result<Option<u64>, String> {
    let text = spec.trim();
    if text.eq_ignore_ascii_case("unbounded") {
        return Ok(None);
    }
    if let Some(percent) = text.strip_suffix('%') {
        let value: f64 = percent
            .trim()
            .parse()
            .map_err(|_| format!("Error: Invalid option value: '{spec}'"))?;
        if !(0.0..=100.0).contains(&value) || value == 0.0 {
            return Err(format!(
                "Error: Invalid option value: '{spec}' (a percentage from 1 to 100)"
            ));
        }
        return Ok(Some(((volume_size as f64) * value / 100.0) as u64));
    }
    let upper = text.to_ascii_uppercase();
    let digits_end = upper
        .find(|character: char| !character.is_ascii_digit() && character != '.')
        .unwrap_or(upper.len());
    let (number, suffix) = upper.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("Error: Invalid option value: '{spec}'"))?;
    let multiplier: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        "T" | "TB" => 1 << 40,
        "P" | "PB" => 1 << 50,
        "E" | "EB" => 1 << 60,
        _ => return Err(format!("Error: Invalid option value: '{spec}'")),
    };
    let bytes = (number * multiplier as f64) as u64;
    if bytes < 320 << 20 {
        return Err(format!(
            "Error: Invalid option value: '{spec}'. MaxSizeSpec must be 320MB or greater, UNBOUNDED, or a percentage"
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_size_specs_follow_the_windows_binary() {
        assert_eq!(parse_max_size("UNBOUNDED", 1000), Ok(None));
        assert_eq!(parse_max_size("20%", 1000), Ok(Some(200)));
        assert_eq!(parse_max_size("2GB", 0), Ok(Some(2 << 30)));
        assert_eq!(parse_max_size("320M", 0), Ok(Some(320 << 20)));
        assert!(parse_max_size("100MB", 0).is_err());
        assert!(parse_max_size("12XB", 0).is_err());
        assert!(parse_max_size("0%", 100).is_err());
    }
}
