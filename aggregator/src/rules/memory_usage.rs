//! `memory_usage`: used memory of a node (1 − available ÷ total) over 90 % (seed 000), at
//! once; closes once under 90 % for 2 minutes.

use std::time::Duration;

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::Reading;

#[derive(Debug)]
pub struct MemoryUsage;

impl ThresholdRule for MemoryUsage {
    const NAME: &'static str = "memory_usage";
    const REMEDY: &'static str =
        "consider increasing the size of the instance type for the cluster";
    const MAX_THRESHOLD: Option<f64> = Some(100.0);

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 90.0,
            open_for: Duration::ZERO,
            close_for: Duration::from_secs(120),
            ..ThresholdRuleConfig::default()
        }
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

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}
