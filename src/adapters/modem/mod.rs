//! The 4G modem through ModemManager (D-Bus, the `dbus` crate as the BLE source uses it): the
//! fallback ladder's SMS and ring calls, their outcomes, and the modem's health.
//!
//! - the modem: the first one ModemManager's ObjectManager lists (`modem = "auto"`) or a
//!   given path; looked for again every `HEALTH_EVERY`, so a modem that vanishes and returns
//!   is used again without a restart; its state (present, SIM ready, registered, signal) is
//!   published on a `watch` for the gateway status;
//! - an SMS: `Messaging.Create` (number, text, delivery report requested) + `Sms.Send` →
//!   `sent`; the carrier's status report arrives as a separate SMS object (PDU type status
//!   report) matched by message reference → `delivered` (or `failed`);
//! - a call: `Voice.CreateCall` + `Call.Start` → `ringing`; answered → hung up at once,
//!   `answered`; refused or busy → `refused`; after `ring_for` → hung up, `unanswered`;
//! - every failure (no bus, no modem, an error reply) is a `failed` outcome with a detail and a
//!   warning in the log: a missing modem never stops MQTT paging;
//! - after a restart an SMS whose fate is unknown (`resume`) is looked for among the modem's
//!   SMS objects (same number and text, not a received one) and only sent if not already sent.

pub mod text;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::nonblock::stdintf::org_freedesktop_dbus::{ObjectManager, Properties};
use dbus::nonblock::{Proxy, SyncConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Mutex};

use crate::config::sections::fallback::ModemChoice;
use crate::engine::{Channel, ContactReport, Outcome};

const MM: &str = "org.freedesktop.ModemManager1";
const MM_PATH: &str = "/org/freedesktop/ModemManager1";
const MODEM: &str = "org.freedesktop.ModemManager1.Modem";
const MESSAGING: &str = "org.freedesktop.ModemManager1.Modem.Messaging";
const VOICE: &str = "org.freedesktop.ModemManager1.Modem.Voice";
const SMS: &str = "org.freedesktop.ModemManager1.Sms";
const CALL: &str = "org.freedesktop.ModemManager1.Call";
/// One D-Bus call; `Sms.Send` on a real modem can take tens of seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// How often the modem is looked for and its state read (and status reports looked for).
pub const HEALTH_EVERY: Duration = Duration::from_secs(3);
/// How often a ringing call's state is read.
const CALL_POLL: Duration = Duration::from_millis(200);
/// Status reports waited for, at most (older entries are dropped, oldest first).
const MAX_PENDING_REPORTS: usize = 256;

// ModemManager's enums (ModemManager-enums.h).
const MODEM_STATE_REGISTERED: i32 = 8;
const MODEM_LOCK_NONE: u32 = 1;
const SMS_STATE_SENT: u32 = 5;
const SMS_PDU_SUBMIT: u32 = 2;
const SMS_PDU_STATUS_REPORT: u32 = 3;
/// Delivery states below this are "completed" (received, forwarded, replaced).
const SMS_DELIVERY_TEMPORARY: u32 = 0x20;
const CALL_STATE_ACTIVE: i32 = 4;
const CALL_STATE_TERMINATED: i32 = 7;
const CALL_REASON_ACCEPTED: i32 = 3;
const CALL_REASON_REFUSED_OR_BUSY: i32 = 5;
const CALL_REASON_ERROR: i32 = 6;

/// The modem as the gateway status shows it (the contract's `modem` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModemHealth {
    pub present: bool,
    pub sim_ready: Option<bool>,
    pub registered: Option<bool>,
    pub signal_pct: Option<u8>,
}

/// What the adapter is asked to do: one ladder step, its text already rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactJob {
    pub alert_id: String,
    pub staff_id: String,
    pub step: u8,
    pub phone: String,
    pub channel: Channel,
    /// The SMS text (ignored for calls).
    pub text: String,
    pub resume: bool,
}

#[derive(Debug, Clone)]
pub struct ModemSettings {
    pub choice: ModemChoice,
    pub ring_for: Duration,
}

/// The loop's handles on the modem task.
pub struct ModemLink {
    pub jobs: mpsc::Sender<ContactJob>,
    pub reports: mpsc::Receiver<ContactReport>,
    /// For the other channels (the webhook) to report into the same stream.
    pub report_tx: mpsc::Sender<ContactReport>,
    pub health: watch::Receiver<ModemHealth>,
}

/// Jobs waiting for the modem task; more are failed at once (a ladder never waits forever).
const JOB_QUEUE: usize = 256;

/// Starts the modem task (inside a tokio runtime).
pub fn start(settings: ModemSettings) -> ModemLink {
    let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
    let (reports_tx, reports) = mpsc::channel(JOB_QUEUE);
    let (health_tx, health) = watch::channel(ModemHealth::default());
    tokio::spawn(run(settings, jobs_rx, reports_tx.clone(), health_tx));
    ModemLink {
        jobs: jobs_tx,
        reports,
        report_tx: reports_tx,
        health,
    }
}

/// What the task shares between its jobs.
struct Shared {
    settings: ModemSettings,
    bus: Mutex<Option<Arc<SyncConnection>>>,
    modem: Mutex<Option<String>>,
    /// SMS waiting for their status report, by message reference.
    pending: Mutex<BTreeMap<u32, (String, String, u8)>>,
    /// One call at a time: a modem has one voice line.
    line: Mutex<()>,
    reports: mpsc::Sender<ContactReport>,
}

impl Shared {
    async fn report(&self, job: &ContactJob, outcome: Outcome, detail: Option<String>) {
        let level_warn = outcome == Outcome::Failed;
        if level_warn {
            tracing::warn!(
                alert_id = job.alert_id,
                staff_id = job.staff_id,
                channel = job.channel.as_str(),
                step = job.step,
                detail = detail.as_deref().unwrap_or(""),
                "fallback step failed"
            );
        } else {
            tracing::info!(
                alert_id = job.alert_id,
                staff_id = job.staff_id,
                channel = job.channel.as_str(),
                step = job.step,
                outcome = outcome.as_str(),
                "fallback step"
            );
        }
        let _ = self
            .reports
            .send(ContactReport {
                alert_id: job.alert_id.clone(),
                staff_id: job.staff_id.clone(),
                step: job.step,
                outcome,
                detail,
            })
            .await;
    }

    /// The bus connection, made on first use and again after it was lost.
    async fn bus(&self) -> anyhow::Result<Arc<SyncConnection>> {
        let mut bus = self.bus.lock().await;
        if let Some(c) = bus.as_ref() {
            return Ok(c.clone());
        }
        let (resource, conn) =
            dbus_tokio::connection::new_system_sync().context("connect to the system bus")?;
        tokio::spawn(async move {
            let _ = resource.await;
        });
        *bus = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_bus(&self) {
        *self.bus.lock().await = None;
        *self.modem.lock().await = None;
    }

    /// The modem in use, looked up if not known.
    async fn modem(&self) -> anyhow::Result<(Arc<SyncConnection>, String)> {
        let conn = self.bus().await?;
        if let Some(m) = self.modem.lock().await.clone() {
            return Ok((conn, m));
        }
        let found = self.find(&conn).await?;
        *self.modem.lock().await = Some(found.clone());
        Ok((conn, found))
    }

    async fn find(&self, conn: &Arc<SyncConnection>) -> anyhow::Result<String> {
        let p = Proxy::new(MM, MM_PATH, CALL_TIMEOUT, conn.clone());
        let objects = p
            .get_managed_objects()
            .await
            .map_err(|e| anyhow!("ModemManager is not answering: {e}"))?;
        let mut modems: Vec<String> = objects
            .iter()
            .filter(|(_, ifaces)| ifaces.contains_key(MODEM))
            .map(|(path, _)| path.to_string())
            .collect();
        modems.sort();
        match &self.settings.choice {
            ModemChoice::Path(want) => modems
                .into_iter()
                .find(|m| m == want)
                .ok_or_else(|| anyhow!("ModemManager has no modem {want}")),
            _ => modems
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("ModemManager lists no modem")),
        }
    }

    async fn health(&self) -> ModemHealth {
        if self.settings.choice == ModemChoice::None {
            return ModemHealth::default();
        }
        // Looked for every time: a modem unplugged (or re-enumerated under a new path) is
        // noticed here, not only when a step fails.
        let Ok(conn) = self.bus().await else {
            return ModemHealth::default();
        };
        let path = match self.find(&conn).await {
            Ok(p) => p,
            Err(e) => {
                if e.to_string().contains("not answering") {
                    // The bus itself may be gone: connect again next time.
                    self.forget_bus().await;
                }
                *self.modem.lock().await = None;
                return ModemHealth::default();
            }
        };
        *self.modem.lock().await = Some(path.clone());
        let p = Proxy::new(MM, path.as_str(), CALL_TIMEOUT, conn.clone());
        let props: PropMap = match p.get_all(MODEM).await {
            Ok(props) => props,
            Err(_) => {
                // Gone (unplugged, re-enumerated): looked for again next time.
                *self.modem.lock().await = None;
                return ModemHealth::default();
            }
        };
        let int = |k: &str| props.get(k).and_then(|v| v.0.as_i64());
        let state = int("State");
        let unlock = int("UnlockRequired");
        let sim = props
            .get("Sim")
            .and_then(|v| v.0.as_str().map(|s| s != "/"));
        let signal = props
            .get("SignalQuality")
            .and_then(|v| v.0.as_iter())
            .and_then(|mut it| it.next().and_then(|x| x.as_u64()))
            .map(|s| u8::try_from(s.min(100)).unwrap_or(100));
        ModemHealth {
            present: true,
            sim_ready: match (sim, unlock) {
                (Some(s), Some(u)) => Some(s && u == i64::from(MODEM_LOCK_NONE)),
                (Some(false), None) => Some(false),
                _ => None,
            },
            registered: state.map(|s| s >= i64::from(MODEM_STATE_REGISTERED)),
            signal_pct: signal,
        }
    }

    /// Status reports that arrived: matched by message reference, reported, deleted.
    async fn status_reports(&self) -> anyhow::Result<()> {
        if self.pending.lock().await.is_empty() {
            return Ok(());
        }
        let (conn, path) = self.modem().await?;
        let messaging = Proxy::new(MM, path.as_str(), CALL_TIMEOUT, conn.clone());
        let (list,): (Vec<dbus::Path<'static>>,) = messaging
            .method_call(MESSAGING, "List", ())
            .await
            .map_err(|e| anyhow!("Messaging.List: {e}"))?;
        for sms in list {
            let p = Proxy::new(MM, sms.clone(), CALL_TIMEOUT, conn.clone());
            let props: PropMap = match p.get_all(SMS).await {
                Ok(props) => props,
                Err(_) => continue,
            };
            let u = |k: &str| {
                props
                    .get(k)
                    .and_then(|v| v.0.as_u64())
                    .and_then(|x| u32::try_from(x).ok())
            };
            if u("PduType") != Some(SMS_PDU_STATUS_REPORT) {
                continue;
            }
            let Some(reference) = u("MessageReference") else {
                continue;
            };
            let delivery = u("DeliveryState").unwrap_or(u32::MAX);
            let key = self.pending.lock().await.remove(&reference);
            if let Some((alert_id, staff_id, step)) = key {
                let job = ContactJob {
                    alert_id,
                    staff_id,
                    step,
                    phone: String::new(),
                    channel: Channel::Sms,
                    text: String::new(),
                    resume: false,
                };
                if delivery < SMS_DELIVERY_TEMPORARY {
                    self.report(&job, Outcome::Delivered, None).await;
                } else {
                    self.report(
                        &job,
                        Outcome::Failed,
                        Some(format!(
                            "status report: not delivered (state {delivery:#x})"
                        )),
                    )
                    .await;
                }
            }
            // Read: deleted, so the list stays short (ours or not, a report is of no use
            // once read).
            let _ = messaging
                .method_call::<(), _, _, _>(MESSAGING, "Delete", (sms,))
                .await;
        }
        Ok(())
    }

    async fn sms(&self, job: &ContactJob) -> anyhow::Result<Option<u32>> {
        let (conn, path) = self.modem().await?;
        let messaging = Proxy::new(MM, path.as_str(), CALL_TIMEOUT, conn.clone());
        let mut existing = None;
        if job.resume {
            let (list,): (Vec<dbus::Path<'static>>,) = messaging
                .method_call(MESSAGING, "List", ())
                .await
                .map_err(|e| anyhow!("Messaging.List: {e}"))?;
            for sms in list {
                let p = Proxy::new(MM, sms.clone(), CALL_TIMEOUT, conn.clone());
                let Ok(props) = p.get_all(SMS).await else {
                    continue;
                };
                let s = |k: &str| props.get(k).and_then(|v| v.0.as_str().map(str::to_string));
                let u = |k: &str| props.get(k).and_then(|v| v.0.as_u64());
                if s("Number").as_deref() == Some(job.phone.as_str())
                    && s("Text").as_deref() == Some(job.text.as_str())
                    && u("PduType") == Some(u64::from(SMS_PDU_SUBMIT))
                {
                    existing = Some((sms, u("State") == Some(u64::from(SMS_STATE_SENT))));
                    break;
                }
            }
        }
        let sms = match existing {
            Some((sms, true)) => {
                tracing::info!(
                    alert_id = job.alert_id,
                    staff_id = job.staff_id,
                    "the SMS interrupted by a restart was sent before it: not sent again"
                );
                return self.reference(&conn, &sms).await;
            }
            Some((sms, false)) => sms,
            None => {
                let mut props: PropMap = HashMap::new();
                props.insert("number".into(), Variant(Box::new(job.phone.clone())));
                props.insert("text".into(), Variant(Box::new(job.text.clone())));
                props.insert("delivery-report-request".into(), Variant(Box::new(true)));
                let (sms,): (dbus::Path<'static>,) = messaging
                    .method_call(MESSAGING, "Create", (props,))
                    .await
                    .map_err(|e| anyhow!("Messaging.Create: {e}"))?;
                sms
            }
        };
        fault_between_create_and_send();
        let p = Proxy::new(MM, sms.clone(), CALL_TIMEOUT, conn.clone());
        p.method_call::<(), _, _, _>(SMS, "Send", ())
            .await
            .map_err(|e| anyhow!("Sms.Send: {e}"))?;
        self.reference(&conn, &sms).await
    }

    async fn reference(
        &self,
        conn: &Arc<SyncConnection>,
        sms: &dbus::Path<'static>,
    ) -> anyhow::Result<Option<u32>> {
        let p = Proxy::new(MM, sms.clone(), CALL_TIMEOUT, conn.clone());
        Ok(p.get::<u32>(SMS, "MessageReference").await.ok())
    }

    async fn call(&self, job: &ContactJob) -> anyhow::Result<(Outcome, Option<String>)> {
        let _line = self.line.lock().await;
        let (conn, path) = self.modem().await?;
        let voice = Proxy::new(MM, path.as_str(), CALL_TIMEOUT, conn.clone());
        let mut props: PropMap = HashMap::new();
        props.insert("number".into(), Variant(Box::new(job.phone.clone())));
        let (call,): (dbus::Path<'static>,) = voice
            .method_call(VOICE, "CreateCall", (props,))
            .await
            .map_err(|e| anyhow!("Voice.CreateCall: {e}"))?;
        let p = Proxy::new(MM, call.clone(), CALL_TIMEOUT, conn.clone());
        let started = p.method_call::<(), _, _, _>(CALL, "Start", ()).await;
        let result = match started {
            Err(e) => Err(anyhow!("Call.Start: {e}")),
            Ok(()) => {
                self.report(job, Outcome::Ringing, None).await;
                Ok(self.ring(&p).await)
            }
        };
        let _ = voice
            .method_call::<(), _, _, _>(VOICE, "DeleteCall", (call,))
            .await;
        result
    }

    /// Waits for the call to be answered, refused or `ring_for` to pass; hangs up.
    async fn ring(&self, p: &Proxy<'_, Arc<SyncConnection>>) -> (Outcome, Option<String>) {
        let until = tokio::time::Instant::now() + self.settings.ring_for;
        loop {
            let state = p.get::<i32>(CALL, "State").await;
            let reason = p.get::<i32>(CALL, "StateReason").await.unwrap_or(0);
            match state {
                Ok(CALL_STATE_ACTIVE) => {
                    let _ = p.method_call::<(), _, _, _>(CALL, "Hangup", ()).await;
                    return (Outcome::Answered, None);
                }
                Ok(CALL_STATE_TERMINATED) => {
                    return match reason {
                        CALL_REASON_ACCEPTED => (Outcome::Answered, None),
                        CALL_REASON_REFUSED_OR_BUSY => (Outcome::Refused, None),
                        CALL_REASON_ERROR => (
                            Outcome::Failed,
                            Some("the network refused the call (wrong number?)".into()),
                        ),
                        _ => (Outcome::Unanswered, None),
                    };
                }
                Ok(_) => {}
                Err(e) => {
                    return (
                        Outcome::Failed,
                        Some(format!("the call vanished while ringing: {e}")),
                    )
                }
            }
            if tokio::time::Instant::now() >= until {
                let _ = p.method_call::<(), _, _, _>(CALL, "Hangup", ()).await;
                return (Outcome::Unanswered, None);
            }
            tokio::time::sleep(CALL_POLL).await;
        }
    }

    async fn perform(self: Arc<Self>, job: ContactJob) {
        if self.settings.choice == ModemChoice::None {
            self.report(
                &job,
                Outcome::Failed,
                Some("no modem (fallback.modem = \"none\")".into()),
            )
            .await;
            return;
        }
        match job.channel {
            Channel::Sms => match self.sms(&job).await {
                Ok(reference) => {
                    if let Some(r) = reference {
                        let mut pending = self.pending.lock().await;
                        if pending.len() >= MAX_PENDING_REPORTS {
                            pending.pop_first();
                        }
                        pending.insert(r, (job.alert_id.clone(), job.staff_id.clone(), job.step));
                    }
                    self.report(&job, Outcome::Sent, None).await;
                }
                Err(e) => self.failed(&job, e).await,
            },
            Channel::Call => match self.call(&job).await {
                Ok((outcome, detail)) => self.report(&job, outcome, detail).await,
                Err(e) => self.failed(&job, e).await,
            },
            // Routed to the webhook task by the daemon; never here.
            Channel::Webhook => {
                self.report(
                    &job,
                    Outcome::Failed,
                    Some("a webhook step reached the modem".into()),
                )
                .await
            }
        }
    }

    async fn failed(&self, job: &ContactJob, e: anyhow::Error) {
        // The modem may have gone: looked for again on the next job or health check.
        *self.modem.lock().await = None;
        if e.to_string().contains("system bus") {
            self.forget_bus().await;
        }
        self.report(job, Outcome::Failed, Some(format!("{e:#}")))
            .await;
    }
}

/// The modem as `check-config` reports it: its health, or why there is none. Looks once, within
/// `limit`, without sending anything. Needs a tokio runtime.
pub async fn probe(choice: &ModemChoice, limit: Duration) -> Result<ModemHealth, String> {
    if *choice == ModemChoice::None {
        return Err("fallback.modem = \"none\"".into());
    }
    let (reports, _) = mpsc::channel(1);
    let shared = Shared {
        settings: ModemSettings {
            choice: choice.clone(),
            ring_for: Duration::from_secs(1),
        },
        bus: Mutex::new(None),
        modem: Mutex::new(None),
        pending: Mutex::new(BTreeMap::new()),
        line: Mutex::new(()),
        reports,
    };
    let look = async {
        let conn = shared.bus().await.map_err(|e| format!("{e:#}"))?;
        shared.find(&conn).await.map_err(|e| format!("{e:#}"))?;
        Ok(shared.health().await)
    };
    tokio::time::timeout(limit, look)
        .await
        .unwrap_or_else(|_| Err("ModemManager did not answer in time".into()))
}

async fn run(
    settings: ModemSettings,
    mut jobs: mpsc::Receiver<ContactJob>,
    reports: mpsc::Sender<ContactReport>,
    health: watch::Sender<ModemHealth>,
) {
    let shared = Arc::new(Shared {
        settings,
        bus: Mutex::new(None),
        modem: Mutex::new(None),
        pending: Mutex::new(BTreeMap::new()),
        line: Mutex::new(()),
        reports,
    });
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    let mut said: Option<(bool, Option<bool>, Option<bool>)> = None;
    let mut seen_warned = HashSet::new();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { return };
                tokio::spawn(shared.clone().perform(job));
            }
            _ = tick.tick() => {
                let h = shared.health().await;
                // Logged when it changes, the signal aside (it moves all the time).
                let state = (h.present, h.sim_ready, h.registered);
                if said != Some(state) {
                    log_health(&shared.settings.choice, &h, said.is_none());
                    said = Some(state);
                }
                health.send_replace(h);
                if let Err(e) = shared.status_reports().await {
                    if seen_warned.insert(e.to_string()) {
                        tracing::warn!(error = format!("{e:#}"), "cannot read the modem's status reports");
                    }
                }
            }
        }
    }
}

fn log_health(choice: &ModemChoice, h: &ModemHealth, first: bool) {
    if *choice == ModemChoice::None {
        if first {
            tracing::warn!("fallback.modem = \"none\": no SMS or call can be made; ladder steps are recorded as failed");
        }
        return;
    }
    if !h.present {
        tracing::warn!("no modem found through ModemManager: fallback SMS and calls fail until one is there (MQTT paging goes on); check `mmcli -L`");
    } else if h.sim_ready == Some(false) || h.registered == Some(false) {
        tracing::warn!(
            sim_ready = h.sim_ready,
            registered = h.registered,
            signal_pct = h.signal_pct,
            "modem present but not ready (SIM locked or missing, or not registered on a network): SMS and calls may fail"
        );
    } else {
        tracing::info!(
            sim_ready = h.sim_ready,
            registered = h.registered,
            signal_pct = h.signal_pct,
            "modem ready for fallback SMS and calls"
        );
    }
}

/// Test-only fault injection: with `BANDGATE_FAULT_ABORT_BEFORE_SMS_SEND` in the environment
/// the process aborts after `Messaging.Create` and before `Sms.Send` of its first SMS: the
/// "power cut between creating and sending" the black-box tests restart from. Never set it in
/// production.
fn fault_between_create_and_send() {
    if std::env::var_os("BANDGATE_FAULT_ABORT_BEFORE_SMS_SEND").is_some() {
        eprintln!(
            "BANDGATE_FAULT_ABORT_BEFORE_SMS_SEND: aborting between Messaging.Create and Sms.Send"
        );
        std::process::abort();
    }
}
