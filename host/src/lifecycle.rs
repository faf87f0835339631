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
//!    (`HostPlugin::config`);
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

/// Why [`probe_within`] found a library unfit to load into this process.
#[derive(Debug)]
pub enum ProbeFailure {
    /// The probe process could not be started (names the program).
    Spawn(String, std::io::Error),
    /// Its loading did not finish within the timeout; the probe process was
    /// killed.
    TimedOut,
    /// The probe process ended by a signal (a crash in the library's
    /// initialisers: SIGSEGV, SIGABRT, ...), or with an exit code other than
    /// the probe's own (the initialisers called `exit`).
    Crashed {
        /// How it ended (`signal 11`, `exit code 3`).
        how: String,
        /// The start of its standard error.
        stderr: String,
    },
    /// The probe refused the library (its message: a dynamic-loader error,
    /// a record that changed in memory, ...).
    Refused(String),
}

/// The messages of the failures every caller words the same way; a caller
/// words [`LoadFailure::TimedOut`] itself (what it means differs between
/// start-up and a swap).
impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(error) => write!(f, "{error}"),
            Self::TimedOut => f.write_str("the loading did not return in time"),
            Self::Panicked => f.write_str("the loading thread panicked (a host bug: see the log)"),
            Self::NoThread(e) => write!(f, "cannot start a loading thread: {e}"),
        }
    }
}

/// The exit code of `backworks probe-load` when it refuses the library.
pub const PROBE_REFUSED: u8 = 70;

/// The running program, to re-execute: on Linux `/proc/self/exe`, which
/// stays this binary even when its file is replaced or removed.
pub fn this_program() -> std::io::Result<std::path::PathBuf> {
    if cfg!(target_os = "linux") {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe()
    }
}

/// Loads `file` first in a throw-away process (`program`, the `backworks`
/// binary, run as `backworks probe-load`, which copies the staged, verified
/// bytes and loads them; [`loader::probe`]), waiting `timeout` at most and
/// killing it after (`max_plugin_size` bounds what the probe reads). Only a library whose initialisers return, without
/// crashing or leaving the process, in the probe is then loaded into this
/// process ([`load_within`]): a replacement whose constructor hangs or
/// crashes is refused while the running server stays whole. (Initialisers
/// therefore run twice; a library's initialisers must not assume they run
/// once per machine.) Blocking.
pub fn probe_within(
    program: &std::path::Path,
    file: &VerifiedFile,
    max_plugin_size: u64,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    use std::io::Read;
    use wait_timeout::ChildExt;

    let mut child = std::process::Command::new(program)
        .arg("probe-load")
        .arg(file.probe_path())
        .arg("--label")
        .arg(file.path())
        .arg("--max-size")
        .arg(max_plugin_size.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ProbeFailure::Spawn(program.display().to_string(), e))?;
    // Drained on a thread of its own, so initialisers that write a lot to
    // standard error cannot block the probe on a full pipe; the first 4 KiB
    // are kept.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(4096).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            String::from_utf8_lossy(&kept).trim().to_owned()
        })
    });
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) | Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProbeFailure::TimedOut);
        }
    };
    let stderr = stderr
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    match status.code() {
        Some(0) => Ok(()),
        Some(code) if code == i32::from(PROBE_REFUSED) => Err(ProbeFailure::Refused(stderr)),
        Some(code) => Err(ProbeFailure::Crashed {
            how: format!("exit code {code}"),
            stderr,
        }),
        None => Err(ProbeFailure::Crashed {
            how: ended_by_signal(&status),
            stderr,
        }),
    }
}

/// `signal N` for a process that a signal ended.
fn ended_by_signal(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    status.to_string()
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(program, e) => write!(f, "cannot start the probe process {program}: {e}"),
            Self::TimedOut => {
                f.write_str("its initialisers did not return in a probe process, which was killed")
            }
            Self::Crashed { how, stderr } if stderr.is_empty() => {
                write!(f, "its initialisers ended a probe process ({how})")
            }
            Self::Crashed { how, stderr } => {
                write!(
                    f,
                    "its initialisers ended a probe process ({how}): {stderr}"
                )
            }
            Self::Refused(message) => f.write_str(message),
        }
    }
}
