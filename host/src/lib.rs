//! The Backworks host: finds plugin libraries, reads and checks them, and
//! (with the loader and server of later work) runs requests through them.

pub mod config;
pub mod inspect;
