//! `backworks serve --watch`: swaps in a `type: external` plugin when its
//! library is rebuilt, for local development.
//!
//! Every [`POLL_INTERVAL`] the watcher looks at each external plugin's
//! library and its `.minisig` (modification time, size and inode: one
//! `stat` each, nothing read). A change is acted on once both files have
//! stayed the same for one whole interval, since a build or a copy writes a
//! file in steps and the signature comes after the library. The plugin is
//! then replaced through [`Swapper::replace`]: verified (signature per the
//! configuration), loaded, initialized, health-checked and routed to, or
//! refused with the reason logged while the running version keeps serving.
//! A refused file is tried again when it (or its signature) changes again.
//!
//! The first look after start-up always goes through `replace`, which does
//! nothing for the bytes already running: a rebuild that landed between
//! loading and watching is not missed.
//!
//! Polling, not the OS's change notifications: two `stat`s per plugin four
//! times a second cost nothing; it sees files replaced by rename (a watch
//! on the file would follow the old inode) and files on network or
//! container-mounted filesystems (where notifications are often missing);
//! the stability rule needs a timer anyway; and it needs no dependency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::loader::signature_path;
use crate::swap::Swapper;

/// How often the watcher looks at the files.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a look at one file sees: what changes when it is rewritten or
/// replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// A look at a plugin's library and signature (`None`: missing or
/// unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    library: Option<Stamp>,
    signature: Option<Stamp>,
}

async fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode,
    })
}

/// One watched plugin.
#[derive(Debug)]
struct Watched {
    name: String,
    library: PathBuf,
    signature: PathBuf,
    /// The previous look.
    seen: Option<Look>,
    /// The look last acted on (`None` before the first).
    settled: Option<Look>,
}

impl Watched {
    fn new(name: String, library: PathBuf) -> Self {
        Self {
            name,
            signature: signature_path(&library),
            library,
            seen: None,
            settled: None,
        }
    }

    async fn look(&self) -> Look {
        Look {
            library: stamp(&self.library).await,
            signature: stamp(&self.signature).await,
        }
    }

    /// Records `now`; true when it is worth acting on: the same as the
    /// previous look (stable for one interval) and not acted on yet.
    fn observe(&mut self, now: Look) -> bool {
        let stable = self.seen == Some(now);
        self.seen = Some(now);
        if stable && self.settled != Some(now) {
            self.settled = Some(now);
            true
        } else {
            false
        }
    }
}

/// Watches the `type: external` plugins of `swapper` every `interval` and
/// replaces each whose files changed and settled (module docs). Runs until
/// its task is aborted.
pub(crate) async fn watch(swapper: Arc<Swapper>, interval: Duration) {
    let mut watched: Vec<Watched> = swapper
        .watched_files()
        .into_iter()
        .map(|(name, library)| Watched::new(name, library))
        .collect();
    if watched.is_empty() {
        tracing::info!("--watch: no `type: external` plugin to watch");
        return;
    }
    for plugin in &watched {
        tracing::info!(
            plugin = %plugin.name,
            path = %plugin.library.display(),
            interval_ms = interval.as_millis() as u64,
            "watching the plugin's library and signature for changes"
        );
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for plugin in &mut watched {
            let now = plugin.look().await;
            if !plugin.observe(now) {
                continue;
            }
            if now.library.is_none() {
                tracing::warn!(
                    plugin = %plugin.name,
                    path = %plugin.library.display(),
                    "the plugin's library is missing; the running version keeps serving"
                );
                continue;
            }
            // `replace` logs what it did, or why it refused.
            let _outcome = swapper.replace(&plugin.name, &plugin.library).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(len: u64, signature: Option<u64>) -> Look {
        let at = |len| Stamp {
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(len)),
            len,
            inode: 7,
        };
        Look {
            library: Some(at(len)),
            signature: signature.map(at),
        }
    }

    #[test]
    fn acts_once_a_look_repeats_and_only_once() {
        let mut watched = Watched::new("p".into(), "/x/libp.so".into());
        // The first look has nothing to compare with.
        assert!(!watched.observe(look(1, Some(1))));
        // Stable for one interval: acted on (the start-up check).
        assert!(watched.observe(look(1, Some(1))));
        assert!(!watched.observe(look(1, Some(1))));
        assert!(!watched.observe(look(1, Some(1))));
    }

    #[test]
    fn waits_while_the_files_are_being_written() {
        let mut watched = Watched::new("p".into(), "/x/libp.so".into());
        watched.observe(look(1, Some(1)));
        assert!(watched.observe(look(1, Some(1))));
        // The library grows over three looks, then its signature follows.
        assert!(!watched.observe(look(2, Some(1))));
        assert!(!watched.observe(look(3, Some(1))));
        assert!(!watched.observe(look(3, Some(3))));
        assert!(watched.observe(look(3, Some(3))));
        assert!(!watched.observe(look(3, Some(3))));
    }

    #[test]
    fn a_change_back_is_a_change_and_a_removal_is_seen() {
        let mut watched = Watched::new("p".into(), "/x/libp.so".into());
        watched.observe(look(1, Some(1)));
        assert!(watched.observe(look(1, Some(1))));
        assert!(!watched.observe(look(1, None)));
        assert!(watched.observe(look(1, None)));
        assert!(!watched.observe(look(1, Some(1))));
        assert!(watched.observe(look(1, Some(1))));
    }

    #[test]
    fn the_signature_sits_next_to_the_library() {
        let watched = Watched::new("p".into(), "/x/libp.so".into());
        assert_eq!(watched.signature, Path::new("/x/libp.so.minisig"));
    }
}
