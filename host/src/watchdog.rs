//! The watchdog of the `inline` tier: notices a hook of an `inline` plugin
//! that keeps a server worker busy past `server.watchdog.threshold`,
//! reports it (log line, `/metrics`, `/healthz`) and, by
//! `server.watchdog.action`, moves the plugin's later requests to the
//! `thread` tier.
//!
//! An `inline` hook of a loaded plugin is a synchronous C-ABI call on the
//! worker, so "busy" is "inside that call": each worker thread has one
//! [`Slot`] (made on its first inline call), and a call marks it with its
//! start time, pipeline and plugin position for its duration: a few atomic
//! stores and no lock on the request path. One watchdog thread per
//! pipeline with `inline` plugins looks at every slot four times per
//! threshold (at most every 2 ms), until the pipeline is dropped. A built-in
//! plugin's hooks are awaited, not called, so the watchdog does not watch
//! them.
//!
//! The watchdog cannot give the worker back: a hook that blocks holds its
//! worker until it returns (its request gets its 504 from another worker).
//! What it prevents is the next requests doing the same. It also wakes a
//! sleeping worker once a call has been busy for one look's interval
//! (`Watched::nudge`), since the blocked worker may have been the one
//! polling the runtime's I/O and timer driver: until then the server may
//! see no new connection and no timer (at most half the threshold).

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::config::{WatchdogAction, WatchdogConfig};

/// The most often the watchdog looks at the slots.
const MIN_TICK: Duration = Duration::from_millis(2);

/// One worker thread's inline call, if it is in one.
#[derive(Debug, Default)]
struct Slot {
    /// When the call started (nanoseconds since [`epoch`], at least 1), or
    /// 0 while the thread is in no inline call.
    since: AtomicU64,
    /// The pipeline ([`Watchdog::id`]) and plugin position of the call.
    pipeline: AtomicU64,
    plugin: AtomicUsize,
    /// The hook, as its position in [`HOOK_NAMES`].
    hook: AtomicU8,
}

/// The request hooks by [`backworks_plugin_sdk::abi::Hook::request_index`].
const HOOK_NAMES: [&str; 3] = ["before_request", "process_endpoint_data", "after_response"];

/// Every worker thread's slot, for the watchdogs to look at.
static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's slot, registered in [`SLOTS`] on first use.
    static SLOT: Arc<Slot> = {
        let slot = Arc::new(Slot::default());
        SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&slot));
        slot
    };
}

/// The time the slots count from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What the watchdog found about one plugin, for `/healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocked {
    /// How many hook calls it reported.
    pub times: u64,
    /// The hook of the last one.
    pub hook: &'static str,
    /// How long that call had kept its worker busy when it was reported.
    pub busy: Duration,
    /// Whether the plugin's requests were moved to the `thread` tier.
    pub moved: bool,
}

/// What the watchdog needs to do its job over one pipeline.
pub(crate) trait Watched: Send + Sync + 'static {
    /// The plugin's name at `index`.
    fn name(&self, index: usize) -> &str;
    /// Whether the plugin at `index` runs `inline` now.
    fn is_inline(&self, index: usize) -> bool;
    /// Runs the plugin at `index` in the `thread` tier from now on.
    fn move_to_thread(&self, index: usize);
    /// Counts a report in `/metrics`.
    fn count(&self, index: usize, hook: &'static str);
    /// Wakes an idle server worker, so that one drives the server's I/O
    /// and timers while a busy one cannot: the worker that was driving
    /// them may be the one an inline hook blocks, and a blocked worker
    /// wakes no other (the runtime only does when it queues work), so
    /// without this the request's own 504, and every other connection,
    /// would wait for the hook.
    fn nudge(&self);
}

/// The watchdog of one pipeline.
#[derive(Debug)]
pub(crate) struct Watchdog {
    id: u64,
    config: WatchdogConfig,
    /// By plugin position.
    found: Mutex<Vec<Option<Blocked>>>,
}

impl Watchdog {
    /// A watchdog over `plugins` positions, and its thread, which watches
    /// `watched` until it is dropped. `None` if the thread could not be
    /// started (logged): inline hooks then go unwatched.
    pub(crate) fn start<W: Watched>(
        config: WatchdogConfig,
        plugins: usize,
        watched: Weak<W>,
    ) -> Option<Arc<Self>> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let watchdog = Arc::new(Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            config,
            found: Mutex::new(vec![None; plugins]),
        });
        let theirs = Arc::downgrade(&watchdog);
        let tick = (config.threshold / 4).max(MIN_TICK);
        let started = std::thread::Builder::new()
            .name(String::from("backworks-watchdog"))
            .spawn(move || {
                loop {
                    std::thread::sleep(tick);
                    let (Some(watchdog), Some(watched)) = (theirs.upgrade(), watched.upgrade())
                    else {
                        return;
                    };
                    watchdog.look(&*watched);
                }
            });
        match started {
            Ok(_) => Some(watchdog),
            Err(error) => {
                tracing::error!(%error, "cannot start the inline watchdog; inline hooks that block go unreported");
                None
            }
        }
    }

    /// Marks this worker thread as inside `hook` (a request hook index) of
    /// the plugin at `index` until the guard is dropped.
    pub(crate) fn busy(&self, index: usize, hook: usize) -> Busy {
        let slot = SLOT.with(Arc::clone);
        slot.pipeline.store(self.id, Ordering::Relaxed);
        slot.plugin.store(index, Ordering::Relaxed);
        slot.hook
            .store(u8::try_from(hook).unwrap_or(u8::MAX), Ordering::Relaxed);
        // Release: whoever sees the start sees the fields above.
        slot.since.store(nanos_since_epoch(), Ordering::Release);
        Busy { slot }
    }

    /// What was found about the plugin at `index`.
    pub(crate) fn found(&self, index: usize) -> Option<Blocked> {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned()
            .flatten()
    }

    /// One look at every slot.
    fn look(&self, watched: &dyn Watched) {
        let threshold = u64::try_from(self.config.threshold.as_nanos()).unwrap_or(u64::MAX);
        let tick =
            u64::try_from((self.config.threshold / 4).max(MIN_TICK).as_nanos()).unwrap_or(u64::MAX);
        let now = nanos_since_epoch();
        let slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut nudge = false;
        for slot in slots {
            let since = slot.since.load(Ordering::Acquire);
            if since == 0 || slot.pipeline.load(Ordering::Relaxed) != self.id {
                continue;
            }
            // Busy for a tick already: make sure another worker drives
            // the server's I/O (see `Watched::nudge`).
            nudge |= now.saturating_sub(since) >= tick;
            if now.saturating_sub(since) < threshold {
                continue;
            }
            let index = slot.plugin.load(Ordering::Relaxed);
            let hook = HOOK_NAMES
                .get(usize::from(slot.hook.load(Ordering::Relaxed)))
                .copied()
                .unwrap_or("unknown");
            // Reported once per call: the call's start is cleared to mark
            // it (the call's own end clears it too).
            if slot
                .since
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            self.report(watched, index, hook, Duration::from_nanos(now - since));
        }
        if nudge {
            watched.nudge();
        }
    }

    fn report(&self, watched: &dyn Watched, index: usize, hook: &'static str, busy: Duration) {
        let moved = self.config.action == WatchdogAction::Move && watched.is_inline(index);
        if moved {
            watched.move_to_thread(index);
        }
        watched.count(index, hook);
        let name = watched.name(index);
        tracing::warn!(
            plugin = %name,
            hook,
            busy_ms = busy.as_millis() as u64,
            threshold_ms = self.config.threshold.as_millis() as u64,
            moved_to_thread = moved,
            "an inline hook kept a server worker busy past the watchdog's threshold{}",
            if moved {
                "; the plugin's later requests run in the thread tier"
            } else {
                ""
            }
        );
        let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = found.get_mut(index) {
            let previous = entry.take().unwrap_or_default();
            *entry = Some(Blocked {
                times: previous.times + 1,
                hook,
                busy,
                moved: previous.moved || moved,
            });
        }
    }
}

/// An inline call in progress on this thread (see [`Watchdog::busy`]).
pub(crate) struct Busy {
    slot: Arc<Slot>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.since.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    struct Plugins {
        inline: Vec<AtomicBool>,
        counted: AtomicUsize,
    }

    impl Watched for Plugins {
        fn name(&self, index: usize) -> &str {
            ["fast", "slow"][index]
        }
        fn nudge(&self) {}
        fn is_inline(&self, index: usize) -> bool {
            self.inline[index].load(Ordering::Relaxed)
        }
        fn move_to_thread(&self, index: usize) {
            self.inline[index].store(false, Ordering::Relaxed);
        }
        fn count(&self, _index: usize, _hook: &'static str) {
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call busy past the threshold is reported once, and its plugin is
    /// moved; a short call of another plugin is not reported.
    #[test]
    fn a_call_busy_past_the_threshold_is_reported_once_and_moved() {
        let plugins = Arc::new(Plugins {
            inline: vec![AtomicBool::new(true), AtomicBool::new(true)],
            counted: AtomicUsize::new(0),
        });
        let config = WatchdogConfig {
            threshold: Duration::from_millis(20),
            action: WatchdogAction::Move,
        };
        let watchdog = Watchdog::start(config, 2, Arc::downgrade(&plugins)).unwrap();
        {
            let _fast = watchdog.busy(0, 1);
        }
        let busy = watchdog.busy(1, 0);
        // Bounded only to catch a hang: reported once 20 ms have passed.
        let deadline = Instant::now() + Duration::from_secs(60);
        while watchdog.found(1).is_none() {
            assert!(Instant::now() < deadline, "not reported");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Several more looks at the same call report nothing new.
        std::thread::sleep(Duration::from_millis(50));
        drop(busy);
        let found = watchdog.found(1).unwrap();
        assert_eq!(found.times, 1);
        assert_eq!(found.hook, "before_request");
        assert!(found.busy >= Duration::from_millis(20), "{found:?}");
        assert!(found.moved);
        assert!(!plugins.is_inline(1));
        assert!(plugins.is_inline(0));
        assert_eq!(watchdog.found(0), None);
        assert_eq!(plugins.counted.load(Ordering::Relaxed), 1);
    }

    /// With `action: report` the plugin stays inline.
    #[test]
    fn report_only_leaves_the_plugin_inline() {
        let plugins = Arc::new(Plugins {
            inline: vec![AtomicBool::new(true), AtomicBool::new(true)],
            counted: AtomicUsize::new(0),
        });
        let config = WatchdogConfig {
            threshold: Duration::from_millis(10),
            action: WatchdogAction::Report,
        };
        let watchdog = Watchdog::start(config, 2, Arc::downgrade(&plugins)).unwrap();
        let busy = watchdog.busy(0, 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        while watchdog.found(0).is_none() {
            assert!(Instant::now() < deadline, "not reported");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(busy);
        let found = watchdog.found(0).unwrap();
        assert_eq!((found.hook, found.moved), ("after_response", false));
        assert!(plugins.is_inline(0));
    }
}
