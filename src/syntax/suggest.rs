//! "Did you mean": the keyword a mistyped word most likely meant, for the diagnostics of both
//! the lowering (`lower.rs`) and the line diagnosis (`diagnose.rs`).

/// The candidate `word` was most likely meant to be: the only candidate it is a prefix of, or
/// the closest by Damerau-Levenshtein distance within a tolerance that grows with its length.
pub(crate) fn suggest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let lower = word.to_lowercase();
    if lower.is_empty() {
        return None;
    }
    let prefixed: Vec<&'static str> = candidates
        .iter()
        .copied()
        .filter(|candidate| candidate.starts_with(&lower))
        .collect();
    if lower.chars().count() >= 2 && prefixed.len() == 1 {
        return prefixed.first().copied();
    }
    let tolerance = match lower.chars().count() {
        0..=3 => 1,
        4..=6 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .copied()
        .map(|candidate| (strsim::damerau_levenshtein(&lower, candidate), candidate))
        .filter(|(distance, _)| *distance <= tolerance)
        .min_by(|(left_distance, left), (right_distance, right)| {
            left_distance.cmp(right_distance).then_with(|| {
                strsim::jaro_winkler(&lower, right).total_cmp(&strsim::jaro_winkler(&lower, left))
            })
        })
        .map(|(_, candidate)| candidate)
}
