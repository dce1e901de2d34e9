//! `[supervision]`: when a silent band or a low battery is reported.

use serde::Deserialize;

use crate::config::bounds;
use crate::config::diagnose::Check;
use crate::engine::Supervision;

/// `silent_after`: no frame from an enrolled band this long raises `device_silent`.
pub const SILENT_AFTER: &str = "30m";
/// `low_battery_pct`: one low_battery notice per band per day below this.
pub const LOW_BATTERY_PCT: u8 = 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawSupervision {
    silent_after: Option<String>,
    low_battery_pct: Option<i64>,
}

impl Check {
    pub(in crate::config) fn supervision(&mut self, raw: RawSupervision) -> Supervision {
        let (low, high) = bounds::LOW_BATTERY_PCT;
        let low_battery_pct = match raw.low_battery_pct {
            None => LOW_BATTERY_PCT,
            Some(n) => match u8::try_from(n) {
                Ok(0) => {
                    self.warning(
                        "supervision.low_battery_pct",
                        "0 means no band ever raises a low_battery notice: a band runs flat unnoticed until it is reported silent",
                        format!("use {low} to {high}, e.g. low_battery_pct = {LOW_BATTERY_PCT}"),
                    );
                    0
                }
                Ok(n) if n < low || (high < n && n <= 100) => {
                    self.warning(
                        "supervision.low_battery_pct",
                        if n < low {
                            format!("{n}% is below the recommended {low} to {high}: a band may run flat within a day of its notice")
                        } else {
                            format!("{n}% is above the recommended {low} to {high}: bands raise a low_battery notice every day while still well charged")
                        },
                        format!("use {low} to {high}, e.g. low_battery_pct = {LOW_BATTERY_PCT}"),
                    );
                    n
                }
                Ok(n) if n <= 100 => n,
                _ => {
                    self.problem(
                        "supervision.low_battery_pct",
                        format!("{n} is not a percentage"),
                        format!("use a whole number from 0 to 100, e.g. low_battery_pct = {LOW_BATTERY_PCT}"),
                    );
                    LOW_BATTERY_PCT
                }
            },
        };
        Supervision {
            silent_after: self.duration(
                "supervision.silent_after",
                raw.silent_after.as_deref(),
                SILENT_AFTER,
            ),
            low_battery_pct,
        }
    }
}
