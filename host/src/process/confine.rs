//! The system calls of the `process` tier, and its only `unsafe` code: how
//! a worker is started (its two descriptors at fixed numbers, tied to the
//! host's life, in a process group of its own) and how it confines itself
//! before the plugin's bytes are loaded (`no_new_privs`, resource limits).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The descriptor number at which a worker finds the sealed memfd of the
/// verified bytes.
pub(crate) const STAGED_FD: RawFd = 3;
/// The descriptor number at which a worker finds its end of the socket
/// pair.
pub(crate) const SOCKET_FD: RawFd = 4;

/// Makes `command` start a worker: in the child, between `fork` and
/// `exec`, `staged` and `socket` are duplicated to [`STAGED_FD`] and
/// [`SOCKET_FD`] (the only descriptors it inherits besides standard input,
/// output and error: everything else the host opens is close-on-exec), the
/// child asks for `SIGKILL` when the thread that forked it ends
/// (`PR_SET_PDEATHSIG`: the host's spawner thread lives as long as the
/// host, so a host killed with `SIGKILL` takes its workers along), closes
/// at `exec` every other descriptor it inherited from whatever started the
/// host (`close_range`), and leads a session of its own (`setsid`: a terminal's
/// Ctrl-C reaches the host, which then shuts its workers down in order, and
/// the worker cannot join the host's process group).
pub(crate) fn pass_descriptors(
    command: &mut std::process::Command,
    staged: BorrowedFd<'_>,
    socket: BorrowedFd<'_>,
) {
    use std::os::unix::process::CommandExt;

    let (staged, socket) = (staged.as_raw_fd(), socket.as_raw_fd());
    // SAFETY: the closure runs in the child between `fork` and `exec` and
    // calls only async-signal-safe functions (`fcntl`, `dup2`, `prctl`,
    // `close_range`, `setsid`), allocating nothing and taking no lock. `staged` and
    // `socket` are open in the parent for as long as the spawn runs (the
    // caller holds both), so they are open in the child. Each is first
    // copied above the target numbers (close-on-exec copies), so that
    // `dup2` never overwrites the other one; `dup2` to another number
    // clears close-on-exec on the target.
    unsafe {
        command.pre_exec(move || {
            let high_staged = libc::fcntl(staged, libc::F_DUPFD_CLOEXEC, 10);
            let high_socket = libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 10);
            if high_staged < 0
                || high_socket < 0
                || libc::dup2(high_staged, STAGED_FD) < 0
                || libc::dup2(high_socket, SOCKET_FD) < 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0
                // Close-on-exec, not closed: the spawn's own error pipe
                // must stay open until the `exec`.
                || libc::syscall(
                    libc::SYS_close_range,
                    SOCKET_FD + 1,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) < 0
                || libc::setsid() < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes the descriptor a worker inherited at `fd` ([`STAGED_FD`] or
/// [`SOCKET_FD`]); `None` when nothing is open there. Call it once per
/// number, at the worker's start.
pub(crate) fn inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: `F_GETFD` only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and was passed to this process
    // by its parent for this process to own (`pass_descriptors`); nothing
    // else in the worker uses these numbers, and this is called once for
    // each, so the descriptor gets exactly one owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Close-on-exec from now on: nothing the plugin starts inherits it.
    // SAFETY: `F_SETFD` on a descriptor this process owns.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

/// Whether this process's parent is still `parent`: a worker whose host
/// died before `PR_SET_PDEATHSIG` took effect has been re-parented, and
/// must not run.
pub(crate) fn parent_is(parent: u32) -> bool {
    std::os::unix::process::parent_id() == parent
}

/// Sets `no_new_privs`: nothing this process executes gains privileges
/// (set-user-ID bits and file capabilities are ignored), and a seccomp
/// filter may be installed without `CAP_SYS_ADMIN`.
pub(crate) fn no_new_privs() -> std::io::Result<()> {
    // SAFETY: `PR_SET_NO_NEW_PRIVS` takes integer arguments and changes
    // only this process's privilege flag.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The worker's resource limits: `memory` bytes of address space more than
/// it has now, `files` open descriptors, no core files (a crash is
/// reported, not dumped).
///
/// Address space, not memory in use: a process reserves far more than it
/// touches (each thread's stack, each malloc arena's 64 MiB, an
/// allocator's arenas), so the limit is the process's size when it is set
/// plus the plugin's share.
pub(crate) fn limit(memory: u64, files: u64) -> std::io::Result<()> {
    use rlimit::Resource;

    // Never above the hard limit this process was given (only a
    // privileged process may raise it).
    let lower = |resource: Resource, value: u64| {
        let (_, hard) = rlimit::getrlimit(resource)?;
        let value = value.min(hard);
        rlimit::setrlimit(resource, value, value)
    };
    lower(Resource::CORE, 0)?;
    lower(Resource::NOFILE, files)?;
    lower(Resource::AS, address_space()?.saturating_add(memory))
}

/// This process's address-space size (`VmSize` of `/proc/self/status`), in
/// bytes.
fn address_space() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|size| size.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other("no VmSize in /proc/self/status"))
}
