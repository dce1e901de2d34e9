//! `[alerts]`: how long a resolved alert stays on the phones' board.

use std::time::Duration;

use serde::Deserialize;

use crate::config::diagnose::Check;

/// `resolved_retention`: then the retained alert document is cleared.
pub const RESOLVED_RETENTION: &str = "10m";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawAlerts {
    resolved_retention: Option<String>,
}

impl Check {
    /// `resolved_retention`, the section's one value.
    pub(in crate::config) fn alerts(&mut self, raw: RawAlerts) -> Duration {
        self.duration(
            "alerts.resolved_retention",
            raw.resolved_retention.as_deref(),
            RESOLVED_RETENTION,
        )
    }
}
