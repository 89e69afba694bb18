//! Freezes: when no new deployment may take an environment (an operator's
//! freeze, or a configured `[[environment.freeze]]` window), and why.

use serde::Serialize;

use crate::config::Environment;

/// An environment frozen until `until` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freeze {
    #[serde(skip)]
    pub until: i64,
    pub reason: String,
    /// `an operator`, `@login` (through the API), or `the configuration`.
    pub by: String,
}

impl Freeze {
    /// The freeze `environment` is under at `now`: the operator's (if it
    /// has not ended) or a configured window's, whichever ends last.
    pub fn current(
        environment: &Environment,
        operator: Option<Freeze>,
        now: i64,
    ) -> Option<Freeze> {
        let windows = environment.freeze.iter().filter_map(|w| {
            let (start, end) = (w.start.timestamp_millis(), w.end.timestamp_millis());
            (start <= now && now < end).then(|| Freeze {
                until: end,
                reason: w.reason.clone(),
                by: "the configuration".into(),
            })
        });
        operator
            .filter(|f| f.until > now)
            .into_iter()
            .chain(windows)
            .max_by_key(|f| f.until)
    }
}
