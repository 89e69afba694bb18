//! Text shown to people: times and spans in words (credentials are hidden
//! by `crate::mask`). Pure functions.

use crate::store::rfc3339;

/// `2026-11-27 14:05 UTC`.
pub fn human_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| rfc3339(ms))
}

/// `frozen until 2026-12-24 18:00 UTC (the 1.0 release)`.
pub fn freeze_text(freeze: &crate::domain::Freeze) -> String {
    format!(
        "frozen until {} ({})",
        human_time(freeze.until),
        freeze.reason
    )
}

/// `estimated start **2026-12-02 16:40 UTC** (in 1h 20m; an estimate)`.
pub fn estimate_text(start: i64, now: i64) -> String {
    if start <= now + 60_000 {
        return "estimated start: as soon as it is its turn (an estimate)".into();
    }
    format!(
        "estimated start **{}** (in {}; an estimate)",
        human_time(start),
        human_span(start - now)
    )
}

/// `0.4s`, `12s`, `3m 05s`, `2h 10m`.
pub fn human_span(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    if secs < 10 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(400), "0.4s");
        assert_eq!(human_span(12_000), "12s");
        assert_eq!(human_span(185_000), "3m 05s");
        assert_eq!(human_span(7_800_000), "2h 10m");
    }
}
