//! `bandgate decode`: frames in hex (as btmon or a log shows them), one JSON line each;
//! with `--bthome MAC`, BTHome service data heard from that device.

use std::io::Write;
use std::path::Path;

use super::{cli, Done, Failure};
use crate::config;
use crate::engine::{bthome, frame, Intake};

/// Exit 64 when an argument is not hex (its line says so), 78 for a bad key file.
pub fn decode(
    keys: &Path,
    company_id: u16,
    window: bool,
    bthome_mac: Option<&str>,
    frames: &[String],
) -> Result<Done, Failure> {
    let keyring = config::keys::load(keys).map_err(|p| Failure::Config(p.to_string()))?;
    let mut intake = Intake::new(company_id, keyring.clone());
    let mut out = std::io::stdout().lock();
    let mut bad_hex = false;
    if let Some(mac) = bthome_mac {
        let Some(mac) = bthome::parse_mac(mac) else {
            eprintln!(
                "bandgate decode: --bthome {mac:?} is not a Bluetooth address (AA:BB:CC:DD:EE:FF)"
            );
            return Err(Failure::Usage);
        };
        for h in frames {
            let line = match cli::parse_hex(h) {
                Ok(bytes) => decode_bthome(&mut intake, &mac, strip_uuid(&bytes), window),
                Err(msg) => {
                    bad_hex = true;
                    serde_json::json!({ "error": "not_hex", "detail": msg })
                }
            };
            writeln!(out, "{line}").map_err(|_| Failure::Reported)?;
        }
        return if bad_hex {
            Err(Failure::Usage)
        } else {
            Ok(Done::Ok)
        };
    }
    for h in frames {
        let line = match cli::parse_hex(h) {
            Ok(bytes) if window => match intake.accept(&bytes) {
                Ok(frame) => cli::frame_json(&frame),
                Err(reason) => cli::reject_json(reason),
            },
            Ok(bytes) => match frame::open(&bytes, company_id, &keyring) {
                Ok(frame) => cli::frame_json(&frame),
                Err(reason) => cli::reject_json(reason),
            },
            Err(msg) => {
                bad_hex = true;
                serde_json::json!({ "error": "not_hex", "detail": msg })
            }
        };
        writeln!(out, "{line}").map_err(|_| Failure::Reported)?;
    }
    if bad_hex {
        Err(Failure::Usage)
    } else {
        Ok(Done::Ok)
    }
}

/// Service data as pasted: from the device-information byte on, or with the UUID in front as
/// on air (`d2fc…`; no device-information byte starts `d2`, whose version bits read 6).
fn strip_uuid(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0xD2, 0xFC, rest @ ..] => rest,
        other => other,
    }
}

/// The gateway's verdict on one BTHome frame; a refused frame that can be read without a key
/// (an unencrypted one) shows what it says beside the reason.
fn decode_bthome(
    intake: &mut Intake,
    mac: &bthome::Mac,
    data: &[u8],
    window: bool,
) -> serde_json::Value {
    let verdict = if window {
        intake.accept_bthome(mac, data).map(|f| f.reading)
    } else {
        bthome::open(data, mac, intake.keys().bthome()).map(|(_, r)| r)
    };
    let device = |r: &bthome::Reading| intake.keys().bthome().get(&r.mac).cloned();
    match verdict {
        Ok(r) => cli::bthome_json(&r, device(&r).as_ref()),
        Err(reason) => {
            let mut v = cli::reject_json(reason);
            if let Ok(r) = bthome::read(data, mac, None) {
                v["frame"] = cli::bthome_json(&r, device(&r).as_ref());
            }
            v
        }
    }
}
