//! Scenario tests of the delivery state machine.

use super::*;
use crate::config::{Backoff, StartPosition};

fn settings(mode: DeliveryMode) -> SubscriptionSettings {
    SubscriptionSettings {
        mode,
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(100),
        },
        start: StartPosition::Earliest,
        max_unacked: 100,
    }
}

fn ticket(state: &PartitionCursor, plan: &PollPlan) -> CursorLease {
    let (kind, offsets) = match plan {
        PollPlan::Log { from, to, skip, .. } => (
            LeaseKind::Log,
            (*from..*to).filter(|o| !skip.contains(o)).collect(),
        ),
        PollPlan::Pending(entries) => (LeaseKind::Pending, entries.iter().map(|e| e.0).collect()),
        other => panic!("no lease in {other:?}"),
    };
    CursorLease {
        partition: 0,
        generation: state.generation(),
        kind,
        offsets,
    }
}

const ACK: Outcome = Outcome::Ack;

fn retry() -> Outcome {
    Outcome::Retry {
        delay: None,
        reason: "busy".into(),
    }
}

#[test]
fn ordered_batches_advance_the_cursor_and_one_batch_at_a_time() {
    let s = settings(DeliveryMode::Ordered);
    let mut state = PartitionCursor::recover(0, [], []);
    let plan = state.plan_poll(&s, 0, 10, 4);
    assert_eq!(
        plan,
        PollPlan::Log {
            from: 0,
            to: 4,
            skip: vec![],
            attempts: vec![]
        }
    );
    assert_eq!(state.plan_poll(&s, 0, 10, 4), PollPlan::Busy);
    let t = ticket(&state, &plan);
    let settled = state.settle(&s, &t, &[(0, &ACK), (1, &ACK), (2, &ACK), (3, &ACK)], 0);
    assert_eq!(settled.ops, vec![CursorWrite::Cursor(4)]);
    assert_eq!(settled.accepted, vec![0, 1, 2, 3]);
    assert_eq!(state.committed(), 4);
}

#[test]
fn ordered_retry_blocks_the_partition_until_due_then_redelivers_from_it() {
    let s = settings(DeliveryMode::Ordered);
    let mut state = PartitionCursor::recover(0, [], []);
    let plan = state.plan_poll(&s, 1_000, 10, 4);
    let t = ticket(&state, &plan);
    let failed = retry();
    // Offsets 2 and 3 "acked" after the retry must be ignored.
    let settled = state.settle(
        &s,
        &t,
        &[(0, &ACK), (1, &failed), (2, &ACK), (3, &ACK)],
        1_000,
    );
    assert_eq!(settled.accepted, vec![0]);
    assert_eq!(settled.retried, 1);
    assert_eq!(state.committed(), 1);
    let PollPlan::Idle {
        wake_at_ms: Some(due),
    } = state.plan_poll(&s, 1_000, 10, 4)
    else {
        panic!("must wait for the retry");
    };
    assert!((1_050..=1_100).contains(&due));
    let plan = state.plan_poll(&s, due, 10, 4);
    assert_eq!(
        plan,
        PollPlan::Log {
            from: 1,
            to: 5,
            skip: vec![],
            attempts: vec![(1, 1)]
        }
    );
}

#[test]
fn exhausted_retries_become_dead_letters_and_the_partition_moves_on() {
    let s = settings(DeliveryMode::Ordered);
    let mut state = PartitionCursor::recover(0, [], []);
    let failed = retry();
    let mut now = 0;
    for attempt in 1..=3 {
        let plan = loop {
            match state.plan_poll(&s, now, 1, 1) {
                PollPlan::Idle {
                    wake_at_ms: Some(at),
                } => now = at,
                plan => break plan,
            }
        };
        let t = ticket(&state, &plan);
        let settled = state.settle(&s, &t, &[(0, &failed)], now);
        if attempt < 3 {
            assert_eq!(settled.retried, 1);
        } else {
            assert_eq!(settled.dead_lettered, 1);
            assert!(settled.ops.iter().any(|op| matches!(
                op,
                CursorWrite::Dead {
                    offset: 0,
                    attempts: 3,
                    ..
                }
            )));
        }
    }
    assert_eq!(state.committed(), 1);
    assert_eq!(
        state.acked_above(),
        0,
        "a dead letter the cursor passed leaves no acknowledgement behind"
    );
    assert_eq!(state.scheduled(), 0);
}

#[test]
fn unordered_acks_out_of_order_are_remembered_until_the_cursor_passes() {
    let s = settings(DeliveryMode::Unordered);
    let mut state = PartitionCursor::recover(0, [], []);
    let first = state.plan_poll(&s, 0, 10, 2);
    let second = state.plan_poll(&s, 0, 10, 2);
    let (t1, t2) = (ticket(&state, &first), ticket(&state, &second));
    let settled = state.settle(&s, &t2, &[(2, &ACK), (3, &ACK)], 0);
    assert_eq!(
        settled.ops,
        vec![CursorWrite::AckedInsert(2), CursorWrite::AckedInsert(3)]
    );
    assert_eq!(state.committed(), 0);
    let settled = state.settle(&s, &t1, &[(0, &ACK), (1, &ACK)], 0);
    assert_eq!(
        settled.ops,
        vec![
            CursorWrite::AckedRemove(2),
            CursorWrite::AckedRemove(3),
            CursorWrite::Cursor(4)
        ]
    );
    assert_eq!(state.committed(), 4);
    assert_eq!(state.acked_above(), 0);
}

#[test]
fn recovery_skips_acknowledged_offsets_and_redelivers_the_rest() {
    let s = settings(DeliveryMode::Unordered);
    let mut state = PartitionCursor::recover(5, [7, 8], []);
    assert_eq!(
        state.plan_poll(&s, 0, 10, 10),
        PollPlan::Log {
            from: 5,
            to: 10,
            skip: vec![7, 8],
            attempts: vec![]
        }
    );
}

#[test]
fn the_unordered_window_bounds_how_far_delivery_runs_ahead() {
    let mut s = settings(DeliveryMode::Unordered);
    s.max_unacked = 3;
    let mut state = PartitionCursor::recover(0, [], []);
    let plan = state.plan_poll(&s, 0, 100, 10);
    assert_eq!(ticket(&state, &plan).offsets, vec![0, 1, 2]);
    assert_eq!(
        state.plan_poll(&s, 0, 100, 10),
        PollPlan::Idle { wake_at_ms: None }
    );
}

#[test]
fn released_batches_are_delivered_again_without_counting_an_attempt() {
    for mode in [DeliveryMode::Ordered, DeliveryMode::Unordered] {
        let s = settings(mode);
        let mut state = PartitionCursor::recover(0, [], []);
        let plan = state.plan_poll(&s, 0, 3, 3);
        state.release(&ticket(&state, &plan), 0);
        let again = state.plan_poll(&s, 0, 3, 3);
        let offsets = ticket(&state, &again).offsets;
        assert_eq!(offsets, vec![0, 1, 2], "{mode:?}");
        match again {
            PollPlan::Log { attempts, .. } => assert!(attempts.is_empty()),
            PollPlan::Pending(entries) => assert!(entries.iter().all(|e| e.1 == 0)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn seek_makes_outstanding_leases_stale() {
    let s = settings(DeliveryMode::Ordered);
    let mut state = PartitionCursor::recover(0, [], []);
    let plan = state.plan_poll(&s, 0, 10, 5);
    let t = ticket(&state, &plan);
    assert_eq!(state.seek(8), vec![CursorWrite::Cursor(8)]);
    let settled = state.settle(&s, &t, &[(0, &ACK)], 0);
    assert!(settled.stale && settled.ops.is_empty());
    assert_eq!(state.committed(), 8);
}

#[test]
fn truncation_counts_what_a_lagging_subscription_never_handled() {
    let s = settings(DeliveryMode::Unordered);
    let mut state = PartitionCursor::recover(0, [3], []);
    let (ops, expired) = state.truncate(s.mode, 5);
    // Offsets 0, 1, 2 and 4 were never handled; 3 was.
    assert_eq!(expired, 4);
    assert!(ops.contains(&CursorWrite::AckedRemove(3)) && ops.contains(&CursorWrite::Cursor(5)));
    assert_eq!(state.truncate(s.mode, 4), (vec![], 0));
}

#[test]
fn replays_are_delivered_first_and_leave_the_cursor_alone() {
    let s = settings(DeliveryMode::Ordered);
    let mut state = PartitionCursor::recover(10, [], []);
    state.replay(3, vec![1, 2, 3], 0);
    let plan = state.plan_poll(&s, 0, 20, 5);
    assert_eq!(plan, PollPlan::Pending(vec![(3, 0, Some(vec![1, 2, 3]))]));
    let t = ticket(&state, &plan);
    let settled = state.settle(&s, &t, &[(3, &ACK)], 0);
    assert_eq!(settled.ops, vec![CursorWrite::PendingRemove(3)]);
    assert_eq!(state.committed(), 10);
    assert_eq!(state.scheduled(), 0);
}
