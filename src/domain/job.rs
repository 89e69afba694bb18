//! A deployment request as the rest of deploybot sees it: decoded once, when
//! its row is read, into typed fields. Owns no storage (the store fills it).

use serde::Serialize;

use crate::command::DeployRequest;
use crate::domain::plan::{Pinned, Plan};
use crate::domain::state::{Conclusion, JobState, Source, Step};

/// The environment of a request that may take any environment of the pool
/// (chosen when it runs).
pub const ANY_ENVIRONMENT: &str = "*";

/// What the intake stores for a new request.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub source: Source,
    pub request: DeployRequest,
    pub requested_by: String,
    pub repo: String,
    pub number: Option<i64>,
    pub is_pull_request: bool,
    pub comment_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub delivery_id: Option<String>,
    pub environment: String,
    pub base: String,
    /// Every PR the request references: `owner/name`, number, and the head
    /// commit it was pinned to at acceptance (when known).
    pub pull_requests: Vec<PullRef>,
    /// Refs already pinned to commits (the pipeline pins the rest).
    pub pinned: Vec<Pinned>,
    pub queued_message: String,
}

/// A request, as stored (and as the API shows it).
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub state: JobState,
    pub source: Source,
    pub request: DeployRequest,
    pub requested_by: String,
    pub repo: String,
    pub number: Option<i64>,
    pub is_pull_request: bool,
    pub comment_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub environment: String,
    pub base: String,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The pipeline step the job is in (or ended in).
    pub step: Step,
    pub conclusion: Option<Conclusion>,
    pub pinned: Option<Vec<Pinned>>,
    pub plan: Option<Plan>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub max_attempts: i64,
}

impl Job {
    /// The refs pinned so far (empty before the pipeline's resolve step).
    pub fn pins(&self) -> &[Pinned] {
        self.pinned.as_deref().unwrap_or_default()
    }

    /// A lock (`/deploy lock`): it holds the environment and deploys nothing.
    pub fn is_lock(&self) -> bool {
        self.request.lock.is_some()
    }

    /// deploybot's own cleanup of its environment after a hold ended.
    pub fn is_restore(&self) -> bool {
        self.request.restore
    }

    /// Why the lock was taken, when it is a lock with a reason.
    pub fn lock_reason(&self) -> Option<&str> {
        self.request.lock.as_ref()?.reason.as_deref()
    }

    /// Asked for from this PR or issue.
    pub fn comes_from(&self, repo: &str, number: i64) -> bool {
        self.repo == repo && self.number == Some(number)
    }
}

/// One line of a request's history.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// Its number within the request: 1, 2, 3... in the order the events
    /// were committed (the event stream's `id:`, for `Last-Event-ID`).
    pub id: i64,
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub step: Step,
    pub message: String,
}

/// A PR a job references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef {
    pub repo: String,
    pub number: i64,
    pub head_sha: Option<String>,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub repo: Option<String>,
    pub number: Option<i64>,
    pub environment: Option<String>,
    pub limit: i64,
}
