//! `bandgate decode`: frames in hex (as btmon or a log shows them), one JSON line each.

use std::io::Write;
use std::path::Path;

use super::{cli, Done, Failure};
use crate::config;
use crate::engine::{frame, Intake};

/// Exit 64 when an argument is not hex (its line says so), 78 for a bad key file.
pub fn decode(
    keys: &Path,
    company_id: u16,
    window: bool,
    frames: &[String],
) -> Result<Done, Failure> {
    let keyring = config::keys::load(keys).map_err(|p| Failure::Config(p.to_string()))?;
    let mut intake = Intake::new(company_id, keyring.clone());
    let mut out = std::io::stdout().lock();
    let mut bad_hex = false;
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
