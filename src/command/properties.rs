//! Properties of the grammar over random input: it never panics, every error
//! points into the line, and a valid request survives a round trip.

use proptest::prelude::*;

use super::tests::{pr, vocab};
use super::*;

/// Fragments that exercise every branch of the grammar.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "status",
            "release",
            "extend",
            "cancel",
            "help",
            "--base",
            "--base=prod",
            "--env",
            "--env=dev",
            "--ttl",
            "--ttl=1h",
            "--only=ogr",
            "--without",
            "--dry-run",
            "--dry-run=1",
            "ogr=1",
            "service=#2",
            "ogr=",
            "=1",
            "centosmsg=1",
            "ogr=branch:",
            "ogr=@",
            "ogr=https://github.com/packit/ogr/pull/",
            "—",
            "`",
            "é",
            "--only=ogr,,",
            "dev",
            "8h",
            "#",
            "0",
            "-",
        ])
        .prop_map(String::from),
        "\\PC{0,12}",
        "[a-z-]{1,8}=[#@a-z0-9:/.]{0,12}",
        any::<String>(),
    ]
}

fn check_error(line: &str, err: &ParseError) {
    assert!(
        line.get(err.span.clone()) == Some(err.token.as_str()),
        "{line:?}: {err:?}"
    );
    assert!(!err.message.is_empty());
    let _ = err.render(line);
    let _ = err.render("");
}

proptest! {
    #[test]
    fn parse_never_panics(line in any::<String>()) {
        if let Err(err) = parse_command(&line, &vocab()) {
            check_error(&line, &err);
        }
    }

    #[test]
    fn parse_never_panics_after_the_prefix(rest in "\\PC*", words in prop::collection::vec(fragment(), 0..6), sep in "[ \t\u{a0}]{1,2}") {
        for line in [format!("/deploy{rest}"), format!("/deploy {}", words.join(&sep))] {
            if let Err(err) = parse_command(&line, &vocab()) {
                check_error(&line, &err);
            }
        }
    }

    #[test]
    fn command_lines_never_panic(body in any::<String>(), parts in prop::collection::vec(prop_oneof![
        prop::sample::select(vec![
            "```", "~~~", "````", "> ", "    ", "\t", "`", "\\", "<!--", "-->", "- ", "1. ", "# ", "\r", "\n", "\r\n",
            "/deploy", "/deploy ogr=1", " ", "é",
        ]).prop_map(String::from),
        "\\PC{0,6}",
    ], 0..24)) {
        let body2 = parts.concat();
        for body in [&body, &body2] {
            let count = body.split('\n').count();
            for line in command_lines(body, "/deploy") {
                prop_assert!(line.text.starts_with("/deploy"));
                prop_assert!(line.line_no >= 1 && line.line_no <= count);
            }
            let _ = new_command_lines(&body2, body, "/deploy");
        }
    }

    #[test]
    fn to_args_round_trips(request in deploy_request()) {
        let line = format!("/deploy {}", request.to_args());
        prop_assert_eq!(parse_command(&line, &vocab()), Ok(Command::Deploy(request)));
    }

    #[test]
    fn aliases_and_case_give_canonical_names(upper in any::<bool>(), n in 1u64..) {
        let name = if upper { "FEDMSG" } else { "fedmsg" };
        let Ok(Command::Deploy(request)) = parse_command(&format!("/deploy {name}={n}"), &vocab()) else {
            return Err(TestCaseError::fail("no request"));
        };
        prop_assert_eq!(request.refs, vec![pr("packit-service-fedmsg", n)]);
    }
}

/// Valid deploy requests over the test vocabulary.
fn deploy_request() -> impl Strategy<Value = DeployRequest> {
    let names: Vec<String> = vocab()
        .components
        .iter()
        .filter(|c| !c.retired)
        .map(|c| c.name.clone())
        .collect();
    let reference = prop_oneof![
        (1u64..).prop_map(Ref::Pr),
        "[a-z0-9_][a-z0-9_-]{0,8}(/[a-z0-9_][a-z0-9_-]{0,8}){0,2}(\\.[0-9])?".prop_map(Ref::Branch),
        "[0-9a-f]{12,40}".prop_map(Ref::Commit),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1u64..=480),
        (
            0..3u8,
            prop::sample::subsequence(names.clone(), 0..=names.len()),
        ),
        (any::<bool>(), any::<bool>()),
        prop::sample::subsequence(names.clone(), 0..=names.len()).prop_shuffle(),
        prop::collection::vec(reference, names.len()),
    )
        .prop_map(
            |(prod, env, ttl, (list_kind, list), (dry_run, keep), ref_components, references)| {
                let mut request = DeployRequest {
                    base: if prod { Base::Prod } else { Base::Stg },
                    env: env.then(|| "dev".to_string()),
                    ttl: ttl.map(|m| Duration::from_secs(m * 60)),
                    dry_run,
                    keep,
                    ..DeployRequest::default()
                };
                match list_kind {
                    1 if !list.is_empty() => request.only = list,
                    2 => request.without = list,
                    _ => {}
                }
                request.refs = ref_components
                    .into_iter()
                    .filter(|c| !request.without.contains(c))
                    .zip(references)
                    .map(|(component, reference)| ComponentRef {
                        component,
                        reference,
                        confirms: None,
                    })
                    .collect();
                request
            },
        )
}
