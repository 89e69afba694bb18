//! Finding the command lines of a comment, the way GitHub renders its markdown:
//! text in fenced or indented code blocks, block quotes, HTML comments and
//! inline code is not a command.

use std::collections::HashMap;
use std::ops::Range;

use super::CommandLine;

/// The command lines of `body`, in order: lines that start (after at most three
/// spaces) with `prefix` followed by whitespace or the end of the line, and are
/// not inside a fenced code block (``` or ~~~, an unclosed one runs to the
/// end), an indented code block, a `>` quote, an HTML comment or a code span.
/// CRLF line endings are accepted.
pub fn command_lines(body: &str, prefix: &str) -> Vec<CommandLine> {
    let mut found = Vec::new();
    if prefix.is_empty() {
        return found;
    }
    let mut fence: Option<Fence> = None;
    let mut in_comment = false;
    // The current paragraph, as (line number, line), to find multi-line code spans.
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    for (i, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let (indent, rest) = indentation(line);
        if let Some(f) = fence {
            if f.closed_by(indent, rest) {
                fence = None;
            }
            continue;
        }
        if in_comment {
            in_comment = !line.contains("-->");
            continue;
        }
        let opens = if indent < 4 {
            fence_open(indent, rest)
        } else {
            None
        };
        let comment = indent < 4 && rest.starts_with("<!--");
        let other_block = indent < 4 && (rest.starts_with('>') || is_heading(rest));
        if rest.is_empty() || opens.is_some() || comment || other_block {
            flush(&mut paragraph, prefix, &mut found);
            fence = opens;
            in_comment = comment && !rest[4..].contains("-->");
        } else if indent < 4 || !paragraph.is_empty() {
            // Indented lines after a paragraph continue it; alone they are code.
            paragraph.push((i + 1, line));
        }
    }
    flush(&mut paragraph, prefix, &mut found);
    found
}

/// The command lines of `new` whose text (trimmed) was not among the command
/// lines of `old` — what an edit of a comment added. Lines are counted: a line
/// twice in `new` and once in `old` yields its second occurrence.
pub fn new_command_lines(old: &str, new: &str, prefix: &str) -> Vec<CommandLine> {
    let mut old_counts: HashMap<String, usize> = HashMap::new();
    for line in command_lines(old, prefix) {
        *old_counts.entry(line.text).or_default() += 1;
    }
    command_lines(new, prefix)
        .into_iter()
        .filter(|line| match old_counts.get_mut(&line.text) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

/// Emit the command lines of a finished paragraph and clear it.
fn flush(paragraph: &mut Vec<(usize, &str)>, prefix: &str, found: &mut Vec<CommandLine>) {
    let text = paragraph
        .iter()
        .map(|(_, line)| *line)
        .collect::<Vec<_>>()
        .join("\n");
    let spans = code_spans(&text);
    let mut offset = 0;
    for (line_no, line) in paragraph.drain(..) {
        let (indent, rest) = indentation(line);
        let at = offset + line.len() - rest.len();
        // Spans are ordered and disjoint: only the last one starting before `at` can hold it.
        let before = spans.partition_point(|s| s.start < at);
        let in_code = before > 0 && spans.get(before - 1).is_some_and(|s| at < s.end);
        let command = rest
            .strip_prefix(prefix)
            .is_some_and(|after| after.chars().next().is_none_or(char::is_whitespace));
        if indent < 4 && command && !in_code {
            found.push(CommandLine {
                line_no,
                text: line.trim().to_string(),
            });
        }
        offset += line.len() + 1;
    }
}

/// Code spans in a paragraph (CommonMark: a backtick run up to the next run of
/// the same length; a run with no partner, or escaped by `\`, is literal).
fn code_spans(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs: Vec<(usize, usize, bool)> = Vec::new(); // start, length, escaped
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let start = i;
        while bytes.get(i) == Some(&b'`') {
            i += 1;
        }
        let escaped = bytes[..start]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count()
            % 2
            == 1;
        runs.push((start, i - start, escaped));
    }
    let mut spans = Vec::new();
    let mut k = 0;
    while let Some(&(start, len, escaped)) = runs.get(k) {
        k += 1;
        if escaped {
            continue;
        }
        if let Some(j) = runs[k..].iter().position(|r| r.1 == len) {
            spans.push(start..runs[k + j].0 + len);
            k += j + 1;
        }
    }
    spans
}

/// An open fenced code block.
#[derive(Debug, Clone, Copy)]
struct Fence {
    ch: char,
    len: usize,
    /// Column of the block's content (non-zero inside a list item).
    indent: usize,
}

impl Fence {
    fn closed_by(&self, indent: usize, rest: &str) -> bool {
        let run = rest.chars().take_while(|&c| c == self.ch).count();
        indent < self.indent + 4 && run >= self.len && rest[run..].trim().is_empty()
    }
}

/// The fence that a line opens, given its indentation and the rest of it. A
/// fence may follow a list marker (`- ```` `).
fn fence_open(indent: usize, rest: &str) -> Option<Fence> {
    let inner = strip_list_marker(rest);
    let content = if inner.len() == rest.len() {
        0
    } else {
        indent + rest.len() - inner.len()
    };
    let ch = inner.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let len = inner.chars().take_while(|&c| c == ch).count();
    // A backtick fence's info string cannot contain a backtick (that is inline code).
    let valid = len >= 3 && !(ch == '`' && inner[len..].contains('`'));
    valid.then_some(Fence {
        ch,
        len,
        indent: content,
    })
}

/// `rest` after a list marker (`-`, `*`, `+`, `1.`, `1)` and a space), or `rest` itself.
fn strip_list_marker(rest: &str) -> &str {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let marker = if rest.starts_with(['-', '*', '+']) {
        1
    } else if (1..=9).contains(&digits) && rest[digits..].starts_with(['.', ')']) {
        digits + 1
    } else {
        return rest;
    };
    match rest[marker..].strip_prefix([' ', '\t']) {
        Some(after) => after.trim_start_matches([' ', '\t']),
        None => rest,
    }
}

/// An ATX heading: 1 to 6 `#` and a space or the end of the line.
fn is_heading(rest: &str) -> bool {
    let hashes = rest.bytes().take_while(|&b| b == b'#').count();
    (1..=6).contains(&hashes)
        && rest[hashes..]
            .chars()
            .next()
            .is_none_or(|c| c == ' ' || c == '\t')
}

/// The indentation of `line` in columns (a tab goes to the next multiple of 4) and the rest of it.
fn indentation(line: &str) -> (usize, &str) {
    let mut col = 0;
    for (i, c) in line.char_indices() {
        match c {
            ' ' => col += 1,
            '\t' => col += 4 - col % 4,
            _ => return (col, &line[i..]),
        }
    }
    (col, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &str) -> Vec<(usize, String)> {
        command_lines(body, "/deploy")
            .into_iter()
            .map(|l| (l.line_no, l.text))
            .collect()
    }
    fn texts(body: &str) -> Vec<String> {
        lines(body).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn command_lines_in_plain_text() {
        assert_eq!(lines("/deploy ogr=1"), vec![(1, "/deploy ogr=1".into())]);
        assert_eq!(
            lines("Thanks!\n\n/deploy\n  /deploy status  \nbye"),
            vec![(3, "/deploy".into()), (4, "/deploy status".into())]
        );
        assert_eq!(
            texts("/deploy a\r\n/deploy b\r\n"),
            ["/deploy a", "/deploy b"]
        );
        assert_eq!(
            texts("   /deploy three spaces\n    /deploy four spaces\n\t/deploy tab"),
            ["/deploy three spaces"]
        );
        assert_eq!(
            texts("/deploy-stg ogr=1\n/deployment\n/deploy\tx\nsee /deploy\n- /deploy"),
            ["/deploy\tx"]
        );
        assert_eq!(
            command_lines("/deploy-stg ogr=1\n/deploy ogr=2", "/deploy-stg")[0].text,
            "/deploy-stg ogr=1"
        );
        assert_eq!(
            command_lines("/deploy-stg ogr=1\n/deploy ogr=2", "/deploy-stg").len(),
            1
        );
        assert!(command_lines("/deploy", "").is_empty());
        assert!(command_lines("", "/deploy").is_empty());
    }

    #[test]
    fn command_lines_skip_code_blocks() {
        let body = "```\n/deploy in fence\n```\n/deploy after\n~~~ shell\n/deploy tilde\n~~~\n  ```bash\n/deploy info\n  ```\n/deploy end";
        assert_eq!(
            lines(body),
            vec![(4, "/deploy after".into()), (11, "/deploy end".into())]
        );
        // A closing fence must be at least as long as the opening one, of the same char.
        assert!(texts("````\n```\n/deploy x\n~~~\n/deploy y").is_empty());
        assert_eq!(
            texts("````\n```\n/deploy x\n`````\n/deploy y"),
            ["/deploy y"]
        );
        // An unclosed fence runs to the end.
        assert!(texts("text\n```\n/deploy x\n\n/deploy y").is_empty());
        // A fence inside a list item.
        assert_eq!(texts("- ```\n  /deploy x\n  ```\n/deploy y"), ["/deploy y"]);
        // Four spaces or a tab: indented code, not a fence and not a command.
        assert_eq!(texts("    ```\n/deploy x\n    ```"), ["/deploy x"]);
        // ``` with a backtick in the info string is inline code, not a fence.
        assert_eq!(texts("``` a ` b\n\n/deploy x"), ["/deploy x"]);
    }

    #[test]
    fn command_lines_skip_quotes_comments_and_inline_code() {
        assert_eq!(
            texts("> /deploy quoted\n> > /deploy nested\n>/deploy\n  > /deploy\n\n/deploy mine"),
            ["/deploy mine"]
        );
        assert!(texts("`/deploy ogr=1`\nsay `/deploy ogr=1` to deploy").is_empty());
        // A code span that runs across lines hides the command line inside it.
        assert!(texts("try `this\n/deploy ogr=1` out").is_empty());
        assert_eq!(texts("`a` and `b`\n/deploy ogr=1"), ["/deploy ogr=1"]);
        // An unmatched or escaped backtick starts no code span.
        assert_eq!(texts("a ` b\n/deploy ogr=1"), ["/deploy ogr=1"]);
        assert_eq!(texts("a \\` b\n/deploy ogr=1 `x`"), ["/deploy ogr=1 `x`"]);
        // A blank line ends the paragraph, and the code span with it.
        assert_eq!(texts("a `b\n\n/deploy ogr=1 c`"), ["/deploy ogr=1 c`"]);
        // HTML comments hide what is in them.
        assert_eq!(
            texts("<!--\n/deploy hidden\n-->\n/deploy shown\n<!-- one line -->\n/deploy too"),
            ["/deploy shown", "/deploy too"]
        );
    }

    #[test]
    fn command_lines_keep_order_and_line_numbers() {
        let body = "Please:\r\n/deploy ogr=1\r\n```\r\n/deploy no\r\n```\r\n/deploy status\r\n> /deploy no\r\n\r\n/deploy ogr=1";
        assert_eq!(
            lines(body),
            vec![
                (2, "/deploy ogr=1".into()),
                (6, "/deploy status".into()),
                (9, "/deploy ogr=1".into())
            ]
        );
    }

    #[test]
    fn new_command_lines_only_returns_added_lines() {
        let old = "/deploy ogr=1\ntext";
        assert!(new_command_lines(old, old, "/deploy").is_empty());
        let new = "/deploy ogr=1\n/deploy status\n  /deploy ogr=1  ";
        let added = new_command_lines(old, new, "/deploy");
        assert_eq!(
            added,
            vec![
                CommandLine {
                    line_no: 2,
                    text: "/deploy status".into()
                },
                CommandLine {
                    line_no: 3,
                    text: "/deploy ogr=1".into()
                },
            ]
        );
        // A command that moved into a code block is not new; one that left it is.
        assert!(
            new_command_lines("/deploy ogr=1", "```\n/deploy ogr=1\n```", "/deploy").is_empty()
        );
        assert_eq!(
            new_command_lines("```\n/deploy ogr=1\n```", "/deploy ogr=1", "/deploy").len(),
            1
        );
        assert_eq!(
            new_command_lines("", "/deploy\n/deploy", "/deploy").len(),
            2
        );
    }
}
