//! Text shown to people: times and spans in words, and credentials hidden
//! from anything shown on GitHub, the pages and the API. Pure functions.

use crate::store::rfc3339;

/// `2026-11-27 14:05 UTC`.
pub fn human_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| rfc3339(ms))
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

/// Hide things that look like credentials in text shown on GitHub: tokens
/// GitHub issues (`ghp_`, `ghs_`, `gho_`, `ghu_`, `ghr_`, `github_pat_`),
/// private key blocks, and the value of `password=`, `token=`, `secret=`
/// style assignments and `Authorization:` headers.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    // An excerpt cut inside a key block has its END line but not its BEGIN:
    // everything up to that END line is key material.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let first_begin = lines
        .iter()
        .position(|l| l.contains("-----BEGIN") && l.contains("PRIVATE KEY"));
    let first_end = lines
        .iter()
        .position(|l| l.contains("-----END") && l.contains("PRIVATE KEY"));
    let skip = match (first_begin, first_end) {
        (begin, Some(end)) if begin.is_none_or(|b| b > end) => {
            out.push_str("[redacted private key]\n");
            end + 1
        }
        _ => 0,
    };
    for line in lines.into_iter().skip(skip) {
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = true;
            out.push_str("[redacted private key]\n");
            continue;
        }
        if in_key {
            if line.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        out.push_str(&redact_line(line));
    }
    out
}

fn redact_line(line: &str) -> String {
    const TOKEN_PREFIXES: [&str; 6] = ["ghp_", "ghs_", "gho_", "ghu_", "ghr_", "github_pat_"];
    const KEYS: [&str; 6] = [
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "authorization",
    ];
    let mut out = String::with_capacity(line.len());
    for word in line.split_inclusive(|c: char| c.is_whitespace()) {
        let trimmed = word.trim_end();
        let tail = &word[trimmed.len()..];
        let lower = trimmed.to_ascii_lowercase();
        if TOKEN_PREFIXES
            .iter()
            .any(|p| lower.trim_start_matches(['"', '\'', '(']).starts_with(p))
        {
            out.push_str(&format!("[redacted]{tail}"));
            continue;
        }
        // `key=value`, `key: value`: the value goes (up to the line's end
        // when it is in the next words, as in `Authorization: Bearer x`).
        let assignment = KEYS.iter().find_map(|k| {
            let at = lower.find(k)?;
            let rest = &trimmed[at + k.len()..];
            let sep = rest.find(['=', ':'])?;
            rest[..sep]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"')
                .then_some(at + k.len() + sep + 1)
        });
        match assignment {
            Some(cut) if cut < trimmed.len() => {
                out.push_str(&format!("{}[redacted]{tail}", &trimmed[..cut]));
            }
            Some(_) => {
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&format!("{trimmed} [redacted]{newline}"));
                return out;
            }
            None => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden() {
        let cases = [
            (
                "token ghs_abcdefABCDEF0123456789 used",
                "token [redacted] used",
            ),
            ("PASSWORD=hunter2 make", "PASSWORD=[redacted] make"),
            ("Authorization: Bearer abc.def", "Authorization: [redacted]"),
            ("db_password: s3cret", "db_password: [redacted]"),
            ("nothing to see", "nothing to see"),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert!(!got.contains("ghs_abc"), "{got}");
            assert!(!got.contains("hunter2"), "{got}");
            assert!(!got.contains("s3cret"), "{got}");
            assert_eq!(got, want);
        }
        let key = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\nb";
        assert_eq!(redact(key), "a\n[redacted private key]\nb");
        // An excerpt that starts inside the key block.
        let cut = "MIIE\nabc\n-----END RSA PRIVATE KEY-----\nb";
        assert_eq!(redact(cut), "[redacted private key]\nb");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(400), "0.4s");
        assert_eq!(human_span(12_000), "12s");
        assert_eq!(human_span(185_000), "3m 05s");
        assert_eq!(human_span(7_800_000), "2h 10m");
    }
}
