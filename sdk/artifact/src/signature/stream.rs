//! The signature check of a file that is still arriving (a download): the
//! signature's form and key are checked before the first byte, and the
//! sha256 the trusted comment states is computed as the chunks come, on the
//! caller's thread while the chunk it just received is still in cache. When
//! the last byte is in, only the Ed25519 check of the global signature and
//! the metadata lookup remain: one hash pass (`docs/signing.md`, "One hash
//! pass").
//!
//! minisign's BLAKE2b prehash had a thread of its own here, hashing each
//! chunk beside the sha256: on two cores the two hashes queued for the
//! cores, and a 10 MB install took about 1.6 times `curl -o` of the same
//! file. The prehash is now computed only when the check fails, from the
//! written file, to name what failed.
//!
//! The conclusion is [`verify`](super::verify)'s, step for step: the same
//! checks in the same order, the same [`VerifyError`] for the same bytes.

use std::io::{Read, Seek};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Pending, PublicKey, Verified, VerifyError};
use crate::inspect::InspectError;
use crate::metadata::PluginMetadata;

/// A piece of the file (and whatever else the caller does with it, such as
/// writing it to disk): a download's `Bytes`, a `Vec`.
pub type Chunk = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A signature check fed the signed file a chunk at a time.
///
/// [`StreamVerifier::new`] refuses a malformed signature and an untrusted
/// key at once, before anything is downloaded. [`StreamVerifier::update`]
/// hashes each chunk, in order; [`StreamVerifier::finish`] returns the
/// [`Hashed`] file, whose sha256 the caller can compare with what it
/// expected before it [concludes](Hashed::conclude).
pub struct StreamVerifier {
    pending: Pending,
    sha256: Sha256,
}

impl StreamVerifier {
    /// Starts the check of `signature_text` (a `.minisig` file's text)
    /// against `trusted_keys`. Refuses at once what [`verify`](super::verify)
    /// refuses before it looks at the bytes: a malformed or legacy
    /// signature, and a key that is not trusted.
    pub fn new(signature_text: &str, trusted_keys: &[PublicKey]) -> Result<Self, VerifyError> {
        Ok(Self {
            pending: Pending::new(signature_text, trusted_keys)?,
            sha256: Sha256::new(),
        })
    }

    /// The id of the (trusted) key that made the signature.
    pub fn signed_by(&self) -> super::KeyId {
        self.pending.signed_by
    }

    /// Takes the next chunk of the file.
    pub fn update(&mut self, chunk: &Chunk) {
        self.sha256.update((**chunk).as_ref());
    }

    /// Marks the end of the file.
    pub fn finish(self) -> Hashed {
        Hashed {
            sha256: self.sha256.finalize().into(),
            pending: self.pending,
        }
    }
}

impl std::fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamVerifier")
            .field("signed_by", &self.pending.signed_by)
            .finish_non_exhaustive()
    }
}

/// A streamed file whose hash is done: its sha256, and the signature check
/// waiting for the file's metadata record.
pub struct Hashed {
    pending: Pending,
    sha256: [u8; 32],
}

impl Hashed {
    /// The sha256 of every byte handed to [`StreamVerifier::update`].
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Concludes as [`verify`](super::verify) does for the same bytes.
    /// `metadata` reads the file's metadata record (e.g.
    /// [`find_metadata_in_file`] of the file the chunks were written to);
    /// `bytes_again` reads the whole file once more, from its start, and is
    /// called only when the check fails, to tell which signature did. Each
    /// is called at most once. Bytes that cannot be read again count as
    /// not signed.
    ///
    /// [`find_metadata_in_file`]: crate::inspect::find_metadata_in_file
    pub fn conclude<R: Read + Seek>(
        self,
        bytes_again: impl FnOnce() -> std::io::Result<R>,
        metadata: impl FnOnce() -> Result<PluginMetadata, InspectError>,
    ) -> Result<Verified, VerifyError> {
        self.pending
            .conclude_once(self.sha256, bytes_again, metadata)
    }
}

impl std::fmt::Debug for Hashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashed")
            .field("signed_by", &self.pending.signed_by)
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}
