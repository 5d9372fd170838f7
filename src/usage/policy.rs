//! The fair-use policies as configured (`[[usage.policies]]`), matched to a subscriber by the
//! RADIUS `Class` of its sessions, with the calendar their periods are counted in.

use super::calendar::{Period, UsageZone};
use crate::config::{FairUsePolicy, UsageConfig};

/// The configured policies and their calendar.
#[derive(Debug, Clone)]
pub struct Policies {
    zone: UsageZone,
    billing_day: u8,
    list: Vec<FairUsePolicy>,
}

impl Policies {
    /// From the `[usage]` section; `Err` names what is wrong.
    pub fn from_config(config: &UsageConfig) -> Result<Policies, String> {
        Ok(Policies {
            zone: UsageZone::parse(&config.time_zone)
                .map_err(|e| format!("usage.time_zone: {e}"))?,
            billing_day: config.billing_day,
            list: config.policies.clone(),
        })
    }

    /// The calendar's zone (`usage.time_zone`).
    pub fn zone(&self) -> &UsageZone {
        &self.zone
    }

    /// The day billing months start on.
    pub fn billing_day(&self) -> u8 {
        self.billing_day
    }

    /// Whether there is no policy at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether some policy is for particular classes (so a subscriber's class must be known).
    pub fn by_class(&self) -> bool {
        self.list.iter().any(|p| !p.classes.is_empty())
    }

    /// The first policy for a subscriber whose sessions carry `class`.
    pub fn for_class(&self, class: Option<&str>) -> Option<&FairUsePolicy> {
        self.list.iter().find(|p| {
            p.classes.is_empty() || class.is_some_and(|c| p.classes.iter().any(|pc| pc == c))
        })
    }

    /// The policy named `name`.
    pub fn named(&self, name: &str) -> Option<&FairUsePolicy> {
        self.list.iter().find(|p| p.name == name)
    }

    /// The period of `policy` holding `t`.
    pub fn period(&self, policy: &FairUsePolicy, t: i64) -> Period {
        Period::at(policy.period, &self.zone, self.billing_day, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeriodKind;

    fn policy(name: &str, classes: &[&str]) -> FairUsePolicy {
        FairUsePolicy {
            name: name.into(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            period: PeriodKind::Month,
            threshold_bytes: 1,
            rate: "1M/1M".into(),
            restore_rate: "10M/10M".into(),
        }
    }

    #[test]
    fn the_first_policy_of_the_class_wins_and_one_without_classes_takes_the_rest() {
        let config = UsageConfig {
            policies: vec![
                policy("gold", &["gold", "gold-plus"]),
                policy("any", &[]),
                policy("never", &["x"]),
            ],
            ..UsageConfig::default()
        };
        let p = Policies::from_config(&config).expect("valid");
        assert!(p.by_class());
        assert_eq!(
            p.for_class(Some("gold-plus")).map(|p| p.name.as_str()),
            Some("gold")
        );
        assert_eq!(p.for_class(Some("x")).map(|p| p.name.as_str()), Some("any"));
        assert_eq!(p.for_class(None).map(|p| p.name.as_str()), Some("any"));
        let only_gold = Policies::from_config(&UsageConfig {
            policies: vec![policy("gold", &["gold"])],
            ..UsageConfig::default()
        })
        .expect("valid");
        assert!(only_gold.for_class(None).is_none());
        assert!(only_gold.named("gold").is_some());
    }
}
