//! The webhook channel of the fallback ladder: for districts whose platform already holds a
//! cloud SMS/voice account, a ladder step is an HTTP POST of the request (JSON, signed with
//! HMAC-SHA256 over the body with a shared secret) to `[fallback] webhook_url`. The gateway
//! never holds cloud vendor keys: the platform texts or calls the person.
//!
//! - a 2xx answer is the outcome `sent` ("the platform took it"); the platform reports nothing
//!   back in this version, so later outcomes are not known (assumed sent);
//! - anything else (no connection, a timeout, a non-2xx status) is retried with back-off
//!   (`ATTEMPTS` in all), then the step is `failed` with the last reason: the ladder goes on;
//! - `X-Bandgate-Signature: sha256=<hex>` is HMAC-SHA256(secret, body); the body carries
//!   `sent_at` (the gateway's clock) so that the platform can refuse a replayed request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::adapters::mqtt::{format_time, tls_config};
use crate::engine::{ContactReport, Outcome};

/// Attempts per step, and the wait before each retry.
pub const ATTEMPTS: usize = 3;
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// One attempt, connection to answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting for the task; more are failed at once.
const QUEUE: usize = 256;

/// `webhook_url`, parsed: `http://` or `https://`, host, port, path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// With its query, starting with `/`.
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<WebhookUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("it must start with https:// (or http:// on a trusted network)".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "user names in the URL are not supported; the request is signed instead".into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{p:?} is not a port number"))?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("no host name".into());
        }
        Ok(WebhookUrl {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: WebhookUrl,
    /// The HMAC key (`webhook_secret_file`'s content, trimmed).
    pub secret: Vec<u8>,
    pub gateway_id: String,
}

/// One ladder step for the platform: what it needs to text or call the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookJob {
    pub alert_id: String,
    pub kind: String,
    pub staff_id: String,
    pub name: String,
    pub phone: String,
    pub step: u8,
    /// The one-SMS text (`modem::text::sms_text`), for the platform to send as it is.
    pub text: String,
    /// Asked for again after a restart (the first request's fate is unknown): the platform
    /// may see the same (alert_id, staff_id, step) twice and should send once.
    pub resume: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    gateway_id: &'a str,
    #[serde(flatten)]
    job: &'a WebhookJob,
    sent_at: String,
}

/// Starts the webhook task (inside a tokio runtime); its reports go to `reports`.
pub fn start(
    settings: WebhookSettings,
    reports: mpsc::Sender<ContactReport>,
) -> mpsc::Sender<WebhookJob> {
    let (tx, mut rx) = mpsc::channel::<WebhookJob>(QUEUE);
    let settings = Arc::new(settings);
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let settings = settings.clone();
            let reports = reports.clone();
            tokio::spawn(async move {
                let (outcome, detail) = post_with_retries(&settings, &job).await;
                if outcome == Outcome::Failed {
                    tracing::warn!(
                        alert_id = job.alert_id,
                        staff_id = job.staff_id,
                        step = job.step,
                        url = %settings.url,
                        detail = detail.as_deref().unwrap_or(""),
                        "fallback step failed"
                    );
                } else {
                    tracing::info!(
                        alert_id = job.alert_id,
                        staff_id = job.staff_id,
                        channel = "webhook",
                        step = job.step,
                        outcome = outcome.as_str(),
                        "fallback step"
                    );
                }
                let _ = reports
                    .send(ContactReport {
                        alert_id: job.alert_id,
                        staff_id: job.staff_id,
                        step: job.step,
                        outcome,
                        detail,
                    })
                    .await;
            });
        }
    });
    tx
}

async fn post_with_retries(s: &WebhookSettings, job: &WebhookJob) -> (Outcome, Option<String>) {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[(attempt - 1).min(BACKOFF.len() - 1)]).await;
        }
        let body = serde_json::to_vec(&Body {
            gateway_id: &s.gateway_id,
            job,
            sent_at: format_time(jiff::Timestamp::now()),
        })
        .expect("the webhook body serialises");
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(s, &body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                return (
                    Outcome::Sent,
                    Some(format!("the platform answered {status}")),
                )
            }
            Ok(Ok(status)) => last = format!("the platform answered {status}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
        }
        tracing::debug!(
            alert_id = job.alert_id,
            attempt,
            error = last,
            "webhook attempt failed"
        );
    }
    (
        Outcome::Failed,
        Some(format!("webhook: {last} (after {ATTEMPTS} attempts)")),
    )
}

/// HMAC-SHA256 of `body` with `secret`, as the `X-Bandgate-Signature` header carries it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// One POST; the answer's status code.
async fn post(s: &WebhookSettings, body: &[u8]) -> anyhow::Result<u16> {
    let u = &s.url;
    let tcp = TcpStream::connect((u.host.as_str(), u.port))
        .await
        .with_context(|| format!("connecting to {}:{}", u.host, u.port))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bandgate/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Bandgate-Signature: {}\r\nConnection: close\r\n\r\n",
        u.path,
        u.host,
        env!("CARGO_PKG_VERSION"),
        body.len(),
        signature(&s.secret, body)
    );
    if u.tls {
        let config = Arc::new(tls_config(None)?);
        let name = rustls::pki_types::ServerName::try_from(u.host.clone())
            .map_err(|e| anyhow!("{}: not a server name: {e}", u.host))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        exchange(tls, head.as_bytes(), body).await
    } else {
        exchange(tcp, head.as_bytes(), body).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &[u8],
    body: &[u8],
) -> anyhow::Result<u16> {
    stream
        .write_all(head)
        .await
        .context("sending the request")?;
    stream
        .write_all(body)
        .await
        .context("sending the request")?;
    stream.flush().await.context("sending the request")?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the answer")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => bail!("not an HTTP answer: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("https://platform.example/bandgate/fallback?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "platform.example", 443, "/bandgate/fallback?x=1")
        );
        let u = WebhookUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8081, "/"));
        assert!(WebhookUrl::parse("ftp://x").is_err());
        assert!(WebhookUrl::parse("http://:80/").is_err());
        assert!(WebhookUrl::parse("http://h:port/").is_err());
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
