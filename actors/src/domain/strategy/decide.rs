//! Whether a later step goes out for one target: pure functions over what is known of the
//! target's deliveries on the steps its conditions name, tested by tables below. The
//! strategy actors read that from the database, decide here, and write the outcome with a
//! conditional update.
//!
//! A condition "not delivered (not clicked) on step j within D" is
//! * **held** once D has passed since step j was planned for the target and its delivery
//!   there is not delivered (clicked) — also when it failed or was never sent;
//! * **failed** as soon as the delivery is delivered (clicked) before that, or when step j
//!   did not run for the target at all (there is nothing that could have been delivered);
//! * **undecided** until then, or while step j may still run for the target.
//!
//! AND fires when every condition holds and is cancelled by the first that fails; OR
//! fires on the first that holds and is cancelled when all fail.

use chrono::{DateTime, Duration, Utc};

use super::{Event, Op, Step};
use crate::domain::DeliveryState;

/// What is known of a target on the step a condition names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The step did not run for the target, and no longer can.
    NotRun,
    /// The step may still run for the target; it is decided by `next` at the earliest.
    Pending { next: DateTime<Utc> },
    /// The target's delivery on the step: when it was planned, and its state now.
    Ran {
        started: DateTime<Utc>,
        state: DeliveryState,
    },
}

/// Where one condition stands for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Holds,
    Fails,
    /// Not known before `at`.
    Undecided {
        at: DateTime<Utc>,
    },
}

/// What happens to a target's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The step goes out for the target now.
    Fire,
    /// The step does not go out for the target: a condition settled it in time.
    Cancel,
    /// Look again at `until`.
    Wait { until: DateTime<Utc> },
}

/// Where the condition (`event` within `within_seconds`) stands at `now`.
pub fn condition(event: Event, within_seconds: u32, seen: Seen, now: DateTime<Utc>) -> Cond {
    match seen {
        Seen::NotRun => Cond::Fails,
        Seen::Pending { next } => Cond::Undecided { at: next },
        Seen::Ran { started, state } => {
            let settled = match event {
                Event::NotDelivered => state.is_delivered(),
                Event::NotClicked => state == DeliveryState::Clicked,
            };
            let deadline = started + Duration::seconds(i64::from(within_seconds));
            if settled {
                Cond::Fails
            } else if now >= deadline {
                Cond::Holds
            } else {
                Cond::Undecided { at: deadline }
            }
        }
    }
}

/// Joins a step's conditions by its operator.
pub fn decide(op: Op, conds: &[Cond]) -> Decision {
    let holds = conds.iter().filter(|c| **c == Cond::Holds).count();
    let fails = conds.iter().filter(|c| **c == Cond::Fails).count();
    let next = conds
        .iter()
        .filter_map(|c| match c {
            Cond::Undecided { at } => Some(*at),
            _ => None,
        })
        .min();
    match op {
        Op::And if fails > 0 => Decision::Cancel,
        Op::And if holds == conds.len() => Decision::Fire,
        Op::Or if holds > 0 => Decision::Fire,
        Op::Or if fails == conds.len() => Decision::Cancel,
        _ => match next {
            Some(until) => Decision::Wait { until },
            // Only reachable with no conditions at all, which a checked strategy never has.
            None => Decision::Cancel,
        },
    }
}

/// The deadlines that deliveries of step `from` (counted from 1) planned at `started`
/// set: for each later step with a condition on `from`, that step (counted from 1) and the
/// earliest time one of those conditions can hold.
pub fn deadlines(
    steps: &[Step],
    from: usize,
    started: DateTime<Utc>,
) -> Vec<(usize, DateTime<Utc>)> {
    steps
        .iter()
        .enumerate()
        .skip(from)
        .filter_map(|(i, step)| {
            let within = step
                .when
                .as_ref()?
                .conditions
                .iter()
                .filter(|c| c.step == from)
                .map(|c| c.within_seconds)
                .min()?;
            Some((i + 1, started + Duration::seconds(i64::from(within))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn a_condition_stands_as_the_table_says() {
        use DeliveryState::*;
        use Event::*;
        let ran = |state| Seen::Ran {
            started: t(0),
            state,
        };
        let table: &[(&str, Event, Seen, i64, Cond)] = &[
            (
                "submitted, time up",
                NotDelivered,
                ran(Submitted),
                60,
                Cond::Holds,
            ),
            (
                "submitted, time left",
                NotDelivered,
                ran(Submitted),
                59,
                Cond::Undecided { at: t(60) },
            ),
            (
                "delivered in time",
                NotDelivered,
                ran(Delivered),
                30,
                Cond::Fails,
            ),
            (
                "delivered, looked at late",
                NotDelivered,
                ran(Delivered),
                90,
                Cond::Fails,
            ),
            (
                "read counts as delivered",
                NotDelivered,
                ran(Read),
                90,
                Cond::Fails,
            ),
            (
                "clicked counts as delivered",
                NotDelivered,
                ran(Clicked),
                90,
                Cond::Fails,
            ),
            (
                "failed before the deadline waits for it",
                NotDelivered,
                ran(Failed),
                10,
                Cond::Undecided { at: t(60) },
            ),
            (
                "failed, time up",
                NotDelivered,
                ran(Failed),
                60,
                Cond::Holds,
            ),
            (
                "no address, time up",
                NotDelivered,
                ran(Failed),
                61,
                Cond::Holds,
            ),
            (
                "no receipt in the window",
                NotDelivered,
                ran(Unknown),
                60,
                Cond::Holds,
            ),
            (
                "channel off at planning",
                NotDelivered,
                ran(Filtered),
                60,
                Cond::Holds,
            ),
            (
                "delivered is not clicked",
                NotClicked,
                ran(Delivered),
                60,
                Cond::Holds,
            ),
            ("clicked in time", NotClicked, ran(Clicked), 20, Cond::Fails),
            (
                "not clicked yet",
                NotClicked,
                ran(Delivered),
                20,
                Cond::Undecided { at: t(60) },
            ),
            (
                "step never ran",
                NotDelivered,
                Seen::NotRun,
                60,
                Cond::Fails,
            ),
            (
                "step never ran, clicks",
                NotClicked,
                Seen::NotRun,
                0,
                Cond::Fails,
            ),
            (
                "step still pending",
                NotDelivered,
                Seen::Pending { next: t(45) },
                60,
                Cond::Undecided { at: t(45) },
            ),
        ];
        for (name, event, seen, now, want) in table {
            assert_eq!(condition(*event, 60, *seen, t(*now)), *want, "{name}");
        }
    }

    #[test]
    fn deliveries_of_a_step_set_deadlines_for_the_steps_that_name_it() {
        let steps: Vec<Step> = serde_json::from_value(serde_json::json!([
            {"channel": "a"},
            {"channel": "b", "when": {"op": "or", "conditions": [
                {"step": 1, "event": "not_clicked", "within_seconds": 600},
                {"step": 1, "event": "not_delivered", "within_seconds": 60}]}},
            {"channel": "c", "when": {"op": "and", "conditions": [
                {"step": 2, "event": "not_delivered", "within_seconds": 30}]}},
            {"channel": "d", "when": {"op": "and", "conditions": [
                {"step": 1, "event": "not_delivered", "within_seconds": 300},
                {"step": 3, "event": "not_delivered", "within_seconds": 30}]}}
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deadlines(&steps, 1, t(0)), vec![(2, t(60)), (4, t(300))]);
        assert_eq!(deadlines(&steps, 2, t(60)), vec![(3, t(90))]);
        assert_eq!(deadlines(&steps, 3, t(90)), vec![(4, t(120))]);
        assert_eq!(deadlines(&steps, 4, t(120)), vec![]);
    }

    #[test]
    fn steps_join_their_conditions_as_the_table_says() {
        use Cond::*;
        let u = |s| Undecided { at: t(s) };
        let table: &[(&str, Op, Vec<Cond>, Decision)] = &[
            ("and: all hold", Op::And, vec![Holds, Holds], Decision::Fire),
            (
                "and: one fails",
                Op::And,
                vec![Holds, Fails],
                Decision::Cancel,
            ),
            (
                "and: a failure settles before the rest is known",
                Op::And,
                vec![u(30), Fails],
                Decision::Cancel,
            ),
            (
                "and: waits for the earliest unknown",
                Op::And,
                vec![Holds, u(90), u(30)],
                Decision::Wait { until: t(30) },
            ),
            ("or: one holds", Op::Or, vec![Fails, Holds], Decision::Fire),
            (
                "or: one holds while another is unknown",
                Op::Or,
                vec![u(90), Holds],
                Decision::Fire,
            ),
            ("or: all fail", Op::Or, vec![Fails, Fails], Decision::Cancel),
            (
                "or: a failure waits for the rest",
                Op::Or,
                vec![Fails, u(90)],
                Decision::Wait { until: t(90) },
            ),
            ("one condition holds", Op::And, vec![Holds], Decision::Fire),
            ("one condition fails", Op::Or, vec![Fails], Decision::Cancel),
        ];
        for (name, op, conds, want) in table {
            assert_eq!(decide(*op, conds), *want, "{name}");
        }
    }
}
