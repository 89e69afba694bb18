//! deploybot: deploy a testing instance of a multi-repository service from
//! pull requests. See README.md for the architecture.

pub mod actions;
pub mod admin;

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod domain;
pub mod github;
pub mod heal;
pub mod http;
pub mod installations;
pub mod intake;
pub mod mask;
pub mod metrics;
pub mod ops;
pub mod quote;
pub mod registry;

pub mod pipeline;
pub mod receive;
pub mod report;
pub mod settings;
pub mod status;
pub mod store;
pub mod web;
/// Signing and verifying deliveries, as `deploybot receive`, the fuzzers and
/// the tests use them.
pub use web::webhook;

pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::github::GitHub;
use crate::intake::Intake;
use crate::pipeline::Pipeline;
use crate::report::Reporter;
use crate::settings::Settings;
use crate::store::Store;
use crate::web::AppState;
use crate::worker::{Worker, WorkerSettings};

/// One deploybot process: storage, GitHub access, intake and reporter.
pub struct App {
    pub state: Arc<AppState>,
    pub intake: Arc<Intake>,
    pub reporter: Arc<Reporter>,
    pub pipeline: Arc<Pipeline>,
    pub worker: Arc<Worker>,
    pub healer: Arc<heal::Healer>,
    /// When this process started (store time).
    started_at: i64,
}

impl App {
    /// Connect, migrate and wire everything; contacts no cluster and no GitHub.
    pub async fn new(settings: Settings, config: Config) -> Result<App, String> {
        settings.protect_secrets();
        let store = Store::connect(&settings.database_url)
            .await
            .map_err(|e| format!("cannot open the database: {e}"))?;
        store.migrate().await.map_err(|e| e.to_string())?;
        store.set_heartbeat_every(Duration::from_millis(config.bot.heartbeat_ms));
        store
            .register_instance()
            .await
            .map_err(|e| format!("cannot register this process: {e}"))?;
        let github = match &settings.github {
            Some(gh) => Some(GitHub::new(gh)?),
            None => None,
        };
        let config = Arc::new(config);
        let intake = Arc::new(Intake::new(store.clone(), config.clone(), github.clone()));
        let healer = Arc::new(heal::Healer::new(
            store.clone(),
            config.clone(),
            github.clone(),
        ));
        let reporter = Arc::new(Reporter::new(store.clone(), github.clone(), config.clone()));
        store
            .ensure_environments(
                &config
                    .environments
                    .iter()
                    .map(|e| e.name.clone())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let pipeline = Arc::new(Pipeline::new(
            store.clone(),
            config.clone(),
            github,
            settings.kube_url.clone(),
        ));
        let worker = Arc::new(Worker::new(
            pipeline.clone(),
            WorkerSettings::with_lease(Duration::from_millis(config.bot.worker_lease_ms)),
        ));
        let streams = web::limits::Streams::new(&config.web);
        let token_failures = web::limits::TokenFailures::new(&config.web);
        let state = Arc::new(AppState {
            store,
            actions: Arc::new(crate::actions::Actions::new(intake.clone())),
            config,
            settings,
            wake: Arc::new(Notify::new()),
            jobs_wake: Arc::new(Notify::new()),
            streams,
            token_failures,
        });
        let started_at = state.store.now_ms();
        Ok(App {
            state,
            intake,
            reporter,
            pipeline,
            worker,
            healer,
            started_at,
        })
    }

    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Process triggers, jobs and reports until nothing is due (tests drive
    /// the app with this).
    pub async fn run_until_idle(&self) -> Result<(), store::StoreError> {
        self.run_until_idle_with(true).await
    }

    /// Like [`App::run_until_idle`], optionally without running jobs.
    pub async fn run_until_idle_with(&self, jobs: bool) -> Result<(), store::StoreError> {
        loop {
            let triggers = self.intake.run_until_idle().await?;
            if triggers > 0 {
                self.state.jobs_wake.notify_one();
            }
            let ran = if jobs {
                self.worker.run_until_idle().await?
            } else {
                0
            };
            let reports = self.reporter.run_until_idle().await?;
            if triggers == 0 && ran == 0 && reports == 0 {
                return Ok(());
            }
        }
    }

    /// The background work of `serve`: intake and reporter in one loop, jobs
    /// in another (a long deployment never delays an acknowledgement). Each is
    /// woken after a commit, with a slow poll as a safety net (and for retries
    /// that come due). Ends when `shutdown` flips, after a last drain.
    pub async fn run_background(&self, shutdown: watch::Receiver<bool>, jobs: bool) {
        let heal = self.healer.run(self.started_at, shutdown.clone());
        let work = self.intake_and_report(shutdown, jobs);
        // Boxed: the whole process's work is one large future.
        self.beating_while(Box::pin(async {
            tokio::join!(heal, work);
        }))
        .await;
    }

    /// Beat while `work` runs, to its very end (a last drain, the running
    /// step), then unregister: what this process claimed stays its own
    /// until it is done with it.
    async fn beating_while(&self, work: impl std::future::Future<Output = ()>) {
        let (done, stopped) = watch::channel(false);
        let beat = self.beat(stopped);
        let work = async {
            work.await;
            let _ = done.send(true);
        };
        tokio::join!(beat, work);
        self.retire().await;
    }

    /// The intake and the reporter, each in a loop of its own (a slow
    /// GitHub write never delays the next delivery's authorisation): the
    /// intake is woken by deliveries and wakes the reporter after each
    /// trigger (its acknowledgement is a report); both poll as a safety net.
    async fn intake_and_report(&self, shutdown: watch::Receiver<bool>, jobs: bool) {
        let wake = self.state.wake.clone();
        let reports_wake = Notify::new();
        let poll = Duration::from_secs(2);
        let intake = async {
            let mut shutdown = shutdown.clone();
            loop {
                let processed = async {
                    while self.intake.step().await? {
                        reports_wake.notify_one();
                        self.state.jobs_wake.notify_one();
                    }
                    self.intake.check_confirmations().await
                };
                match processed.await {
                    Ok(n) if n > 0 => reports_wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "intake failed; retrying shortly"),
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        };
        let reporter = async {
            let mut shutdown = shutdown.clone();
            loop {
                if let Err(e) = self.reporter.run_until_idle().await {
                    tracing::error!(error = %e, "reporter failed; retrying shortly");
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = reports_wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        };
        let worker = async {
            if !jobs {
                return;
            }
            self.work(shutdown.clone()).await;
        };
        tokio::join!(intake, reporter, worker);
        // What the last running step reported goes out before the process
        // ends (status edits that wait for the status interval included).
        let interval = i64::try_from(self.state.config.bot.status_interval_ms).unwrap_or(0);
        if let Err(e) = self.state.store.expedite_reports(interval.max(1)).await {
            tracing::warn!(error = %e, "could not expedite reports before stopping");
        }
        if let Err(e) = self.run_until_idle_with(false).await {
            tracing::warn!(error = %e, "could not drain the outbox before stopping");
        }
    }

    /// Run jobs until `shutdown` flips (`deploybot worker`), beating all along.
    pub async fn run_worker(&self, shutdown: watch::Receiver<bool>) {
        self.beating_while(Box::pin(self.work(shutdown))).await;
    }

    /// Tell the database every `bot.heartbeat_ms` that this process is alive
    /// (what it claimed stays its own), until `stop` flips.
    async fn beat(&self, mut stop: watch::Receiver<bool>) {
        let store = &self.state.store;
        let every = store.heartbeat_every();
        let mut forgot: Option<std::time::Instant> = None;
        loop {
            if let Err(e) = store.beat().await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            // Once an hour, forget processes gone for a day.
            if forgot.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                forgot = Some(std::time::Instant::now());
                if let Err(e) = store.forget_instances(24 * 3_600_000).await {
                    tracing::warn!(error = %e, "cannot forget old instances");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// A clean stop: what this process still claims is free for the others.
    async fn retire(&self) {
        if let Err(e) = self.state.store.retire_instance().await {
            tracing::warn!(error = %e, "cannot unregister this process");
        }
    }

    /// Run jobs until `shutdown` flips: woken by new jobs in this process
    /// (and, on PostgreSQL, by other processes), with a poll as a safety net.
    async fn work(&self, shutdown: watch::Receiver<bool>) {
        // Dead processes' requests are taken over at every heartbeat; holds
        // expire and Leases are checked less often. Both go on while a long
        // job runs.
        let beat = self.state.store.heartbeat_every();
        let every = (Duration::from_millis(self.state.config.bot.worker_lease_ms) / 2)
            .min(Duration::from_secs(10))
            .max(beat);
        let maintenance = async {
            let mut shutdown = shutdown.clone();
            let mut last_full: Option<std::time::Instant> = None;
            loop {
                let full = last_full.is_none_or(|t| t.elapsed() >= every);
                let done = if full {
                    last_full = Some(std::time::Instant::now());
                    self.worker.maintain().await
                } else {
                    self.worker.reap_dead().await
                };
                match done {
                    Ok(n) if n > 0 => self.state.jobs_wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "maintenance failed; retrying shortly"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(beat) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        };
        tokio::join!(maintenance, self.run_jobs(shutdown.clone()));
    }

    async fn run_jobs(&self, mut shutdown: watch::Receiver<bool>) {
        let jobs_wake = self.state.jobs_wake.clone();
        let mut listener = match self.state.store.listen().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for new jobs; polling only");
                None
            }
        };
        loop {
            if let Err(e) = self.worker.run_until_idle().await {
                tracing::error!(error = %e, "worker failed; retrying shortly");
            }
            if *shutdown.borrow() {
                return;
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => {
                        if l.recv().await.is_err() {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = jobs_wake.notified() => {}
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
