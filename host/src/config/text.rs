//! The value syntaxes of `backworks.yaml` that other commands share
//! (durations, sizes), and `${VAR}` substitution.

use std::time::Duration;

/// The longest duration `parse_duration` accepts: a year. Every deadline the
/// host computes (`Instant::now() + timeout`) then stays far from overflow,
/// which would panic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `<n>ms`, `<n>s`, `<n>m` or `<n>h`, more than zero and at most a year
/// (`MAX_DURATION`): the durations of `backworks.yaml` and of
/// `backworks marketplace serve`'s timeouts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration; write a whole number and a unit, `ms`, `s`, `m` or `h`, like \"500ms\", \"5s\", \"1m\" or \"1h\""
        )
    };
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(
            number
                .checked_mul(60)
                .ok_or_else(|| format!("{text:?} is too long a duration"))?,
        ),
        "h" => Duration::from_secs(
            number
                .checked_mul(3600)
                .ok_or_else(|| format!("{text:?} is too long a duration"))?,
        ),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is zero; a timeout must be more than zero"
        ));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a year; write at most \"8760h\""
        ));
    }
    Ok(duration)
}

/// `<n><unit>` with unit `B`, `KiB`, `MiB`, `GiB` (powers of 1024), `KB`,
/// `MB` or `GB` (powers of 1000), more than zero: `marketplace.max_download`
/// and `backworks marketplace serve --max-upload`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size; write a whole number and a unit, `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB` or `GB`, like \"256MiB\""
        )
    };
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large a size"))?;
    let multiplier: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let size = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large a size"))?;
    if size == 0 {
        return Err(format!(
            "{text:?} is zero; a size limit must be more than zero"
        ));
    }
    Ok(size)
}

/// Why `${...}` substitution failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SubstError {
    /// The variable is not set and has no default.
    Missing(String),
    /// `${` without `}`.
    Unterminated,
    /// What is between `${` and `}` (or `:-`) is not a variable name.
    BadName(String),
}

/// Substitutes `${VAR}` and `${VAR:-default}` (the default when `VAR` is
/// unset or empty) in `text`, and turns `$${` into `${`. Values and defaults
/// are not substituted again. Says whether a variable was substituted.
pub(super) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner.find('}').ok_or(SubstError::Unterminated)?;
            let reference = &inner[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SubstError::BadName(reference.to_owned()));
            }
            let value = match default {
                Some(default) => env(name)
                    .filter(|value| !value.is_empty())
                    .unwrap_or_else(|| default.to_owned()),
                None => env(name).ok_or_else(|| SubstError::Missing(name.to_owned()))?,
            };
            out.push_str(&value);
            substituted = true;
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok((out, substituted))
}

/// The Levenshtein distance between two short names.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
