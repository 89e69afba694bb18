//! The buttons on deploybot's check runs (GitHub's check run `actions`):
//! what each is called on GitHub and what a click on it asks for.

use serde::{Deserialize, Serialize};

/// A button; a click arrives as a `check_run` `requested_action` delivery
/// carrying its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    /// Hold the environment one hour longer (`/deploy extend 1h`).
    Extend,
    /// Give the environment back (`/deploy release`).
    Release,
    /// The same request again with the same pinned commits ("Re-run").
    Retry,
}

/// How long *Extend 1h* extends a hold.
pub const EXTEND_BY: std::time::Duration = std::time::Duration::from_secs(3600);

impl Button {
    /// The identifier GitHub sends back (at most 20 characters).
    pub fn identifier(self) -> &'static str {
        match self {
            Button::Extend => "extend-1h",
            Button::Release => "release",
            Button::Retry => "retry",
        }
    }

    /// The button's text (at most 20 characters).
    pub fn label(self) -> &'static str {
        match self {
            Button::Extend => "Extend 1h",
            Button::Release => "Release",
            Button::Retry => "Retry",
        }
    }

    /// What it does, shown beside it (at most 40 characters).
    pub fn description(self) -> &'static str {
        match self {
            Button::Extend => "Hold the environment one hour longer",
            Button::Release => "Free the environment for others",
            Button::Retry => "Deploy the same commits again",
        }
    }

    /// The button an identifier names (by its prefix, so that identifiers
    /// may carry more later); `None` for anything else.
    pub fn from_identifier(identifier: &str) -> Option<Button> {
        [
            ("extend", Button::Extend),
            ("release", Button::Release),
            ("retry", Button::Retry),
        ]
        .into_iter()
        .find(|(prefix, _)| identifier.starts_with(prefix))
        .map(|(_, button)| button)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_button_fits_githubs_limits_and_is_found_by_its_identifier() {
        for b in [Button::Extend, Button::Release, Button::Retry] {
            assert!(b.identifier().len() <= 20 && b.label().chars().count() <= 20);
            assert!(b.description().chars().count() <= 40, "{}", b.description());
            assert_eq!(Button::from_identifier(b.identifier()), Some(b));
        }
        assert_eq!(Button::from_identifier("lgtm|26764"), None);
    }
}
