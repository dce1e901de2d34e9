//! The duty consoles' presence (`{p}/phones/{staff_id}/{client_id}`): what the gateway reads
//! (it never writes presence) and the topics it subscribes to.

use serde::Deserialize;

use super::Topics;

/// Largest presence record parsed; anything longer is refused unread.
pub const MAX_PRESENCE_PAYLOAD: usize = 1024;

/// One console's record. `at` is the console's own clock: kept for logs, never trusted for
/// ordering (the broker's order is the order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub staff_id: String,
    pub client_id: String,
    pub online: bool,
    pub armed: bool,
    pub at: Option<String>,
}

/// Why a presence message was not taken (counted by the caller, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence payload too large ({0} bytes)")]
    TooLarge(usize),
    #[error("presence payload is not the contract's JSON: {0}")]
    Malformed(String),
}

impl PresenceError {
    pub fn as_str(&self) -> &'static str {
        match self {
            PresenceError::TooLarge(_) => "presence_too_large",
            PresenceError::Malformed(_) => "presence_malformed",
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    online: bool,
    #[serde(default)]
    armed: bool,
    at: Option<String>,
}

impl Topics {
    /// What the gateway subscribes to for presence.
    pub fn presence_filter(&self) -> String {
        format!("{}/phones/+/+", self.prefix())
    }

    /// One person's presence topics (the link's careful, topic-by-topic mode).
    pub fn presence_of_staff(&self, staff_id: &str) -> String {
        format!("{}/phones/{staff_id}/+", self.prefix())
    }

    /// `(staff_id, client_id)` of a presence topic, if `topic` is one.
    pub fn presence<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = topic
            .strip_prefix(self.prefix())?
            .strip_prefix("/phones/")?;
        let (staff, client) = rest.split_once('/')?;
        (!staff.is_empty() && !client.is_empty() && !client.contains('/'))
            .then_some((staff, client))
    }
}

/// A presence message on a topic `Topics::presence` recognised. An empty payload is the
/// record deleted: `Ok(None)`.
pub fn parse_presence(
    staff_id: &str,
    client_id: &str,
    payload: &[u8],
) -> Result<Option<PresenceRecord>, PresenceError> {
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_PRESENCE_PAYLOAD {
        return Err(PresenceError::TooLarge(payload.len()));
    }
    let wire: Wire =
        serde_json::from_slice(payload).map_err(|e| PresenceError::Malformed(e.to_string()))?;
    Ok(Some(PresenceRecord {
        staff_id: staff_id.to_string(),
        client_id: client_id.to_string(),
        online: wire.online,
        armed: wire.armed,
        at: wire.at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads() {
        let t = Topics::for_site("s");
        assert_eq!(t.presence_filter(), "bandgate/s/phones/+/+");
        assert_eq!(
            t.presence("bandgate/s/phones/zhang/web-1"),
            Some(("zhang", "web-1"))
        );
        assert_eq!(t.presence("bandgate/s/phones/zhang"), None);
        assert_eq!(t.presence("bandgate/s/phones/zhang/a/b"), None);
        assert_eq!(t.presence("bandgate/s/ack/zhang"), None);
        let r = parse_presence(
            "zhang",
            "web-1",
            br#"{"online":true,"armed":true,"at":"x","extra":1}"#,
        )
        .unwrap()
        .unwrap();
        assert!(r.online && r.armed);
        assert_eq!(parse_presence("zhang", "w", b"").unwrap(), None);
        assert_eq!(
            parse_presence("zhang", "w", b"{\"armed\":true}")
                .unwrap_err()
                .as_str(),
            "presence_malformed"
        );
        assert_eq!(
            parse_presence("zhang", "w", &[b' '; 2000])
                .unwrap_err()
                .as_str(),
            "presence_too_large"
        );
    }
}
