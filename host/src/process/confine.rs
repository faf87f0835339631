//! The system calls of the `process` tier, and its only `unsafe` code: how
//! a worker is started (its two descriptors at fixed numbers, tied to the
//! host's life, in a process group of its own) and how it confines itself
//! before the plugin's bytes are loaded (root given up, `no_new_privs`,
//! resource limits).

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

/// The user and group a worker started by a root host runs as: `nobody`.
pub(crate) const UNPRIVILEGED: u32 = 65534;

/// A worker of a host running as root gives root up before anything else:
/// no supplementary groups, real, effective and saved group and user ids
/// [`UNPRIVILEGED`], so neither the plugin nor anything it could do with
/// root's rights (read any file, raw sockets, another user's processes)
/// is left; the kernel drops every capability with the user id. A worker
/// of an unprivileged host keeps its user. Returns the user id the worker
/// runs as.
///
/// The change of credentials resets the process's "dumpable" flag (its
/// `/proc` entries would turn root's, and `dlopen` of `/proc/self/fd/3`
/// would fail) and its parent-death signal: both are set again, so the
/// caller must check its parent afterwards ([`parent_is`]), in case the host
/// died in between.
pub(crate) fn drop_root() -> std::io::Result<u32> {
    // SAFETY: `geteuid` only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        // SAFETY: as above.
        return Ok(unsafe { libc::geteuid() });
    }
    let id = UNPRIVILEGED;
    // SAFETY: each call changes only this process's credentials or flags
    // and takes integers (`setgroups` a NULL list of length 0); glibc
    // applies the id changes to every thread of the process. Groups go
    // first: once the user id is not 0 they can no longer be changed.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) < 0
            || libc::setresgid(id, id, id) < 0
            || libc::setresuid(id, id, id) < 0
            || libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) < 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as for the first `geteuid`.
    if unsafe { libc::geteuid() } != id || unsafe { libc::getuid() } != id {
        return Err(std::io::Error::other("the user id did not change"));
    }
    Ok(id)
}

/// Makes this process undumpable once the plugin is loaded (its
/// `/proc/self/fd/3` read): its `/proc` entries turn root's, so no other
/// process of its user (every worker of a root host is `nobody`, as are
/// other daemons) can read its environment (the declared variables) or
/// memory, or trace it; no core file either.
pub(crate) fn undumpable() -> std::io::Result<()> {
    // SAFETY: `PR_SET_DUMPABLE` takes integer arguments and changes only
    // this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

/// What a hostile plugin would try against its sandbox (found by a review).
/// (Here: `sandbox` forbids unsafe code.) Each confines a child process (this test binary, run again for one
/// test) as a worker would, and tries what the declaration should deny.
#[cfg(test)]
mod hostile_plugins {
    use super::super::sandbox::confine;
    use backworks_plugin_sdk::abi::capabilities::Capabilities;

    const CHILD: &str = "BACKWORKS_REVIEW_SANDBOX_CHILD";
    const ESCAPED: i32 = 42;
    const HELD: i32 = 43;
    const NOT_CONFINED: i32 = 44;

    /// In a child run for `test`: runs `body` for its role and exits with
    /// whether it got what it should not have. Returns (nothing to do) in a
    /// child run for another test; in the parent, goes on.
    fn child_runs(test: &str, body: fn(&str) -> bool) -> bool {
        let Ok(running) = std::env::var(CHILD) else {
            return false;
        };
        if let Some(role) = running.strip_prefix(&format!("{test}/")) {
            std::process::exit(if body(role) { ESCAPED } else { HELD });
        }
        true
    }

    /// Runs the test `test` (its name in this module) again in a child
    /// process, as `role`: whether it got what it should not have.
    fn escaped_in_child(test: &str, role: &str) -> bool {
        escaped_in_child_with(test, role, &[])
    }

    /// [`escaped_in_child`] with more variables in the child's environment
    /// (never set in this multi-threaded test process).
    fn escaped_in_child_with(test: &str, role: &str, env: &[(&str, String)]) -> bool {
        let module = module_path!().split_once("::").unwrap().1;
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([&format!("{module}::{test}"), "--exact", "--test-threads=1"])
            .env(CHILD, format!("{test}/{role}"))
            .envs(env.iter().map(|(name, value)| (*name, value)))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        match status.code() {
            Some(ESCAPED) => true,
            Some(HELD) => false,
            other => panic!("{test}/{role}: the child was not confined as expected ({other:?})"),
        }
    }

    fn declared(value: serde_json::Value) -> Capabilities {
        Capabilities::from_value(&value).unwrap()
    }

    fn confine_or_exit(caps: &Capabilities) {
        let confinement = confine(std::process::id(), 0, Some(caps));
        if confinement.landlock != "full" || confinement.seccomp != "on" {
            eprintln!("{confinement:?}");
            std::process::exit(NOT_CONFINED);
        }
    }

    /// A declared read of `/proc/self/root` (`check` shows `read
    /// /proc/self/root`, beneath the worker's own `/proc` entry it may read
    /// anyway): the rule is made by opening the path, which follows the
    /// magic link, so the plugin reads the whole file system.
    #[test]
    fn a_declared_proc_magic_link_grants_the_whole_file_system() {
        fn body(role: &str) -> bool {
            let read = if role == "control" {
                vec![]
            } else {
                vec!["/proc/self/root"]
            };
            // `check_path` refuses such a path now; the sandbox must not
            // follow it either (a record is checked by the same code, but
            // the rules are the last line).
            confine_or_exit(&Capabilities {
                files: backworks_plugin_sdk::abi::capabilities::Files {
                    read: read.into_iter().map(String::from).collect(),
                    write: Vec::new(),
                },
                ..Capabilities::default()
            });
            std::fs::read("/etc/passwd").is_ok()
        }
        const TEST: &str = "a_declared_proc_magic_link_grants_the_whole_file_system";
        if child_runs(TEST, body) {
            return;
        }
        assert!(
            !escaped_in_child(TEST, "control"),
            "control: /etc/passwd read"
        );
        assert!(
            !escaped_in_child(TEST, "magic"),
            "declared read [\"/proc/self/root\"]: /etc/passwd read"
        );
    }

    /// A plugin that declares `write ["<dir>"]` and `read ["<dir>/data"]`
    /// makes `<dir>/data` a symbolic link to `/` in one run; at its next
    /// start (a crash is enough) the read rule follows the link: the
    /// plugin reads the whole file system. Same with a write rule.
    #[test]
    fn a_symbolic_link_the_plugin_made_in_its_write_path_widens_its_next_sandbox() {
        fn caps() -> Capabilities {
            let dir = std::env::var("BACKWORKS_REVIEW_DIR").unwrap();
            declared(serde_json::json!({
                "files": {"read": [format!("{dir}/data")], "write": [dir]},
            }))
        }
        fn body(role: &str) -> bool {
            let caps = caps();
            confine_or_exit(&caps);
            match role {
                // The first run: the plugin plants the link (allowed: it
                // may write its directory).
                "first" => {
                    std::os::unix::fs::symlink("/", &caps.files.read[0]).is_ok()
                        && std::fs::read("/etc/passwd").is_err()
                }
                _ => std::fs::read("/etc/passwd").is_ok(),
            }
        }
        const TEST: &str =
            "a_symbolic_link_the_plugin_made_in_its_write_path_widens_its_next_sandbox";
        if child_runs(TEST, body) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let env = [(
            "BACKWORKS_REVIEW_DIR",
            dir.path().to_str().unwrap().to_owned(),
        )];
        assert!(
            escaped_in_child_with(TEST, "first", &env),
            "the first run could not plant the link (or read /etc/passwd)"
        );
        assert!(
            !escaped_in_child_with(TEST, "second", &env),
            "second run: /etc/passwd read through the planted link"
        );
    }

    /// `network = "none"`: seccomp refuses `socket`; io_uring's
    /// `IORING_OP_SOCKET` (Linux 5.19) makes a socket without that call (the
    /// review connected to a local daemon's Unix socket through it), so no
    /// worker may set up a ring at all.
    #[test]
    fn network_none_makes_no_socket_through_io_uring() {
        fn body(_: &str) -> bool {
            confine_or_exit(&declared(serde_json::json!({"network": "none"})));
            // SAFETY: a test child; `socket` takes integers, and
            // `io_uring_setup` reads and writes the 120-byte parameter
            // block it is given, which this buffer covers.
            unsafe {
                if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) >= 0 {
                    std::process::exit(NOT_CONFINED);
                }
                let mut params = [0u8; 256];
                let ring =
                    libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) as i32;
                ring >= 0
            }
        }
        const TEST: &str = "network_none_makes_no_socket_through_io_uring";
        if child_runs(TEST, body) {
            return;
        }
        assert!(
            !escaped_in_child(TEST, "plugin"),
            "network none: an io_uring ring was set up (it makes sockets)"
        );
    }

    /// A list of endpoints: Landlock holds TCP `connect` to their ports,
    /// but an MPTCP socket (`socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)`,
    /// allowed by seccomp: it is `AF_INET`) is not TCP to Landlock's
    /// network rules and connects to any port (`net.mptcp.enabled` is 1 by
    /// default), falling back to plain TCP with a server that does not
    /// speak MPTCP.
    #[test]
    fn declared_endpoints_do_not_hold_an_mptcp_socket() {
        fn body(role: &str) -> bool {
            let port: u16 = std::env::var("BACKWORKS_REVIEW_PORT")
                .unwrap()
                .parse()
                .unwrap();
            confine_or_exit(&declared(serde_json::json!({"network": ["127.0.0.1:9"]})));
            let protocol = if role == "control" { 0 } else { 262 }; // IPPROTO_MPTCP
            // SAFETY: a test child; a socket and an address it owns.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, protocol);
                if fd < 0 {
                    return false;
                }
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                ) == 0
            }
        }
        const TEST: &str = "declared_endpoints_do_not_hold_an_mptcp_socket";
        if child_runs(TEST, body) {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let env = [("BACKWORKS_REVIEW_PORT", port.to_string())];
        assert!(
            !escaped_in_child_with(TEST, "control", &env),
            "control: TCP connected to port {port}"
        );
        assert!(
            !escaped_in_child_with(TEST, "mptcp", &env),
            "network [\"127.0.0.1:9\"]: MPTCP connected to port {port}"
        );
    }
}
