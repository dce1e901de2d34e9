//! The operator's control socket: a unix socket, one JSON request line per connection, one
//! JSON response line back.
//!
//! The accept task only carries requests: each goes to the daemon loop over a bounded channel
//! with a oneshot for the reply, and the loop answers it with `answer` (it owns the engine), so
//! an operator's `ack` takes exactly the path of a phone's MQTT ack. The wire types are shared
//! with the client, `cmd::operate`.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Action, Alert, Engine, Now, Refusal, Reject, Resolution};

/// Where the daemon listens when the configuration does not say (systemd's RuntimeDirectory).
pub const DEFAULT_SOCKET: &str = crate::config::sections::site::CONTROL_SOCKET;
/// How long a client waits for its answer, and the server for a request line.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests are a few hundred bytes; anything longer is not ours.
const MAX_REQUEST: u64 = 64 * 1024;
/// Group read/write: operators in the bandgate group, nobody else.
const SOCKET_MODE: u32 = 0o660;

// ---- wire types ----

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Alerts {
        /// Also the recently resolved ones (kept for `alerts.resolved_retention`).
        #[serde(default)]
        include_resolved: bool,
    },
    /// Exactly a phone's `ack` from `staff_id`.
    Ack {
        alert_id: String,
        staff_id: String,
    },
    /// Exactly a phone's `resolve` from `staff_id`; `resolution` is one of the spec's codes.
    Resolve {
        alert_id: String,
        staff_id: String,
        resolution: String,
    },
    /// A `test` alert through the real pipeline, to `staff_id` or whoever is on duty.
    TestAlarm {
        staff_id: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Alerts {
        alerts: Vec<AlertSummary>,
    },
    /// The alert after an `ack`, `resolve` or `test_alarm`.
    Alert(AlertSummary),
    /// The engine (or the request's values) said no; nothing changed.
    Refused {
        reason: String,
        message: String,
    },
    /// The request could not be read.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub gateway_id: String,
    pub version: String,
    pub started_at: Timestamp,
    pub uptime_s: u64,
    pub adapter: String,
    pub adapter_ok: bool,
    /// The radio's scan in force (`active`, `passive`, `active-fallback`); empty for replay
    /// and simulation (and from a daemon that predates it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scan: String,
    pub broker_connected: bool,
    pub store_ok: bool,
    pub devices_enrolled: usize,
    pub devices_heard_15m: usize,
    pub open_alerts: usize,
    /// `None` when the state store could not count it (the daemon logs why).
    pub outbox_len: Option<u64>,
    pub frames_accepted: u64,
    /// By the wire spec's reject reason, every reason listed.
    pub frames_rejected: BTreeMap<String, u64>,
    /// Phone and operator actions refused, by reason.
    pub actions_refused: BTreeMap<String, u64>,
    /// Phone messages ignored before reaching the engine (malformed, too large, ...), by reason.
    #[serde(default)]
    pub messages_ignored: BTreeMap<String, u64>,
    /// `ok`, or `degraded` when the durable store is failing or was lost (as in the gateway
    /// status of the MQTT contract); `degraded` says why.
    #[serde(default = "ok")]
    pub state: String,
    #[serde(default)]
    pub degraded: Vec<String>,
    /// The fallback ladder's modem (`[fallback]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modem: Option<crate::adapters::modem::ModemHealth>,
    /// Each person on duty now and whether a live duty console is there (`null`: unknown).
    #[serde(default)]
    pub on_duty: Vec<crate::engine::OnDuty>,
}

fn ok() -> String {
    "ok".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub alert_id: String,
    pub kind: String,
    pub state: String,
    pub tier: u8,
    pub device_id: Option<u32>,
    pub resident_id: Option<String>,
    pub resident_name: Option<String>,
    pub raised_at: Timestamp,
    pub age_s: u64,
    pub cancel_requested: bool,
    /// Everyone paged so far.
    pub notified: Vec<String>,
    pub delivered_to: Vec<String>,
    pub acked_by: Option<String>,
    pub acked_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    /// A `gateway_fault`'s description of what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the fallback ladder did (SMS, calls), as the alert document's `contacts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<ContactLine>,
}

/// One SMS or call of the fallback ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactLine {
    pub staff_id: String,
    pub channel: String,
    pub step: u8,
    pub at: Timestamp,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

// ---- the daemon's side ----

/// What the loop knows beyond the engine, for `status`.
#[derive(Debug, Clone)]
pub struct Facts {
    pub gateway_id: String,
    pub started_at: Timestamp,
    pub adapter: String,
    pub adapter_ok: bool,
    pub scan: &'static str,
    pub broker_connected: bool,
    pub store_ok: bool,
    pub devices_enrolled: usize,
    pub outbox_len: Option<u64>,
    /// Phone messages the MQTT adapter could not read, by reason.
    pub messages_ignored: BTreeMap<String, u64>,
    /// Why the gateway is degraded (see `health::StoreHealth::reasons`); empty when ok.
    pub degraded: Vec<String>,
    /// The fallback ladder's modem; `None` without `[fallback]`.
    pub modem: Option<crate::adapters::modem::ModemHealth>,
    /// Who is on duty now and whether a live, armed duty console is there.
    pub on_duty: Vec<crate::engine::OnDuty>,
}

/// A request waiting for the loop, with where its answer goes.
#[derive(Debug)]
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Answers one request; called by the task that owns the engine. The caller flushes the
/// engine's outputs afterwards, as after a phone's message.
pub fn answer(
    engine: &mut Engine,
    now: Instant,
    wall: Timestamp,
    facts: &Facts,
    request: Request,
) -> Response {
    match request {
        Request::Status => Response::Status(status(engine, wall, facts)),
        Request::Alerts { include_resolved } => Response::Alerts {
            alerts: engine
                .alerts()
                .filter(|a| include_resolved || !a.is_resolved())
                .map(|a| summary(engine, a, wall))
                .collect(),
        },
        Request::Ack { alert_id, staff_id } => {
            act(engine, now, wall, &staff_id, &alert_id, Action::Ack)
        }
        Request::Resolve {
            alert_id,
            staff_id,
            resolution,
        } => match Resolution::parse(&resolution) {
            Some(r) => act(engine, now, wall, &staff_id, &alert_id, Action::Resolve(r)),
            None => Response::Refused {
                reason: "unknown_resolution".into(),
                message: format!(
                    "unknown resolution {resolution:?}; use one of: {}",
                    Resolution::ALL.map(Resolution::as_str).join(", ")
                ),
            },
        },
        Request::TestAlarm { staff_id } => {
            match engine.raise_test(Now { mono: now, wall }, staff_id.as_deref()) {
                Ok(id) => {
                    tracing::info!(
                        alert_id = id,
                        staff_id,
                        "test alarm from the control socket"
                    );
                    match engine.alert(&id) {
                        Some(a) => Response::Alert(summary(engine, a, wall)),
                        None => Response::Error {
                            message: format!("test alert {id} raised but not found"),
                        },
                    }
                }
                Err(r) => refused(r, staff_id.as_deref().unwrap_or(""), ""),
            }
        }
    }
}

fn act(
    engine: &mut Engine,
    now: Instant,
    wall: Timestamp,
    staff_id: &str,
    alert_id: &str,
    action: Action,
) -> Response {
    match engine.handle_operator_action(Now { mono: now, wall }, staff_id, alert_id, action) {
        Ok(()) => {
            tracing::info!(
                staff_id,
                alert_id,
                action = action.name(),
                "operator action from the control socket"
            );
            match engine.alert(alert_id) {
                Some(a) => Response::Alert(summary(engine, a, wall)),
                None => Response::Error {
                    message: format!("alert {alert_id} not found after the action"),
                },
            }
        }
        Err(r) => {
            tracing::warn!(
                staff_id,
                alert_id,
                action = action.name(),
                reason = r.as_str(),
                "operator action refused"
            );
            refused(r, staff_id, alert_id)
        }
    }
}

fn refused(r: Refusal, staff_id: &str, alert_id: &str) -> Response {
    let message = match r {
        Refusal::UnknownStaff => {
            format!("unknown staff {staff_id:?}: not listed under [[staff]] in bandgate.toml")
        }
        Refusal::UnknownAlert => format!(
            "unknown alert {alert_id:?}: no such alert (bandgate alerts lists the open ones)"
        ),
        Refusal::AlreadyResolved => format!("alert {alert_id} is already resolved"),
        // The operator acts `--as` anyone; kept for completeness of the match.
        Refusal::NotPermitted => {
            format!("{staff_id} may not act on alert {alert_id}: not paged about it, not its claimer, not a supervisor")
        }
    };
    Response::Refused {
        reason: r.as_str().into(),
        message,
    }
}

fn status(engine: &Engine, wall: Timestamp, facts: &Facts) -> StatusReport {
    let intake = engine.intake();
    StatusReport {
        gateway_id: facts.gateway_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: facts.started_at,
        uptime_s: wall.duration_since(facts.started_at).as_secs().max(0) as u64,
        adapter: facts.adapter.clone(),
        adapter_ok: facts.adapter_ok,
        scan: facts.scan.to_string(),
        broker_connected: facts.broker_connected,
        store_ok: facts.store_ok,
        devices_enrolled: facts.devices_enrolled,
        devices_heard_15m: engine.devices_heard_since(wall - SignedDuration::from_mins(15)),
        open_alerts: engine.open_alerts(),
        outbox_len: facts.outbox_len,
        frames_accepted: intake.accepted(),
        frames_rejected: Reject::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), intake.rejected(*r)))
            .collect(),
        actions_refused: engine
            .counters()
            .refused_actions
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        messages_ignored: facts.messages_ignored.clone(),
        state: if facts.degraded.is_empty() {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        degraded: facts.degraded.clone(),
        modem: facts.modem.clone(),
        on_duty: facts.on_duty.clone(),
    }
}

fn summary(engine: &Engine, a: &Alert, wall: Timestamp) -> AlertSummary {
    let resident = a.device_id.and_then(|d| engine.setup().resident(d));
    AlertSummary {
        alert_id: a.id.clone(),
        kind: a.kind.as_str().into(),
        state: a.state.name().into(),
        tier: a.tier,
        device_id: a.device_id,
        resident_id: resident.map(|r| r.id.clone()),
        resident_name: resident.map(|r| r.name.clone()),
        raised_at: a.raised_at,
        age_s: wall.duration_since(a.raised_at).as_secs().max(0) as u64,
        cancel_requested: a.cancel_requested,
        notified: a.notified.clone(),
        delivered_to: a.delivered_to.clone(),
        acked_by: a.acked_by().map(str::to_string),
        acked_at: a.acked_at(),
        resolved_by: a.resolved_by().map(str::to_string),
        resolution: a.resolution().map(|r| r.as_str().to_string()),
        detail: a.detail.clone(),
        contacts: a
            .contacts
            .iter()
            .map(|c| ContactLine {
                staff_id: c.staff_id.clone(),
                channel: c.channel.as_str().into(),
                step: c.step,
                at: c.at,
                outcome: c.outcome.as_str().into(),
                detail: c.detail.clone(),
            })
            .collect(),
    }
}

/// The listening socket; dropping it stops accepting and removes the socket file (if it is
/// still ours).
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    inode: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Binds `path` (mode 0660) and hands every request to `tx`. A stale socket file left by a
    /// crash is removed; a live one (another bandgate answering) is an error.
    pub fn bind(path: &Path, tx: mpsc::Sender<Pending>) -> anyhow::Result<ControlSocket> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                anyhow::bail!(
                    "{} exists and is not a socket; remove it or set control_socket",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another process (another bandgate?) is answering on {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
            tracing::info!(path = %path.display(), "removed a stale control socket");
        }
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let meta = std::fs::metadata(path)?;
        let task = tokio::spawn(accept(listener, tx));
        Ok(ControlSocket {
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn accept(listener: tokio::net::UnixListener, tx: mpsc::Sender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, tx.clone()));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn serve(stream: tokio::net::UnixStream, tx: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let response = match tokio::time::timeout(ANSWER_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return,
        Ok(Err(e)) => Response::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("not a request: {e}"),
            },
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                let asked = tokio::time::timeout(ANSWER_TIMEOUT, async {
                    tx.send(Pending { request, reply }).await.ok()?;
                    answer.await.ok()
                })
                .await;
                match asked {
                    Ok(Some(r)) => r,
                    Ok(None) => Response::Error {
                        message: "the daemon is stopping".into(),
                    },
                    Err(_) => return,
                }
            }
        },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let r = Request::Resolve {
            alert_id: "17-42".into(),
            staff_id: "zhang".into(),
            resolution: "false_alarm".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"command":"resolve","alert_id":"17-42","staff_id":"zhang","resolution":"false_alarm"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let alerts: Request = serde_json::from_str(r#"{"command":"alerts"}"#).unwrap();
        assert_eq!(
            alerts,
            Request::Alerts {
                include_resolved: false
            }
        );
        let refused = Response::Refused {
            reason: "unknown_staff".into(),
            message: "m".into(),
        };
        let text = serde_json::to_string(&refused).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), refused);
    }
}
