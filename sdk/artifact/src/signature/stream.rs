//! The signature check of a file that is still arriving (a download): the
//! signature's form and key are checked before the first byte, and the two
//! hashes the check needs are computed as the chunks come, so that when the
//! last byte is in, only the Ed25519 checks and the metadata lookup remain.
//! The sha256 the trusted comment states is computed on the caller's thread
//! while the chunk it just received is still in cache; minisign's BLAKE2b
//! prehash, the slower of the two, runs on a thread of its own.
//!
//! The sha256 had a thread of its own at first: on two cores a 10 MB
//! install was no faster that way (20 installs from the registry of
//! `cargo bench -p backworks-host --bench install`: median 24.5 against
//! 23.6 ms), the threads queueing for the cores.
//!
//! The conclusion is [`verify`](super::verify)'s, step for step: the same
//! checks in the same order, the same [`VerifyError`] for the same bytes.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use sha2::{Digest, Sha256};

use super::{Pending, PublicKey, Verified, VerifyError};
use crate::inspect::InspectError;
use crate::metadata::PluginMetadata;

/// A piece of the file, shared with the hashing thread (and whatever else
/// the caller does with it, such as writing it to disk): a download's
/// `Bytes`, a `Vec`.
pub type Chunk = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A signature check fed the signed file a chunk at a time.
///
/// [`StreamVerifier::new`] refuses a malformed signature and an untrusted
/// key at once, before anything is downloaded. [`StreamVerifier::update`]
/// takes each chunk, in order (it never waits for the hashing thread);
/// [`StreamVerifier::finish`] waits for the hashes and returns the
/// [`Hashed`] file, whose sha256 the caller can compare with what it
/// expected before it [concludes](Hashed::conclude).
///
/// Dropping a verifier before `finish` (a failed download) ends its thread
/// as soon as it has hashed what it was given.
pub struct StreamVerifier {
    pending: Pending,
    sha256: Sha256,
    data: Hasher<Result<(), minisign::PError>>,
}

/// A hashing thread and the channel that feeds it.
struct Hasher<T> {
    chunks: Sender<Chunk>,
    thread: JoinHandle<T>,
}

impl<T: Send + 'static> Hasher<T> {
    fn spawn(
        name: &str,
        hash: impl FnOnce(Receiver<Chunk>) -> T + Send + 'static,
    ) -> Result<Self, VerifyError> {
        let (chunks, receiver) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || hash(receiver))
            .map_err(VerifyError::Thread)?;
        Ok(Self { chunks, thread })
    }

    /// Ends the input and waits for the hash. A panic in the thread (a bug:
    /// hashing cannot fail) goes on in the caller, as if it had hashed.
    fn finish(self) -> T {
        drop(self.chunks);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl StreamVerifier {
    /// Starts the check of `signature_text` (a `.minisig` file's text)
    /// against `trusted_keys`. Refuses at once what [`verify`](super::verify)
    /// refuses before it looks at the bytes: a malformed or legacy
    /// signature, and a key that is not trusted; fails with
    /// [`VerifyError::Thread`] when the hashing thread cannot start.
    pub fn new(signature_text: &str, trusted_keys: &[PublicKey]) -> Result<Self, VerifyError> {
        let pending = Pending::new(signature_text, trusted_keys)?;
        let sha256 = Sha256::new();
        let (key, signature) = (pending.key.clone(), pending.signature.clone());
        let data = Hasher::spawn("backworks-minisign", move |chunks| {
            minisign::verify(
                &key,
                &signature,
                ChunkReader::new(chunks),
                true,
                false,
                false,
            )
        })?;
        Ok(Self {
            pending,
            sha256,
            data,
        })
    }

    /// The id of the (trusted) key that made the signature.
    pub fn signed_by(&self) -> super::KeyId {
        self.pending.signed_by
    }

    /// Takes the next chunk of the file: hands it to the BLAKE2b thread
    /// (chunks queue until it takes them), then hashes it with sha256 on
    /// this thread.
    pub fn update(&mut self, chunk: &Chunk) {
        // The thread only stops reading once the sender is dropped, which
        // is `finish`'s job: the send cannot fail before then.
        let _ = self.data.chunks.send(Arc::clone(chunk));
        self.sha256.update((**chunk).as_ref());
    }

    /// Marks the end of the file and waits for the BLAKE2b thread.
    pub fn finish(self) -> Hashed {
        let sha256 = self.sha256.finalize().into();
        let data = self.data.finish();
        Hashed {
            pending: self.pending,
            sha256,
            data,
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

/// A streamed file whose hashes are done: its sha256, and the signature
/// check waiting for the file's metadata record.
pub struct Hashed {
    pending: Pending,
    sha256: [u8; 32],
    data: Result<(), minisign::PError>,
}

impl Hashed {
    /// The sha256 of every byte handed to [`StreamVerifier::update`].
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Concludes as [`verify`](super::verify) does for the same bytes:
    /// signature over the bytes, then over the trusted comment, then the
    /// signed claims against the file's. `metadata` reads the file's
    /// metadata record (e.g. [`find_metadata_in_file`] of the file the
    /// chunks were written to); it is called at most once.
    ///
    /// [`find_metadata_in_file`]: crate::inspect::find_metadata_in_file
    pub fn conclude(
        self,
        metadata: impl FnOnce() -> Result<PluginMetadata, InspectError>,
    ) -> Result<Verified, VerifyError> {
        self.pending.conclude(self.sha256, self.data, metadata)
    }
}

impl std::fmt::Debug for Hashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashed")
            .field("signed_by", &self.pending.signed_by)
            .field("sha256", &hex::encode(self.sha256))
            .field(
                "data_signature",
                &self.data.as_ref().map_err(ToString::to_string),
            )
            .finish()
    }
}

/// The chunks arriving on a channel, read in order as one stream; it ends
/// when the sender is dropped.
struct ChunkReader {
    chunks: Receiver<Chunk>,
    current: Option<Chunk>,
    offset: usize,
}

impl ChunkReader {
    fn new(chunks: Receiver<Chunk>) -> Self {
        Self {
            chunks,
            current: None,
            offset: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = &(**chunk).as_ref()[self.offset..];
                if !rest.is_empty() {
                    let n = rest.len().min(buffer.len());
                    buffer[..n].copy_from_slice(&rest[..n]);
                    self.offset += n;
                    return Ok(n);
                }
            }
            match self.chunks.recv() {
                Ok(next) => {
                    self.current = Some(next);
                    self.offset = 0;
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
    }
}

/// `minisign::verify` asks for `Seek` but reads its input once, from start
/// to end (the prehash); a stream cannot go back, so a seek is an error.
/// The tests check that a streamed check concludes as the in-memory one.
impl Seek for ChunkReader {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a streamed file cannot seek",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::{Chunk, ChunkReader};

    #[test]
    fn chunks_read_as_one_stream_in_any_buffer_size() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for (chunk_size, buffer_size) in [(1, 7), (333, 64), (4096, 65536), (10_000, 1)] {
            let (sender, receiver) = mpsc::channel();
            for piece in data.chunks(chunk_size) {
                let chunk: Chunk = Arc::new(piece.to_vec());
                sender.send(chunk).unwrap();
            }
            // An empty chunk is skipped, not read as the end.
            sender.send(Arc::new(Vec::<u8>::new())).unwrap();
            drop(sender);
            let mut reader = ChunkReader::new(receiver);
            let mut read = Vec::new();
            let mut buffer = vec![0; buffer_size];
            loop {
                let n = reader.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&buffer[..n]);
            }
            assert_eq!(read, data, "chunks of {chunk_size}, reads of {buffer_size}");
        }
    }
}
