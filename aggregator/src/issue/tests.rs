use std::time::Duration;

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

fn key() -> IssueKey {
    IssueKey {
        rule: crate::rules::RuleName::parse("disk_usage"),
        subject: Subject::mount(
            &crate::model::NodeKey {
                tenant: "t".into(),
                cluster: "c".into(),
                node: "n".into(),
            },
            "/",
        ),
    }
}

fn finding(severity: Severity, value: f64) -> Finding {
    Finding {
        severity,
        value,
        threshold: 80.0,
        message: format!("at {value}"),
        remedy: "remedy".into(),
    }
}

#[test]
fn opened_updated_closed() {
    let mut book = IssueBook::default();
    let opened = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 85.0)),
        at(0),
    );
    let opened = opened.unwrap();
    assert_eq!(opened.kind, IssueEventKind::Opened);
    assert_eq!(opened.issue.state, IssueState::Open);

    let same = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 86.0)),
        at(1),
    );
    assert_eq!(same, None, "same severity is not news");
    assert_eq!(
        book.get(&key()).unwrap().value,
        86.0,
        "but the value is kept"
    );

    let worse = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Error, 95.0)),
        at(2),
    );
    let worse = worse.unwrap();
    assert_eq!(worse.kind, IssueEventKind::Updated(UpdateReason::Severity));
    assert_eq!(worse.issue.id, opened.issue.id);

    let closed = book.apply(
        &key(),
        Condition::Clear(finding(Severity::Warning, 50.0)),
        at(3),
    );
    let closed = closed.unwrap();
    assert_eq!(closed.kind, IssueEventKind::Closed);
    assert_eq!(closed.issue.id, opened.issue.id);
    assert_eq!(
        closed.issue.severity,
        Severity::Error,
        "closes with the severity it had"
    );
    assert_eq!(closed.issue.closed_at, Some(at(3)));
    assert_eq!(closed.issue.opened_at, at(0));
    assert!(book.get(&key()).is_none());

    assert_eq!(
        book.apply(
            &key(),
            Condition::Clear(finding(Severity::Warning, 40.0)),
            at(4)
        ),
        None
    );
}

#[test]
fn a_new_breach_after_a_close_is_a_new_issue() {
    let mut book = IssueBook::default();
    let first = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 85.0)),
        at(0),
    );
    book.apply(
        &key(),
        Condition::Clear(finding(Severity::Warning, 50.0)),
        at(1),
    );
    let second = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 85.0)),
        at(2),
    );
    assert_ne!(first.unwrap().issue.id, second.unwrap().issue.id);
}

#[test]
fn restored_issues_are_not_opened_again() {
    let mut book = IssueBook::default();
    let opened = book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 85.0)),
        at(0),
    );
    let persisted = opened.unwrap().issue;
    let mut restored = IssueBook::restore([persisted.clone()]);
    assert_eq!(
        restored.apply(
            &key(),
            Condition::Breach(finding(Severity::Warning, 90.0)),
            at(9)
        ),
        None
    );
    let closed = restored.apply(
        &key(),
        Condition::Clear(finding(Severity::Warning, 1.0)),
        at(10),
    );
    assert_eq!(closed.unwrap().issue.id, persisted.id);
}

#[test]
fn reminders_count_from_the_latest_event() {
    let mut book = IssueBook::default();
    book.apply(
        &key(),
        Condition::Breach(finding(Severity::Warning, 85.0)),
        at(0),
    );
    let every = |_: &crate::rules::RuleName| Some(Duration::from_secs(60));
    assert!(book.remind(at(59), every).is_empty());
    book.apply(
        &key(),
        Condition::Breach(finding(Severity::Error, 95.0)),
        at(50),
    );
    assert!(
        book.remind(at(100), every).is_empty(),
        "the update at 50 s reset the count"
    );
    let reminders = book.remind(at(110), every);
    assert_eq!(reminders.len(), 1);
    assert_eq!(
        reminders[0].kind,
        IssueEventKind::Updated(UpdateReason::Reminder)
    );
}

#[test]
fn ids_are_uuid_v7_carrying_the_event_time() {
    let id = new_id(Timestamp::from_unix_ms(1_700_000_000_123));
    let uuid = Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
    let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
    assert_eq!((secs, nanos / 1_000_000), (1_700_000_000, 123));
}
