//! The kernel's sandbox around a worker, set up before the plugin's bytes
//! are loaded (so before any code of the plugin runs, its initialisers
//! included), on top of `no_new_privs` and the resource limits
//! (`confine`):
//!
//! - **Landlock** (Linux 5.13 and later; unprivileged): the plugin may read
//!   files anywhere the worker's user may, except other processes' entries
//!   in `/proc` (the host's environment, memory and descriptors: the host
//!   runs as the same user), and write none (no file created, written,
//!   truncated, removed or renamed, no directory made), but `/dev/null`.
//!   A plugin that declares its capabilities (`docs/abi.md` §2) reads only
//!   its declared paths, the system's libraries and what the runtime reads
//!   about the machine (`SYSTEM_READABLE`, and the resolver's files when it
//!   declares a network), writes only its declared write paths, and, when
//!   its network is `none` or a list of endpoints, connects over TCP only
//!   to the declared ports and binds none (Landlock ABI 4, Linux 6.7; host
//!   names cannot be held by the kernel: they are shown, not enforced).
//!   Its scopes keep signals and abstract Unix sockets inside the worker
//!   (Linux 6.12 and later).
//! - **seccomp** (BPF filters by seccompiler, on every thread): the system
//!   calls a plugin never needs and an attacker would fail with `EPERM`:
//!   new processes (`fork`, `vfork`, `clone` without `CLONE_THREAD`;
//!   `clone3` fails with `ENOSYS`, on which the C library makes threads
//!   with `clone`), tracing or reading other processes (`ptrace`,
//!   `process_vm_*`, `pidfd_getfd`), signalling any process but the worker
//!   itself (`kill`, `tkill`, `tgkill`, `pidfd_send_signal`, SIGIO owners
//!   by `fcntl` and `ioctl`: the host runs as the same user), another
//!   process's limits or scheduling, leaving the worker's session, kernel
//!   modules, `kexec`, `bpf`, `perf_event_open`, `userfaultfd`, io_uring
//!   (it makes sockets and opens files past this filter), mounts and
//!   namespaces, `chroot`, swap, reboot, the clock, `keyctl`,
//!   `iopl`/`ioperm`, `quotactl`, `open_by_handle_at`. The x32 system call
//!   numbers (x86_64 only, bit 30 set) are not filtered: kernels built
//!   without x32, as this one, refuse them all.
//!
//! What the kernel does not support is reported, never silently skipped:
//! the handshake carries a [`Confinement`] that the host logs and shows in
//! `/plugins`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use backworks_plugin_sdk::abi::capabilities::{Capabilities, Network};

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// How far the sandbox holds, as the worker found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confinement {
    /// `full`, `partial` (an older kernel enforces part of the rules) or
    /// `none: <why>`.
    pub landlock: String,
    /// `on` or `none: <why>`.
    pub seccomp: String,
    /// The user id the worker runs as (65534, `nobody`, when the host runs
    /// as root).
    pub uid: u32,
    /// How the plugin's declared capabilities are held, one line: `not
    /// declared (defaults)`, or what the kernel enforces of the network
    /// and the files.
    pub capabilities: String,
}

/// Sets up Landlock and seccomp for this process (every thread), and says
/// how far each holds. `pid` is this process's id (the only process it may
/// signal); `declared` what the plugin's record declares it needs (`None`:
/// nothing, the defaults of the module docs).
pub(crate) fn confine(pid: u32, uid: u32, declared: Option<&Capabilities>) -> Confinement {
    let mut enforced = Enforced::default();
    let landlock = match landlock(pid, declared, &mut enforced) {
        Ok(status) => status.to_owned(),
        Err(why) => format!("none: {why}"),
    };
    let seccomp = match seccomp(pid, declared.map(|d| &d.network)) {
        Ok(()) => String::from("on"),
        Err(why) => format!("none: {why}"),
    };
    Confinement {
        capabilities: match declared {
            None => String::from("not declared (defaults)"),
            Some(_) if !landlock_holds(&landlock) => {
                format!("declared, not enforced: Landlock is {landlock}")
            }
            Some(declared) => enforced.describe(declared),
        },
        landlock,
        seccomp,
        uid,
    }
}

fn landlock_holds(status: &str) -> bool {
    status == "full" || status == "partial"
}

/// What the kernel was told to hold of a declaration, for [`Confinement`].
#[derive(Debug, Default)]
struct Enforced {
    /// Declared paths that do not exist (no rule can name them: denied).
    missing: Vec<String>,
    /// TCP connect restricted to the declared ports (Landlock ABI 4 and up).
    tcp_ports: bool,
}

impl Enforced {
    fn describe(&self, declared: &Capabilities) -> String {
        let network = match &declared.network {
            Network::None => String::from("network none (no sockets)"),
            Network::Any => String::from("network any"),
            Network::Endpoints(endpoints) => {
                let ports = endpoints
                    .iter()
                    .map(|e| e.port.map_or_else(|| String::from("*"), |p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ");
                if self.tcp_ports {
                    format!("network: TCP connect to ports {ports} only (host names not enforced)")
                } else if endpoints.iter().any(|e| e.port.is_none()) {
                    format!(
                        "network: TCP connect to any port (an endpoint's port is `*`; declared {ports}; host names not enforced)"
                    )
                } else {
                    format!(
                        "network: ports {ports} not enforced (the kernel has no Landlock network rules)"
                    )
                }
            }
        };
        let mut files = format!(
            "files: {} read, {} write",
            declared.files.read.len(),
            declared.files.write.len()
        );
        if !self.missing.is_empty() {
            files.push_str(&format!(" (denied: {})", self.missing.join(", ")));
        }
        format!("enforced: {network}; {files}; env {}", declared.env.len())
    }
}

/// `path` opened (`O_PATH`) for a Landlock rule without following any
/// symbolic link on its way (`openat2` with `RESOLVE_NO_SYMLINKS`): a
/// declared path that is or goes through a link (one the plugin made in a
/// directory it may write, say) names no rule, so it is denied and
/// reported, never widened to where the link points.
fn open_without_links(path: &str) -> Result<OwnedFd, String> {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};

    openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|errno| match errno {
        rustix::io::Errno::NOENT => String::from("missing"),
        rustix::io::Errno::LOOP => String::from("a symbolic link on its way"),
        other => other.to_string(),
    })
}

/// What a worker may read with no declaration: every top-level directory
/// but `/proc`, and [`PROC_SHARED`] and its own entries of `/proc`.
fn readable(pid: u32) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.as_path() != Path::new("/proc"))
        .collect();
    paths.extend(own_proc(pid));
    paths
}

/// The system-wide files of `/proc` runtimes read.
const PROC_SHARED: &[&str] = &[
    "cpuinfo",
    "meminfo",
    "stat",
    "loadavg",
    "sys",
    "filesystems",
];

fn own_proc(pid: u32) -> impl Iterator<Item = PathBuf> {
    std::iter::once(PathBuf::from(format!("/proc/{pid}"))).chain(
        PROC_SHARED
            .iter()
            .map(|shared| Path::new("/proc").join(shared)),
    )
}

/// What every declaring plugin may read beyond its declaration: the
/// dynamic loader's libraries and cache (the plugin's own dependencies are
/// linked when it is loaded, after the sandbox is set), and what the Rust
/// runtime reads about the machine (CPUs, cgroup limits).
const SYSTEM_READABLE: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/etc/ld.so.cache",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];

/// What a plugin that declares a network may read to resolve names.
const RESOLVER_READABLE: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
];

/// Landlock: with no declaration, reads as [`readable`] says and no writes
/// but `/dev/null`; with one, reads of the declared paths (read and write)
/// and of [`SYSTEM_READABLE`] (and [`RESOLVER_READABLE`] with a network),
/// writes of the declared write paths, and TCP connect only to the
/// declared ports (binds never) when the declaration restricts the network.
fn landlock(
    pid: u32,
    declared: Option<&Capabilities>,
    enforced: &mut Enforced,
) -> Result<&'static str, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, path_beneath_rules,
    };

    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?;
    // Connect rules by port; a port `*` leaves connect alone.
    let mut connect_ports: Option<Vec<u16>> = None;
    if let Some(declared) = declared {
        match &declared.network {
            Network::Any => {}
            Network::None => connect_ports = Some(Vec::new()),
            Network::Endpoints(endpoints) => {
                connect_ports = endpoints.iter().map(|e| e.port).collect();
            }
        }
        let net = match (&connect_ports, &declared.network) {
            (_, Network::Any) => None,
            (Some(_), _) => Some(AccessNet::from_all(abi)),
            // A port `*`: binds only.
            (None, _) => Some(AccessNet::BindTcp.into()),
        };
        if let Some(net) = net {
            ruleset = ruleset.handle_access(net).map_err(|e| e.to_string())?;
        }
    }
    let mut ruleset = ruleset
        // No signal to a process outside this worker (the host runs as the
        // same user), no abstract Unix socket of another process.
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .and_then(|ruleset| ruleset.create())
        .map_err(|e| e.to_string())?;
    let read = AccessFs::from_read(abi);
    let write = AccessFs::from_all(abi);
    let (readable, declared_paths) = match declared {
        None => (readable(pid), None),
        Some(declared) => {
            let mut readable: Vec<PathBuf> = own_proc(pid)
                .chain(SYSTEM_READABLE.iter().map(PathBuf::from))
                .collect();
            if !matches!(declared.network, Network::None) {
                readable.extend(RESOLVER_READABLE.iter().map(PathBuf::from));
            }
            // System paths a machine lacks are nobody's business; declared
            // ones are reported.
            readable.retain(|path| path.exists());
            let mut opened = |paths: &[String]| -> Vec<OwnedFd> {
                paths
                    .iter()
                    .filter_map(|path| match open_without_links(path) {
                        Ok(fd) => Some(fd),
                        Err(why) => {
                            enforced.missing.push(format!("{path} ({why})"));
                            None
                        }
                    })
                    .collect()
            };
            let declared_read = opened(&declared.files.read);
            let declared_write = opened(&declared.files.write);
            (readable, Some((declared_read, declared_write)))
        }
    };
    ruleset = ruleset
        .add_rules(path_beneath_rules(readable, read))
        .and_then(|ruleset| {
            let (declared_read, declared_write) = declared_paths.unwrap_or_default();
            // A file gets the accesses of a file only (as
            // `path_beneath_rules` does): directory rights on a file would
            // make the ruleset only partly enforced.
            let beneath = |fd: OwnedFd, access: BitFlags<AccessFs>| {
                let is_dir = rustix::fs::fstat(&fd)
                    .is_ok_and(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir());
                let access = if is_dir {
                    access
                } else {
                    access & AccessFs::from_file(abi)
                };
                Ok::<_, RulesetError>(PathBeneath::new(fd, access))
            };
            ruleset
                .add_rules(declared_read.into_iter().map(|fd| beneath(fd, read)))?
                .add_rules(declared_write.into_iter().map(|fd| beneath(fd, write)))
        })
        .and_then(|ruleset| {
            ruleset.add_rules(path_beneath_rules(
                ["/dev/null"],
                AccessFs::ReadFile | AccessFs::WriteFile,
            ))
        })
        .map_err(|e| e.to_string())?;
    for port in connect_ports.iter().flatten() {
        ruleset = ruleset
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|e| e.to_string())?;
    }
    let status = ruleset.restrict_self().map_err(|e| e.to_string())?;
    // Network rules need Landlock ABI 4 (Linux 6.7): an older kernel
    // enforces the rest only (partially).
    enforced.tcp_ports =
        connect_ports.is_some() && matches!(status.ruleset, RulesetStatus::FullyEnforced);
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => {
            return Err(String::from("the kernel does not support Landlock"));
        }
    })
}

/// `fcntl` and `ioctl` requests that name who gets a descriptor's SIGIO
/// (`<asm-generic/fcntl.h>`, `<asm-generic/sockios.h>`: the same on every
/// Linux architecture this host builds for; the `libc` crate lacks them).
const F_SETSIG: u64 = 10;
const F_SETOWN_EX: u64 = 15;
const FIOSETOWN: u64 = 0x8901;
const SIOCSPGRP: u64 = 0x8902;

/// The system calls refused outright (see the module docs).
const REFUSED: &[i64] = &[
    // New processes would escape the worker's supervision and limits
    // (`clone` without `CLONE_THREAD` is refused below; `clone3` too).
    // aarch64 has no `fork` or `vfork`: its C library forks with `clone`.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
    // Leaving the worker's session and process group, joining the host's.
    libc::SYS_setpgid,
    libc::SYS_setsid,
    // Another process's limits, scheduling, memory placement.
    libc::SYS_ioprio_set,
    libc::SYS_move_pages,
    libc::SYS_migrate_pages,
    libc::SYS_process_madvise,
    libc::SYS_kcmp,
    libc::SYS_get_robust_list,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_pidfd_send_signal,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    // io_uring makes sockets and opens files without the system calls the
    // filter reads (`IORING_OP_SOCKET`): no worker needs it.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_fanotify_init,
    libc::SYS_personality,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// seccomp: [`REFUSED`] fail with `EPERM`; `kill` only to this process
/// (`pid`) or its own process group (0), `tgkill` only in this process.
/// A declared network restricts `socket`: `none` refuses every new socket
/// (a Unix socket could reach a local daemon: Landlock does not cover
/// connecting to one); a list of endpoints allows IPv4, IPv6 and netlink
/// (the resolver's) sockets only.
fn seccomp(pid: u32, network: Option<&Network>) -> Result<(), String> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))?;
    let error = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|call| (*call, Vec::new())).collect();
    let other_than = |arg: u8, values: &[u64]| -> Result<SeccompRule, String> {
        let conditions = values
            .iter()
            .map(|value| {
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *value)
                    .map_err(error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        SeccompRule::new(conditions).map_err(error)
    };
    let masked = |arg: u8, mask: u64, value: u64| -> Result<SeccompRule, String> {
        let condition = SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )
        .map_err(error)?;
        SeccompRule::new(vec![condition]).map_err(error)
    };
    let equal = |arg: u8, value: u64| -> Result<SeccompRule, String> {
        let condition =
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                .map_err(error)?;
        SeccompRule::new(vec![condition]).map_err(error)
    };
    let pid = u64::from(pid);
    // Signals: only to this process (or its own group, `kill(0)`, which
    // holds this process alone: a worker leads a session of its own).
    rules.insert(libc::SYS_kill, vec![other_than(0, &[pid, 0])?]);
    rules.insert(libc::SYS_tgkill, vec![other_than(0, &[pid])?]);
    rules.insert(libc::SYS_tkill, vec![other_than(0, &[pid])?]);
    // Limits and scheduling: only this process's (0 or its pid).
    for call in [
        libc::SYS_prlimit64,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setattr,
    ] {
        rules.insert(call, vec![other_than(0, &[pid, 0])?]);
    }
    // `setpriority(which, who, ...)`: a process (which 0) that is this one.
    rules.insert(
        libc::SYS_setpriority,
        vec![other_than(0, &[0])?, other_than(1, &[pid, 0])?],
    );
    // A new thread, never a new process.
    rules.insert(
        libc::SYS_clone,
        vec![masked(0, libc::CLONE_THREAD as u64, 0)?],
    );
    // SIGIO/SIGURG to another process: an owner other than this one.
    rules.insert(
        libc::SYS_fcntl,
        vec![
            equal(1, libc::F_SETOWN as u64)?,
            equal(1, F_SETOWN_EX)?,
            equal(1, F_SETSIG)?,
        ],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![equal(1, FIOSETOWN)?, equal(1, SIOCSPGRP)?],
    );
    match network {
        None | Some(Network::Any) => {}
        Some(Network::None) => {
            rules.insert(libc::SYS_socket, Vec::new());
        }
        Some(Network::Endpoints(_)) => {
            rules.insert(
                libc::SYS_socket,
                vec![
                    other_than(
                        0,
                        &[
                            libc::AF_INET as u64,
                            libc::AF_INET6 as u64,
                            libc::AF_NETLINK as u64,
                        ],
                    )?,
                    // Landlock's TCP rules do not hold MPTCP sockets.
                    equal(2, libc::IPPROTO_MPTCP as u64)?,
                ],
            );
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(error)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(error)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())?;
    // `clone3` cannot be told a thread from a process by its arguments (a
    // pointer): it fails with ENOSYS, on which the C library makes its
    // threads with `clone`, whose flags the filter above reads.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(error)?;
    let program: seccompiler::BpfProgram = clone3.try_into().map_err(error)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())
}
