//! `disk_usage`: used space of each mount of a node over 80 % for a minute (seed 000);
//! closes as soon as it is under 80 %. One issue per mount.

use std::time::Duration;

use super::threshold::{ThresholdRule, ThresholdRuleConfig, Unit};
use super::{Description, Each, Metric, Scope, Unlisted};
use crate::model::{Reading, ResourceKind, ResourceRef};

#[derive(Debug)]
pub struct DiskUsage;

impl ThresholdRule for DiskUsage {
    const NAME: &'static str = "disk_usage";
    const REMEDY: &'static str = "consider either removing data, running scavenge or increasing the disk size for the cluster";
    const MAX_THRESHOLD: Option<f64> = Some(100.0);

    fn defaults() -> ThresholdRuleConfig {
        ThresholdRuleConfig {
            threshold: 80.0,
            open_for: Duration::from_secs(60),
            close_for: Duration::ZERO,
            ..ThresholdRuleConfig::default()
        }
    }

    fn measure<'a>(_config: &ThresholdRuleConfig, reading: &'a Reading, each: &mut Each<'a, '_>) {
        let Reading::Host(host) = reading else {
            return;
        };
        for disk in &host.disks {
            let metric = Metric {
                scope: Scope::Node,
                resource: Some(ResourceRef {
                    kind: ResourceKind::Mount,
                    name: &disk.mount,
                }),
                value: disk.used_percent,
            };
            each(metric, &|node| Description {
                what: format!("disk {} on {node}", disk.mount),
                how: format!(
                    "{} of {} bytes available on {}",
                    disk.available_bytes, disk.total_bytes, disk.device
                ),
                unit: Unit::Percent,
            });
        }
    }

    fn unlisted(_config: &ThresholdRuleConfig, _reading: &Reading) -> Option<Unlisted> {
        None
    }
}
