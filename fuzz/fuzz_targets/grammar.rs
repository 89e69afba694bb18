//! The comment grammar on any text: finding command lines (markdown-aware)
//! and parsing each must never panic; an error's span must lie inside the
//! line and quote its token; a parsed duration must print back as itself.
#![no_main]

use std::sync::OnceLock;

use deploybot::command::{Vocabulary, command_lines, new_command_lines, parse_command};
use libfuzzer_sys::fuzz_target;

fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
    VOCABULARY.get_or_init(|| deploybot::config::Config::builtin_default().vocabulary())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vocabulary = vocabulary();
    for line in command_lines(text, &vocabulary.prefix) {
        if let Err(error) = parse_command(&line.text, vocabulary) {
            assert!(error.span.end <= line.text.len(), "span outside the line");
            assert_eq!(
                line.text.get(error.span.clone()),
                Some(error.token.as_str())
            );
            assert!(!error.message.is_empty());
        }
    }
    // An edit: the second half of the text as the new body.
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    let (old, new) = text.split_at(middle);
    let _ = new_command_lines(old, new, &vocabulary.prefix);
    if let Some(d) = deploybot::command::parse_duration(text) {
        assert_eq!(
            deploybot::command::parse_duration(&deploybot::command::format_duration(d)),
            Some(d)
        );
    }
});
