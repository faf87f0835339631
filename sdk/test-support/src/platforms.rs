//! The platforms this machine does not run natively, run here all the same:
//! `backworks` and `cargo-backworks` built for `x86_64-pc-windows-gnu`
//! (mingw-w64) and run under wine, and built for
//! `aarch64-unknown-linux-gnu` (cargo-zigbuild) and run under qemu-user
//! with Debian's arm64 C library.
//!
//! Each pair of tools is built once per test run, with the dev profile and
//! no debug info, into one target directory (`target/cross`). A tool that is
//! missing fails the test with the command that installs it (`scripts/setup`
//! installs them all), never a silent skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::fixtures::{WINDOWS_GNU, workspace};

/// The aarch64 Linux target, run under qemu-user.
pub const AARCH64_LINUX: &str = "aarch64-unknown-linux-gnu";

/// Where Debian's `libc6-arm64-cross` puts the arm64 C library: qemu's `-L`.
const ARM64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// Where Debian's `wine64` puts its loader: not on `PATH`.
const WINE64: &str = "/usr/lib/wine/wine64";

/// The two tools built for one target.
#[derive(Debug, Clone)]
pub struct CrossTools {
    /// `backworks` (`backworks.exe` for Windows).
    pub backworks: PathBuf,
    /// `cargo-backworks` (`cargo-backworks.exe` for Windows).
    pub cargo_backworks: PathBuf,
}

/// `backworks` and `cargo-backworks` built for `target` (`WINDOWS_GNU` or
/// [`AARCH64_LINUX`]), once per test run.
pub fn cross_tools(target: &str) -> CrossTools {
    static BUILT: OnceLock<Mutex<HashMap<String, CrossTools>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    built
        .entry(target.to_owned())
        .or_insert_with(|| build_tools(target))
        .clone()
}

fn build_tools(target: &str) -> CrossTools {
    let mut command = match target {
        WINDOWS_GNU => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = Command::new(cargo);
            command.env(
                "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER",
                "x86_64-w64-mingw32-gcc",
            );
            command
        }
        // zig is both the C compiler ring's build needs and the linker.
        AARCH64_LINUX => Command::new(cargo_zigbuild()),
        other => panic!("no cross build of the tools for {other}"),
    };
    let target_dir = workspace().join("target").join("cross");
    command
        .current_dir(workspace())
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
            "-p",
            "backworks-host",
            "--bin",
            "backworks",
            "-p",
            "cargo-backworks",
            "--bin",
            "cargo-backworks",
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building backworks and cargo-backworks for {target} failed (needs `rustup target add {target}` and, for windows-gnu, Debian's gcc-mingw-w64-x86-64, for aarch64 cargo-zigbuild and zig; scripts/setup installs them):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("cargo prints UTF-8");
    let executable = |name: &str| {
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo reported no executable {name} for {target}"))
    };
    CrossTools {
        backworks: executable("backworks"),
        cargo_backworks: executable("cargo-backworks"),
    }
}

/// cargo-zigbuild where `scripts/setup` puts it: on `PATH`, else in
/// Python's user scripts directory.
fn cargo_zigbuild() -> PathBuf {
    find_on_path("cargo-zigbuild")
        .or_else(|| python_user_bin("cargo-zigbuild"))
        .unwrap_or_else(|| {
            panic!(
                "cargo-zigbuild is neither on PATH nor in Python's user scripts directory: run scripts/setup (or `pip install --user ziglang cargo-zigbuild`)"
            )
        })
}

/// `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `name` in Python's user scripts directory (`pip install --user`).
pub fn python_user_bin(name: &str) -> Option<PathBuf> {
    let output = Command::new("python3")
        .args(["-m", "site", "--user-base"])
        .output()
        .ok()?;
    let base = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(base.trim()).join("bin").join(name)).filter(|p| p.is_file())
}

/// wine, with a prefix of its own for the test run (`target/cross/wine`).
#[derive(Debug, Clone)]
pub struct Wine {
    program: PathBuf,
    prefix: PathBuf,
    /// The stand-in `bcryptprimitives.dll`, put beside each program run.
    bcryptprimitives: PathBuf,
}

/// wine (Debian's `wine64`), its prefix made once per test run.
pub fn wine() -> Wine {
    static WINE: OnceLock<Wine> = OnceLock::new();
    WINE.get_or_init(|| {
        let program = [PathBuf::from(WINE64)]
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| find_on_path("wine64"))
            .unwrap_or_else(|| {
                panic!("wine64 is missing ({WINE64}, or on PATH): run scripts/setup (or `apt-get install wine64`)")
            });
        let dir = workspace().join("target").join("cross").join("wine");
        std::fs::create_dir_all(&dir).unwrap();
        let source = workspace().join("sdk/test-support/src/platforms/bcryptprimitives.c");
        let bcryptprimitives = dir.join("bcryptprimitives.dll");
        let output = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-O2", "-Wall", "-Werror", "-shared", "-o"])
            .arg(&bcryptprimitives)
            .arg(&source)
            .arg("-lbcrypt")
            .output()
            .expect("x86_64-w64-mingw32-gcc runs (scripts/setup installs gcc-mingw-w64-x86-64)");
        assert!(
            output.status.success(),
            "building {}: {}",
            bcryptprimitives.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let wine = Wine {
            program,
            prefix: dir.join("prefix"),
            bcryptprimitives,
        };
        // The prefix is made by the first program run in it (a few
        // seconds): once here, not by tests racing each other.
        let output = wine
            .raw_command()
            .args(["cmd", "/c", "exit"])
            .output()
            .expect("wine runs");
        assert!(
            output.status.success(),
            "wine could not make its prefix {}: {}",
            wine.prefix.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        wine
    })
    .clone()
}

impl Wine {
    fn raw_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No window system is needed, or wanted.
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        command
    }

    /// Drive `C:` of the prefix: where Windows programs under this wine
    /// keep their temporary files (`users/<user>/Temp`).
    pub fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// One of wine's own programs (`cmd`, …) run with `args` (the first
    /// names the program).
    pub fn builtin(&self, args: &[&str]) -> Command {
        let mut command = self.raw_command();
        command.args(args);
        command
    }

    /// `exe` (a Windows program) run under wine, with the stand-in
    /// `bcryptprimitives.dll` beside it, where Windows looks first.
    pub fn command(&self, exe: &Path) -> Command {
        let beside = exe
            .parent()
            .expect("a program in a directory")
            .join("bcryptprimitives.dll");
        if !beside.is_file() {
            std::fs::copy(&self.bcryptprimitives, &beside).unwrap();
        }
        let mut command = self.raw_command();
        command.arg(exe);
        command
    }
}

/// qemu-user for aarch64, with Debian's arm64 C library.
#[derive(Debug, Clone)]
pub struct Qemu {
    program: PathBuf,
}

/// `qemu-aarch64` (Debian's `qemu-user`), checked with its C library
/// (`libc6-arm64-cross`).
pub fn qemu_aarch64() -> Qemu {
    let program = find_on_path("qemu-aarch64").unwrap_or_else(|| {
        panic!("qemu-aarch64 is not on PATH: run scripts/setup (or `apt-get install qemu-user`)")
    });
    let loader = Path::new(ARM64_SYSROOT).join("lib/ld-linux-aarch64.so.1");
    assert!(
        loader.is_file(),
        "{} is missing: run scripts/setup (or `apt-get install libc6-arm64-cross`)",
        loader.display()
    );
    Qemu { program }
}

impl Qemu {
    /// `binary` (an aarch64 Linux program) run under qemu, its libraries
    /// from the arm64 sysroot.
    pub fn command(&self, binary: &Path) -> Command {
        let mut command = Command::new(&self.program);
        command.arg("-L").arg(ARM64_SYSROOT).arg(binary);
        command
    }
}
