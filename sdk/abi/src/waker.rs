//! The waker glue of ABI 1.2 (`docs/abi.md`, section 5b), both halves.
//!
//! - **Host half**: [`lend`] turns the `std::task::Waker` of the task that
//!   polls a plugin's call into a [`HostWaker`] lent to the plugin for the
//!   length of one `call_start` or `call_poll`. Its `clone` makes an owned
//!   copy (a boxed `Waker`), so a clone the plugin keeps stays valid after
//!   the call returned, after the call was finished or dropped, and on any
//!   thread; its `wake` is `wake_by_ref`; its `drop` releases an owned copy
//!   and does nothing for the lent one.
//! - **Plugin half**: [`with_lent`] shows a plugin's future the
//!   [`HostWaker`] it was given as a `std::task::Waker` without a clone
//!   (polling costs no allocation); cloning that waker clones the host's
//!   (one `clone` call), and each clone calls the host's `drop` exactly once
//!   when it is dropped or woken by value.
//!
//! Every function here is `extern "C"` or a `RawWakerVTable` entry: none
//! unwinds across the boundary (a panic in a host waker's `wake` aborts, as
//! any panic escaping an `extern "C"` function does).

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::task::{RawWaker, RawWakerVTable, Waker};

use crate::HostWaker;

/// The host half: `waker` lent to a plugin for one call. The returned
/// struct borrows `waker`: pass it only to a call that returns before
/// `waker` is dropped (the plugin clones what it keeps).
pub fn lend(waker: &Waker) -> HostWaker {
    HostWaker {
        data: std::ptr::from_ref(waker).cast(),
        clone: Some(host_clone),
        wake: Some(host_wake),
        drop: Some(host_drop_lent),
    }
}

extern "C" fn host_clone(data: *const c_void) -> HostWaker {
    // SAFETY: `data` is the `Waker` of a lent struct (alive for the call in
    // which the plugin may clone it) or of an owned copy (alive until its
    // `drop`, which the plugin calls after its last use): either way a live
    // `Waker`.
    let waker = unsafe { &*data.cast::<Waker>() };
    let owned = Box::into_raw(Box::new(waker.clone()));
    HostWaker {
        data: owned.cast_const().cast(),
        clone: Some(host_clone),
        wake: Some(host_wake),
        drop: Some(host_drop_owned),
    }
}

extern "C" fn host_wake(data: *const c_void) {
    // SAFETY: as in `host_clone`: a live `Waker`.
    let waker = unsafe { &*data.cast::<Waker>() };
    waker.wake_by_ref();
}

extern "C" fn host_drop_owned(data: *const c_void) {
    // SAFETY: an owned copy comes from `Box::into_raw` in `host_clone`, and
    // the plugin drops each copy once (the ABI's contract).
    drop(unsafe { Box::from_raw(data.cast::<Waker>().cast_mut()) });
}

extern "C" fn host_drop_lent(_data: *const c_void) {}

/// Which function of `waker` is NULL, if any: a plugin refuses such a
/// waker (status 3) before it polls anything with it.
pub fn missing_function(waker: &HostWaker) -> Option<&'static str> {
    if waker.clone.is_none() {
        Some("clone")
    } else if waker.wake.is_none() {
        Some("wake")
    } else if waker.drop.is_none() {
        Some("drop")
    } else {
        None
    }
}

/// The plugin half: runs `body` with `waker` seen as a `std::task::Waker`
/// (for a `std::task::Context`), without cloning it; clones of that waker
/// are the host's clones.
///
/// # Safety
/// `waker` is a struct the host passed to this call, valid for the call,
/// whose three functions are non-NULL ([`missing_function`] is `None`) and
/// keep the ABI's contract (callable from any thread; `clone` gives a waker
/// of the same kind; `drop` releases a clone once).
pub unsafe fn with_lent<R>(waker: &HostWaker, body: impl FnOnce(&Waker) -> R) -> R {
    let raw = RawWaker::new(std::ptr::from_ref(waker).cast(), &LENT);
    // SAFETY: `LENT`'s functions keep `RawWakerVTable`'s contract for a
    // `HostWaker` alive during `body` (this function's contract); the waker
    // is never dropped (`ManuallyDrop`) and only lent out by reference, so
    // it is never woken by value.
    let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
    body(&waker)
}

/// The `Waker` of the struct the host lent: never dropped, never woken by
/// value (only lent by reference).
static LENT: RawWakerVTable =
    RawWakerVTable::new(lent_clone, lent_wake_by_ref, lent_wake_by_ref, lent_drop);

/// A plugin's own clone of a host waker: a boxed [`HostWaker`] the host
/// made with `clone`.
static OWNED: RawWakerVTable =
    RawWakerVTable::new(owned_clone, owned_wake, owned_wake_by_ref, owned_drop);

/// A clone of `host` (by the host's `clone`) as an owned `RawWaker`.
fn clone_of(host: &HostWaker) -> RawWaker {
    let copy = match host.clone {
        Some(clone) => clone(host.data),
        // Checked non-NULL before any waker is built (`with_lent`'s
        // contract); a copy with no functions wakes nothing.
        None => HostWaker {
            data: std::ptr::null(),
            clone: None,
            wake: None,
            drop: None,
        },
    };
    RawWaker::new(Box::into_raw(Box::new(copy)).cast_const().cast(), &OWNED)
}

fn wake(host: &HostWaker) {
    if let Some(wake) = host.wake {
        wake(host.data);
    }
}

unsafe fn lent_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the lent `HostWaker`, alive while its `Waker` is
    // (`with_lent`).
    clone_of(unsafe { &*data.cast::<HostWaker>() })
}

unsafe fn lent_wake_by_ref(data: *const ()) {
    // SAFETY: as in `lent_clone`.
    wake(unsafe { &*data.cast::<HostWaker>() });
}

unsafe fn lent_drop(_data: *const ()) {}

unsafe fn owned_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a `Box<HostWaker>` from `clone_of`, alive until
    // `owned_drop` or `owned_wake`.
    clone_of(unsafe { &*data.cast::<HostWaker>() })
}

unsafe fn owned_wake(data: *const ()) {
    // SAFETY: as in `owned_clone`; waking by value consumes the waker.
    unsafe {
        owned_wake_by_ref(data);
        owned_drop(data);
    }
}

unsafe fn owned_wake_by_ref(data: *const ()) {
    // SAFETY: as in `owned_clone`.
    wake(unsafe { &*data.cast::<HostWaker>() });
}

unsafe fn owned_drop(data: *const ()) {
    // SAFETY: `data` comes from `Box::into_raw` in `clone_of` and the
    // `Waker` holding it is dropped once.
    let host = unsafe { Box::from_raw(data.cast::<HostWaker>().cast_mut()) };
    if let Some(drop) = host.drop {
        drop(host.data);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// A host task's waker that counts its wakes.
    #[derive(Default)]
    struct Task {
        wakes: AtomicUsize,
    }

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Task>, Waker) {
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        (task, waker)
    }

    /// What a plugin's future does with the waker of one poll: keeps
    /// `keep` clones.
    fn plugin_poll(waker: &Waker, keep: usize) -> Vec<Waker> {
        let lent = lend(waker);
        assert_eq!(missing_function(&lent), None);
        // SAFETY: `lent` lives for the call and has every function.
        unsafe { with_lent(&lent, |waker| (0..keep).map(|_| waker.clone()).collect()) }
    }

    #[test]
    fn clones_and_drops_balance() {
        let (task, waker) = task();
        let kept = plugin_poll(&waker, 3);
        assert_eq!(Arc::strong_count(&task), 5, "the waker and three clones");
        // A clone of a clone is one more host clone.
        let again = kept[0].clone();
        assert_eq!(Arc::strong_count(&task), 6);
        drop(again);
        drop(kept);
        assert_eq!(Arc::strong_count(&task), 2);
        // Polling without keeping the waker clones nothing.
        let kept = plugin_poll(&waker, 0);
        assert!(kept.is_empty());
        assert_eq!(Arc::strong_count(&task), 2);
        assert_eq!(task.wakes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn waking_by_reference_and_by_value_reaches_the_task_and_releases_once() {
        let (task, waker) = task();
        let mut kept = plugin_poll(&waker, 2);
        kept[0].wake_by_ref();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
        kept.pop().unwrap().wake();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 2);
        assert_eq!(Arc::strong_count(&task), 3, "the woken clone was released");
        // The lent waker wakes the task too, during the call.
        let lent = lend(&waker);
        // SAFETY: as in `plugin_poll`.
        unsafe { with_lent(&lent, Waker::wake_by_ref) };
        assert_eq!(task.wakes.load(Ordering::SeqCst), 3);
        drop(kept);
        assert_eq!(Arc::strong_count(&task), 2);
    }

    #[test]
    fn a_clone_wakes_from_another_thread() {
        let (task, waker) = task();
        let kept = plugin_poll(&waker, 1);
        std::thread::scope(|scope| {
            for clone in kept {
                scope.spawn(move || clone.wake());
            }
        });
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&task), 2);
    }

    #[test]
    fn a_clone_outlives_the_call_and_the_hosts_waker() {
        let (task, waker) = task();
        let kept = plugin_poll(&waker, 1);
        // The call is over and the host dropped its task's waker (the call
        // was finished or dropped): the plugin's clone is still valid.
        drop(waker);
        assert_eq!(Arc::strong_count(&task), 2);
        kept[0].wake_by_ref();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
        drop(kept);
        assert_eq!(Arc::strong_count(&task), 1, "every host clone released");
    }

    #[test]
    fn a_waker_without_a_function_is_named() {
        let (_task, waker) = task();
        let mut lent = lend(&waker);
        lent.wake = None;
        assert_eq!(missing_function(&lent), Some("wake"));
        lent.clone = None;
        assert_eq!(missing_function(&lent), Some("clone"));
    }
}
