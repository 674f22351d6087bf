//! `memory_usage`: used memory of a node (1 − available ÷ total) over 90 % (seed 000), at
//! once; closes once under 90 % for 2 minutes.

use std::time::Duration;

use super::threshold::{ThresholdRuleConfig, ThresholdRuleOverrides, Unit};
use super::{Description, Each, Metric, Rule, Scope, Unlisted};
use crate::model::Reading;

#[derive(Debug)]
pub struct MemoryUsage;

impl Rule for MemoryUsage {
    const NAME: &'static str = "memory_usage";
    const REMEDY: &'static str =
        "consider increasing the size of the instance type for the cluster";
    type Config = ThresholdRuleConfig;
    type File = ThresholdRuleOverrides;

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 90.0,
            open_for: Duration::ZERO,
            close_for: Duration::from_secs(120),
            ..ThresholdRuleConfig::default()
        }
    }

    fn config(file: ThresholdRuleOverrides) -> ThresholdRuleConfig {
        file.over(Self::defaults())
    }

    fn validate(config: &ThresholdRuleConfig, errors: &mut Vec<String>) {
        config.validate(Self::NAME, Some(100.0), errors);
    }

    fn enabled(config: &ThresholdRuleConfig) -> bool {
        config.enabled
    }

    fn renotify(config: &ThresholdRuleConfig) -> Duration {
        config.renotify
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Host(host) = reading else {
            return;
        };
        let metric = Metric {
            scope: Scope::Node,
            resource: None,
            value: host.memory_used_percent,
        };
        each(metric, &|node| Description {
            what: format!("memory on {node}"),
            how: format!(
                "{} of {} bytes available",
                host.memory_available_bytes, host.memory_total_bytes
            ),
            unit: Unit::Percent,
        });
    }

    fn threshold(config: &ThresholdRuleConfig) -> Option<&ThresholdRuleConfig> {
        Some(config)
    }

    fn unlisted(_config: &Self::Config, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}
