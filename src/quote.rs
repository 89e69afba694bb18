//! Quoting for GitHub's markdown: what a user typed or a command printed is
//! shown only through these functions, which cannot be broken out of.
//!
//! - [`code`]: an inline code span fenced by one backtick more than the
//!   longest run in the text (padded with a space where CommonMark strips
//!   one), so nothing in it is markup: no link, no HTML, no `@` mention;
//! - [`cell`]: the same inside a table cell (pipes escaped, as GFM needs
//!   even in code);
//! - [`fence`]: a fenced code block whose fence is longer than any backtick
//!   run inside;
//! - [`prose`]: deploybot's own sentences that may carry foreign text
//!   (an error from GitHub or the cluster): outside code spans, HTML is
//!   escaped and an `@` that would mention a team or anything but a plain
//!   login is defused with a zero-width joiner.

/// The zero-width joiner put after an `@` that must not mention anyone.
pub const NO_MENTION: char = '\u{200D}';

/// Length of the longest run of backticks in `text`.
pub fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `text` as one inline code span, on one line.
pub fn code(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let ticks = "`".repeat(longest_backtick_run(&text) + 1);
    // CommonMark strips one space from each side of a span that has one on
    // both: pad whenever an edge is a backtick or a space.
    let pad = if text.is_empty() || text.starts_with(['`', ' ']) || text.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// `text` as a code span in a GFM table cell.
pub fn cell(text: &str) -> String {
    code(text).replace('|', "\\|")
}

/// `text` as a fenced code block (`info` after the opening fence, e.g.
/// `text`), ending with a newline.
pub fn fence(info: &str, text: &str) -> String {
    let ticks = "`".repeat((longest_backtick_run(text) + 1).max(3));
    let info: String = info.chars().filter(|c| *c != '`' && *c != '\n').collect();
    let body = text.trim_end_matches('\n');
    format!("{ticks}{info}\n{body}\n{ticks}\n")
}

/// One of deploybot's sentences made safe to show as markdown: outside its
/// code spans `<` is escaped and an `@` is defused unless a plain login
/// (`@alice`, as in "cancelled by @alice") follows it. Each line is read on
/// its own, so a span never runs across lines (where GitHub might not see
/// one, this errs on the safe side).
pub fn prose(text: &str) -> String {
    text.split('\n')
        .map(prose_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn prose_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        if rest.starts_with("\\`") {
            out.push_str("\\`");
            i += 2;
            continue;
        }
        if rest.starts_with('`') {
            let run = rest.bytes().take_while(|b| *b == b'`').count();
            match closing_run(&line[i + run..], run) {
                Some(end) => {
                    let span_end = i + run + end + run;
                    out.push_str(&line[i..span_end]);
                    i = span_end;
                }
                None => {
                    out.push_str(&line[i..i + run]);
                    i += run;
                }
            }
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        match c {
            '<' => out.push_str("&lt;"),
            '@' => {
                out.push('@');
                let preceded_by_word = i > 0 && (bytes[i - 1].is_ascii_alphanumeric());
                if !preceded_by_word && !plain_login_follows(&rest[1..]) {
                    out.push(NO_MENTION);
                }
            }
            c => out.push(c),
        }
        i += c.len_utf8();
    }
    out
}

/// Where the first backtick run of exactly `run` starts in `text`.
fn closing_run(text: &str, run: usize) -> Option<usize> {
    let mut i = 0;
    while i < text.len() {
        if text.as_bytes()[i] == b'`' {
            let len = text[i..].bytes().take_while(|b| *b == b'`').count();
            if len == run {
                return Some(i);
            }
            i += len;
        } else {
            i += 1;
        }
    }
    None
}

/// A GitHub login (letters, digits, single inner hyphens, at most 39)
/// followed by something that does not make it a team (`/`) or more.
fn plain_login_follows(text: &str) -> bool {
    let login: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let after = text[login.len()..].chars().next();
    !login.is_empty()
        && login.len() <= 39
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--")
        && !matches!(after, Some('/' | '[' | '_' | '.' | '@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_cannot_be_broken_out_of() {
        assert_eq!(code("main"), "`main`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(code(" x"), "`  x `");
        assert_eq!(code(""), "`  `");
        assert_eq!(
            code("branch:x`@packit/security<img src=x>"),
            "``branch:x`@packit/security<img src=x>``"
        );
        assert_eq!(code("a\nb\u{7}"), "` a b  `");
        assert_eq!(cell("a|b`"), "`` a\\|b` ``");
    }

    #[test]
    fn fences_are_longer_than_anything_inside() {
        assert_eq!(fence("", "x\n"), "```\nx\n```\n");
        assert_eq!(fence("text", "a\n```\nb"), "````text\na\n```\nb\n````\n");
    }

    #[test]
    fn prose_defuses_html_and_team_mentions_outside_code() {
        assert_eq!(prose("cancelled by @alice"), "cancelled by @alice");
        assert_eq!(
            prose("ask @packit/security <img src=x> now"),
            "ask @\u{200D}packit/security &lt;img src=x> now"
        );
        // Code spans are left as they are, however many backticks.
        assert_eq!(
            prose("no branch ``x`@packit/security<img>`` in packit/ogr"),
            "no branch ``x`@packit/security<img>`` in packit/ogr"
        );
        // An unclosed run is literal: what follows is not code.
        assert_eq!(prose("`` a `@org/t"), "`` a `@\u{200D}org/t");
        // An escaped backtick opens nothing.
        assert_eq!(prose("\\`<b>`"), "\\`&lt;b>`");
        assert_eq!(prose("t@example.org"), "t@example.org");
    }
}
