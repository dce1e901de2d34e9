//! `[ble]`: where advertisements come from, and the radio's settings.

use serde::Deserialize;

use crate::adapters::ble::ScanMode;
use crate::config::checked::{Ble, Radio, Source};
use crate::config::diagnose::Check;

/// `source`: the radio.
pub const SOURCE: &str = "bluez";
/// `company_id`: the Bluetooth company id the bands advertise under (0xFFFF: none assigned).
pub const COMPANY_ID: u16 = 0xFFFF;
/// `silence_restart`: no advertisement from anyone this long, and the watchdog steps in.
pub const SILENCE_RESTART: &str = "60s";
/// `scan`: how BlueZ is asked for advertisements. Active discovery is the default: passive
/// scanning (BlueZ's advertisement monitor) is not yet proven on real hardware (README).
pub const SCAN: &str = "active";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawBle {
    source: Option<String>,
    adapter: Option<String>,
    company_id: Option<i64>,
    silence_restart: Option<String>,
    scan: Option<String>,
    replay_file: Option<String>,
}

/// Which source `source` names, before its settings are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bluez,
    Replay,
    Simulate,
}

impl Check {
    pub(in crate::config) fn ble(&mut self, raw: RawBle) -> Option<Ble> {
        let kind = match raw.source.as_deref().unwrap_or(SOURCE) {
            "bluez" => Some(Kind::Bluez),
            "replay" => Some(Kind::Replay),
            "simulate" => Some(Kind::Simulate),
            other => {
                self.problem(
                    "ble.source",
                    format!("unknown source {other:?}"),
                    "use \"bluez\" (the radio), \"replay\" (a capture file) or \"simulate\"",
                );
                None
            }
        };
        let company_id = match raw.company_id {
            None => Some(COMPANY_ID),
            Some(n) => match u16::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(
                        "ble.company_id",
                        format!("{n} is not a Bluetooth company id (0 to 65535)"),
                        format!(
                            "use the id the bands advertise under, e.g. company_id = {COMPANY_ID:#06X}"
                        ),
                    );
                    None
                }
            },
        };
        let silence_restart = self.duration(
            "ble.silence_restart",
            raw.silence_restart.as_deref(),
            SILENCE_RESTART,
        );
        let scan = match raw.scan.as_deref().unwrap_or(SCAN) {
            "active" => Some(ScanMode::Active),
            "passive" => Some(ScanMode::Passive),
            other => {
                self.problem(
                    "ble.scan",
                    format!("unknown scan mode {other:?}"),
                    "use \"active\" (BlueZ discovery, the default) or \"passive\" (BlueZ's \
                     advertisement monitor: BlueZ 5.56 or later with experimental features on, \
                     Linux 5.10 or later; see the README)",
                );
                None
            }
        };
        let replay_file = raw.replay_file.as_deref().map(|p| self.path(p));
        let source = match kind? {
            Kind::Bluez => Source::Bluez,
            Kind::Simulate => Source::Simulate,
            Kind::Replay => Source::Replay {
                file: self.replay_file(replay_file)?,
            },
        };
        Some(Ble {
            source,
            company_id: company_id?,
            radio: Radio {
                adapter: raw.adapter,
                silence_restart,
                scan: scan?,
            },
        })
    }

    /// With `source = "replay"`: the capture, which must be there.
    fn replay_file(&mut self, file: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
        match file {
            None => {
                self.problem(
                    "ble.replay_file",
                    "source = \"replay\" needs a capture file to replay",
                    "add replay_file = \"capture.jsonl\" under [ble], or use source = \"bluez\"",
                );
                None
            }
            // Not `is_file`: a named pipe is a fine capture (a live feed, as bench/run.sh uses).
            Some(p) if !p.exists() || p.is_dir() => {
                let shown = p.display().to_string();
                self.problem(
                    "ble.replay_file",
                    format!("the file {shown} does not exist"),
                    "correct the path (relative paths start at the config file's directory)",
                );
                None
            }
            Some(p) => Some(p),
        }
    }
}
