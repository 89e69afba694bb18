//! What a person sees on GitHub, as whole-text snapshots (insta, in
//! `tests/it/snapshots/`): status comments, check runs' text, the bot's replies.
//!
//! What changes from run to run is replaced by a name in brackets before the
//! comparison: clock times, durations and outbox ids ([`FILTERS`]), and
//! values a test names itself (commits of real git repositories: [`named`]). Everything
//! else is compared to the letter. A changed text fails the test; review it
//! with `INSTA_UPDATE=always cargo test --test it <suite>::`, read the
//! `.snap` files it wrote, and commit them.

use serde_json::Value;

/// What changes between runs in deploybot's texts, as (regex, name).
pub const FILTERS: &[(&str, &str)] = &[
    // `held until **2026-11-27 14:05 UTC**`
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "[time]"),
    // RFC 3339 timestamps.
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[timestamp]",
    ),
    // A time cut short where a table cell ends: `until 2026-12-02 03:24 UT…`.
    (r"\d{4}-\d{2}-\d{2}[ T][^|]*…", "[time]…"),
    // How long a step took, in the steps table: `| ✅ build | 0.4s | |`.
    (
        r"\| (\d+\.\ds|\d+s|\d+m \d{2}s|\d+h \d{2}m) \|",
        "| [duration] |",
    ),
    // How long a hold has left: `(1h 59m left)`.
    (
        r"\((\d+\.\ds|\d+s|\d+m \d{2}s|\d+h \d{2}m) left\)",
        "([duration] left)",
    ),
    // How long until a waiting request's estimated start: `(in 1h 20m; an estimate)`.
    (
        r"\(in (\d+\.\ds|\d+s|\d+m \d{2}s|\d+h \d{2}m); an estimate\)",
        "(in [duration]; an estimate)",
    ),
    // The id of a reply in deploybot's outbox (a database sequence, which
    // PostgreSQL may skip).
    (
        r"<!-- deploybot:report:\d+ -->",
        "<!-- deploybot:report:[id] -->",
    ),
    // A port of a fake or of deploybot on loopback.
    (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
];

/// `text` with each `(value, name)` of `names` written `[name]`; a value
/// that is a commit SHA is also replaced where it is shortened to 12 or 7
/// characters (`[name:12]`, `[name:7]`).
pub fn named(text: &str, names: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (value, name) in names {
        out = out.replace(value, &format!("[{name}]"));
        if value.len() == 40 && value.chars().all(|c| c.is_ascii_hexdigit()) {
            for len in [12, 7] {
                out = out.replace(&value[..len], &format!("[{name}:{len}]"));
            }
        }
    }
    out
}

/// A check run's output as GitHub shows it on the Checks tab: the buttons
/// (as `[label]`, when there are any), the title as a heading, the summary,
/// and the text (if any) below a rule.
pub fn check_run_output(run: &Value) -> String {
    let output = &run["output"];
    let buttons: Vec<String> = run["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("[{}]", a["label"].as_str().unwrap_or_default()))
        .collect();
    let mut out = if buttons.is_empty() {
        String::new()
    } else {
        format!("{}\n\n", buttons.join(" "))
    };
    out += &format!(
        "# {}\n\n{}",
        output["title"].as_str().unwrap_or_default(),
        output["summary"].as_str().unwrap_or_default()
    );
    if let Some(text) = output["text"].as_str() {
        out.push_str("\n---\n\n");
        out.push_str(text);
    }
    out
}

/// Asserts that `text` is the snapshot `name` (in `tests/it/snapshots/`,
/// named after the suite), once [`named`] with the `(value, name)` pairs
/// given and the [`FILTERS`] have run over it.
macro_rules! assert_shown {
    ($name:expr, $text:expr $(,)?) => {
        $crate::shown::assert_shown!($name, $text, &[])
    };
    ($name:expr, $text:expr, $names:expr $(,)?) => {{
        let text = $crate::shown::named(&$text, $names);
        insta::with_settings!(
            {
                filters => $crate::shown::FILTERS.iter().copied(),
                omit_expression => true,
            },
            {
                insta::assert_snapshot!($name, text);
            }
        );
    }};
}
pub(crate) use assert_shown;
