//! The grammar's tests of fork refs that do not fit the table: a fork's
//! branch with the commit it confirms, and its JSON.
use super::tests::vocab;
use super::*;

#[test]
fn a_fork_can_name_the_commit_it_confirms() {
    let Ok(Command::Deploy(request)) =
        parse_command("/deploy ogr=someone/ogr:fix@1A2B3C4D5E6F", &vocab())
    else {
        panic!("a fork's branch with its commit parses")
    };
    let want = Ref::Fork {
        repo: "someone/ogr".into(),
        head: ForkHead::Branch("fix".into()),
    };
    assert_eq!(request.refs[0].reference, want);
    assert_eq!(request.refs[0].confirms.as_deref(), Some("1a2b3c4d5e6f"));
    assert_eq!(request.to_args(), "ogr=someone/ogr:fix@1a2b3c4d5e6f");
    let again = parse_command(&format!("/deploy {}", request.to_args()), &vocab());
    assert_eq!(again, Ok(Command::Deploy(request.clone())));
    // In JSON (the API, the stored request) a fork names its repository and head.
    assert_eq!(
        serde_json::to_value(&request.refs[0]).unwrap(),
        serde_json::json!({
            "component": "ogr",
            "ref": {"kind": "fork", "value": {"repo": "someone/ogr", "head": {"branch": "fix"}}},
            "confirms": "1a2b3c4d5e6f",
        })
    );
}
