//! The one error type of `cargo backworks`, and the exit codes it maps to.

use crate::build::BuildError;
use crate::check::CheckError;
use crate::keys::KeyError;
use crate::new::NewError;
use crate::publish::PublishError;
use crate::reproduce::ReproduceError;

/// The exit codes, as `--help` and the README list them.
pub const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a file is not a valid plugin, a signature or its claims did not
     verify (here, or as a registry's answer to a publish), or a rebuild
     did not reproduce the manifest's bytes
  2  usage, configuration, I/O, key or password error (also build: an
     invalid [package.metadata.backworks.capabilities], or a library whose
     record does not carry it; an invalid glibc or macos floor, or a
     library that needs a newer system than its floor)
  3  cargo failed to build a plugin
  4  a target cannot be built here: a tool or its standard library is
     missing (the message names the install command; the other targets
     are still built)
  5  publish: the registry refused the upload (token, version already
     published, size) or could not be reached
When several targets fail, the exit code is the smallest of theirs.";

/// Any failure of a `cargo backworks` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `new` failed.
    #[error(transparent)]
    New(#[from] NewError),
    /// `build` failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// `check` could not read a file or write its report.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// `keygen`, `sign` or `verify` failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// `reproduce` failed or found differences.
    #[error(transparent)]
    Reproduce(#[from] ReproduceError),
    /// `publish` refused or failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Error {
    /// The process exit code (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::New(e) => e.exit_code(),
            Self::Build(e) => e.exit_code(),
            Self::Check(e) => crate::check::error_exit_code(e),
            Self::Keys(e) => e.exit_code(),
            Self::Reproduce(e) => e.exit_code(),
            Self::Publish(e) => e.exit_code(),
        }
    }
}
