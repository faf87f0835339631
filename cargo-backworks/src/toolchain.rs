//! How `cargo backworks build` builds for each target: which cargo command,
//! which linker, which environment, or what is missing and how to install it.
//!
//! Decided up front for every requested target ([`Probe::plan`]), so a build can
//! report every target it cannot build before it spends time on the others:
//!
//! 1. The target's standard library must be installed
//!    (`<rustc --print sysroot>/lib/rustlib/<target>/lib`); else
//!    `rustup target add <target>`.
//! 2. When a plugin asks for a glibc floor (`crate::floor`), every Linux GNU
//!    target, the host's too, is built with `cargo zigbuild`, or is missing
//!    zig: only zig links against a chosen glibc release.
//! 3. The host's own target is built with plain cargo.
//! 4. A cross target with a linker configured by the user
//!    (`CARGO_TARGET_<TRIPLE>_LINKER`, or `target.<triple>.linker` in a
//!    `.cargo/config.toml` cargo reads) is built with plain cargo and that
//!    linker: the user's choice wins.
//! 5. Else with `cargo zigbuild` when `cargo-zigbuild` (on `PATH`, else in
//!    Python's user scripts directory, where `pip install --user` puts it)
//!    and zig (`python3 -m ziglang`, else `$CARGO_ZIGBUILD_ZIG_PATH` or
//!    `zig` on `PATH`, as cargo-zigbuild looks) are found (except for
//!    `*-windows-gnu`: see [`zig_links`]); see `ZigSearch::find`.
//! 6. Else with plain cargo and a known cross gcc on `PATH`
//!    (`x86_64-w64-mingw32-gcc`, `aarch64-linux-gnu-gcc`, …).
//! 7. Else the target is [`Missing`], with the commands that install what it
//!    needs.
//!
//! Apple targets get `MACOSX_DEPLOYMENT_TARGET` (unless set): without it zig
//! links for the newest macOS. [`DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64`] is
//! 11.0, the first macOS on Apple silicon;
//! [`DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64`] is 10.12, rustc's own minimum
//! for `x86_64-apple-darwin`. (The build gives their libraries the install
//! name `@rpath/lib<name>.dylib`, see [`crate::build`].)

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// The `pip install` that provides zig and cargo-zigbuild, with the
/// versions `scripts/setup` installs.
pub(crate) const ZIGBUILD_INSTALL: &str = "pip install ziglang==0.17.1 cargo-zigbuild==0.24.1";

/// The variable that sets the minimum macOS of an Apple target's link.
pub(crate) const MACOS_DEPLOYMENT_TARGET_ENV: &str = "MACOSX_DEPLOYMENT_TARGET";

/// `MACOSX_DEPLOYMENT_TARGET` for `aarch64-apple-darwin` unless the user set
/// it: macOS 11, the first on Apple silicon.
pub(crate) const DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64: &str = "11.0";

/// `MACOSX_DEPLOYMENT_TARGET` for `x86_64-apple-darwin` (and other Apple
/// targets) unless the user set it: 10.12, rustc's minimum.
pub(crate) const DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64: &str = "10.12";

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
        /// The `cargo-zigbuild` program: found on `PATH` or in Python's
        /// user scripts directory (see `ZigSearch::find`). Not part of
        /// the manifest: where a tool lives does not change the bytes.
        #[serde(skip)]
        program: PathBuf,
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
            Self::Zigbuild { zig_version, .. } => {
                write!(f, "cargo zigbuild (zig {zig_version})")
            }
        }
    }
}

/// A target that can be built: how, and with what environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
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
pub(crate) type Decision = Result<Plan, Missing>;

/// What the build machine has, found once and shared by every target's
/// decision.
#[derive(Debug)]
pub(crate) struct Probe {
    host: String,
    sysroot: Option<PathBuf>,
    known_targets: Option<Vec<String>>,
    zig: Option<Result<Zig, String>>,
    zig_search: ZigSearch,
    config_dirs: Vec<PathBuf>,
    /// A plugin asks for a glibc floor: Linux GNU targets are linked by zig.
    glibc_floor: bool,
}

impl Probe {
    /// Probes the toolchain of the workspace at `dir` (where rustup's
    /// toolchain file applies) for host `host`.
    pub(crate) fn new(dir: &Path, host: &str) -> Self {
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
            zig_search: ZigSearch::current(),
            config_dirs,
            glibc_floor: false,
        }
    }

    /// Whether a plugin of the build asks for a glibc floor
    /// (`[package.metadata.backworks] glibc`): then every Linux GNU target,
    /// the host's too, is linked by zig, which alone links against a chosen
    /// glibc release (ahead of a configured linker), or is missing zig.
    pub(crate) fn with_glibc_floor(mut self, glibc_floor: bool) -> Self {
        self.glibc_floor = glibc_floor;
        self
    }

    /// Looks for cargo-zigbuild and zig as `search` says rather than as
    /// this process's environment does (tests).
    #[cfg(test)]
    fn with_zig_search(mut self, search: ZigSearch) -> Self {
        self.zig_search = search;
        self.zig = None;
        self
    }

    /// Decides how to build each target.
    pub(crate) fn plan(&mut self, targets: &[String]) -> Vec<Decision> {
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
            let variable = MACOS_DEPLOYMENT_TARGET_ENV;
            if std::env::var_os(variable).is_none() {
                let version = if target.starts_with("aarch64") {
                    DEFAULT_MACOS_DEPLOYMENT_TARGET_AARCH64
                } else {
                    DEFAULT_MACOS_DEPLOYMENT_TARGET_X86_64
                };
                env.push((variable.to_owned(), version.to_owned()));
            }
        }
        let builder = if self.glibc_floor && crate::floor::links_glibc(target) {
            // Only zig links against a chosen glibc release.
            match self.zig() {
                Some(Ok(zig)) => Some(Builder::Zigbuild {
                    zig_version: zig.version.clone(),
                    program: zig.cargo_zigbuild.clone(),
                }),
                found => {
                    let why = match found {
                        Some(Err(why)) => why.clone(),
                        _ => "cargo-zigbuild and zig".to_owned(),
                    };
                    needs.push(Need {
                        what: format!(
                            "zig, to link {target} against the glibc floor `package.metadata.backworks.glibc` asks for ({why})"
                        ),
                        install: vec![ZIGBUILD_INSTALL.to_owned()],
                    });
                    None
                }
            }
        } else if target == self.host {
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
        } else if let Some(Ok(zig)) = self.zig().filter(|_| zig_links(target)) {
            Some(Builder::Zigbuild {
                zig_version: zig.version.clone(),
                program: zig.cargo_zigbuild.clone(),
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

    /// `Some(Ok(zig))` when cargo-zigbuild and zig are both usable,
    /// `Some(Err(what is missing, and where it was looked for))` otherwise;
    /// probed once.
    fn zig(&mut self) -> Option<&Result<Zig, String>> {
        if self.zig.is_none() {
            self.zig = Some(self.zig_search.find());
        }
        self.zig.as_ref()
    }
}

/// Whether zig (through cargo-zigbuild) links working plugins for
/// `target`: not for `*-windows-gnu`, where zig's COFF linking exports the
/// functions of the `.def` file rustc writes but not the data symbol
/// `backworks_plugin_metadata` (seen with zig 0.17.1; `check` refuses such
/// a DLL), so those targets take the mingw-w64 gcc.
pub(crate) fn zig_links(target: &str) -> bool {
    !target.contains("-windows-gnu")
}

/// The `CARGO_TARGET_<TRIPLE>_LINKER` variable of a target.
pub(crate) fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The cross gcc Debian packages for a target, and the package providing it.
pub(crate) fn known_cross_gcc(target: &str) -> Option<(&'static str, &'static str)> {
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
pub(crate) fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH");
    find_in(path.as_deref(), program).is_some()
}

/// The first executable `program` (or `program.exe` on Windows) in the
/// directories of `path`, a `PATH`-style list.
fn find_in(path: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?).find_map(|dir| executable_in(&dir, program))
}

/// `dir/program` (or `dir/program.exe` on Windows) when it is executable.
fn executable_in(dir: &Path, program: &str) -> Option<PathBuf> {
    let candidates = [
        dir.join(program),
        dir.join(format!("{program}{}", std::env::consts::EXE_SUFFIX)),
    ];
    candidates.into_iter().find(|c| is_executable(c))
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

/// cargo-zigbuild and the zig it will use, both found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zig {
    /// The `cargo-zigbuild` program to run: the path it was found at, on
    /// `PATH` or in Python's user scripts directory.
    pub(crate) cargo_zigbuild: PathBuf,
    /// `zig version`.
    pub(crate) version: String,
}

/// What the search for cargo-zigbuild and zig reads from the machine,
/// gathered in one place so that tests can give their own.
#[derive(Debug, Clone)]
pub(crate) struct ZigSearch {
    /// `PATH`: every program is looked for there, as cargo-zigbuild does
    /// (`which`).
    pub(crate) path: Option<OsString>,
    /// The Python cargo-zigbuild runs `-m ziglang` with, and which pip
    /// installed cargo-zigbuild for: `$CARGO_ZIGBUILD_PYTHON_PATH`, else
    /// `python3`.
    pub(crate) python: OsString,
    /// `$CARGO_ZIGBUILD_ZIG_PATH`: the zig cargo-zigbuild runs when
    /// `python -m ziglang` does not work; `zig` when unset.
    pub(crate) zig: Option<OsString>,
}

/// Asks Python for the directory `pip install --user` puts scripts in:
/// the `scripts` path of the user scheme pip uses (`~/.local/bin` on
/// Linux, `~/Library/Python/X.Y/bin` on macOS,
/// `%APPDATA%\Python\PythonXY\Scripts` on Windows, under `$PYTHONUSERBASE`
/// when set). Python 3.10 and later name the scheme
/// (`get_preferred_scheme`), older ones use `<os.name>_user`.
const USER_SCRIPTS: &str = "import os, sysconfig\n\
try:\n    scheme = sysconfig.get_preferred_scheme('user')\n\
except AttributeError:\n    scheme = os.name + '_user'\n\
print(sysconfig.get_path('scripts', scheme))\n";

impl ZigSearch {
    /// The machine this process runs on.
    pub(crate) fn current() -> Self {
        Self {
            path: std::env::var_os("PATH"),
            python: std::env::var_os("CARGO_ZIGBUILD_PYTHON_PATH")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| OsString::from("python3")),
            zig: std::env::var_os("CARGO_ZIGBUILD_ZIG_PATH").filter(|p| !p.is_empty()),
        }
    }

    /// `program` as `which` finds it: a path with a directory in it as it
    /// is, a bare name in `PATH`.
    fn which(&self, program: &OsStr) -> Option<PathBuf> {
        let as_path = Path::new(program);
        if as_path.components().count() > 1 {
            return is_executable(as_path).then(|| as_path.to_owned());
        }
        find_in(self.path.as_deref(), program.to_str()?)
    }

    /// cargo-zigbuild and a zig it can use, looked for where `scripts/setup`
    /// and pip put them, or what is missing and everywhere it was looked
    /// for.
    ///
    /// cargo-zigbuild: on `PATH`, else in Python's user scripts directory
    /// (`pip install --user` puts it there, and that directory is often not
    /// on `PATH`: Debian adds `~/.local/bin` only to login shells that
    /// start after it exists). Zig as cargo-zigbuild looks for it:
    /// `<python> -m ziglang` first (pip's `ziglang` package, found through
    /// Python's own module path wherever pip put it), then
    /// `$CARGO_ZIGBUILD_ZIG_PATH` or `zig` on `PATH`.
    pub(crate) fn find(&self) -> Result<Zig, String> {
        let python = self.which(&self.python);
        let python_name = self.python.to_string_lossy();
        let path_dirs: Vec<String> = self
            .path
            .as_deref()
            .map(|path| {
                std::env::split_paths(path)
                    .map(|dir| format!("`{}`", dir.display()))
                    .collect()
            })
            .unwrap_or_default();
        let mut looked_in = format!("no cargo-zigbuild in {} (PATH)", path_dirs.join(", "));
        let on_path = find_in(self.path.as_deref(), "cargo-zigbuild");
        let cargo_zigbuild = on_path.or_else(|| {
            let scripts = python.as_deref().and_then(user_scripts);
            looked_in.push_str(&match (&python, &scripts) {
                (_, Some(dir)) => format!(" nor in `{}` (Python's user scripts)", dir.display()),
                (None, None) => format!(
                    ", and no `{python_name}` on PATH to name Python's user scripts directory"
                ),
                (Some(_), None) => {
                    format!(", and `{python_name}` did not name Python's user scripts directory")
                }
            });
            executable_in(&scripts?, "cargo-zigbuild")
        });
        let zig_name = self
            .zig
            .as_deref()
            .map_or_else(|| "zig".to_owned(), |z| z.to_string_lossy().into_owned());
        let zig = python
            .and_then(|python| {
                let mut command = Command::new(python);
                command.args(["-m", "ziglang"]);
                zig_version(command)
            })
            .or_else(|| {
                let zig = self.which(self.zig.as_deref().unwrap_or(OsStr::new("zig")))?;
                zig_version(Command::new(zig))
            });
        let no_zig = || format!("no zig from `{python_name} -m ziglang` nor `{zig_name}` on PATH");
        match (cargo_zigbuild, zig) {
            (Some(cargo_zigbuild), Some(version)) => Ok(Zig {
                cargo_zigbuild,
                version,
            }),
            (Some(cargo_zigbuild), None) => Err(format!(
                "zig: cargo-zigbuild is `{}`, but {}",
                cargo_zigbuild.display(),
                no_zig()
            )),
            (None, Some(_)) => Err(format!("cargo-zigbuild: zig is there, but {looked_in}")),
            (None, None) => Err(format!("cargo-zigbuild and zig: {looked_in}; {}", no_zig())),
        }
    }
}

/// The scripts directory of Python's user scheme, as `python` names it.
fn user_scripts(python: &Path) -> Option<PathBuf> {
    let output = Command::new(python)
        .args(["-c", USER_SCRIPTS])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let dir = text.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The trimmed output of `<command> version` when it succeeds.
fn zig_version(mut command: Command) -> Option<String> {
    let output = command
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
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

/// The search for cargo-zigbuild and zig, on a made-up machine: a `PATH`
/// of temporary directories holding shell scripts that stand in for
/// `python3`, `cargo-zigbuild` and `zig`. The process's own environment is
/// neither read nor changed.
#[cfg(all(test, unix))]
mod zig_search_tests {
    use super::*;

    /// Writes an executable shell script `path`, and runs it once so that
    /// a fork in another test thread that still holds the file open for
    /// writing (ETXTBSY) has finished before the test runs it.
    fn script(path: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        for _ in 0..500 {
            match Command::new(path).arg("--warm-up").output() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => return,
            }
        }
        panic!("{} stays busy", path.display());
    }

    /// A `python3` that names `scripts` as its user scripts directory and,
    /// when `ziglang` is true, runs `-m ziglang version` as pip's ziglang
    /// package does.
    fn python(bin: &Path, scripts: &Path, ziglang: bool) {
        let zig = if ziglang {
            "if [ \"$1 $2 $3\" = \"-m ziglang version\" ]; then echo 0.17.1; exit 0; fi"
        } else {
            "if [ \"$1 $2\" = \"-m ziglang\" ]; then echo 'No module named ziglang' >&2; exit 1; fi"
        };
        script(
            &bin.join("python3"),
            &format!(
                "case \"$2\" in *sysconfig*scripts*) [ \"$1\" = -c ] && {{ echo '{}'; exit 0; }};; esac\n{zig}\nexit 2",
                scripts.display()
            ),
        );
    }

    fn search(path: &[&Path]) -> ZigSearch {
        ZigSearch {
            path: Some(std::env::join_paths(path).unwrap()),
            python: OsString::from("python3"),
            zig: None,
        }
    }

    #[test]
    fn cargo_zigbuild_is_found_in_pythons_user_scripts_when_not_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, scripts) = (dir.path().join("bin"), dir.path().join("user/bin"));
        python(&bin, &scripts, true);
        script(&scripts.join("cargo-zigbuild"), "exit 0");
        assert_eq!(
            search(&[&bin]).find(),
            Ok(Zig {
                cargo_zigbuild: scripts.join("cargo-zigbuild"),
                version: "0.17.1".to_owned(),
            })
        );
    }

    #[test]
    fn cargo_zigbuild_on_path_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, scripts) = (dir.path().join("bin"), dir.path().join("user/bin"));
        python(&bin, &scripts, true);
        script(&scripts.join("cargo-zigbuild"), "exit 0");
        let other = dir.path().join("other");
        script(&other.join("cargo-zigbuild"), "exit 0");
        let found = search(&[&other, &bin]).find().unwrap();
        assert_eq!(found.cargo_zigbuild, other.join("cargo-zigbuild"));
    }

    #[test]
    fn zig_on_path_serves_when_python_has_no_ziglang() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, scripts) = (dir.path().join("bin"), dir.path().join("user/bin"));
        python(&bin, &scripts, false);
        script(&scripts.join("cargo-zigbuild"), "exit 0");
        script(
            &bin.join("zig"),
            "[ \"$1\" = version ] && { echo 0.13.0; exit 0; }; exit 2",
        );
        assert_eq!(search(&[&bin]).find().unwrap().version, "0.13.0");
        // `$CARGO_ZIGBUILD_ZIG_PATH` replaces `zig`, as in cargo-zigbuild.
        let mut named = search(&[&bin]);
        named.zig = Some(OsString::from("zig-0.14"));
        script(
            &bin.join("zig-0.14"),
            "[ \"$1\" = version ] && { echo 0.14.1; exit 0; }; exit 2",
        );
        assert_eq!(named.find().unwrap().version, "0.14.1");
    }

    #[test]
    fn nothing_found_names_every_directory_looked_in_and_the_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, scripts) = (dir.path().join("bin"), dir.path().join("user/bin"));
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        python(&bin, &scripts, false);
        let why = search(&[&empty, &bin]).find().unwrap_err();
        assert_eq!(
            why,
            format!(
                "cargo-zigbuild and zig: no cargo-zigbuild in `{}`, `{}` (PATH) nor in `{}` \
                 (Python's user scripts); no zig from `python3 -m ziglang` nor `zig` on PATH",
                empty.display(),
                bin.display(),
                scripts.display()
            )
        );

        // The build's message for a target that needs zig says the same,
        // with the command that installs both.
        let mut probe = Probe::new(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "x86_64-unknown-linux-gnu",
        )
        .with_zig_search(search(&[&empty, &bin]));
        let target = "aarch64-apple-darwin";
        let missing = probe.plan(&[target.to_owned()]).remove(0).unwrap_err();
        let message = missing.to_string();
        assert!(message.contains(&why), "{message}");
        assert!(
            message.contains(&format!("install with `{ZIGBUILD_INSTALL}`")),
            "{message}"
        );
    }

    #[test]
    fn without_python_the_message_says_the_user_scripts_were_not_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let why = search(&[&empty]).find().unwrap_err();
        assert_eq!(
            why,
            format!(
                "cargo-zigbuild and zig: no cargo-zigbuild in `{}` (PATH), and no `python3` on \
                 PATH to name Python's user scripts directory; no zig from `python3 -m ziglang` \
                 nor `zig` on PATH",
                empty.display()
            )
        );
    }

    #[test]
    fn a_python_that_cannot_name_its_user_scripts_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        script(&bin.join("python3"), "exit 1");
        let why = search(&[&bin]).find().unwrap_err();
        assert!(
            why.starts_with(&format!(
                "cargo-zigbuild and zig: no cargo-zigbuild in `{}` (PATH), and `python3` did not \
                 name Python's user scripts directory; ",
                bin.display()
            )),
            "{why}"
        );
    }

    #[test]
    fn a_zigbuild_without_zig_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, scripts) = (dir.path().join("bin"), dir.path().join("user/bin"));
        python(&bin, &scripts, false);
        script(&scripts.join("cargo-zigbuild"), "exit 0");
        let why = search(&[&bin]).find().unwrap_err();
        assert_eq!(
            why,
            format!(
                "zig: cargo-zigbuild is `{}`, but no zig from `python3 -m ziglang` nor `zig` on PATH",
                scripts.join("cargo-zigbuild").display()
            )
        );
    }

    /// The question asked of the real Python gives what pip's `--user`
    /// uses: on Linux, `<python3 -m site --user-base>/bin`.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_real_python_names_its_user_base_bin() {
        let python = find_in(std::env::var_os("PATH").as_deref(), "python3")
            .expect("python3 on PATH (scripts/setup installs it with pip)");
        let base = Command::new(&python)
            .args(["-m", "site", "--user-base"])
            .output()
            .unwrap();
        assert!(base.status.success());
        let base = PathBuf::from(String::from_utf8(base.stdout).unwrap().trim());
        assert_eq!(user_scripts(&python), Some(base.join("bin")));
    }
}
