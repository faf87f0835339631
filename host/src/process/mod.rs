//! The `process` tier (`isolation: process`): a plugin's verified bytes run
//! in a worker process of their own, supervised by the server, so that a
//! crash, an abort, `exit()` or a hook that never stops costs the requests
//! in flight in that plugin and a restart, never the server.
//!
//! - `wire`: the frames between host and worker;
//! - [`supervisor`]: the host's side ([`ProcessPlugin`]): start, calls,
//!   cancellation, crash detection, restart with backoff, failure after too
//!   many crashes, retirement;
//! - [`worker`]: `backworks plugin-worker`, the worker's side;
//! - [`output`]: a worker's standard error, relayed into the server's log
//!   under the plugin's name (never the server's own standard error);
//! - `confine`: the system calls that start and confine a worker (this
//!   tier's only `unsafe`).
//!
//! Linux only: the worker gets the sealed memfd of the verified bytes.

mod confine;
#[forbid(unsafe_code)]
pub mod output;
#[forbid(unsafe_code)]
pub mod sandbox;
#[forbid(unsafe_code)]
pub mod supervisor;
#[forbid(unsafe_code)]
pub(crate) mod wire;
#[forbid(unsafe_code)]
pub mod worker;

pub use supervisor::{CallFailure, ProcessPlugin, WorkerSettings};
pub use wire::Answer;
