//! The replay source: a capture file (JSON lines, `shared/spec/mqtt-contract.md`) played back
//! as if the radio heard it, keeping its gaps or as fast as possible.
//!
//! Installers record with `bandgate scan --record` and replay on another machine; tests and
//! benchmarks feed the daemon through exactly the path a radio frame takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use super::lanes::{Advert, AdvertTx, Format};
use crate::engine::bthome;

/// One line of a capture: a band's advert (`company_id` and `data`, the contract's form) or,
/// an extension of it, a BTHome device's (`service_uuid` and `service_data`; README, "Replay
/// captures"). Lines of the contract's form read as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureLine {
    pub t_ms: u64,
    pub addr: String,
    pub rssi: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<u16>,
    /// Manufacturer data after the company id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The service data's 128-bit UUID (BTHome's: `engine::bthome::UUID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_uuid: Option<String>,
    /// Service data from the device-information byte on, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_data: Option<String>,
}

impl CaptureLine {
    /// The advert's format and bytes, or why the line cannot be played.
    fn payload(&self, company_id: u16) -> Result<Option<(Format, Vec<u8>)>, String> {
        if let Some(sd) = &self.service_data {
            let uuid = self.service_uuid.as_deref().unwrap_or(bthome::UUID);
            if !uuid.eq_ignore_ascii_case(bthome::UUID) {
                return Ok(None);
            }
            let data = hex::decode(sd).map_err(|e| format!("service_data is not hex: {e}"))?;
            return Ok(Some((Format::BtHome, data)));
        }
        let (Some(cid), Some(data)) = (self.company_id, &self.data) else {
            return Err("neither company_id and data nor service_data".into());
        };
        if cid != company_id {
            return Ok(None);
        }
        let data = hex::decode(data).map_err(|e| format!("data is not hex: {e}"))?;
        Ok(Some((Format::Band, data)))
    }
}

#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub file: PathBuf,
    pub company_id: u16,
    /// Ignore the gaps and send everything at once.
    pub fast: bool,
}

/// What a replay did, for the log at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub sent: u64,
    /// Lines under another company id (or another service UUID).
    pub other_company: u64,
    pub bad_lines: u64,
}

/// Plays the capture into `tx`. Bad lines are logged with their number and skipped: one
/// damaged line must not hide the SOS on the next.
pub async fn run(settings: ReplaySettings, tx: AdvertTx) -> anyhow::Result<ReplayReport> {
    let file = tokio::fs::File::open(&settings.file)
        .await
        .with_context(|| format!("opening replay capture {}", settings.file.display()))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let start = tokio::time::Instant::now();
    let mut report = ReplayReport::default();
    let mut number = 0u64;
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading replay capture {}", settings.file.display()))?
    {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<CaptureLine>(&line)
            .map_err(|e| e.to_string())
            .and_then(|c| Ok((c.payload(settings.company_id)?, c)));
        let (payload, capture) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                report.bad_lines += 1;
                tracing::warn!(file = %settings.file.display(), line = number, error = e, "replay line skipped");
                continue;
            }
        };
        let Some((format, data)) = payload else {
            report.other_company += 1;
            continue;
        };
        if !settings.fast {
            tokio::time::sleep_until(start + Duration::from_millis(capture.t_ms)).await;
        }
        let advert = Advert {
            addr: capture.addr,
            rssi: capture.rssi,
            data,
            received_at: jiff::Timestamp::now(),
            format,
        };
        if !tx.send(advert) {
            break;
        }
        report.sent += 1;
    }
    tracing::info!(
        file = %settings.file.display(),
        sent = report.sent,
        other_company = report.other_company,
        bad_lines = report.bad_lines,
        "replay finished"
    );
    Ok(report)
}

/// Writes capture lines (for `scan --record` and tests).
pub fn write_line(out: &mut impl std::io::Write, line: &CaptureLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Reads a whole capture (tests and tools).
pub fn read_all(path: &Path) -> anyhow::Result<Vec<CaptureLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading replay capture {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> CaptureLine {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn band_lines_read_as_before_and_bthome_lines_carry_service_data() {
        let band = line(
            r#"{"t_ms": 1200, "addr": "C8:FD:19:00:00:11", "rssi": -61, "company_id": 65535, "data": "b111"}"#,
        );
        assert_eq!(
            band.payload(0xFFFF),
            Ok(Some((Format::Band, vec![0xb1, 0x11])))
        );
        assert_eq!(band.payload(0x004C), Ok(None));
        let bt = line(
            r#"{"t_ms": 5, "addr": "54:48:E6:8F:80:A5", "rssi": null, "service_uuid": "0000FCD2-0000-1000-8000-00805f9b34fb", "service_data": "4400"}"#,
        );
        assert_eq!(
            bt.payload(0xFFFF),
            Ok(Some((Format::BtHome, vec![0x44, 0])))
        );
        let other = line(
            r#"{"t_ms": 5, "addr": "x", "rssi": null, "service_uuid": "0000fe95-0000-1000-8000-00805f9b34fb", "service_data": "00"}"#,
        );
        assert_eq!(other.payload(0xFFFF), Ok(None));
        assert!(line(r#"{"t_ms": 5, "addr": "x", "rssi": null}"#)
            .payload(0xFFFF)
            .is_err());
        assert!(
            line(r#"{"t_ms": 5, "addr": "x", "rssi": null, "service_data": "zz"}"#)
                .payload(0xFFFF)
                .is_err()
        );
        // Written back, a band line is the contract's form, without the new keys.
        let mut out = Vec::new();
        write_line(&mut out, &band).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"t_ms\":1200,\"addr\":\"C8:FD:19:00:00:11\",\"rssi\":-61,\"company_id\":65535,\"data\":\"b111\"}\n"
        );
    }
}
