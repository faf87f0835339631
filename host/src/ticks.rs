//! A coarse clock for deadlines that every request has and few reach: the
//! hook deadline (`pipeline`) and the wait for a request head
//! (`http_serve`).
//!
//! A tokio timer per request costs its insert, re-registration and removal
//! in the timer wheel, under the driver's lock, on every request: measured
//! at about 8 % of the server's throughput for the hook deadline and 5 %
//! for the head wait (issue 15 note). Instead, one task per clock wakes
//! every waiter once per period, and each waiter looks at its own deadline:
//! a request registers on one wait list, and a deadline is seen at most one
//! period late. The task ends at the first tick after the last handle to
//! the clock is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// How many times per deadline length a clock ticks: a deadline is seen at
/// most this fraction of its length late.
pub(crate) const TICKS_PER_DEADLINE: u32 = 16;

/// Starts a clock on `runtime` for deadlines of `shortest` length or more:
/// it ticks every `shortest / TICKS_PER_DEADLINE` (at least 1 ms). Returns
/// the ticks to wait on (`notified()` resolves at the next tick).
pub(crate) fn start(runtime: &Handle, shortest: Duration) -> Arc<Notify> {
    let period = (shortest / TICKS_PER_DEADLINE).max(Duration::from_millis(1));
    let ticks = Arc::new(Notify::new());
    let weak = Arc::downgrade(&ticks);
    drop(runtime.spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match weak.upgrade() {
                Some(ticks) => ticks.notify_waiters(),
                None => return,
            }
        }
    }));
    ticks
}

pin_project_lite::pin_project! {
    /// A sleep until `deadline` on a clock's ticks: resolves at the first
    /// tick at or after the deadline.
    #[derive(Debug)]
    pub(crate) struct CoarseSleep {
        deadline: Instant,
        ticks: Arc<Notify>,
        #[pin]
        tick: OwnedNotified,
    }
}

impl CoarseSleep {
    /// A sleep until `deadline` on `ticks`.
    pub(crate) fn until(ticks: &Arc<Notify>, deadline: Instant) -> Self {
        Self {
            deadline,
            ticks: Arc::clone(ticks),
            tick: Arc::clone(ticks).notified_owned(),
        }
    }

    /// Moves the deadline (later or earlier).
    pub(crate) fn reset(self: Pin<&mut Self>, deadline: Instant) {
        *self.project().deadline = deadline;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if Instant::now() >= *this.deadline {
                return Poll::Ready(());
            }
            match this.tick.as_mut().poll(cx) {
                // A tick: wait for the next one, then look again.
                Poll::Ready(()) => this.tick.set(Arc::clone(this.ticks).notified_owned()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coarse_sleep_ends_at_a_tick_after_its_deadline_and_the_clock_with_its_last_handle() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A tick every 5 ms.
            let ticks = start(&Handle::current(), Duration::from_millis(80));
            let started = Instant::now();
            let deadline = started + Duration::from_millis(50);
            CoarseSleep::until(&ticks, deadline).await;
            // Never early (how late depends on the machine's load).
            assert!(Instant::now() >= deadline);

            // A deadline moved earlier is seen at the next tick.
            {
                let mut sleep = std::pin::pin!(CoarseSleep::until(
                    &ticks,
                    Instant::now() + Duration::from_secs(3600)
                ));
                sleep.as_mut().reset(Instant::now());
                sleep.await;
            }

            // The clock's task ends once no handle is left: then the
            // runtime has no task alive.
            drop(ticks);
            let metrics = Handle::current().metrics();
            let deadline = Instant::now() + Duration::from_secs(60);
            while metrics.num_alive_tasks() > 0 {
                assert!(Instant::now() < deadline, "the clock's task never ended");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
}
