//! The domain's nouns: a request (`Job`) with its typed state and steps, the
//! plan it deploys, and the reports it owes GitHub. Pure data and rules on
//! it; no storage, no network (the store and the operations build on this).

pub mod button;
pub mod freeze;
pub mod job;
pub mod outbox;
pub mod plan;
pub mod state;

pub use button::{Button, EXTEND_BY};
pub use freeze::Freeze;
pub use job::{ANY_ENVIRONMENT, Job, JobEvent, JobFilter, NewJob, PullRef};
pub use outbox::Report;
pub use state::{Conclusion, Confirmation, JobState, Outcome, Source, Step};
