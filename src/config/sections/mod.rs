//! One file per section of `bandgate.toml` (the top level is `site`): its raw struct (what the
//! file may say), its checks (methods of `Check` that turn it into checked values), and its
//! defaults as named constants.

pub mod alerts;
pub mod ble;
pub mod escalation;
pub mod fallback;
pub mod mqtt;
pub mod privacy;
pub mod residents;
pub mod rota;
pub mod site;
pub mod staff;
pub mod supervision;
pub mod web;

/// Every default of `bandgate.toml`: the key and its default as a TOML value, as the
/// commented example (`config/bandgate.toml`) must state it.
pub fn defaults() -> Vec<(&'static str, String)> {
    let q = |s: &str| format!("{s:?}");
    vec![
        ("locale", q(site::LOCALE)),
        ("timezone", q(site::TIMEZONE)),
        ("state_dir", q(site::STATE_DIR)),
        ("keys_file", q(site::KEYS_FILE)),
        ("control_socket", q(site::CONTROL_SOCKET)),
        ("ble.source", q(ble::SOURCE)),
        ("ble.company_id", format!("{:#06X}", ble::COMPANY_ID)),
        ("ble.silence_restart", q(ble::SILENCE_RESTART)),
        ("ble.scan", q(ble::SCAN)),
        ("mqtt.url", q(mqtt::URL)),
        ("mqtt.topic_prefix", q(mqtt::TOPIC_PREFIX)),
        ("mqtt.status_interval", q(mqtt::STATUS_INTERVAL)),
        ("mqtt.device_state_interval", q(mqtt::DEVICE_STATE_INTERVAL)),
        ("alerts.resolved_retention", q(alerts::RESOLVED_RETENTION)),
        (
            "escalation.ack_timeouts",
            format!("[{}]", escalation::ACK_TIMEOUTS.map(q).join(", ")),
        ),
        ("escalation.renotify_every", q(escalation::RENOTIFY_EVERY)),
        ("escalation.repeat_every", q(escalation::REPEAT_EVERY)),
        ("escalation.claim_timeout", q(escalation::CLAIM_TIMEOUT)),
        ("escalation.wearer_cancel", q(escalation::WEARER_CANCEL)),
        (
            "escalation.cancel_verify_timeout",
            q(escalation::CANCEL_VERIFY_TIMEOUT),
        ),
        ("supervision.silent_after", q(supervision::SILENT_AFTER)),
        (
            "supervision.low_battery_pct",
            supervision::LOW_BATTERY_PCT.to_string(),
        ),
        (
            "privacy.publish_vitals",
            privacy::PUBLISH_VITALS.to_string(),
        ),
        ("fallback.after", q(fallback::AFTER)),
        (
            "fallback.steps",
            format!("[{}]", fallback::STEPS.map(q).join(", ")),
        ),
        (
            "fallback.step_every",
            format!("[{}]", fallback::STEP_EVERY.map(q).join(", ")),
        ),
        ("fallback.modem", q(fallback::MODEM)),
        ("fallback.ring_for", q(fallback::RING_FOR)),
        ("web.listen", q(web::LISTEN)),
        ("web.broker_url", q(web::BROKER_URL)),
    ]
}
