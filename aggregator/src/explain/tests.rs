//! A run's bound: exactly `MAX_SAMPLES` kept without elision, one more elides one, and a
//! new run (a different start) starts over.

use super::*;

fn run_of(n_samples: i64, since: Timestamp) -> SampleRun {
    let mut run = SampleRun::default();
    for index in 0..n_samples {
        run.push(since, Timestamp::from_unix_ms(index), index as f64);
    }
    run
}

#[test]
fn a_run_of_max_samples_keeps_them_all() {
    let (kept, elided) = run_of(MAX_SAMPLES as i64, Timestamp::from_unix_ms(0)).samples();
    assert_eq!(kept.len(), MAX_SAMPLES);
    assert_eq!(elided, 0);
    assert!(
        kept.windows(2)
            .all(|pair| pair[0].time_ms + 1 == pair[1].time_ms)
    );
}

#[test]
fn one_more_sample_elides_the_oldest_of_the_tail() {
    let (kept, elided) = run_of(MAX_SAMPLES as i64 + 1, Timestamp::from_unix_ms(0)).samples();
    assert_eq!(kept.len(), MAX_SAMPLES);
    assert_eq!(elided, 1);
    assert_eq!(kept[HEAD_SAMPLES - 1].time_ms, 9);
    assert_eq!(
        kept[HEAD_SAMPLES].time_ms, 11,
        "sample 10 is the one left out"
    );
    assert_eq!(kept.last().unwrap().time_ms, MAX_SAMPLES as i64);
}

#[test]
fn a_run_with_another_start_starts_over() {
    let mut run = run_of(70, Timestamp::from_unix_ms(0));
    run.push(
        Timestamp::from_unix_ms(500),
        Timestamp::from_unix_ms(500),
        1.5,
    );
    assert_eq!(
        run.samples(),
        (
            vec![DecidingSample {
                time_ms: 500,
                value: 1.5
            }],
            0
        )
    );
}
