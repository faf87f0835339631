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
//! - **seccomp** (a BPF filter by seccompiler, on every thread): the system
//!   calls a plugin never needs and an attacker would fail with `EPERM`:
//!   tracing or reading other processes (`ptrace`, `process_vm_*`,
//!   `pidfd_getfd`), signalling any process but the worker itself (the
//!   host runs as the same user), kernel modules, `kexec`, `bpf`,
//!   `perf_event_open`, `userfaultfd`, mounts and namespaces, `chroot`,
//!   swap, reboot, the clock, `keyctl`, `iopl`/`ioperm`, `quotactl`,
//!   `open_by_handle_at`.
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
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };

    let abi = ABI::V5;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
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

/// The system calls refused outright (see the module docs).
const REFUSED: &[i64] = &[
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
    let pid = u64::from(pid);
    rules.insert(libc::SYS_kill, vec![other_than(0, &[pid, 0])?]);
    rules.insert(libc::SYS_tgkill, vec![other_than(0, &[pid])?]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(error)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(error)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())
}
