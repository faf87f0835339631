//! `cargo backworks build`: builds every plugin package for every requested
//! target with the real cargo, copies each library into the dist layout and
//! checks it.
//!
//! - Plugin packages are the workspace members with a `cdylib` target, found
//!   with `cargo_metadata`; `-p` narrows them.
//! - Targets come from `--target`, else from the union of the packages'
//!   `[package.metadata.backworks] targets = [...]`, else the host.
//! - Cargo is `$CARGO` (set by cargo when it runs a subcommand), never a
//!   guessed path. It runs once per package and target, as `cargo rustc
//!   --lib -p <package>` with `--message-format=json-render-diagnostics`:
//!   its diagnostics are forwarded as they come, and the library paths are
//!   taken from its `compiler-artifact` messages, never guessed from file
//!   names. A line per run says what cargo compiled and how much was fresh.
//! - Builds are reproducible across checkouts: the source tree, cargo home,
//!   target directory and path dependencies outside the workspace are
//!   remapped (`--remap-path-prefix`) to fixed paths, so the same source
//!   built from two directories gives the same bytes.
//! - The remap of the workspace root reaches only the plugin's own crate,
//!   as `cargo rustc`'s arguments for the final crate: the flags every
//!   other unit gets (cargo home, target directory, path dependencies) do
//!   not depend on where the plugin is, so plugins sharing a target
//!   directory share their compiled dependencies instead of rebuilding them
//!   all for each other. (Cargo keeps one copy of a unit whatever its
//!   flags when these contain a remap: it leaves them out of the file names
//!   for reproducible bytes, so differing flags would rebuild it each time.)
//!   The final crate's arguments are part of its fingerprint, so a plugin
//!   of the same name in another directory is rebuilt, never taken for
//!   this one. When a plugin depends on another member of its workspace,
//!   that crate needs the root's remap too, and every unit gets it: such a
//!   workspace's dependencies are its own again.
//! - A package's declared capabilities
//!   (`[package.metadata.backworks.capabilities]`) are checked, and handed
//!   to `export_plugin!` as canonical JSON in `BACKWORKS_PLUGIN_CAPABILITIES`
//!   (removed from cargo's environment for a package that declares none, so
//!   a stray variable cannot leak in). Each library's record must then
//!   carry exactly its package's declaration.
//! - Each library is copied (atomically) to
//!   `<target-dir>/backworks/<target>/<name>-<version>-<target>.<so|dll|dylib>`
//!   and checked with [`check`](crate::check).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use backworks_artifact::floor::{FloorReport, PlatformFloor};
use backworks_plugin_sdk::abi::capabilities::{
    CAPABILITIES_ENV, Capabilities, CapabilityError, MAX_CAPABILITIES_SIZE,
};
use cargo_metadata::{Message, MetadataCommand, PackageId, TargetKind};

use crate::progress::Progress;
use crate::toolchain::{Builder, MACOS_DEPLOYMENT_TARGET_ENV, Missing, Plan, Probe};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The `Cargo.toml` to start from; by default cargo's search from the
    /// current directory.
    pub manifest_path: Option<PathBuf>,
    /// Build with the release profile.
    pub release: bool,
    /// Target triples; empty means the packages' configured targets, or the
    /// host.
    pub targets: Vec<String>,
    /// Package names; empty means every plugin package of the workspace.
    pub packages: Vec<String>,
    /// Stop at the first target that cannot be built (a missing tool, a
    /// cargo failure, an invalid library) instead of going on with the
    /// others.
    pub fail_fast: bool,
    /// Pass `--locked` to cargo: fail rather than change `Cargo.lock`.
    pub locked: bool,
    /// Cargo's target directory [default: cargo's].
    pub target_dir: Option<PathBuf>,
    /// Where the dist layout goes (default: `<target-dir>/backworks`).
    pub dist_dir: Option<PathBuf>,
}

/// What a build produced: the libraries built, the targets that failed,
/// and the manifest describing the libraries.
#[derive(Debug)]
pub struct BuildReport {
    /// Every library built, copied and checked.
    pub built: Vec<BuiltPlugin>,
    /// Every target that failed (empty with `fail_fast`: the first failure
    /// is returned as the error instead).
    pub failures: Vec<BuildError>,
    /// How each target was built.
    pub builders: Vec<(String, Builder)>,
    /// The dist directory (`<target-dir>/backworks`).
    pub dist_dir: PathBuf,
    /// `SHA256SUMS` and `manifest.json` in the dist directory, when at least
    /// one library was built.
    pub manifest: Option<(PathBuf, PathBuf)>,
}

impl BuildReport {
    /// The error to report when some targets failed, with the exit code of
    /// the most serious failure.
    pub fn failure(&self) -> Option<BuildError> {
        if self.failures.is_empty() {
            return None;
        }
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        Some(BuildError::TargetsFailed {
            failed: count(self.failures.len(), "target", "targets"),
            built: count(self.built.len(), "library", "libraries"),
            messages: self
                .failures
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join("\n"),
            exit_code: self
                .failures
                .iter()
                .map(BuildError::exit_code)
                .min()
                .unwrap_or(2),
        })
    }
}

/// One library built, copied into the dist layout and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPlugin {
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// Target triple.
    pub target: String,
    /// Where cargo wrote it.
    pub cargo_path: PathBuf,
    /// Its copy in the dist layout.
    pub dist_path: PathBuf,
    /// The capabilities it declares (its record carries them); `None` when
    /// it declares nothing.
    pub capabilities: Option<Capabilities>,
    /// Its platform floor, read from its bytes as `check` reads it.
    pub floor: PlatformFloor,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `cargo metadata` failed.
    #[error("cannot read the workspace with `cargo metadata`: {0}")]
    Metadata(#[source] cargo_metadata::Error),
    /// No package of the workspace builds a `cdylib`.
    #[error(
        "no plugin package in the workspace at `{0}`: a plugin has `crate-type = [\"cdylib\"]` in its [lib] section (`cargo backworks new` makes one)"
    )]
    NoPlugins(PathBuf),
    /// `-p` named a package that is not a plugin package of the workspace.
    #[error("`{name}` is not a plugin package of this workspace; plugin packages: {available}")]
    UnknownPackage {
        /// The name given.
        name: String,
        /// The plugin packages there are.
        available: String,
    },
    /// `[package.metadata.backworks] targets` is not a list of strings.
    #[error(
        "{manifest}: `package.metadata.backworks.targets` must be a list of target triples, e.g. [\"x86_64-unknown-linux-gnu\"]"
    )]
    BadTargets {
        /// The package's manifest.
        manifest: PathBuf,
    },
    /// `[package.metadata.backworks.capabilities]` is not a valid
    /// declaration.
    #[error(
        "{}: `package.metadata.backworks.{}` {}; see \"Declaring capabilities\" in the README",
        manifest.display(),
        source.field,
        source.problem
    )]
    BadCapabilities {
        /// The package's manifest.
        manifest: PathBuf,
        /// The field and what is wrong with it.
        #[source]
        source: CapabilityError,
    },
    /// The declaration's JSON is larger than a record carries.
    #[error(
        "{}: `package.metadata.backworks.capabilities` is {size} bytes of JSON, more than the {MAX_CAPABILITIES_SIZE} a plugin's record carries; declare less (a directory covers every file beneath it, `host:*` every port of a host)",
        manifest.display()
    )]
    CapabilitiesTooLarge {
        /// The package's manifest.
        manifest: PathBuf,
        /// The JSON's size in bytes.
        size: usize,
    },
    /// `[package.metadata.backworks] glibc` or `macos` is not a floor the
    /// build can keep.
    #[error("{}: {source}", manifest.display())]
    BadFloor {
        /// The package's manifest.
        manifest: PathBuf,
        /// The key and what is wrong with it.
        #[source]
        source: crate::floor::FloorError,
    },
    /// A built library needs a newer system than its package's
    /// `[package.metadata.backworks] glibc` or `macos` asks for.
    #[error("{}: {problem}", path.display())]
    FloorNotMet {
        /// The library in the dist layout.
        path: PathBuf,
        /// What it needs and what was asked for.
        problem: String,
    },
    /// A built library's record does not carry its package's declaration.
    #[error("{}: {problem}", path.display())]
    CapabilitiesNotRecorded {
        /// The library in the dist layout.
        path: PathBuf,
        /// What the record and the manifest say, and what to do.
        problem: String,
    },
    /// The plugin's dependency list (linked into it) could not be made.
    #[error("cannot make the dependency list of `{package}` for {target}: {problem}")]
    DependencyList {
        /// The package.
        package: String,
        /// The target.
        target: String,
        /// What failed.
        problem: String,
    },
    /// Running a tool failed.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `rustc -vV` did not say which host it runs on.
    #[error("cannot tell the host target from `rustc -vV`: {0}")]
    HostTarget(String),
    /// Cargo failed to build.
    #[error("cargo failed to build {packages} for {target} ({status}); its diagnostics are above")]
    Cargo {
        /// The packages.
        packages: String,
        /// The target.
        target: String,
        /// How cargo exited.
        status: std::process::ExitStatus,
    },
    /// Cargo built a package but reported no library for it.
    #[error(
        "cargo reported no {extension} library for package `{package}` on {target}; is `cdylib` among its crate types?"
    )]
    NoArtifact {
        /// The package.
        package: String,
        /// The target.
        target: String,
        /// The expected extension.
        extension: &'static str,
    },
    /// Copying into the dist layout failed.
    #[error("cannot write `{}`: {source}", path.display())]
    Dist {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The built library did not pass `check`.
    #[error("{} is not a valid plugin:\n{report}", path.display())]
    Invalid {
        /// The library in the dist layout.
        path: PathBuf,
        /// The check report.
        report: String,
    },
    /// The built library could not be checked.
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    /// A target cannot be built here: a tool or its standard library is
    /// missing.
    #[error("{0}")]
    Missing(Missing),
    /// Some targets failed; the others were built.
    #[error("{failed} failed, {built} built:\n{messages}")]
    TargetsFailed {
        /// How many targets failed: `1 target`, `2 targets`.
        failed: String,
        /// How many libraries were built: `1 library`, `0 libraries`.
        built: String,
        /// One line per failure.
        messages: String,
        /// The exit code of the most serious failure.
        exit_code: u8,
    },
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

impl BuildError {
    /// The process exit code: 1 for a built library that is not a valid
    /// plugin, 3 when cargo failed, 4 when a target cannot be built because
    /// a tool or its standard library is missing, 2 for everything else
    /// (configuration, I/O). When several targets failed, the smallest of
    /// their codes.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } => 1,
            Self::Cargo { .. } => 3,
            Self::Missing(_) => 4,
            Self::TargetsFailed { exit_code, .. } => *exit_code,
            Self::Check(e) => crate::check::error_exit_code(e),
            _ => 2,
        }
    }
}

/// The shared-library extension and the dist file name of a target: the
/// one table of target knowledge, `backworks_artifact::target`.
pub use backworks_artifact::target::{dist_file_name, library_extension};

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The host's target triple, as the toolchain in `dir` reports it.
pub fn host_target(dir: &Path) -> Result<String, BuildError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .arg("-vV")
        .current_dir(dir)
        .output()
        .map_err(|source| BuildError::Spawn {
            program: rustc.to_string_lossy().into_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .ok_or_else(|| BuildError::HostTarget(String::from_utf8_lossy(&output.stderr).into()))
}

/// A selected plugin package.
struct Plugin {
    id: PackageId,
    name: String,
    version: String,
    /// The name of its `cdylib` target (`lib<lib_name>.dylib`).
    lib_name: String,
    /// Its manifest.
    manifest: PathBuf,
    /// What it declares in `[package.metadata.backworks.capabilities]`.
    capabilities: Option<Capabilities>,
    /// The platform floor `[package.metadata.backworks]` asks for.
    floor: crate::floor::Request,
}

impl Plugin {
    /// The value of `BACKWORKS_PLUGIN_CAPABILITIES` for its build: the
    /// canonical JSON of its declaration.
    fn capabilities_json(&self) -> Option<String> {
        self.capabilities.as_ref().map(Capabilities::to_json)
    }
}

/// The capabilities `package` declares: `None` without a
/// `[package.metadata.backworks.capabilities]` table.
pub fn declared_capabilities(
    package: &cargo_metadata::Package,
) -> Result<Option<Capabilities>, BuildError> {
    let manifest = || package.manifest_path.clone().into_std_path_buf();
    let value = &package.metadata["backworks"]["capabilities"];
    if value.is_null() {
        return Ok(None);
    }
    let capabilities =
        Capabilities::from_value(value).map_err(|source| BuildError::BadCapabilities {
            manifest: manifest(),
            source,
        })?;
    let size = capabilities.to_json().len();
    if size > MAX_CAPABILITIES_SIZE {
        return Err(BuildError::CapabilitiesTooLarge {
            manifest: manifest(),
            size,
        });
    }
    Ok(Some(capabilities))
}

/// Compiler flags: the `--remap-path-prefix` flags that make output
/// independent of where the source, cargo home, target directory and path
/// dependencies are (and the link arguments some targets add).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    /// For every unit (`RUSTFLAGS`): unless the plugin depends on another
    /// member, none names the workspace's directory, so two plugins sharing
    /// a target directory (and an SDK) give their dependencies the same
    /// flags.
    common: Vec<String>,
    /// For the plugin's own crate only, after `common` (`cargo rustc`'s
    /// arguments after `--`).
    plugin: Vec<String>,
}

/// The remaps for a workspace at `workspace_root` building into
/// `target_dir`, whose plugins depend on the non-member `path_deps`, and on
/// other members of the workspace when `member_deps` (whose sources need the
/// root's remap as well).
fn remap_flags(
    workspace_root: &Path,
    target_dir: &Path,
    path_deps: &[(String, PathBuf)],
    member_deps: bool,
) -> Flags {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    // Later flags win where prefixes nest (the target dir is usually inside
    // the workspace root, so it comes after it).
    let source_and_target = [
        format!(
            "--remap-path-prefix={}=/backworks/source",
            workspace_root.display()
        ),
        format!(
            "--remap-path-prefix={}=/backworks/target",
            target_dir.display()
        ),
    ];
    let mut common = Vec::new();
    if let Some(home) = cargo_home {
        common.push(format!(
            "--remap-path-prefix={}=/backworks/cargo-home",
            home.display()
        ));
    }
    // Path dependencies that are not members (the SDK of a checkout, a
    // sibling crate): their absolute paths differ between machines.
    for (name, path) in path_deps {
        common.push(format!(
            "--remap-path-prefix={}=/backworks/path/{name}",
            path.display()
        ));
    }
    if member_deps {
        common.extend(source_and_target.iter().cloned());
    } else {
        // Dependencies need the target dir's: a build script's generated
        // code (`OUT_DIR`) is there.
        common.push(source_and_target[1].clone());
    }
    Flags {
        common,
        // Also when `common` has them: as arguments of the final crate they
        // are in its fingerprint, so a plugin of the same name and version
        // built in another directory is rebuilt, never taken for this one
        // (cargo names a workspace's packages by their path relative to the
        // workspace root, which is the same in both).
        plugin: source_and_target.to_vec(),
    }
}

/// Adds `flags` to the compiler flags of `command` without dropping the
/// user's: appended to `RUSTFLAGS`/`CARGO_ENCODED_RUSTFLAGS` when those are
/// set, else merged into `build.rustflags` with `--config` (cargo joins
/// arrays from its config files with it).
fn add_rustflags(command: &mut Command, flags: &[String]) {
    let encoded = std::env::var("CARGO_ENCODED_RUSTFLAGS").ok();
    let plain = std::env::var("RUSTFLAGS").ok();
    let existing: Option<Vec<String>> = match (encoded, plain) {
        (Some(encoded), _) => Some(
            encoded
                .split('\x1f')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        (None, Some(plain)) => Some(plain.split_whitespace().map(str::to_owned).collect()),
        (None, None) => None,
    };
    match existing {
        Some(mut all) => {
            all.extend(flags.iter().cloned());
            command
                .env_remove("RUSTFLAGS")
                .env("CARGO_ENCODED_RUSTFLAGS", all.join("\x1f"));
        }
        None => {
            let array: toml_edit::Array = flags.iter().map(String::as_str).collect();
            command
                .arg("--config")
                .arg(format!("build.rustflags={array}"));
        }
    }
}

/// A workspace as `cargo metadata --no-deps` describes it, with the
/// directories `build` writes to. `publish` reads it the same way, so both
/// agree on the plugin packages and the dist directory.
#[derive(Debug)]
pub struct Workspace {
    /// What cargo says of the workspace.
    pub metadata: cargo_metadata::Metadata,
    /// The workspace root.
    pub root: PathBuf,
    /// Cargo's target directory (or the one given).
    pub target_dir: PathBuf,
    /// The dist directory: the one given, else `<target-dir>/backworks`.
    pub dist_dir: PathBuf,
}

impl Workspace {
    /// Runs `$CARGO metadata --no-deps` for `manifest_path` (default:
    /// cargo's search from the current directory); `target_dir` and
    /// `dist_dir` override cargo's target directory and the dist directory.
    pub fn read(
        manifest_path: Option<&Path>,
        target_dir: Option<&Path>,
        dist_dir: Option<&Path>,
    ) -> Result<Self, BuildError> {
        let mut command = MetadataCommand::new();
        command.cargo_path(cargo_program()).no_deps();
        if let Some(manifest) = manifest_path {
            command.manifest_path(manifest);
        }
        let metadata = command.exec().map_err(BuildError::Metadata)?;
        let root = metadata.workspace_root.clone().into_std_path_buf();
        let target_dir = target_dir.map_or_else(
            || metadata.target_directory.clone().into_std_path_buf(),
            Path::to_path_buf,
        );
        let dist_dir = dist_dir.map_or_else(|| target_dir.join("backworks"), Path::to_path_buf);
        Ok(Self {
            metadata,
            root,
            target_dir,
            dist_dir,
        })
    }

    /// The plugin packages: workspace members with a `cdylib` target, all of
    /// them when `names` is empty, else those named (each must be one).
    pub fn plugin_packages(
        &self,
        names: &[String],
    ) -> Result<Vec<&cargo_metadata::Package>, BuildError> {
        let candidates: Vec<&cargo_metadata::Package> = self
            .metadata
            .workspace_packages()
            .into_iter()
            .filter(|p| {
                p.targets
                    .iter()
                    .any(|t| t.kind.contains(&TargetKind::CDyLib))
            })
            .collect();
        if candidates.is_empty() {
            return Err(BuildError::NoPlugins(self.root.clone()));
        }
        for name in names {
            if !candidates.iter().any(|p| p.name.as_str() == name) {
                return Err(BuildError::UnknownPackage {
                    name: name.clone(),
                    available: candidates
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(candidates
            .into_iter()
            .filter(|p| names.is_empty() || names.iter().any(|n| n == p.name.as_str()))
            .collect())
    }
}

/// Builds, copies and checks every selected plugin for every target.
pub fn build(options: &BuildOptions, progress: &Progress) -> Result<BuildReport, BuildError> {
    progress.status("reading the workspace");
    let workspace = Workspace::read(
        options.manifest_path.as_deref(),
        options.target_dir.as_deref(),
        options.dist_dir.as_deref(),
    )?;
    let workspace_root = workspace.root.clone();
    let target_dir = workspace.target_dir.clone();
    let dist_root = workspace.dist_dir.clone();
    let selected = workspace.plugin_packages(&options.packages)?;

    let mut targets: BTreeSet<String> = options.targets.iter().cloned().collect();
    if targets.is_empty() {
        for package in &selected {
            let configured = &package.metadata["backworks"]["targets"];
            if configured.is_null() {
                continue;
            }
            let list = configured
                .as_array()
                .ok_or_else(|| BuildError::BadTargets {
                    manifest: package.manifest_path.clone().into_std_path_buf(),
                })?;
            for target in list {
                let target = target.as_str().ok_or_else(|| BuildError::BadTargets {
                    manifest: package.manifest_path.clone().into_std_path_buf(),
                })?;
                targets.insert(target.to_owned());
            }
        }
    }
    // `None`: the host, built without `--target`.
    let requested: Vec<Option<String>> = if targets.is_empty() {
        vec![None]
    } else {
        targets.into_iter().map(Some).collect()
    };
    let host = host_target(&workspace_root)?;
    let plugins: Vec<Plugin> = selected
        .iter()
        .map(|p| {
            Ok(Plugin {
                id: p.id.clone(),
                name: p.name.to_string(),
                version: p.version.to_string(),
                lib_name: p
                    .targets
                    .iter()
                    .find(|t| t.kind.contains(&TargetKind::CDyLib))
                    .map(|t| t.name.replace('-', "_"))
                    .unwrap_or_else(|| p.name.replace('-', "_")),
                manifest: p.manifest_path.clone().into_std_path_buf(),
                capabilities: declared_capabilities(p)?,
                floor: crate::floor::Request::from_metadata(&p.metadata["backworks"]).map_err(
                    |source| BuildError::BadFloor {
                        manifest: p.manifest_path.clone().into_std_path_buf(),
                        source,
                    },
                )?,
            })
        })
        .collect::<Result<_, BuildError>>()?;
    // The members' directories are remapped with the workspace root, the
    // other path dependencies' each on its own.
    let members: Vec<&Path> = workspace
        .metadata
        .workspace_packages()
        .into_iter()
        .filter_map(|p| p.manifest_path.parent())
        .map(|dir| dir.as_std_path())
        .collect();
    let mut path_deps: Vec<(String, PathBuf)> = Vec::new();
    let mut member_deps = false;
    for dependency in selected.iter().flat_map(|p| &p.dependencies) {
        if let Some(path) = &dependency.path {
            let path = path.clone().into_std_path_buf();
            if members.contains(&path.as_path()) {
                member_deps = true;
            } else if !path_deps.iter().any(|(_, p)| *p == path) {
                path_deps.push((dependency.name.clone(), path));
            }
        }
    }
    let remaps = remap_flags(&workspace_root, &target_dir, &path_deps, member_deps);

    let triples: Vec<String> = requested
        .iter()
        .map(|t| t.clone().unwrap_or_else(|| host.clone()))
        .collect();
    progress.status("looking for the toolchains");
    let glibc_floor = plugins.iter().any(|p| p.floor.glibc.is_some());
    let decisions = Probe::new(&workspace_root, &host)
        .with_glibc_floor(glibc_floor)
        .plan(&triples);
    // Every target that cannot be built is reported before any is built.
    let mut failures = Vec::new();
    for decision in &decisions {
        if let Err(missing) = decision {
            let error = BuildError::Missing(missing.clone());
            if options.fail_fast {
                return Err(error);
            }
            progress.forward(&format!("error: {error}"));
            failures.push(error);
        }
    }

    let mut built = Vec::new();
    let mut builders = Vec::new();
    for decision in decisions {
        let Ok(plan) = decision else { continue };
        builders.push((plan.target.clone(), plan.builder.clone()));
        // Always an explicit `--target`, the host's too: cargo builds a
        // host-only build with other flags (and paths) than a `--target`
        // one, so `reproduce`, which names every target, would not get the
        // same bytes.
        match build_target(
            options,
            Some(plan.target.as_str()),
            &plan,
            &plugins,
            &remaps,
            Dirs {
                target: &target_dir,
                dist: &dist_root,
            },
            progress,
        ) {
            Ok(libraries) => built.extend(libraries),
            Err(
                error @ (BuildError::Cargo { .. }
                | BuildError::DependencyList { .. }
                | BuildError::Invalid { .. }
                | BuildError::CapabilitiesNotRecorded { .. }
                | BuildError::FloorNotMet { .. }
                | BuildError::NoArtifact { .. }),
            ) if !options.fail_fast => {
                progress.forward(&format!("error: {error}"));
                failures.push(error);
            }
            Err(error) => return Err(error),
        }
    }
    let manifest = if built.is_empty() {
        None
    } else {
        progress.status("writing the manifest");
        let rustc = crate::manifest::RustcVersion::of(&workspace_root);
        let manifest = crate::manifest::Manifest::new(
            options.release,
            &options.packages,
            &built,
            &builders,
            &dist_root,
            rustc,
        )?;
        Some(manifest.write(&dist_root)?)
    };
    Ok(BuildReport {
        built,
        failures,
        builders,
        dist_dir: dist_root,
        manifest,
    })
}

/// Where a build writes: cargo's target directory (and the object files of
/// the dependency lists, [`crate::deps`]) and the dist directory.
#[derive(Debug, Clone, Copy)]
struct Dirs<'a> {
    target: &'a Path,
    dist: &'a Path,
}

/// Builds, copies and checks every plugin for one target.
fn build_target(
    options: &BuildOptions,
    target: Option<&str>,
    plan: &Plan,
    plugins: &[Plugin],
    remaps: &Flags,
    dirs: Dirs<'_>,
    progress: &Progress,
) -> Result<Vec<BuiltPlugin>, BuildError> {
    let triple = plan.target.as_str();
    let dist_root = dirs.dist;
    let libraries = run_cargo(
        options,
        target,
        plan,
        plugins,
        remaps,
        dirs.target,
        progress,
    )?;
    let mut built = Vec::new();
    for (plugin, cargo_path) in libraries {
        let dist_dir = dist_root.join(triple);
        let dist_path = dist_dir.join(dist_file_name(&plugin.name, &plugin.version, triple));
        progress.status(&format!("checking {}", plugin.name));
        copy_atomically(&cargo_path, &dist_dir, &dist_path)?;
        let report = crate::check::check_file(&dist_path)?;
        if !report.is_valid() {
            return Err(BuildError::Invalid {
                path: dist_path,
                report: report.render_text(),
            });
        }
        let recorded = report.metadata().and_then(|m| m.capabilities.as_ref());
        if let Some(problem) = capabilities_mismatch(plugin, recorded) {
            return Err(BuildError::CapabilitiesNotRecorded {
                path: dist_path,
                problem,
            });
        }
        let floor = report.floor().map(FloorReport::floor).unwrap_or_default();
        if let Some(problem) = plugin.floor.unmet(triple, &floor) {
            return Err(BuildError::FloorNotMet {
                path: dist_path,
                problem,
            });
        }
        progress.step(&format!(
            "   Plugin {} {} ({triple}) -> {}",
            plugin.name,
            plugin.version,
            dist_path.display()
        ));
        if let Some(capabilities) = &plugin.capabilities {
            progress.step(&format!("            needs {capabilities}"));
        }
        if !floor.is_empty() {
            progress.step(&format!("            loads on {floor} or later"));
        }
        built.push(BuiltPlugin {
            package: plugin.name.clone(),
            version: plugin.version.clone(),
            target: triple.to_owned(),
            cargo_path,
            dist_path,
            capabilities: plugin.capabilities.clone(),
            floor,
        });
    }
    Ok(built)
}

/// What is wrong when the record of `plugin`'s library carries `recorded`
/// and its manifest declares otherwise; `None` when they agree.
fn capabilities_mismatch(plugin: &Plugin, recorded: Option<&Capabilities>) -> Option<String> {
    let manifest = plugin.manifest.display();
    match (&plugin.capabilities, recorded) {
        (declared, recorded) if declared.as_ref() == recorded => None,
        (Some(declared), None) => Some(format!(
            "its metadata record carries no capabilities, but {manifest} declares `{declared}`: the plugin's backworks-plugin-sdk predates declared capabilities (or the plugin does not export its record with `export_plugin!`); update it with `cargo update -p backworks-plugin-sdk` (or raise its version in {manifest}) and build again"
        )),
        (None, Some(recorded)) => Some(format!(
            "its metadata record declares `{recorded}`, but {manifest} declares no capabilities: declare them in [package.metadata.backworks.capabilities], so that tools and the registry see what the plugin asks for"
        )),
        (Some(declared), Some(recorded)) => Some(format!(
            "its metadata record declares `{recorded}`, but {manifest} declares `{declared}`: the record must carry the manifest's declaration; run `cargo clean -p {}` and build again",
            plugin.name
        )),
        (None, None) => None,
    }
}

/// Runs cargo for one target, once per plugin; returns each plugin with
/// the library cargo reported for it.
///
/// Each run is `cargo rustc` for one package, so that the flags naming the
/// workspace reach its final crate only (see the module documentation),
/// and the capabilities it declares reach `export_plugin!` alone (the
/// macro reads them from the environment, the same for every crate of a
/// run). Mach-O libraries also get their install name,
/// `@rpath/lib<name>.dylib`, as a link argument of the final crate; without
/// it the install name is the absolute path the library was linked at.
/// (PE files are linked with `--no-insert-timestamp`, for the same bytes on
/// every build.) Release builds also pass the linker `-S` (no debug map):
/// the map names the object files by absolute path, rustc's among them in
/// a randomly named temporary directory, and the Mach-O `LC_UUID` is a hash
/// over it, so it would differ on every build. On the targets that get one,
/// the plugin's dependency list is linked into its crate too
/// ([`crate::deps`]).
fn run_cargo<'p>(
    options: &BuildOptions,
    target: Option<&str>,
    plan: &Plan,
    plugins: &'p [Plugin],
    remaps: &Flags,
    target_dir: &Path,
    progress: &Progress,
) -> Result<Vec<(&'p Plugin, PathBuf)>, BuildError> {
    let mach_o = crate::target::parse(&plan.target)
        .is_some_and(|info| info.format == crate::target::Format::MachO);
    let mut common = remaps.common.clone();
    if plan.target.contains("-windows-gnu") {
        // GNU ld stamps PE files with the link time.
        common.push("-Clink-arg=-Wl,--no-insert-timestamp".to_owned());
        if options.release {
            // The COFF symbol table (unused at run time: the exports are
            // in the export directory) differs between checkouts.
            common.push("-Clink-arg=-Wl,--strip-all".to_owned());
        }
    }
    if mach_o && options.release {
        common.push("-Clink-arg=-Wl,-S".to_owned());
    }
    let mut found = Vec::new();
    for plugin in plugins {
        let mut own = remaps.plugin.clone();
        if mach_o {
            own.push(format!(
                "-Clink-arg=-Wl,-install_name,@rpath/lib{}.dylib",
                plugin.lib_name
            ));
        }
        progress.status(&format!("resolving the dependencies of {}", plugin.name));
        own.extend(crate::deps::prepare(
            &plugin.name,
            &plugin.version,
            &plugin.manifest,
            &plan.target,
            target_dir,
            options.locked,
            &cargo_program(),
        )?);
        let flags = Flags {
            common: common.clone(),
            plugin: own,
        };
        let library = run_cargo_once(options, target, plan, plugin, &flags, target_dir, progress)?;
        found.push((plugin, library));
    }
    Ok(found)
}

/// One cargo run: `rustc` (or `zigbuild`'s) for `plugin`'s library, with
/// `flags.common` for every unit and `flags.plugin` for its final crate.
/// The capabilities it declares are handed to `export_plugin!` in
/// [`CAPABILITIES_ENV`].
///
/// A build against a glibc floor goes to its own directory under
/// `target_dir` (`glibc-<version>/`): cargo keeps one build of each
/// dependency per target, and zig's linker is part of its fingerprint but
/// not of its file name, so a floored build and a plain one (`cargo build`)
/// sharing a directory would rebuild every dependency at each switch.
fn run_cargo_once(
    options: &BuildOptions,
    target: Option<&str>,
    plan: &Plan,
    plugin: &Plugin,
    flags: &Flags,
    target_dir: &Path,
    progress: &Progress,
) -> Result<PathBuf, BuildError> {
    let triple = plan.target.as_str();
    let program = match &plan.builder {
        Builder::Zigbuild { program, .. } => program.clone().into(),
        _ => cargo_program(),
    };
    let mut command = Command::new(&program);
    command.args(["rustc", "--lib", "--message-format=json-render-diagnostics"]);
    command.envs(plan.env.iter().map(|(k, v)| (k, v)));
    match plugin.capabilities_json() {
        Some(json) => command.env(CAPABILITIES_ENV, json),
        None => command.env_remove(CAPABILITIES_ENV),
    };
    // The package's macOS floor wins over the environment's: the build
    // checks the library against it afterwards.
    if let Some(macos) = plugin.floor.deployment_target(triple) {
        command.env(MACOS_DEPLOYMENT_TARGET_ENV, macos.to_string());
    }
    if options.locked {
        command.arg("--locked");
    }
    // cargo-zigbuild links a Linux GNU target against the glibc named after
    // the triple (`x86_64-unknown-linux-gnu.2.17`), and passes cargo the
    // triple alone.
    let zig_target = match (&plan.builder, target) {
        (Builder::Zigbuild { .. }, Some(target)) => plugin.floor.zig_target(target),
        _ => None,
    };
    if let Some(glibc) = plugin.floor.glibc.filter(|_| zig_target.is_some()) {
        command
            .arg("--target-dir")
            .arg(target_dir.join(format!("glibc-{glibc}")));
    } else if let Some(dir) = &options.target_dir {
        command.arg("--target-dir").arg(dir);
    }
    if let Some(manifest) = &options.manifest_path {
        command.arg("--manifest-path").arg(manifest);
    }
    command.arg("-p").arg(&plugin.name);
    if options.release {
        command.arg("--release");
    }
    if let Some(target) = target {
        command.args(["--target", zig_target.as_deref().unwrap_or(target)]);
    }
    if progress.is_quiet() {
        command.arg("--quiet");
    }
    if progress.is_terminal() {
        command.arg("--color=always");
    }
    add_rustflags(&mut command, &flags.common);
    command.arg("--").args(&flags.plugin);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());

    let name = &plugin.name;
    let profile = if options.release { "release" } else { "debug" };
    progress.step(&format!(
        "Building {name} for {triple} ({profile}, {})",
        plan.builder
    ));
    progress.status(&format!("building {name} for {triple}"));
    let mut child = command.spawn().map_err(|source| BuildError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let extension = library_extension(triple);
    let mut found = None;
    let mut units = Units::default();
    std::thread::scope(|scope| {
        // Cargo's own output (and the diagnostics it renders) as it comes.
        scope.spawn(|| {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                progress.forward(&line);
            }
        });
        for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
            match message {
                Message::CompilerArtifact(artifact) => {
                    progress.status(&format!("compiled {}", artifact.target.name));
                    units.count(&artifact);
                    if artifact.package_id != plugin.id
                        || !artifact.target.kind.contains(&TargetKind::CDyLib)
                    {
                        continue;
                    }
                    if let Some(file) = artifact
                        .filenames
                        .iter()
                        .find(|f| f.extension() == Some(extension))
                    {
                        found = Some(file.clone().into_std_path_buf());
                    }
                }
                Message::TextLine(line) => progress.forward(&line),
                _ => {}
            }
        }
    });
    let status = child.wait().map_err(|source| BuildError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo {
            packages: name.clone(),
            target: triple.to_owned(),
            status,
        });
    }
    progress.step(&units.to_string());
    found.ok_or_else(|| BuildError::NoArtifact {
        package: name.clone(),
        target: triple.to_owned(),
        extension,
    })
}

/// What one cargo run compiled, and how many of its crates were fresh
/// (cargo's `compiler-artifact` messages): a line of the build's output,
/// which tells a plugin's author (and the tests) that the dependencies
/// were not rebuilt.
#[derive(Debug, Default)]
struct Units {
    /// How many units cargo reported.
    total: usize,
    /// The ones it compiled: the crate's name, or `<directory> (build
    /// script)`.
    compiled: Vec<String>,
}

impl Units {
    fn count(&mut self, artifact: &cargo_metadata::Artifact) {
        self.total += 1;
        if artifact.fresh {
            return;
        }
        let name = if artifact.target.kind.contains(&TargetKind::CustomBuild) {
            let dir = artifact
                .manifest_path
                .parent()
                .and_then(|dir| dir.file_name())
                .unwrap_or(artifact.target.name.as_str());
            format!("{dir} (build script)")
        } else {
            artifact.target.name.clone()
        };
        self.compiled.push(name);
    }
}

/// `   Compiled 1 of 24 crates: demo`, `   Compiled 0 of 24 crates (all
/// fresh)`.
impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "   Compiled {} of {} crates",
            self.compiled.len(),
            self.total
        )?;
        if self.compiled.is_empty() {
            f.write_str(" (all fresh)")
        } else {
            write!(f, ": {}", self.compiled.join(", "))
        }
    }
}

/// Copies `from` to `to` (in `dir`) through a temporary file there, so `to`
/// is either the old file or the whole new one.
fn copy_atomically(from: &Path, dir: &Path, to: &Path) -> Result<(), BuildError> {
    let error = |source| BuildError::Dist {
        path: to.to_owned(),
        source,
    };
    debug_assert_eq!(to.parent(), Some(dir));
    let source = std::fs::File::open(from).map_err(error)?;
    backworks_artifact::write::write_atomically(
        to,
        source,
        backworks_artifact::write::WriteOptions::default(),
    )
    .map_err(|failed| error(failed.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_names_carry_the_target_and_its_extension() {
        assert_eq!(
            dist_file_name("demo", "0.1.0", "x86_64-unknown-linux-gnu"),
            "demo-0.1.0-x86_64-unknown-linux-gnu.so"
        );
        assert_eq!(
            dist_file_name("demo", "0.1.0", "x86_64-pc-windows-gnu"),
            "demo-0.1.0-x86_64-pc-windows-gnu.dll"
        );
        assert_eq!(
            dist_file_name("demo", "1.0.0", "aarch64-apple-darwin"),
            "demo-1.0.0-aarch64-apple-darwin.dylib"
        );
    }

    #[test]
    fn remaps_put_the_most_specific_prefix_last() {
        let flags = remap_flags(
            Path::new("/src/demo"),
            Path::new("/src/demo/target"),
            &[("sdk".to_owned(), PathBuf::from("/src/sdk"))],
            false,
        );
        assert!(
            flags
                .common
                .contains(&"--remap-path-prefix=/src/sdk=/backworks/path/sdk".to_owned())
        );
        // Only the plugin's own flags name the workspace root, and they end
        // with the target dir it contains.
        assert!(
            !flags.common.iter().any(|f| f.contains("/src/demo=")),
            "{flags:?}"
        );
        assert_eq!(
            flags.plugin,
            [
                "--remap-path-prefix=/src/demo=/backworks/source",
                "--remap-path-prefix=/src/demo/target=/backworks/target"
            ]
        );
        assert_eq!(
            flags.common.last().unwrap(),
            "--remap-path-prefix=/src/demo/target=/backworks/target"
        );
    }

    #[test]
    fn a_plugin_depending_on_a_member_gives_every_unit_the_root() {
        let flags = remap_flags(Path::new("/src/demo"), Path::new("/tmp/target"), &[], true);
        let root = "--remap-path-prefix=/src/demo=/backworks/source".to_owned();
        let target = "--remap-path-prefix=/tmp/target=/backworks/target".to_owned();
        assert!(
            flags.common.ends_with(&[root.clone(), target.clone()]),
            "{flags:?}"
        );
        assert_eq!(flags.plugin, [root, target]);
    }
}
