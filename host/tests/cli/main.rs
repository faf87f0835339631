//! End-to-end tests of the `backworks` binary, run as a user runs it: real
//! plugins (built once per run with cargo and cc, signed with real minisign
//! keys), a real server on 127.0.0.1, real HTTP, everything bounded in time.

#![forbid(unsafe_code)]

use backworks_test_support as support;
use backworks_test_support::harness;

mod abi_revisions;
mod inspect;
mod load;
mod marketplace;
mod marketplace_flow;
#[cfg(target_os = "linux")]
mod process;
mod registry_server;
mod serve;
mod swap;
mod telemetry;
mod waiting;
