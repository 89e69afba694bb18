//! The grammar's tests: every form of the `/deploy` command, its errors and
//! their suggestions, and properties over random input.
use std::time::Duration;

use super::*;

/// Packit's nine components.
pub(super) fn vocab() -> Vocabulary {
    let component = |name: &str, aliases: &[&str], retired: bool| VocabComponent {
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        repo: format!("packit/{name}"),
        retired,
        on_request: false,
        // As deploy/packit.toml: contributors work in forks of these.
        forks: ["packit-service", "packit", "ogr"].contains(&name),
    };
    Vocabulary {
        prefix: "/deploy".into(),
        components: vec![
            component("packit-service", &["service"], false),
            component("packit", &[], false),
            component("ogr", &[], false),
            component("sandcastle", &[], false),
            component("dashboard", &[], false),
            component("tokman", &[], false),
            component("deployment", &[], false),
            component("packit-service-fedmsg", &["fedmsg"], false),
            component("packit-service-centosmsg", &["centosmsg"], true),
        ],
        environments: vec!["dev".into()],
        max_ttl: Duration::from_secs(8 * 3600),
    }
}

const COMPONENTS: &str = "Components: `packit-service` (`service`), `packit`, `ogr`, `sandcastle`, `dashboard`, \
                          `tokman`, `deployment`, `packit-service-fedmsg` (`fedmsg`).";
const OPTIONS: &str = "Options: `--base=stg|prod`, `--env=NAME`, `--ttl=DURATION`, `--only=C,C..`, `--without=C,C..`, `--dry-run`, `--keep`.";
const COMMANDS: &str = "Commands: `status`, `release`, `extend`, `cancel`, `help`";
const REF_FORMS: &str = "A ref is a PR (`123`, `#123` or the PR's URL)";
const DURATION: &str = "write hours and minutes like `90m`, `2h` or `1h30m` (at most 8h)";
const POSITIVE: &str = "is not a positive whole number";

pub(super) fn pr(component: &str, n: u64) -> ComponentRef {
    ComponentRef {
        component: component.into(),
        reference: Ref::Pr(n),
        confirms: None,
    }
}
fn branch(component: &str, name: &str) -> ComponentRef {
    ComponentRef {
        component: component.into(),
        reference: Ref::Branch(name.into()),
        confirms: None,
    }
}
fn commit(component: &str, sha: &str) -> ComponentRef {
    ComponentRef {
        component: component.into(),
        reference: Ref::Commit(sha.into()),
        confirms: None,
    }
}
fn fork(component: &str, repo: &str, head: ForkHead) -> ComponentRef {
    ComponentRef {
        component: component.into(),
        reference: Ref::Fork {
            repo: repo.into(),
            head,
        },
        confirms: None,
    }
}
fn refs(refs: &[ComponentRef]) -> Command {
    deploy(|r| r.refs = refs.to_vec())
}
fn deploy(edit: impl FnOnce(&mut DeployRequest)) -> Command {
    let mut request = DeployRequest::default();
    edit(&mut request);
    Command::Deploy(request)
}
fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}
fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

enum Want {
    Ok(Command),
    /// The offending token, and what the message must mention besides it.
    Err(&'static str, &'static [&'static str]),
}
use Want::{Err as E, Ok as O};

#[rustfmt::skip]
fn cases() -> Vec<(String, Want)> {
    let long_branch = format!("/deploy ogr=branch:{}", "a".repeat(256));
    let max_branch = format!("/deploy ogr=branch:{}", "b".repeat(255));
    let sha40 = "0123456789abcdef0123456789ABCDEF01234567";
    let table: Vec<(&str, Want)> = vec![
        // ---- deploy: refs
        ("/deploy", O(Command::Deploy(DeployRequest::default()))),
        ("/deploy ogr=123", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=#123", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=007", O(refs(&[pr("ogr", 7)]))),
        ("/deploy ogr=18446744073709551615", O(refs(&[pr("ogr", u64::MAX)]))),
        ("/deploy ogr=https://github.com/packit/ogr/pull/123", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=https://github.com/packit/ogr/pull/123/", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=https://github.com/packit/ogr/pull/123/files", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=https://github.com/packit/ogr/pull/123/commits", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=https://github.com/packit/ogr/pull/123#issuecomment-42", O(refs(&[pr("ogr", 123)]))),
        ("/deploy ogr=HTTPS://GitHub.com/Packit/OGR/pull/5", O(refs(&[pr("ogr", 5)]))),
        ("/deploy ogr=branch:main", O(refs(&[branch("ogr", "main")]))),
        ("/deploy ogr=someone/ogr:fix", O(refs(&[fork("ogr", "someone/ogr", ForkHead::Branch("fix".into()))]))),
        ("/deploy ogr=1st-user/ogr.fork_2:feature/x@home", O(refs(&[fork("ogr", "1st-user/ogr.fork_2", ForkHead::Branch("feature/x@home".into()))]))),
        ("/deploy ogr=someone/ogr#5", O(refs(&[fork("ogr", "someone/ogr", ForkHead::Pr(5))]))),
        ("/deploy ogr=https://github.com/someone/ogr/pull/5/files", O(refs(&[fork("ogr", "someone/ogr", ForkHead::Pr(5))]))),
        ("/deploy service=someone/packit-service:fix", O(refs(&[fork("packit-service", "someone/packit-service", ForkHead::Branch("fix".into()))]))),
        ("/deploy ogr=branch:feature/x-1.2_y", O(refs(&[branch("ogr", "feature/x-1.2_y")]))),
        ("/deploy ogr=@1A2B3C4D5E6F", O(refs(&[commit("ogr", "1a2b3c4d5e6f")]))),
        ("/deploy ogr=@0123456789abcdef0123456789ABCDEF01234567", O(refs(&[commit("ogr", &sha40.to_lowercase())]))),
        ("/deploy OGR=1", O(refs(&[pr("ogr", 1)]))),
        ("/deploy service=614", O(refs(&[pr("packit-service", 614)]))),
        ("/deploy Fedmsg=3", O(refs(&[pr("packit-service-fedmsg", 3)]))),
        ("/deploy packit-service=614 ogr=123", O(refs(&[pr("packit-service", 614), pr("ogr", 123)]))),
        ("/deploy ogr=123 packit-service=614", O(refs(&[pr("ogr", 123), pr("packit-service", 614)]))),
        ("   /deploy ogr=1", O(refs(&[pr("ogr", 1)]))),
        ("/deploy\togr=1\u{a0}packit=2 ", O(refs(&[pr("ogr", 1), pr("packit", 2)]))),
        // ---- deploy: options
        (
            "/deploy --base=prod packit-service=614 ogr=123",
            O(deploy(|r| {
                r.base = Base::Prod;
                r.refs = vec![pr("packit-service", 614), pr("ogr", 123)];
            })),
        ),
        ("/deploy --base prod", O(deploy(|r| r.base = Base::Prod))),
        ("/deploy --base=PROD", O(deploy(|r| r.base = Base::Prod))),
        ("/deploy --base=stg", O(deploy(|_| {}))),
        ("/deploy --env=dev", O(deploy(|r| r.env = Some("dev".into())))),
        ("/deploy --env DEV", O(deploy(|r| r.env = Some("dev".into())))),
        ("/deploy --ttl=90m", O(deploy(|r| r.ttl = Some(minutes(90))))),
        ("/deploy --ttl 2h", O(deploy(|r| r.ttl = Some(hours(2))))),
        ("/deploy --ttl=1h30m", O(deploy(|r| r.ttl = Some(minutes(90))))),
        ("/deploy --ttl=8h", O(deploy(|r| r.ttl = Some(hours(8))))),
        ("/deploy --only=ogr,packit-service", O(deploy(|r| r.only = vec!["ogr".into(), "packit-service".into()]))),
        ("/deploy --only service,FEDMSG", O(deploy(|r| r.only = vec!["packit-service".into(), "packit-service-fedmsg".into()]))),
        ("/deploy --without=dashboard", O(deploy(|r| r.without = vec!["dashboard".into()]))),
        ("/deploy --without=centosmsg,tokman", O(deploy(|r| r.without = vec!["tokman".into()]))),
        ("/deploy --dry-run", O(deploy(|r| r.dry_run = true))),
        ("/deploy --keep ogr=1", O(deploy(|r| {
            r.keep = true;
            r.refs = vec![pr("ogr", 1)];
        }))),
        (
            "/deploy ogr=1 --dry-run",
            O(deploy(|r| {
                r.dry_run = true;
                r.refs = vec![pr("ogr", 1)];
            })),
        ),
        (
            "/deploy --base=prod --env dev --ttl=1h --only=packit-service --dry-run service=#614 ogr=branch:main packit=@abcdef012345",
            O(deploy(|r| {
                *r = DeployRequest {
                    base: Base::Prod,
                    env: Some("dev".into()),
                    ttl: Some(hours(1)),
                    only: vec!["packit-service".into()],
                    without: vec![],
                    dry_run: true,
                    refs: vec![pr("packit-service", 614), branch("ogr", "main"), commit("packit", "abcdef012345")],
                    lock: None,
                    keep: false,
                    restore: false,
                }
            })),
        ),
        (
            "/deploy --only=ogr packit=1",
            O(deploy(|r| {
                r.only = vec!["ogr".into()];
                r.refs = vec![pr("packit", 1)];
            })),
        ),
        // ---- subcommands
        ("/deploy status", O(Command::Status)),
        ("/deploy Status", O(Command::Status)),
        ("/deploy help", O(Command::Help)),
        ("/deploy release", O(Command::Release { env: None })),
        ("/deploy release Dev", O(Command::Release { env: Some("dev".into()) })),
        ("/deploy extend 1h", O(Command::Extend { duration: hours(1) })),
        ("/deploy lock", O(Command::Lock(LockRequest::default()))),
        ("/deploy unlock", O(Command::Unlock { env: None })),
        ("/deploy unlock DEV", O(Command::Unlock { env: Some("dev".into()) })),
        (
            "/deploy lock Dev --ttl=2h --reason=demo for   the team --ttl=1h",
            O(Command::Lock(LockRequest {
                env: Some("dev".into()),
                ttl: Some(hours(2)),
                reason: Some("demo for   the team --ttl=1h".into()),
            })),
        ),
        ("/deploy extend 1h30m", O(Command::Extend { duration: minutes(90) })),
        ("/deploy cancel", O(Command::Cancel { job: None })),
        ("/deploy cancel 42", O(Command::Cancel { job: Some(42) })),
        ("/deploy cancel #42", O(Command::Cancel { job: Some(42) })),
        // ---- errors: components
        ("/deploy ogrr=1", E("ogrr", &["`ogrr=1`", "did you mean `ogr`?", COMPONENTS])),
        ("/deploy servce=1", E("servce", &["did you mean `service`?", COMPONENTS])),
        ("/deploy packit-servic=1", E("packit-servic", &["did you mean `packit-service`", COMPONENTS])),
        ("/deploy xyz=1", E("xyz", &["Unknown component", COMPONENTS])),
        ("/deploy =1", E("=1", &["does not say which component", "`COMPONENT=REF`", COMPONENTS])),
        ("/deploy ogr=1 ogr=2", E("ogr=2", &["names `ogr` a second time", "give each component once"])),
        ("/deploy packit-service=1 service=2", E("service=2", &["names `packit-service` a second time"])),
        ("/deploy ogr=1 OGR=@123456789012", E("OGR=@123456789012", &["names `ogr` a second time"])),
        ("/deploy centosmsg=1", E("centosmsg", &["`packit-service-centosmsg` is retired and is no longer deployed"])),
        ("/deploy packit-service-centosmsg=1", E("packit-service-centosmsg", &["is retired and is no longer deployed"])),
        // ---- errors: refs
        ("/deploy ogr=", E("ogr=", &["has no ref", REF_FORMS])),
        ("/deploy ogr=main", E("main", &["is not a PR, a branch or a commit", "`ogr=branch:main`", REF_FORMS])),
        ("/deploy ogr=1a2b3c4d5e6f", E("1a2b3c4d5e6f", &["For a commit, write `@1a2b3c4d5e6f`"])),
        ("/deploy ogr=abcdef123456", E("abcdef123456", &["For a commit, write `@abcdef123456`"])),
        ("/deploy ogr=feature~1", E("feature~1", &["is not a PR, a branch or a commit", REF_FORMS])),
        ("/deploy ogr=0", E("0", &["is zero"])),
        ("/deploy ogr=#0", E("#0", &["is zero"])),
        ("/deploy ogr=-1", E("-1", &["without a sign"])),
        ("/deploy ogr=+1", E("+1", &["without a sign"])),
        ("/deploy ogr=#-1", E("#-1", &["without a sign"])),
        ("/deploy ogr=18446744073709551616", E("18446744073709551616", &["is too large"])),
        ("/deploy ogr=12abc", E("12abc", &[POSITIVE])),
        ("/deploy ogr=1.5", E("1.5", &[POSITIVE])),
        ("/deploy ogr=#", E("#", &["is not a PR, a branch or a commit"])),
        ("/deploy ogr=https://github.com/packit/packit/pull/5", E("https://github.com/packit/packit/pull/5", &[
            "is a PR of `packit/packit`", "`ogr` is built from `packit/ogr`", "did you mean `packit=5`?",
        ])),
        ("/deploy sandcastle=https://github.com/someone/sandcastle/pull/5", E("https://github.com/someone/sandcastle/pull/5", &["is a PR of `someone/sandcastle`", "`sandcastle` is built from `packit/sandcastle`"])),
        // ---- errors: forks
        ("/deploy sandcastle=someone/sandcastle:fix", E("someone/sandcastle:fix", &["names a fork", "deployed from `packit/sandcastle` only", "`forks = true`"])),
        ("/deploy ogr=packit/ogr:fix", E("packit/ogr:fix", &["is `ogr`'s own repository, not a fork", "`ogr=branch:fix`"])),
        ("/deploy ogr=packit/ogr#5", E("packit/ogr#5", &["`ogr=5`"])),
        ("/deploy ogr=some_one/ogr:fix", E("some_one/ogr:fix", &["has an owner GitHub does not allow"])),
        ("/deploy ogr=someone/:fix", E("someone/:fix", &["has a repository name GitHub does not allow"])),
        ("/deploy ogr=someone/a/b:fix", E("someone/a/b:fix", &["has a repository name GitHub does not allow"])),
        ("/deploy ogr=someone/ogr:", E("someone/ogr:", &["names a fork's branch git does not allow", "is empty"])),
        ("/deploy ogr=someone/ogr:a..b", E("someone/ogr:a..b", &["names a fork's branch git does not allow", "contains `..`"])),
        ("/deploy ogr=someone/ogr#0", E("someone/ogr#0", &["is zero", "`OWNER/NAME#NUMBER`"])),
        ("/deploy ogr=https://github.com/packit/ogr/issues/5", E("https://github.com/packit/ogr/issues/5", &["is not a pull request URL"])),
        ("/deploy ogr=https://gitlab.com/packit/ogr/pull/5", E("https://gitlab.com/packit/ogr/pull/5", &["is not a pull request URL"])),
        ("/deploy ogr=http://github.com/packit/ogr/pull/5", E("http://github.com/packit/ogr/pull/5", &["is not a pull request URL"])),
        ("/deploy ogr=https://github.com/packit/ogr/pull/5/blame", E("https://github.com/packit/ogr/pull/5/blame", &["is not a pull request URL"])),
        ("/deploy ogr=https://github.com/packit/ogr/pull/0", E("https://github.com/packit/ogr/pull/0", &["is zero"])),
        ("/deploy ogr=https://github.com/packit/ogr/pull/x", E("https://github.com/packit/ogr/pull/x", &[POSITIVE])),
        ("/deploy ogr=branch:", E("branch:", &["is not a branch git allows", "is empty"])),
        ("/deploy ogr=branch:a..b", E("branch:a..b", &["contains `..`"])),
        ("/deploy ogr=branch:-x", E("branch:-x", &["starts with `-`"])),
        ("/deploy ogr=branch:/x", E("branch:/x", &["starts with `/`"])),
        ("/deploy ogr=branch:x/", E("branch:x/", &["ends with `/`"])),
        ("/deploy ogr=branch:x.", E("branch:x.", &["ends with `.`"])),
        ("/deploy ogr=branch:x.lock", E("branch:x.lock", &["ends with `.lock`"])),
        ("/deploy ogr=branch:a.lock/b", E("branch:a.lock/b", &["ends with `.lock`"])),
        ("/deploy ogr=branch:a//b", E("branch:a//b", &["contains `//`"])),
        ("/deploy ogr=branch:a@{b", E("branch:a@{b", &["contains `@{`"])),
        ("/deploy ogr=branch:@", E("branch:@", &["is `@`"])),
        ("/deploy ogr=branch:.hidden", E("branch:.hidden", &["starts with `.`"])),
        ("/deploy ogr=branch:a/.b", E("branch:a/.b", &["starts with `.`"])),
        ("/deploy ogr=branch:a~1", E("branch:a~1", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a^", E("branch:a^", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a:b", E("branch:a:b", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a?", E("branch:a?", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a*", E("branch:a*", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a[b", E("branch:a[b", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a\\b", E("branch:a\\b", &["one of `~^:?*[\\`"])),
        ("/deploy ogr=branch:a\u{7f}b", E("branch:a\u{7f}b", &["a control character"])),
        ("/deploy ogr=branch:m\u{430}in", E("branch:m\u{430}in", &["non-ASCII"])),
        (long_branch.as_str(), E("", &["longer than 255 bytes"])),
        ("/deploy ogr=@123456", E("@123456", &["is not a commit", "12 to 40 hex digits"])),
        ("/deploy ogr=@1a2b3c4", E("@1a2b3c4", &["is not a commit", "12 to 40 hex digits"])),
        ("/deploy ogr=123@1a2b3c4", E("123@1a2b3c4", &["names the commit it confirms", "12 to 40 hex digits"])),
        ("/deploy ogr=someone/ogr:fix@1a2b3c4", E("someone/ogr:fix@1a2b3c4", &["names the commit it confirms", "12 to 40 hex digits"])),
        ("/deploy ogr=@0123456789abcdef0123456789abcdef012345678", E("@0123456789abcdef0123456789abcdef012345678", &["is not a commit"])),
        ("/deploy ogr=@xyz1234", E("@xyz1234", &["is not a commit"])),
        ("/deploy ogr=@", E("@", &["is not a commit"])),
        // ---- errors: options
        ("/deploy --bsae=prod", E("--bsae", &["Unknown option `--bsae`", "did you mean `--base`?", OPTIONS])),
        ("/deploy --dryrun", E("--dryrun", &["did you mean `--dry-run`?", OPTIONS])),
        ("/deploy --Base=prod", E("--Base", &["did you mean `--base`?"])),
        ("/deploy \u{2014}base=prod", E("\u{2014}base", &["did you mean `--base`?"])),
        ("/deploy -env dev", E("-env", &["did you mean `--env`?"])),
        ("/deploy --frobnicate", E("--frobnicate", &["Unknown option", OPTIONS])),
        ("/deploy --", E("--", &["Unknown option", OPTIONS])),
        ("/deploy --base", E("--base", &["needs a value", "`--base=stg|prod`"])),
        ("/deploy --env=", E("--env=", &["needs a value", "`--env=NAME`"])),
        ("/deploy --ttl --dry-run", E("--ttl", &["needs a value", "`--ttl=DURATION`"])),
        ("/deploy --only", E("--only", &["needs a value", "`--only=C,C..`"])),
        ("/deploy --base=prod --base=stg", E("--base", &["is given twice"])),
        ("/deploy --dry-run --dry-run", E("--dry-run", &["is given twice"])),
        ("/deploy --ttl=1h ogr=1 --ttl 2h", E("--ttl", &["is given twice"])),
        ("/deploy --dry-run=yes", E("--dry-run=yes", &["takes no value"])),
        ("/deploy --keep=1h", E("--keep=1h", &["`--keep` takes no value"])),
        ("/deploy --base=production", E("production", &["`--base` is `stg` or `prod`"])),
        ("/deploy --base dev", E("dev", &["`--base` is `stg` or `prod`"])),
        ("/deploy --env=staging", E("staging", &["Unknown environment", "Environments: `dev`."])),
        ("/deploy --env dve", E("dve", &["did you mean `dev`?", "Environments: `dev`."])),
        ("/deploy --ttl=0m", E("0m", &["is not a duration", DURATION])),
        ("/deploy --ttl=1.5h", E("1.5h", &[DURATION])),
        ("/deploy --ttl=-1h", E("-1h", &[DURATION])),
        ("/deploy --ttl=h", E("h", &[DURATION])),
        ("/deploy --ttl=1x", E("1x", &[DURATION])),
        ("/deploy --ttl=45s", E("45s", &[DURATION])),
        ("/deploy --ttl=1m1h", E("1m1h", &[DURATION])),
        ("/deploy --ttl=1h30", E("1h30", &[DURATION])),
        ("/deploy --ttl=99999999999999999999h", E("99999999999999999999h", &[DURATION])),
        ("/deploy --ttl=5124095576030432h", E("5124095576030432h", &[DURATION])),
        ("/deploy --ttl=9h", E("9h", &["longer than the maximum of 8h"])),
        ("/deploy --ttl=8h1m", E("8h1m", &["longer than the maximum of 8h"])),
        ("/deploy --only=ogr --without=packit", E("--without", &["`--only` and `--without` cannot be used together"])),
        ("/deploy --without ogr --only packit", E("--only", &["cannot be used together"])),
        ("/deploy --only=ogrr", E("ogrr", &["`--only=ogrr`", "did you mean `ogr`?", COMPONENTS])),
        ("/deploy --without=ogr,xyz", E("xyz", &["Unknown component", COMPONENTS])),
        ("/deploy --only=ogr,", E("ogr,", &["empty component name"])),
        ("/deploy --only=ogr,OGR", E("OGR", &["names `ogr` a second time"])),
        ("/deploy --only=centosmsg", E("centosmsg", &["`packit-service-centosmsg` is retired and is no longer deployed"])),
        ("/deploy --without=ogr ogr=1", E("ogr=1", &["`--without` leaves it out"])),
        // ---- errors: words that are neither commands nor C=REF
        ("/deploy foo", E("foo", &["is not a command and not `COMPONENT=REF`", COMMANDS, "`/deploy help`"])),
        ("/deploy stauts", E("stauts", &["did you mean `status`?", COMMANDS])),
        ("/deploy relase", E("relase", &["did you mean `release`?"])),
        ("/deploy servic", E("servic", &["did you mean `service=REF`?"])),
        ("/deploy ogr", E("ogr", &["To deploy `ogr`, give a ref: `ogr=123`"])),
        ("/deploy ogr=1 packit", E("packit", &["To deploy `packit`"])),
        ("/deploy 123", E("123", &["Say which component", "`packit-service=123`"])),
        ("/deploy #123", E("#123", &["`packit-service=#123`"])),
        ("/deploy branch:main", E("branch:main", &["`packit-service=branch:main`"])),
        ("/deploy https://github.com/packit/ogr/pull/5", E("https://github.com/packit/ogr/pull/5", &["`ogr=https://github.com/packit/ogr/pull/5`"])),
        ("/deploy --dry-run status", E("status", &["goes right after the prefix", "`/deploy status`"])),
        // ---- errors: subcommands
        ("/deploy status now", E("now", &["`status` takes no arguments", "remove `now`"])),
        ("/deploy help me", E("me", &["`help` takes no arguments"])),
        ("/deploy release prod", E("prod", &["Unknown environment", "Environments: `dev`."])),
        ("/deploy release dev extra", E("extra", &["`release` takes one argument"])),
        ("/deploy extend", E("extend", &["needs a duration", "`/deploy extend 1h`"])),
        ("/deploy lock prod", E("prod", &["Unknown environment"])),
        ("/deploy lock dev dev", E("dev", &["`lock` takes one environment"])),
        ("/deploy lock --ttl=9h", E("9h", &["longer than the maximum of 8h"])),
        ("/deploy lock --ttl=1h --ttl=2h", E("--ttl=2h", &["gives `--ttl` a second time"])),
        ("/deploy lock --base=prod", E("--base=prod", &["`lock` takes an environment, `--ttl=DURATION` and `--reason=TEXT`"])),
        ("/deploy lock --reason=", E("--reason=", &["`--reason=` needs a text"])),
        ("/deploy unlock dev extra", E("extra", &["`unlock` takes one argument"])),
        ("/deploy extend 1x", E("1x", &["is not a duration", DURATION])),
        ("/deploy extend 9h", E("9h", &["longer than the maximum of 8h"])),
        ("/deploy extend 0m", E("0m", &["is not a duration"])),
        ("/deploy extend 1h 2h", E("2h", &["`extend` takes one argument"])),
        ("/deploy cancel abc", E("abc", &[POSITIVE, "`/deploy cancel 42`"])),
        ("/deploy cancel 0", E("0", &["is zero"])),
        ("/deploy cancel -1", E("-1", &[POSITIVE])),
        ("/deploy cancel 99999999999999999999", E("99999999999999999999", &["is too large"])),
        ("/deploy cancel 1 2", E("2", &["`cancel` takes one argument"])),
        // ---- errors: not a command
        ("/deploy-stg ogr=1", E("/deploy-stg", &["is not a `/deploy` command"])),
        ("/deployment", E("/deployment", &["is not a `/deploy` command"])),
        ("deploy ogr=1", E("deploy", &["is not a `/deploy` command"])),
        ("", E("", &["An empty line is not a `/deploy` command"])),
        ("   ", E("", &["An empty line is not a `/deploy` command"])),
    ];
    let mut cases: Vec<(String, Want)> =
        table.into_iter().map(|(l, w)| (l.to_string(), w)).collect();
    cases.push((
        max_branch.clone(),
        O(refs(&[branch("ogr", &"b".repeat(255))])),
    ));
    cases
}

#[test]
fn grammar_table() {
    let vocab = vocab();
    let cases = cases();
    assert!(cases.len() >= 90, "{} cases", cases.len());
    let errors = cases
        .iter()
        .filter(|(_, w)| matches!(w, Want::Err(..)))
        .count();
    println!("{} cases, {errors} of them errors", cases.len());
    for (line, want) in &cases {
        let got = parse_command(line, &vocab);
        match (want, got) {
            (Want::Ok(want), Ok(got)) => assert_eq!(&got, want, "{line}"),
            (Want::Err(token, mentions), Err(err)) => {
                assert_eq!(&line[err.span.clone()], err.token, "{line}: span");
                if !token.is_empty() || line.is_empty() {
                    assert_eq!(err.token, *token, "{line}: token; {}", err.message);
                }
                // (Control characters are shown as spaces.)
                let quoted: String = err
                    .token
                    .chars()
                    .take(60)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                assert!(
                    err.message.contains(&format!("`{quoted}")),
                    "{line}: quotes {quoted:?}: {}",
                    err.message
                );
                for m in *mentions {
                    assert!(
                        err.message.contains(m),
                        "{line}: expected {m:?} in: {}",
                        err.message
                    );
                }
            }
            (Want::Ok(want), Err(err)) => {
                panic!("{line}: expected {want:?}, got error {}", err.message)
            }
            (Want::Err(..), Ok(got)) => panic!("{line}: expected an error, got {got:?}"),
        }
    }
}

#[test]
fn prefix_is_configurable() {
    let mut vocab = vocab();
    vocab.prefix = "/deploy-stg".into();
    assert_eq!(
        parse_command("/deploy-stg ogr=1", &vocab),
        Ok(refs(&[pr("ogr", 1)]))
    );
    let err = parse_command("/deploy ogr=1", &vocab).unwrap_err();
    assert!(
        err.message.contains("is not a `/deploy-stg` command"),
        "{}",
        err.message
    );
    let err = parse_command("/deploy-stg extend", &vocab).unwrap_err();
    assert!(
        err.message.contains("`/deploy-stg extend 1h`"),
        "{}",
        err.message
    );
}

#[test]
fn error_render_puts_a_caret_under_the_token() {
    let line = "/deploy ogrr=1 packit=2";
    let err = parse_command(line, &vocab()).unwrap_err();
    assert_eq!(err.span, 8..12);
    let out = err.render(line);
    assert!(out.starts_with(&err.message), "{out}");
    assert!(
        out.contains("```text\n/deploy ogrr=1 packit=2\n        ^^^^\n```"),
        "{out}"
    );
    assert!(out.contains("Usage: `/deploy [--base=stg|prod]"), "{out}");
    assert_eq!(err.to_string(), err.message);

    // Columns count chars, not bytes; backticks in the line lengthen the fence.
    let line = "/deploy ogr=é ``` ogr=2";
    let err = parse_command(line, &vocab()).unwrap_err();
    assert_eq!(err.token, "é");
    assert!(
        err.render(line)
            .contains("````text\n/deploy ogr=é ``` ogr=2\n            ^\n````"),
        "{}",
        err.render(line)
    );

    // A long line is shown as a window around the token.
    let line = format!("/deploy ogr=1 {}ogrr=1 packit=2", " ".repeat(200));
    let err = parse_command(&line, &vocab()).unwrap_err();
    let out = err.render(&line);
    let shown = out.lines().find(|l| l.starts_with('…')).unwrap();
    let caret = out
        .lines()
        .find(|l| l.trim_start().starts_with('^'))
        .unwrap();
    let col = caret.chars().take_while(|c| *c == ' ').count();
    assert_eq!(shown.chars().skip(col).take(4).collect::<String>(), "ogrr");
}

#[test]
fn user_text_cannot_escape_its_code_span() {
    let err = parse_command("/deploy ogr=a`@someone`b", &vocab()).unwrap_err();
    assert!(
        err.message.starts_with("``a`@someone`b`` is not"),
        "{}",
        err.message
    );
    let err = parse_command("/deploy `x`=1", &vocab()).unwrap_err();
    assert!(err.message.contains("`` `x` ``"), "{}", err.message);
}

#[test]
fn durations() {
    for (text, secs) in [
        ("90m", 5400),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h90m", 9000),
        ("1m", 60),
        ("01h", 3600),
    ] {
        assert_eq!(
            parse_duration(text),
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
    for text in [
        "",
        "0m",
        "0h0m",
        "1.5h",
        "-1h",
        "+1h",
        "h",
        "m",
        "1x",
        "45s",
        "1H",
        "1h 30m",
        "1m1h",
        "1h1h",
        "99999999999999999999m",
    ] {
        assert_eq!(parse_duration(text), None, "{text}");
    }
    for (secs, text) in [
        (5400, "1h30m"),
        (7200, "2h"),
        (600, "10m"),
        (0, "0m"),
        (3645, "1h45s"),
    ] {
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
    }
}

#[test]
fn refs_display_and_validators() {
    assert_eq!(Ref::Pr(123).to_string(), "#123");
    assert_eq!(Ref::Branch("main".into()).to_string(), "branch:main");
    assert_eq!(Ref::Commit("1a2b3c4".into()).to_string(), "@1a2b3c4");
    assert_eq!((Base::Stg.as_str(), Base::Prod.as_str()), ("stg", "prod"));
    assert!(valid_branch_name("release/1.0") && !valid_branch_name("a b"));
    assert!(valid_commit("abcdef012345") && !valid_commit("abcdef0") && !valid_commit("abcdefg"));
}

#[test]
fn include_current_pr() {
    let Ok(Command::Deploy(mut request)) = parse_command("/deploy ogr=1", &vocab()) else {
        panic!()
    };
    assert!(request.include_current_pr("packit-service", 614));
    assert_eq!(request.refs, vec![pr("ogr", 1), pr("packit-service", 614)]);
    assert!(
        !request.include_current_pr("ogr", 5),
        "the command names ogr itself"
    );
    assert!(
        !request.include_current_pr("packit-service", 615),
        "already added"
    );
    assert_eq!(request.refs.len(), 2);

    // An alias in the command is canonical in the request, so it counts too.
    let Ok(Command::Deploy(mut request)) = parse_command("/deploy service=@abcdef012345", &vocab())
    else {
        panic!()
    };
    assert!(!request.include_current_pr("packit-service", 614));
    // `--without` names the component as well.
    let Ok(Command::Deploy(mut request2)) = parse_command("/deploy --without=ogr", &vocab()) else {
        panic!()
    };
    assert!(!request2.include_current_pr("ogr", 5));
    assert!(request2.refs.is_empty());
    // An empty command deploys just the current PR.
    let mut empty = DeployRequest::default();
    assert!(empty.include_current_pr("ogr", 9));
    assert_eq!(empty.to_args(), "ogr=9");
    request.dry_run = true;
    assert_eq!(request.to_args(), "--dry-run packit-service=@abcdef012345");
}

#[test]
fn to_args_is_canonical_and_round_trips() {
    let vocab = vocab();
    let line = "/deploy ogr=#123 --dry-run service=https://github.com/packit/packit-service/pull/614/files --BASE=PROD --ttl 90m --without Dashboard --env=DEV";
    // (--BASE is not an option; fix it to get a request.)
    assert!(parse_command(line, &vocab).is_err());
    let line = line.replace("--BASE", "--base");
    let Ok(Command::Deploy(request)) = parse_command(&line, &vocab) else {
        panic!()
    };
    let args = request.to_args();
    assert_eq!(
        args,
        "--base=prod --env=dev --ttl=1h30m --without=dashboard --dry-run ogr=123 packit-service=614"
    );
    assert_eq!(
        parse_command(&format!("/deploy {args}"), &vocab),
        Ok(Command::Deploy(request))
    );
    assert_eq!(DeployRequest::default().to_args(), "");
}

#[test]
fn serde_json_shape_and_round_trip() {
    let Ok(command) = parse_command(
        "/deploy --base=prod --ttl=2h packit-service=614 ogr=branch:main sandcastle=@ABCDEF012345",
        &vocab(),
    ) else {
        panic!()
    };
    let json = serde_json::to_value(&command).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "command": "deploy",
            "base": "prod",
            "env": null,
            "ttl": 7200,
            "only": [],
            "without": [],
            "dry_run": false,
            "refs": [
                {"component": "packit-service", "ref": {"kind": "pr", "value": 614}},
                {"component": "ogr", "ref": {"kind": "branch", "value": "main"}},
                {"component": "sandcastle", "ref": {"kind": "commit", "value": "abcdef012345"}},
            ],
        })
    );
    let others = [
        (Command::Status, serde_json::json!({"command": "status"})),
        (Command::Help, serde_json::json!({"command": "help"})),
        (
            Command::Release {
                env: Some("dev".into()),
            },
            serde_json::json!({"command": "release", "env": "dev"}),
        ),
        (
            Command::Extend {
                duration: minutes(90),
            },
            serde_json::json!({"command": "extend", "duration": 5400}),
        ),
        (
            Command::Cancel { job: None },
            serde_json::json!({"command": "cancel", "job": null}),
        ),
    ];
    for (command, json) in others.into_iter().chain([(command, json)]) {
        assert_eq!(serde_json::to_value(&command).unwrap(), json);
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), command);
    }
    // Missing deploy fields take their defaults.
    assert_eq!(
        serde_json::from_str::<Command>(r#"{"command":"deploy"}"#).unwrap(),
        Command::Deploy(DeployRequest::default())
    );
}

#[test]
fn help_lists_commands_components_and_environments() {
    let mut vocab = vocab();
    vocab.prefix = "/deploy-stg".into();
    let help = help_text(&vocab);
    for expected in [
        "/deploy-stg status",
        "/deploy-stg extend DURATION lengthen this PR's hold (up to 8h)",
        "| `packit-service` | `service` | packit/packit-service and forks |",
        "| `packit` |  | packit/packit and forks |",
        "| `sandcastle` |  | packit/sandcastle |\n",
        "a fork's branch (`someone/ogr:fix`)",
        "| `packit-service-centosmsg` (retired, not deployed) | `centosmsg` |",
        "**Environments**: `dev`",
    ] {
        assert!(help.contains(expected), "{expected:?} in\n{help}");
    }
}

#[test]
fn a_pr_can_name_the_commit_it_confirms() {
    let Ok(Command::Deploy(request)) =
        parse_command("/deploy ogr=#123@1A2B3C4D5E6F packit-service=614", &vocab())
    else {
        panic!("a PR with its commit parses")
    };
    assert_eq!(request.refs[0].reference, Ref::Pr(123));
    assert_eq!(request.refs[0].confirms.as_deref(), Some("1a2b3c4d5e6f"));
    assert_eq!(request.refs[1].confirms, None);
    assert_eq!(request.to_args(), "ogr=123@1a2b3c4d5e6f packit-service=614");
    let again = parse_command(&format!("/deploy {}", request.to_args()), &vocab());
    assert_eq!(again, Ok(Command::Deploy(request)));
}
