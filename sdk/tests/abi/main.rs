//! End-to-end tests of the plugin ABI: real plugins (Rust with cargo, C with
//! the system compiler) are built once per run, read from their bytes,
//! loaded with libloading and driven through every vtable entry.

mod calls;
mod capabilities;
mod faults;
mod header;
mod round_trip;
mod versions;

use backworks_test_support as support;
