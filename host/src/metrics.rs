//! The host's Prometheus metrics: plugin hook calls and HTTP requests,
//! recorded from any thread and rendered in the Prometheus text format for a
//! `/metrics` endpoint.
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `backworks_hook_calls_total` | counter | `plugin`, `hook`, `outcome` (`ok`, `error`, `panic`, `timeout`) |
//! | `backworks_hook_errors_total` | counter | `plugin`, `hook` (every outcome but `ok`) |
//! | `backworks_hook_duration_seconds` | histogram | `plugin`, `hook` |
//! | `backworks_http_requests_total` | counter | `method`, `status` |
//! | `backworks_plugin_swaps_total` | counter | `plugin`, `outcome` (`replaced`, `unchanged`, `refused`) |
//! | `backworks_http_request_duration_seconds` | histogram | none |
//!
//! Both histograms have buckets from 10 µs to 10 s (1-2.5-5 steps). A
//! family's series appear once something has been recorded for its labels.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s output: the Prometheus text
/// exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the duration histograms' buckets (an
/// implicit `+Inf` bucket follows): 10 µs to 10 s in 1-2.5-5 steps.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a plugin hook call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It returned successfully.
    Ok,
    /// It returned an error.
    Error,
    /// It panicked (caught at the boundary).
    Panic,
    /// The host stopped waiting for it.
    Timeout,
    /// Its worker process ended while it ran (`process` tier), or the
    /// plugin's worker is unavailable.
    Crash,
}

impl Outcome {
    /// The `outcome` label value: `ok`, `error`, `panic`, `timeout` or
    /// `crash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Crash => "crash",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    hook: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HookCallLabels {
    plugin: String,
    hook: String,
    outcome: Outcome,
}

/// How an attempt to replace a running plugin ended (see `swap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwapOutcome {
    /// The new implementation serves every request started since.
    Replaced,
    /// The file held the bytes already running: nothing was done.
    Unchanged,
    /// The replacement was refused or failed to start; the running
    /// implementation keeps serving.
    Refused,
}

impl SwapOutcome {
    /// The `outcome` label value: `replaced`, `unchanged` or `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
        }
    }
}

impl EncodeLabelValue for SwapOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SwapLabels {
    plugin: String,
    outcome: SwapOutcome,
}

/// A worker event of the `process` tier: its plugin and cause (a crash's
/// `signal`, `exit`, `protocol`; a kill's `hung`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    plugin: String,
    cause: String,
}

/// A worker restart of the `process` tier: its plugin and whether the new
/// worker started (`ok`, `failed`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RestartLabels {
    plugin: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

/// The standard methods, each its own `method` label value.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `method` label value: the standard methods as they are, anything
/// else `OTHER`, so clients cannot grow the number of series at will.
fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .get(method_index(method))
        .copied()
        .unwrap_or("OTHER")
}

/// The position of `method` in [`KNOWN_METHODS`]; `KNOWN_METHODS.len()`
/// for `OTHER`.
fn method_index(method: &str) -> usize {
    KNOWN_METHODS
        .iter()
        .position(|known| *known == method)
        .unwrap_or(KNOWN_METHODS.len())
}

/// The statuses whose request counters are cached (every valid one).
const STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

/// The `backworks_http_requests_total` counters already resolved, by method
/// (each `KNOWN_METHODS` index, then `OTHER`) and status, so that counting
/// a request costs no label hashing and no lock once its series exists.
/// A method's row is made when the method is first seen.
#[derive(Debug, Default)]
struct RequestCounters([OnceLock<Box<[OnceLock<Counter>]>>; KNOWN_METHODS.len() + 1]);

impl RequestCounters {
    /// The cached counter for (`method`, `status`), resolved from `family`
    /// the first time; `None` for a status outside [`STATUSES`].
    fn get(
        &self,
        family: &Family<RequestLabels, Counter>,
        method: &str,
        status: u16,
    ) -> Option<&Counter> {
        if !STATUSES.contains(&status) {
            return None;
        }
        let index = method_index(method);
        let row = self.0[index].get_or_init(|| {
            (0..STATUSES.len())
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let cell = &row[usize::from(status - STATUSES.start())];
        Some(cell.get_or_init(|| {
            family
                .get_or_create(&RequestLabels {
                    method: method_label(method),
                    status,
                })
                .clone()
        }))
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn worker(plugin: &str, cause: &str) -> WorkerLabels {
    WorkerLabels {
        plugin: plugin.to_owned(),
        cause: cause.to_owned(),
    }
}

/// The host's metrics registry.
///
/// `Send + Sync`: share one (e.g. in an `Arc`) and record from any thread.
/// Recording takes a read lock on the family (a write lock only the first
/// time a label set is seen) and updates atomics or a short mutex; a
/// request's counter, once its series exists, only atomics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    hook_calls: Family<HookCallLabels, Counter>,
    hook_errors: Family<HookLabels, Counter>,
    hook_duration: Family<HookLabels, Histogram>,
    http_requests: Family<RequestLabels, Counter>,
    request_counters: RequestCounters,
    http_duration: Histogram,
    swaps: Family<SwapLabels, Counter>,
    inline_blocked: Family<HookLabels, Counter>,
    worker_crashes: Family<WorkerLabels, Counter>,
    worker_kills: Family<WorkerLabels, Counter>,
    worker_restarts: Family<RestartLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered and no series yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let hook_calls = Family::<HookCallLabels, Counter>::default();
        registry.register(
            "backworks_hook_calls",
            "Plugin hook calls, by plugin, hook and outcome",
            hook_calls.clone(),
        );
        let hook_errors = Family::<HookLabels, Counter>::default();
        registry.register(
            "backworks_hook_errors",
            "Plugin hook calls that returned an error, panicked or timed out",
            hook_errors.clone(),
        );
        let hook_duration =
            Family::<HookLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        registry.register_with_unit(
            "backworks_hook_duration",
            "Time spent in plugin hook calls",
            Unit::Seconds,
            hook_duration.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "backworks_http_requests",
            "HTTP requests answered, by method and status",
            http_requests.clone(),
        );
        let http_duration = duration_histogram();
        registry.register_with_unit(
            "backworks_http_request_duration",
            "Time from receiving an HTTP request to having its response",
            Unit::Seconds,
            http_duration.clone(),
        );
        let swaps = Family::<SwapLabels, Counter>::default();
        registry.register(
            "backworks_plugin_swaps",
            "Attempts to replace a running plugin, by plugin and outcome",
            swaps.clone(),
        );
        let inline_blocked = Family::<HookLabels, Counter>::default();
        registry.register(
            "backworks_inline_hooks_blocked",
            "Hooks of inline plugins that kept a server worker busy past the watchdog's threshold",
            inline_blocked.clone(),
        );
        let worker_crashes = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "backworks_worker_crashes",
            "Worker processes of the process tier that ended on their own, by plugin and cause (signal-11, exit-3, protocol, ...)",
            worker_crashes.clone(),
        );
        let worker_kills = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "backworks_worker_kills",
            "Worker processes the host killed, by plugin and cause (hung: a hook ran past its deadline and did not stop)",
            worker_kills.clone(),
        );
        let worker_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "backworks_worker_restarts",
            "Worker processes started again after one ended, by plugin and outcome (ok, failed)",
            worker_restarts.clone(),
        );
        Self {
            registry,
            worker_crashes,
            worker_kills,
            worker_restarts,
            hook_calls,
            hook_errors,
            hook_duration,
            http_requests,
            request_counters: RequestCounters::default(),
            http_duration,
            swaps,
            inline_blocked,
        }
    }

    /// Records that a worker of `plugin` ended on its own (`cause`:
    /// `signal-N`, `exit-N`, `protocol`).
    pub fn observe_worker_crash(&self, plugin: &str, cause: &str) {
        self.worker_crashes
            .get_or_create(&worker(plugin, cause))
            .inc();
    }

    /// Records that the host killed a worker of `plugin` (`cause`: `hung`).
    pub fn observe_worker_kill(&self, plugin: &str, cause: &str) {
        self.worker_kills
            .get_or_create(&worker(plugin, cause))
            .inc();
    }

    /// Records a restart of a worker of `plugin` (`outcome`: `ok` or
    /// `failed`).
    pub fn observe_worker_restart(&self, plugin: &str, outcome: &'static str) {
        self.worker_restarts
            .get_or_create(&RestartLabels {
                plugin: plugin.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records that `hook` of the `inline` plugin `plugin` kept a server
    /// worker busy past the watchdog's threshold.
    pub fn observe_inline_blocked(&self, plugin: &str, hook: &str) {
        self.inline_blocked
            .get_or_create(&HookLabels {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
            })
            .inc();
    }

    /// Records one call of `hook` on `plugin` that took `elapsed` and ended
    /// with `outcome`.
    pub fn observe_hook(&self, plugin: &str, hook: &str, elapsed: Duration, outcome: Outcome) {
        let labels = HookLabels {
            plugin: plugin.to_owned(),
            hook: hook.to_owned(),
        };
        self.hook_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if outcome != Outcome::Ok {
            self.hook_errors.get_or_create(&labels).inc();
        }
        let HookLabels { plugin, hook } = labels;
        self.hook_calls
            .get_or_create(&HookCallLabels {
                plugin,
                hook,
                outcome,
            })
            .inc();
    }

    /// The series of `hook` on `plugin`, for recording its calls without a
    /// family lookup each time (the request pipeline's hot path).
    pub fn hook_series(self: &Arc<Self>, plugin: &str, hook: &'static str) -> HookSeries {
        HookSeries {
            metrics: Arc::clone(self),
            plugin: plugin.to_owned(),
            hook,
            ok: OnceLock::new(),
        }
    }

    /// Records one HTTP request with `method` answered with `status` after
    /// `elapsed`. Methods other than the nine standard ones are counted as
    /// `OTHER`.
    pub fn observe_request(&self, method: &str, status: u16, elapsed: Duration) {
        match self
            .request_counters
            .get(&self.http_requests, method, status)
        {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.http_requests
                    .get_or_create(&RequestLabels {
                        method: method_label(method),
                        status,
                    })
                    .inc();
            }
        }
        self.http_duration.observe(elapsed.as_secs_f64());
    }

    /// Records one attempt to replace `plugin` that ended with `outcome`.
    pub fn observe_swap(&self, plugin: &str, outcome: SwapOutcome) {
        self.swaps
            .get_or_create(&SwapLabels {
                plugin: plugin.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Every family in the Prometheus text exposition format (serve it with
    /// [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a `String` cannot fail, and the encoder's only error
        // of its own is for native-only histograms, which are never
        // registered here.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "metrics: cannot encode the registry");
            let _ = writeln!(text, "# metrics encoding failed: {error}");
        }
        text
    }
}

/// One plugin hook's series in a [`Metrics`]: records exactly what
/// [`Metrics::observe_hook`] records, but resolves the `ok` series on first
/// use and then updates them directly. (Failures take the general path;
/// they are rare.) Series still appear only once something is recorded.
#[derive(Debug)]
pub struct HookSeries {
    metrics: Arc<Metrics>,
    plugin: String,
    hook: &'static str,
    ok: OnceLock<(Histogram, Counter)>,
}

impl HookSeries {
    /// Records one call that took `elapsed` and ended with `outcome`.
    pub fn observe(&self, elapsed: Duration, outcome: Outcome) {
        if outcome != Outcome::Ok {
            self.metrics
                .observe_hook(&self.plugin, self.hook, elapsed, outcome);
            return;
        }
        let (duration, calls) = self.ok.get_or_init(|| {
            let labels = HookLabels {
                plugin: self.plugin.clone(),
                hook: self.hook.to_owned(),
            };
            let duration = self.metrics.hook_duration.get_or_create(&labels).clone();
            let calls = self
                .metrics
                .hook_calls
                .get_or_create(&HookCallLabels {
                    plugin: labels.plugin,
                    hook: labels.hook,
                    outcome: Outcome::Ok,
                })
                .clone();
            (duration, calls)
        });
        duration.observe(elapsed.as_secs_f64());
        calls.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn is_send_sync<T: Send + Sync>() {}

    #[test]
    fn metrics_is_send_and_sync() {
        is_send_sync::<Metrics>();
    }

    #[test]
    fn hook_series_records_what_observe_hook_records() {
        let direct = Arc::new(Metrics::new());
        let through = Arc::new(Metrics::new());
        let series = through.hook_series("weather", "before_request");
        assert!(!through.render().contains("backworks_hook"));
        for (elapsed, outcome) in [
            (Duration::from_micros(20), Outcome::Ok),
            (Duration::from_millis(3), Outcome::Ok),
            (Duration::from_micros(70), Outcome::Error),
            (Duration::from_secs(1), Outcome::Timeout),
            (Duration::ZERO, Outcome::Ok),
        ] {
            direct.observe_hook("weather", "before_request", elapsed, outcome);
            series.observe(elapsed, outcome);
        }
        // Series within a family come out in hash order: compare as sets.
        let lines = |text: String| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(lines(through.render()), lines(direct.render()));
    }

    #[test]
    fn families_appear_once_recorded() {
        let metrics = Metrics::new();
        let text = metrics.render();
        assert!(!text.contains("backworks_hook"), "{text}");
        assert!(
            text.contains("backworks_http_request_duration_seconds_count 0"),
            "{text}"
        );
        metrics.observe_hook("p", "shutdown", Duration::ZERO, Outcome::Panic);
        metrics.observe_request("GET", 200, Duration::ZERO);
        let text = metrics.render();
        for family in [
            "# TYPE backworks_hook_calls_total counter",
            "# TYPE backworks_hook_errors_total counter",
            "# TYPE backworks_hook_duration_seconds histogram",
            "# TYPE backworks_http_requests_total counter",
            "# TYPE backworks_http_request_duration_seconds histogram",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
    }

    #[test]
    fn hook_calls_from_many_threads_are_all_counted() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let outcome = if t == 0 && i % 10 == 0 {
                            Outcome::Error
                        } else {
                            Outcome::Ok
                        };
                        metrics.observe_hook(
                            "auth",
                            "before_request",
                            Duration::from_micros(40),
                            outcome,
                        );
                    }
                    metrics.observe_hook(
                        "weather",
                        "process_endpoint",
                        Duration::from_millis(3),
                        Outcome::Timeout,
                    );
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render();
        for line in [
            r#"backworks_hook_calls_total{plugin="auth",hook="before_request",outcome="ok"} 3900"#,
            r#"backworks_hook_calls_total{plugin="auth",hook="before_request",outcome="error"} 100"#,
            r#"backworks_hook_calls_total{plugin="weather",hook="process_endpoint",outcome="timeout"} 4"#,
            r#"backworks_hook_errors_total{plugin="auth",hook="before_request"} 100"#,
            r#"backworks_hook_errors_total{plugin="weather",hook="process_endpoint"} 4"#,
            r#"backworks_hook_duration_seconds_count{plugin="auth",hook="before_request"} 4000"#,
            // 40 µs falls in the 50 µs bucket and every one above it, not the 25 µs one.
            r#"backworks_hook_duration_seconds_bucket{plugin="auth",hook="before_request",le="2.5e-05"} 0"#,
            r#"backworks_hook_duration_seconds_bucket{plugin="auth",hook="before_request",le="5e-05"} 4000"#,
            r#"backworks_hook_duration_seconds_bucket{plugin="auth",hook="before_request",le="+Inf"} 4000"#,
            r#"backworks_hook_duration_seconds_bucket{plugin="weather",hook="process_endpoint",le="0.0025"} 0"#,
            r#"backworks_hook_duration_seconds_bucket{plugin="weather",hook="process_endpoint",le="0.005"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn only_failed_outcomes_count_as_errors() {
        let metrics = Metrics::new();
        for outcome in [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Panic,
            Outcome::Timeout,
        ] {
            metrics.observe_hook("p", "health_check", Duration::ZERO, outcome);
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"backworks_hook_errors_total{plugin="p",hook="health_check"} 3"#),
            "{text}"
        );
        for outcome in ["ok", "error", "panic", "timeout"] {
            let line = format!(
                r#"backworks_hook_calls_total{{plugin="p",hook="health_check",outcome="{outcome}"}} 1"#
            );
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn requests_are_counted_by_method_and_status() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", 200, Duration::from_millis(2));
        metrics.observe_request("GET", 200, Duration::from_millis(20));
        metrics.observe_request("POST", 401, Duration::from_micros(300));
        metrics.observe_request("BREW", 405, Duration::from_secs(30));
        metrics.observe_request("get", 404, Duration::ZERO);
        let text = metrics.render();
        for line in [
            r#"backworks_http_requests_total{method="GET",status="200"} 2"#,
            r#"backworks_http_requests_total{method="POST",status="401"} 1"#,
            r#"backworks_http_requests_total{method="OTHER",status="405"} 1"#,
            r#"backworks_http_requests_total{method="OTHER",status="404"} 1"#,
            "backworks_http_request_duration_seconds_count 5",
            r#"backworks_http_request_duration_seconds_bucket{le="0.0005"} 2"#,
            r#"backworks_http_request_duration_seconds_bucket{le="0.0025"} 3"#,
            r#"backworks_http_request_duration_seconds_bucket{le="0.025"} 4"#,
            r#"backworks_http_request_duration_seconds_bucket{le="10"} 4"#,
            r#"backworks_http_request_duration_seconds_bucket{le="+Inf"} 5"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("BREW"), "{text}");
    }

    #[test]
    fn swaps_are_counted_by_plugin_and_outcome() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("backworks_plugin_swaps_total{"));
        metrics.observe_swap("weather", SwapOutcome::Refused);
        metrics.observe_swap("weather", SwapOutcome::Replaced);
        metrics.observe_swap("weather", SwapOutcome::Refused);
        metrics.observe_swap("echo", SwapOutcome::Unchanged);
        let text = metrics.render();
        for line in [
            "# TYPE backworks_plugin_swaps_total counter",
            r#"backworks_plugin_swaps_total{plugin="weather",outcome="refused"} 2"#,
            r#"backworks_plugin_swaps_total{plugin="weather",outcome="replaced"} 1"#,
            r#"backworks_plugin_swaps_total{plugin="echo",outcome="unchanged"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.observe_hook("we\"ird\n", "h", Duration::ZERO, Outcome::Ok);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"backworks_hook_calls_total{plugin="we\"ird\n",hook="h",outcome="ok"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn content_type_is_prometheus_text() {
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
