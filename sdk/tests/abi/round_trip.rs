//! The same round trip for the Rust and the C weather plugin: metadata from
//! the file's bytes, the same record from memory, then every vtable entry
//! with real JSON, every returned string freed.

use std::ffi::CString;
use std::path::Path;

use backworks_artifact::inspect::find_metadata;
use backworks_plugin_sdk::abi::{self, FailureKind, Hook, RawPlugin};
use backworks_plugin_sdk::{HttpRequest, HttpResponse, RequestAction, TARGET, Value, json};

use crate::support::{self, NULL};

struct Expected {
    package: &'static str,
    package_version: &'static str,
    description: &'static str,
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

fn assert_state_error(result: Result<impl std::fmt::Debug, abi::HookError>, hook: Hook) {
    let error = result.expect_err("hook must refuse to run in this state");
    assert_eq!(error.kind, FailureKind::InvalidState, "{error}");
    assert_eq!(error.hook, hook);
    assert!(error.message.contains(hook.name()), "{error}");
}

fn weather_request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/weather".into(),
        query: Some("city=Oslo".into()),
        headers: [("accept".to_owned(), "application/json".to_owned())].into(),
        body: None,
    }
}

fn round_trip(library: &Path, expected: Expected) {
    // 1. Metadata from the file's bytes, nothing loaded.
    let bytes = std::fs::read(library).unwrap();
    let from_file = find_metadata(&bytes).unwrap();
    assert_eq!(from_file.name, expected.package);
    assert_eq!(from_file.version, expected.package_version);
    assert_eq!(from_file.description, expected.description);
    assert_eq!(from_file.abi_version(), abi::ABI_VERSION);
    assert_eq!(from_file.target, TARGET);
    assert_eq!(from_file.sdk_version, backworks_plugin_sdk::SDK_VERSION);
    abi::check_compatible(&from_file).unwrap();

    // 2. The same record from memory, then the checked plugin.
    let loaded = support::load_fresh(library);
    assert_eq!(loaded.metadata().unwrap(), from_file);
    let plugin: RawPlugin = loaded.plugin().unwrap();
    assert_eq!(plugin.name(), "weather");
    assert_eq!(plugin.version(), "1.0.0");
    assert_eq!(plugin.description(), "Weather API integration");

    // 3. Nothing runs before initialize.
    assert_state_error(plugin.health_check(), Hook::HealthCheck);
    assert_state_error(
        plugin.process_endpoint(&c("/weather"), &c("GET"), &c("")),
        Hook::ProcessEndpoint,
    );
    // NULL config: invalid input, reported through last_error.
    let code = (plugin.vtable().initialize)(NULL);
    assert_eq!(code, abi::STATUS_INVALID_INPUT);
    let mut last = -1;
    let message = (plugin.vtable().last_error)(&mut last);
    assert_eq!(last, abi::STATUS_INVALID_INPUT);
    assert!(!message.is_null());
    (plugin.vtable().free_string)(message);

    // 4. The lifecycle, with real JSON.
    plugin.initialize(&c(r#"{"api_key":"12345"}"#)).unwrap();
    assert_state_error(plugin.initialize(c"{}"), Hook::Initialize);
    plugin.health_check().unwrap();

    let request = serde_json::to_string(&weather_request()).unwrap();
    assert!(
        plugin.before_request(&c(&request)).unwrap().is_none(),
        "continue is NULL"
    );
    assert_eq!(
        plugin.call_before_request(&weather_request()).unwrap(),
        RequestAction::Continue
    );
    let response = HttpResponse::json(200, &json!({"ok": true}));
    assert_eq!(
        plugin
            .call_after_response(&weather_request(), &response)
            .unwrap(),
        None
    );

    let body = plugin
        .process_endpoint(&c("/weather"), &c("GET"), &c(""))
        .unwrap()
        .expect("the weather endpoint answers");
    let body: Value = serde_json::from_str(body.to_str().unwrap()).unwrap();
    assert_eq!(body, json!({"temperature": 25, "humidity": 60}));
    assert!(
        plugin
            .process_endpoint(&c("/weather"), &c("POST"), &c("{}"))
            .unwrap()
            .is_none()
    );
    assert!(
        plugin
            .process_endpoint(&c("/other"), &c("GET"), &c(""))
            .unwrap()
            .is_none()
    );

    // NULL arguments: an error, never a crash.
    let out = (plugin.vtable().before_request)(NULL);
    assert!(out.is_null());
    let mut last = -1;
    let message = (plugin.vtable().last_error)(&mut last);
    assert_eq!(last, abi::STATUS_INVALID_INPUT);
    (plugin.vtable().free_string)(message);
    // No error left behind: last_error is empty after it was taken.
    let message = (plugin.vtable().last_error)(&mut last);
    assert!(message.is_null());
    assert_eq!(last, abi::STATUS_OK);
    // free_string(NULL) is a no-op.
    (plugin.vtable().free_string)(NULL);

    // 5. Shutdown, after which nothing runs.
    plugin.shutdown().unwrap();
    assert_state_error(plugin.health_check(), Hook::HealthCheck);
    assert_state_error(plugin.shutdown(), Hook::Shutdown);
    assert_state_error(plugin.initialize(c"{}"), Hook::Initialize);
}

#[test]
fn rust_weather_plugin_round_trip() {
    round_trip(
        &support::weather_plugin(),
        Expected {
            package: "weather",
            package_version: "1.0.0",
            description: "Weather API integration",
        },
    );
}

#[test]
fn c_weather_plugin_round_trip() {
    round_trip(
        &support::c_plugin(),
        Expected {
            package: "weather-c",
            package_version: "1.0.0",
            description: "Weather API integration, in C",
        },
    );
}

/// Hooks a Rust plugin leaves to the trait's default answer
/// `STATUS_NOT_IMPLEMENTED`; the host side then stops calling them. Hooks a
/// plugin implements (every hook of the C plugin, `process_endpoint` of the
/// Rust one) are called every time.
#[test]
fn default_hooks_say_not_implemented_and_are_skipped_afterwards() {
    let loaded = support::load_fresh(&support::weather_plugin());
    let plugin: RawPlugin = loaded.plugin().unwrap();
    plugin.initialize(c"null").unwrap();
    let request = c(&serde_json::to_string(&weather_request()).unwrap());

    // The raw entry: NULL, and the status says why.
    let out = (plugin.vtable().before_request)(request.as_ptr());
    assert!(out.is_null());
    let mut code = -1;
    let message = (plugin.vtable().last_error)(&mut code);
    assert_eq!(code, abi::STATUS_NOT_IMPLEMENTED);
    // SAFETY: a non-NULL last_error message is a NUL-terminated string
    // owned by the plugin until free_string.
    let text = unsafe { std::ffi::CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    assert!(
        text.contains("`before_request` is not implemented"),
        "{text}"
    );
    (plugin.vtable().free_string)(message);

    // Through RawPlugin: a no-op answer, then the hook is known unimplemented.
    assert!(plugin.implements(Hook::BeforeRequest));
    assert!(plugin.before_request(&request).unwrap().is_none());
    assert!(!plugin.implements(Hook::BeforeRequest));
    let response = HttpResponse::json(200, &json!({"ok": true}));
    assert_eq!(
        plugin
            .call_after_response(&weather_request(), &response)
            .unwrap(),
        None
    );
    assert!(!plugin.implements(Hook::AfterResponse));
    // Implemented, even when it does not handle the request.
    assert_eq!(
        plugin.call_process_endpoint("/other", "GET", "").unwrap(),
        None
    );
    assert!(plugin.implements(Hook::ProcessEndpoint));
    assert!(plugin.implements(Hook::Initialize));

    // After shutdown every real call is refused (invalid state), so these
    // answers prove the skipped hooks were not called at all.
    plugin.shutdown().unwrap();
    assert_eq!(
        plugin.call_before_request(&weather_request()).unwrap(),
        RequestAction::Continue
    );
    assert_eq!(
        plugin
            .call_after_response(&weather_request(), &response)
            .unwrap(),
        None
    );
    assert_state_error(
        plugin.call_process_endpoint("/weather", "GET", ""),
        Hook::ProcessEndpoint,
    );
}

#[test]
fn c_plugin_hooks_that_return_null_stay_implemented() {
    let loaded = support::load_fresh(&support::c_plugin());
    let plugin: RawPlugin = loaded.plugin().unwrap();
    plugin.initialize(c"null").unwrap();
    let response = HttpResponse::json(200, &json!({"ok": true}));
    for _ in 0..2 {
        assert_eq!(
            plugin.call_before_request(&weather_request()).unwrap(),
            RequestAction::Continue
        );
        assert_eq!(
            plugin
                .call_after_response(&weather_request(), &response)
                .unwrap(),
            None
        );
    }
    for hook in [
        Hook::BeforeRequest,
        Hook::AfterResponse,
        Hook::ProcessEndpoint,
    ] {
        assert!(plugin.implements(hook), "{hook:?}");
    }
    plugin.shutdown().unwrap();
}
