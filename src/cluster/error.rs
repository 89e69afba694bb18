//! One error type for everything the cluster module does.
//! Classifies the API's answers (retryable or not); no I/O of its own.

use std::fmt;
use std::time::Duration;

use super::human_duration;

/// What went wrong talking to the cluster. `Display` is short and meant for
/// people (status comments, job events); it never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The API server refused the request (any status not covered below).
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// 409: the object changed since it was read (stale `resourceVersion`),
    /// or it already exists (`reason` is `Conflict` or `AlreadyExists`).
    Conflict { reason: String, message: String },
    /// 404 for the named object (`what` is e.g. `Deployment packit/worker`).
    NotFound { what: String, message: String },
    /// No answer: connection refused, reset, read timeout...
    Transport(String),
    /// A wait ran out of time; `last` is the last state seen.
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    /// A wait was cancelled through its cancel channel.
    Cancelled { what: String },
    /// The client could not be configured (bad URL, no kubeconfig...).
    Config(String),
    /// The request cannot be made as asked, or the answer is unusable (no
    /// container runs that image, a name that is not a DNS label, a response
    /// that is not the expected object...).
    Invalid(String),
}

impl ClusterError {
    /// Worth trying again later: the server or the network had a problem.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Transport(_) => true,
            ClusterError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Conflict { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::NotFound { .. })
    }

    /// Maps kube's error for a request about `what` (e.g. `Lease dev/deploybot`).
    pub(crate) fn from_kube(error: kube::Error, what: &str) -> ClusterError {
        match error {
            kube::Error::Api(status) => {
                let status = *status;
                match status.code {
                    404 => ClusterError::NotFound {
                        what: what.to_string(),
                        message: status.message,
                    },
                    409 => ClusterError::Conflict {
                        reason: status.reason,
                        message: status.message,
                    },
                    code => ClusterError::Api {
                        status: code,
                        reason: status.reason,
                        message: status.message,
                    },
                }
            }
            kube::Error::SerdeError(e) => {
                ClusterError::Invalid(format!("unexpected answer about {what}: {e}"))
            }
            kube::Error::FromUtf8(e) => {
                ClusterError::Invalid(format!("unexpected answer about {what}: {e}"))
            }
            kube::Error::BuildRequest(e) => {
                ClusterError::Invalid(format!("cannot ask about {what}: {e}"))
            }
            other => ClusterError::Transport(other.to_string()),
        }
    }
}

/// Cuts `text` to `max` characters, marking the cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Api {
                status,
                reason,
                message,
            } => {
                write!(f, "the Kubernetes API answered {status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {}", shorten(message, 300))?;
                }
                Ok(())
            }
            ClusterError::Conflict { reason, message } => {
                let reason = if reason.is_empty() {
                    "Conflict"
                } else {
                    reason
                };
                write!(f, "{reason}: {}", shorten(message, 300))
            }
            ClusterError::NotFound { what, .. } => write!(f, "{what} not found"),
            ClusterError::Transport(message) => {
                write!(
                    f,
                    "cannot reach the Kubernetes API: {}",
                    shorten(message, 300)
                )
            }
            ClusterError::Timeout { what, waited, last } => {
                write!(
                    f,
                    "timed out after {} waiting for {what}",
                    human_duration(*waited)
                )?;
                if !last.is_empty() {
                    write!(f, ": {}", shorten(last, 300))?;
                }
                Ok(())
            }
            ClusterError::Cancelled { what } => write!(f, "cancelled while waiting for {what}"),
            ClusterError::Config(message) => {
                write!(f, "Kubernetes client configuration: {message}")
            }
            ClusterError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ClusterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_short_and_readable() {
        let timeout = ClusterError::Timeout {
            what: "Deployment packit/packit-worker".into(),
            waited: Duration::from_secs(600),
            last: "1 of 2 updated replicas are available".into(),
        };
        assert_eq!(
            timeout.to_string(),
            "timed out after 10m waiting for Deployment packit/packit-worker: \
             1 of 2 updated replicas are available"
        );
        let api = ClusterError::Api {
            status: 500,
            reason: "InternalError".into(),
            message: "x".repeat(1000),
        };
        assert!(api.to_string().chars().count() < 400);
        assert!(api.is_transient());
        assert!(!ClusterError::Invalid("no".into()).is_transient());
    }
}
