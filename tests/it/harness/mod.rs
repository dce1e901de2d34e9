//! The one harness of the integration tests: a real Mosquitto (`broker`), a gateway's site on
//! disk (`site`), the built daemon (`gateway`), duty phones (`phone`), the engine in simulated
//! time (`sim`) and the spec's test vectors (`vectors`).

pub mod broker;
pub mod gateway;
pub mod phone;
pub mod sim;
pub mod site;
pub mod vectors;

use std::time::Duration;

use serde_json::Value;

pub use broker::{acl_gateway_user, Broker};
pub use gateway::{bandgate, text, Gateway};
pub use phone::*;
pub use site::*;

/// How long anything a black-box test waits for may take: long enough for a debug build on a
/// busy 2-core machine; conditions are polled.
pub const WAIT: Duration = Duration::from_secs(30);

/// A time in a document (RFC 3339 UTC with milliseconds) as milliseconds since the epoch.
#[track_caller]
pub fn ms(t: &Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    assert!(
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.',
        "not RFC 3339 UTC with milliseconds: {s}"
    );
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}
