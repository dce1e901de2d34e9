//! The operator commands (`status`, `alerts`, `ack`, `resolve`, `test-alarm`): the control
//! socket's client, and the text they print for people.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::{code, Done, Failure};
use crate::adapters::control::*;
use crate::config;

/// Where the request goes: `--socket`, else `control_socket` of `--config`, else the default.
pub fn socket(socket: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf, Failure> {
    match (socket, config) {
        (Some(s), _) => Ok(s),
        (None, Some(c)) => {
            config::lenient::control_socket(c).map_err(|p| Failure::Config(p.to_string()))
        }
        (None, None) => Ok(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// One request to the daemon's control socket. Ok when done; `Reported` when the daemon
/// refused (the reason on stderr); `Unreachable` when it could not be asked.
pub fn operate(socket: &Path, json: bool, request: Request) -> Result<Done, Failure> {
    let response = self::request(socket, &request).map_err(Failure::Unreachable)?;
    let ok = !matches!(response, Response::Refused { .. } | Response::Error { .. });
    if json {
        println!("{}", serde_json::to_string(&response).unwrap_or_default());
    } else {
        match &response {
            Response::Status(s) => print!("{}", status_text(s)),
            Response::Alerts { alerts } => print!("{}", alerts_text(alerts)),
            Response::Alert(a) => match &request {
                Request::TestAlarm { .. } => println!(
                    "{}: test alarm paging {} (tier {}); an ack from the phone resolves it as test",
                    a.alert_id,
                    if a.notified.is_empty() {
                        "nobody".to_string()
                    } else {
                        a.notified.join(", ")
                    },
                    a.tier
                ),
                _ => println!("{}", action_text(a)),
            },
            Response::Refused { .. } | Response::Error { .. } => {}
        }
    }
    match response {
        Response::Refused { message, .. } => eprintln!("bandgate: refused: {message}"),
        Response::Error { message } => {
            eprintln!("bandgate: the daemon could not answer: {message}")
        }
        _ => {}
    }
    if ok {
        Ok(Done::Ok)
    } else {
        Err(Failure::Reported)
    }
}

// ---- the client's side ----

/// Why a command could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bandgate is not running: no socket at {0}; start it with systemctl start bandgate")]
    NoSocket(PathBuf),
    #[error("bandgate is not running: nothing answers on {0} (a socket left by a crash?); start it with systemctl start bandgate")]
    Refused(PathBuf),
    #[error("permission denied on {0}: add your user to the bandgate group: sudo adduser $USER bandgate, then log in again")]
    Permission(PathBuf),
    #[error("bandgate did not answer within 5 s on {0}; see systemctl status bandgate and journalctl -u bandgate")]
    Timeout(PathBuf),
    #[error("talking to bandgate on {0}: {1}")]
    Other(PathBuf, String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NoSocket(_) | ClientError::Refused(_) => code::UNAVAILABLE,
            ClientError::Permission(_) => code::NOPERM,
            ClientError::Timeout(_) => code::TEMPFAIL,
            ClientError::Other(..) => code::PROTOCOL,
        }
    }
}

/// Sends one request and waits (at most `ANSWER_TIMEOUT`) for its answer.
pub fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    use std::io::ErrorKind;
    let p = || path.to_path_buf();
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound => ClientError::NoSocket(p()),
        ErrorKind::ConnectionRefused => ClientError::Refused(p()),
        ErrorKind::PermissionDenied => ClientError::Permission(p()),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout(p()),
        _ => ClientError::Other(p(), e.to_string()),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::Other(p(), e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Other(
            p(),
            "the daemon closed the connection without an answer".into(),
        ));
    }
    serde_json::from_str(&answer)
        .map_err(|e| ClientError::Other(p(), format!("unreadable answer: {e}")))
}

// ---- what the commands print ----

/// `bandgate status`, for people.
pub fn status_text(s: &StatusReport) -> String {
    let radio = if s.adapter_ok {
        format!("{}: ok", s.adapter)
    } else {
        format!("{}: NOT SCANNING (bands are not heard)", s.adapter)
    };
    let radio = match s.scan.as_str() {
        "" => radio,
        "active-fallback" => format!(
            "{radio}, active scan (passive scanning is configured but NOT available: see the log)"
        ),
        mode => format!("{radio}, {mode} scan"),
    };
    let broker = if s.broker_connected {
        "connected".to_string()
    } else {
        "NOT CONNECTED (pages wait in the outbox)".to_string()
    };
    let rejected: Vec<String> = s
        .frames_rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let rejected = if rejected.is_empty() {
        "none rejected".to_string()
    } else {
        format!("rejected: {}", rejected.join(", "))
    };
    let mut out = format!(
        "bandgate {} (gateway {}), up {} since {}\n",
        s.version,
        s.gateway_id,
        age(s.uptime_s),
        s.started_at
            .round(jiff::Unit::Second)
            .unwrap_or(s.started_at)
    );
    out += &format!("radio    {radio}\n");
    out += &format!("broker   {broker}\n");
    out += &format!(
        "bands    {} enrolled, {} heard in the last 15 min\n",
        s.devices_enrolled, s.devices_heard_15m
    );
    out += &format!("alerts   {} open\n", s.open_alerts);
    out += &match s.outbox_len {
        Some(n) => format!("outbox   {n} waiting for the broker\n"),
        None => "outbox   unknown: the state store cannot be read (see the log)\n".to_string(),
    };
    out += &format!("frames   {} accepted, {rejected}\n", s.frames_accepted);
    out += &format!(
        "phones   actions refused: {}; messages ignored: {}\n",
        counts(&s.actions_refused),
        counts(&s.messages_ignored)
    );
    if let Some(m) = &s.modem {
        out += &modem_line(m);
    }
    out += &on_duty_line(&s.on_duty);
    if !s.store_ok {
        out += "store    FAILING: state is not restart-safe (see the log)\n";
    }
    if !s.degraded.is_empty() {
        out += "state    DEGRADED (the supervisors were paged: gateway_fault)\n";
        for why in &s.degraded {
            out += &format!("         - {why}\n");
        }
    }
    out
}

/// "none", or "reason n, ..." for the non-zero counts.
fn counts(m: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

fn modem_line(m: &crate::adapters::modem::ModemHealth) -> String {
    if m.present {
        format!(
            "modem    present, SIM {}, {}, signal {}\n",
            super::known(m.sim_ready, "ready", "NOT READY"),
            super::known(m.registered, "registered", "NOT REGISTERED"),
            m.signal_pct
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "?".into())
        )
    } else {
        "modem    NOT FOUND: fallback SMS and calls fail (MQTT paging goes on); check `mmcli -L`\n"
            .to_string()
    }
}

fn on_duty_line(on_duty: &[crate::engine::OnDuty]) -> String {
    if on_duty.is_empty() {
        "on duty  nobody (alerts start at tier 2)\n".to_string()
    } else {
        let people: Vec<String> = on_duty
            .iter()
            .map(|p| {
                let console = match p.console {
                    Some(true) => "console live",
                    Some(false) => "console GONE",
                    None => "no console seen",
                };
                format!("{} ({}): {console}", p.name, p.staff_id)
            })
            .collect();
        format!("on duty  {}\n", people.join("; "))
    }
}

/// `bandgate alerts`, for people: one row per alert.
pub fn alerts_text(alerts: &[AlertSummary]) -> String {
    if alerts.is_empty() {
        return "no open alerts\n".into();
    }
    let rows: Vec<[String; 8]> = alerts
        .iter()
        .map(|a| {
            let resident = match (&a.resident_name, &a.resident_id) {
                (Some(n), Some(id)) => format!("{n} ({id})"),
                _ => "-".into(),
            };
            let mut state = a.state.clone();
            if a.cancel_requested {
                state.push_str(" (wearer cancelled)");
            }
            if let Some(r) = &a.resolution {
                state.push_str(&format!(" ({r})"));
            }
            [
                a.alert_id.clone(),
                a.kind.clone(),
                resident,
                state,
                a.tier.to_string(),
                age(a.age_s),
                list(&a.notified),
                a.acked_by.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "ALERT", "KIND", "RESIDENT", "STATE", "TIER", "AGE", "PAGED", "ACKED BY",
    ]
    .map(String::from);
    let mut widths = [0usize; 8];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for a in alerts {
        if let Some(detail) = &a.detail {
            out += &format!("{}: {detail}\n", a.alert_id);
        }
        for c in &a.contacts {
            out += &format!(
                "{}: {} {} step {} at {}: {}{}\n",
                a.alert_id,
                c.channel,
                c.staff_id,
                c.step,
                c.at.round(jiff::Unit::Second).unwrap_or(c.at),
                c.outcome,
                c.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// One line after `bandgate ack` or `resolve`: where the alert is now.
pub fn action_text(a: &AlertSummary) -> String {
    let about = match (&a.resident_name, &a.resident_id) {
        (Some(n), Some(id)) => format!("{}, {n} ({id})", a.kind),
        _ => a.kind.clone(),
    };
    let by = |who: &Option<String>| who.clone().unwrap_or_else(|| "-".into());
    match a.state.as_str() {
        "resolved" => format!(
            "{} ({about}): resolved by {} as {}; the people paged were told",
            a.alert_id,
            by(&a.resolved_by),
            a.resolution.as_deref().unwrap_or("-")
        ),
        "acknowledged" | "on_scene" => format!(
            "{} ({about}): {} by {}; the people paged were told",
            a.alert_id,
            a.state,
            by(&a.acked_by)
        ),
        other => format!("{} ({about}): {other}", a.alert_id),
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// `75`, `3m 20s`, `2h 5m`, `3d 4h`.
fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn an_outbox_the_store_cannot_count_is_shown_as_unknown_not_empty() {
        let mut report = StatusReport {
            gateway_id: "gw-1".into(),
            version: "0.1.0".into(),
            started_at: Timestamp::UNIX_EPOCH,
            uptime_s: 60,
            adapter: "replay".into(),
            adapter_ok: true,
            scan: String::new(),
            broker_connected: false,
            store_ok: false,
            devices_enrolled: 4,
            devices_heard_15m: 4,
            open_alerts: 1,
            outbox_len: None,
            frames_accepted: 10,
            frames_rejected: BTreeMap::new(),
            actions_refused: BTreeMap::new(),
            messages_ignored: BTreeMap::new(),
            state: "ok".into(),
            degraded: vec![],
            modem: None,
            on_duty: vec![],
        };
        let text = status_text(&report);
        assert!(
            text.contains("outbox   unknown: the state store cannot be read"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["outbox_len"].is_null());
        report.outbox_len = Some(3);
        assert!(status_text(&report).contains("outbox   3 waiting for the broker"));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), report);
    }

    #[test]
    fn a_degraded_gateway_says_why_in_status_and_its_fault_in_alerts() {
        let report = StatusReport {
            gateway_id: "gw-1".into(),
            version: "0.1.0".into(),
            started_at: Timestamp::UNIX_EPOCH,
            uptime_s: 5,
            adapter: "replay".into(),
            adapter_ok: true,
            scan: String::new(),
            broker_connected: true,
            store_ok: true,
            devices_enrolled: 1,
            devices_heard_15m: 0,
            open_alerts: 1,
            outbox_len: Some(0),
            frames_accepted: 0,
            frames_rejected: BTreeMap::new(),
            actions_refused: BTreeMap::new(),
            messages_ignored: BTreeMap::new(),
            state: "degraded".into(),
            degraded: vec!["state database came back empty".into()],
            modem: None,
            on_duty: vec![],
        };
        let text = status_text(&report);
        assert!(
            text.ends_with(
                "state    DEGRADED (the supervisors were paged: gateway_fault)\n         \
                 - state database came back empty\n"
            ),
            "{text}"
        );
        // A client of an older daemon (no `state`) reads it as ok.
        let mut json = serde_json::to_value(&report).unwrap();
        json.as_object_mut().unwrap().remove("state");
        json.as_object_mut().unwrap().remove("degraded");
        let old: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(old.state, "ok");
        assert!(!status_text(&old).contains("DEGRADED"));

        let fault = AlertSummary {
            alert_id: "gateway-gw-1-fault-1".into(),
            kind: "gateway_fault".into(),
            state: "open".into(),
            tier: 1,
            device_id: None,
            resident_id: None,
            resident_name: None,
            raised_at: Timestamp::UNIX_EPOCH,
            age_s: 3,
            cancel_requested: false,
            notified: vec!["chen".into()],
            delivered_to: vec![],
            acked_by: None,
            acked_at: None,
            resolved_by: None,
            resolution: None,
            detail: Some("the state database was moved aside".into()),
            contacts: vec![],
        };
        let text = alerts_text(&[fault]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("gateway-gw-1-fault-1  gateway_fault  -"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "gateway-gw-1-fault-1: the state database was moved aside"
        );
    }

    #[test]
    fn alerts_list_the_fallback_contacts() {
        use crate::adapters::control::ContactLine;
        let at: Timestamp = "2026-11-23T03:44:59.120Z".parse().unwrap();
        let a = AlertSummary {
            alert_id: "17-42".into(),
            kind: "sos".into(),
            state: "open".into(),
            tier: 1,
            device_id: Some(17),
            resident_id: Some("r017".into()),
            resident_name: Some("王秀英".into()),
            raised_at: Timestamp::UNIX_EPOCH,
            age_s: 60,
            cancel_requested: false,
            notified: vec!["zhang".into()],
            delivered_to: vec![],
            acked_by: None,
            acked_at: None,
            resolved_by: None,
            resolution: None,
            detail: None,
            contacts: vec![
                ContactLine {
                    staff_id: "zhang".into(),
                    channel: "sms".into(),
                    step: 1,
                    at,
                    outcome: "delivered".into(),
                    detail: None,
                },
                ContactLine {
                    staff_id: "zhang".into(),
                    channel: "call".into(),
                    step: 2,
                    at,
                    outcome: "failed".into(),
                    detail: Some("no modem".into()),
                },
            ],
        };
        let text = alerts_text(&[a]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[2..],
            [
                "17-42: sms zhang step 1 at 2026-11-23T03:44:59Z: delivered",
                "17-42: call zhang step 2 at 2026-11-23T03:44:59Z: failed (no modem)"
            ],
            "{text}"
        );
    }

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(200), "3m 20s");
        assert_eq!(age(7500), "2h 5m");
        assert_eq!(age(3 * 86400 + 4 * 3600), "3d 4h");
    }
}
