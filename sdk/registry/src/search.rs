//! Search ranking over an index (feature `server`): what the registry
//! server answers on `/api/v1/search`, and what the host's client runs
//! itself over a directory or `file://` registry.

use crate::{Index, IndexEntry, SearchHit, SearchPage};

/// Searches the index for `query` (whitespace-separated terms, matched
/// case-insensitively against name, keywords and description; every term
/// must match somewhere). Ranked: exact name, then name prefix, name
/// substring, keyword, description. An empty query lists every plugin by
/// name. `page` is 1-based; `per_page` is clamped to 1..=100.
pub fn search(index: &Index, query: &str, page: usize, per_page: usize) -> SearchPage {
    let per_page = per_page.clamp(1, 100);
    let page = page.max(1);
    let terms: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut hits: Vec<(u32, &String, &IndexEntry)> = index
        .plugins
        .iter()
        .filter_map(|(name, entry)| {
            let mut total = 0;
            for term in &terms {
                let score = term_score(name, entry, term);
                if score == 0 {
                    return None;
                }
                total += score;
            }
            Some((total, name, entry))
        })
        .collect();
    hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let total = hits.len();
    let hits = hits
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|(score, name, entry)| {
            let newest = index.versions(name).first().map(ToString::to_string);
            let reference = newest.as_ref().and_then(|v| entry.versions.get(v));
            SearchHit {
                capabilities: reference.and_then(|reference| reference.capabilities.clone()),
                floors: reference
                    .map(|reference| reference.floors.clone())
                    .unwrap_or_default(),
                deps: reference
                    .map(|reference| reference.deps.clone())
                    .unwrap_or_default(),
                name: name.clone(),
                version: newest.unwrap_or_default(),
                description: entry.description.clone(),
                keywords: entry.keywords.clone(),
                score,
            }
        })
        .collect();
    SearchPage {
        query: query.to_owned(),
        total,
        page,
        per_page,
        hits,
    }
}

fn term_score(name: &str, entry: &IndexEntry, term: &str) -> u32 {
    if name == term {
        100
    } else if name.starts_with(term) {
        60
    } else if name.contains(term) {
        40
    } else if entry.keywords.iter().any(|k| k.eq_ignore_ascii_case(term)) {
        30
    } else if entry
        .keywords
        .iter()
        .any(|k| k.to_lowercase().contains(term))
    {
        20
    } else if entry.description.to_lowercase().contains(term) {
        10
    } else {
        0
    }
}
