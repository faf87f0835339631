//! Reading a file that may be hostile, bounded and never waited on:
//! the one way `cargo backworks check`, `sign`,
//! `verify` and `publish` read a plugin library or a `.minisig`.
//!
//! The contract is the host loader's (`loader::open_bounded` in
//! `backworks-host`): the path is opened without blocking (`O_NONBLOCK` on
//! Unix, so a FIFO with no writer does not hang the open; reads of a regular
//! file are not changed by it), and refused unless `fstat` of the opened
//! descriptor says it is a regular file (a FIFO, a device such as
//! `/dev/zero`, a socket or a directory is refused; symbolic links to a
//! regular file are followed), so what is checked is what is read. A file
//! over the size limit is refused before a byte is read, and reading stops
//! one byte past the limit, so a file that grows while it is read is caught
//! too.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The largest `.minisig` read: 8 KiB (a minisign signature is under
/// 1 KiB; the host holds a `.minisig` to the same limit).
pub const MAX_SIGNATURE_SIZE: u64 = 8 * 1024;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or its metadata read.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The path (after symbolic links) is not a regular file.
    #[error("refusing {}: not a regular file (it is {kind})", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is: `a FIFO`, `a character device`, `a directory`, ...
        kind: &'static str,
    },
    /// The file is larger than the limit (or grew past it while read).
    #[error("refusing {}: it is {size} bytes, more than the {max} bytes allowed", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least this many bytes, when it grew while read).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Read { path, .. } => path,
        }
    }
}

/// A regular file opened by [`open`], with its size when opened.
#[derive(Debug)]
pub struct Opened {
    /// The open file, at offset 0.
    pub file: File,
    /// Its size when it was opened (at most the limit).
    pub size: u64,
}

/// Opens `path` to read, refusing anything but a regular file of at most
/// `max` bytes (see the module docs). Never blocks on a FIFO.
pub fn open(path: &Path, max: u64) -> Result<Opened, FileError> {
    let open_error = |source| FileError::Open {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(&metadata.file_type()),
        });
    }
    if metadata.len() > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: metadata.len(),
            max,
        });
    }
    Ok(Opened {
        file,
        size: metadata.len(),
    })
}

/// The whole of `opened` (from its current offset), at most `max` bytes:
/// one byte more means the file grew past the limit while it was read.
pub fn read_opened(path: &Path, opened: &mut Opened, max: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::with_capacity(usize::try_from(opened.size).unwrap_or(0));
    (&mut opened.file)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// The whole file at `path`, a regular file of at most `max` bytes
/// ([`open`], then [`read_opened`]).
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let mut opened = open(path, max)?;
    read_opened(path, &mut opened, max)
}

/// What a file that is not regular is, for messages ("a FIFO", "a
/// directory", ...).
pub fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("plugin.so");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        // A blocking open of a FIFO with no writer would never return.
        let error = read(&fifo, 1 << 20).unwrap_err();
        assert!(
            matches!(error, FileError::NotRegular { kind: "a FIFO", .. }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "refusing {}: not a regular file (it is a FIFO)",
                fifo.display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused() {
        let error = read(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(
                error,
                FileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{error}"
        );
        // A symbolic link to a device is what it leads to.
        let link = dir.path().join("plugin.so.minisig");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read(&link, MAX_SIGNATURE_SIZE),
            Err(FileError::NotRegular { .. })
        ));
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        // Sparse: no byte of it is written.
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(u64::from(u32::MAX) + 2).unwrap();
        let error = read(file.path(), 1024).unwrap_err();
        assert!(
            matches!(error, FileError::TooLarge { size, max: 1024, .. } if size == u64::from(u32::MAX) + 2),
            "{error}"
        );
        file.as_file().set_len(1024).unwrap();
        assert_eq!(read(file.path(), 1024).unwrap(), vec![0; 1024]);
        // Grown after the open: caught while reading.
        let mut opened = open(file.path(), 1024).unwrap();
        file.as_file().set_len(1025).unwrap();
        let error = read_opened(file.path(), &mut opened, 1024).unwrap_err();
        assert!(
            matches!(error, FileError::TooLarge { size: 1025, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let error = read(Path::new("no/such/plugin.so"), 10).unwrap_err();
        assert!(matches!(error, FileError::Open { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("cannot open no/such/plugin.so: "),
            "{error}"
        );
        assert_eq!(error.path(), Path::new("no/such/plugin.so"));
    }
}
