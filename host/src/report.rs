//! What `backworks` prints for the results of its commands, as text: one
//! pure function per result (no I/O), so the formats are tested here and
//! `main.rs` only dispatches. JSON output is the results' own
//! serialisation, not built here.
//!
//! Text that comes from a registry (names, versions, descriptions, key ids,
//! paths built from them; the search answer is not even signed) or from a
//! plugin's metadata record goes through [`escape`] first: a registry must
//! not be able to move the cursor, erase a line or reorder characters on
//! the user's terminal, e.g. to forge a line "verified by key ...". JSON
//! output keeps the data exact and needs little more: `serde_json` already
//! writes every control character below U+0020 (ESC, CR, LF, ...) as a
//! `\uXXXX` escape; [`json`] writes the rest that [`escape`] escapes (DEL,
//! C1 controls, bidirectional controls) as `\uXXXX` escapes too, so the
//! JSON decodes to the same strings and nothing reaches a terminal raw.
//! Both are `backworks-artifact`'s (`backworks_artifact::terminal`), shared with
//! `cargo backworks`; errors (`main.rs`) and log lines (`telemetry`) are
//! escaped the same way.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backworks_registry::{Index, Release, SearchPage, describe_capabilities};

use crate::config::UpdatesConfig;
use crate::discovery::Discovered;
use crate::lockfile::LockedPlugin;
use crate::marketplace::{Installed, LockStatus, Skipped, UpdateOutcome};

/// The escaper shared with `cargo backworks` (`backworks_artifact::terminal`
/// module): [`escape`] for text, [`json`] for JSON, [`must_escape`] says
/// which characters.
pub use backworks_artifact::terminal::{escape, json, must_escape};

/// `plugins search`: one line per hit (name, version, description), and how
/// many more matched than the page holds. Everything the registry sent is
/// [`escape`]d.
pub fn search(query: &str, page: &SearchPage) -> String {
    if page.hits.is_empty() {
        return format!("no plugin matches `{}`\n", escape(query));
    }
    let mut text = String::new();
    for hit in &page.hits {
        let _ = writeln!(
            text,
            "{} {}  {}\n  {}",
            escape(&hit.name),
            escape(&hit.version),
            escape(&hit.description),
            escape(&describe_capabilities(hit.capabilities.as_ref()))
        );
        if let Some(floor) = hit.floors.get(backworks_plugin_sdk::TARGET) {
            let _ = writeln!(
                text,
                "  needs {} on {}",
                escape(&floor.to_string()),
                backworks_plugin_sdk::TARGET
            );
        }
        if let Some(count) = hit.deps.get(backworks_plugin_sdk::TARGET) {
            let _ = writeln!(text, "  {count} on {}", backworks_plugin_sdk::TARGET);
        }
    }
    if page.total > page.hits.len() {
        let _ = writeln!(text, "... and {} more", page.total - page.hits.len());
    }
    text
}

/// `plugins info`: a release as the registry describes it (its release
/// file, verified against the signed index): name, version, description,
/// publisher, ABI, what it declares, its targets with their floors, and
/// the dependency list of `target`'s artifact, one crate a line. Every
/// string is the registry's: [`escape`]d.
pub fn release_info(release: &Release, target: &str) -> String {
    let mut text = format!(
        "{} {}  {}\n  published by key {} at {} (unix seconds), plugin ABI v{}\n  {}\n",
        escape(&release.name),
        escape(&release.version),
        escape(&release.description),
        escape(&release.publisher),
        release.published,
        release.abi,
        escape(&describe_capabilities(release.capabilities.as_ref()))
    );
    let targets: Vec<String> = release
        .targets
        .iter()
        .map(|(name, artifact)| {
            let mut line = escape(name).into_owned();
            if !artifact.floor.is_empty() {
                let _ = write!(line, " (needs {})", escape(&artifact.floor.to_string()));
            }
            line
        })
        .collect();
    let _ = writeln!(text, "  targets: {}", targets.join(", "));
    match release.targets.get(target) {
        None => {
            let _ = writeln!(text, "  no artifact for {target}");
        }
        Some(artifact) => match &artifact.deps {
            None => {
                let _ = writeln!(
                    text,
                    "  no dependency list for {target} (its library was built without one)"
                );
            }
            Some(list) => {
                let _ = writeln!(
                    text,
                    "  {} on {target}:",
                    backworks_registry::DependencyCount::of(list)
                );
                for dependency in list {
                    let _ = writeln!(text, "    {}", escape(&dependency.line()));
                }
            }
        },
    }
    text
}

/// `plugins install`: what was installed, where, and the lock that pins it.
/// Newer releases passed over because this host cannot load them follow,
/// one line each.
pub fn installed(installed: &Installed, lock: &Path) -> String {
    let mut text = format!(
        "installed {}\n  {}\n  into {}\n  pinned in {}\n",
        escape(&installed.plugin.to_string()),
        escape(&describe_capabilities(installed.capabilities.as_ref())),
        escape(&installed.path.display().to_string()),
        escape(&lock.display().to_string())
    );
    if !installed.others.is_empty() {
        let targets: Vec<String> = installed
            .others
            .iter()
            .map(|pin| escape(&pin.target).into_owned())
            .collect();
        let _ = writeln!(
            text,
            "  also pinned for {} (their signatures checked, not downloaded)",
            targets.join(", ")
        );
    }
    skipped_lines(&mut text, &installed.skipped);
    text
}

/// `plugins lock` and `plugins lock --check`: per plugin, the targets the
/// lock pins and what is wrong for this host.
pub fn lock_status(statuses: &[LockStatus], lock: &Path, target: &str) -> String {
    if statuses.is_empty() {
        return String::from("backworks.yaml has no `type: marketplace` plugin\n");
    }
    let mut text = format!(
        "{} (this host: {target})\n",
        escape(&lock.display().to_string())
    );
    for status in statuses {
        let _ = writeln!(
            text,
            "{} (version \"{}\"): {}",
            escape(&status.name),
            escape(&status.requirement),
            match &status.problem {
                None => String::from("ok"),
                Some(problem) => escape(problem).into_owned(),
            }
        );
        for pin in &status.pins {
            let _ = writeln!(
                text,
                "  {} {} sha256 {} key {}",
                escape(&pin.target),
                pin.version,
                escape(&pin.sha256),
                escape(&pin.key_id)
            );
        }
    }
    text
}

/// [`lock_status`] as JSON.
pub fn lock_status_json(statuses: &[LockStatus], lock: &Path, target: &str) -> String {
    let plugins: Vec<serde_json::Value> = statuses
        .iter()
        .map(|status| {
            serde_json::json!({
                "name": status.name,
                "requirement": status.requirement,
                "problem": status.problem,
                "pins": status.pins.iter().map(|pin| serde_json::json!({
                    "target": pin.target,
                    "version": pin.version.to_string(),
                    "sha256": pin.sha256,
                    "key_id": pin.key_id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json(&serde_json::json!({
        "lock": lock.display().to_string(),
        "target": target,
        "plugins": plugins,
    }))
}

/// One indented line per release passed over for its plugin ABI.
fn skipped_lines(text: &mut String, skipped: &[Skipped]) {
    for skipped in skipped {
        let _ = writeln!(text, "  {}", escape(&skipped.to_string()));
    }
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
        let _ = match (&outcome.to, &outcome.held) {
            (Some(installed), _) => writeln!(
                text,
                "updated {} {} -> {}\n  {}\n  into {}",
                escape(&outcome.name),
                outcome.from,
                installed.plugin.version,
                escape(&describe_capabilities(installed.capabilities.as_ref())),
                escape(&installed.path.display().to_string())
            ),
            (None, Some(held)) => {
                let _ = writeln!(
                    text,
                    "not updating {} {} -> {}: it asks for more than {} declared:",
                    escape(&held.name),
                    held.from,
                    held.to,
                    held.from
                );
                for added in &held.added {
                    let _ = writeln!(text, "  {}", escape(added));
                }
                writeln!(
                    text,
                    "  review it, then apply it with `backworks plugins update {} --accept-capabilities`",
                    escape(&held.name)
                )
            }
            (None, None) => writeln!(
                text,
                "{} {} is up to date (updates allowed: {})",
                escape(&outcome.name),
                outcome.from,
                updates
                    .requirement(&outcome.name)
                    .map_or_else(|| updates.allow.to_string(), ToString::to_string)
            ),
        };
        skipped_lines(&mut text, &outcome.skipped);
    }
    text
}

/// `plugins remove`: one line per lock entry removed.
pub fn removed(removed: &[LockedPlugin]) -> String {
    removed
        .iter()
        .map(|r| format!("removed {}\n", escape(&r.to_string())))
        .collect()
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
        let _ = writeln!(
            text,
            "{}\n  {}\n  {}",
            escape(&plugin.path.display().to_string()),
            escape(&identity),
            escape(&status)
        );
        if let Some((name, isolation)) = &plugin.entry {
            let _ = writeln!(text, "  runs as `{}`, isolation {isolation}", escape(name));
        }
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
    use backworks_registry::{IndexEntry, SearchHit};
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
            capabilities: None,
            floors: Default::default(),
            deps: Default::default(),
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
        page.hits[1].capabilities = Some(
            backworks_plugin_sdk::abi::capabilities::Capabilities::from_json(
                r#"{"network":["api.example.com:443"],"env":["HOME"]}"#,
            )
            .unwrap(),
        );
        page.total = 5;
        assert_eq!(
            search("we", &page),
            "weather 1.0.0  the weather plugin\n  declares nothing (the process tier's defaults)\nwebhooks 1.0.0  the webhooks plugin\n  declares network api.example.com:443; env HOME\n... and 3 more\n"
        );
        page.total = 2;
        assert!(!search("we", &page).contains("more"));
    }

    #[test]
    fn search_counts_this_target_s_dependencies() {
        let mut weather = hit("weather");
        let count = |runtime, build| backworks_registry::DependencyCount { runtime, build };
        weather
            .deps
            .insert(backworks_plugin_sdk::TARGET.to_owned(), count(2, 1));
        // Another target's list is not this host's.
        weather
            .deps
            .insert(String::from("not-this-target"), count(7, 0));
        let page = SearchPage {
            query: String::from("we"),
            total: 1,
            page: 1,
            per_page: 20,
            hits: vec![weather],
        };
        assert_eq!(
            search("we", &page),
            format!(
                "weather 1.0.0  the weather plugin\n  declares nothing (the process tier's defaults)\n  3 dependencies (1 build-time only) on {}\n",
                backworks_plugin_sdk::TARGET
            )
        );
        assert_eq!(count(1, 0).to_string(), "1 dependency");
    }

    #[test]
    fn release_info_lists_this_target_s_dependencies() {
        let release: Release = serde_json::from_str(
            r#"{"name":"weather","version":"1.0.0","description":"forecasts\u001b[2K","keywords":[],"abi":1,
            "publisher":"CAB78193ADCAB890","published":1767312000,
            "capabilities":{"network":"none"},
            "targets":{
              "x86_64-unknown-linux-gnu":{"path":"p","signature":"s","sha256":"00","size":1,
                "floor":{"glibc":"2.17"},
                "deps":[{"name":"proc-macro2","version":"1.0.101","build":true},
                        {"name":"helper","version":"0.2.0","source":"local"},
                        {"name":"serde\u202e","version":"1.0.228"}]},
              "aarch64-apple-darwin":{"path":"p","signature":"s","sha256":"00","size":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            release_info(&release, "x86_64-unknown-linux-gnu"),
            "weather 1.0.0  forecasts\\u{1b}[2K\n  published by key CAB78193ADCAB890 at 1767312000 (unix seconds), plugin ABI v1\n  declares network none\n  targets: aarch64-apple-darwin, x86_64-unknown-linux-gnu (needs glibc 2.17)\n  3 dependencies (1 build-time only) on x86_64-unknown-linux-gnu:\n    proc-macro2 1.0.101 (build)\n    helper 0.2.0 (local)\n    serde\\u{202e} 1.0.228\n"
        );
        assert!(release_info(&release, "aarch64-apple-darwin").ends_with(
            "  no dependency list for aarch64-apple-darwin (its library was built without one)\n"
        ));
        assert!(
            release_info(&release, "riscv64gc-unknown-linux-gnu")
                .ends_with("  no artifact for riscv64gc-unknown-linux-gnu\n")
        );
    }

    #[test]
    fn registry_text_cannot_drive_the_terminal() {
        let mut forged = hit("weather");
        forged.description =
            String::from("ok\u{1b}[2K\rverified by key CAB78193ADCAB890\nsecond line");
        forged.version = String::from("1.0.0\u{9b}31m");
        forged.name = String::from("we\u{202e}rehtaew");
        let page = SearchPage {
            query: String::from("we"),
            total: 1,
            page: 1,
            per_page: 20,
            hits: vec![forged],
        };
        let text = search("we\u{7}", &page);
        assert_eq!(
            text,
            "we\\u{202e}rehtaew 1.0.0\\u{9b}31m  ok\\u{1b}[2K\\rverified by key CAB78193ADCAB890\\nsecond line\n  declares nothing (the process tier's defaults)\n"
        );
        assert_eq!(text.lines().count(), 2);
        assert!(
            !text.lines().any(|line| line.chars().any(must_escape)),
            "{text:?}"
        );
        let none = SearchPage {
            hits: Vec::new(),
            ..page
        };
        assert_eq!(search("we\u{7}", &none), "no plugin matches `we\\u{7}`\n");
        for c in [
            '\u{1b}', '\r', '\u{7f}', '\u{85}', '\u{61c}', '\u{200f}', '\u{2066}', '\u{2029}',
        ] {
            assert!(must_escape(c), "{c:?}");
        }
        // JSON: the same strings once decoded, nothing raw on the terminal.
        let mut hit = hit("weather");
        hit.description = String::from("a\u{1b}[2K\r\nb\u{9b}c\u{7f}d\u{202e}e");
        let printed = json(&hit);
        assert!(printed.is_ascii(), "{printed}");
        assert!(
            printed.contains(r"a\u001b[2K\r\nb\u009bc\u007fd\u202ee"),
            "{printed}"
        );
        let decoded: SearchHit = serde_json::from_str(&printed).unwrap();
        assert_eq!(decoded, hit);
        assert_eq!(
            json(&serde_json::json!({"a": [1, "x"]})),
            serde_json::to_string_pretty(&serde_json::json!({"a": [1, "x"]})).unwrap() + "\n"
        );
        // Plain text and accents are left as they are.
        assert!(matches!(
            escape("Météo: 25 °C, 天气"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn releases_passed_over_for_their_abi_are_named_under_the_install_or_update() {
        let lock = Path::new("app/backworks.lock");
        let skipped = |version: &str| Skipped {
            name: String::from("weather"),
            version: Version::parse(version).unwrap(),
            abi: 7,
        };
        let weather = Installed {
            plugin: pin("weather", "1.0.1"),
            path: PathBuf::from("cache/weather.so"),
            capabilities: None,
            others: Vec::new(),
            skipped: vec![skipped("3.0.0"), skipped("2.0.0")],
        };
        let host = backworks_plugin_sdk::abi::ABI_VERSION;
        assert_eq!(
            installed(&weather, lock),
            format!(
                "installed weather 1.0.1 for x86_64-unknown-linux-gnu (sha256 ab12, key CAB78193ADCAB890)\n  declares nothing (the process tier's defaults)\n  into cache/weather.so\n  pinned in app/backworks.lock\n  skipped weather 3.0.0: built for plugin ABI v7, this host speaks v{host}\n  skipped weather 2.0.0: built for plugin ABI v7, this host speaks v{host}\n"
            )
        );
        let outcome = UpdateOutcome {
            name: String::from("weather"),
            from: Version::new(1, 0, 0),
            to: None,
            held: None,
            skipped: vec![skipped("2.0.0")],
        };
        let updates = UpdatesConfig::default();
        assert_eq!(
            updated(&[outcome], lock, &updates),
            format!(
                "weather 1.0.0 is up to date (updates allowed: {})\n  skipped weather 2.0.0: built for plugin ABI v7, this host speaks v{host}\n",
                updates.allow
            )
        );
    }

    #[test]
    fn installs_updates_and_removals() {
        let lock = Path::new("app/backworks.lock");
        let weather = Installed {
            plugin: pin("weather", "1.0.1"),
            path: PathBuf::from("cache/weather.so"),
            capabilities: None,
            others: vec![LockedPlugin {
                target: String::from("aarch64-unknown-linux-gnu"),
                ..pin("weather", "1.0.1")
            }],
            skipped: Vec::new(),
        };
        assert_eq!(
            installed(&weather, lock),
            "installed weather 1.0.1 for x86_64-unknown-linux-gnu (sha256 ab12, key CAB78193ADCAB890)\n  declares nothing (the process tier's defaults)\n  into cache/weather.so\n  pinned in app/backworks.lock\n  also pinned for aarch64-unknown-linux-gnu (their signatures checked, not downloaded)\n"
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
                held: None,
                skipped: Vec::new(),
            },
            UpdateOutcome {
                name: String::from("auth"),
                from: Version::new(2, 1, 0),
                to: None,
                held: None,
                skipped: Vec::new(),
            },
            UpdateOutcome {
                name: String::from("mail"),
                from: Version::new(1, 0, 0),
                to: None,
                held: Some(crate::marketplace::HeldUpdate {
                    name: String::from("mail"),
                    from: Version::new(1, 0, 0),
                    to: Version::new(1, 1, 0),
                    added: vec![
                        String::from("network: smtp.example.com:587"),
                        String::from("env: SMTP_PASSWORD"),
                    ],
                }),
                skipped: Vec::new(),
            },
        ];
        assert_eq!(
            updated(&outcomes, lock, &updates),
            format!(
                "updated weather 1.0.0 -> 1.0.1\n  declares nothing (the process tier's defaults)\n  into cache/weather.so\nauth 2.1.0 is up to date (updates allowed: {})\nnot updating mail 1.0.0 -> 1.1.0: it asks for more than 1.0.0 declared:\n  network: smtp.example.com:587\n  env: SMTP_PASSWORD\n  review it, then apply it with `backworks plugins update mail --accept-capabilities`\n",
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
                entry: None,
            },
            Discovered {
                path: PathBuf::from("plugins/libweather.so"),
                metadata: None,
                status: Ok(String::from("verified by CAB78193ADCAB890")),
                entry: Some((String::from("weather"), crate::config::Isolation::Inline)),
            },
        ];
        assert_eq!(
            plugin_list(&found, &dirs),
            "plugins/notes.txt.so\n  (not a plugin)\n  refused: not a plugin\nplugins/libweather.so\n  (not a plugin)\n  verified by CAB78193ADCAB890\n  runs as `weather`, isolation inline\n"
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
