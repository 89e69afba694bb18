//! Small text helpers: a position-aware tokenizer, edit distance, and quoting
//! of user text in markdown.

use std::ops::Range;

/// A whitespace-separated word of a line with its byte span in that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub text: &'a str,
    pub span: Range<usize>,
}

impl<'a> Token<'a> {
    /// The part of this token at byte offsets `range` of its text, as a token of the line.
    pub fn sub(&self, range: Range<usize>) -> Token<'a> {
        Token {
            text: &self.text[range.clone()],
            span: self.span.start + range.start..self.span.start + range.end,
        }
    }
}

/// Split `line` at Unicode whitespace.
pub(crate) fn tokenize(line: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (start, c.is_whitespace()) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                tokens.push(Token {
                    text: &line[s..i],
                    span: s..i,
                });
                start = None;
            }
            _ => {}
        }
    }
    tokens
}

/// Levenshtein distance over chars, ASCII case-insensitive.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().map(|c| c.to_ascii_lowercase()).enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The candidates close to `word` (edit distance at most 2, or a third of its
/// length, or `word` is a prefix of at least 3 chars), nearest first, at most 3.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let len = word.chars().count();
    if len > 64 {
        return Vec::new();
    }
    let limit = (len / 3).max(2);
    let mut close: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let d = levenshtein(word, c);
            let prefix = len >= 3
                && c.len() > len
                && c.get(..word.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(word));
            (d <= limit || prefix).then_some((d, c))
        })
        .collect();
    close.sort();
    close.dedup_by(|a, b| a.1 == b.1);
    close.into_iter().take(3).map(|(_, c)| c).collect()
}

/// The end of a sentence: "; did you mean `a`, `b` or `c`?" when there are
/// suggestions, else ".".
pub(crate) fn did_you_mean(near: &[&str]) -> String {
    match near {
        [] => ".".into(),
        [one] => format!("; did you mean {}?", code(one)),
        [rest @ .., last] => format!(
            "; did you mean {} or {}?",
            code_list(rest.iter().copied()),
            code(last)
        ),
    }
}

/// `text` as an inline code span that cannot be broken out of, shortened to 80 chars.
pub(crate) fn code(text: &str) -> String {
    let mut text = text.to_string();
    if let Some((i, _)) = text.char_indices().nth(80) {
        text.truncate(i);
        text.push('…');
    }
    crate::quote::code(&text)
}

/// `items` as a comma-separated list of code spans.
pub(crate) fn code_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().map(code).collect::<Vec<_>>().join(", ")
}
