//! The `backworks.yaml` reader (`config::parse`, what `config::load` runs on
//! the file's text) on arbitrary text: every input is a configuration or an
//! error that names the file, never a panic or a hang. `${VAR}` references
//! resolve (to a fixed value) so that the fields behind them are reached;
//! the files the configuration names do not exist, so that part of the
//! checks always reports them missing.
#![no_main]

use std::path::Path;

use backworks_host::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/backworks-fuzz/backworks.yaml");
    let env = |name: &str| (name.len() % 2 == 0).then(|| String::from("8080"));
    if let Err(error) = config::parse(text, path, &env) {
        let message = error.to_string();
        assert!(!message.is_empty());
    }
});
