//! The frames between the host and a plugin worker (`docs/abi.md`,
//! "Process tier"): one frame per hook call and one per answer, over a
//! Unix stream socket pair the host made.
//!
//! ```text
//! frame  = length:u32le body              (length = body's bytes, at most MAX_FRAME)
//! body   = kind:u8 id:u64le rest
//! host → worker
//!   CALL      rest = hook:u8 count:u8 (len:u32le bytes){count}
//!   CANCEL    rest = (empty)              drop call `id`
//! worker → host
//!   HELLO     rest = JSON {protocol, name, version, sha256, abi}   (id 0, once, first)
//!   DONE      rest = answer:u8 bytes      answer 0: none, 1: the bytes, 2: not implemented
//!   FAILED    rest = panicked:u8 message  (UTF-8)
//!   CANCELLED rest = (empty)              call `id` was dropped
//! ```
//!
//! A hook's arguments and answer are the ABI's own strings (the request as
//! JSON, `process_endpoint`'s three strings, the answer's JSON or body), so
//! the worker hands them to the plugin without parsing them. Everything a
//! worker sends is checked here: a frame that breaks this grammar is a
//! protocol error, and the host treats the worker as crashed.

use backworks_plugin_sdk::abi::Hook;

/// The protocol's version, in the handshake: a worker of another version is
/// refused.
pub(crate) const PROTOCOL: u32 = 1;

/// The largest frame body either side accepts (a request body rides in a
/// frame).
pub(crate) const MAX_FRAME: usize = 256 << 20;

const CALL: u8 = 1;
const CANCEL: u8 = 2;
const HELLO: u8 = 16;
const DONE: u8 = 17;
const FAILED: u8 = 18;
const CANCELLED: u8 = 19;

/// The hooks by wire number.
const HOOKS: [Hook; 6] = [
    Hook::Initialize,
    Hook::Shutdown,
    Hook::HealthCheck,
    Hook::BeforeRequest,
    Hook::ProcessEndpoint,
    Hook::AfterResponse,
];

fn hook_number(hook: Hook) -> u8 {
    HOOKS.iter().position(|h| *h == hook).unwrap_or(0) as u8
}

/// What the worker says first: who it is. The host compares every field
/// with what it verified before it sends a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hello {
    /// [`PROTOCOL`].
    pub(crate) protocol: u32,
    /// The record's plugin name.
    pub(crate) name: String,
    /// The record's version.
    pub(crate) version: String,
    /// sha256 of the bytes the worker loaded (lower-case hex).
    pub(crate) sha256: String,
    /// The plugin's ABI revision (`1.2`).
    pub(crate) abi: String,
    /// How far the worker's sandbox holds.
    pub(crate) confinement: super::sandbox::Confinement,
}

/// A frame from the host to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToWorker {
    /// Call `hook` with its arguments (one string, three for
    /// `process_endpoint`, the config's JSON for `initialize`, none for the
    /// other lifecycle hooks).
    Call {
        id: u64,
        hook: Hook,
        args: Vec<Vec<u8>>,
    },
    /// Drop call `id` (its deadline passed or its client went away).
    Cancel { id: u64 },
}

/// How a call ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The hook returned nothing (continue, keep the response, not
    /// handled).
    Nothing,
    /// The hook returned this string.
    Text(Vec<u8>),
    /// The plugin does not implement the hook.
    NotImplemented,
    /// The hook failed.
    Failed {
        /// A caught panic.
        panicked: bool,
        /// The plugin's message.
        message: String,
    },
}

/// A frame from a worker to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromWorker {
    /// The handshake.
    Hello(Hello),
    /// Call `id` ended.
    Done { id: u64, answer: Answer },
    /// Call `id` was dropped after a [`ToWorker::Cancel`].
    Cancelled { id: u64 },
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLong(usize),
    #[error("a frame of {0} bytes is too short for its kind")]
    Short(usize),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("unknown hook number {0}")]
    Hook(u8),
    #[error("unknown answer {0}")]
    Answer(u8),
    #[error("a call frame has {0} arguments (at most 3)")]
    Arguments(u8),
    #[error("the handshake is not valid: {0}")]
    Hello(String),
    #[error("a failure message is not UTF-8")]
    Message,
    #[error("an answer to call {0}, which was never made")]
    Unknown(u64),
}

/// Appends `body` to `out` as one frame (its length first).
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

fn head(out: &mut Vec<u8>, kind: u8, id: u64) {
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
}

impl ToWorker {
    /// Appends this frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        frame(out, |out| match self {
            Self::Call { id, hook, args } => {
                head(out, CALL, *id);
                out.push(hook_number(*hook));
                out.push(args.len() as u8);
                for arg in args {
                    out.extend_from_slice(&(arg.len() as u32).to_le_bytes());
                    out.extend_from_slice(arg);
                }
            }
            Self::Cancel { id } => head(out, CANCEL, *id),
        });
    }

    /// Parses one frame body (without its length).
    pub(crate) fn decode(body: &[u8]) -> Result<Self, WireError> {
        let (kind, id, rest) = split_head(body)?;
        match kind {
            CALL => {
                let [hook, count, ref rest @ ..] = *rest else {
                    return Err(WireError::Short(body.len()));
                };
                let hook = *HOOKS.get(usize::from(hook)).ok_or(WireError::Hook(hook))?;
                if count > 3 {
                    return Err(WireError::Arguments(count));
                }
                let mut args = Vec::with_capacity(usize::from(count));
                let mut rest = rest;
                for _ in 0..count {
                    let (length, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or(WireError::Short(body.len()))?;
                    let length = u32::from_le_bytes(*length) as usize;
                    if tail.len() < length {
                        return Err(WireError::Short(body.len()));
                    }
                    let (arg, tail) = tail.split_at(length);
                    args.push(arg.to_vec());
                    rest = tail;
                }
                Ok(Self::Call { id, hook, args })
            }
            CANCEL => Ok(Self::Cancel { id }),
            other => Err(WireError::Kind(other)),
        }
    }
}

impl FromWorker {
    /// Appends this frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        frame(out, |out| match self {
            Self::Hello(hello) => {
                head(out, HELLO, 0);
                // A struct of strings and a number always serialises.
                out.extend_from_slice(&serde_json::to_vec(hello).unwrap_or_default());
            }
            Self::Done { id, answer } => match answer {
                Answer::Nothing => {
                    head(out, DONE, *id);
                    out.push(0);
                }
                Answer::Text(text) => {
                    head(out, DONE, *id);
                    out.push(1);
                    out.extend_from_slice(text);
                }
                Answer::NotImplemented => {
                    head(out, DONE, *id);
                    out.push(2);
                }
                Answer::Failed { panicked, message } => {
                    head(out, FAILED, *id);
                    out.push(u8::from(*panicked));
                    out.extend_from_slice(message.as_bytes());
                }
            },
            Self::Cancelled { id } => head(out, CANCELLED, *id),
        });
    }

    /// Parses one frame body (without its length).
    pub(crate) fn decode(body: &[u8]) -> Result<Self, WireError> {
        let (kind, id, rest) = split_head(body)?;
        match kind {
            HELLO => serde_json::from_slice(rest)
                .map(Self::Hello)
                .map_err(|e| WireError::Hello(e.to_string())),
            DONE => {
                let (&answer, rest) = rest.split_first().ok_or(WireError::Short(body.len()))?;
                let answer = match answer {
                    0 => Answer::Nothing,
                    1 => Answer::Text(rest.to_vec()),
                    2 => Answer::NotImplemented,
                    other => return Err(WireError::Answer(other)),
                };
                Ok(Self::Done { id, answer })
            }
            FAILED => {
                let (&panicked, rest) = rest.split_first().ok_or(WireError::Short(body.len()))?;
                let message = std::str::from_utf8(rest).map_err(|_| WireError::Message)?;
                Ok(Self::Done {
                    id,
                    answer: Answer::Failed {
                        panicked: panicked != 0,
                        message: message.to_owned(),
                    },
                })
            }
            CANCELLED => Ok(Self::Cancelled { id }),
            other => Err(WireError::Kind(other)),
        }
    }
}

fn split_head(body: &[u8]) -> Result<(u8, u64, &[u8]), WireError> {
    let (&kind, rest) = body.split_first().ok_or(WireError::Short(body.len()))?;
    let (id, rest) = rest
        .split_first_chunk::<8>()
        .ok_or(WireError::Short(body.len()))?;
    Ok((kind, u64::from_le_bytes(*id), rest))
}

/// A frame's body length from its 4-byte prefix, refused over
/// [`MAX_FRAME`].
pub(crate) fn body_length(prefix: [u8; 4]) -> Result<usize, WireError> {
    let length = u32::from_le_bytes(prefix) as usize;
    if length > MAX_FRAME {
        return Err(WireError::TooLong(length));
    }
    Ok(length)
}

/// Frames read from a byte stream: bytes go in as they arrive
/// ([`Frames::buffer`] then [`Frames::filled`]), whole frame bodies come
/// out ([`Frames::next`]).
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buffer: Vec<u8>,
    /// Where the next unread frame starts.
    start: usize,
}

impl Frames {
    /// The next whole frame body, if one has arrived.
    pub(crate) fn next(&mut self) -> Result<Option<&[u8]>, WireError> {
        let unread = &self.buffer[self.start..];
        let Some((prefix, rest)) = unread.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let length = body_length(*prefix)?;
        if rest.len() < length {
            return Ok(None);
        }
        let body = self.start + 4..self.start + 4 + length;
        self.start = body.end;
        Ok(Some(&self.buffer[body]))
    }

    /// Room for at least `at_least` more bytes: read into the returned
    /// slice, then call [`Frames::filled`] with how many were read.
    pub(crate) fn buffer(&mut self, at_least: usize) -> &mut [u8] {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let filled = self.buffer.len();
        self.buffer.resize(filled + at_least, 0);
        &mut self.buffer[filled..]
    }

    /// Gives memory back after a large frame: the buffer keeps at most
    /// 128 KiB of room once what it holds is read.
    pub(crate) fn shrink(&mut self) {
        const KEEP: usize = 128 * 1024;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        if self.buffer.capacity() > KEEP && self.buffer.len() < KEEP {
            self.buffer.shrink_to(KEEP);
        }
    }

    /// `read` bytes of the slice [`Frames::buffer`] returned were filled.
    pub(crate) fn filled(&mut self, at_least: usize, read: usize) {
        let length = self.buffer.len() - at_least + read;
        self.buffer.truncate(length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_to_worker(frame: ToWorker) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        let length = body_length(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(length, bytes.len() - 4);
        assert_eq!(ToWorker::decode(&bytes[4..]), Ok(frame));
    }

    fn round_trip_from_worker(frame: FromWorker) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        assert_eq!(FromWorker::decode(&bytes[4..]), Ok(frame));
    }

    #[test]
    fn every_frame_round_trips() {
        for hook in HOOKS {
            round_trip_to_worker(ToWorker::Call {
                id: u64::MAX - 3,
                hook,
                args: vec![b"{\"path\":\"/\"}".to_vec(), Vec::new(), b"\0body".to_vec()],
            });
        }
        round_trip_to_worker(ToWorker::Call {
            id: 1,
            hook: Hook::HealthCheck,
            args: Vec::new(),
        });
        round_trip_to_worker(ToWorker::Cancel { id: 9 });
        round_trip_from_worker(FromWorker::Hello(Hello {
            protocol: PROTOCOL,
            name: "weather".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            abi: "1.2".into(),
            confinement: super::super::sandbox::Confinement {
                landlock: "full".into(),
                seccomp: "none: no filter for this architecture".into(),
                capabilities: "not declared (defaults)".into(),
                uid: 65534,
            },
        }));
        for answer in [
            Answer::Nothing,
            Answer::Text(b"{\"status\":200}".to_vec()),
            Answer::Text(Vec::new()),
            Answer::NotImplemented,
            Answer::Failed {
                panicked: true,
                message: "boom \u{1b}".into(),
            },
        ] {
            round_trip_from_worker(FromWorker::Done { id: 7, answer });
        }
        round_trip_from_worker(FromWorker::Cancelled { id: 7 });
    }

    #[test]
    fn bad_frames_are_refused_never_a_panic() {
        assert_eq!(FromWorker::decode(&[]), Err(WireError::Short(0)));
        assert_eq!(
            FromWorker::decode(&[DONE, 0, 0, 0]),
            Err(WireError::Short(4))
        );
        let mut done = vec![DONE];
        done.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(FromWorker::decode(&done), Err(WireError::Short(9)));
        done.push(9);
        assert_eq!(FromWorker::decode(&done), Err(WireError::Answer(9)));
        let mut failed = vec![FAILED];
        failed.extend_from_slice(&5u64.to_le_bytes());
        failed.extend_from_slice(&[1, 0xff]);
        assert_eq!(FromWorker::decode(&failed), Err(WireError::Message));
        let mut unknown = vec![200];
        unknown.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(FromWorker::decode(&unknown), Err(WireError::Kind(200)));
        assert!(matches!(
            FromWorker::decode(&[HELLO, 0, 0, 0, 0, 0, 0, 0, 0, b'{']),
            Err(WireError::Hello(_))
        ));
        let mut call = vec![CALL];
        call.extend_from_slice(&1u64.to_le_bytes());
        call.extend_from_slice(&[3, 1, 10, 0, 0, 0, b'x']);
        assert_eq!(ToWorker::decode(&call), Err(WireError::Short(16)));
        call[9] = 40;
        assert_eq!(ToWorker::decode(&call), Err(WireError::Hook(40)));
        call[9] = 3;
        call[10] = 4;
        assert_eq!(ToWorker::decode(&call), Err(WireError::Arguments(4)));
        assert_eq!(
            body_length(((MAX_FRAME + 1) as u32).to_le_bytes()),
            Err(WireError::TooLong(MAX_FRAME + 1))
        );
    }

    #[test]
    fn frames_come_out_whole_whatever_the_reads() {
        let mut stream = Vec::new();
        for id in 0..5 {
            ToWorker::Cancel { id }.encode(&mut stream);
            ToWorker::Call {
                id,
                hook: Hook::BeforeRequest,
                args: vec![vec![b'a'; id as usize * 100]],
            }
            .encode(&mut stream);
        }
        for chunk in [1, 3, 7, 64, 4096] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let room = frames.buffer(chunk);
                room[..piece.len()].copy_from_slice(piece);
                frames.filled(chunk, piece.len());
                while let Some(body) = frames.next().unwrap() {
                    got.push(ToWorker::decode(body).unwrap());
                }
            }
            assert_eq!(got.len(), 10, "chunks of {chunk}");
            assert_eq!(
                got[9],
                ToWorker::decode(
                    &{
                        let mut one = Vec::new();
                        ToWorker::Call {
                            id: 4,
                            hook: Hook::BeforeRequest,
                            args: vec![vec![b'a'; 400]],
                        }
                        .encode(&mut one);
                        one
                    }[4..]
                )
                .unwrap()
            );
        }
    }
}
