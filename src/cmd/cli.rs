//! What the command line prints: `decode`'s JSON lines use the wire spec's field names.

use serde_json::{json, Map, Value};

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
