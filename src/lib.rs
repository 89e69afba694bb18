//! deploybot: deploy a testing instance of a multi-repository service from
//! pull requests. See README.md for the architecture.

pub mod auth;
pub mod command;
pub mod config;
pub mod github;
pub mod intake;
pub mod pipeline;
pub mod receive;
pub mod report;
pub mod settings;
pub mod store;
pub mod web;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::github::GitHub;
use crate::intake::Intake;
use crate::report::Reporter;
use crate::settings::Settings;
use crate::store::Store;
use crate::web::AppState;

/// One deploybot process: storage, GitHub access, intake and reporter.
pub struct App {
    pub state: Arc<AppState>,
    pub intake: Arc<Intake>,
    pub reporter: Arc<Reporter>,
}

impl App {
    /// Connect, migrate and wire everything; contacts no cluster and no GitHub.
    pub async fn new(settings: Settings, config: Config) -> Result<App, String> {
        let store = Store::connect(&settings.database_url)
            .await
            .map_err(|e| format!("cannot open the database: {e}"))?;
        store.migrate().await.map_err(|e| e.to_string())?;
        let github = match &settings.github {
            Some(gh) => Some(GitHub::new(gh)?),
            None => None,
        };
        let config = Arc::new(config);
        let intake = Arc::new(Intake::new(store.clone(), config.clone(), github.clone()));
        let reporter = Arc::new(Reporter::new(store.clone(), github));
        let state = Arc::new(AppState {
            store,
            config,
            settings,
            wake: Arc::new(Notify::new()),
        });
        Ok(App {
            state,
            intake,
            reporter,
        })
    }

    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Process triggers and reports until idle (tests drive the app with this).
    pub async fn run_until_idle(&self) -> Result<(), store::StoreError> {
        loop {
            let triggers = self.intake.run_until_idle().await?;
            let reports = self.reporter.run_until_idle().await?;
            if triggers == 0 && reports == 0 {
                return Ok(());
            }
        }
    }

    /// The background loop: woken by the webhook, with a slow poll as a
    /// safety net (and for retries that come due). Ends when `shutdown` flips,
    /// after a last drain.
    pub async fn run_background(&self, mut shutdown: watch::Receiver<bool>) {
        let wake = self.state.wake.clone();
        loop {
            if let Err(e) = self.run_until_idle().await {
                tracing::error!(error = %e, "background work failed; retrying shortly");
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
