//! `cargo backworks check <file>... [--json]`: the command's output. The
//! check itself is `backworks-artifact`'s ([`backworks_artifact::check`],
//! re-exported here whole), which returns one [`FileReport`] per file; this
//! module prints them, as text or as the JSON document of `docs/check.md`
//! (schema [`SCHEMA`], a summary, the exit code), and decides the exit codes.
//! With `--deps`, each file's dependency list ([`backworks_artifact::deps`])
//! is printed after its report.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

pub use backworks_artifact::check::*;
use backworks_artifact::deps::{self, VersionInfo};
use backworks_artifact::terminal::escape;
use serde::Serialize;
use serde::ser::SerializeStruct;

/// The `schema` field of the JSON report; changes only when the JSON
/// changes incompatibly.
pub const SCHEMA: &str = "backworks-check/1";

/// The process exit code for a [`CheckError`]: always 2 (I/O or usage).
pub fn error_exit_code(_error: &CheckError) -> u8 {
    2
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The result of checking a list of files.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    reports: Vec<FileReport>,
    /// With `--deps`: each file's dependency list, or why it could not be
    /// read (`None` for a file that could not be read at all).
    deps: Option<Vec<Option<Result<VersionInfo, String>>>>,
}

impl CheckOutcome {
    /// One report per file, in the order given.
    pub fn reports(&self) -> &[FileReport] {
        &self.reports
    }

    /// Number of valid plugins.
    pub fn valid(&self) -> usize {
        self.reports.iter().filter(|r| r.is_valid()).count()
    }

    /// Number of files read that are not valid plugins.
    pub fn invalid(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| !r.is_valid() && r.error().is_none())
            .count()
    }

    /// Number of files that could not be read.
    pub fn unreadable(&self) -> usize {
        self.reports.iter().filter(|r| r.error().is_some()).count()
    }

    /// With `--deps`, each file's dependency list (`None` for a file that
    /// could not be read), or why it could not be read from the file; `None`
    /// without `--deps`.
    pub fn dependencies(&self) -> Option<&[Option<Result<VersionInfo, String>>]> {
        self.deps.as_deref()
    }

    /// Number of files read whose dependency list was asked for and could
    /// not be read (none without `--deps`).
    pub fn deps_unreadable(&self) -> usize {
        self.deps
            .iter()
            .flatten()
            .filter(|d| matches!(d, Some(Err(_))))
            .count()
    }

    /// The process exit code: 0 when every file is a valid plugin (with
    /// `--deps`, whose dependency list is read), 2 when a file could not be
    /// read, else 1 (a file was read but is not a valid plugin, or its
    /// dependency list could not be read).
    pub fn exit_code(&self) -> u8 {
        if self.unreadable() > 0 {
            2
        } else if self.invalid() > 0 || self.deps_unreadable() > 0 {
            1
        } else {
            0
        }
    }

    /// The whole report as text: each file's [`FileReport::render_text`],
    /// separated by blank lines, then a summary line when there are several
    /// files.
    pub fn render_text(&self) -> String {
        let mut out = self
            .reports
            .iter()
            .enumerate()
            .map(|(i, report)| {
                let mut text = report.render_text();
                if let Some(Some(list)) = self.deps.as_ref().and_then(|d| d.get(i)) {
                    text.push_str(&render_deps(list));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("\n");
        if self.reports.len() > 1 {
            let _ = writeln!(
                out,
                "\nchecked {}: {} valid, {} not valid, {} unreadable",
                plural(self.reports.len(), "file"),
                self.valid(),
                self.invalid(),
                self.unreadable()
            );
        }
        out
    }

    /// The whole report as the JSON document of `docs/check.md` (what
    /// [`run`] prints with `--json`; `CheckOutcome` also implements
    /// [`Serialize`] to the same document, with fields in schema order).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl Serialize for CheckOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Abi {
            min: u32,
            max: u32,
        }
        #[derive(Serialize)]
        struct Summary {
            files: usize,
            valid: usize,
            invalid: usize,
            unreadable: usize,
        }
        let mut s = serializer.serialize_struct("CheckOutcome", 5)?;
        s.serialize_field("schema", SCHEMA)?;
        s.serialize_field(
            "supported_abi",
            &Abi {
                min: *SUPPORTED_ABI.start(),
                max: *SUPPORTED_ABI.end(),
            },
        )?;
        match &self.deps {
            None => s.serialize_field("files", &self.reports)?,
            Some(deps) => {
                // Each file's object with its `dependencies`.
                let mut files = Vec::with_capacity(self.reports.len());
                for (report, list) in self.reports.iter().zip(deps) {
                    let mut file =
                        serde_json::to_value(report).map_err(serde::ser::Error::custom)?;
                    if let (Some(list), Some(object)) = (list, file.as_object_mut()) {
                        let value = match list {
                            Ok(info) => {
                                serde_json::to_value(info).map_err(serde::ser::Error::custom)?
                            }
                            Err(error) => serde_json::json!({ "error": error }),
                        };
                        object.insert("dependencies".to_owned(), value);
                    }
                    files.push(file);
                }
                s.serialize_field("files", &files)?;
            }
        }
        s.serialize_field(
            "summary",
            &Summary {
                files: self.reports.len(),
                valid: self.valid(),
                invalid: self.invalid(),
                unreadable: self.unreadable(),
            },
        )?;
        s.serialize_field("exit_code", &self.exit_code())?;
        s.end()
    }
}

/// The `dependencies:` lines of a file's text report: the packages of its
/// list, one a line, or why the list could not be read.
fn render_deps(list: &Result<VersionInfo, String>) -> String {
    match list {
        Ok(info) => {
            let mut out = format!(
                "  dependencies: {} (section `{}`)\n",
                plural(info.packages.len(), "package"),
                deps::SECTION
            );
            for package in &info.packages {
                let _ = writeln!(out, "    {}", escape(&deps::package_line(package)));
            }
            out
        }
        Err(error) => format!("  dependencies: error: {}\n", escape(error)),
    }
}

/// Checks every file in `files`, writes the report to `out` (text, or JSON
/// when `json`; with each file's dependency list when `deps`), and returns
/// the outcome, whose [`exit_code`](CheckOutcome::exit_code) is the
/// command's.
///
/// A file that cannot be read is reported in the output (and makes the exit
/// code 2); the other files are still checked. Errors only when `files` is
/// empty or `out` cannot be written.
pub fn run(
    files: &[PathBuf],
    json: bool,
    deps: bool,
    out: &mut dyn Write,
) -> Result<CheckOutcome, CheckError> {
    if files.is_empty() {
        return Err(CheckError::NoFiles);
    }
    let reports: Vec<FileReport> = files
        .iter()
        .map(|path| check_file(path).unwrap_or_else(|e| FileReport::unreadable(path, &e)))
        .collect();
    let deps = deps.then(|| {
        reports
            .iter()
            .map(|report| {
                report
                    .error()
                    .is_none()
                    .then(|| deps::read(report.path()).map_err(|error| error.to_string()))
            })
            .collect()
    });
    let outcome = CheckOutcome { reports, deps };
    if json {
        // Text from the file in `\uXXXX` escapes, nothing raw on a terminal.
        out.write_all(backworks_artifact::terminal::json(&outcome).as_bytes())
            .map_err(CheckError::Write)?;
    } else {
        out.write_all(outcome.render_text().as_bytes())
            .map_err(CheckError::Write)?;
    }
    out.flush().map_err(CheckError::Write)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;

    use super::*;

    /// A valid plugin's file name: the C weather plugin's.
    const DIST_NAME: &str = "libweather_c.so";

    #[test]
    fn outcome_exit_codes_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join(DIST_NAME);
        std::fs::copy(backworks_test_support::c_plugin(), &plugin).unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a plugin\n").unwrap();
        let empty = dir.path().join("empty.so");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.so");

        let run_on = |files: &[&PathBuf], json: bool| {
            let files: Vec<PathBuf> = files.iter().map(|f| (*f).clone()).collect();
            let mut out = Vec::new();
            let outcome = run(&files, json, false, &mut out).unwrap();
            (outcome, String::from_utf8(out).unwrap())
        };
        let (outcome, out) = run_on(&[&plugin], false);
        assert_eq!(outcome.exit_code(), 0);
        assert!(
            out.starts_with(&format!("{}: valid plugin\n", plugin.display())),
            "{out}"
        );
        assert!(!out.contains("checked"), "no summary for one file");

        let (outcome, out) = run_on(&[&plugin, &text, &empty], false);
        assert_eq!(
            (outcome.valid(), outcome.invalid(), outcome.unreadable()),
            (1, 2, 0)
        );
        assert_eq!(outcome.exit_code(), 1);
        assert!(
            out.ends_with("checked 3 files: 1 valid, 2 not valid, 0 unreadable\n"),
            "{out}"
        );

        let directory = dir.path().to_path_buf();
        let (outcome, out) = run_on(&[&missing, &plugin, &directory], true);
        assert_eq!(outcome.exit_code(), 2);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json, outcome.to_json());
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["files"][1]["valid"], true);
        let error = json["files"][0]["error"].as_str().unwrap();
        assert!(
            error.starts_with("cannot open ") && error.contains("missing.so"),
            "{error}"
        );
        let error = json["files"][2]["error"].as_str().unwrap();
        assert!(error.contains("not a regular file"), "{error}");
        assert_eq!(json["summary"]["unreadable"], 2);

        assert!(matches!(
            run(&[], false, false, &mut Vec::new()),
            Err(CheckError::NoFiles)
        ));
    }

    #[test]
    fn check_errors_exit_with_2() {
        let path = Path::new("some/plugin.so").to_path_buf();
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        for error in [
            CheckError::Open {
                path: path.clone(),
                source: io(),
            },
            CheckError::NotAFile {
                path: path.clone(),
                kind: "a FIFO",
            },
            CheckError::Read {
                path: path.clone(),
                source: io(),
            },
            CheckError::TooLarge {
                path: path.clone(),
                size: MAX_FILE_SIZE + 1,
                max: MAX_FILE_SIZE,
            },
        ] {
            assert_eq!(error_exit_code(&error), 2);
        }
    }
}
