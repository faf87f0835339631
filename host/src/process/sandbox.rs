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
//!   Declared paths are the next step (issue 16, part 4).
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
//!   modules, `kexec`, `bpf`, `perf_event_open`, `userfaultfd`, mounts and
//!   namespaces, `chroot`, swap, reboot, the clock, `keyctl`,
//!   `iopl`/`ioperm`, `quotactl`, `open_by_handle_at`. The x32 system call
//!   numbers (x86_64 only, bit 30 set) are not filtered: kernels built
//!   without x32, as this one, refuse them all.
//!
//! What the kernel does not support is reported, never silently skipped:
//! the handshake carries a [`Confinement`] that the host logs and shows in
//! `/plugins`.

use std::collections::BTreeMap;

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
}

/// Sets up Landlock and seccomp for this process (every thread), and says
/// how far each holds. `pid` is this process's id (the only process it may
/// signal).
pub(crate) fn confine(pid: u32) -> Confinement {
    Confinement {
        landlock: match landlock(pid) {
            Ok(status) => status.to_owned(),
            Err(why) => format!("none: {why}"),
        },
        seccomp: match seccomp(pid) {
            Ok(()) => String::from("on"),
            Err(why) => format!("none: {why}"),
        },
    }
}

/// What a worker may read: every top-level directory but `/proc`, and of
/// `/proc` its own entries and the system-wide files runtimes read.
fn readable(pid: u32) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir("/")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.as_path() != std::path::Path::new("/proc"))
        .collect();
    paths.push(format!("/proc/{pid}").into());
    for shared in [
        "cpuinfo",
        "meminfo",
        "stat",
        "loadavg",
        "sys",
        "filesystems",
    ] {
        paths.push(std::path::Path::new("/proc").join(shared));
    }
    paths
}

/// Landlock: reads as [`readable`] says, no writes but `/dev/null`.
fn landlock(pid: u32) -> Result<&'static str, String> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
        path_beneath_rules,
    };

    let abi = ABI::V6;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        // No signal to a process outside this worker (the host runs as the
        // same user), no abstract Unix socket of another process.
        .and_then(|ruleset| ruleset.scope(Scope::Signal | Scope::AbstractUnixSocket))
        .and_then(|ruleset| ruleset.create())
        .and_then(|ruleset| {
            ruleset.add_rules(path_beneath_rules(readable(pid), AccessFs::from_read(abi)))
        })
        .and_then(|ruleset| {
            ruleset.add_rules(path_beneath_rules(
                ["/dev/null"],
                AccessFs::ReadFile | AccessFs::WriteFile,
            ))
        })
        .and_then(|ruleset| ruleset.restrict_self())
        .map_err(|e| e.to_string())?;
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
    libc::SYS_fork,
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
fn seccomp(pid: u32) -> Result<(), String> {
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
