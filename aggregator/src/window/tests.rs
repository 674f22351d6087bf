use std::time::Duration;

use super::*;

const GAP: Duration = Duration::from_secs(45);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_ms(secs * 1000)
}

#[test]
fn zero_span_is_decided_by_one_sample() {
    let mut window = ConditionWindow::default();
    window.observe(at(0), Verdict::Breach, GAP);
    assert!(window.breach_held_for(Duration::ZERO));
    assert!(!window.clear_held_for(Duration::ZERO));
}

#[test]
fn a_span_needs_two_samples_that_far_apart() {
    let mut window = ConditionWindow::default();
    let span = Duration::from_secs(60);
    window.observe(at(0), Verdict::Breach, GAP);
    assert!(!window.breach_held_for(span));
    window.observe(at(30), Verdict::Breach, GAP);
    assert!(!window.breach_held_for(span));
    window.observe(at(59), Verdict::Breach, GAP);
    assert!(!window.breach_held_for(span));
    window.observe(at(60), Verdict::Breach, GAP);
    assert!(window.breach_held_for(span));
}

#[test]
fn one_contrary_sample_restarts_the_run() {
    let mut window = ConditionWindow::default();
    let span = Duration::from_secs(30);
    window.observe(at(0), Verdict::Breach, GAP);
    window.observe(at(15), Verdict::Clear, GAP);
    window.observe(at(30), Verdict::Breach, GAP);
    assert!(!window.breach_held_for(span));
    window.observe(at(45), Verdict::Breach, GAP);
    assert!(!window.breach_held_for(span));
    window.observe(at(60), Verdict::Breach, GAP);
    assert!(window.breach_held_for(span));
    assert_eq!(window.breach_since(), Some(at(30)));
}

#[test]
fn neither_breaks_both_runs() {
    let mut window = ConditionWindow::default();
    window.observe(at(0), Verdict::Clear, GAP);
    window.observe(at(15), Verdict::Neither, GAP);
    assert!(!window.clear_held_for(Duration::ZERO));
    assert!(!window.breach_held_for(Duration::ZERO));
}

#[test]
fn a_gap_restarts_the_run() {
    let mut window = ConditionWindow::default();
    let span = Duration::from_secs(60);
    window.observe(at(0), Verdict::Breach, GAP);
    window.observe(at(100), Verdict::Breach, GAP);
    assert!(
        !window.breach_held_for(span),
        "100 s apart, but with a 55 s hole in between"
    );
    window.observe(at(130), Verdict::Breach, GAP);
    window.observe(at(160), Verdict::Breach, GAP);
    assert!(window.breach_held_for(span));
}

#[test]
fn old_and_repeated_samples_are_ignored() {
    let mut window = ConditionWindow::default();
    assert!(window.observe(at(10), Verdict::Breach, GAP));
    assert!(!window.observe(at(10), Verdict::Clear, GAP));
    assert!(!window.observe(at(5), Verdict::Clear, GAP));
    assert!(window.breach_held_for(Duration::ZERO));
}
