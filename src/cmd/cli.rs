//! What the command line prints: `decode`'s JSON lines use the wire spec's field names.

use serde_json::{json, Map, Value};

use crate::engine::bthome::{self, BtHomeDevice, ButtonEvent, Reading};
use crate::engine::{BandEvent, Frame, Reject};

/// A decoded frame as the spec names its fields: `device_id`, `seq`, `battery_pct`, `worn`,
/// `event` (snake_case) and the event's own fields.
pub fn frame_json(f: &Frame) -> Value {
    let mut m = Map::new();
    m.insert("device_id".into(), json!(f.device_id));
    m.insert("seq".into(), json!(f.seq));
    m.insert("battery_pct".into(), json!(f.battery_pct));
    m.insert("worn".into(), json!(f.worn));
    m.insert("event".into(), json!(f.event.name()));
    match f.event {
        BandEvent::Heartbeat {
            heart_rate,
            spo2,
            steps,
        } => {
            m.insert("heart_rate".into(), json!(heart_rate));
            m.insert("spo2".into(), json!(spo2));
            m.insert("steps".into(), json!(steps));
        }
        BandEvent::Sos => {}
        BandEvent::Fall { impact_dg } => {
            m.insert("impact_dg".into(), json!(impact_dg));
        }
        BandEvent::Cancel { of_seq } => {
            m.insert("of_seq".into(), json!(of_seq));
        }
        BandEvent::NoMotion { minutes } => {
            m.insert("minutes".into(), json!(minutes));
        }
    }
    Value::Object(m)
}

/// `{"error": "<reason>"}`.
pub fn reject_json(r: Reject) -> Value {
    json!({ "error": r.as_str() })
}

/// Reads hex as people paste it: `b1112a...`, `0xb1112a...`, `b1:11:2a`, `B1 11 2A`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let cleaned: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    hex::decode(&cleaned).map_err(|e| format!("{s:?} is not hex: {e}"))
}

/// Reads a company id as `0xFFFF` or `65535`.
pub fn parse_company_id(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => t.parse::<u16>(),
    };
    parsed.map_err(|_| format!("{s:?} is not a 16-bit company id (e.g. 0xFFFF or 65535)"))
}

/// A decoded BTHome frame (`bthome.md`): `format` `"bthome"`, the device's `mac`, `encrypted`,
/// `trigger_based`, `counter`, the objects read, `buttons` (event names, in button order),
/// and, for an enrolled device, its `device_id` and what the frame means (`event`: `sos`,
/// `cancel` or `none`).
pub fn bthome_json(r: &Reading, device: Option<&BtHomeDevice>) -> Value {
    let mut m = Map::new();
    m.insert("format".into(), json!("bthome"));
    m.insert("mac".into(), json!(bthome::format_mac(&r.mac)));
    if let Some(d) = device {
        m.insert("device_id".into(), json!(d.device_id));
    }
    m.insert("encrypted".into(), json!(r.encrypted));
    m.insert("trigger_based".into(), json!(r.trigger_based));
    m.insert("counter".into(), json!(r.counter));
    m.insert("packet_id".into(), json!(r.packet_id));
    m.insert("battery_pct".into(), json!(r.battery_pct));
    if let Some(t) = r.temperature_centi {
        m.insert("temperature_c".into(), json!(f64::from(t) / 100.0));
    }
    if let Some(h) = r.humidity_centi {
        m.insert("humidity_pct".into(), json!(f64::from(h) / 100.0));
    }
    let buttons: Vec<&str> = r.buttons.iter().map(ButtonEvent::name).collect();
    m.insert("buttons".into(), json!(buttons));
    if let Some(d) = device {
        let any = |set: bthome::EventSet| r.buttons.iter().any(|e| set.contains(e));
        let event = if any(d.sos) {
            "sos"
        } else if any(d.cancel) {
            "cancel"
        } else {
            "none"
        };
        m.insert("event".into(), json!(event));
    }
    Value::Object(m)
}
