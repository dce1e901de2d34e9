//! `[privacy]`: what the gateway may publish about a resident's body.

use serde::Deserialize;

use crate::config::diagnose::Check;

/// `publish_vitals`: battery and RSSI only, no heart rate and the like on MQTT.
pub const PUBLISH_VITALS: bool = false;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawPrivacy {
    publish_vitals: Option<bool>,
}

impl Check {
    /// `publish_vitals`, the section's one value (its type is all there is to check).
    pub(in crate::config) fn privacy(&mut self, raw: RawPrivacy) -> bool {
        raw.publish_vitals.unwrap_or(PUBLISH_VITALS)
    }
}
