//! `cargo backworks build`: builds every plugin package for every requested
//! target with the real cargo, copies each library into the dist layout and
//! checks it.
//!
//! - Plugin packages are the workspace members with a `cdylib` target, found
//!   with `cargo_metadata`; `-p` narrows them.
//! - Targets come from `--target`, else from the union of the packages'
//!   `[package.metadata.backworks] targets = [...]`, else the host.
//! - Cargo is `$CARGO` (set by cargo when it runs a subcommand), never a
//!   guessed path. It runs once per target with
//!   `--message-format=json-render-diagnostics`: its diagnostics are forwarded
//!   as they come, and the library paths are taken from its
//!   `compiler-artifact` messages, never guessed from file names.
//! - Builds are reproducible across checkouts: the source tree, cargo home
//!   and target directory are remapped (`--remap-path-prefix`) to fixed
//!   paths, so the same source built from two directories gives the same
//!   bytes.
//! - Each library is copied (atomically) to
//!   `<target-dir>/backworks/<target>/<name>-<version>-<target>.<so|dll|dylib>`
//!   and checked with [`check`](crate::check).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::{Message, MetadataCommand, PackageId, TargetKind};

use crate::progress::Progress;

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
}

impl BuildError {
    /// The process exit code: 1 for a built library that is not a valid
    /// plugin, 3 when cargo failed, 2 for everything else (configuration,
    /// I/O).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } => 1,
            Self::Cargo { .. } => 3,
            Self::Check(e) => e.exit_code(),
            _ => 2,
        }
    }
}

/// The shared-library extension of a target triple.
pub fn library_extension(target: &str) -> &'static str {
    if target.contains("windows") {
        "dll"
    } else if target.contains("apple") {
        "dylib"
    } else {
        "so"
    }
}

/// The dist file name of a plugin library.
pub fn dist_file_name(package: &str, version: &str, target: &str) -> String {
    format!("{package}-{version}-{target}.{}", library_extension(target))
}

fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The host's target triple, as the toolchain in `dir` reports it.
fn host_target(dir: &Path) -> Result<String, BuildError> {
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
}

/// `--remap-path-prefix` flags that make output independent of where the
/// source, cargo home and target directory are.
fn remap_flags(workspace_root: &Path, target_dir: &Path) -> Vec<String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = Vec::new();
    // Later flags win where prefixes nest (the target dir is usually inside
    // the workspace root).
    if let Some(home) = cargo_home {
        flags.push(format!(
            "--remap-path-prefix={}=/backworks/cargo-home",
            home.display()
        ));
    }
    flags.push(format!(
        "--remap-path-prefix={}=/backworks/source",
        workspace_root.display()
    ));
    flags.push(format!(
        "--remap-path-prefix={}=/backworks/target",
        target_dir.display()
    ));
    flags
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

/// Builds, copies and checks every selected plugin for every target.
pub fn build(options: &BuildOptions, progress: &Progress) -> Result<Vec<BuiltPlugin>, BuildError> {
    let mut metadata_command = MetadataCommand::new();
    metadata_command.cargo_path(cargo_program()).no_deps();
    if let Some(manifest) = &options.manifest_path {
        metadata_command.manifest_path(manifest);
    }
    progress.status("reading the workspace");
    let metadata = metadata_command.exec().map_err(BuildError::Metadata)?;
    let workspace_root = metadata.workspace_root.clone().into_std_path_buf();
    let target_dir = metadata.target_directory.clone().into_std_path_buf();

    let candidates: Vec<&cargo_metadata::Package> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| {
            p.targets
                .iter()
                .any(|t| t.kind.contains(&TargetKind::CDyLib))
        })
        .collect();
    if candidates.is_empty() {
        return Err(BuildError::NoPlugins(workspace_root));
    }
    for name in &options.packages {
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
    let selected: Vec<&cargo_metadata::Package> = candidates
        .into_iter()
        .filter(|p| {
            options.packages.is_empty() || options.packages.iter().any(|n| n == p.name.as_str())
        })
        .collect();

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
        .map(|p| Plugin {
            id: p.id.clone(),
            name: p.name.to_string(),
            version: p.version.to_string(),
        })
        .collect();
    let remaps = remap_flags(&workspace_root, &target_dir);

    let mut built = Vec::new();
    for target in &requested {
        let triple = target.clone().unwrap_or_else(|| host.clone());
        let libraries = run_cargo(
            options,
            target.as_deref(),
            &triple,
            &plugins,
            &remaps,
            progress,
        )?;
        for (plugin, cargo_path) in libraries {
            let dist_dir = target_dir.join("backworks").join(&triple);
            let dist_path = dist_dir.join(dist_file_name(&plugin.name, &plugin.version, &triple));
            progress.status(&format!("checking {}", plugin.name));
            copy_atomically(&cargo_path, &dist_dir, &dist_path)?;
            let report = crate::check::check_file(&dist_path)?;
            if !report.is_valid() {
                return Err(BuildError::Invalid {
                    path: dist_path,
                    report: report.render_text(),
                });
            }
            progress.step(&format!(
                "   Plugin {} {} ({triple}) -> {}",
                plugin.name,
                plugin.version,
                dist_path.display()
            ));
            built.push(BuiltPlugin {
                package: plugin.name.clone(),
                version: plugin.version.clone(),
                target: triple.clone(),
                cargo_path,
                dist_path,
            });
        }
    }
    Ok(built)
}

/// Runs cargo for one target; returns each plugin with the library cargo
/// reported for it.
fn run_cargo<'p>(
    options: &BuildOptions,
    target: Option<&str>,
    triple: &str,
    plugins: &'p [Plugin],
    remaps: &[String],
    progress: &Progress,
) -> Result<Vec<(&'p Plugin, PathBuf)>, BuildError> {
    let program = cargo_program();
    let mut command = Command::new(&program);
    command.args(["build", "--lib", "--message-format=json-render-diagnostics"]);
    if let Some(manifest) = &options.manifest_path {
        command.arg("--manifest-path").arg(manifest);
    }
    for plugin in plugins {
        command.arg("-p").arg(&plugin.name);
    }
    if options.release {
        command.arg("--release");
    }
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    if progress.is_quiet() {
        command.arg("--quiet");
    }
    if progress.is_terminal() {
        command.arg("--color=always");
    }
    add_rustflags(&mut command, remaps);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());

    let names = plugins
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let profile = if options.release { "release" } else { "debug" };
    progress.step(&format!("Building {names} for {triple} ({profile})"));
    progress.status(&format!("building {names} for {triple}"));
    let mut child = command.spawn().map_err(|source| BuildError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let extension = library_extension(triple);
    let mut found: Vec<(&Plugin, PathBuf)> = Vec::new();
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
                    let Some(plugin) = plugins.iter().find(|p| p.id == artifact.package_id) else {
                        continue;
                    };
                    if !artifact.target.kind.contains(&TargetKind::CDyLib) {
                        continue;
                    }
                    if let Some(file) = artifact
                        .filenames
                        .iter()
                        .find(|f| f.extension() == Some(extension))
                    {
                        found.push((plugin, file.clone().into_std_path_buf()));
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
            packages: names,
            target: triple.to_owned(),
            status,
        });
    }
    for plugin in plugins {
        if !found.iter().any(|(p, _)| p.id == plugin.id) {
            return Err(BuildError::NoArtifact {
                package: plugin.name.clone(),
                target: triple.to_owned(),
                extension,
            });
        }
    }
    Ok(found)
}

/// Copies `from` to `to` through a temporary file in `dir`, so `to` is
/// either the old file or the whole new one.
fn copy_atomically(from: &Path, dir: &Path, to: &Path) -> Result<(), BuildError> {
    let error = |source| BuildError::Dist {
        path: to.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    let mut source = std::fs::File::open(from).map_err(error)?;
    std::io::copy(&mut source, temporary.as_file_mut()).map_err(error)?;
    temporary.as_file().sync_all().map_err(error)?;
    temporary.persist(to).map_err(|e| error(e.error))?;
    Ok(())
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
        let flags = remap_flags(Path::new("/src/demo"), Path::new("/src/demo/target"));
        let source = flags
            .iter()
            .position(|f| f.ends_with("=/backworks/source"))
            .unwrap();
        let target = flags
            .iter()
            .position(|f| f.ends_with("=/backworks/target"))
            .unwrap();
        assert!(source < target, "{flags:?}");
    }
}
