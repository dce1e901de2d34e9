//! The loop's side of the fallback ladder and the duty consoles' presence: contact requests
//! handed to the modem after the commit that records them, the modem's reports fed back to
//! the engine, presence messages read (never written, never cleared), and what the gateway
//! status says about the modem and the people on duty.

use jiff::Timestamp;
use tokio::sync::mpsc::error::TrySendError;

use super::{clock, Daemon, Publisher, StateStore};
use crate::adapters::modem::{self, ContactJob, ModemHealth};
use crate::adapters::mqtt::presence::parse_presence;
use crate::adapters::webhook::WebhookJob;
use crate::engine::{Channel, ContactReport, ContactRequest, Now, OnDuty, Outcome};

impl<S: StateStore, P: Publisher> Daemon<S, P> {
    /// Hands the steps the engine asked for (already committed as `requested`, or held in
    /// memory while the store fails) to the modem. Without `[fallback]` there are none; with
    /// it but no modem task, or a full queue, the step is reported failed at once.
    pub(super) fn dispatch_contacts(&mut self, requests: Vec<ContactRequest>) {
        if requests.is_empty() {
            return;
        }
        let (now, wall) = clock();
        for r in requests {
            if r.channel == Channel::Webhook {
                self.dispatch_webhook(now, wall, r);
                continue;
            }
            let job = ContactJob {
                alert_id: r.alert.id.clone(),
                staff_id: r.staff_id.clone(),
                step: r.step,
                phone: r.phone.clone(),
                channel: r.channel,
                text: modem::text::sms_text(&r.alert, self.engine.setup()),
                resume: r.resume,
            };
            let refused = match &self.modem {
                None => Some("no modem task (fallback is not configured)".to_string()),
                Some(m) => match m.jobs.try_send(job) {
                    Ok(()) => None,
                    Err(TrySendError::Full(_)) => {
                        Some("too many SMS and calls waiting for the modem".to_string())
                    }
                    Err(TrySendError::Closed(_)) => Some("the modem task ended".to_string()),
                },
            };
            if let Some(detail) = refused {
                self.step_refused(now, wall, &r, detail);
            }
        }
    }

    /// A step that could not even be handed to its task: recorded failed at once (a failed
    /// step is not retried; the ladder goes on).
    fn step_refused(
        &mut self,
        now: std::time::Instant,
        wall: Timestamp,
        r: &ContactRequest,
        detail: String,
    ) {
        self.engine.handle_contact_report(
            Now { mono: now, wall },
            ContactReport {
                alert_id: r.alert.id.clone(),
                staff_id: r.staff_id.clone(),
                step: r.step,
                outcome: Outcome::Failed,
                detail: Some(detail),
            },
        );
    }

    /// A webhook step: to the platform, or failed at once without the task or room in it.
    fn dispatch_webhook(&mut self, now: std::time::Instant, wall: Timestamp, r: ContactRequest) {
        let setup = self.engine.setup();
        let job = WebhookJob {
            alert_id: r.alert.id.clone(),
            kind: r.alert.kind.as_str().to_string(),
            staff_id: r.staff_id.clone(),
            name: setup.staff_name(&r.staff_id).to_string(),
            phone: r.phone.clone(),
            step: r.step,
            text: modem::text::sms_text(&r.alert, setup),
            resume: r.resume,
        };
        let refused = match &self.webhook {
            None => Some("no webhook task (fallback.webhook_url is not set)".to_string()),
            Some(tx) => match tx.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(_)) => Some("too many webhook requests waiting".into()),
                Err(TrySendError::Closed(_)) => Some("the webhook task ended".into()),
            },
        };
        if let Some(detail) = refused {
            self.step_refused(now, wall, &r, detail);
        }
    }

    /// An outcome from the modem: recorded in the alert and published.
    pub(super) fn contact_report(&mut self, report: ContactReport) {
        let (now, wall) = clock();
        self.engine
            .handle_contact_report(Now { mono: now, wall }, report);
        self.flush();
    }

    /// A presence message (`{p}/phones/{staff_id}/{client_id}`): read, never acted on as a
    /// phone action and never cleared (it is retained on purpose). Bad payloads are counted.
    pub(super) fn presence(&mut self, staff_id: &str, client_id: &str, payload: &[u8]) {
        let (now, wall) = clock();
        match parse_presence(staff_id, client_id, payload) {
            Ok(None) => self.engine.forget_presence(staff_id, client_id),
            Ok(Some(p)) => {
                match self.engine.handle_presence(
                    Now { mono: now, wall },
                    staff_id,
                    client_id,
                    p.online,
                    p.armed,
                ) {
                    Ok(()) => {
                        tracing::debug!(
                            staff_id,
                            client_id,
                            online = p.online,
                            armed = p.armed,
                            at = p.at,
                            "presence"
                        );
                        self.flush();
                    }
                    Err(e) => {
                        let reason = match e {
                            crate::engine::fallback::PresenceRefusal::UnknownStaff => {
                                "presence_unknown_staff"
                            }
                            crate::engine::fallback::PresenceRefusal::TooManyConsoles => {
                                "presence_too_many_devices"
                            }
                        };
                        let staff = staff_id.to_string();
                        self.ignore_message(now, reason, || staff);
                    }
                }
            }
            Err(e) => {
                let reason = e.as_str();
                let example = format!("{staff_id}/{client_id}: {e}");
                self.ignore_message(now, reason, || example);
            }
        }
    }

    /// The modem's state for the status documents (`None` without `[fallback]`).
    pub(super) fn modem_health(&self) -> Option<ModemHealth> {
        self.modem.as_ref().map(|m| m.health.borrow().clone())
    }

    /// Who is on duty now and whether a live console is there.
    pub(super) fn on_duty(&self, wall: Timestamp) -> Vec<OnDuty> {
        self.engine.on_duty(wall)
    }
}
