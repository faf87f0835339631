//! Faulty hooks (errors, panics, bad input, bad output) through the real ABI:
//! each becomes the documented error, the process keeps running, the plugin
//! stays usable, and no returned string leaks.

use std::ffi::CString;

use backworks_plugin_sdk::abi::{self, FailureKind, Hook, RawPlugin};
use backworks_plugin_sdk::{HttpRequest, HttpResponse, RequestAction, json};

use crate::support;

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

fn request(path: &str) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        query: None,
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body: Some(r#"{"hello":"world"}"#.into()),
    }
}

/// A fresh, initialized echo plugin.
fn echo() -> (support::Loaded, RawPlugin) {
    let loaded = support::load_fresh(&support::echo_plugin());
    let plugin = loaded.plugin().unwrap();
    plugin.initialize(c"{}").unwrap();
    (loaded, plugin)
}

#[test]
fn panics_become_errors_and_the_plugin_keeps_working() {
    let (_loaded, plugin) = echo();
    for _ in 0..3 {
        let error = plugin.call_before_request(&request("/panic")).unwrap_err();
        assert_eq!(error.kind, FailureKind::Panic, "{error}");
        assert_eq!(error.hook, Hook::BeforeRequest);
        assert!(
            error.message.contains("panic requested for /panic"),
            "{error}"
        );

        let error = plugin.process_endpoint(c"/panic", c"GET", c"").unwrap_err();
        assert_eq!(error.kind, FailureKind::Panic, "{error}");

        let error = plugin
            .call_after_response(&request("/panic"), &HttpResponse::json(200, &json!({})))
            .unwrap_err();
        assert_eq!(error.kind, FailureKind::Panic, "{error}");

        // Still serving after each panic.
        let echoed = plugin
            .process_endpoint(c"/echo", c"PUT", c"data")
            .unwrap()
            .unwrap();
        assert_eq!(echoed.to_str().unwrap(), "PUT data");
        plugin.health_check().unwrap();
    }
}

#[test]
fn panicking_initialize_leaves_the_plugin_uninitialized() {
    let loaded = support::load_fresh(&support::echo_plugin());
    let plugin = loaded.plugin().unwrap();
    let error = plugin.initialize(c"").unwrap_err();
    assert_eq!(
        error.kind,
        FailureKind::InvalidInput,
        "an empty config is not JSON: {error}"
    );
    let error = plugin.initialize(cr#"{"panic":true}"#).unwrap_err();
    assert_eq!(error.kind, FailureKind::Panic, "{error}");
    let error = plugin.initialize(cr#"{"fail":true}"#).unwrap_err();
    assert_eq!(error.kind, FailureKind::PluginError, "{error}");
    assert!(error.message.contains("`fail` is true"), "{error}");
    let error = plugin.health_check().unwrap_err();
    assert_eq!(error.kind, FailureKind::InvalidState, "{error}");
    // A good config after the failures: initialize may be retried.
    plugin.initialize(cr#"{"unhealthy":true}"#).unwrap();
    let error = plugin.health_check().unwrap_err();
    assert_eq!(error.kind, FailureKind::PluginError, "{error}");
    assert!(
        error.message.contains("configured to be unhealthy"),
        "{error}"
    );
    plugin.shutdown().unwrap();
}

#[test]
fn errors_bad_input_and_bad_output_are_reported_precisely() {
    let (_loaded, plugin) = echo();

    let error = plugin.call_before_request(&request("/error")).unwrap_err();
    assert_eq!(error.kind, FailureKind::PluginError);
    assert_eq!(error.message, "echo: error requested for /error");

    let error = plugin
        .process_endpoint(c"/error", c"DELETE", c"")
        .unwrap_err();
    assert_eq!(error.message, "echo: cannot DELETE /error");

    let error = plugin.before_request(c"{not json").unwrap_err();
    assert_eq!(error.kind, FailureKind::InvalidInput);
    assert!(
        error
            .message
            .contains("argument `request` is not valid JSON"),
        "{error}"
    );

    let error = plugin.before_request(cr#"{"path":"/x"}"#).unwrap_err();
    assert_eq!(
        error.kind,
        FailureKind::InvalidInput,
        "a request needs a method: {error}"
    );

    let not_utf8 = CString::new(vec![b'/', 0xff, 0xfe]).unwrap();
    let error = plugin.process_endpoint(&not_utf8, c"GET", c"").unwrap_err();
    assert_eq!(error.kind, FailureKind::InvalidInput);
    assert!(error.message.contains("`endpoint` is not UTF-8"), "{error}");

    let error = plugin.process_endpoint(c"/nul", c"GET", c"").unwrap_err();
    assert_eq!(error.kind, FailureKind::PluginError);
    assert!(error.message.contains("NUL byte at offset 1"), "{error}");
}

#[test]
fn request_hooks_pass_rewrite_and_answer() {
    let (_loaded, plugin) = echo();
    match plugin.call_before_request(&request("/anything")).unwrap() {
        RequestAction::Rewrite(rewritten) => {
            assert_eq!(rewritten.header("X-Echo"), Some("1"));
            assert_eq!(rewritten.body, request("/").body);
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
    match plugin.call_before_request(&request("/deny")).unwrap() {
        RequestAction::Respond(response) => {
            assert_eq!(response.status, 401);
            assert_eq!(response.body, r#"{"error":"denied"}"#);
        }
        other => panic!("expected a response, got {other:?}"),
    }
    assert_eq!(
        plugin.call_before_request(&request("/continue")).unwrap(),
        RequestAction::Continue
    );
    // Hooks run on the plugin's own runtime: timers and spawned tasks work.
    assert_eq!(
        plugin.call_before_request(&request("/sleep")).unwrap(),
        RequestAction::Continue
    );
    match plugin.call_before_request(&request("/spawn")).unwrap() {
        RequestAction::Rewrite(rewritten) => assert_eq!(rewritten.path, "/spawn/spawn"),
        other => panic!("expected a rewrite, got {other:?}"),
    }
    let response = HttpResponse::json(200, &json!({"n": 1}));
    let changed = plugin
        .call_after_response(&request("/x"), &response)
        .unwrap()
        .unwrap();
    assert_eq!(changed.headers["x-echo-after"], "/x");
    assert_eq!(
        plugin
            .call_after_response(&request("/keep"), &response)
            .unwrap(),
        None
    );
}

#[test]
fn concurrent_calls_keep_their_own_results_and_errors() {
    let (_loaded, plugin) = echo();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let plugin = &plugin;
            scope.spawn(move || {
                for i in 0..300 {
                    let data = c(&format!("{thread}-{i}"));
                    let echoed = plugin
                        .process_endpoint(c"/echo", c"GET", &data)
                        .unwrap()
                        .unwrap();
                    assert_eq!(echoed.to_str().unwrap(), format!("GET {thread}-{i}"));
                    // Errors are per thread: each sees its own.
                    let error = plugin.call_before_request(&request("/error")).unwrap_err();
                    assert_eq!(error.kind, FailureKind::PluginError);
                    if i % 50 == 0 {
                        let error = plugin.call_before_request(&request("/panic")).unwrap_err();
                        assert_eq!(error.kind, FailureKind::Panic);
                    }
                }
            });
        }
    });
    plugin.shutdown().unwrap();
}

#[test]
fn returned_strings_and_errors_do_not_leak() {
    let (loaded, plugin) = echo();
    let live = loaded.counter("echo_live_allocations");
    let round = |n: usize| {
        for i in 0..n {
            let data = c(&format!("payload {i}"));
            drop(plugin.process_endpoint(c"/echo", c"GET", &data).unwrap());
            drop(plugin.call_before_request(&request("/rewrite")).unwrap());
            drop(
                plugin
                    .call_after_response(&request("/x"), &HttpResponse::json(200, &json!({})))
                    .unwrap(),
            );
            drop(plugin.call_before_request(&request("/error")).unwrap_err());
            drop(plugin.process_endpoint(c"/nul", c"GET", c"").unwrap_err());
        }
    };
    round(200); // warm up lazily allocated state
    let before = live();
    round(2_000);
    let after = live();
    // 10,000 strings went out; a leak of even one per call would show here.
    assert!(
        after - before < 50,
        "live allocations in the plugin grew from {before} to {after}"
    );
    plugin.shutdown().unwrap();
}

#[test]
fn status_codes_are_the_documented_ones() {
    assert_eq!(
        [
            abi::STATUS_OK,
            abi::STATUS_PLUGIN_ERROR,
            abi::STATUS_PANIC,
            abi::STATUS_INVALID_INPUT,
            abi::STATUS_INVALID_STATE
        ],
        [0, 1, 2, 3, 4]
    );
}

/// `initialize_with_host` (ABI 1.1) with no host services, or with a
/// `struct_size` too small for the struct's header: invalid input, named,
/// and the plugin stays uninitialized (a correct call then succeeds).
#[test]
fn initialize_with_host_refuses_missing_or_truncated_host_services() {
    let loaded = support::load_fresh(&support::echo_plugin());
    let plugin = loaded.plugin().unwrap();
    assert_eq!(plugin.abi_revision().to_string(), "1.2");
    let entry = plugin
        .vtable()
        .initialize_with_host
        .expect("a Rust plugin is of ABI 1.1 or later");
    let take_error = || {
        let mut code = 0;
        let message = (plugin.vtable().last_error)(&mut code);
        assert!(!message.is_null());
        // SAFETY: a non-NULL message from last_error is a NUL-terminated
        // string the plugin owns until free_string.
        let text = unsafe { std::ffi::CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        (plugin.vtable().free_string)(message);
        (code, text)
    };

    assert_eq!(
        entry(c"{}".as_ptr(), std::ptr::null()),
        abi::STATUS_INVALID_INPUT
    );
    assert_eq!(
        take_error(),
        (
            abi::STATUS_INVALID_INPUT,
            String::from("argument `host` is NULL")
        )
    );

    static TRUNCATED: abi::HostServices = abi::HostServices {
        struct_size: 4,
        reserved: 0,
        context: std::ptr::null_mut(),
        log_enabled: None,
        log: None,
    };
    assert_eq!(entry(c"{}".as_ptr(), &TRUNCATED), abi::STATUS_INVALID_INPUT);
    let (code, text) = take_error();
    assert_eq!(code, abi::STATUS_INVALID_INPUT);
    assert!(
        text.starts_with("argument `host` declares struct_size 4:"),
        "{text}"
    );

    // Host services without logging: accepted, the plugin initializes.
    static QUIET: abi::HostServices = abi::HostServices {
        struct_size: std::mem::size_of::<abi::HostServices>() as u32,
        reserved: 0,
        context: std::ptr::null_mut(),
        log_enabled: None,
        log: None,
    };
    plugin
        .call_initialize_with_host(&json!({}), &QUIET)
        .unwrap();
    plugin.health_check().unwrap();
    assert_eq!(
        plugin.call_process_endpoint("/log", "GET", "").unwrap(),
        Some(String::from("logged")),
        "events with nowhere to go are dropped"
    );
}
