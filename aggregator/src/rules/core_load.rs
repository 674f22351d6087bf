//! `core_load`: load1 ÷ physical cores of a node over 2.0 (seed 000), at once; closes once
//! under 2.0 for 2 minutes.

use std::time::Duration;

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::Reading;

#[derive(Debug)]
pub struct CoreLoad;

impl ThresholdRule for CoreLoad {
    const NAME: &'static str = "core_load";
    const REMEDY: &'static str =
        "consider increasing the size of the instance type for the cluster";
    const MAX_THRESHOLD: Option<f64> = None;

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 2.0,
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
            value: host.core_load(),
        };
        each(metric, &|node| {
            let estimated = if host.physical_cores_estimated {
                " (logical, no topology)"
            } else {
                ""
            };
            Description {
                what: format!("core load on {node}"),
                how: format!(
                    "load1 {:.2} over {} physical cores{estimated}",
                    host.load1, host.physical_cores
                ),
                unit: Unit::Ratio,
            }
        });
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}
