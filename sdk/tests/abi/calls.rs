//! ABI 1.2: request hooks driven as futures, through the real echo plugin.
//! A hook that waits on its own runtime's timer is pending, wakes the host's
//! waker from the plugin's thread and is then ready; a hook that does not
//! wait is ready on the first poll; a dropped call releases every clone of
//! the waker it kept; a panic in a later poll is a failed call; bad
//! arguments are refused with status 3.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use backworks_plugin_sdk::abi::{self, FailureKind, Hook, HookError, RawPlugin};

use crate::support::{self, NULL};

/// A host task's waker: counts wakes, remembers the threads that woke it,
/// and lets a test wait for a wake.
#[derive(Default)]
struct Task {
    wakes: AtomicUsize,
    woken_by: Mutex<Vec<std::thread::ThreadId>>,
    woken: Condvar,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken_by
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.woken.notify_all();
    }
}

impl Task {
    /// Waits until the task was woken at least `count` times (60 s at
    /// most: a bound for a hang, not a speed).
    fn wait_for(&self, count: usize) {
        let woken_by = self.woken_by.lock().unwrap();
        let (woken_by, timeout) = self
            .woken
            .wait_timeout_while(woken_by, Duration::from_secs(60), |w| w.len() < count)
            .unwrap();
        assert!(!timeout.timed_out(), "woken {} times", woken_by.len());
    }
}

/// Waits until only the test holds `task`: every clone of its waker was
/// released (a plugin thread that woke a clone releases it just after the
/// wake; 60 s at most: a bound for a hang).
fn assert_released(task: &Arc<Task>, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while Arc::strong_count(task) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(Arc::strong_count(task), 1, "{what}");
}

fn new_task() -> (Arc<Task>, Waker) {
    let task = Arc::new(Task::default());
    (Arc::clone(&task), Waker::from(task))
}

/// The echo plugin, loaded and initialized.
fn echo() -> RawPlugin {
    let loaded = support::load_fresh(&support::echo_plugin());
    let plugin = loaded.plugin().unwrap();
    assert!(plugin.drives_futures(), "a Rust plugin is of ABI 1.2");
    plugin.call_initialize(&serde_json::json!(null)).unwrap();
    plugin
}

#[test]
fn a_waiting_hook_is_pending_until_the_plugins_runtime_wakes_the_host() {
    let plugin = echo();
    let (task, waker) = new_task();
    let mut cx = Context::from_waker(&waker);
    let mut call = pin!(plugin.process_endpoint_async("/wait", "POST", "7"));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    assert_eq!(task.wakes.load(Ordering::SeqCst), 0);
    task.wait_for(1);
    // The plugin's runtime woke the host, from one of its own threads
    // (whose names only the plugin's copy of std knows).
    let woken_by = task.woken_by.lock().unwrap().clone();
    assert_eq!(woken_by.len(), 1, "one wake");
    assert_ne!(woken_by[0], std::thread::current().id());
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(result) => {
            assert_eq!(result.unwrap(), Some(String::from("waited POST 7")));
        }
        Poll::Pending => panic!("woken, but still pending"),
    }
    drop(waker);
    assert_released(&task, "the plugin released every clone of the waker");
    plugin.shutdown().unwrap();
}

#[test]
fn a_hook_that_does_not_wait_is_ready_on_the_first_poll() {
    let plugin = echo();
    let (task, waker) = new_task();
    let mut cx = Context::from_waker(&waker);
    let mut call = pin!(plugin.process_endpoint_async("/echo", "PUT", "body"));
    match call.as_mut().poll(&mut cx) {
        Poll::Ready(result) => assert_eq!(result.unwrap(), Some(String::from("PUT body"))),
        Poll::Pending => panic!("an echo does not wait"),
    }
    drop(waker);
    assert_eq!(Arc::strong_count(&task), 1, "no clone of the waker kept");
    assert_eq!(task.wakes.load(Ordering::SeqCst), 0);
    plugin.shutdown().unwrap();
}

#[test]
fn dropping_a_waiting_call_cancels_it_and_releases_the_waker() {
    let plugin = echo();
    let (task, waker) = new_task();
    let mut cx = Context::from_waker(&waker);
    {
        let mut call = pin!(plugin.process_endpoint_async("/wait", "GET", ""));
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(Arc::strong_count(&task) > 2, "the plugin keeps a clone");
    }
    drop(waker);
    assert_eq!(
        Arc::strong_count(&task),
        1,
        "call_drop dropped the future and with it the clone"
    );
    // The plugin still serves (its runtime was not disturbed).
    let (_task, waker) = new_task();
    let mut cx = Context::from_waker(&waker);
    let mut call = pin!(plugin.process_endpoint_async("/echo", "GET", "x"));
    assert!(matches!(
        call.as_mut().poll(&mut cx),
        Poll::Ready(Ok(Some(_)))
    ));
    plugin.shutdown().unwrap();
}

#[test]
fn a_panic_in_a_later_poll_is_a_failed_call() {
    let plugin = echo();
    let (task, waker) = new_task();
    let mut cx = Context::from_waker(&waker);
    let mut call = pin!(plugin.call(
        Hook::ProcessEndpoint,
        c"/wait-panic".into(),
        Some(c"GET".into()),
        Some(c"".into()),
    ));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    task.wait_for(1);
    let Poll::Ready(result) = call.as_mut().poll(&mut cx) else {
        panic!("woken, but still pending");
    };
    let error: HookError = result.unwrap_err();
    assert_eq!(error.kind, FailureKind::Panic, "{error}");
    assert!(
        error
            .message
            .starts_with("panicked: echo: panic requested after a wait"),
        "{error}"
    );
    // Polled again after it finished: an error, not a call into the plugin.
    let Poll::Ready(again) = call.as_mut().poll(&mut cx) else {
        panic!("a finished call is ready");
    };
    assert_eq!(again.unwrap_err().kind, FailureKind::InvalidState);
    plugin.shutdown().unwrap();
}

#[test]
fn call_start_refuses_bad_arguments_with_status_3() {
    let plugin = echo();
    let calls = plugin.vtable().calls.expect("a 1.2 table");
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
    let (_task, waker) = new_task();
    let lent = abi::waker::lend(&waker);
    let request = c"{\"method\":\"GET\",\"path\":\"/\"}";
    let mut handle = std::ptr::null_mut();

    let out = (calls.start)(7, request.as_ptr(), NULL, NULL, &lent, &mut handle);
    assert!(out.is_null() && handle.is_null());
    let (code, message) = take_error();
    assert_eq!(code, abi::STATUS_INVALID_INPUT);
    assert!(message.contains("argument `hook` is 7"), "{message}");

    let out = (calls.start)(
        abi::HOOK_BEFORE_REQUEST,
        request.as_ptr(),
        NULL,
        NULL,
        std::ptr::null(),
        &mut handle,
    );
    assert!(out.is_null() && handle.is_null());
    assert_eq!(
        take_error(),
        (
            abi::STATUS_INVALID_INPUT,
            String::from("argument `waker` is NULL")
        )
    );

    let mut no_wake = lent;
    no_wake.wake = None;
    let out = (calls.start)(
        abi::HOOK_BEFORE_REQUEST,
        request.as_ptr(),
        NULL,
        NULL,
        &no_wake,
        &mut handle,
    );
    assert!(out.is_null() && handle.is_null());
    let (code, message) = take_error();
    assert_eq!(code, abi::STATUS_INVALID_INPUT);
    assert!(message.contains("NULL `wake`"), "{message}");

    // A request that is not JSON: invalid input, as for the synchronous hook.
    let out = (calls.start)(
        abi::HOOK_BEFORE_REQUEST,
        c"not json".as_ptr(),
        NULL,
        NULL,
        &lent,
        &mut handle,
    );
    assert!(out.is_null() && handle.is_null());
    assert_eq!(take_error().0, abi::STATUS_INVALID_INPUT);

    // And a good call after all that: before_request rewrites (echo).
    let out = (calls.start)(
        abi::HOOK_BEFORE_REQUEST,
        request.as_ptr(),
        NULL,
        NULL,
        &lent,
        &mut handle,
    );
    assert!(handle.is_null(), "a rewrite does not wait");
    assert!(!out.is_null());
    (plugin.vtable().free_string)(out);
    plugin.shutdown().unwrap();
}
