//! A Backworks plugin.
//!
//! The host loads this library at run time, calls `initialize` with the
//! plugin's `config` from `backworks.yaml`, then runs requests through the
//! hooks below. Every hook the trait offers has a default, so implement only
//! what the plugin needs; `docs/abi.md` in the Backworks repository has the
//! full contract.

use std::sync::OnceLock;

use backworks_plugin_sdk::*;

/// The plugin. The host creates it with `Default::default()`.
#[derive(Default)]
pub struct Plugin {
    greeting: OnceLock<String>,
}

#[async_trait]
impl BackworksPlugin for Plugin {
    fn name(&self) -> &str {
        env!("CARGO_PKG_NAME")
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn description(&self) -> &str {
        env!("CARGO_PKG_DESCRIPTION")
    }

    /// Reads `greeting` from the plugin's config (default: `hello`).
    async fn initialize(&self, config: &Value) -> BackworksResult<()> {
        let greeting = match config.get("greeting") {
            None | Some(Value::Null) => "hello",
            Some(Value::String(greeting)) => greeting.as_str(),
            Some(other) => {
                return Err(BackworksError::Config(format!(
                    "`greeting` must be a string, found {other}"
                )));
            }
        };
        // `initialize` runs once; a second value would be ignored.
        let _ = self.greeting.set(greeting.to_owned());
        Ok(())
    }

    /// Answers `GET /hello`; leaves every other endpoint to other plugins.
    async fn process_endpoint_data(
        &self,
        endpoint: &str,
        method: &str,
        _data: &str,
    ) -> BackworksResult<Option<String>> {
        if endpoint != "/hello" || method != "GET" {
            return Ok(None);
        }
        let greeting = self.greeting.get().map_or("hello", String::as_str);
        Ok(Some(
            json!({ "message": greeting, "plugin": self.name() }).to_string(),
        ))
    }
}

export_plugin!(Plugin);
