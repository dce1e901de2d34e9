//! `bandgate console-link`: a staff member's sign-in link to the duty console, with their
//! MQTT password in the URL fragment (which a browser never sends to a server), printed with a
//! QR code in the terminal so that enrolling a phone is one scan.

use std::net::{IpAddr, UdpSocket};
use std::path::Path;

use rand::Rng;

use super::{Done, Failure};
use crate::config;

/// Generated passwords: letters and digits a person can read out if they must (no 0/O, 1/l).
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const GENERATED_LEN: usize = 16;

/// What the command was asked.
pub struct LinkArgs<'a> {
    pub config: &'a Path,
    pub staff_id: &'a str,
    /// The host name or address phones reach the gateway by; found when absent.
    pub host: Option<String>,
    /// The person's MQTT password; generated (and the broker command printed) when absent.
    pub password: Option<String>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sign-in link the console understands (`duty-console.md`).
pub fn link(scheme: &str, host: &str, port: u16, staff_id: &str, password: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "{scheme}://{host}:{port}/#u={}&p={}",
        encode(staff_id),
        encode(password)
    )
}

/// The QR code of `text`, in the terminal's block characters (two rows per line).
pub fn qr(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| format!("no QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// This machine's address on its default route (no packet is sent: a UDP "connect" only picks
/// the route).
fn local_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

pub fn console_link(args: LinkArgs<'_>) -> Result<Done, Failure> {
    let cfg = config::load(args.config).map_err(|p| Failure::Config(p.to_string()))?;
    let Some(web) = &cfg.web else {
        return Err(Failure::Failed(format!(
            "bandgate console-link: {} has no [web] section, so no console is served; add one (see the example config's [web])",
            args.config.display()
        )));
    };
    let Some(staff) = cfg.setup.staff.get(args.staff_id) else {
        let ids: Vec<&str> = cfg.setup.staff.keys().map(String::as_str).collect();
        return Err(Failure::Failed(format!(
            "bandgate console-link: no [[staff]] with id {:?} in {} (the ids are: {})",
            args.staff_id,
            args.config.display(),
            ids.join(", ")
        )));
    };
    let host = match args.host {
        Some(h) => h,
        None if !web.listen.ip().is_unspecified() => web.listen.ip().to_string(),
        None => match local_address() {
            Some(ip) => ip.to_string(),
            None => {
                return Err(Failure::Failed(
                    "bandgate console-link: cannot tell which address phones reach this gateway by; give it with --host (e.g. --host 192.168.1.10)".into(),
                ))
            }
        },
    };
    let generated = args.password.is_none();
    let password = args.password.unwrap_or_else(|| {
        let mut rng = rand::thread_rng();
        (0..GENERATED_LEN)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    });
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let url = link(scheme, &host, web.listen.port(), &staff.id, &password);
    let code = qr(&url).map_err(|e| Failure::Failed(format!("bandgate console-link: {e}")))?;
    println!(
        "{}（{}）的值班页登录链接 / sign-in link for {}:",
        staff.name, staff.id, staff.name
    );
    println!();
    println!("{code}");
    println!("{url}");
    println!();
    if generated {
        println!(
            "A new MQTT password was made for {}. Give it to the broker first:",
            staff.id
        );
        println!(
            "  sudo mosquitto_passwd -b /etc/mosquitto/bandgate.passwd {} '{password}'",
            staff.id
        );
        println!("  sudo systemctl reload mosquitto");
        println!();
    }
    println!("Scan the code with the phone's camera, open the link in the browser, add it to the");
    println!(
        "home screen, and tap 开始值班. The link holds the password: show it only to {}.",
        staff.name
    );
    Ok(Done::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_what_a_fragment_cannot_hold() {
        assert_eq!(
            link("http", "192.168.1.10", 8080, "zhang", "a b&c=d#é"),
            "http://192.168.1.10:8080/#u=zhang&p=a%20b%26c%3Dd%23%C3%A9"
        );
        assert_eq!(
            link("https", "fe80::1", 443, "li", "x"),
            "https://[fe80::1]:443/#u=li&p=x"
        );
    }

    #[test]
    fn the_qr_code_is_terminal_blocks() {
        let q = qr("http://192.168.1.10:8080/#u=zhang&p=x").unwrap();
        assert!(q.lines().count() > 10);
        assert!(q.contains('█') || q.contains('▀') || q.contains('▄'));
    }
}
