//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4).
//! Counters and histograms live in this process; gauges that describe shared
//! state (jobs, queues, holds, the reporter's backlog) are read from the
//! database when scraped, so every replica reports the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Upper bounds (seconds) of the histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    signature_failures: AtomicU64,
    github_calls: Mutex<BTreeMap<String, u64>>,
    github_remaining: AtomicI64,
    steps: Mutex<BTreeMap<String, Histogram>>,
    queue_wait: Mutex<BTreeMap<String, Histogram>>,
    healed: Mutex<BTreeMap<(String, String), u64>>,
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        github_remaining: AtomicI64::new(-1),
        ..Metrics::default()
    })
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    if let Ok(mut map) = map.lock() {
        *map.entry(key).or_default() += 1;
    }
}

/// A webhook delivery answered: its event and what became of it.
pub fn webhook(event: &str, outcome: &str) {
    bump(
        &metrics().webhooks,
        (event.to_string(), outcome.to_string()),
    );
}

pub fn signature_failure() {
    metrics().signature_failures.fetch_add(1, Ordering::Relaxed);
}

/// A GitHub API call ended: `ok`, or the error status (`502`, `403`, ...) or `transport`.
pub fn github_call(outcome: &str) {
    bump(&metrics().github_calls, outcome.to_string());
}

/// GitHub said how many calls remain in the rate-limit window.
pub fn github_remaining(remaining: i64) {
    metrics()
        .github_remaining
        .store(remaining, Ordering::Relaxed);
}

/// A self-healing chore did something: `redelivered`, `requested`,
/// `ended`, or `failed`.
pub fn healed(chore: &str, outcome: &str) {
    bump(&metrics().healed, (chore.to_string(), outcome.to_string()));
}

/// A pipeline step took `seconds`.
pub fn step(step: &str, seconds: f64) {
    if let Ok(mut map) = metrics().steps.lock() {
        map.entry(step.to_string()).or_default().observe(seconds);
    }
}

/// A request waited `seconds` from acceptance until it held `environment`.
pub fn queue_wait(environment: &str, seconds: f64) {
    if let Ok(mut map) = metrics().queue_wait.lock() {
        map.entry(environment.to_string())
            .or_default()
            .observe(seconds);
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    key: &str,
    map: &BTreeMap<String, Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (k, h) in map {
        let k = label(k);
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{key}=\"{k}\",le=\"{bound}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{key}=\"{k}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{key}=\"{k}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{key}=\"{k}\"}} {}", h.count);
    }
}

/// A counter with two labels (`keys`), one line per pair seen.
fn counters2(
    out: &mut String,
    name: &str,
    help: &str,
    keys: (&str, &str),
    map: &Mutex<BTreeMap<(String, String), u64>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if let Ok(map) = map.lock() {
        for ((a, b), n) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{{{}=\"{}\",{}=\"{}\"}} {n}",
                keys.0,
                label(a),
                keys.1,
                label(b)
            );
        }
    }
}

/// The state read from the database at scrape time.
pub struct Shared {
    pub jobs_by_state: Vec<(String, i64)>,
    /// (environment, queued requests, held)
    pub environments: Vec<(String, i64, bool)>,
    pub reporter_backlog: i64,
    pub pending_triggers: i64,
}

/// Everything in the text format.
pub fn render(shared: &Shared) -> String {
    let m = metrics();
    let mut out = String::new();
    counters2(
        &mut out,
        "deploybot_webhooks_total",
        "Webhook deliveries by event and outcome.",
        ("event", "outcome"),
        &m.webhooks,
    );
    counters2(
        &mut out,
        "deploybot_self_healing_total",
        "What catching up and reconciling did, by chore and outcome.",
        ("chore", "outcome"),
        &m.healed,
    );
    let _ = writeln!(
        out,
        "# HELP deploybot_webhook_signature_failures_total Deliveries refused for a bad or missing signature.\n\
         # TYPE deploybot_webhook_signature_failures_total counter\n\
         deploybot_webhook_signature_failures_total {}",
        m.signature_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP deploybot_github_requests_total GitHub API calls by outcome (ok, an HTTP status, transport).\n# TYPE deploybot_github_requests_total counter"
    );
    if let Ok(map) = m.github_calls.lock() {
        for (outcome, n) in map.iter() {
            let _ = writeln!(
                out,
                "deploybot_github_requests_total{{outcome=\"{}\"}} {n}",
                label(outcome)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP deploybot_github_rate_limit_remaining Calls left in GitHub's rate-limit window (-1: not known yet).\n\
         # TYPE deploybot_github_rate_limit_remaining gauge\n\
         deploybot_github_rate_limit_remaining {}",
        m.github_remaining.load(Ordering::Relaxed)
    );
    if let Ok(map) = m.steps.lock() {
        histograms(
            &mut out,
            "deploybot_step_duration_seconds",
            "How long pipeline steps took.",
            "step",
            &map,
        );
    }
    if let Ok(map) = m.queue_wait.lock() {
        histograms(
            &mut out,
            "deploybot_queue_wait_seconds",
            "From acceptance until the request held its environment.",
            "environment",
            &map,
        );
    }
    let _ = writeln!(
        out,
        "# HELP deploybot_jobs Requests by state.\n# TYPE deploybot_jobs gauge"
    );
    for (state, n) in &shared.jobs_by_state {
        let _ = writeln!(out, "deploybot_jobs{{state=\"{}\"}} {n}", label(state));
    }
    let _ = writeln!(
        out,
        "# HELP deploybot_queue_length Requests waiting for an environment.\n# TYPE deploybot_queue_length gauge"
    );
    for (env, queued, _) in &shared.environments {
        let _ = writeln!(
            out,
            "deploybot_queue_length{{environment=\"{}\"}} {queued}",
            label(env)
        );
    }
    let _ = writeln!(
        out,
        "# HELP deploybot_environment_held 1 while a request holds the environment.\n# TYPE deploybot_environment_held gauge"
    );
    for (env, _, held) in &shared.environments {
        let _ = writeln!(
            out,
            "deploybot_environment_held{{environment=\"{}\"}} {}",
            label(env),
            i64::from(*held)
        );
    }
    let _ = writeln!(
        out,
        "# HELP deploybot_reporter_backlog Reports to GitHub not delivered yet.\n\
         # TYPE deploybot_reporter_backlog gauge\ndeploybot_reporter_backlog {}\n\
         # HELP deploybot_pending_triggers Accepted webhooks not yet authorised and applied.\n\
         # TYPE deploybot_pending_triggers gauge\ndeploybot_pending_triggers {}",
        shared.reporter_backlog, shared.pending_triggers
    );
    out
}
