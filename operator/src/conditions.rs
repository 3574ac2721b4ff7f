//! Building `metav1.Condition`s: pure, so that every status the controllers write is tested
//! without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as a controller decides it, before times are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

impl Decided {
    #[must_use]
    pub fn new(type_: &'static str, status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// Merges decided conditions into the previous ones: `lastTransitionTime` moves only when the
/// status changes, so that `kubectl describe` tells how long a state has lasted.
#[must_use]
pub fn merge(previous: &[Condition], decided: &[Decided], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let earlier = previous.iter().find(|c| c.type_ == d.type_);
            let transition = match earlier {
                Some(c) if c.status == d.status.as_str() => c.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: d.type_.to_owned(),
                status: d.status.as_str().to_owned(),
                reason: d.reason.to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: transition,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid time")
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(&[], &[Decided::new("Ready", Status::False, "Starting", "0/3")], Some(1), at(100));
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let same = merge(&first, &[Decided::new("Ready", Status::False, "Starting", "1/3")], Some(1), at(200));
        assert_eq!(same[0].last_transition_time, Time(at(100)));
        assert_eq!(same[0].message, "1/3");
        let flipped = merge(&same, &[Decided::new("Ready", Status::True, "BrokersReady", "3/3")], Some(2), at(300));
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(flipped[0].observed_generation, Some(2));
    }
}
