//! End-to-end tests of `cargo backworks`, driving the built binary as a user
//! (or cargo) runs it.

mod basics;
mod build;
mod cache;
mod capabilities;
mod check;
mod ci;
mod deps;
mod flake;
mod floor;
mod keys;
mod platforms;
mod publish;
