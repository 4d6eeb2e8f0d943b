//! Fallback strategies: ordered steps, each one channel used once; step k > 1 runs for a
//! target when its condition over earlier steps holds ("not delivered within D", "not
//! clicked within D", joined by AND or OR).
//!
//! [`StrategySpec::check`] holds every rule of `PUT /v1/strategies/{id}`, each refusal
//! naming its field; [`reports`] says what a channel type can report, which decides
//! whether a condition is possible and what "delivered" means there.

pub mod bind;
pub mod decide;
mod reports;

use serde::{Deserialize, Serialize};

use super::send::{check_id, usable, ChannelLookup, FieldError};
use super::ChannelType;

pub use reports::{reports, Delivery, Reports};

/// Most steps in a strategy.
pub const MAX_STEPS: usize = 10;
/// Most conditions of one step.
pub const MAX_CONDITIONS: usize = 10;
/// The range of `within_seconds`: receipts take some seconds to come back; a deadline
/// beyond three days outlives most providers' receipts.
pub const MIN_WITHIN_SECONDS: u32 = 10;
pub const MAX_WITHIN_SECONDS: u32 = 3 * 86_400;

/// A strategy as an app defines it (`PUT /v1/strategies/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    pub op: Op,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// An earlier step, counted from 1.
    pub step: usize,
    pub event: Event,
    pub within_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    NotDelivered,
    NotClicked,
}

impl StrategySpec {
    /// Checks every rule against the app's channels (each step's channel granted and
    /// switched on); answers the steps' channel types, in order.
    pub fn check(&self, channels: &dyn ChannelLookup) -> Result<Vec<ChannelType>, FieldError> {
        if !(2..=MAX_STEPS).contains(&self.steps.len()) {
            return Err(FieldError::new(
                "invalid_value",
                "steps",
                format!(
                    "a strategy has 2-{MAX_STEPS} steps (to send on several channels at once, \
                     name them in `channels` instead)"
                ),
            ));
        }
        let mut types: Vec<ChannelType> = Vec::with_capacity(self.steps.len());
        for (k, step) in self.steps.iter().enumerate() {
            let field = format!("steps[{k}]");
            check_id(&step.channel, &format!("{field}.channel"))?;
            if self.steps[..k].iter().any(|s| s.channel == step.channel) {
                return Err(FieldError::new(
                    "duplicate_value",
                    format!("{field}.channel"),
                    format!("channel `{}` is used by an earlier step", step.channel),
                ));
            }
            types.push(usable(
                channels,
                &step.channel,
                &format!("{field}.channel"),
            )?);
            let when = match (k, &step.when) {
                (0, None) => continue,
                (0, Some(_)) => {
                    return Err(FieldError::new(
                        "invalid_value",
                        format!("{field}.when"),
                        "the first step runs at once: it has no condition",
                    ))
                }
                (_, None) => {
                    return Err(FieldError::new(
                        "missing_field",
                        format!("{field}.when"),
                        "a step after the first runs when its condition holds: give `when`",
                    ))
                }
                (_, Some(w)) => w,
            };
            if !(1..=MAX_CONDITIONS).contains(&when.conditions.len()) {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("{field}.when.conditions"),
                    format!("a step has 1-{MAX_CONDITIONS} conditions"),
                ));
            }
            for (i, c) in when.conditions.iter().enumerate() {
                let cf = format!("{field}.when.conditions[{i}]");
                if !(1..=k).contains(&c.step) {
                    return Err(FieldError::new(
                        "invalid_value",
                        format!("{cf}.step"),
                        format!("a condition of step {} is on an earlier step: 1-{k}", k + 1),
                    ));
                }
                if when.conditions[..i]
                    .iter()
                    .any(|o| o.step == c.step && o.event == c.event)
                {
                    return Err(FieldError::new(
                        "duplicate_value",
                        cf,
                        "the same event of the same step is named twice",
                    ));
                }
                let on = types[c.step - 1];
                if c.event == Event::NotClicked && !reports(on).clicks {
                    return Err(FieldError::new(
                        "unsupported_event",
                        format!("{cf}.event"),
                        format!(
                            "channel `{}` ({}) cannot report clicks",
                            self.steps[c.step - 1].channel,
                            on.as_str()
                        ),
                    ));
                }
                if !(MIN_WITHIN_SECONDS..=MAX_WITHIN_SECONDS).contains(&c.within_seconds) {
                    return Err(FieldError::new(
                        "invalid_value",
                        format!("{cf}.within_seconds"),
                        format!("from {MIN_WITHIN_SECONDS} to {MAX_WITHIN_SECONDS}"),
                    ));
                }
            }
        }
        Ok(types)
    }
}

impl When {
    /// The condition in words, each step named with its channel: why a delivery of this
    /// step went out.
    pub fn describe(&self, steps: &[Step]) -> String {
        let join = match self.op {
            Op::And => " and ",
            Op::Or => " or ",
        };
        self.conditions
            .iter()
            .map(|c| {
                let channel = steps
                    .get(c.step.wrapping_sub(1))
                    .map_or("?", |s| s.channel.as_str());
                let what = match c.event {
                    Event::NotDelivered => "not delivered",
                    Event::NotClicked => "not clicked",
                };
                format!(
                    "step {} ({channel}) {what} within {} s",
                    c.step, c.within_seconds
                )
            })
            .collect::<Vec<_>>()
            .join(join)
    }
}

/// What a condition means on a channel type, for the strategy's `GET` and the docs.
pub fn meaning(event: Event, on: ChannelType) -> &'static str {
    match (event, reports(on).delivery) {
        (Event::NotClicked, _) => "no click on a tracked link or card within the time",
        (Event::NotDelivered, Delivery::Confirmed) => {
            "no delivery confirmed by the provider (receipt) within the time"
        }
        (Event::NotDelivered, Delivery::Accepted) => {
            "not accepted by the provider within the time: this channel type cannot confirm \
             delivery to the person, only that the provider took the message"
        }
    }
}

#[cfg(test)]
mod tests;
