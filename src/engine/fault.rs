//! The gateway's own alarm: `gateway_fault`, raised when its durable state was lost or cannot
//! be kept (the store's losses at start, a store failing at run time). It pages the
//! supervisors (whoever is on duty when there are none) and repeats every `repeat_every`
//! like any alert at its last tier, until a person acknowledges or resolves it.

use super::alert::{Alert, Kind};
use super::time::Now;
use super::Engine;

impl Engine {
    /// Raises a `gateway_fault` alert saying `detail` (what was lost, why); returns its id,
    /// `gateway-{gateway_id}-fault-{n}`. Its document has no resident and no band.
    pub fn raise_gateway_fault(&mut self, now: Now, detail: &str) -> String {
        self.meta.fault_count = self.meta.fault_count.saturating_add(1);
        self.meta_dirty = true;
        let mut id = self.fault_id();
        // A state that lost its counter may still hold an alert of that id.
        while self.alerts.contains_key(&id) {
            self.meta.fault_count = self.meta.fault_count.saturating_add(1);
            id = self.fault_id();
        }
        tracing::error!(
            alert_id = id,
            detail,
            "gateway fault: paging the supervisors"
        );
        let alert = Alert {
            detail: Some(detail.to_string()),
            ..Alert::new(id.clone(), Kind::GatewayFault, now)
        };
        self.open_alert(now, alert);
        id
    }

    fn fault_id(&self) -> String {
        format!(
            "gateway-{}-fault-{}",
            self.setup.gateway_id, self.meta.fault_count
        )
    }
}
