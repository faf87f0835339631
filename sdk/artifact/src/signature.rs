//! Signatures of plugin artifacts: what `cargo backworks sign` writes and
//! what the host checks, over the exact bytes it is about to load, before it
//! loads a plugin.
//!
//! A signature is a [minisign](https://jedisct1.github.io/minisign/)
//! signature (prehashed Ed25519, the `.minisig` file format) whose **trusted
//! comment** states the [`Claims`] of the artifact: the plugin's name,
//! version, target and ABI version, read from its metadata record, and the
//! sha256 of the whole file. The trusted comment is signed too, so a
//! signature of plugin A cannot be passed off as a signature of plugin B, and
//! tools can read what a signature is for without the file. The format is
//! stable and documented in `docs/signing.md`:
//!
//! ```text
//! backworks-plugin:1 name:weather version:1.0.0 target:x86_64-unknown-linux-gnu abi:1 sha256:<64 hex> timestamp:1767225600
//! ```
//!
//! [`verify`] checks the signature *and* that its claims are the file's, and
//! says precisely which check failed ([`VerifyError`]). Keys are minisign
//! keys: the `minisign` command-line tool and this module accept each
//! other's key and signature files. Nothing here panics on any input.

use std::fmt;
use std::io::{Cursor, Read, Seek};
use std::time::{SystemTime, UNIX_EPOCH};

use ct_codecs::{Base64, Decoder};
pub use minisign::{PublicKey, SecretKey};

use crate::inspect::{self, InspectError};
use crate::metadata::PluginMetadata;

mod stream;

pub use stream::{Chunk, Hashed, StreamVerifier};

/// The first item of every backworks trusted comment, naming the format and
/// its version: `backworks-plugin:1`.
pub const COMMENT_TAG: &str = "backworks-plugin";

/// The version of the trusted comment format this module writes and reads.
pub const COMMENT_FORMAT_VERSION: u32 = 1;

/// The fields of a version 1 trusted comment after the tag, in the order
/// they are written.
pub const COMMENT_FIELDS: [&str; 6] = ["name", "version", "target", "abi", "sha256", "timestamp"];

/// What the crate's `verify` says when the signature over the file's bytes
/// fails (checked first) and when the signature over the trusted comment
/// fails (checked second). A unit test pins both strings to the crate.
const DATA_SIGNATURE_FAILED: &str = "Signature verification failed";
const COMMENT_SIGNATURE_FAILED: &str = "Comment signature verification failed";

/// A minisign key id: the 8 random bytes that name a key pair, shown as
/// minisign shows them (16 upper-case hex digits of the little-endian
/// `u64`, e.g. `CAB78193ADCAB890`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

impl KeyId {
    /// The id of a public key.
    pub fn of_public_key(key: &PublicKey) -> Self {
        Self::from_keynum(key.keynum())
    }

    /// The id of a secret key.
    pub fn of_secret_key(key: &SecretKey) -> Self {
        Self::from_keynum(key.keynum())
    }

    /// The id in a minisign `keynum` (8 bytes, little-endian); bytes past the
    /// eighth are ignored and missing ones read as zero.
    pub fn from_keynum(keynum: &[u8]) -> Self {
        let mut bytes = [0u8; 8];
        for (to, from) in bytes.iter_mut().zip(keynum) {
            *to = *from;
        }
        Self(u64::from_le_bytes(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// What a signature binds: the plugin's identity from its metadata record
/// and the sha256 of the artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claims {
    /// The plugin's name (metadata record `name`).
    pub name: String,
    /// The plugin's version (metadata record `version`).
    pub version: String,
    /// The target triple the plugin was built for.
    pub target: String,
    /// The ABI version the plugin was built against.
    pub abi_version: u32,
    /// The sha256 of the whole artifact.
    pub sha256: [u8; 32],
}

impl Claims {
    /// The claims of an artifact: its metadata record, found in the file's
    /// bytes without loading it ([`inspect::find_metadata`]), and the sha256
    /// of all of `bytes`.
    pub fn of(bytes: &[u8]) -> Result<Self, ClaimsError> {
        let metadata = inspect::find_metadata(bytes).map_err(ClaimsError::NotAPlugin)?;
        Ok(Self {
            name: metadata.name,
            version: metadata.version,
            abi_version: metadata.header.abi_version,
            target: metadata.target,
            sha256: sha256(bytes),
        })
    }

    /// The sha256 as 64 lower-case hex digits.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The plugin these claims are about (name, version, target).
    pub fn plugin(&self) -> PluginId {
        PluginId {
            name: self.name.clone(),
            version: self.version.clone(),
            target: self.target.clone(),
        }
    }

    /// The trusted comment stating these claims, signed at `timestamp` (unix
    /// seconds), in the stable format of `docs/signing.md`. Fails when the
    /// name, version or target is empty or holds whitespace or a control
    /// character, which the space-separated format cannot carry.
    pub fn to_trusted_comment(&self, timestamp: u64) -> Result<String, ClaimsError> {
        for (field, value) in [
            ("name", &self.name),
            ("version", &self.version),
            ("target", &self.target),
        ] {
            if !is_comment_value(value) {
                return Err(ClaimsError::Unsignable {
                    field,
                    value: value.clone(),
                });
            }
        }
        Ok(format!(
            "{COMMENT_TAG}:{COMMENT_FORMAT_VERSION} name:{} version:{} target:{} abi:{} sha256:{} timestamp:{timestamp}",
            self.name,
            self.version,
            self.target,
            self.abi_version,
            self.sha256_hex(),
        ))
    }
}

/// A plugin's identity: name, version and target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginId {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The target triple.
    pub target: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} for {}", self.name, self.version, self.target)
    }
}

/// Why the claims of an artifact cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The bytes hold no valid metadata record.
    #[error("not a backworks plugin: {0}")]
    NotAPlugin(#[source] InspectError),
    /// A field cannot be written into a trusted comment.
    #[error(
        "cannot sign a plugin whose {field} is {value:?}: the trusted comment cannot hold an empty {field} or one with whitespace or control characters; change the plugin's {field} and rebuild it"
    )]
    Unsignable {
        /// `name`, `version` or `target`.
        field: &'static str,
        /// The value found in the metadata record.
        value: String,
    },
}

/// A parsed backworks trusted comment: the claims and when they were signed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustedComment {
    /// What the signature binds.
    pub claims: Claims,
    /// When the signature was made, in unix seconds (as the signer's clock
    /// said; informative only).
    pub timestamp: u64,
}

impl TrustedComment {
    /// Parses a trusted comment written by [`Claims::to_trusted_comment`]:
    /// `backworks-plugin:1` then the six fields of [`COMMENT_FIELDS`] as
    /// `key:value`, separated by single spaces, each exactly once, in any
    /// order. Says precisely what is wrong otherwise.
    pub fn parse(comment: &str) -> Result<Self, CommentError> {
        let mut items = comment.split(' ');
        let tag = items.next().unwrap_or_default();
        match tag.split_once(':') {
            Some((COMMENT_TAG, version)) if version == COMMENT_FORMAT_VERSION.to_string() => {}
            Some((COMMENT_TAG, version)) => {
                return Err(CommentError::UnsupportedFormat {
                    version: version.to_owned(),
                });
            }
            _ => {
                return Err(CommentError::NotBackworks {
                    comment: comment.to_owned(),
                });
            }
        }
        let mut values: [Option<&str>; COMMENT_FIELDS.len()] = [None; COMMENT_FIELDS.len()];
        for item in items {
            let Some((key, value)) = item.split_once(':') else {
                return Err(CommentError::NotKeyValue {
                    item: item.to_owned(),
                });
            };
            let Some(index) = COMMENT_FIELDS.iter().position(|field| *field == key) else {
                return Err(CommentError::UnknownField {
                    key: key.to_owned(),
                });
            };
            if values[index].replace(value).is_some() {
                return Err(CommentError::DuplicateField {
                    key: COMMENT_FIELDS[index],
                });
            }
        }
        let mut fields = [""; COMMENT_FIELDS.len()];
        for ((field, value), key) in fields.iter_mut().zip(values).zip(COMMENT_FIELDS) {
            *field = value.ok_or(CommentError::MissingField { key })?;
        }
        let [name, version, target, abi, hash, time] = fields;
        let text = |key: &'static str, value: &str| {
            if is_comment_value(value) {
                Ok(value.to_owned())
            } else {
                Err(invalid(
                    key,
                    value,
                    "a non-empty value without control characters",
                ))
            }
        };
        let name = text("name", name)?;
        let version = text("version", version)?;
        let target = text("target", target)?;
        let abi_version = decimal(abi)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid("abi", abi, "an ABI version (a decimal number)"))?;
        let sha256 = parse_sha256(hash)
            .ok_or_else(|| invalid("sha256", hash, "64 lower-case hex digits"))?;
        let timestamp = decimal(time)
            .ok_or_else(|| invalid("timestamp", time, "unix seconds (a decimal number)"))?;
        Ok(Self {
            claims: Claims {
                name,
                version,
                target,
                abi_version,
                sha256,
            },
            timestamp,
        })
    }
}

/// Why a trusted comment is not a valid backworks trusted comment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommentError {
    /// The comment does not start with `backworks-plugin:`.
    #[error(
        "trusted comment {comment:?} is not a backworks claim (it does not start with `backworks-plugin:1`); sign plugins with `cargo backworks sign`"
    )]
    NotBackworks {
        /// The whole comment.
        comment: String,
    },
    /// A backworks comment of another format version.
    #[error(
        "trusted comment is in backworks claim format {version:?}, this tool reads format {COMMENT_FORMAT_VERSION}; upgrade backworks or re-sign the plugin with this version"
    )]
    UnsupportedFormat {
        /// The version after `backworks-plugin:`.
        version: String,
    },
    /// An item without a `:`.
    #[error(
        "trusted comment item {item:?} is not `key:value` (items are separated by single spaces)"
    )]
    NotKeyValue {
        /// The item.
        item: String,
    },
    /// A key the format does not have.
    #[error(
        "trusted comment has an unknown field `{key}`; format {COMMENT_FORMAT_VERSION} has name, version, target, abi, sha256 and timestamp"
    )]
    UnknownField {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("trusted comment has field `{key}` twice")]
    DuplicateField {
        /// The key.
        key: &'static str,
    },
    /// A required key is missing.
    #[error("trusted comment has no `{key}` field")]
    MissingField {
        /// The key.
        key: &'static str,
    },
    /// A value of the wrong form.
    #[error("trusted comment field `{key}` is {value:?}, expected {expected}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What the value must look like.
        expected: &'static str,
    },
}

/// A signature made by [`sign`].
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// The claims the signature binds (those of the signed bytes).
    pub claims: Claims,
    /// The trusted comment's timestamp.
    pub timestamp: u64,
    /// The id of the signing key.
    pub key_id: KeyId,
    /// The signature in minisign's `.minisig` file format (four lines).
    pub minisig: String,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("claims", &self.claims)
            .field("timestamp", &self.timestamp)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why [`sign`] could not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The claims of the bytes cannot be read or written.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The secret key was not decrypted with its password.
    #[error(
        "the secret key {key_id} is still encrypted; decrypt it with its password before signing"
    )]
    EncryptedKey {
        /// The secret key's id.
        key_id: KeyId,
    },
    /// The public key given does not belong to the secret key, or the secret
    /// key is corrupted (its signature does not verify with its own public
    /// key).
    #[error(
        "the secret key {secret} does not make signatures that public key {public} verifies: the key pair does not match or the secret key is corrupted; use the key's own .pub file, or generate a new key pair"
    )]
    KeyMismatch {
        /// The secret key's id.
        secret: KeyId,
        /// The public key's id.
        public: KeyId,
    },
    /// Any other failure of the minisign library (e.g. no random numbers).
    #[error("minisign could not sign: {0}")]
    Minisign(String),
}

/// Signs `bytes`, an artifact whose claims are read from them: a prehashed
/// minisign signature whose trusted comment states [`Claims::of`] the bytes
/// and the current time.
///
/// `secret_key` must be decrypted. `public_key`, when given, must be the
/// secret key's; the new signature is verified with it (or, without it,
/// with the public half stored in the secret key), so a corrupted key is
/// refused instead of producing signatures nobody can verify.
pub fn sign(
    bytes: &[u8],
    secret_key: &SecretKey,
    public_key: Option<&PublicKey>,
) -> Result<Signed, SignatureError> {
    let claims = Claims::of(bytes)?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let comment = claims.to_trusted_comment(timestamp)?;
    let key_id = KeyId::of_secret_key(secret_key);
    if secret_key.is_encrypted() {
        return Err(SignatureError::EncryptedKey { key_id });
    }
    let own_public_key;
    let public_key = match public_key {
        Some(key) => key,
        None => {
            own_public_key = PublicKey::from_secret_key(secret_key)
                .map_err(|e| SignatureError::Minisign(e.to_string()))?;
            &own_public_key
        }
    };
    let mismatch = || SignatureError::KeyMismatch {
        secret: key_id,
        public: KeyId::of_public_key(public_key),
    };
    if public_key.keynum() != secret_key.keynum() {
        return Err(mismatch());
    }
    let untrusted = format!(
        "signature from backworks secret key {key_id}: {} {}",
        claims.name, claims.version
    );
    let signature = minisign::sign(
        Some(public_key),
        secret_key,
        Cursor::new(bytes),
        Some(&comment),
        Some(&untrusted),
    )
    .map_err(|e| match e.kind() {
        minisign::ErrorKind::Verify => mismatch(),
        _ => SignatureError::Minisign(e.to_string()),
    })?;
    Ok(Signed {
        claims,
        timestamp,
        key_id,
        minisig: signature.into_string(),
    })
}

/// What [`verify`] established: a trusted key signed these claims, and they
/// are the file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The claims, equal to the file's own.
    pub claims: Claims,
    /// When the signature says it was made (unix seconds).
    pub timestamp: u64,
    /// The trusted key that made the signature.
    pub key_id: KeyId,
}

/// Why a signature does not verify for a file. Each message says what
/// differs and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature text is not a minisign signature.
    #[error(
        "malformed signature: {reason}; a .minisig file has four lines (untrusted comment, signature, trusted comment, global signature): restore it or sign the file again"
    )]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// A non-prehashed (legacy) signature.
    #[error(
        "legacy (not prehashed) minisign signature; backworks accepts only prehashed signatures: sign the file again with `cargo backworks sign` (or minisign without -l)"
    )]
    Legacy,
    /// The signature was made by a key that is not trusted.
    #[error(
        "signed by key {signed_by}, which is not a trusted key (trusted: {}); verify with the public key {signed_by} if you trust it, or have the plugin signed with a trusted key",
        key_list(trusted)
    )]
    UntrustedKey {
        /// The id of the key that made the signature.
        signed_by: KeyId,
        /// The ids of the trusted keys.
        trusted: Vec<KeyId>,
    },
    /// The file's bytes are not the bytes that were signed, and the
    /// signature claims the same plugin as the file's metadata (or states no
    /// readable claims).
    #[error(
        "the file was modified after it was signed: its sha256 is {actual_sha256}, the signature is for sha256 {}; use the original file, or sign this one again",
        signed_sha256.as_deref().unwrap_or("(unreadable)")
    )]
    Modified {
        /// The sha256 of the file as it is.
        actual_sha256: String,
        /// The sha256 the signature's trusted comment states, if readable.
        signed_sha256: Option<String>,
    },
    /// The file's bytes are not the bytes that were signed, although the
    /// trusted comment states exactly this file (same sha256): the signature
    /// itself was altered.
    #[error(
        "the signature was altered: its trusted comment states this very file (sha256 {sha256}) but the signature over the file's bytes does not verify; restore the .minisig or sign the file again"
    )]
    SignatureAltered {
        /// The sha256 of the file, equal to the signed one.
        sha256: String,
    },
    /// The file's bytes are those that were signed, but the trusted comment
    /// was changed after signing.
    #[error(
        "the trusted comment was altered after signing (the signature over the file's bytes verifies, the one over the comment does not); it now reads {comment:?}: restore the .minisig or sign the file again"
    )]
    CommentAltered {
        /// The trusted comment as found.
        comment: String,
    },
    /// The signature is for another plugin: its claims name a different
    /// plugin than the file's metadata, and the bytes are not the signed ones.
    #[error(
        "the signature belongs to another plugin: it was made for {signed}, this file is {actual}; use this plugin's own .minisig, or sign it"
    )]
    OtherPlugin {
        /// The plugin the signature claims.
        signed: Box<PluginId>,
        /// The plugin the file's metadata says it is.
        actual: Box<PluginId>,
    },
    /// The signature verifies, but its trusted comment is not a backworks
    /// claim (e.g. a plain `minisign -S` signature).
    #[error("the signature verifies but is not a backworks plugin signature: {0}")]
    NotBackworks(#[source] CommentError),
    /// The signature verifies, but the claims it signs are not the file's:
    /// the signer stated wrong claims.
    #[error(
        "the signature verifies but its trusted comment does not describe this file: it states {field} {signed:?}, the file's is {actual:?}; sign the file with `cargo backworks sign`"
    )]
    ClaimsMismatch {
        /// `name`, `version`, `target`, `abi` or `sha256`.
        field: &'static str,
        /// The signed value.
        signed: String,
        /// The file's value.
        actual: String,
    },
    /// The signature verifies, but the file has no readable metadata record.
    #[error("the signature verifies but the file is not a backworks plugin: {0}")]
    NotAPlugin(#[source] InspectError),
}

/// Verifies that `signature_text` (a `.minisig` file's text) is a signature
/// of `bytes` by one of `trusted_keys`, and that the claims it signs are
/// those of `bytes` (metadata record and sha256).
///
/// The checks run in the order that makes the reported reason the real one:
/// the signature's form; its key (not trusted: [`VerifyError::UntrustedKey`]);
/// the signature over the bytes, then the one over the trusted comment (as
/// the minisign crate checks them). When the bytes are not the signed ones,
/// the signed claims tell a signature of another plugin
/// ([`VerifyError::OtherPlugin`]) from a modified file
/// ([`VerifyError::Modified`]); when only the comment's signature fails, the
/// comment was altered ([`VerifyError::CommentAltered`]). Last, the signed
/// claims are compared with the file's.
///
/// One hash pass over `bytes` (sha256) when they are what was signed: the
/// global signature binds the trusted comment, and so its sha256 claim, to
/// the key, and the bytes' sha256 equal to that claim binds the bytes
/// (`docs/signing.md`, "One hash pass"). minisign's BLAKE2b prehash is
/// computed only when something failed, to name what:
/// [`verify_both_signatures`] computes it always, with the same result for
/// every signature made by `cargo backworks sign`.
pub fn verify(
    bytes: &[u8],
    signature_text: &str,
    trusted_keys: &[PublicKey],
) -> Result<Verified, VerifyError> {
    let pending = Pending::new(signature_text, trusted_keys)?;
    let sha256 = sha256(bytes);
    pending.conclude_once(
        sha256,
        || Ok(Cursor::new(bytes)),
        || inspect::find_metadata(bytes),
    )
}

/// [`verify`], checking minisign's signature over the bytes' BLAKE2b-512
/// prehash too, as the `minisign` tool does: what `cargo backworks verify`
/// and the registry's upload check use, so that every published `.minisig`
/// also verifies with the `minisign` command-line tool. Refuses what
/// [`verify`] refuses, for the same reason; it also refuses a signature
/// whose trusted comment (signed by a trusted key) states the sha256 of
/// these bytes but whose signature over the bytes does not hold, which no
/// signature made by `cargo backworks sign` is.
pub fn verify_both_signatures(
    bytes: &[u8],
    signature_text: &str,
    trusted_keys: &[PublicKey],
) -> Result<Verified, VerifyError> {
    let pending = Pending::new(signature_text, trusted_keys)?;
    let sha256 = sha256(bytes);
    let data = pending.data_signature(Ok(Cursor::new(bytes)));
    let failure = match data {
        Some(Failed::Data) => Some(Failed::Data),
        _ if !pending.comment_signed() => Some(Failed::Comment),
        _ => None,
    };
    pending.conclude(sha256, failure, || inspect::find_metadata(bytes))
}

/// Checks a signature without the bytes it signs: a trusted key signed its
/// trusted comment (the global signature), and the comment is a backworks
/// claim; returns the signed claims, for the caller to compare with what it
/// expects of the artifact (the sha256 the signed registry index states).
///
/// What the lock file pins for a target whose artifact this machine does
/// not download: the claims are the key holder's (as in the one-pass check,
/// `docs/signing.md`), and the bytes are bound to them by [`verify`] on the
/// machine that loads them. Refuses a malformed or legacy signature, an
/// untrusted key, an altered comment ([`VerifyError::CommentAltered`]) and a
/// comment that is not a backworks claim.
pub fn verify_claims(
    signature_text: &str,
    trusted_keys: &[PublicKey],
) -> Result<Verified, VerifyError> {
    let pending = Pending::new(signature_text, trusted_keys)?;
    if !pending.comment_signed() {
        return Err(VerifyError::CommentAltered {
            comment: pending.comment_text,
        });
    }
    let comment = pending.comment.map_err(VerifyError::NotBackworks)?;
    Ok(Verified {
        claims: comment.claims,
        timestamp: comment.timestamp,
        key_id: pending.signed_by,
    })
}

/// A signature whose form and key are checked, waiting for the hashes of
/// the bytes it signs: what [`verify`] and [`StreamVerifier`] share.
struct Pending {
    signature: minisign::SignatureBox,
    /// The trusted key the signature names.
    key: PublicKey,
    signed_by: KeyId,
    comment_text: String,
    comment: Result<TrustedComment, CommentError>,
    /// The signature over the file's prehash (line 2, its last 64 bytes):
    /// with the trusted comment, what the global signature signs.
    file_signature: [u8; 64],
    /// The global signature (line 4).
    global_signature: [u8; 64],
}

impl Pending {
    /// Checks the signature's form and that a trusted key made it.
    fn new(signature_text: &str, trusted_keys: &[PublicKey]) -> Result<Self, VerifyError> {
        let signature = parse_signature(signature_text)?;
        let signed_by = KeyId::from_keynum(signature.keynum());
        let Some(key) = trusted_keys
            .iter()
            .find(|key| key.keynum() == signature.keynum())
        else {
            return Err(VerifyError::UntrustedKey {
                signed_by,
                trusted: trusted_keys.iter().map(KeyId::of_public_key).collect(),
            });
        };
        let comment_text = signature
            .trusted_comment()
            .map_err(|e| VerifyError::Malformed {
                reason: e.to_string(),
            })?;
        let comment = TrustedComment::parse(&comment_text);
        // `parse_signature` has decoded both lines, so they decode here: a
        // line of another length would be an error, never a panic.
        let line = |n: usize| {
            let text = signature_text.lines().nth(n).unwrap_or_default().trim();
            Base64::decode_to_vec(text.as_bytes(), None).unwrap_or_default()
        };
        let malformed = |what: &str| VerifyError::Malformed {
            reason: format!("the {what} is not the length minisign writes"),
        };
        let signature_line = line(1);
        let file_signature = signature_line
            .get(10..)
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| malformed("signature (line 2)"))?;
        let global_signature = <[u8; 64]>::try_from(line(3).as_slice())
            .map_err(|_| malformed("global signature (line 4)"))?;
        Ok(Self {
            key: key.clone(),
            signature,
            signed_by,
            comment_text,
            comment,
            file_signature,
            global_signature,
        })
    }

    /// Whether the global signature holds: Ed25519, by the trusted key,
    /// over the file signature and the trusted comment (minisign's
    /// definition). Strict verification: a non-canonical signature or a
    /// weak key, which minisign refuses too, is refused.
    fn comment_signed(&self) -> bool {
        // A minisign public key is the algorithm (2 bytes), the key id (8)
        // and the Ed25519 key (32).
        let key = self.key.to_bytes();
        let Some(Ok(key)) = key
            .get(10..42)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes))
        else {
            return false;
        };
        let mut message = Vec::with_capacity(64 + self.comment_text.len());
        message.extend_from_slice(&self.file_signature);
        message.extend_from_slice(self.comment_text.as_bytes());
        let signature = ed25519_dalek::Signature::from_bytes(&self.global_signature);
        key.verify_strict(&message, &signature).is_ok()
    }

    /// Checks the signature over the bytes' BLAKE2b prehash (a pass over
    /// the bytes): `None` when it holds; bytes that cannot be read count as
    /// not signed.
    fn data_signature<R: Read + Seek>(&self, bytes: std::io::Result<R>) -> Option<Failed> {
        let Ok(bytes) = bytes else {
            return Some(Failed::Data);
        };
        match minisign::verify(&self.key, &self.signature, bytes, true, false, false) {
            Ok(()) => None,
            // Only the comment's signature failing is told apart: the crate
            // checks the data first, and this is only asked whether the
            // data signature holds.
            Err(e) if e.to_string() == COMMENT_SIGNATURE_FAILED => None,
            Err(e) if e.to_string() == DATA_SIGNATURE_FAILED => Some(Failed::Data),
            // A later crate may word its errors differently (a unit test
            // pins these two): an error it does not name counts as the
            // data signature failing, a refusal either way.
            Err(_) => Some(Failed::Data),
        }
    }

    /// Concludes with one hash pass when the bytes are the signed ones: the
    /// global signature holds and the comment's sha256 is `actual_sha256`.
    /// Otherwise `bytes_again` is read once more for minisign's BLAKE2b
    /// prehash, so that the reason given is the one
    /// [`verify_both_signatures`] gives.
    fn conclude_once<R: Read + Seek>(
        self,
        actual_sha256: [u8; 32],
        bytes_again: impl FnOnce() -> std::io::Result<R>,
        metadata: impl FnOnce() -> Result<PluginMetadata, InspectError>,
    ) -> Result<Verified, VerifyError> {
        let failure = if self.comment_signed() {
            match &self.comment {
                Ok(comment) if comment.claims.sha256 == actual_sha256 => None,
                // Signed by the key for other bytes: the file is not the
                // signed one (which one, `conclude` says).
                Ok(_) => Some(Failed::Data),
                // A signed comment that is not a backworks claim binds no
                // sha256: only the signature over the bytes can tell a
                // modified file from a foreign signature.
                Err(_) => self.data_signature(bytes_again()),
            }
        } else {
            Some(
                self.data_signature(bytes_again())
                    .unwrap_or(Failed::Comment),
            )
        };
        self.conclude(actual_sha256, failure, metadata)
    }

    /// Concludes from the bytes' sha256 and which signature failed, if one
    /// did; `metadata` reads the bytes' metadata record, called at most
    /// once.
    fn conclude(
        self,
        actual_sha256: [u8; 32],
        failure: Option<Failed>,
        metadata: impl FnOnce() -> Result<PluginMetadata, InspectError>,
    ) -> Result<Verified, VerifyError> {
        let Self {
            signed_by,
            comment_text,
            comment,
            ..
        } = self;
        match failure {
            None => {}
            Some(Failed::Comment) => {
                return Err(VerifyError::CommentAltered {
                    comment: comment_text,
                });
            }
            Some(Failed::Data) => {
                let signed = comment.ok().map(|comment| comment.claims);
                if let Some(signed) = &signed {
                    if signed.sha256 == actual_sha256 {
                        return Err(VerifyError::SignatureAltered {
                            sha256: hex::encode(actual_sha256),
                        });
                    }
                    if let Ok(metadata) = metadata() {
                        let actual = PluginId {
                            name: metadata.name,
                            version: metadata.version,
                            target: metadata.target,
                        };
                        if signed.plugin() != actual {
                            return Err(VerifyError::OtherPlugin {
                                signed: Box::new(signed.plugin()),
                                actual: Box::new(actual),
                            });
                        }
                    }
                }
                return Err(VerifyError::Modified {
                    actual_sha256: hex::encode(actual_sha256),
                    signed_sha256: signed.map(|claims| claims.sha256_hex()),
                });
            }
        }
        let comment = comment.map_err(VerifyError::NotBackworks)?;
        let metadata = metadata().map_err(VerifyError::NotAPlugin)?;
        let actual = Claims {
            name: metadata.name,
            version: metadata.version,
            target: metadata.target,
            abi_version: metadata.header.abi_version,
            sha256: actual_sha256,
        };
        let signed = &comment.claims;
        let differences = [
            ("name", signed.name.clone(), actual.name.clone()),
            ("version", signed.version.clone(), actual.version.clone()),
            ("target", signed.target.clone(), actual.target.clone()),
            (
                "abi",
                signed.abi_version.to_string(),
                actual.abi_version.to_string(),
            ),
            ("sha256", signed.sha256_hex(), actual.sha256_hex()),
        ];
        if let Some((field, signed, actual)) = differences.into_iter().find(|(_, s, a)| s != a) {
            return Err(VerifyError::ClaimsMismatch {
                field,
                signed,
                actual,
            });
        }
        Ok(Verified {
            claims: actual,
            timestamp: comment.timestamp,
            key_id: signed_by,
        })
    }
}

/// Why a public key cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a minisign public key: {reason}; give the .pub file written by `cargo backworks keygen` or `minisign -G`, or its second line (56 base64 characters starting with `RW`)"
)]
pub struct PublicKeyError {
    /// What is wrong with the text.
    pub reason: String,
}

/// Reads a public key from the text of a `.pub` file (`untrusted comment:`
/// line, then the key) or from the bare base64 key (`minisign -P` form).
pub fn parse_public_key(text: &str) -> Result<PublicKey, PublicKeyError> {
    let error = |reason: &str| PublicKeyError {
        reason: reason.to_owned(),
    };
    let text = text.trim();
    let encoded = if text.starts_with("untrusted comment:") {
        text.lines()
            .nth(1)
            .ok_or_else(|| error("the key line after the comment line is missing"))?
    } else {
        text
    }
    .trim();
    if encoded.len() != 56 {
        return Err(error(&format!(
            "the key is {} characters long, not 56",
            encoded.len()
        )));
    }
    let key = PublicKey::from_base64(encoded).map_err(|_| error("the key is not base64"))?;
    if key.to_bytes().get(..2) != Some(b"Ed") {
        return Err(error(
            "the key is not an Ed25519 key (it does not start with `RW`)",
        ));
    }
    Ok(key)
}

/// Size of a minisign secret key: algorithm (2), key derivation (2),
/// checksum algorithm (2), salt (32), scrypt limits (8 + 8), key id (8),
/// Ed25519 secret key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 158;
/// Where the key derivation algorithm and the checksum are in it.
const KDF_ALGORITHM: std::ops::Range<usize> = 2..4;
const CHECKSUM: std::ops::Range<usize> = 126..158;

/// Why the text of a secret key file does not give a usable secret key.
/// Messages say what is wrong with the text; callers name the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretKeyError {
    /// The text is not a minisign secret key, or the key is corrupted.
    #[error("{reason}")]
    Invalid {
        /// What is wrong (e.g. `its key line is not base64`).
        reason: String,
    },
    /// The key is password-protected and no password was given.
    #[error("it is password-protected and no password was given")]
    PasswordRequired,
    /// The password does not decrypt the key.
    #[error("the password does not decrypt it")]
    WrongPassword,
}

/// The text of a minisign secret key file (or only its key line), parsed but
/// not yet decrypted: [`SecretKeyText::is_encrypted`] tells whether
/// [`SecretKeyText::open`] needs a password, so a caller asks for one only
/// then. Accepts the keys of `cargo backworks keygen`, `minisign -G` and
/// `minisign -G -W` (whose all-zero checksum the minisign crate refuses).
#[derive(Clone)]
pub struct SecretKeyText {
    encoded: String,
    raw: Vec<u8>,
}

impl fmt::Debug for SecretKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeyText")
            .field("encrypted", &self.is_encrypted())
            .finish_non_exhaustive()
    }
}

impl SecretKeyText {
    /// Parses the text: an `untrusted comment:` line then the key line, or
    /// the key line alone (as CI secrets often hold it).
    pub fn parse(text: &str) -> Result<Self, SecretKeyError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        let encoded = match lines.as_slice() {
            [] => return Err(invalid_key("it is empty")),
            [comment, key, ..] if comment.starts_with("untrusted comment:") => *key,
            [key] => *key,
            _ => {
                return Err(invalid_key(
                    "its first line is not `untrusted comment: ...`",
                ));
            }
        };
        let raw = Base64::decode_to_vec(encoded, None)
            .map_err(|_| invalid_key("its key line is not base64"))?;
        if raw.len() != SECRET_KEY_BYTES {
            return Err(invalid_key(&format!(
                "its key is {} bytes, not {SECRET_KEY_BYTES}",
                raw.len()
            )));
        }
        if raw[..2] != *b"Ed" {
            return Err(invalid_key("it is not an Ed25519 key"));
        }
        Ok(Self {
            encoded: encoded.to_owned(),
            raw,
        })
    }

    /// Whether the key is password-protected.
    pub fn is_encrypted(&self) -> bool {
        self.raw[KDF_ALGORITHM] != [0, 0]
    }

    /// Decrypts the key (with `password` when it is encrypted; ignored
    /// otherwise) and checks, by a probe signature verified with the key's
    /// own public half, that it signs what it should: a corrupted key is
    /// refused here, not after signing.
    pub fn open(&self, password: Option<String>) -> Result<SecretKey, SecretKeyError> {
        // The crate reads the comment line and the key line; give it exactly
        // those.
        let boxed =
            || minisign::SecretKeyBox::from(format!("untrusted comment: \n{}\n", self.encoded));
        let key = match &self.raw[KDF_ALGORITHM] {
            [0, 0] => match SecretKey::from_unencrypted_box(boxed()) {
                Ok(key) => key,
                // The minisign CLI writes unencrypted keys (`minisign -G -W`)
                // with an all-zero checksum, which minisign 0.10 refuses as
                // "Corrupted key". Such a key is taken as it is; the probe
                // signature below checks it is consistent.
                Err(_) if self.raw[CHECKSUM].iter().all(|&b| b == 0) => {
                    SecretKey::from_bytes(&self.raw).map_err(|e| invalid_key(&e.to_string()))?
                }
                Err(_) => {
                    return Err(invalid_key(
                        "its checksum does not match its contents (the key is corrupted)",
                    ));
                }
            },
            b"Sc" => {
                let password = password.ok_or(SecretKeyError::PasswordRequired)?;
                SecretKey::from_box(boxed(), Some(password)).map_err(|e| match e.kind() {
                    minisign::ErrorKind::Verify => SecretKeyError::WrongPassword,
                    _ => invalid_key(&e.to_string()),
                })?
            }
            other => {
                return Err(invalid_key(&format!(
                    "it is encrypted with an unknown algorithm {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        let public = PublicKey::from_secret_key(&key).map_err(|e| invalid_key(&e.to_string()))?;
        minisign::sign(Some(&public), &key, &b"probe"[..], None, None).map_err(|_| {
            invalid_key("its secret and public halves do not match (the key is corrupted)")
        })?;
        Ok(key)
    }
}

fn invalid_key(reason: &str) -> SecretKeyError {
    SecretKeyError::Invalid {
        reason: reason.to_owned(),
    }
}

/// Which of the two signatures of a minisign signature failed.
enum Failed {
    Data,
    Comment,
}

/// Parses a `.minisig` text, refusing what the minisign crate would panic on
/// or that backworks does not accept (also the registry's index signature,
/// in `backworks-registry`).
pub fn parse_signature(text: &str) -> Result<minisign::SignatureBox, VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed { reason };
    // The crate slices the global signature (line 4) as 64 bytes without
    // checking its length: check it first.
    let global = text.lines().nth(3).map(str::trim);
    if global.is_some_and(|line| base64_len(line) != Some(64)) {
        return Err(malformed(String::from(
            "the global signature (line 4) is not 64 bytes of base64",
        )));
    }
    let signature = minisign::SignatureBox::from_string(text)
        .map_err(|e| malformed(lower_first(&e.to_string())))?;
    if !signature.is_prehashed() {
        return Err(VerifyError::Legacy);
    }
    Ok(signature)
}

/// The number of bytes `text` decodes to if it is padded standard base64.
fn base64_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &bytes[..bytes.len() - padding];
    if padding > 2
        || !body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
    {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

fn key_list(keys: &[KeyId]) -> String {
    if keys.is_empty() {
        return String::from("none");
    }
    keys.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sha256 of `bytes`, as a verification computes it (its one hash
/// pass; the `sha2` crate uses the CPU's SHA extensions when it has them:
/// 10.5 MB in 6.9 ms here, as fast as ring's assembly, measured side by
/// side). The benchmarks hash their floors with it.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Whether `value` can be a value in a trusted comment: non-empty, no
/// whitespace, no control characters.
fn is_comment_value(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn invalid(key: &'static str, value: &str, expected: &'static str) -> CommentError {
    CommentError::InvalidValue {
        key,
        value: value.to_owned(),
        expected,
    }
}

/// A non-empty run of ASCII digits as a `u64` (no sign, no spaces).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use minisign::KeyPair;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::abi::MetadataRecord;

    #[test]
    fn secret_key_text_reads_every_minisign_key_form() {
        use ct_codecs::Encoder;
        let pair = KeyPair::generate_unencrypted_keypair().unwrap();
        let boxed = pair.sk.to_box(None).unwrap().into_string();
        let key_line = boxed.lines().nth(1).unwrap().to_owned();
        for text in [boxed.clone(), key_line, boxed.replace('\n', "\r\n")] {
            let parsed = SecretKeyText::parse(&text).unwrap();
            assert!(!parsed.is_encrypted());
            assert_eq!(parsed.open(None).unwrap().keynum(), pair.sk.keynum());
        }
        // `minisign -G -W`: unencrypted with an all-zero checksum, which the
        // crate alone refuses.
        let mut raw = pair.sk.to_bytes();
        raw[CHECKSUM].fill(0);
        let cli = format!(
            "untrusted comment: k\n{}\n",
            Base64::encode_to_string(&raw).unwrap()
        );
        assert!(SecretKey::from_unencrypted_box(cli.clone().into()).is_err());
        let key = SecretKeyText::parse(&cli).unwrap().open(None).unwrap();
        assert_eq!(key.keynum(), pair.sk.keynum());
        // Corrupted under a zero checksum: the probe signature refuses it.
        raw[70] ^= 1;
        let bad = format!(
            "untrusted comment: k\n{}\n",
            Base64::encode_to_string(&raw).unwrap()
        );
        assert_eq!(
            SecretKeyText::parse(&bad)
                .unwrap()
                .open(None)
                .unwrap_err()
                .to_string(),
            "its secret and public halves do not match (the key is corrupted)"
        );
    }

    #[test]
    fn an_encrypted_secret_key_needs_its_password() {
        let pair = KeyPair::generate_encrypted_keypair(Some(String::from("pw"))).unwrap();
        let text = pair.sk.to_box(None).unwrap().into_string();
        let parsed = SecretKeyText::parse(&text).unwrap();
        assert!(parsed.is_encrypted());
        assert_eq!(
            parsed.open(None).unwrap_err(),
            SecretKeyError::PasswordRequired
        );
        assert_eq!(
            parsed.open(Some(String::from("other"))).unwrap_err(),
            SecretKeyError::WrongPassword
        );
        let key = parsed.open(Some(String::from("pw"))).unwrap();
        assert!(!key.is_encrypted());
        assert_eq!(key.keynum(), pair.pk.keynum());
    }

    #[test]
    fn secret_key_text_errors_say_what_is_wrong() {
        let cases = [
            ("", "it is empty"),
            ("a\nb\n", "its first line is not `untrusted comment: ...`"),
            ("untrusted comment: x\n!!!!\n", "its key line is not base64"),
            (
                "untrusted comment: x\nRWQA\n",
                "its key is 3 bytes, not 158",
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(
                SecretKeyText::parse(text).unwrap_err().to_string(),
                reason,
                "{text:?}"
            );
        }
    }

    /// A minimal little-endian ELF64 shared object: the metadata record of
    /// `name` `version` in section `.bwmeta`, and `payload` in `.data` (so
    /// tests can change the file without touching the record).
    fn plugin(name: &str, version: &str, payload: &[u8]) -> Vec<u8> {
        let record = MetadataRecord::new("0.1.0", name, version, "a test plugin", 0)
            .as_bytes()
            .to_vec();
        let names = b"\0.bwmeta\0.data\0.shstrtab\0";
        let mut file = vec![0u8; 64];
        let record_at = file.len();
        file.extend_from_slice(&record);
        let payload_at = file.len();
        file.extend_from_slice(payload);
        let names_at = file.len();
        file.extend_from_slice(names);
        while !file.len().is_multiple_of(8) {
            file.push(0);
        }
        let headers_at = file.len();
        // name offset, type, flags, offset, size
        let sections = [
            (0u32, 0u32, 0u64, 0usize, 0usize),
            (1, 1, 2, record_at, record.len()),
            (9, 1, 3, payload_at, payload.len()),
            (15, 3, 0, names_at, names.len()),
        ];
        for (name, kind, flags, offset, size) in sections {
            file.extend_from_slice(&name.to_le_bytes());
            file.extend_from_slice(&kind.to_le_bytes());
            file.extend_from_slice(&flags.to_le_bytes());
            let address = if flags == 0 { 0 } else { offset as u64 };
            file.extend_from_slice(&address.to_le_bytes());
            file.extend_from_slice(&(offset as u64).to_le_bytes());
            file.extend_from_slice(&(size as u64).to_le_bytes());
            file.extend_from_slice(&[0; 8]); // link, info
            file.extend_from_slice(&1u64.to_le_bytes()); // alignment
            file.extend_from_slice(&0u64.to_le_bytes()); // entry size
        }
        let header = &mut file[..64];
        header[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        header[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        header[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        header[40..48].copy_from_slice(&(headers_at as u64).to_le_bytes());
        header[52..54].copy_from_slice(&64u16.to_le_bytes());
        header[54..56].copy_from_slice(&56u16.to_le_bytes());
        header[58..60].copy_from_slice(&64u16.to_le_bytes());
        header[60..62].copy_from_slice(&4u16.to_le_bytes());
        header[62..64].copy_from_slice(&3u16.to_le_bytes());
        file
    }

    fn weather() -> Vec<u8> {
        plugin("weather", "1.0.0", b"the weather plugin's code")
    }

    fn keys() -> KeyPair {
        KeyPair::generate_unencrypted_keypair().unwrap()
    }

    /// The signature text with its trusted comment (line 3) replaced.
    fn with_comment(minisig: &str, edit: impl FnOnce(&str) -> String) -> String {
        let mut lines: Vec<String> = minisig.lines().map(str::to_owned).collect();
        let comment = lines[2].strip_prefix("trusted comment: ").unwrap();
        lines[2] = format!("trusted comment: {}", edit(comment));
        lines.join("\n") + "\n"
    }

    /// A signature of `bytes` with any trusted comment, made by the crate
    /// directly (as `minisign -S -t` would).
    fn raw_signature(bytes: &[u8], keys: &KeyPair, comment: &str) -> String {
        minisign::sign(Some(&keys.pk), &keys.sk, bytes, Some(comment), None)
            .unwrap()
            .into_string()
    }

    #[test]
    fn the_test_plugin_is_readable_metadata() {
        let claims = Claims::of(&weather()).unwrap();
        assert_eq!(claims.name, "weather");
        assert_eq!(claims.version, "1.0.0");
        assert_eq!(claims.target, crate::TARGET);
        assert_eq!(claims.abi_version, crate::abi::ABI_VERSION);
        assert_eq!(claims.sha256, <[u8; 32]>::from(Sha256::digest(weather())));
    }

    #[test]
    fn the_trusted_comment_format_round_trips() {
        let claims = Claims::of(&weather()).unwrap();
        let comment = claims.to_trusted_comment(1_767_225_600).unwrap();
        assert_eq!(
            comment,
            format!(
                "backworks-plugin:1 name:weather version:1.0.0 target:{} abi:1 sha256:{} timestamp:1767225600",
                crate::TARGET,
                claims.sha256_hex()
            )
        );
        let parsed = TrustedComment::parse(&comment).unwrap();
        assert_eq!(parsed.claims, claims);
        assert_eq!(parsed.timestamp, 1_767_225_600);
        // Any order of the fields parses to the same.
        let mut items: Vec<&str> = comment.split(' ').collect();
        items[1..].reverse();
        assert_eq!(TrustedComment::parse(&items.join(" ")).unwrap(), parsed);
        // Values may hold colons: the key ends at the first one.
        let colon = Claims {
            version: String::from("1.0.0+build:7"),
            ..claims
        };
        let parsed = TrustedComment::parse(&colon.to_trusted_comment(0).unwrap()).unwrap();
        assert_eq!(parsed.claims, colon);
    }

    #[test]
    fn fields_with_whitespace_or_control_characters_are_not_signed() {
        for (name, version) in [("my plugin", "1.0.0"), ("tab\there", "1"), ("p", "1\n2")] {
            let bytes = plugin(name, version, b"code");
            let claims = Claims::of(&bytes).unwrap();
            let error = claims.to_trusted_comment(0).unwrap_err();
            assert!(matches!(error, ClaimsError::Unsignable { .. }), "{error}");
            let error = sign(&bytes, &keys().sk, None).unwrap_err();
            assert!(
                matches!(
                    error,
                    SignatureError::Claims(ClaimsError::Unsignable { .. })
                ),
                "{error}"
            );
        }
        let claims = Claims::of(&plugin("my plugin", "1", b"")).unwrap();
        assert_eq!(
            claims.to_trusted_comment(0).unwrap_err().to_string(),
            "cannot sign a plugin whose name is \"my plugin\": the trusted comment cannot hold an empty name or one with whitespace or control characters; change the plugin's name and rebuild it"
        );
    }

    #[test]
    fn claims_of_a_file_that_is_not_a_plugin() {
        let error = Claims::of(b"not a library").unwrap_err();
        assert!(matches!(error, ClaimsError::NotAPlugin(_)), "{error}");
        assert!(error.to_string().starts_with("not a backworks plugin: "));
    }

    #[test]
    fn comment_parse_errors_are_precise() {
        let good = Claims::of(&weather())
            .unwrap()
            .to_trusted_comment(5)
            .unwrap();
        let sha = good.split(' ').nth(5).unwrap().to_owned();
        let cases: Vec<(String, CommentError)> = vec![
            (
                String::from("timestamp:1767225600\tfile:libweather.so"),
                CommentError::NotBackworks {
                    comment: String::from("timestamp:1767225600\tfile:libweather.so"),
                },
            ),
            (
                String::new(),
                CommentError::NotBackworks {
                    comment: String::new(),
                },
            ),
            (
                good.replace("backworks-plugin:1", "backworks-plugin:2"),
                CommentError::UnsupportedFormat {
                    version: String::from("2"),
                },
            ),
            (
                good.replace(" abi:1", " abi"),
                CommentError::NotKeyValue {
                    item: String::from("abi"),
                },
            ),
            (
                good.replace(" abi:1", "  abi:1"),
                CommentError::NotKeyValue {
                    item: String::new(),
                },
            ),
            (
                format!("{good} file:x"),
                CommentError::UnknownField {
                    key: String::from("file"),
                },
            ),
            (
                format!("{good} abi:1"),
                CommentError::DuplicateField { key: "abi" },
            ),
            (
                good.replace(&format!(" {sha}"), ""),
                CommentError::MissingField { key: "sha256" },
            ),
            (
                good.replace("abi:1", "abi:+1"),
                CommentError::InvalidValue {
                    key: "abi",
                    value: String::from("+1"),
                    expected: "an ABI version (a decimal number)",
                },
            ),
            (
                good.replace("abi:1", "abi:4294967296"),
                CommentError::InvalidValue {
                    key: "abi",
                    value: String::from("4294967296"),
                    expected: "an ABI version (a decimal number)",
                },
            ),
            (
                good.replace(&sha[7..], &sha[7..].to_uppercase()),
                CommentError::InvalidValue {
                    key: "sha256",
                    value: sha[7..].to_uppercase(),
                    expected: "64 lower-case hex digits",
                },
            ),
            (
                good.replace("timestamp:5", "timestamp:"),
                CommentError::InvalidValue {
                    key: "timestamp",
                    value: String::new(),
                    expected: "unix seconds (a decimal number)",
                },
            ),
            (
                good.replace("name:weather", "name:"),
                CommentError::InvalidValue {
                    key: "name",
                    value: String::new(),
                    expected: "a non-empty value without control characters",
                },
            ),
            (
                good.replace("name:weather", "name:wea\u{7}ther"),
                CommentError::InvalidValue {
                    key: "name",
                    value: String::from("wea\u{7}ther"),
                    expected: "a non-empty value without control characters",
                },
            ),
        ];
        for (comment, expected) in cases {
            assert_eq!(
                TrustedComment::parse(&comment),
                Err(expected),
                "{comment:?}"
            );
        }
        let message = TrustedComment::parse("timestamp:1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "trusted comment \"timestamp:1\" is not a backworks claim (it does not start with `backworks-plugin:1`); sign plugins with `cargo backworks sign`"
        );
    }

    #[test]
    fn key_ids_are_shown_as_minisign_shows_them() {
        let keys = keys();
        let id = KeyId::of_public_key(&keys.pk);
        assert_eq!(id, KeyId::of_secret_key(&keys.sk));
        let boxed = keys.pk.to_box().unwrap().into_string();
        assert!(
            boxed.starts_with(&format!("untrusted comment: minisign public key: {id}\n")),
            "{boxed}"
        );
        assert_eq!(KeyId(0xCAB7_8193_ADCA_B890).to_string(), "CAB78193ADCAB890");
        assert_eq!(
            KeyId::from_keynum(&[0x90, 0xB8, 0xCA, 0xAD, 0x93, 0x81, 0xB7, 0xCA]),
            KeyId(0xCAB7_8193_ADCA_B890)
        );
        assert_eq!(KeyId(1).to_string(), "0000000000000001");
    }

    /// Streams `bytes` through a [`StreamVerifier`] in chunks of
    /// `chunk_size`, written to a file as a download is, and concludes
    /// with the file's metadata read back from it.
    fn verify_streamed(
        bytes: &[u8],
        signature_text: &str,
        trusted_keys: &[PublicKey],
        chunk_size: usize,
    ) -> Result<Verified, VerifyError> {
        use std::io::Write;
        let mut verifier = StreamVerifier::new(signature_text, trusted_keys)?;
        let mut file = tempfile::tempfile().unwrap();
        for piece in bytes.chunks(chunk_size) {
            let chunk: Chunk = std::sync::Arc::new(piece.to_vec());
            verifier.update(&chunk);
            file.write_all(piece).unwrap();
        }
        let hashed = verifier.finish();
        assert_eq!(hashed.sha256(), sha256(bytes));
        let again = || {
            let mut again = &file;
            again.rewind()?;
            Ok(again)
        };
        hashed.conclude(again, || inspect::find_metadata_in_file(&file))
    }

    #[test]
    fn a_streamed_check_concludes_as_verify_does() {
        let (keys, other) = (keys(), keys());
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, Some(&keys.pk)).unwrap().minisig;
        let mut modified = bytes.clone();
        *modified.last_mut().unwrap() ^= 1;
        let forecast = plugin("forecast", "1.0.0", b"the weather plugin's code");
        let of_forecast = sign(&forecast, &keys.sk, Some(&keys.pk)).unwrap().minisig;
        let altered = with_comment(&signed, |comment| comment.replace("weather", "weathex"));
        // A signature of `signed` whose trusted comment states the claims
        // of `claimed`, but `signed`'s sha256.
        let claiming = |signed: &[u8], claimed: &[u8]| {
            let comment = Claims::of(claimed)
                .unwrap()
                .to_trusted_comment(0)
                .unwrap()
                .replace(&hex::encode(sha256(claimed)), &hex::encode(sha256(signed)));
            raw_signature(signed, &keys, &comment)
        };
        let named_wrong = claiming(&bytes, &forecast);
        let not_backworks = raw_signature(&bytes, &keys, "timestamp:1 file:weather.so");
        let not_a_plugin = b"not a library".to_vec();
        let of_not_a_plugin = claiming(&not_a_plugin, &bytes);
        let altered_line = altered_signature_line(&signed);
        let trusted = std::slice::from_ref(&keys.pk);
        let cases: [(&str, &[u8], &str, &[PublicKey]); 11] = [
            ("valid", &bytes, &signed, trusted),
            ("modified", &modified, &signed, trusted),
            ("other plugin", &bytes, &of_forecast, trusted),
            ("altered comment", &bytes, &altered, trusted),
            ("altered signature line", &bytes, &altered_line, trusted),
            ("claims of another", &bytes, &named_wrong, trusted),
            ("not a backworks comment", &bytes, &not_backworks, trusted),
            ("not a plugin", &not_a_plugin, &of_not_a_plugin, trusted),
            ("empty file", b"", &signed, trusted),
            (
                "untrusted",
                &bytes,
                &signed,
                std::slice::from_ref(&other.pk),
            ),
            ("malformed", &bytes, "not a signature", trusted),
        ];
        let mut kinds = std::collections::BTreeSet::new();
        for (case, bytes, signature_text, keys) in cases {
            let expected = format!("{:?}", verify(bytes, signature_text, keys));
            kinds.insert(expected.split(['(', ' ', '{']).nth(1).map(str::to_owned));
            // One hash pass or two, the same outcome.
            assert_eq!(
                format!("{:?}", verify_both_signatures(bytes, signature_text, keys)),
                expected,
                "{case}, both signatures"
            );
            for chunk_size in [1, 7, 64, 4096, bytes.len().max(1)] {
                assert_eq!(
                    format!(
                        "{:?}",
                        verify_streamed(bytes, signature_text, keys, chunk_size)
                    ),
                    expected,
                    "{case}, chunks of {chunk_size}"
                );
            }
        }
        // Each case is a different outcome of `verify` (the empty file is
        // `Modified` again).
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }

    #[test]
    fn claims_are_verified_without_the_bytes() {
        let (keys, other) = (keys(), keys());
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, Some(&keys.pk)).unwrap();
        let trusted = std::slice::from_ref(&keys.pk);
        let verified = verify_claims(&signed.minisig, trusted).unwrap();
        assert_eq!(verified.claims, signed.claims);
        assert_eq!(verified.key_id, KeyId::of_public_key(&keys.pk));
        let altered = with_comment(&signed.minisig, |c| c.replace("weather", "weathex"));
        assert!(matches!(
            verify_claims(&altered, trusted),
            Err(VerifyError::CommentAltered { .. })
        ));
        // The global signature covers the file signature too.
        assert!(matches!(
            verify_claims(&altered_signature_line(&signed.minisig), trusted),
            Err(VerifyError::CommentAltered { .. })
        ));
        assert!(matches!(
            verify_claims(&signed.minisig, std::slice::from_ref(&other.pk)),
            Err(VerifyError::UntrustedKey { .. })
        ));
        let plain = raw_signature(&bytes, &keys, "timestamp:1 file:weather.so");
        assert!(matches!(
            verify_claims(&plain, trusted),
            Err(VerifyError::NotBackworks(_))
        ));
    }

    #[test]
    fn sign_then_verify() {
        let keys = keys();
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, Some(&keys.pk)).unwrap();
        assert_eq!(signed.claims, Claims::of(&bytes).unwrap());
        assert_eq!(signed.key_id, KeyId::of_public_key(&keys.pk));
        let lines: Vec<&str> = signed.minisig.lines().collect();
        assert_eq!(lines.len(), 4, "{}", signed.minisig);
        assert_eq!(
            lines[0],
            format!(
                "untrusted comment: signature from backworks secret key {}: weather 1.0.0",
                signed.key_id
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "trusted comment: {}",
                signed.claims.to_trusted_comment(signed.timestamp).unwrap()
            )
        );
        let other = self::keys();
        let verified = verify(&bytes, &signed.minisig, &[other.pk, keys.pk.clone()]).unwrap();
        assert_eq!(
            verified,
            Verified {
                claims: signed.claims.clone(),
                timestamp: signed.timestamp,
                key_id: signed.key_id,
            }
        );
        // Without the public key, the secret key's own public half is used.
        let signed = sign(&bytes, &keys.sk, None).unwrap();
        assert!(verify(&bytes, &signed.minisig, &[keys.pk]).is_ok());
        assert!(!format!("{signed:?}").contains(&signed.minisig));
    }

    #[test]
    fn a_modified_file_is_reported_with_both_hashes() {
        let keys = keys();
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, None).unwrap();
        let mut modified = bytes.clone();
        *modified.last_mut().unwrap() ^= 1;
        let flipped_in_payload = modified.len() - 3 - b"\0.bwmeta\0.data\0.shstrtab\0".len();
        let mut in_code = bytes.clone();
        in_code[flipped_in_payload] ^= 0x20;
        for modified in [modified, in_code] {
            let error =
                verify(&modified, &signed.minisig, std::slice::from_ref(&keys.pk)).unwrap_err();
            let actual = hex::encode(Sha256::digest(&modified));
            match &error {
                VerifyError::Modified {
                    actual_sha256,
                    signed_sha256,
                } => {
                    assert_eq!(actual_sha256, &actual);
                    assert_eq!(signed_sha256.as_deref(), Some(&*signed.claims.sha256_hex()));
                }
                other => panic!("expected Modified, got {other:?}"),
            }
            assert_eq!(
                error.to_string(),
                format!(
                    "the file was modified after it was signed: its sha256 is {actual}, the signature is for sha256 {}; use the original file, or sign this one again",
                    signed.claims.sha256_hex()
                )
            );
        }
    }

    #[test]
    fn an_altered_trusted_comment_is_reported_as_such() {
        let keys = keys();
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, None).unwrap();
        let sha = signed.claims.sha256_hex();
        let comment = signed.claims.to_trusted_comment(signed.timestamp).unwrap();
        let mut altered_sha = sha.clone();
        altered_sha.replace_range(..1, if sha.starts_with('0') { "1" } else { "0" });
        let edits = [
            ("timestamp", format!("{comment}9")),
            ("name", comment.replace("name:weather", "name:weathex")),
            ("version", comment.replace("version:1.0.0", "version:1.0.1")),
            // The sha256 itself: the file is intact, so the comment was
            // altered (not the file), although the two hashes now differ.
            ("sha256", comment.replace(&sha, &altered_sha)),
        ];
        for (what, edited) in edits {
            let minisig = with_comment(&signed.minisig, |_| edited);
            let error = verify(&bytes, &minisig, std::slice::from_ref(&keys.pk)).unwrap_err();
            let comment = minisig.lines().nth(2).unwrap()["trusted comment: ".len()..].to_owned();
            assert!(
                matches!(&error, VerifyError::CommentAltered { comment: found } if *found == comment),
                "{what}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("the trusted comment was altered after signing"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_crate_reports_the_two_signatures_as_this_module_maps_them() {
        let keys = keys();
        let bytes = weather();
        let signed = raw_signature(&bytes, &keys, "a comment");
        let parsed = minisign::SignatureBox::from_string(&signed).unwrap();
        let mut modified = bytes.clone();
        modified[0] ^= 1;
        let error = minisign::verify(
            &keys.pk,
            &parsed,
            Cursor::new(&modified),
            true,
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), DATA_SIGNATURE_FAILED);
        let altered = with_comment(&signed, |_| String::from("a comment!"));
        let parsed = minisign::SignatureBox::from_string(&altered).unwrap();
        let error = minisign::verify(&keys.pk, &parsed, Cursor::new(&bytes), true, false, false)
            .unwrap_err();
        assert_eq!(error.to_string(), COMMENT_SIGNATURE_FAILED);
    }

    #[test]
    fn another_key_is_named_with_the_trusted_ones() {
        let signer = keys();
        let trusted = keys();
        let bytes = weather();
        let signed = sign(&bytes, &signer.sk, None).unwrap();
        let error = verify(&bytes, &signed.minisig, std::slice::from_ref(&trusted.pk)).unwrap_err();
        let signer_id = KeyId::of_public_key(&signer.pk);
        let trusted_id = KeyId::of_public_key(&trusted.pk);
        assert!(
            matches!(&error, VerifyError::UntrustedKey { signed_by, trusted } if *signed_by == signer_id && *trusted == [trusted_id]),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "signed by key {signer_id}, which is not a trusted key (trusted: {trusted_id}); verify with the public key {signer_id} if you trust it, or have the plugin signed with a trusted key"
            )
        );
        let error = verify(&bytes, &signed.minisig, &[]).unwrap_err();
        assert!(error.to_string().contains("(trusted: none)"), "{error}");
        // Checked before anything else: even on a modified file.
        let mut modified = bytes.clone();
        modified[100] ^= 1;
        let error = verify(&modified, &signed.minisig, &[trusted.pk]).unwrap_err();
        assert!(
            matches!(error, VerifyError::UntrustedKey { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_signature_of_another_plugin_is_named_as_such() {
        let keys = keys();
        let weather = weather();
        let forecast = plugin("forecast", "2.0.0", b"the forecast plugin's code");
        let signed = sign(&weather, &keys.sk, None).unwrap();
        let error = verify(&forecast, &signed.minisig, std::slice::from_ref(&keys.pk)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the signature belongs to another plugin: it was made for weather 1.0.0 for {0}, this file is forecast 2.0.0 for {0}; use this plugin's own .minisig, or sign it",
                crate::TARGET
            )
        );
        // Another version of the same plugin is another plugin too.
        let newer = plugin("weather", "1.0.1", b"the weather plugin's code");
        let error = verify(&newer, &signed.minisig, std::slice::from_ref(&keys.pk)).unwrap_err();
        assert!(
            matches!(&error, VerifyError::OtherPlugin { signed, actual } if signed.version == "1.0.0" && actual.version == "1.0.1"),
            "{error:?}"
        );
    }

    #[test]
    fn a_valid_signature_with_claims_of_another_file() {
        let keys = keys();
        let weather = weather();
        let forecast = plugin("forecast", "2.0.0", b"code");
        // Signed over forecast's bytes, stating weather's claims: only the
        // holder of the key can make such a signature (`cargo backworks
        // sign` never does). The one-pass check takes the signed claims as
        // the truth and finds the file is not the one they name; the check
        // of both signatures finds the signature over the bytes holds and
        // the claims wrong.
        let weather_comment = Claims::of(&weather).unwrap().to_trusted_comment(1).unwrap();
        let minisig = raw_signature(&forecast, &keys, &weather_comment);
        let trusted = std::slice::from_ref(&keys.pk);
        let error = verify(&forecast, &minisig, trusted).unwrap_err();
        assert!(
            matches!(&error, VerifyError::OtherPlugin { signed, actual } if signed.name == "weather" && actual.name == "forecast"),
            "{error:?}"
        );
        let error = verify_both_signatures(&forecast, &minisig, trusted).unwrap_err();
        assert!(
            matches!(&error, VerifyError::ClaimsMismatch { field: "name", signed, actual } if signed == "weather" && actual == "forecast"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the signature verifies but its trusted comment does not describe this file: it states name \"weather\", the file's is \"forecast\"; sign the file with `cargo backworks sign`"
        );
        // Right plugin, wrong hash.
        let mut claims = Claims::of(&forecast).unwrap();
        claims.sha256 = [7; 32];
        let minisig = raw_signature(&forecast, &keys, &claims.to_trusted_comment(1).unwrap());
        let error = verify(&forecast, &minisig, trusted).unwrap_err();
        assert!(
            matches!(&error, VerifyError::Modified { signed_sha256: Some(signed), .. } if *signed == "07".repeat(32)),
            "{error:?}"
        );
        let error = verify_both_signatures(&forecast, &minisig, trusted).unwrap_err();
        assert!(
            matches!(
                &error,
                VerifyError::ClaimsMismatch {
                    field: "sha256",
                    ..
                }
            ),
            "{error:?}"
        );
        // Right plugin, wrong ABI.
        let mut claims = Claims::of(&forecast).unwrap();
        claims.abi_version = 2;
        let minisig = raw_signature(&forecast, &keys, &claims.to_trusted_comment(1).unwrap());
        let error = verify(&forecast, &minisig, &[keys.pk]).unwrap_err();
        assert!(
            matches!(&error, VerifyError::ClaimsMismatch { field: "abi", signed, actual } if signed == "2" && actual == "1"),
            "{error:?}"
        );
    }

    #[test]
    fn a_plain_minisign_signature_is_not_a_backworks_signature() {
        let keys = keys();
        let bytes = weather();
        let minisig = raw_signature(&bytes, &keys, "timestamp:1767225600\tfile:libweather.so");
        let error = verify(&bytes, &minisig, std::slice::from_ref(&keys.pk)).unwrap_err();
        assert!(
            matches!(
                &error,
                VerifyError::NotBackworks(CommentError::NotBackworks { .. })
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("the signature verifies but is not a backworks plugin signature: trusted comment \"timestamp:1767225600\\tfile:libweather.so\" is not a backworks claim"),
            "{error}"
        );
        // Modified as well: the file's modification is the reason given.
        let mut modified = bytes.clone();
        modified[80] ^= 1;
        let error = verify(&modified, &minisig, &[keys.pk]).unwrap_err();
        assert!(
            matches!(
                &error,
                VerifyError::Modified {
                    signed_sha256: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("sha256 (unreadable)"), "{error}");
    }

    #[test]
    fn a_valid_signature_over_a_file_that_is_not_a_plugin() {
        let keys = keys();
        let bytes = b"#!/bin/sh\necho not a plugin\n";
        let mut claims = Claims::of(&weather()).unwrap();
        claims.sha256 = Sha256::digest(bytes).into();
        let minisig = raw_signature(bytes, &keys, &claims.to_trusted_comment(1).unwrap());
        let error = verify(bytes, &minisig, &[keys.pk]).unwrap_err();
        assert!(matches!(error, VerifyError::NotAPlugin(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("the signature verifies but the file is not a backworks plugin: "),
            "{error}"
        );
    }

    #[test]
    fn an_altered_signature_line() {
        let keys = keys();
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, None).unwrap();
        let minisig = altered_signature_line(&signed.minisig);
        let error = verify(&bytes, &minisig, &[keys.pk]).unwrap_err();
        assert!(
            matches!(&error, VerifyError::SignatureAltered { sha256 } if *sha256 == signed.claims.sha256_hex()),
            "{error:?}"
        );
    }

    /// `minisig` with one character of its file signature (line 2) changed.
    fn altered_signature_line(minisig: &str) -> String {
        let mut lines: Vec<String> = minisig.lines().map(str::to_owned).collect();
        // Line 2 is 74 bytes (algorithm, key id, signature): 100 base64
        // characters ending in `=`. Change a character of the signature in a
        // full 4-character group: the last group's final character carries
        // padding bits, and changing those would make the line non-canonical
        // base64 (reported as malformed) instead of a different signature.
        let line = &mut lines[1];
        let at = line.len() - 10;
        let replacement = if &line[at..at + 1] == "A" { "B" } else { "A" };
        line.replace_range(at..at + 1, replacement);
        lines.join("\n")
    }

    #[test]
    fn legacy_and_malformed_signatures() {
        let keys = keys();
        let bytes = weather();
        let signed = sign(&bytes, &keys.sk, None).unwrap();
        let lines: Vec<&str> = signed.minisig.lines().collect();
        // `ED` (prehashed) is `RU` in base64, `Ed` (legacy) is `RW`.
        assert!(lines[1].starts_with("RU"), "{}", lines[1]);
        let legacy = signed.minisig.replacen("\nRU", "\nRW", 1);
        let error = verify(&bytes, &legacy, std::slice::from_ref(&keys.pk)).unwrap_err();
        assert!(matches!(error, VerifyError::Legacy), "{error:?}");

        let malformed = |text: String, reason: &str| {
            let error = verify(&bytes, &text, std::slice::from_ref(&keys.pk)).unwrap_err();
            match &error {
                VerifyError::Malformed { reason: found } => {
                    assert_eq!(found, reason, "{text:?}")
                }
                other => panic!("{text:?}: expected Malformed, got {other:?}"),
            }
            error.to_string()
        };
        let message = malformed(String::new(), "missing untrusted comment");
        assert_eq!(
            message,
            "malformed signature: missing untrusted comment; a .minisig file has four lines (untrusted comment, signature, trusted comment, global signature): restore it or sign the file again"
        );
        malformed(lines[..3].join("\n"), "missing global signature");
        let short = "the global signature (line 4) is not 64 bytes of base64";
        // The crate would panic on these: a short, empty or bad global signature.
        malformed(format!("{}\nAAAA\n", lines[..3].join("\n")), short);
        malformed(format!("{}\n\n", lines[..3].join("\n")), short);
        malformed(
            format!("{}\n{}!\n", lines[..3].join("\n"), &lines[3][1..]),
            short,
        );
        malformed(
            format!("comment\n{}", lines[1..].join("\n")),
            "untrusted comment must start with: untrusted comment: ",
        );
        malformed(
            format!("{}\nnot base64\n{}", lines[0], lines[2..].join("\n")),
            "invalid input for the given encoding",
        );
        malformed(
            format!("{}\nRUQA\n{}", lines[0], lines[2..].join("\n")),
            "failed to fill whole buffer",
        );
        malformed(
            format!("{}\n{}\nno prefix\n{}", lines[0], lines[1], lines[3]),
            "trusted comment should start with: trusted comment: ",
        );
    }

    #[test]
    fn public_keys_from_pub_files_and_base64() {
        let keys = keys();
        let boxed = keys.pk.to_box().unwrap().into_string();
        let bare = keys.pk.to_base64();
        for text in [boxed.clone(), bare.clone(), format!("  {bare}\n")] {
            let key = parse_public_key(&text).unwrap();
            assert_eq!(key, keys.pk);
            assert_eq!(KeyId::of_public_key(&key), KeyId::of_public_key(&keys.pk));
        }
        let errors = [
            ("", "the key is 0 characters long, not 56"),
            (
                "untrusted comment: x",
                "the key line after the comment line is missing",
            ),
            (&bare[1..], "the key is 55 characters long, not 56"),
            (&"!".repeat(56), "the key is not base64"),
        ];
        for (text, reason) in errors {
            assert_eq!(
                parse_public_key(text).unwrap_err().reason,
                reason,
                "{text:?}"
            );
        }
        // A signature algorithm other than Ed25519 (`Ed`, `RW` in base64).
        let other = format!("RU{}", &bare[2..]);
        assert_eq!(
            parse_public_key(&other).unwrap_err().to_string(),
            "not a minisign public key: the key is not an Ed25519 key (it does not start with `RW`); give the .pub file written by `cargo backworks keygen` or `minisign -G`, or its second line (56 base64 characters starting with `RW`)"
        );
    }

    #[test]
    fn signing_needs_a_decrypted_key_and_its_own_public_key() {
        let keys = keys();
        let other = self::keys();
        let bytes = weather();
        let error = sign(&bytes, &keys.sk, Some(&other.pk)).unwrap_err();
        assert!(
            matches!(error, SignatureError::KeyMismatch { secret, public }
                if secret == KeyId::of_secret_key(&keys.sk) && public == KeyId::of_public_key(&other.pk)),
            "{error:?}"
        );
        // Same key id, other key: the test signature does not verify.
        let mut forged = other.pk.to_bytes();
        forged[2..10].copy_from_slice(keys.pk.keynum());
        let forged = PublicKey::from_bytes(&forged).unwrap();
        let error = sign(&bytes, &keys.sk, Some(&forged)).unwrap_err();
        assert!(
            matches!(error, SignatureError::KeyMismatch { .. }),
            "{error:?}"
        );
        // A key still encrypted: the `Sc` algorithm and a checksum that does
        // not match the (still encrypted) key material.
        let mut encrypted = keys.sk.to_bytes();
        encrypted[2..4].copy_from_slice(b"Sc");
        let last = encrypted.len() - 1;
        encrypted[last] ^= 1;
        let encrypted = SecretKey::from_bytes(&encrypted).unwrap();
        let error = sign(&bytes, &encrypted, None).unwrap_err();
        assert!(
            matches!(error, SignatureError::EncryptedKey { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("still encrypted"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any edit of a valid signature text: an error or a verification,
        /// never a panic.
        #[test]
        fn edited_signatures_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let keys = KeyPair::generate_unencrypted_keypair().unwrap();
            let bytes = weather();
            let signed = sign(&bytes, &keys.sk, None).unwrap();
            let mut text: Vec<char> = signed.minisig.chars().collect();
            for (at, replacement) in edits {
                let at = at.index(text.len());
                text[at] = replacement;
            }
            text.truncate(cut.index(text.len() + 1));
            let text: String = text.into_iter().collect();
            let _ = verify(&bytes, &text, std::slice::from_ref(&keys.pk));
            let _ = TrustedComment::parse(&text);
            let _ = parse_public_key(&text);
        }
    }
}
