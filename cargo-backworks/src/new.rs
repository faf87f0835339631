//! `cargo backworks new`: writes a new plugin crate from `plugin-template/`.
//!
//! The template is embedded in the binary at compile time, so an installed
//! tool needs no source tree: from `embedded/`, this crate's copy of the
//! repository's `plugin-template/` and `ci/` (a test keeps them identical). The new crate's `Cargo.toml` is edited with
//! `toml_edit` (keeping the template's comments): its name, and the SDK
//! dependency. The crate is assembled in a temporary directory beside the
//! destination and renamed into place, so a failure never leaves half a
//! crate behind.

use std::path::{Path, PathBuf};

use backworks_artifact::write::PathError;
use toml_edit::{DocumentMut, InlineTable, Item, Value};

/// The template's files: path inside the crate, contents.
const TEMPLATE: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../embedded/plugin-template/Cargo.toml.in"),
    ),
    (
        "src/lib.rs",
        include_str!("../embedded/plugin-template/src/lib.rs"),
    ),
    (
        "README.md",
        include_str!("../embedded/plugin-template/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../embedded/plugin-template/.gitignore"),
    ),
];

/// What `--ci github` adds: path inside the crate, contents, executable.
/// The same files this repository ships in `ci/`.
const GITHUB_CI: &[(&str, &str, bool)] = &[
    (
        ".github/workflows/backworks.yml",
        include_str!("../embedded/ci/github/backworks-plugin.yml"),
        false,
    ),
    (
        "ci/plugin-pipeline.sh",
        include_str!("../embedded/ci/plugin-pipeline.sh"),
        true,
    ),
];

/// A CI system `new` can write a pipeline for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    /// GitHub Actions: `.github/workflows/backworks.yml` (a build matrix over
    /// the five release targets, the ABI gate, signing from a secret,
    /// artifact upload, a reproducibility job) and `ci/plugin-pipeline.sh`,
    /// which it runs and which runs the same anywhere.
    Github,
}

/// The SDK version new plugins depend on: this tool's own.
pub const SDK_VERSION: &str = backworks_plugin_sdk::SDK_VERSION;

/// Where the new plugin gets `backworks-plugin-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// The version on the registry (`backworks-plugin-sdk = "<version>"`).
    Version(String),
    /// A local checkout of the SDK (`{ version, path }`).
    Path(PathBuf),
    /// The SDK this tool was built from, when that checkout still exists
    /// (`{ version, path }`); else the registry version.
    Auto,
}

/// What `new` is asked to do.
#[derive(Debug, Clone)]
pub struct NewOptions {
    /// The directory to create; must not exist or be empty.
    pub path: PathBuf,
    /// The package name; by default the directory's name.
    pub name: Option<String>,
    /// Where the SDK comes from.
    pub sdk: SdkSource,
    /// A CI pipeline to write as well.
    pub ci: Option<Ci>,
}

/// What `new` wrote.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// The new crate's directory.
    pub path: PathBuf,
    /// Its package name.
    pub name: String,
    /// The SDK dependency as written, e.g. `{ version = "0.1.0", path = "..." }`.
    pub sdk_dependency: String,
}

/// Why `new` wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// The destination exists and holds files.
    #[error(
        "destination `{}` is not empty; choose a new directory, or empty this one first",
        .0.display()
    )]
    NotEmpty(PathBuf),
    /// The destination exists and is not a directory.
    #[error("destination `{}` exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// No name was given and none can be derived from the path.
    #[error("cannot derive a package name from `{}`; pass --name", .0.display())]
    NoName(PathBuf),
    /// The name is not a valid plugin package name.
    #[error(
        "invalid package name `{name}`: {why}; use 1 to 63 ASCII letters, digits, `-` or `_`, starting with a letter"
    )]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--sdk-path` does not point at the SDK.
    #[error(
        "`{}` is not the backworks-plugin-sdk crate (no Cargo.toml naming it); pass the `sdk/` directory of a Backworks checkout",
        .0.display()
    )]
    NotTheSdk(PathBuf),
    /// Reading or writing files failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The embedded template's Cargo.toml did not parse (a bug in this tool).
    #[error("the embedded template's Cargo.toml is invalid: {0}")]
    Template(String),
}

impl NewError {
    /// The process exit code: always 2 (usage, configuration or I/O).
    pub fn exit_code(&self) -> u8 {
        2
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NewError {
    let path = path.to_owned();
    move |source| NewError::Io(PathError::new(action, path, source))
}

/// Checks that `name` can be a plugin's package name (a crate name that
/// fits the metadata record's 63-byte slot).
pub fn validate_name(name: &str) -> Result<(), NewError> {
    let invalid = |why| {
        Err(NewError::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 63 {
        return invalid("it is longer than 63 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid("it must start with an ASCII letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return invalid("it may hold only ASCII letters, digits, `-` and `_`");
    }
    if backworks_registry::is_reserved_on_windows(name) {
        return invalid(
            "Windows reserves it for a device (`con`, `nul`, `com1`, ...), so no registry takes a plugin of that name",
        );
    }
    Ok(())
}

/// The SDK checkout this tool was built from, if it is still there.
fn own_sdk_checkout() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("sdk");
    is_sdk(&sdk).then_some(sdk)
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<DocumentMut>().ok())
        .and_then(|doc| {
            doc.get("package")?
                .get("name")?
                .as_str()
                .map(|n| n == "backworks-plugin-sdk")
        })
        .unwrap_or(false)
}

/// The template's `Cargo.toml` for package `name` with the SDK from `sdk`.
fn manifest(name: &str, sdk: &SdkSource) -> Result<(String, String), NewError> {
    let mut doc: DocumentMut = TEMPLATE[0]
        .1
        .parse()
        .map_err(|e: toml_edit::TomlError| NewError::Template(e.to_string()))?;
    doc["package"]["name"] = toml_edit::value(name);
    let path = match sdk {
        SdkSource::Version(_) => None,
        SdkSource::Path(path) => {
            if !is_sdk(path) {
                return Err(NewError::NotTheSdk(path.clone()));
            }
            Some(std::path::absolute(path).map_err(io("resolve", path))?)
        }
        SdkSource::Auto => own_sdk_checkout(),
    };
    let version = match sdk {
        SdkSource::Version(version) => version.as_str(),
        _ => SDK_VERSION,
    };
    let dependency = match path {
        None => Value::from(version),
        Some(path) => {
            let mut table = InlineTable::new();
            table.insert("version", version.into());
            table.insert("path", path.to_string_lossy().as_ref().into());
            Value::InlineTable(table)
        }
    };
    let written = dependency.to_string().trim().to_owned();
    doc["dependencies"]["backworks-plugin-sdk"] = Item::Value(dependency);
    Ok((doc.to_string(), written))
}

/// Writes a new plugin crate at `options.path`.
pub fn new_plugin(options: &NewOptions) -> Result<NewReport, NewError> {
    let destination = &options.path;
    let name = match &options.name {
        Some(name) => name.clone(),
        None => destination
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| NewError::NoName(destination.clone()))?,
    };
    validate_name(&name)?;
    let existed = match std::fs::metadata(destination) {
        Ok(meta) if !meta.is_dir() => return Err(NewError::NotADirectory(destination.clone())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(destination).map_err(io("read", destination))?;
            if entries.next().is_some() {
                return Err(NewError::NotEmpty(destination.clone()));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("inspect", destination)(e)),
    };
    let (cargo_toml, sdk_dependency) = manifest(&name, &options.sdk)?;

    let parent = match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".backworks-new-")
        .tempdir_in(&parent)
        .map_err(io("create a staging directory in", &parent))?;
    for (relative, contents) in TEMPLATE {
        let file = staging.path().join(relative);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let contents = if *relative == "Cargo.toml" {
            cargo_toml.as_str()
        } else {
            contents
        };
        std::fs::write(&file, contents).map_err(io("write", &file))?;
    }
    let ci_files = match options.ci {
        Some(Ci::Github) => GITHUB_CI,
        None => &[],
    };
    for (relative, contents, executable) in ci_files {
        let file = staging.path().join(relative);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        std::fs::write(&file, contents).map_err(io("write", &file))?;
        #[cfg(unix)]
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .map_err(io("make executable", &file))?;
        }
        #[cfg(not(unix))]
        let _ = executable;
    }
    if existed {
        std::fs::remove_dir(destination).map_err(io("replace", destination))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, destination).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        io("create", destination)(e)
    })?;
    Ok(NewReport {
        path: destination.clone(),
        name,
        sdk_dependency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["demo", "my-plugin", "a_b-9", &"x".repeat(63)] {
            validate_name(good).unwrap();
        }
        for bad in ["", "9lives", "-x", "with space", "ünï", &"x".repeat(64)] {
            let error = validate_name(bad).unwrap_err();
            assert!(
                error.to_string().contains("invalid package name"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_windows_device_name_is_not_a_plugin_name() {
        for reserved in ["con", "NUL", "com1", "lpt9", "aux"] {
            let error = validate_name(reserved).unwrap_err();
            assert!(error.to_string().contains("Windows reserves it"), "{error}");
        }
        validate_name("console").unwrap();
    }

    #[test]
    fn manifest_sets_name_and_sdk() {
        let (text, dep) = manifest("demo", &SdkSource::Version("9.9.9".into())).unwrap();
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(doc["package"]["name"].as_str(), Some("demo"));
        assert_eq!(
            doc["dependencies"]["backworks-plugin-sdk"].as_str(),
            Some("9.9.9")
        );
        assert_eq!(dep, "\"9.9.9\"");
        assert!(text.contains("# A Backworks plugin"), "comments are kept");

        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let (text, _) = manifest("demo", &SdkSource::Path(sdk)).unwrap();
        let doc: DocumentMut = text.parse().unwrap();
        let dep = &doc["dependencies"]["backworks-plugin-sdk"];
        assert_eq!(dep["version"].as_str(), Some(SDK_VERSION));
        assert!(dep["path"].as_str().unwrap().ends_with("sdk"));

        let error = manifest("demo", &SdkSource::Path("/".into())).unwrap_err();
        assert!(matches!(error, NewError::NotTheSdk(_)), "{error}");
    }

    #[test]
    fn refuses_non_empty_destinations_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("file"), "x").unwrap();
        let error = new_plugin(&NewOptions {
            path: taken.clone(),
            name: None,
            sdk: SdkSource::Auto,
            ci: None,
        })
        .unwrap_err();
        assert!(matches!(error, NewError::NotEmpty(_)), "{error}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no staging left"
        );
    }

    #[test]
    fn writes_the_template_into_a_new_or_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        for path in [dir.path().join("fresh-plugin"), empty] {
            let report = new_plugin(&NewOptions {
                path: path.clone(),
                name: None,
                sdk: SdkSource::Version("0.1.0".into()),
                ci: None,
            })
            .unwrap();
            assert!(path.join("src/lib.rs").is_file());
            assert!(!path.join(".github").exists(), "CI only when asked");
            assert!(path.join(".gitignore").is_file());
            let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
            assert!(manifest.contains(&format!("name = \"{}\"", report.name)));
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no staging directory left: {names:?}");
    }
}
