//! Refs (`123`, `#123`, PR URL, `branch:NAME`, `@SHA`, `123@SHA`, a fork's
//! `OWNER/NAME:BRANCH` or `OWNER/NAME#N`) and their validation. Pure text rules; knows no GitHub.

use super::tokenize::{code, did_you_mean};
use super::{ForkHead, Ref, VocabComponent, Vocabulary};

/// Why a PR or job number is not valid, as the end of a sentence.
fn number_problem(digits: &str) -> Option<&'static str> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        Some("is not a positive whole number")
    } else if digits.bytes().all(|b| b == b'0') {
        Some("is zero; numbers start at 1")
    } else if digits.parse::<u64>().is_err() {
        Some("is too large")
    } else {
        None
    }
}

/// A positive whole number: ASCII digits, optionally after `#`, no sign, fits in u64.
pub(crate) fn parse_number(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('#').unwrap_or(text);
    match number_problem(digits) {
        Some(problem) => Err(format!("{} {problem}.", code(text))),
        None => digits
            .parse()
            .map_err(|_| format!("{} is too large.", code(text))),
    }
}

/// Whether `name` is a branch name git accepts (`git check-ref-format --branch`),
/// restricted to printable ASCII.
pub fn valid_branch_name(name: &str) -> bool {
    branch_problem(name).is_none()
}

/// Why `name` is not an acceptable branch name, as the end of a sentence.
fn branch_problem(name: &str) -> Option<&'static str> {
    let bad_char = |c: char| !c.is_ascii_graphic() || "~^:?*[\\".contains(c);
    let checks: [(bool, &'static str); 13] = [
        (name.is_empty(), "is empty"),
        (name.len() > 255, "is longer than 255 bytes"),
        (!name.is_ascii(), "contains non-ASCII characters"),
        (
            name.contains(bad_char),
            "contains a space, a control character or one of `~^:?*[\\`",
        ),
        (name.starts_with('-'), "starts with `-`"),
        (name.starts_with('/'), "starts with `/`"),
        (name.ends_with('/'), "ends with `/`"),
        (name.contains("//"), "contains `//`"),
        (name.ends_with('.'), "ends with `.`"),
        (name.contains(".."), "contains `..`"),
        (
            name == "@" || name.contains("@{"),
            "is `@` or contains `@{`",
        ),
        (
            name.split('/').any(|part| part.starts_with('.')),
            "has a part that starts with `.`",
        ),
        (
            name.split('/').any(|part| part.ends_with(".lock")),
            "has a part that ends with `.lock`",
        ),
    ];
    checks
        .into_iter()
        .find(|(failed, _)| *failed)
        .map(|(_, problem)| problem)
}

/// The fewest hex digits a commit may be named by: short prefixes are
/// ambiguous, and easy to collide with on purpose.
pub const MIN_COMMIT_DIGITS: usize = 12;

/// Whether `sha` is 12 to 40 hex digits.
pub fn valid_commit(sha: &str) -> bool {
    (MIN_COMMIT_DIGITS..=40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `123@1a2b3c4d5e6f` (or `#123@…`, or a fork's `someone/ogr:fix@…`): a PR
/// or fork with the commit the asker confirms. `None` when `text` is not of
/// that form.
pub(crate) fn split_confirmed(text: &str) -> Option<(&str, &str)> {
    let (pr, sha) = text.rsplit_once('@')?;
    let digits = pr.strip_prefix('#').unwrap_or(pr);
    let is_pr = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    // A fork's branch may contain `@`: only hex digits after it name a commit.
    let is_fork =
        split_fork(pr).is_some() && !sha.is_empty() && sha.bytes().all(|b| b.is_ascii_hexdigit());
    (is_pr || is_fork).then_some((pr, sha))
}

/// `OWNER/NAME:BRANCH` or `OWNER/NAME#N`: the repository and what follows
/// its separator. `None` when `text` is not of that form.
fn split_fork(text: &str) -> Option<(&str, char, &str)> {
    let at = text.find([':', '#'])?;
    let (repo, rest) = text.split_at(at);
    let separator = rest.chars().next()?;
    repo.contains('/')
        .then_some((repo, separator, &rest[separator.len_utf8()..]))
}

/// Why `repo` is not a GitHub repository's `OWNER/NAME`, as the end of a sentence.
fn repo_problem(repo: &str) -> Option<&'static str> {
    let Some((owner, name)) = repo.split_once('/') else {
        return Some("is not `OWNER/NAME`");
    };
    let login_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let name_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if owner.is_empty()
        || owner.len() > 39
        || !owner.chars().all(login_char)
        || owner.starts_with('-')
        || owner.ends_with('-')
    {
        Some("has an owner GitHub does not allow (letters, digits and single hyphens, at most 39)")
    } else if name.is_empty()
        || name.len() > 100
        || !name.chars().all(name_char)
        || name == "."
        || name == ".."
    {
        Some(
            "has a repository name GitHub does not allow (letters, digits, `.`, `_` and `-`, at most 100)",
        )
    } else {
        None
    }
}

/// A fork's ref for `component`: `repo` (`OWNER/NAME`) and its `head`.
/// `text` is the whole ref, for messages.
fn fork_ref(
    text: &str,
    repo: &str,
    head: ForkHead,
    component: &VocabComponent,
) -> Result<Ref, String> {
    let quoted = code(text);
    if let Some(problem) = repo_problem(repo) {
        return Err(format!("{quoted} names a fork that {problem}."));
    }
    if repo.eq_ignore_ascii_case(&component.repo) {
        let own = match &head {
            ForkHead::Branch(b) => format!("{}=branch:{b}", component.name),
            ForkHead::Pr(n) => format!("{}={n}", component.name),
        };
        return Err(format!(
            "{quoted} is `{}`'s own repository, not a fork; write {}.",
            component.name,
            code(&own)
        ));
    }
    if !component.forks {
        return Err(format!(
            "{quoted} names a fork, but `{}` is deployed from {} only (its configuration does not \
             say `forks = true`); open a pull request there and deploy its number.",
            component.name,
            code(&component.repo)
        ));
    }
    Ok(Ref::Fork {
        repo: repo.to_string(),
        head,
    })
}

/// How to write a ref, for error messages.
pub(crate) const REF_FORMS: &str = "A ref is a PR (`123`, `#123` or the PR's URL), a branch (`branch:NAME`) or a commit (`@1a2b3c4d5e6f`, 12 to 40 hex digits); `123@1a2b3c4d5e6f` is a PR at the commit you confirm. Where forks are allowed, `OWNER/NAME:BRANCH` is a fork's branch and `OWNER/NAME#N` (or its URL) a PR in the fork.";

/// Parse the ref of `component`; the error is a message that quotes `text`.
pub(crate) fn parse_ref(
    text: &str,
    component: &VocabComponent,
    vocab: &Vocabulary,
) -> Result<Ref, String> {
    let quoted = code(text);
    if text
        .get(..4)
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        return parse_pr_url(text, component, vocab);
    }
    if let Some((repo, separator, rest)) = split_fork(text) {
        let head = match separator {
            ':' => match branch_problem(rest) {
                None => ForkHead::Branch(rest.to_string()),
                Some(problem) => {
                    return Err(format!(
                        "{quoted} names a fork's branch git does not allow: the name {problem}."
                    ));
                }
            },
            _ => match (number_problem(rest), rest.parse()) {
                (None, Ok(n)) => ForkHead::Pr(n),
                (problem, _) => {
                    return Err(format!(
                        "{quoted} names a PR in a fork whose number {}; write `OWNER/NAME#NUMBER`.",
                        problem.unwrap_or("is too large")
                    ));
                }
            },
        };
        return fork_ref(text, repo, head, component);
    }
    let unsigned = text.strip_prefix('#').unwrap_or(text);
    let digits_only = !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    // `1a2b3c4` is a commit without its `@` (handled below), `12abc` a bad number.
    if digits_only || (unsigned.starts_with(|c: char| c.is_ascii_digit()) && !valid_commit(text)) {
        return parse_number(text)
            .map(Ref::Pr)
            .map_err(|e| format!("{e} A PR number is a positive whole number."));
    }
    if unsigned.starts_with(['+', '-']) && unsigned[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{quoted} is not a PR number: PR numbers are positive whole numbers, without a sign."
        ));
    }
    if let Some(name) = text.strip_prefix("branch:") {
        return match branch_problem(name) {
            None => Ok(Ref::Branch(name.to_string())),
            Some(problem) => Err(format!(
                "{quoted} is not a branch git allows: the name {problem}."
            )),
        };
    }
    if let Some(sha) = text.strip_prefix('@') {
        return if valid_commit(sha) {
            Ok(Ref::Commit(sha.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{quoted} is not a commit: write `@` and 12 to 40 hex digits, e.g. `@1a2b3c4d5e6f`."
            ))
        };
    }
    let hint = if valid_commit(text) {
        format!(" For a commit, write {}.", code(&format!("@{text}")))
    } else if valid_branch_name(text) {
        format!(
            " For a branch, write {}.",
            code(&format!("{}=branch:{text}", component.name))
        )
    } else {
        String::new()
    };
    Err(format!(
        "{quoted} is not a PR, a branch or a commit.{hint} {REF_FORMS}"
    ))
}

/// The PR in `https://github.com/OWNER/REPO/pull/N` (optionally followed by
/// `/`, `/files`, `/commits`, `/checks`, a query or a `#fragment`), where
/// OWNER/REPO is the component's repository or, where forks are allowed, a fork.
fn parse_pr_url(url: &str, component: &VocabComponent, vocab: &Vocabulary) -> Result<Ref, String> {
    const BASE: &str = "https://github.com/";
    let not_pr_url = || {
        format!(
            "{} is not a pull request URL; write `{BASE}OWNER/REPO/pull/NUMBER`.",
            code(url)
        )
    };
    let path = match url.get(..BASE.len()) {
        Some(base) if base.eq_ignore_ascii_case(BASE) => &url[BASE.len()..],
        _ => return Err(not_pr_url()),
    };
    let path = path.split(['#', '?']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let [owner, repo, "pull", number, tail @ ..] = segments.as_slice() else {
        return Err(not_pr_url());
    };
    if !matches!(
        tail,
        [] | [""] | ["files" | "commits" | "checks"] | ["files" | "commits" | "checks", ""]
    ) {
        return Err(not_pr_url());
    }
    let number = parse_number(number).map_err(|e| format!("{e} (in {})", code(url)))?;
    let repo = format!("{owner}/{repo}");
    if repo.eq_ignore_ascii_case(&component.repo) {
        return Ok(Ref::Pr(number));
    }
    let other = vocab
        .components
        .iter()
        .find(|c| c.repo.eq_ignore_ascii_case(&repo));
    if component.forks && other.is_none() {
        return fork_ref(url, &repo, ForkHead::Pr(number), component);
    }
    let near = other.map(|c| format!("{}={number}", c.name));
    Err(format!(
        "{} is a PR of {}, but `{}` is built from `{}`{}",
        code(url),
        code(&repo),
        component.name,
        component.repo,
        did_you_mean(&near.as_deref().into_iter().collect::<Vec<_>>())
    ))
}
