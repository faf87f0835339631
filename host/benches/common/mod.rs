//! Shared by the host's benchmarks: the plugin fixtures of the SDK's tests
//! and the server harness of the host's tests.

#[path = "../../../sdk/tests/abi/support.rs"]
pub mod fixtures;

#[path = "../../tests/cli/harness.rs"]
pub mod harness;
