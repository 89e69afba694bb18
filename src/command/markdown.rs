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
