//! The duty console's HTTP(S) server: the page's files (`console/`, embedded in the binary) and
//! `console.json` (where the page connects). GET and HEAD only, one request per connection;
//! anything else gets a specific status and is counted. It never talks to the loop: the page
//! speaks MQTT to the broker itself, so a console server that fails never touches paging.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ConsoleTls, Web};

/// A request head longer than this is refused (431): the page's own requests are < 1 KiB.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A listener that could not be opened (address in use, certificate unreadable) is retried
/// this often; paging goes on meanwhile.
const RETRY: Duration = Duration::from_secs(30);

/// One embedded file of the console: its path on the server and its bytes.
struct File {
    path: &'static str,
    body: &'static [u8],
}

/// `console/NAME` embedded, served as `/NAME`.
macro_rules! embed {
    ($name:literal) => {
        File {
            path: concat!("/", $name),
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const FILES: &[File] = &[
    embed!("index.html"),
    embed!("style.css"),
    embed!("app.js"),
    embed!("mqtt.js"),
    embed!("words.js"),
    embed!("sw.js"),
    embed!("icon.svg"),
];

/// The content type of a served path, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Every embedded file's size, for the README's "first load" figure and its test.
pub fn embedded_bytes() -> usize {
    FILES.iter().map(|f| f.body.len()).sum()
}

/// What the page needs to know about the site (`/console.json`): nothing secret.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleSite {
    /// `[web] broker_url`; the page replaces `{host}` with the host it was loaded from.
    pub broker_url: String,
    pub topic_prefix: String,
    pub site_id: String,
    /// The page's default language (`?lang=en` overrides it).
    pub locale: &'static str,
    /// Staff ids of the supervisors: they see the claimer's buttons too.
    pub supervisors: Vec<String>,
    /// 5, or 4 where the broker speaks only MQTT 3.1.1 on WebSockets (the demo's embedded one).
    pub mqtt_version: u8,
}

/// Requests the server refused, by reason (for the log and tests).
#[derive(Debug, Default)]
pub struct Refusals {
    pub malformed: AtomicU64,
    pub too_large: AtomicU64,
    pub method: AtomicU64,
    pub not_found: AtomicU64,
    pub timed_out: AtomicU64,
}

/// The response to one request head, as bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub bytes: Vec<u8>,
}

/// The console's files and its `console.json`, ready to serve.
pub struct Console {
    json: Vec<u8>,
    etag: String,
    pub refusals: Refusals,
}

impl Console {
    pub fn new(site: &ConsoleSite) -> Console {
        let json = serde_json::to_vec(site).expect("console.json serialises");
        // One tag for the whole set: files and site change together (a new binary, a new config).
        let mut h: u64 = 0xcbf29ce484222325;
        for b in FILES.iter().flat_map(|f| f.body.iter()).chain(json.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        Console {
            json,
            etag: format!("\"{h:016x}\""),
            refusals: Refusals::default(),
        }
    }

    /// Answers one request whose head is `head` (possibly incomplete: `None` asks for more).
    pub fn respond(&self, head: &[u8]) -> Option<Response> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => return None,
            Ok(httparse::Status::Partial) => {
                self.refusals.too_large.fetch_add(1, Ordering::Relaxed);
                return Some(plain(431, "request head too large\n"));
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.refusals.too_large.fetch_add(1, Ordering::Relaxed);
                return Some(plain(431, "too many header fields\n"));
            }
            Err(e) => {
                self.refusals.malformed.fetch_add(1, Ordering::Relaxed);
                return Some(plain(400, &format!("malformed request: {e}\n")));
            }
            Ok(httparse::Status::Complete(_)) => {}
        }
        let method = req.method.unwrap_or("");
        let head_only = match method {
            "GET" => false,
            "HEAD" => true,
            _ => {
                self.refusals.method.fetch_add(1, Ordering::Relaxed);
                let mut r = plain(405, "only GET and HEAD\n");
                r.bytes = with_header(r.bytes, "Allow: GET, HEAD");
                return Some(r);
            }
        };
        let path = req.path.unwrap_or("/");
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let path = if path == "/" { "/index.html" } else { path };
        let content_type = content_type(path);
        let body: &[u8] = if path == "/console.json" {
            &self.json
        } else if let Some(f) = FILES.iter().find(|f| f.path == path) {
            f.body
        } else {
            self.refusals.not_found.fetch_add(1, Ordering::Relaxed);
            return Some(plain(404, "not found\n"));
        };
        let fresh = req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("if-none-match")
                && std::str::from_utf8(h.value).is_ok_and(|v| v.contains(&self.etag))
        });
        if fresh {
            return Some(Response {
                status: 304,
                bytes: head_bytes(304, content_type, 0, &self.etag),
            });
        }
        let mut bytes = head_bytes(200, content_type, body.len(), &self.etag);
        if !head_only {
            bytes.extend_from_slice(body);
        }
        Some(Response { status: 200, bytes })
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn head_bytes(status: u16, content_type: &str, len: usize, etag: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {len}\r\n\
         Cache-Control: no-cache\r\n\
         ETag: {etag}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'\r\n\
         Connection: close\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

fn plain(status: u16, text: &str) -> Response {
    let mut bytes = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        text.len()
    )
    .into_bytes();
    bytes.extend_from_slice(text.as_bytes());
    Response { status, bytes }
}

/// Inserts one header line after the status line.
fn with_header(bytes: Vec<u8>, line: &str) -> Vec<u8> {
    let at = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(bytes.len(), |p| p + 2);
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Reads one request head and writes its response; then the connection closes.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    console: &Console,
    mut stream: S,
) -> std::io::Result<u16> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let response = loop {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                console.refusals.timed_out.fetch_add(1, Ordering::Relaxed);
                break plain(408, "request head not received in time\n");
            }
        };
        if n == 0 {
            return Ok(0);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(r) = console.respond(&head) {
            break r;
        }
    };
    stream.write_all(&response.bytes).await?;
    stream.shutdown().await?;
    Ok(response.status)
}

/// The TLS acceptor for HTTPS, from the PEM files.
fn tls_acceptor(tls: &ConsoleTls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", tls.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        tls.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading the private key {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the private key do not make a TLS identity")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the console forever. A listener that cannot be opened is an error in the log, retried
/// every 30 s; it never stops the gateway (phones with an MQTT app are still paged).
pub async fn serve(web: Web, site: ConsoleSite) {
    let console = Arc::new(Console::new(&site));
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    loop {
        match open(&web).await {
            Ok((listener, tls)) => {
                tracing::info!(
                    url = format!("{scheme}://{}/", web.listen),
                    broker_url = site.broker_url,
                    "duty console served"
                );
                accept_loop(listener, tls, console.clone()).await;
            }
            Err(e) => tracing::error!(
                listen = %web.listen,
                error = format!("{e:#}"),
                "the duty console cannot be served (phones are still paged over MQTT); retrying in 30 s"
            ),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn open(web: &Web) -> anyhow::Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>)> {
    let tls = web.tls.as_ref().map(tls_acceptor).transpose()?;
    let listener = TcpListener::bind(web.listen)
        .await
        .with_context(|| format!("listening on {}", web.listen))?;
    Ok((listener, tls))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    console: Arc<Console>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "duty console: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let console = console.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(&console, s).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Ok(408),
                    }
                }
                None => serve_connection(&console, stream).await,
            };
            log_result(peer, result);
        });
    }
}

fn log_result(peer: SocketAddr, result: std::io::Result<u16>) {
    match result {
        Ok(status) if status < 400 => tracing::trace!(%peer, status, "duty console request"),
        Ok(status) => tracing::debug!(%peer, status, "duty console request refused"),
        Err(e) => tracing::debug!(%peer, error = %e, "duty console connection failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> Console {
        Console::new(&ConsoleSite {
            broker_url: "ws://{host}:9001".into(),
            topic_prefix: "bandgate/site".into(),
            site_id: "site".into(),
            locale: "zh-CN",
            supervisors: vec!["chen".into()],
            mqtt_version: 5,
        })
    }

    fn text(r: &Response) -> String {
        String::from_utf8_lossy(&r.bytes).into_owned()
    }

    #[test]
    fn serves_the_page_and_its_site() {
        let c = console();
        let r = c.respond(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        assert!(text(&r).contains("text/html"), "{}", text(&r));
        assert!(text(&r).contains("开始值班"));
        let r = c
            .respond(b"GET /console.json?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let body = text(&r);
        let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["broker_url"], "ws://{host}:9001");
        assert_eq!(v["supervisors"][0], "chen");
    }

    #[test]
    fn head_has_no_body_and_etag_revalidates() {
        let c = console();
        let r = c.respond(b"HEAD /app.js HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        assert!(text(&r).ends_with("\r\n\r\n"));
        let req = format!("GET /app.js HTTP/1.1\r\nIf-None-Match: {}\r\n\r\n", c.etag);
        assert_eq!(c.respond(req.as_bytes()).unwrap().status, 304);
    }

    #[test]
    fn bad_requests_get_specific_statuses() {
        let c = console();
        assert_eq!(
            c.respond(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            None,
            "incomplete: read more"
        );
        let r = c.respond(b"POST / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.status, 405);
        assert!(text(&r).contains("Allow: GET, HEAD"));
        assert_eq!(
            c.respond(b"GET /../etc/passwd HTTP/1.1\r\n\r\n")
                .unwrap()
                .status,
            404
        );
        assert_eq!(c.respond(b"\x00\x01garbage\r\n\r\n").unwrap().status, 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(c.respond(huge.as_bytes()).unwrap().status, 431);
        let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(c.respond(req.as_bytes()).unwrap().status, 431);
        assert_eq!(c.refusals.method.load(Ordering::Relaxed), 1);
        assert_eq!(c.refusals.too_large.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn first_load_is_small() {
        // The bound is 300 KB transferred; the page must stay far below it.
        assert!(embedded_bytes() < 150_000, "{}", embedded_bytes());
    }
}
