//! One target's later step, judged from its deliveries on the message's steps: pure,
//! tested by a table below. `run.rs` reads the deliveries and writes the verdicts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::domain::ids::id_time;
use crate::domain::strategy::decide::{condition, decide, Cond, Decision, Seen};
use crate::domain::strategy::{Event, When};
use crate::domain::DeliveryState;
use crate::store::fallback::StepDelivery;

/// What happens to one target's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The step goes out. `holds` are the deliveries whose condition held, with the event
    /// each held on, to be marked as fallen back (only while still unsettled).
    Fire { holds: Vec<(i64, Event)> },
    /// Settled in time: the step does not go out.
    Settled,
    /// Nothing to decide: the step already went out for the target, or the target is not
    /// a user (unknown or disabled: no channel can reach them).
    Moot,
    /// Not decidable before `until`.
    Wait { until: DateTime<Utc> },
}

/// Reasons a delivery was lost at planning that hold for every channel.
const NOT_A_USER: &[&str] = &["unknown_user", "user_disabled"];

/// Judges step `step` (from 1) of one target, whose delivery on the step its timer covers
/// is `covered`. `seen` holds the target's deliveries by step; `pending` the earliest
/// pending deadline of each step that may still run for some target.
pub fn judge(
    when: &When,
    step: i16,
    covered: &StepDelivery,
    seen: &HashMap<i16, &StepDelivery>,
    pending: &HashMap<i16, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Verdict {
    if seen.contains_key(&step) {
        return Verdict::Moot;
    }
    if covered
        .reason
        .as_deref()
        .is_some_and(|r| NOT_A_USER.contains(&r))
    {
        return Verdict::Moot;
    }
    let mut holds = Vec::new();
    let conds: Vec<Cond> = when
        .conditions
        .iter()
        .map(|c| {
            let on = c.step as i16;
            let s = match (seen.get(&on), pending.get(&on)) {
                (Some(d), _) => Seen::Ran {
                    started: id_time(d.id),
                    state: d.state,
                },
                (None, Some(next)) => Seen::Pending { next: *next },
                (None, None) => Seen::NotRun,
            };
            let cond = condition(c.event, c.within_seconds, s, now);
            if let (Cond::Holds, Some(d)) = (cond, seen.get(&on)) {
                holds.push((d.id, c.event));
            }
            cond
        })
        .collect();
    match decide(when.op, &conds) {
        Decision::Fire => Verdict::Fire { holds },
        Decision::Cancel => Verdict::Settled,
        Decision::Wait { until } => Verdict::Wait { until },
    }
}

/// The states that settle a condition on `event`: a delivery in one of them is not marked
/// as fallen back (a receipt that committed before the decision wins).
pub fn settling_states(event: Event) -> Vec<i16> {
    match event {
        Event::NotDelivered => DeliveryState::codes(DeliveryState::is_delivered),
        Event::NotClicked => vec![DeliveryState::Clicked.as_i16()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::IdGenerator;
    use crate::domain::strategy::Op;
    use chrono::Duration;

    fn when(op: Op, conds: &[(usize, Event, u32)]) -> When {
        When {
            op,
            conditions: conds
                .iter()
                .map(|(step, event, within)| crate::domain::strategy::Condition {
                    step: *step,
                    event: *event,
                    within_seconds: *within,
                })
                .collect(),
        }
    }

    fn d(id: i64, step: i16, state: DeliveryState, reason: Option<&str>) -> StepDelivery {
        StepDelivery {
            user_id: "u".into(),
            step,
            id,
            state,
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn targets_are_judged_as_the_table_says() {
        use DeliveryState::*;
        use Event::*;
        let ids = IdGenerator::new(1);
        let id = ids.next_id();
        let t0 = id_time(id);
        let at = |s: i64| t0 + Duration::seconds(s);
        let first = d(id, 1, Submitted, None);
        let delivered = d(id, 1, Delivered, None);
        let lost = d(id, 1, Failed, Some("no_address"));
        let unknown = d(id, 1, Filtered, Some("unknown_user"));
        let second = d(id, 2, Submitted, None);
        let third = d(id, 3, Queued, None);
        let one = when(Op::And, &[(1, NotDelivered, 60)]);
        let both = when(Op::And, &[(1, NotDelivered, 60), (2, NotDelivered, 60)]);
        let either = when(Op::Or, &[(1, NotDelivered, 60), (2, NotClicked, 60)]);
        let none = HashMap::new();
        let step2_pending: HashMap<i16, DateTime<Utc>> = [(2, at(90))].into();
        type Row<'a> = (
            &'a str,
            &'a When,
            i16,
            &'a StepDelivery,
            Vec<&'a StepDelivery>,
            &'a HashMap<i16, DateTime<Utc>>,
            i64,
            Verdict,
        );
        let table: Vec<Row> = vec![
            (
                "not delivered in time",
                &one,
                2,
                &first,
                vec![&first],
                &none,
                60,
                Verdict::Fire {
                    holds: vec![(id, NotDelivered)],
                },
            ),
            (
                "too early",
                &one,
                2,
                &first,
                vec![&first],
                &none,
                30,
                Verdict::Wait { until: at(60) },
            ),
            (
                "delivered in time",
                &one,
                2,
                &delivered,
                vec![&delivered],
                &none,
                60,
                Verdict::Settled,
            ),
            (
                "no address falls back",
                &one,
                2,
                &lost,
                vec![&lost],
                &none,
                60,
                Verdict::Fire {
                    holds: vec![(id, NotDelivered)],
                },
            ),
            (
                "not a user",
                &one,
                2,
                &unknown,
                vec![&unknown],
                &none,
                60,
                Verdict::Moot,
            ),
            (
                "already sent",
                &one,
                3,
                &first,
                vec![&first, &third],
                &none,
                60,
                Verdict::Moot,
            ),
            (
                "and: step 2 never ran",
                &both,
                3,
                &first,
                vec![&first],
                &none,
                60,
                Verdict::Settled,
            ),
            (
                "and: step 2 may still run",
                &both,
                3,
                &first,
                vec![&first],
                &step2_pending,
                60,
                Verdict::Wait { until: at(90) },
            ),
            (
                "and: both held",
                &both,
                3,
                &first,
                vec![&first, &second],
                &none,
                60,
                Verdict::Fire {
                    holds: vec![(id, NotDelivered), (id, NotDelivered)],
                },
            ),
            (
                "or: the first holds",
                &either,
                3,
                &first,
                vec![&first],
                &none,
                60,
                Verdict::Fire {
                    holds: vec![(id, NotDelivered)],
                },
            ),
            (
                "or: delivered, step 2 never ran",
                &either,
                3,
                &delivered,
                vec![&delivered],
                &none,
                60,
                Verdict::Settled,
            ),
        ];
        for (name, when, step, covered, seen, pending, now, want) in table {
            let seen: HashMap<i16, &StepDelivery> = seen.into_iter().map(|d| (d.step, d)).collect();
            assert_eq!(
                judge(when, step, covered, &seen, pending, at(now)),
                want,
                "{name}"
            );
        }
    }
}
