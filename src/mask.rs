//! What must never be shown: deploybot's own secrets (registered at start and
//! per job), credentials in URLs and text shaped like a credential. [`redact`]
//! is the one masking function; everything that stores or shows output uses it.
//!
//! Exact values come from [`protect`]: the webhook secrets, each line of the
//! App's private key, the database password (registered when the process
//! starts) and the values a job reads through `env_from_files` (registered
//! when it reads them). They are masked process-wide from then on, wherever
//! text is recorded or shown, whatever the job.

use std::sync::RwLock;

/// What a masked value becomes.
pub const REDACTED: &str = "[redacted]";
/// What a private key block becomes.
pub const REDACTED_KEY: &str = "[redacted private key]";
/// Values shorter than this are not masked by value (a one-letter "secret"
/// would blank out every word that holds the letter); credentials of that
/// length are still caught by their shape.
pub const MIN_SECRET_CHARS: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Mask `value` (and each of its lines, for a multi-line one like a key)
/// in everything [`redact`] sees from now on.
pub fn protect(value: &str) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    let whole = value.trim();
    let lines = value.lines().map(str::trim);
    for part in std::iter::once(whole).chain(lines) {
        // A PEM's `-----BEGIN ...-----` lines are not secret (and are caught
        // as a key block anyway).
        if part.chars().count() < MIN_SECRET_CHARS || part.starts_with("-----") {
            continue;
        }
        if !secrets.iter().any(|s| s == part) {
            secrets.push(part.to_string());
        }
    }
    // The longest first: a value that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Register the password of a URL such as a `DATABASE_URL`.
pub fn protect_url_password(url: &str) {
    if let Some((_, password)) = userinfo(url).and_then(|u| u.split_once(':')) {
        protect(password);
    }
}

/// The userinfo of `scheme://userinfo@host/...`, if any.
fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Some(&authority[..authority.rfind('@')?])
}

/// `text` as it may be shown: every registered secret, credentials in URLs
/// (`https://user:TOKEN@host`, `https://TOKEN@host`, `postgres://u:pw@db`),
/// any `user:password@host`, GitHub tokens (`ghp_`, `ghs_`, ...), private key
/// blocks, and the values of `password=`, `token=`, `secret=` style
/// assignments and `Authorization:` headers, replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    redact_with(text, &[])
}

/// [`redact`], also masking `extra` values of any length (a job's own
/// `env_from_files` values).
pub fn redact_with(text: &str, extra: &[String]) -> String {
    let mut text = text.to_string();
    for value in extra.iter().filter(|v| !v.is_empty()) {
        if text.contains(value.as_str()) {
            text = text.replace(value.as_str(), REDACTED);
        }
    }
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
    }
    redact_shapes(&text)
}

/// Key blocks, then each line's credential-shaped words.
fn redact_shapes(text: &str) -> String {
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
            out.push_str(REDACTED_KEY);
            out.push('\n');
            end + 1
        }
        _ => 0,
    };
    for line in lines.into_iter().skip(skip) {
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = true;
            out.push_str(REDACTED_KEY);
            out.push('\n');
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
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
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
            out.push_str(&format!("{REDACTED}{tail}"));
            continue;
        }
        let trimmed = &redact_userinfo(trimmed);
        let lower = trimmed.to_ascii_lowercase();
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
            Some(cut) if cut < trimmed.len() && !trimmed[cut..].starts_with(REDACTED) => {
                out.push_str(&format!("{}{REDACTED}{tail}", &trimmed[..cut]));
            }
            Some(cut) if cut >= trimmed.len() => {
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&format!("{trimmed} {REDACTED}{newline}"));
                return out;
            }
            _ => out.push_str(&format!("{trimmed}{tail}")),
        }
    }
    out
}

/// One word with the credentials of its URLs and `user:password@host`
/// forms replaced: `https://u:TOKEN@h` → `https://u:[redacted]@h`,
/// `https://TOKEN@h` → `https://[redacted]@h`, `u:pw@h` → `u:[redacted]@h`.
fn redact_userinfo(word: &str) -> String {
    if !word.contains('@') {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        // Where this word's userinfo starts: after `://`, else after the
        // last character that cannot be in one.
        let (start, has_scheme) = match before.rfind("://") {
            Some(s) if !before[s + 3..].contains(['/', '?', '#', '"', '\'', '<', '>']) => {
                (s + 3, true)
            }
            _ => (
                before
                    .rfind(|c: char| "/\"'<>()[]{},;=`".contains(c))
                    .map_or(0, |i| i + 1),
                false,
            ),
        };
        let info = &before[start..];
        // With a scheme, the userinfo runs to the authority's last `@`.
        let (info_end, next) = if has_scheme {
            let after = &rest[at..];
            let authority_end = after
                .find(['/', '?', '#', '"', '\'', '<', '>', ')'])
                .unwrap_or(after.len());
            let last_at = after[..authority_end].rfind('@').unwrap_or(0);
            (at + last_at, at + last_at + 1)
        } else {
            (at, at + 1)
        };
        let info_full = if has_scheme {
            &rest[start..info_end]
        } else {
            info
        };
        out.push_str(&rest[..start]);
        match info_full.split_once(':') {
            Some((user, password)) if !password.is_empty() => {
                out.push_str(&format!("{user}:{REDACTED}@"));
            }
            None if has_scheme && !info_full.is_empty() => {
                out.push_str(&format!("{REDACTED}@"));
            }
            _ => {
                out.push_str(info_full);
                out.push('@');
            }
        }
        rest = &rest[next..];
    }
    out.push_str(rest);
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
    fn credentials_in_urls_are_hidden() {
        let cases = [
            (
                "fatal: unable to access 'https://x-access-token:ghs_Tok3n@github.com/packit/ogr.git/'",
                "fatal: unable to access 'https://x-access-token:[redacted]@github.com/packit/ogr.git/'",
            ),
            (
                "git fetch https://Tok3nValue@github.com/a/b.git main",
                "git fetch https://[redacted]@github.com/a/b.git main",
            ),
            (
                "DATABASE_URL=postgres://deploybot:pw%40x@db:5432/deploybot",
                "DATABASE_URL=postgres://deploybot:[redacted]@db:5432/deploybot",
            ),
            (
                "connecting to admin:hunter2@10.0.0.1 now",
                "connecting to admin:[redacted]@10.0.0.1 now",
            ),
            ("postgres://u:p@ss@db/x", "postgres://u:[redacted]@db/x"),
            // Not credentials: an address, an SSH remote, a version.
            ("mail t@example.org", "mail t@example.org"),
            (
                "git@github.com:packit/ogr.git",
                "git@github.com:packit/ogr.git",
            ),
            ("pkg@1.2.3 and @alice", "pkg@1.2.3 and @alice"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn registered_values_are_hidden_wherever_they_are() {
        protect("mask-test-value-81c2\n");
        protect("abc"); // too short to mask by value
        protect(
            "-----BEGIN RSA PRIVATE KEY-----\nmask-test-key-line-0001\n-----END RSA PRIVATE KEY-----",
        );
        assert_eq!(
            redact("x=mask-test-value-81c2; y mask-test-key-line-0001 abc"),
            "x=[redacted]; y [redacted] abc"
        );
        protect_url_password("postgres://u:mask-test-db-pw@db/x");
        assert_eq!(redact("pw is mask-test-db-pw"), "pw is [redacted]");
    }
}
