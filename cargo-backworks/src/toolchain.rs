//! How `cargo backworks build` builds for each target: which cargo command,
//! which linker, which environment, or what is missing and how to install it.
//!
//! Decided up front for every requested target ([`Probe::plan`]), so a build can
//! report every target it cannot build before it spends time on the others:
//!
//! 1. The target's standard library must be installed
//!    (`<rustc --print sysroot>/lib/rustlib/<target>/lib`); else
//!    `rustup target add <target>`.
//! 2. The host's own target is built with plain cargo.
//! 3. A cross target with a linker configured by the user
//!    (`CARGO_TARGET_<TRIPLE>_LINKER`, or `target.<triple>.linker` in a
//!    `.cargo/config.toml` cargo reads) is built with plain cargo and that
//!    linker: the user's choice wins.
//! 4. Else with `cargo zigbuild` when `cargo-zigbuild` and zig (`zig` on
//!    `PATH`, `$CARGO_ZIGBUILD_ZIG_PATH`, or `python3 -m ziglang`) are found
//!    (except for `*-windows-gnu`: see [`zig_links`]).
//! 5. Else with plain cargo and a known cross gcc on `PATH`
//!    (`x86_64-w64-mingw32-gcc`, `aarch64-linux-gnu-gcc`, …).
//! 6. Else the target is [`Missing`], with the commands that install what it
//!    needs.
//!
//! Apple targets get `MACOSX_DEPLOYMENT_TARGET` (unless set): without it zig
//! links for the newest macOS. [`DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64`] is
//! 11.0, the first macOS on Apple silicon;
//! [`DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64`] is 10.12, rustc's own minimum
//! for `x86_64-apple-darwin`. (The build gives their libraries the install
//! name `@rpath/lib<name>.dylib`, see [`crate::build`].)

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// The `pip install` that provides zig and cargo-zigbuild, with the
/// versions `scripts/setup` installs.
pub const ZIGBUILD_INSTALL: &str = "pip install ziglang==0.17.1 cargo-zigbuild==0.24.1";

/// `MACOSX_DEPLOYMENT_TARGET` for `aarch64-apple-darwin` unless the user set
/// it: macOS 11, the first on Apple silicon.
pub const DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64: &str = "11.0";

/// `MACOSX_DEPLOYMENT_TARGET` for `x86_64-apple-darwin` (and other Apple
/// targets) unless the user set it: 10.12, rustc's minimum.
pub const DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64: &str = "10.12";

/// How one target is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Builder {
    /// `cargo build` with the toolchain's own linker (the host target).
    Cargo,
    /// `cargo build` with a cross linker.
    Linker {
        /// The linker program.
        linker: String,
        /// Where it came from: `env` (`CARGO_TARGET_<T>_LINKER`), `config`
        /// (a `.cargo/config.toml`) or `path` (a known cross gcc found on
        /// `PATH`).
        source: &'static str,
    },
    /// `cargo zigbuild`, zig as the C compiler and linker.
    Zigbuild {
        /// `zig version`.
        zig_version: String,
    },
}

impl fmt::Display for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cargo => f.write_str("cargo"),
            Self::Linker { linker, source } => {
                let from = match *source {
                    "env" => "from the environment",
                    "config" => "from .cargo/config.toml",
                    _ => "found on PATH",
                };
                write!(f, "cargo with linker {linker} ({from})")
            }
            Self::Zigbuild { zig_version } => write!(f, "cargo zigbuild (zig {zig_version})"),
        }
    }
}

/// A target that can be built: how, and with what environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target triple.
    pub target: String,
    /// How.
    pub builder: Builder,
    /// Environment variables to set for cargo.
    pub env: Vec<(String, String)>,
}

/// A target that cannot be built here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The target triple.
    pub target: String,
    /// What is missing, each with the command(s) that install it.
    pub needs: Vec<Need>,
}

/// One missing thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// What is missing, e.g. "the Rust standard library for aarch64-apple-darwin".
    pub what: String,
    /// Commands that install it; any one suffices.
    pub install: Vec<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot build for {}: ", self.target)?;
        for (i, need) in self.needs.iter().enumerate() {
            if i > 0 {
                f.write_str("; and ")?;
            }
            write!(f, "{} is missing: install ", need.what)?;
            for (j, command) in need.install.iter().enumerate() {
                if j > 0 {
                    f.write_str(" or ")?;
                }
                write!(f, "with `{command}`")?;
            }
        }
        Ok(())
    }
}

/// The plan for one target: how to build it, or what is missing.
pub type Decision = Result<Plan, Missing>;

/// What the build machine has, found once and shared by every target's
/// decision.
#[derive(Debug)]
pub struct Probe {
    host: String,
    sysroot: Option<PathBuf>,
    known_targets: Option<Vec<String>>,
    zig: Option<Result<String, String>>,
    config_dirs: Vec<PathBuf>,
}

impl Probe {
    /// Probes the toolchain of the workspace at `dir` (where rustup's
    /// toolchain file applies) for host `host`.
    pub fn new(dir: &Path, host: &str) -> Self {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
        let print = |what: &str| {
            Command::new(&rustc)
                .args(["--print", what])
                .current_dir(dir)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let sysroot = print("sysroot").map(PathBuf::from);
        let known_targets = print("target-list").map(|list| {
            list.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        });
        let mut config_dirs: Vec<PathBuf> = dir.ancestors().map(|d| d.join(".cargo")).collect();
        if let Some(home) = cargo_home() {
            config_dirs.push(home);
        }
        Self {
            host: host.to_owned(),
            sysroot,
            known_targets,
            zig: None,
            config_dirs,
        }
    }

    /// Decides how to build each target.
    pub fn plan(&mut self, targets: &[String]) -> Vec<Decision> {
        targets.iter().map(|t| self.decide(t)).collect()
    }

    fn decide(&mut self, target: &str) -> Decision {
        let mut needs = Vec::new();
        if let Some(known) = &self.known_targets
            && !known.iter().any(|k| k == target)
        {
            needs.push(Need {
                what: format!("a Rust toolchain that knows the target `{target}` (rustc does not list it in `rustc --print target-list`)"),
                install: vec!["check the triple's spelling, or `rustup update` for a newer toolchain".to_owned()],
            });
            return Err(Missing {
                target: target.to_owned(),
                needs,
            });
        }
        if let Some(sysroot) = &self.sysroot
            && !sysroot
                .join("lib")
                .join("rustlib")
                .join(target)
                .join("lib")
                .is_dir()
        {
            needs.push(Need {
                what: format!("the Rust standard library for {target}"),
                install: vec![format!("rustup target add {target}")],
            });
        }
        let mut env = Vec::new();
        if target.contains("-apple-") {
            let variable = "MACOSX_DEPLOYMENT_TARGET";
            if std::env::var_os(variable).is_none() {
                let version = if target.starts_with("aarch64") {
                    DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64
                } else {
                    DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64
                };
                env.push((variable.to_owned(), version.to_owned()));
            }
        }
        let builder = if target == self.host {
            Some(Builder::Cargo)
        } else if let Some(linker) = std::env::var(linker_variable(target))
            .ok()
            .filter(|l| !l.is_empty())
        {
            Some(Builder::Linker {
                linker,
                source: "env",
            })
        } else if let Some(linker) = self.configured_linker(target) {
            Some(Builder::Linker {
                linker,
                source: "config",
            })
        } else if let Some(Ok(version)) = self.zig().filter(|_| zig_links(target)) {
            Some(Builder::Zigbuild {
                zig_version: version.clone(),
            })
        } else if let Some(gcc) = known_cross_gcc(target).filter(|(gcc, _)| on_path(gcc)) {
            env.push((linker_variable(target), gcc.0.to_owned()));
            Some(Builder::Linker {
                linker: gcc.0.to_owned(),
                source: "path",
            })
        } else {
            let mut why = Vec::new();
            let mut install = Vec::new();
            if zig_links(target) {
                why.push(match self.zig() {
                    Some(Err(why)) => why.clone(),
                    _ => "cargo-zigbuild and zig".to_owned(),
                });
                install.push(ZIGBUILD_INSTALL.to_owned());
            }
            if let Some((gcc, package)) = known_cross_gcc(target) {
                why.push(gcc.to_owned());
                install.push(format!("apt-get install {package}"));
            }
            if why.is_empty() {
                why.push("no known cross linker: set CARGO_TARGET_<TRIPLE>_LINKER".to_owned());
                install.push(format!(
                    "a linker for {target}, then `export {}=<linker>`",
                    linker_variable(target)
                ));
            }
            let why = why.join(", or ");
            needs.push(Need {
                what: format!("a linker for {target} ({why})"),
                install,
            });
            None
        };
        match builder {
            Some(builder) if needs.is_empty() => Ok(Plan {
                target: target.to_owned(),
                builder,
                env,
            }),
            _ => Err(Missing {
                target: target.to_owned(),
                needs,
            }),
        }
    }

    /// `target.<triple>.linker` from the first `.cargo/config.toml` (or
    /// `.cargo/config`) that sets it, in cargo's search order.
    fn configured_linker(&self, target: &str) -> Option<String> {
        self.config_dirs.iter().find_map(|dir| {
            ["config.toml", "config"].iter().find_map(|name| {
                let text = std::fs::read_to_string(dir.join(name)).ok()?;
                let document: toml_edit::DocumentMut = text.parse().ok()?;
                document
                    .get("target")?
                    .get(target)?
                    .get("linker")?
                    .as_str()
                    .map(str::to_owned)
            })
        })
    }

    /// `Some(Ok(zig version))` when cargo-zigbuild and zig are both usable,
    /// `Some(Err(what is missing))` otherwise; probed once.
    fn zig(&mut self) -> Option<&Result<String, String>> {
        if self.zig.is_none() {
            self.zig = Some(probe_zig());
        }
        self.zig.as_ref()
    }
}

/// Whether zig (through cargo-zigbuild) links working plugins for
/// `target`: not for `*-windows-gnu`, where zig's COFF linking exports the
/// functions of the `.def` file rustc writes but not the data symbol
/// `backworks_plugin_metadata` (seen with zig 0.17.1; `check` refuses such
/// a DLL), so those targets take the mingw-w64 gcc.
pub fn zig_links(target: &str) -> bool {
    !target.contains("-windows-gnu")
}

/// The `CARGO_TARGET_<TRIPLE>_LINKER` variable of a target.
pub fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The cross gcc Debian packages for a target, and the package providing it.
pub fn known_cross_gcc(target: &str) -> Option<(&'static str, &'static str)> {
    Some(match target {
        "x86_64-pc-windows-gnu" => ("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64"),
        "i686-pc-windows-gnu" => ("i686-w64-mingw32-gcc", "gcc-mingw-w64-i686"),
        "aarch64-unknown-linux-gnu" => ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        "x86_64-unknown-linux-gnu" => ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu"),
        "armv7-unknown-linux-gnueabihf" => ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
        "riscv64gc-unknown-linux-gnu" => ("riscv64-linux-gnu-gcc", "gcc-riscv64-linux-gnu"),
        _ => return None,
    })
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// Whether `program` is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let candidates = [
            dir.join(program),
            dir.join(format!("{program}{}", std::env::consts::EXE_SUFFIX)),
        ];
        candidates.into_iter().find(|c| is_executable(c))
    })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// cargo-zigbuild on `PATH` and a zig it can use, as cargo-zigbuild looks
/// for one: `$CARGO_ZIGBUILD_ZIG_PATH`, `zig` on `PATH`, `python3 -m
/// ziglang`. `Ok(zig version)` or `Err(what is missing)`.
fn probe_zig() -> Result<String, String> {
    let zigbuild = on_path("cargo-zigbuild");
    let version = |mut command: Command| -> Option<String> {
        let output = command.arg("version").output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !text.is_empty()).then_some(text)
    };
    let zig = std::env::var_os("CARGO_ZIGBUILD_ZIG_PATH")
        .and_then(|path| version(Command::new(path)))
        .or_else(|| find_on_path("zig").and_then(|zig| version(Command::new(zig))))
        .or_else(|| {
            let mut python = Command::new("python3");
            python.args(["-m", "ziglang"]);
            version(python)
        });
    match (zigbuild, zig) {
        (true, Some(version)) => Ok(version),
        (true, None) => Err("zig (cargo-zigbuild is there)".to_owned()),
        (false, Some(_)) => Err("cargo-zigbuild (zig is there)".to_owned()),
        (false, None) => Err("cargo-zigbuild and zig".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linker_variables_follow_cargo() {
        assert_eq!(
            linker_variable("x86_64-pc-windows-gnu"),
            "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER"
        );
        assert_eq!(
            linker_variable("thumbv7em-none-eabihf"),
            "CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER"
        );
    }

    #[test]
    fn missing_names_every_install_command() {
        let missing = Missing {
            target: "aarch64-apple-darwin".to_owned(),
            needs: vec![
                Need {
                    what: "the Rust standard library for aarch64-apple-darwin".to_owned(),
                    install: vec!["rustup target add aarch64-apple-darwin".to_owned()],
                },
                Need {
                    what: "a linker for aarch64-apple-darwin (cargo-zigbuild and zig)".to_owned(),
                    install: vec![ZIGBUILD_INSTALL.to_owned()],
                },
            ],
        };
        assert_eq!(
            missing.to_string(),
            format!(
                "cannot build for aarch64-apple-darwin: the Rust standard library for aarch64-apple-darwin is missing: install with `rustup target add aarch64-apple-darwin`; and a linker for aarch64-apple-darwin (cargo-zigbuild and zig) is missing: install with `{ZIGBUILD_INSTALL}`"
            )
        );
    }
}
