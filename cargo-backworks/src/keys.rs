//! Keys and signatures over files: the logic of `cargo backworks keygen`,
//! `sign` and `verify`, and of `build --sign`.
//!
//! The signature format and its checks are `backworks-artifact`'s
//! ([`backworks_artifact::signature`], `docs/signing.md`); this module
//! generates key files, reads secret keys (from a file or an environment
//! variable, password-protected or not, made by this tool or by the
//! `minisign` command-line tool), gets passwords, reads public keys, writes
//! `.minisig` files atomically, and names the file in every error. It never
//! prints, returns or formats key material or passwords.

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use backworks_artifact::check::MAX_FILE_SIZE;
use backworks_artifact::file::{self, FileError, MAX_SIGNATURE_SIZE};
use backworks_artifact::signature::{
    self, PublicKeyError, SecretKeyError, SecretKeyText, SignatureError, VerifyError,
    parse_public_key,
};
pub use backworks_artifact::signature::{Claims, KeyId, PublicKey, Verified};
use backworks_artifact::write::{self, PathError, WriteOptions};
use minisign::{KeyPair, SecretKey};

/// The environment variable a password is read from when `--password-env`
/// does not name another one.
pub const DEFAULT_PASSWORD_ENV: &str = "BACKWORKS_KEY_PASSWORD";

/// The suffix of a signature file: `<artifact>.minisig`.
pub use backworks_registry::api::SIGNATURE_SUFFIX;

/// Where the password of a secret key comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PasswordSource {
    /// [`DEFAULT_PASSWORD_ENV`] when it is set; else a prompt when standard
    /// input is a terminal (twice for a new key); else an error saying how
    /// to give one.
    #[default]
    Default,
    /// The named environment variable (`--password-env`); an error when it
    /// is not set.
    Env(String),
}

impl PasswordSource {
    /// The source for an optional `--password-env VAR` flag.
    pub fn from_flag(var: Option<String>) -> Self {
        var.map_or(Self::Default, Self::Env)
    }
}

/// What [`keygen`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenOptions {
    /// Where the keys go: `<path>.key` and `<path>.pub` (a `.key` or `.pub`
    /// suffix on `path` is dropped first).
    pub path: PathBuf,
    /// `None` for an unencrypted secret key (`--unencrypted`, for CI);
    /// otherwise where the password protecting it comes from.
    pub password: Option<PasswordSource>,
    /// Overwrite existing key files.
    pub force: bool,
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenReport {
    /// The secret key file (mode 0600 on Unix).
    pub secret_key_file: PathBuf,
    /// The public key file.
    pub public_key_file: PathBuf,
    /// The key pair's id.
    pub key_id: KeyId,
    /// The public key in base64, as `minisign -P` and `--pub-key` take it.
    pub public_key: String,
    /// Whether the secret key is password-protected.
    pub encrypted: bool,
}

/// Where a secret key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKeySource {
    /// A `.key` file (`--key`).
    File(PathBuf),
    /// An environment variable holding the whole text of a `.key` file, or
    /// only its second line (`--key-env`, for CI secrets).
    Env(String),
}

impl fmt::Display for SecretKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(var) => write!(f, "${var}"),
        }
    }
}

/// A decrypted secret key, ready to sign. Its `Debug` shows only the key id
/// and where the key came from.
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
    key_id: KeyId,
    origin: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads and decrypts the secret key: from a file or an environment
    /// variable; asks for the password (`password`) only when the key is
    /// password-protected. Accepts keys made by `cargo backworks keygen`,
    /// `minisign -G` and `minisign -G -W`, and checks that the key signs
    /// what its public half verifies.
    pub fn load(source: &SecretKeySource, password: &PasswordSource) -> Result<Self, KeyError> {
        let origin = source.to_string();
        let text = match source {
            SecretKeySource::File(path) => {
                let bytes =
                    fs::read(path).map_err(|e| KeyError::io("read the secret key", path, e))?;
                String::from_utf8(bytes).map_err(|_| KeyError::InvalidSecretKey {
                    origin: origin.clone(),
                    reason: String::from("it is not text"),
                })?
            }
            SecretKeySource::Env(var) => match std::env::var(var) {
                Ok(text) => text,
                Err(std::env::VarError::NotPresent) => {
                    return Err(KeyError::KeyEnvUnset { var: var.clone() });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(KeyError::InvalidSecretKey {
                        origin,
                        reason: String::from("it is not UTF-8 text"),
                    });
                }
            },
        };
        let secret = read_secret_key(&text, &origin, password)?;
        let public =
            PublicKey::from_secret_key(&secret).map_err(|e| KeyError::InvalidSecretKey {
                origin: origin.clone(),
                reason: e.to_string(),
            })?;
        // `read_secret_key` refused a key whose halves do not match (probe
        // signature in `backworks-artifact`'s `SecretKeyText::open`).
        Ok(Self {
            key_id: KeyId::of_secret_key(&secret),
            secret,
            public,
            origin,
        })
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The key's public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The decrypted secret key itself, for signing other things than
    /// plugin files (a registry index, `publish` to a directory).
    pub fn into_secret_key(self) -> SecretKey {
        self.secret
    }
}

/// An artifact [`sign_file`] signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// The artifact.
    pub artifact: PathBuf,
    /// The signature written next to it: `<artifact>.minisig`.
    pub signature: PathBuf,
    /// What the signature binds.
    pub claims: Claims,
    /// The signing key's id.
    pub key_id: KeyId,
}

/// An artifact [`verify_file`] verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// The artifact.
    pub artifact: PathBuf,
    /// The signature file that was checked.
    pub signature: PathBuf,
    /// What the signature established.
    pub verified: Verified,
}

/// Why a key, signing or verification command failed. Every message names
/// the file, key or variable concerned and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A signature or its claims did not verify for an artifact.
    #[error("{}: {source}", artifact.display())]
    Verify {
        /// The artifact.
        artifact: PathBuf,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// An artifact could not be signed (e.g. it is not a plugin).
    #[error("cannot sign {}: {source}", artifact.display())]
    Sign {
        /// The artifact.
        artifact: PathBuf,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A plugin or `.minisig` that is not a regular file, or is over its
    /// size limit: refused before it is read ([`file::open`]).
    #[error(
        "{0}; a plugin and its .minisig must be regular files (a plugin at most 512 MiB, a .minisig at most 8 KiB): give the .so, .dll or .dylib and the .minisig next to it"
    )]
    Refused(#[source] FileError),
    /// `keygen` would overwrite a key file.
    #[error(
        "{} already exists; pass --force to overwrite it (the key it holds will be lost), or choose another name",
        path.display()
    )]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A password is needed and there is no way to get one.
    #[error("{what} needs a password: {hint}")]
    NoPassword {
        /// What needs it (`the new secret key`, `the secret key <file>`).
        what: String,
        /// How to give one.
        hint: &'static str,
    },
    /// The variable named by `--password-env` is not set.
    #[error(
        "environment variable {var} (named by --password-env) is not set; set it to the password"
    )]
    PasswordEnvUnset {
        /// The variable.
        var: String,
    },
    /// A password variable holds bytes that are not UTF-8.
    #[error("environment variable {var} does not hold UTF-8 text; set it to the password")]
    PasswordNotUnicode {
        /// The variable.
        var: String,
    },
    /// An empty password for a new key.
    #[error(
        "the password for the new secret key is empty; choose one, or pass --unencrypted for a key without a password"
    )]
    EmptyPassword,
    /// The two passwords typed for a new key differ.
    #[error("the two passwords differ; run keygen again")]
    PasswordMismatch,
    /// The terminal prompt failed.
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(#[source] io::Error),
    /// The password does not decrypt the secret key.
    #[error(
        "wrong password for the secret key {origin}; check the password (or the variable that holds it)"
    )]
    WrongPassword {
        /// The key file or `$VAR`.
        origin: String,
    },
    /// The variable named by `--key-env` is not set.
    #[error(
        "environment variable {var} (named by --key-env) is not set; set it to the text of the secret key file"
    )]
    KeyEnvUnset {
        /// The variable.
        var: String,
    },
    /// The secret key text is not a usable minisign secret key.
    #[error(
        "{origin} is not a usable minisign secret key: {reason}; give the .key file written by `cargo backworks keygen` or `minisign -G`"
    )]
    InvalidSecretKey {
        /// The key file or `$VAR`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A public key could not be read.
    #[error("{origin}: {source}")]
    InvalidPublicKey {
        /// The `.pub` file, or `--pub-key`.
        origin: String,
        /// What is wrong.
        #[source]
        source: PublicKeyError,
    },
    /// No public key to verify with.
    #[error("no public key to verify with; pass --pub <file> or --pub-key <base64 key>")]
    NoPublicKey,
    /// `--signature` with more than one artifact.
    #[error(
        "--signature names the signature of one artifact, but {count} artifacts were given; verify them one at a time, or drop --signature to use each <artifact>.minisig"
    )]
    SignatureForManyArtifacts {
        /// How many artifacts were given.
        count: usize,
    },
    /// The minisign library could not generate a key pair.
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

impl KeyError {
    /// The process exit code for this error: 1 when a signature or its
    /// claims did not verify, 2 for usage, I/O, key and password problems.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Verify { .. } => 1,
            _ => 2,
        }
    }

    /// The error for a file [`read_bounded`] did not read.
    pub(crate) fn file(action: &'static str, error: FileError) -> Self {
        match error {
            FileError::Open { path, source } | FileError::Read { path, source } => {
                Self::Io(PathError::new(action, path, source))
            }
            refused => Self::Refused(refused),
        }
    }

    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io(PathError::new(action, path, source))
    }
}

/// Generates a key pair and writes `<path>.key` (secret, mode 0600) and
/// `<path>.pub` in minisign's file formats, refusing to overwrite either
/// unless `force`. The secret key is password-protected unless
/// `options.password` is `None`.
pub fn keygen(options: &KeygenOptions) -> Result<KeygenReport, KeyError> {
    let base = key_base(&options.path);
    let secret_key_file = with_suffix(&base, ".key");
    let public_key_file = with_suffix(&base, ".pub");
    if !options.force {
        for path in [&secret_key_file, &public_key_file] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyError::KeyFileExists { path: path.clone() });
            }
        }
    }
    let pair = match &options.password {
        None => KeyPair::generate_unencrypted_keypair(),
        Some(source) => {
            let password = new_key_password(source)?;
            KeyPair::generate_encrypted_keypair(Some(password.0))
        }
    }
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    let key_id = KeyId::of_public_key(&pair.pk);
    let encrypted = options.password.is_some();
    let comment = format!(
        "backworks {}secret key {key_id}",
        if encrypted { "" } else { "unencrypted " }
    );
    let secret = pair
        .sk
        .to_box(Some(&comment))
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .into_string();
    let public = pair
        .pk
        .to_box()
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .into_string();
    write_atomically(&secret_key_file, secret.as_bytes(), 0o600, options.force)?;
    write_atomically(&public_key_file, public.as_bytes(), 0o644, options.force)?;
    Ok(KeygenReport {
        secret_key_file,
        public_key_file,
        key_id,
        public_key: pair.pk.to_base64(),
        encrypted,
    })
}

/// Signs one artifact with a loaded key: writes `<artifact>.minisig`
/// atomically (a temporary file in the same directory, then renamed), so a
/// failure leaves any previous signature as it was and no partial file.
pub fn sign_file(artifact: &Path, key: &SigningKey) -> Result<SignedFile, KeyError> {
    let bytes = read_bounded(artifact, MAX_FILE_SIZE, "read")?;
    let signed = signature::sign(&bytes, &key.secret, Some(&key.public)).map_err(|source| {
        KeyError::Sign {
            artifact: artifact.to_owned(),
            source,
        }
    })?;
    let signature = signature_path(artifact);
    write_atomically(&signature, signed.minisig.as_bytes(), 0o644, true)?;
    Ok(SignedFile {
        artifact: artifact.to_owned(),
        signature,
        claims: signed.claims,
        key_id: signed.key_id,
    })
}

/// Loads the secret key once ([`SigningKey::load`]) and signs each artifact
/// ([`sign_file`]), stopping at the first failure (artifacts signed before
/// it keep their new signatures).
pub fn sign_files(
    artifacts: &[PathBuf],
    key: &SecretKeySource,
    password: &PasswordSource,
) -> Result<Vec<SignedFile>, KeyError> {
    let key = SigningKey::load(key, password)?;
    artifacts
        .iter()
        .map(|artifact| sign_file(artifact, &key))
        .collect()
}

/// Reads trusted public keys: `.pub` files and base64 keys (`minisign -P`
/// form). Fails when there are none.
pub fn read_public_keys(files: &[PathBuf], keys: &[String]) -> Result<Vec<PublicKey>, KeyError> {
    let mut trusted = Vec::with_capacity(files.len() + keys.len());
    for file in files {
        let text = fs::read(file).map_err(|e| KeyError::io("read the public key", file, e))?;
        let key = parse_public_key(&String::from_utf8_lossy(&text)).map_err(|source| {
            KeyError::InvalidPublicKey {
                origin: file.display().to_string(),
                source,
            }
        })?;
        trusted.push(key);
    }
    for key in keys {
        let key = parse_public_key(key).map_err(|source| KeyError::InvalidPublicKey {
            origin: String::from("--pub-key"),
            source,
        })?;
        trusted.push(key);
    }
    if trusted.is_empty() {
        return Err(KeyError::NoPublicKey);
    }
    Ok(trusted)
}

/// Reads one public key given as a command-line value: the path of a
/// `.pub` file when such a file exists, else the key itself in base64
/// (`RW…`, the `minisign -P` form). `flag` names the option in errors.
pub fn read_public_key_value(value: &str, flag: &str) -> Result<PublicKey, KeyError> {
    let path = Path::new(value);
    if path.exists() {
        return read_public_keys(&[path.to_owned()], &[]).map(|mut keys| keys.remove(0));
    }
    parse_public_key(value).map_err(|source| {
        if value.contains(['/', '\\']) || value.ends_with(".pub") {
            KeyError::io(
                "read the public key",
                path,
                io::Error::from(io::ErrorKind::NotFound),
            )
        } else {
            KeyError::InvalidPublicKey {
                origin: flag.to_owned(),
                source,
            }
        }
    })
}

/// The whole file at `path`, a regular file of at most `max` bytes, opened
/// without blocking ([`file::read`]): a FIFO, a device such as `/dev/zero`
/// or a file over the limit is refused ([`KeyError::Refused`]) before it is
/// read; `action` names what failed in an I/O error.
pub(crate) fn read_bounded(
    path: &Path,
    max: u64,
    action: &'static str,
) -> Result<Vec<u8>, KeyError> {
    file::read(path, max).map_err(|error| KeyError::file(action, error))
}

/// Verifies one artifact against `signature` (default
/// `<artifact>.minisig`) with [`signature::verify_both_signatures`] over
/// the file's bytes (the signature over the trusted comment, and minisign's
/// over the bytes' prehash, as the `minisign` tool checks it)
/// (each read through `read_bounded`: a plugin at most
/// [`MAX_FILE_SIZE`], a signature at most [`MAX_SIGNATURE_SIZE`]): a
/// trusted key signed it, and the signed claims are the file's.
pub fn verify_file(
    artifact: &Path,
    signature: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<VerifiedFile, KeyError> {
    if trusted.is_empty() {
        return Err(KeyError::NoPublicKey);
    }
    let signature = signature.map_or_else(|| signature_path(artifact), Path::to_owned);
    let bytes = read_bounded(artifact, MAX_FILE_SIZE, "read")?;
    let text = read_bounded(&signature, MAX_SIGNATURE_SIZE, "read the signature")?;
    let verify_error = |source| KeyError::Verify {
        artifact: artifact.to_owned(),
        source,
    };
    let text = String::from_utf8(text).map_err(|_| {
        verify_error(VerifyError::Malformed {
            reason: format!("{} is not text", signature.display()),
        })
    })?;
    let verified =
        signature::verify_both_signatures(&bytes, &text, trusted).map_err(verify_error)?;
    Ok(VerifiedFile {
        artifact: artifact.to_owned(),
        signature,
        verified,
    })
}

/// [`verify_file`] for each artifact, stopping at the first failure.
/// `signature` may be given only with a single artifact.
pub fn verify_files(
    artifacts: &[PathBuf],
    signature: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<Vec<VerifiedFile>, KeyError> {
    if signature.is_some() && artifacts.len() != 1 {
        return Err(KeyError::SignatureForManyArtifacts {
            count: artifacts.len(),
        });
    }
    artifacts
        .iter()
        .map(|artifact| verify_file(artifact, signature, trusted))
        .collect()
}

/// `<artifact>.minisig`.
pub fn signature_path(artifact: &Path) -> PathBuf {
    with_suffix(artifact, SIGNATURE_SUFFIX)
}

/// A password, never shown.
struct Password(String);

/// The password for a new key: from the environment, or typed twice on a
/// terminal. Never empty.
fn new_key_password(source: &PasswordSource) -> Result<Password, KeyError> {
    let password = match password_from_env(source)? {
        Some(password) => password,
        None if io::stdin().is_terminal() => {
            let first = prompt("Password for the new secret key: ")?;
            let second = prompt("Password (again): ")?;
            if first.0 != second.0 {
                return Err(KeyError::PasswordMismatch);
            }
            first
        }
        None => {
            return Err(KeyError::NoPassword {
                what: String::from("the new secret key"),
                hint: "set BACKWORKS_KEY_PASSWORD (or name another variable with --password-env), run on a terminal to be prompted, or pass --unencrypted for a key without a password",
            });
        }
    };
    if password.0.is_empty() {
        return Err(KeyError::EmptyPassword);
    }
    Ok(password)
}

/// The password that decrypts an existing key: from the environment, or
/// typed once on a terminal.
fn unlock_password(source: &PasswordSource, origin: &str) -> Result<Password, KeyError> {
    match password_from_env(source)? {
        Some(password) => Ok(password),
        None if io::stdin().is_terminal() => prompt(&format!("Password for {origin}: ")),
        None => Err(KeyError::NoPassword {
            what: format!("the secret key {origin} is password-protected and"),
            hint: "set BACKWORKS_KEY_PASSWORD (or name another variable with --password-env), or run on a terminal to be prompted",
        }),
    }
}

/// The password from the environment, if the source names a variable that
/// is set; `None` means "prompt if possible".
fn password_from_env(source: &PasswordSource) -> Result<Option<Password>, KeyError> {
    let (var, required) = match source {
        PasswordSource::Default => (DEFAULT_PASSWORD_ENV, false),
        PasswordSource::Env(var) => (var.as_str(), true),
    };
    match std::env::var(var) {
        Ok(password) => Ok(Some(Password(password))),
        Err(std::env::VarError::NotPresent) if required => Err(KeyError::PasswordEnvUnset {
            var: var.to_owned(),
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::PasswordNotUnicode {
            var: var.to_owned(),
        }),
    }
}

fn prompt(text: &str) -> Result<Password, KeyError> {
    rpassword::prompt_password(text)
        .map(Password)
        .map_err(KeyError::Prompt)
}

/// Parses and decrypts the text of a minisign secret key file (or only its
/// key line).
fn read_secret_key(
    text: &str,
    origin: &str,
    password: &PasswordSource,
) -> Result<SecretKey, KeyError> {
    let error = |e: SecretKeyError| match e {
        SecretKeyError::WrongPassword => KeyError::WrongPassword {
            origin: origin.to_owned(),
        },
        other => KeyError::InvalidSecretKey {
            origin: origin.to_owned(),
            reason: other.to_string(),
        },
    };
    let parsed = SecretKeyText::parse(text).map_err(error)?;
    let password = if parsed.is_encrypted() {
        Some(unlock_password(password, origin)?.0)
    } else {
        None
    };
    parsed.open(password).map_err(error)
}

/// `path` without a trailing `.key` or `.pub`.
fn key_base(path: &Path) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("key" | "pub") => path.with_extension(""),
        _ => path.to_owned(),
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory, renamed into place: readers see the old file or the whole new
/// one, never a part. Without `overwrite`, an existing `path` is an error
/// (checked atomically by the rename).
fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), KeyError> {
    let options = WriteOptions {
        mode: Some(mode),
        overwrite,
    };
    write::write_atomically(path, contents, options).map_err(|error| {
        if !overwrite && error.source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::KeyFileExists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io(error)
        }
    })
}

#[cfg(test)]
mod tests {
    use ct_codecs::Encoder;

    use super::*;

    /// Where the checksum is in a minisign secret key's bytes.
    const CHECKSUM: std::ops::Range<usize> = 126..158;

    /// The text of an unencrypted key file as `minisign -G -W` writes it:
    /// all-zero checksum.
    fn cli_style_unencrypted_key(pair: &KeyPair) -> String {
        let mut raw = pair.sk.to_bytes();
        raw[CHECKSUM].fill(0);
        format!(
            "untrusted comment: minisign encrypted secret key\n{}\n",
            ct_codecs::Base64::encode_to_string(&raw).unwrap()
        )
    }

    #[test]
    fn the_crate_refuses_minisign_cli_unencrypted_keys_and_this_module_reads_them() {
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let text = cli_style_unencrypted_key(&pair);
        let error = SecretKey::from_unencrypted_box(text.clone().into()).unwrap_err();
        assert_eq!(error.to_string(), "Corrupted key", "the crate's quirk");
        let key = read_secret_key(&text, "test.key", &PasswordSource::Default).unwrap();
        assert_eq!(key.keynum(), pair.sk.keynum());
        assert!(!key.is_encrypted());
    }

    #[test]
    fn a_corrupted_unencrypted_key_is_refused() {
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let mut raw = pair.sk.to_bytes();
        raw[70] ^= 1; // the secret key itself; the checksum no longer matches
        let text = format!(
            "untrusted comment: k\n{}\n",
            ct_codecs::Base64::encode_to_string(&raw).unwrap()
        );
        let error = read_secret_key(&text, "bad.key", &PasswordSource::Default).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad.key is not a usable minisign secret key: its checksum does not match its contents (the key is corrupted); give the .key file written by `cargo backworks keygen` or `minisign -G`"
        );
        // With a zero checksum (CLI style) the probe signature catches it.
        raw[CHECKSUM].fill(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        fs::write(
            &path,
            format!(
                "untrusted comment: k\n{}\n",
                ct_codecs::Base64::encode_to_string(&raw).unwrap()
            ),
        )
        .unwrap();
        let error =
            SigningKey::load(&SecretKeySource::File(path), &PasswordSource::Default).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("its secret and public halves do not match"),
            "{error}"
        );
    }

    #[test]
    fn secret_key_text_errors() {
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let good = pair.sk.to_box(None).unwrap().into_string();
        let key_line = good.lines().nth(1).unwrap();
        // The key line alone, and with Windows line ends, is read.
        for text in [key_line.to_owned(), good.replace('\n', "\r\n")] {
            read_secret_key(&text, "k", &PasswordSource::Default).unwrap();
        }
        let cases = [
            ("", "it is empty"),
            ("  \n\n", "it is empty"),
            ("a\nb\n", "its first line is not `untrusted comment: ...`"),
            ("untrusted comment: x\n!!!!\n", "its key line is not base64"),
            (
                "untrusted comment: x\nRWQA\n",
                "its key is 3 bytes, not 158",
            ),
        ];
        for (text, reason) in cases {
            match read_secret_key(text, "k", &PasswordSource::Default) {
                Err(KeyError::InvalidSecretKey { reason: found, .. }) => {
                    assert_eq!(found, reason, "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            key_base(Path::new("keys/release")),
            Path::new("keys/release")
        );
        assert_eq!(key_base(Path::new("release.key")), Path::new("release"));
        assert_eq!(key_base(Path::new("release.pub")), Path::new("release"));
        assert_eq!(key_base(Path::new("v1.2")), Path::new("v1.2"));
        assert_eq!(
            signature_path(Path::new("t/libweather.so")),
            Path::new("t/libweather.so.minisig")
        );
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomically(&path, b"one", 0o644, false).unwrap();
        let error = write_atomically(&path, b"two", 0o644, false).unwrap_err();
        assert!(matches!(error, KeyError::KeyFileExists { .. }), "{error:?}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomically(&path, b"three", 0o644, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn exit_codes() {
        let verify = KeyError::Verify {
            artifact: PathBuf::from("a"),
            source: VerifyError::Legacy,
        };
        assert_eq!(verify.exit_code(), 1);
        assert_eq!(KeyError::NoPublicKey.exit_code(), 2);
        assert_eq!(KeyError::PasswordMismatch.exit_code(), 2);
    }

    #[test]
    fn signing_keys_do_not_show_their_secret() {
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        fs::write(&path, pair.sk.to_box(None).unwrap().into_string()).unwrap();
        let key = SigningKey::load(&SecretKeySource::File(path), &PasswordSource::Default).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(&format!("{:?}", KeyId::of_public_key(&pair.pk))));
        assert!(!shown.contains(&format!("{:?}", pair.sk)), "{shown}");
        assert_eq!(key.public_key(), &pair.pk);
    }
}
