//! The words of a request's life, typed: its state, how it ended, and the
//! steps its events are recorded under. Owns their spelling (in SQL, JSON and
//! text); knows nothing of storage or GitHub.

use serde::{Deserialize, Serialize};

/// A word enum: `as_str`, `FromStr` (the same words), `Display`, and serde
/// with the same spelling, so the database, the API and the code agree.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)*
                    _ => Err(UnknownWord { kind: stringify!($name), word: s.to_string() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A stored word that is not one of its enum's (a corrupt or newer row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not a known {kind}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
}

words! {
    /// Where a request is in its life. `Queued` and `Running` are active;
    /// the others are ends.
    pub enum JobState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        Superseded = "superseded",
    }
}

impl JobState {
    /// Not ended yet.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// How an ended request concluded (the `conclusion` column, and the
    /// check run's conclusion); `None` while it is active.
    pub fn conclusion(self) -> Option<Conclusion> {
        match self {
            JobState::Queued | JobState::Running => None,
            JobState::Succeeded => Some(Conclusion::Success),
            JobState::Failed => Some(Conclusion::Failure),
            JobState::TimedOut => Some(Conclusion::TimedOut),
            JobState::Cancelled => Some(Conclusion::Cancelled),
            JobState::Superseded => Some(Conclusion::Superseded),
        }
    }
}

words! {
    /// Where a question "confirm these commits?" stands.
    pub enum Confirmation {
        /// Asked; no permitted 👍 yet.
        Waiting = "waiting",
        /// A permitted user confirmed; the request is queued.
        Confirmed = "confirmed",
        /// Nobody confirmed in time; nothing was deployed.
        Expired = "expired",
    }
}

words! {
    /// How a request was asked for.
    pub enum Source {
        /// A `/deploy` comment.
        Comment = "comment",
        /// The deploy label on a PR.
        Label = "label",
        /// New commits on a labelled PR.
        Synchronize = "synchronize",
        /// "Re-run" on one of deploybot's check runs.
        Rerun = "rerun",
        /// The API (the `deploy` CLI).
        Cli = "cli",
        /// `deploy --local`.
        Local = "local",
        /// deploybot itself: the cleanup right after a hold ended.
        Restore = "restore",
    }
}

impl Source {
    /// How the status comment names it (a comment needs no word).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Source::Comment => None,
            Source::Label => Some("the deploy label"),
            Source::Synchronize => Some("new commits on a labelled pull request"),
            Source::Rerun => Some("a check run's Re-run"),
            Source::Cli => Some("the deploy CLI"),
            Source::Local => Some("deploy --local"),
            Source::Restore => Some("the environment's restore after its hold"),
        }
    }
}

words! {
    /// How an ended request concluded.
    pub enum Conclusion {
        Success = "success",
        Failure = "failure",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        Superseded = "superseded",
    }
}

words! {
    /// What a request is doing (the `step` column: the pipeline's steps in
    /// order), and what its events are recorded under (those steps and the
    /// moments between them).
    pub enum Step {
        Queued = "queued",
        Resolve = "resolve",
        Plan = "plan",
        Waiting = "waiting",
        Lock = "lock",
        Build = "build",
        Cleanup = "cleanup",
        Deploy = "deploy",
        /// The environment's checks after deploy (`[environment.verify]`).
        Verify = "verify",
        Hold = "hold",
        /// Events only: the pool chose an environment.
        Environment = "environment",
        /// Events only: someone asked a running request to stop.
        Cancel = "cancel",
        /// Events only: the environment's hold ended.
        Release = "release",
        /// Events only: a notice posted on the request's PR.
        Notice = "notice",
        /// Events only: the worker running it stopped.
        Worker = "worker",
        /// Events only: the request ended (its GitHub status is sent at once).
        End = "end",
    }
}

impl Step {
    /// The pipeline's steps, in the order a request goes through them.
    pub const PIPELINE: [Step; 10] = [
        Step::Queued,
        Step::Resolve,
        Step::Plan,
        Step::Waiting,
        Step::Lock,
        Step::Build,
        Step::Cleanup,
        Step::Deploy,
        Step::Verify,
        Step::Hold,
    ];

    /// A failure or stop during this step may have left the environment
    /// half-changed (it must be cleaned before the next deployment).
    pub fn dirties(self) -> bool {
        matches!(
            self,
            Step::Build | Step::Cleanup | Step::Deploy | Step::Verify
        )
    }

    /// A request that died in this step can simply run again from the start
    /// (nothing in the environment was changed yet).
    pub fn repeatable(self) -> bool {
        matches!(
            self,
            Step::Queued | Step::Resolve | Step::Plan | Step::Waiting | Step::Lock
        )
    }
}

/// How a request ends, as the code that ends it says it: the state it
/// takes, with the reason where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(String),
    TimedOut(String),
    Cancelled(String),
    Superseded(String),
}

impl Outcome {
    pub fn state(&self) -> JobState {
        match self {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::Failed(_) => JobState::Failed,
            Outcome::TimedOut(_) => JobState::TimedOut,
            Outcome::Cancelled(_) => JobState::Cancelled,
            Outcome::Superseded(_) => JobState::Superseded,
        }
    }

    /// The reason recorded as the request's error (none for a success).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Succeeded => None,
            Outcome::Failed(r)
            | Outcome::TimedOut(r)
            | Outcome::Cancelled(r)
            | Outcome::Superseded(r) => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_in_text_and_json() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(*s));
        }
        assert!("paused".parse::<JobState>().is_err());
    }

    #[test]
    fn every_end_has_a_conclusion() {
        for s in JobState::ALL {
            assert_eq!(s.conclusion().is_none(), s.is_active());
        }
    }
}
