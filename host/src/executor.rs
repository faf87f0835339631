//! The threads that run plugin hooks: a small pool that batches under load
//! and grows when its jobs wait.
//!
//! Hooks are plugin code: they may block, be slow, or hang for ever, so they
//! never run on a tokio worker. Handing each request to a fresh blocking
//! thread (tokio's `spawn_blocking`) is safe but costs a futex wake and two
//! context switches per request, most of a small server's CPU. This pool
//! instead keeps a few *runners* that take jobs from one queue and go to
//! sleep only when it is empty, so under load a runner drains a batch of
//! requests without a single wake-up.
//!
//! A runner stuck in a hook (hung or merely slow) must not hold up the
//! queue behind it. A watchdog thread looks at the queue while there is
//! work (at most every [`GROW_TICK`]): when the oldest job has waited
//! [`GROW_AFTER`] or more, it starts another runner (up to
//! [`MAX_RUNNERS`]). Runners beyond the base count that stay idle for
//! [`IDLE_RETIRE`] exit. A hung runner is simply left blocked: its
//! request's 504 comes from the caller's deadline (see `pipeline`), and the
//! queue goes on with the runners started after it.
//!
//! Invariants:
//! - a job is run at most once, by one runner;
//! - a panic in a job is caught: the runner survives, and the job's
//!   receiver sees its sender dropped;
//! - while jobs wait and fewer than [`MAX_RUNNERS`] runners exist, no job
//!   waits much longer than [`GROW_AFTER`] + [`GROW_TICK`] for a runner,
//!   whatever the running hooks do.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long the oldest job may wait before the watchdog adds a runner.
pub(crate) const GROW_AFTER: Duration = Duration::from_millis(2);
/// The least time between two looks of the watchdog at the queue.
pub(crate) const GROW_TICK: Duration = Duration::from_millis(1);
/// How long a runner beyond the base count may stay idle before it exits.
pub(crate) const IDLE_RETIRE: Duration = Duration::from_secs(10);
/// The most runners there can be, hung ones included (as tokio's blocking
/// pool).
pub(crate) const MAX_RUNNERS: usize = 512;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Waiting jobs with the time each was queued.
    jobs: VecDeque<(Instant, Job)>,
    /// Runners alive (idle, running or hung).
    runners: usize,
    /// Runners waiting for a job.
    idle: usize,
    /// The watchdog is parked until a job arrives.
    watchdog_parked: bool,
    /// The executor was dropped: threads exit once the queue is empty.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Runners wait here for jobs.
    work: Condvar,
    /// The watchdog parks here while the queue is empty.
    watch: Condvar,
    /// Runners kept even when idle.
    base: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and the code under it does not panic,
        // so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hook runner pool. Cloning gives another handle to the same pool; the
/// threads stop when the last handle is dropped and the queue is empty.
#[derive(Clone)]
pub(crate) struct HookExecutor {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Closes the pool when the last [`HookExecutor`] handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_all();
        self.0.watch.notify_all();
    }
}

impl std::fmt::Debug for HookExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("HookExecutor")
            .field("base", &self.shared.base)
            .field("runners", &state.runners)
            .field("idle", &state.idle)
            .field("queued", &state.jobs.len())
            .finish()
    }
}

impl HookExecutor {
    /// A pool that keeps `base` runners (at least one) and grows when jobs
    /// wait. Fails when the OS refuses the watchdog thread (a runner it
    /// refuses is started later by the watchdog, when jobs wait).
    pub(crate) fn new(base: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            watch: Condvar::new(),
            base: base.max(1),
        });
        for _ in 0..shared.base {
            start_runner(&shared);
        }
        let watchdog = Arc::clone(&shared);
        // Created first, so that a refused watchdog still closes the
        // runners already started.
        let owner = Arc::new(Owner(Arc::clone(&shared)));
        std::thread::Builder::new()
            .name("backworks-hook-watchdog".to_owned())
            .spawn(move || watch(&watchdog))?;
        Ok(Self {
            _owner: owner,
            shared,
        })
    }

    /// Queues `job` and returns a receiver for its result. The receiver sees
    /// an error when the job panicked (or the pool closed before running it).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver may be gone (the request timed out): nothing to do.
            let _ = sender.send(job());
        });
        let mut state = self.shared.lock();
        state.jobs.push_back((Instant::now(), job));
        let wake_runner = state.idle > 0;
        let wake_watchdog = std::mem::take(&mut state.watchdog_parked);
        drop(state);
        if wake_runner {
            self.shared.work.notify_one();
        }
        if wake_watchdog {
            self.shared.watch.notify_one();
        }
        receiver
    }

    /// Runners alive now, hung ones included.
    #[cfg(test)]
    pub(crate) fn runners(&self) -> usize {
        self.shared.lock().runners
    }
}

/// Starts a runner; the caller has checked [`MAX_RUNNERS`]. When the OS
/// refuses the thread, the queue waits for the runners there are (and the
/// watchdog tries again).
fn start_runner(shared: &Arc<Shared>) {
    let mut state = shared.lock();
    state.runners += 1;
    let id = state.runners;
    drop(state);
    let runner = Arc::clone(shared);
    let started = std::thread::Builder::new()
        .name(format!("backworks-hook-{id}"))
        .spawn(move || run(&runner));
    if started.is_err() {
        shared.lock().runners -= 1;
        tracing::error!("could not start a hook thread; requests wait for the running ones");
    }
}

/// A runner: takes jobs until the pool closes or it has been idle too long
/// while more than `base` runners exist.
fn run(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some((_, job)) = state.jobs.pop_front() {
            drop(state);
            // A panic here is a host bug (plugins' panics are caught at the
            // ABI); the job's sender is dropped, which its receiver reports.
            let _ = catch_unwind(AssertUnwindSafe(job));
            state = shared.lock();
            continue;
        }
        if state.closed {
            break;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .work
            .wait_timeout(state, IDLE_RETIRE)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() && state.runners > shared.base {
            break;
        }
    }
    state.runners -= 1;
}

/// The watchdog: adds a runner whenever the oldest job has waited
/// [`GROW_AFTER`]; parks while the queue is empty.
fn watch(shared: &Arc<Shared>) {
    loop {
        let mut state = shared.lock();
        if state.closed {
            return;
        }
        if state.jobs.is_empty() {
            state.watchdog_parked = true;
            while state.watchdog_parked && !state.closed {
                state = shared
                    .watch
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            continue;
        }
        let oldest = state
            .jobs
            .front()
            .map_or(Duration::ZERO, |(queued, _)| queued.elapsed());
        let can_grow = state.runners < MAX_RUNNERS && state.idle == 0;
        drop(state);
        if oldest >= GROW_AFTER && can_grow {
            start_runner(shared);
            std::thread::sleep(GROW_TICK);
        } else {
            // Under load the oldest job is usually fresh: sleep until it
            // would be overdue rather than tick at a fixed rate.
            std::thread::sleep(GROW_AFTER.saturating_sub(oldest).max(GROW_TICK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_every_job_once_and_returns_its_result() {
        let executor = HookExecutor::new(1).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let receivers: Vec<_> = (0..1000)
            .map(|i| {
                let count = Arc::clone(&count);
                executor.spawn(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                    i * 2
                })
            })
            .collect();
        let results: Vec<usize> = runtime().block_on(async {
            let mut out = Vec::new();
            for r in receivers {
                out.push(r.await.unwrap());
            }
            out
        });
        assert_eq!(results, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(count.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn a_panicking_job_reports_an_error_and_the_runner_survives() {
        let executor = HookExecutor::new(1).unwrap();
        let (told, thread) = mpsc::channel();
        let failed = executor.spawn(move || -> u32 {
            told.send(std::thread::current().id()).unwrap();
            panic!("host bug")
        });
        runtime().block_on(async { assert!(failed.await.is_err()) });
        let caught_it = thread.recv().unwrap();
        // The runner that caught the panic takes jobs again. On a busy
        // machine the watchdog may have added a runner meanwhile, so jobs
        // go out in batches until one of them runs there; only a hang
        // (that runner died) fails the deadline.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let batch: Vec<_> = (0..16)
                .map(|_| executor.spawn(|| std::thread::current().id()))
                .collect();
            let ran_on = runtime().block_on(async {
                let mut ran_on = Vec::new();
                for job in batch {
                    ran_on.push(job.await.unwrap());
                }
                ran_on
            });
            if ran_on.contains(&caught_it) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no job ran on the runner that caught the panic: {executor:?}"
            );
        }
    }

    #[test]
    fn a_hung_job_does_not_hold_up_the_queue() {
        let executor = HookExecutor::new(1).unwrap();
        let (release, hung) = mpsc::channel::<()>();
        // Occupies the only base runner until released.
        let stuck = executor.spawn(move || hung.recv().is_ok());
        let behind = executor.spawn(|| "served");
        // Served while the first job is still stuck (it is released only
        // below): the queue was not held up. The timeout only catches a
        // hang; how soon a runner grows depends on the machine's load.
        let answer = runtime()
            .block_on(async { tokio::time::timeout(Duration::from_secs(300), behind).await });
        assert_eq!(answer.unwrap().unwrap(), "served");
        assert!(executor.runners() >= 2, "{executor:?}");
        release.send(()).unwrap();
        assert!(runtime().block_on(stuck).unwrap());
    }

    #[test]
    fn many_hung_jobs_each_get_a_runner() {
        let executor = HookExecutor::new(1).unwrap();
        let (release, hung) = mpsc::channel::<()>();
        let hung = Arc::new(Mutex::new(hung));
        let gate = Arc::new(std::sync::Barrier::new(6));
        // Five jobs that all block until every one of them has started:
        // only possible when the pool has grown to five runners.
        let jobs: Vec<_> = (0..5)
            .map(|_| {
                let (gate, hung) = (Arc::clone(&gate), Arc::clone(&hung));
                executor.spawn(move || {
                    gate.wait();
                    let _ = hung.lock().unwrap().recv();
                })
            })
            .collect();
        gate.wait();
        assert!(executor.runners() >= 5, "{executor:?}");
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        runtime().block_on(async {
            for job in jobs {
                job.await.unwrap();
            }
        });
    }
}
