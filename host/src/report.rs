//! What `backworks` prints for the results of its commands, as text: one
//! pure function per result (no I/O), so the formats are tested here and
//! `main.rs` only dispatches. JSON output is the results' own
//! serialisation, not built here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backworks_plugin_sdk::registry::{Index, SearchPage};

use crate::config::UpdatesConfig;
use crate::discovery::Discovered;
use crate::lockfile::LockedPlugin;
use crate::marketplace::{Installed, UpdateOutcome};

/// `plugins search`: one line per hit (name, version, description), and how
/// many more matched than the page holds.
pub fn search(query: &str, page: &SearchPage) -> String {
    if page.hits.is_empty() {
        return format!("no plugin matches `{query}`\n");
    }
    let mut text = String::new();
    for hit in &page.hits {
        let _ = writeln!(text, "{} {}  {}", hit.name, hit.version, hit.description);
    }
    if page.total > page.hits.len() {
        let _ = writeln!(text, "... and {} more", page.total - page.hits.len());
    }
    text
}

/// `plugins install`: what was installed, where, and the lock that pins it.
pub fn installed(installed: &Installed, lock: &Path) -> String {
    format!(
        "installed {}\n  into {}\n  pinned in {}\n",
        installed.plugin,
        installed.path.display(),
        lock.display()
    )
}

/// `plugins update`: per plugin, the version it moved to, or that it is up
/// to date and what the policy allows.
pub fn updated(outcomes: &[UpdateOutcome], lock: &Path, updates: &UpdatesConfig) -> String {
    if outcomes.is_empty() {
        return format!(
            "nothing to update: {} pins no plugin for this host\n",
            lock.display()
        );
    }
    let mut text = String::new();
    for outcome in outcomes {
        let _ = match &outcome.to {
            Some(installed) => writeln!(
                text,
                "updated {} {} -> {}\n  into {}",
                outcome.name,
                outcome.from,
                installed.plugin.version,
                installed.path.display()
            ),
            None => writeln!(
                text,
                "{} {} is up to date (updates allowed: {})",
                outcome.name,
                outcome.from,
                updates
                    .requirement(&outcome.name)
                    .map_or_else(|| updates.allow.to_string(), ToString::to_string)
            ),
        };
    }
    text
}

/// `plugins remove`: one line per lock entry removed.
pub fn removed(removed: &[LockedPlugin]) -> String {
    removed.iter().map(|r| format!("removed {r}\n")).collect()
}

/// `plugins list`: per file, its path, the plugin it holds and whether it
/// would load.
pub fn plugin_list(found: &[Discovered], plugin_dirs: &[PathBuf]) -> String {
    if found.is_empty() {
        return format!("no plugin libraries in {plugin_dirs:?}\n");
    }
    let mut text = String::new();
    for plugin in found {
        let identity = plugin.metadata.as_ref().map_or_else(
            || String::from("(not a plugin)"),
            |m| format!("{} {} ({})", m.name, m.version, m.target),
        );
        let status = match &plugin.status {
            Ok(status) => status.clone(),
            Err(reason) => format!("refused: {reason}"),
        };
        let _ = writeln!(text, "{}\n  {identity}\n  {status}", plugin.path.display());
    }
    text
}

/// `marketplace resign`: the new index's serial, expiry and size.
pub fn resigned(dir: &Path, index: &Index) -> String {
    let plugins = index.plugins.len();
    format!(
        "re-signed the index of {}: serial {}, expires at {} (unix seconds), {plugins} plugin{}\n",
        dir.display(),
        index.serial,
        index.expires,
        if plugins == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use backworks_plugin_sdk::registry::{IndexEntry, SearchHit};
    use semver::Version;

    use super::*;

    fn pin(name: &str, version: &str) -> LockedPlugin {
        LockedPlugin {
            name: name.to_owned(),
            version: Version::parse(version).unwrap(),
            target: String::from("x86_64-unknown-linux-gnu"),
            sha256: String::from("ab12"),
            key_id: String::from("CAB78193ADCAB890"),
        }
    }

    fn hit(name: &str) -> SearchHit {
        SearchHit {
            name: name.to_owned(),
            version: String::from("1.0.0"),
            description: format!("the {name} plugin"),
            keywords: Vec::new(),
            score: 1,
        }
    }

    #[test]
    fn search_pages() {
        let mut page = SearchPage {
            query: String::from("we"),
            total: 0,
            page: 1,
            per_page: 2,
            hits: Vec::new(),
        };
        assert_eq!(search("we", &page), "no plugin matches `we`\n");
        page.hits = vec![hit("weather"), hit("webhooks")];
        page.total = 5;
        assert_eq!(
            search("we", &page),
            "weather 1.0.0  the weather plugin\nwebhooks 1.0.0  the webhooks plugin\n... and 3 more\n"
        );
        page.total = 2;
        assert!(!search("we", &page).contains("more"));
    }

    #[test]
    fn installs_updates_and_removals() {
        let lock = Path::new("app/backworks.lock");
        let weather = Installed {
            plugin: pin("weather", "1.0.1"),
            path: PathBuf::from("cache/weather.so"),
        };
        assert_eq!(
            installed(&weather, lock),
            "installed weather 1.0.1 for x86_64-unknown-linux-gnu (sha256 ab12, key CAB78193ADCAB890)\n  into cache/weather.so\n  pinned in app/backworks.lock\n"
        );
        let updates = UpdatesConfig::default();
        assert_eq!(
            updated(&[], lock, &updates),
            "nothing to update: app/backworks.lock pins no plugin for this host\n"
        );
        let outcomes = [
            UpdateOutcome {
                name: String::from("weather"),
                from: Version::new(1, 0, 0),
                to: Some(weather),
            },
            UpdateOutcome {
                name: String::from("auth"),
                from: Version::new(2, 1, 0),
                to: None,
            },
        ];
        assert_eq!(
            updated(&outcomes, lock, &updates),
            format!(
                "updated weather 1.0.0 -> 1.0.1\n  into cache/weather.so\nauth 2.1.0 is up to date (updates allowed: {})\n",
                updates.allow
            )
        );
        assert_eq!(
            removed(&[pin("weather", "1.0.1")]),
            "removed weather 1.0.1 for x86_64-unknown-linux-gnu (sha256 ab12, key CAB78193ADCAB890)\n"
        );
        assert_eq!(removed(&[]), "");
    }

    #[test]
    fn plugin_lists() {
        let dirs = [PathBuf::from("plugins")];
        assert_eq!(
            plugin_list(&[], &dirs),
            "no plugin libraries in [\"plugins\"]\n"
        );
        let found = [
            Discovered {
                path: PathBuf::from("plugins/notes.txt.so"),
                metadata: None,
                status: Err(String::from("not a plugin")),
            },
            Discovered {
                path: PathBuf::from("plugins/libweather.so"),
                metadata: None,
                status: Ok(String::from("verified by CAB78193ADCAB890")),
            },
        ];
        assert_eq!(
            plugin_list(&found, &dirs),
            "plugins/notes.txt.so\n  (not a plugin)\n  refused: not a plugin\nplugins/libweather.so\n  (not a plugin)\n  verified by CAB78193ADCAB890\n"
        );
    }

    #[test]
    fn resigned_indexes() {
        let mut index = Index {
            format: 1,
            serial: 7,
            issued: 1,
            expires: 100,
            plugins: Default::default(),
        };
        assert_eq!(
            resigned(Path::new("registry"), &index),
            "re-signed the index of registry: serial 7, expires at 100 (unix seconds), 0 plugins\n"
        );
        index.plugins.insert(
            String::from("weather"),
            IndexEntry {
                description: String::new(),
                keywords: Vec::new(),
                versions: Default::default(),
            },
        );
        assert!(resigned(Path::new("registry"), &index).ends_with(", 1 plugin\n"));
    }
}
