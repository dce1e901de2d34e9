//! `bandgate check-config`: every problem at once (exit 78), or warnings and a summary.

use std::path::Path;

use std::time::Duration;

use super::{Done, Failure};
use crate::adapters::modem;
use crate::config;
use crate::config::sections::fallback::ModemChoice;

pub fn check_config(path: &Path) -> Result<Done, Failure> {
    let config = config::load(path).map_err(|p| Failure::Config(p.to_string()))?;
    // Allowed values outside their recommended range: listed, not refused (exit 0).
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let now = jiff::Timestamp::now();
    println!("{}", config::summary::summary(&config, now));
    if let Some(choice) = &config.modem {
        println!("{}", modem_line(choice));
    }
    Ok(Done::Ok)
}

/// `[fallback]`: whether the modem is there now (a missing modem is a warning, not an error:
/// MQTT paging does not need it).
fn modem_line(choice: &ModemChoice) -> String {
    if *choice == ModemChoice::None {
        return "modem: none (fallback.modem = \"none\"): every SMS and call step is recorded as failed".into();
    }
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to ask ModemManager: {e}"))
        .and_then(|rt| rt.block_on(modem::probe(choice, Duration::from_secs(5))));
    match probe {
        Ok(h) if h.present => {
            format!(
                "modem: present, SIM {}, {}, signal {}",
                super::known(h.sim_ready, "ready", "NOT READY (missing, or locked by a PIN)"),
                super::known(h.registered, "registered", "NOT REGISTERED on a network"),
                h.signal_pct
                    .map(|p| format!("{p}%"))
                    .unwrap_or_else(|| "?".into())
            )
        }
        Ok(_) => "modem: NOT FOUND: SMS and calls will fail (MQTT paging is not affected); `mmcli -L` must list it".into(),
        Err(why) => format!(
            "modem: NOT FOUND ({why}): SMS and calls will fail (MQTT paging is not affected); install modemmanager, plug the modem in, and check `mmcli -L`"
        ),
    }
}
