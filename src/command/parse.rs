//! Parsing one command line into a [`Command`].
//! Pure: the vocabulary comes from the caller; nothing is looked up.

use super::refs::{REF_FORMS, parse_number, parse_ref, split_confirmed, valid_commit};
use super::tokenize::{Token, code, code_list, did_you_mean, suggest, tokenize};
use super::{Base, Command, ComponentRef, DeployRequest, ParseError, VocabComponent, Vocabulary};
use super::{LockRequest, MAX_REASON_CHARS};
use super::{format_duration, parse_duration};

const SUBCOMMANDS: [&str; 7] = [
    "status", "release", "extend", "cancel", "help", "lock", "unlock",
];

/// The deploy options with the placeholder of their value (empty: a flag).
const OPTIONS: [(&str, &str); 7] = [
    ("--base", "stg|prod"),
    ("--env", "NAME"),
    ("--ttl", "DURATION"),
    ("--only", "C,C.."),
    ("--without", "C,C.."),
    ("--dry-run", ""),
    ("--keep", ""),
];

fn error(token: &Token, message: String) -> ParseError {
    ParseError {
        message,
        token: token.text.to_string(),
        span: token.span.clone(),
    }
}

/// Parse one command line (which starts with the prefix, after optional whitespace).
///
/// The first error in the line is returned; it quotes the offending token, and
/// its span is the token's byte range in `line`.
pub fn parse_command(line: &str, vocab: &Vocabulary) -> Result<Command, ParseError> {
    let start = line.len() - line.trim_start().len();
    let after = start + vocab.prefix.len();
    let tokens = tokenize(line);
    let is_command = !vocab.prefix.is_empty()
        && line[start..].starts_with(&vocab.prefix)
        && line[after..].chars().next().is_none_or(char::is_whitespace);
    if !is_command {
        let prefix = code(&vocab.prefix);
        return Err(match tokens.first() {
            Some(first) => error(
                first,
                format!("{} is not a {prefix} command.", code(first.text)),
            ),
            None => error(
                &Token {
                    text: "",
                    span: start..start,
                },
                format!("An empty line is not a {prefix} command."),
            ),
        });
    }
    let args: Vec<Token> = tokens
        .into_iter()
        .filter(|t| t.span.start >= after)
        .collect();
    let Some((sub, rest)) = args.split_first() else {
        return Ok(Command::Deploy(DeployRequest::default()));
    };
    let name = sub.text.to_ascii_lowercase();
    if !SUBCOMMANDS.contains(&name.as_str()) {
        return parse_deploy(&args, vocab).map(Command::Deploy);
    }
    let at_most = |n: usize| match rest.get(n) {
        Some(extra) => {
            let takes = ["no arguments", "one argument"][n];
            Err(error(
                extra,
                format!("`{name}` takes {takes}; remove {}.", code(extra.text)),
            ))
        }
        None => Ok(()),
    };
    let env = |rest: &[Token]| {
        rest.first()
            .map(|t| environment(t, vocab).map(str::to_string))
            .transpose()
    };
    match name.as_str() {
        "status" => at_most(0).map(|()| Command::Status),
        "help" => at_most(0).map(|()| Command::Help),
        "release" => {
            at_most(1)?;
            Ok(Command::Release { env: env(rest)? })
        }
        "unlock" => {
            at_most(1)?;
            Ok(Command::Unlock { env: env(rest)? })
        }
        "lock" => parse_lock(line, rest, vocab).map(Command::Lock),
        "cancel" => {
            at_most(1)?;
            let job = rest.first().map(|t| {
                parse_number(t.text).map_err(|e| {
                    error(
                        t,
                        format!(
                            "{e} A job id is a positive whole number, e.g. `{} cancel 42`.",
                            vocab.prefix
                        ),
                    )
                })
            });
            Ok(Command::Cancel {
                job: job.transpose()?,
            })
        }
        _ => {
            at_most(1)?;
            let Some(value) = rest.first() else {
                let msg = format!(
                    "`extend` needs a duration, e.g. `{} extend 1h`.",
                    vocab.prefix
                );
                return Err(error(sub, msg));
            };
            Ok(Command::Extend {
                duration: duration(value, vocab)?,
            })
        }
    }
}

/// `lock [ENV] [--ttl=DURATION] [--reason=TEXT]`: the reason is the rest
/// of the line, so it comes last.
fn parse_lock(line: &str, args: &[Token], vocab: &Vocabulary) -> Result<LockRequest, ParseError> {
    let mut lock = LockRequest::default();
    for token in args {
        if let Some(text) = token.text.strip_prefix("--reason=") {
            let reason = line[token.span.start + "--reason=".len()..].trim();
            if text.is_empty() || reason.is_empty() {
                let msg = "`--reason=` needs a text, e.g. `--reason=demo for the team`.";
                return Err(error(token, msg.into()));
            }
            if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
                let msg = format!(
                    "{}: a lock's reason is one line of at most {MAX_REASON_CHARS} characters.",
                    code(token.text)
                );
                return Err(error(token, msg));
            }
            lock.reason = Some(reason.to_string());
            break;
        }
        if token.text.starts_with("--ttl=") {
            if lock.ttl.is_some() {
                let msg = format!(
                    "{} gives `--ttl` a second time; give it once.",
                    code(token.text)
                );
                return Err(error(token, msg));
            }
            let value = token.sub("--ttl=".len()..token.text.len());
            lock.ttl = Some(duration(&value, vocab)?);
            continue;
        }
        if token.text.starts_with(['-', '—', '–']) {
            let msg = format!(
                "`lock` takes an environment, `--ttl=DURATION` and `--reason=TEXT`; {} is none of them.",
                code(token.text)
            );
            return Err(error(token, msg));
        }
        if lock.env.is_some() {
            let msg = format!("`lock` takes one environment; remove {}.", code(token.text));
            return Err(error(token, msg));
        }
        lock.env = Some(environment(token, vocab)?.to_string());
    }
    Ok(lock)
}

/// A deploy request: options and `COMPONENT=REF` in any order.
fn parse_deploy(args: &[Token], vocab: &Vocabulary) -> Result<DeployRequest, ParseError> {
    let mut req = DeployRequest::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut ref_tokens: Vec<&Token> = Vec::new();
    let mut i = 0;
    while let Some(token) = args.get(i) {
        i += 1;
        if token.text.starts_with(['-', '—', '–']) {
            let (name, value) = match token.text.find('=') {
                Some(eq) => (token.sub(0..eq), Some(token.sub(eq + 1..token.text.len()))),
                None => (token.clone(), None),
            };
            let Some(&(option, placeholder)) = OPTIONS.iter().find(|(o, _)| *o == name.text) else {
                return Err(unknown_option(&name));
            };
            if seen.contains(&option) {
                let msg = format!("{} is given twice; give each option once.", code(option));
                return Err(error(&name, msg));
            }
            seen.push(option);
            if placeholder.is_empty() {
                // A flag.
                if value.is_some() {
                    let msg = format!(
                        "{} takes no value; write {}, not {}.",
                        code(option),
                        code(option),
                        code(token.text)
                    );
                    return Err(error(token, msg));
                }
                match option {
                    "--dry-run" => req.dry_run = true,
                    _ => req.keep = true,
                }
                continue;
            }
            // `--opt=value`, or `--opt value` when the next word is not an option.
            let value = match value {
                Some(value) => value,
                None => match args.get(i).filter(|next| !next.text.starts_with("--")) {
                    Some(next) => {
                        i += 1;
                        next.clone()
                    }
                    None => return Err(missing_value(token, option, placeholder)),
                },
            };
            if value.text.is_empty() {
                return Err(missing_value(token, option, placeholder));
            }
            if (option == "--only" && seen.contains(&"--without"))
                || (option == "--without" && seen.contains(&"--only"))
            {
                let msg = format!(
                    "`--only` and `--without` cannot be used together; keep one of them ({}).",
                    code(token.text)
                );
                return Err(error(&name, msg));
            }
            match option {
                "--base" => req.base = base(&value)?,
                "--env" => req.env = Some(environment(&value, vocab)?.to_string()),
                "--ttl" => req.ttl = Some(duration(&value, vocab)?),
                "--only" => req.only = component_list(&value, option, vocab)?,
                _ => req.without = component_list(&value, option, vocab)?,
            }
        } else if let Some(eq) = token.text.find('=') {
            let reference = component_ref(token, eq, vocab)?;
            if req.refs.iter().any(|r| r.component == reference.component) {
                let msg = format!(
                    "{} names `{}` a second time; give each component once.",
                    code(token.text),
                    reference.component
                );
                return Err(error(token, msg));
            }
            req.refs.push(reference);
            ref_tokens.push(token);
        } else {
            return Err(bare_word(token, i == 1, vocab));
        }
    }
    let excluded = req
        .refs
        .iter()
        .zip(ref_tokens)
        .find(|(r, _)| req.without.contains(&r.component));
    if let Some((r, token)) = excluded {
        let msg = format!(
            "{} deploys `{}`, but `--without` leaves it out; drop one of them.",
            code(token.text),
            r.component
        );
        return Err(error(token, msg));
    }
    Ok(req)
}

fn base(value: &Token) -> Result<Base, ParseError> {
    match value.text.to_ascii_lowercase().as_str() {
        "stg" => Ok(Base::Stg),
        "prod" => Ok(Base::Prod),
        _ => Err(error(
            value,
            format!("`--base` is `stg` or `prod`, not {}.", code(value.text)),
        )),
    }
}

/// `COMPONENT=REF`, with `=` at byte `eq` of the token.
fn component_ref(token: &Token, eq: usize, vocab: &Vocabulary) -> Result<ComponentRef, ParseError> {
    let (name, value) = (token.sub(0..eq), token.sub(eq + 1..token.text.len()));
    if name.text.is_empty() {
        let msg = format!(
            "{} does not say which component; write `COMPONENT=REF`. {}",
            code(token.text),
            components_sentence(vocab)
        );
        return Err(error(token, msg));
    }
    let component = component(&name, token.text, vocab)?;
    if value.text.is_empty() {
        let msg = format!("{} has no ref after `=`. {REF_FORMS}", code(token.text));
        return Err(error(token, msg));
    }
    let (text, confirms) = match split_confirmed(value.text) {
        Some((pr, sha)) if valid_commit(sha) => (pr, Some(sha.to_ascii_lowercase())),
        Some(_) => {
            let msg = format!(
                "{} names the commit it confirms with too few or wrong digits: write the PR (or the fork's branch), `@` and 12 to 40 hex digits, e.g. `{}=123@1a2b3c4d5e6f`.",
                code(value.text),
                component.name
            );
            return Err(error(&value, msg));
        }
        None => (value.text, None),
    };
    let reference = parse_ref(text, component, vocab).map_err(|msg| error(&value, msg))?;
    Ok(ComponentRef {
        component: component.name.clone(),
        reference,
        confirms,
    })
}

/// A component by name or alias, which must not be retired. `context` is the argument it is part of.
fn component<'v>(
    name: &Token,
    context: &str,
    vocab: &'v Vocabulary,
) -> Result<&'v VocabComponent, ParseError> {
    match vocab.component(name.text) {
        Some(c) if c.retired => {
            let msg = format!(
                "{}: `{}` is retired and is no longer deployed; leave it out.",
                code(name.text),
                c.name
            );
            Err(error(name, msg))
        }
        Some(c) => Ok(c),
        None => {
            let mut msg = format!("Unknown component {}", code(name.text));
            if context != name.text {
                msg.push_str(&format!(" in {}", code(context)));
            }
            msg.push_str(&format!(
                "{} {}",
                did_you_mean(&suggest(name.text, deployable_names(vocab))),
                components_sentence(vocab)
            ));
            Err(error(name, msg))
        }
    }
}

/// `--only`/`--without` value: distinct components, canonical names. Retired
/// components are errors in `--only` and dropped from `--without`.
fn component_list(
    value: &Token,
    option: &str,
    vocab: &Vocabulary,
) -> Result<Vec<String>, ParseError> {
    let mut names: Vec<String> = Vec::new();
    let mut offset = 0;
    for part in value.text.split(',') {
        let item = value.sub(offset..offset + part.len());
        offset += part.len() + 1;
        if part.is_empty() {
            let msg = format!(
                "{} has an empty component name; write e.g. `{option}=ogr,packit`.",
                code(value.text)
            );
            return Err(error(value, msg));
        }
        let c = match vocab.component(part) {
            Some(c) if c.retired && option == "--without" => continue,
            _ => component(&item, &format!("{option}={}", value.text), vocab)?,
        };
        if names.contains(&c.name) {
            let msg = format!(
                "{} in {} names `{}` a second time; list each component once.",
                code(part),
                code(value.text),
                c.name
            );
            return Err(error(&item, msg));
        }
        names.push(c.name.clone());
    }
    Ok(names)
}

fn environment<'v>(token: &Token, vocab: &'v Vocabulary) -> Result<&'v str, ParseError> {
    vocab.environment(token.text).ok_or_else(|| {
        let envs = code_list(vocab.environments.iter().map(String::as_str));
        let near = did_you_mean(&suggest(
            token.text,
            vocab.environments.iter().map(String::as_str),
        ));
        error(
            token,
            format!(
                "Unknown environment {}{near} Environments: {envs}.",
                code(token.text)
            ),
        )
    })
}

/// A duration for `--ttl` or `extend`, at most the configured maximum.
fn duration(token: &Token, vocab: &Vocabulary) -> Result<std::time::Duration, ParseError> {
    let max = format_duration(vocab.max_ttl);
    match parse_duration(token.text) {
        None => Err(error(
            token,
            format!(
                "{} is not a duration; write hours and minutes like `90m`, `2h` or `1h30m` (at most {max}).",
                code(token.text)
            ),
        )),
        Some(d) if d > vocab.max_ttl => Err(error(
            token,
            format!(
                "{} is longer than the maximum of {max}; ask for {max} or less.",
                code(token.text)
            ),
        )),
        Some(d) => Ok(d),
    }
}

fn missing_value(token: &Token, option: &str, placeholder: &str) -> ParseError {
    error(
        token,
        format!(
            "{} needs a value: write `{option}={placeholder}`.",
            code(token.text)
        ),
    )
}

fn unknown_option(name: &Token) -> ParseError {
    let bare = name.text.trim_start_matches(['-', '—', '–']);
    let near = suggest(bare, OPTIONS.iter().map(|(o, _)| &o[2..]));
    let near: Vec<String> = near.iter().map(|o| format!("--{o}")).collect();
    let options: Vec<String> = OPTIONS
        .iter()
        .map(|(o, p)| {
            if p.is_empty() {
                o.to_string()
            } else {
                format!("{o}={p}")
            }
        })
        .collect();
    let msg = format!(
        "Unknown option {}{} Options: {}.",
        code(name.text),
        did_you_mean(&near.iter().map(String::as_str).collect::<Vec<_>>()),
        code_list(options.iter().map(String::as_str))
    );
    error(name, msg)
}

/// A word that is neither an option nor `COMPONENT=REF`; `first` if it came right after the prefix.
fn bare_word(token: &Token, first: bool, vocab: &Vocabulary) -> ParseError {
    let word = token.text;
    let lower = word.to_ascii_lowercase();
    let hint = if SUBCOMMANDS.contains(&lower.as_str()) {
        format!(
            ". `{lower}` goes right after the prefix, on a line of its own: `{} {lower}`.",
            vocab.prefix
        )
    } else if let Some(c) = vocab.component(word) {
        let n = &c.name;
        format!(
            ". To deploy `{n}`, give a ref: `{n}=123` (a PR), `{n}=branch:main` or `{n}=@1a2b3c4d5e6f`."
        )
    } else if let Some(c) = vocab
        .components
        .iter()
        .find(|c| !c.retired && parse_ref(word, c, vocab).is_ok())
    {
        // A ref without its component; a PR URL names its repository, so its component.
        format!(
            ". Say which component it is of, e.g. {}.",
            code(&format!("{}={word}", c.name))
        )
    } else {
        let subcommands = if first {
            suggest(word, SUBCOMMANDS)
        } else {
            Vec::new()
        };
        let components = suggest(word, deployable_names(vocab));
        let components: Vec<String> = components.iter().map(|c| format!("{c}=REF")).collect();
        let mut near = subcommands;
        near.extend(components.iter().map(String::as_str));
        did_you_mean(&near)
    };
    let msg = format!(
        "{} is not a command and not `COMPONENT=REF`{hint} Commands: {}; `{} help` lists the components.",
        code(word),
        code_list(SUBCOMMANDS),
        vocab.prefix
    );
    error(token, msg)
}

/// The names and aliases of the components that can be deployed.
fn deployable_names(vocab: &Vocabulary) -> impl Iterator<Item = &str> {
    let deployable = vocab.components.iter().filter(|c| !c.retired);
    deployable
        .flat_map(|c| std::iter::once(&c.name).chain(&c.aliases))
        .map(String::as_str)
}

/// `Components: `a` (`alias`), `b`.` — the components that can be deployed.
fn components_sentence(vocab: &Vocabulary) -> String {
    let names: Vec<String> = vocab
        .components
        .iter()
        .filter(|c| !c.retired)
        .map(|c| {
            if c.aliases.is_empty() {
                code(&c.name)
            } else {
                format!(
                    "{} ({})",
                    code(&c.name),
                    code_list(c.aliases.iter().map(String::as_str))
                )
            }
        })
        .collect();
    format!("Components: {}.", names.join(", "))
}
