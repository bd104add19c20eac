//! Conditions that follow the Kubernetes API conventions: `lastTransitionTime` moves only when
//! the status flips, `observedGeneration` is always set.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// What a reconcile concluded about one condition type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            type_,
            ok: true,
            reason,
            message: message.into(),
        }
    }

    pub fn fail(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// Turns verdicts into conditions, keeping each existing condition's transition time when
/// its status did not change.
pub fn compute(
    existing: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|v| {
            let status = if v.ok { "True" } else { "False" };
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: v.type_.to_owned(),
                status: status.to_owned(),
                reason: v.reason.to_owned(),
                message: v.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The same conditions, ignoring transition times (which `compute` preserves anyway).
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.type_ == y.type_
                    && x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

pub fn is_true(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = compute(
            &[],
            &[Verdict::ok("Ready", "Published", "ok")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));

        let same_status = compute(
            &first,
            &[Verdict::ok("Ready", "Published", "still ok")],
            Some(2),
            at(200),
        );
        assert_eq!(same_status[0].last_transition_time, Time(at(100)));
        assert_eq!(same_status[0].observed_generation, Some(2));

        let flipped = compute(
            &same_status,
            &[Verdict::fail("Ready", "Broken", "no")],
            Some(3),
            at(300),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn same_ignores_order_but_not_content() {
        let a = compute(
            &[],
            &[
                Verdict::ok("Ready", "R", "m"),
                Verdict::ok("SourceFound", "S", "m"),
            ],
            Some(1),
            at(1),
        );
        let mut b = a.clone();
        b.reverse();
        assert!(same(&a, &b));
        b[0].message = "changed".into();
        assert!(!same(&a, &b));
    }
}
