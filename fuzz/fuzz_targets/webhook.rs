//! Webhook decoding on any body, for each event deploybot handles (the
//! first byte picks the event): never a panic, and a malformed body is an
//! error, never a trigger.
#![no_main]

use std::sync::OnceLock;

use deploybot::config::Config;
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 7] = [
    "issue_comment",
    "pull_request",
    "check_run",
    "installation",
    "installation_repositories",
    "ping",
    "push",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::builtin_default)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(pick) % EVENTS.len()];
    let decoded = deploybot::webhook::decode(event, body, config());
    if serde_json::from_slice::<serde_json::Value>(body).is_err() {
        assert!(decoded.is_err(), "malformed JSON was decoded");
    }
    // The signature check is total too.
    let secrets = [deploybot::settings::Secret::new("fuzz")];
    let header = String::from_utf8_lossy(body);
    let _ = deploybot::webhook::verify(&secrets, body, &header);
});
