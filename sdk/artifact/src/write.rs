//! Writing a file whole, and the one I/O error of the workspace.
//!
//! [`write_atomically`] writes to a temporary file in the destination's
//! directory, flushes it to disk, then renames it over the destination, so
//! a reader (or a crash) sees the old file or the whole new one, never a
//! part. Every tool and server of the workspace writes its files this way:
//! keys, manifests, build outputs, the registry tree, the plugin cache.
//!
//! [`PathError`] is the error of an operation on a path: what was being
//! done, on which path, and the operating system's error. The workspace's
//! error enums carry it (`Io(PathError)`) rather than each spelling the
//! same three fields.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An I/O operation on `path` failed: "cannot {action} {path}: {source}".
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct PathError {
    /// What was being done: `read`, `write`, `create`, `rename`, ...
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl PathError {
    /// The error of `action` on `path`.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            action,
            path: path.into(),
            source,
        }
    }

    /// A function that makes the error of `action` on `path` from an
    /// `io::Error`, for `map_err`.
    pub fn on<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::new(action, path, source)
    }
}

/// How [`write_atomically`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Unix permission bits of the new file (e.g. `0o600` for a secret);
    /// `None`: the default of a temporary file (`0o600`), which suits every
    /// file only its owner writes.
    pub mode: Option<u32>,
    /// Replace an existing file; without it an existing destination is an
    /// error whose source is `ErrorKind::AlreadyExists` (checked atomically
    /// by the rename).
    pub overwrite: bool,
}

impl Default for WriteOptions {
    /// Replace, with the default permissions.
    fn default() -> Self {
        Self {
            mode: None,
            overwrite: true,
        }
    }
}

/// Writes everything `contents` yields to `path` (its directory created if
/// missing) as the module docs say: a temporary file in the same directory,
/// synced, then renamed into place. On any error the temporary file is
/// removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    mut contents: impl Read,
    options: WriteOptions,
) -> Result<(), PathError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(PathError::on("create", dir))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".backworks-").suffix(".tmp");
    #[cfg(unix)]
    if let Some(mode) = options.mode {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut file = builder
        .tempfile_in(dir)
        .map_err(PathError::on("create a file in", dir))?;
    io::copy(&mut contents, file.as_file_mut()).map_err(PathError::on("write", path))?;
    file.as_file_mut()
        .flush()
        .and_then(|()| file.as_file().sync_all())
        .map_err(PathError::on("write", path))?;
    let persisted = if options.overwrite {
        file.persist(path)
    } else {
        file.persist_noclobber(path)
    };
    persisted.map(drop).map_err(|e| {
        PathError::new(
            if options.overwrite {
                "replace"
            } else {
                "create"
            },
            path,
            e.error,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.txt");
        write_atomically(&path, &b"first"[..], WriteOptions::default()).unwrap();
        write_atomically(&path, &b"second"[..], WriteOptions::default()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names_in(&dir.path().join("sub")), ["file.txt"]);
    }

    #[test]
    fn without_overwrite_an_existing_file_is_kept_and_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "old").unwrap();
        let options = WriteOptions {
            mode: Some(0o600),
            overwrite: false,
        };
        let error = write_atomically(&path, &b"new"[..], options).unwrap_err();
        assert_eq!(error.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(error.path, path);
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot create {}: ", path.display())),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["key"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_the_new_files() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("public");
        let options = WriteOptions {
            mode: Some(0o644),
            overwrite: true,
        };
        write_atomically(&path, &b"x"[..], options).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_failed_read_leaves_the_old_file() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("source went away"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, "old").unwrap();
        let error = write_atomically(&path, Failing, WriteOptions::default()).unwrap_err();
        assert_eq!(error.action, "write");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["file"]);
    }
}
