//! The one lifecycle of a plugin library, whichever way it arrives: at
//! start-up ([`crate::server::load_plugins`] and
//! [`crate::server::start_plugins`]), from `serve --watch` or from the
//! automatic updater (both through [`crate::swap::Swapper`]).
//!
//! 1. **verify** (`loader::verify_file`: record, ABI, signature, over bytes
//!    read once), then the entry's rules: the record names the entry's
//!    plugin (`VerifiedFile::check_name`) and, for a marketplace plugin, the
//!    bytes and key are the ones `backworks.lock` pins ([`check_pin`]);
//! 2. **load** ([`load_within`]): `dlopen` of those bytes, which runs the
//!    library's initialisers, always on a thread of its own and bounded by
//!    `hook_timeout`, never on an async worker;
//! 3. **start**: the hooks of [`START_HOOKS`], in that order, each bounded
//!    by `hook_timeout`, with the configuration the plugin carries
//!    ([`HostPlugin::config`](crate::pipeline::HostPlugin::config));
//! 4. **serve**, then **retire** (`shutdown` once no request uses it; the
//!    library stays mapped).
//!
//! Start-up and a swap differ only in what a failure means (start-up stops;
//! a swap is refused and the running version keeps serving), so each maps
//! this module's failures to its own error.

use std::time::Duration;

use backworks_plugin_sdk::abi::Hook;

use crate::loader::{self, LoadError, LoadedPlugin, VerifiedFile};

/// The hooks a plugin passes, in this order, before it serves.
pub const START_HOOKS: [Hook; 2] = [Hook::Initialize, Hook::HealthCheck];

/// The exact bytes and signing key a library must have, as `backworks.lock`
/// states them for a marketplace plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// sha256 of the library, lower-case hex.
    pub sha256: String,
    /// The signing key's id (minisign's 16 upper-case hex digits).
    pub key_id: String,
}

impl From<&crate::lockfile::LockedPlugin> for Pin {
    fn from(locked: &crate::lockfile::LockedPlugin) -> Self {
        Self {
            sha256: locked.sha256.clone(),
            key_id: locked.key_id.clone(),
        }
    }
}

/// How a verified file differs from its [`Pin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// `sha256` or `signing key`.
    pub what: &'static str,
    /// What the pin says.
    pub expected: String,
    /// What the file is.
    pub actual: String,
}

/// Whether `file` is the library `pin` names: its sha256 and, when it was
/// verified with a key (signatures required), that key. Without signatures
/// (local development) no key was checked, but the bytes must still be the
/// pinned ones.
pub fn check_pin(file: &VerifiedFile, pin: &Pin) -> Result<(), PinMismatch> {
    if file.sha256() != pin.sha256 {
        return Err(PinMismatch {
            what: "sha256",
            expected: pin.sha256.clone(),
            actual: file.sha256().to_owned(),
        });
    }
    if let Some(key_id) = file.key_id()
        && key_id.to_string() != pin.key_id
    {
        return Err(PinMismatch {
            what: "signing key",
            expected: pin.key_id.clone(),
            actual: key_id.to_string(),
        });
    }
    Ok(())
}

/// Why [`load_within`] returned no plugin.
#[derive(Debug)]
pub enum LoadFailure {
    /// The dynamic loader refused the bytes, or the loaded plugin failed its
    /// checks.
    Refused(LoadError),
    /// `dlopen` did not return within the timeout: the library's
    /// initialisers still run, holding the dynamic loader's process-wide
    /// lock ([`loader::load_in_flight`] reports it).
    TimedOut,
    /// The loading thread panicked (a host bug).
    Panicked,
    /// No thread could be started for the loading.
    NoThread(std::io::Error),
}

/// Loads `file` (`dlopen` runs the library's initialisers) on a thread of
/// its own and waits `timeout` at most, like a hook. Blocking: call it from
/// a blocking context (`spawn_blocking`, or a thread that is not an async
/// worker).
///
/// After [`LoadFailure::TimedOut`] the loading thread stays stuck in the
/// dynamic loader: no other library can be loaded by this process, and the
/// process must leave with [`loader::exit_now`].
pub fn load_within(file: VerifiedFile, timeout: Duration) -> Result<LoadedPlugin, LoadFailure> {
    // The waiting thread must not take the dynamic loader's lock while the
    // loading holds it: its first use of a thread-local with a destructor
    // would (glibc's `__cxa_thread_atexit_impl`), and `mpsc`'s blocking
    // receive makes one (its per-thread context), so a loading that reached
    // `dlopen` first left the caller waiting forever. A mutex and a
    // condition variable are futexes and nothing else.
    type Slot = Option<Option<Result<LoadedPlugin, LoadError>>>;
    let handoff =
        std::sync::Arc::new((std::sync::Mutex::new(Slot::None), std::sync::Condvar::new()));
    let theirs = std::sync::Arc::clone(&handoff);
    // In flight from here, before the thread exists: were the thread not
    // scheduled within `timeout`, it would still `dlopen` later, while
    // this process exits (see [`loader::PendingLoad`]).
    let pending = loader::PendingLoad::new(file);
    std::thread::Builder::new()
        .name(String::from("backworks-load"))
        .spawn(move || {
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pending.load()));
            let (slot, ready) = &*theirs;
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(loaded.ok());
            ready.notify_one();
        })
        .map_err(LoadFailure::NoThread)?;
    let (slot, ready) = &*handoff;
    let (mut slot, _) = ready
        .wait_timeout_while(
            slot.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            timeout,
            |slot| slot.is_none(),
        )
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match slot.take() {
        Some(Some(loaded)) => loaded.map_err(LoadFailure::Refused),
        Some(None) => Err(LoadFailure::Panicked),
        None => Err(LoadFailure::TimedOut),
    }
}
