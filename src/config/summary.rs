//! What `bandgate check-config` prints for a valid configuration: enough for an installer to
//! see at a glance that the gateway will page the right people.

use std::fmt::Write;

use jiff::Timestamp;

use super::sections::fallback::ModemChoice;
use super::Config;

/// A few lines describing `config`, with who is on duty at `now` (the caller's clock).
pub fn summary(config: &Config, now: Timestamp) -> String {
    let setup = &config.setup;
    let with_keys = setup
        .residents
        .keys()
        .filter(|id| config.keys.contains(**id))
        .count();
    let local = now.to_zoned(setup.rota.tz.clone());
    let tz_name = setup.rota.tz.iana_name().unwrap_or("UTC");
    let on_duty = setup.rota.on_duty(now);
    let duty = people(
        setup,
        &on_duty,
        "nobody (alerts start at tier 2, the residents' teams)",
    );
    let supervisors = people(setup, &setup.escalation.supervisors, "none");
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{}: configuration is valid", config.path.display());
    let _ = writeln!(out, "site: {}", config.site_id);
    let _ = writeln!(out, "gateway: {}", config.gateway_id);
    let _ = writeln!(out, "residents: {}", setup.residents.len());
    let _ = writeln!(out, "staff: {}", setup.staff.len());
    let _ = writeln!(
        out,
        "bands with keys: {with_keys} of {} ({} keys in {})",
        setup.residents.len(),
        config.keys.len(),
        config.keys_file.display()
    );
    bthome_lines(config, &mut out);
    let _ = writeln!(
        out,
        "broker: {} (topics under {}/)",
        config.mqtt.broker, config.mqtt.topic_prefix
    );
    source_line(config, &mut out);
    let _ = writeln!(out, "tiers: {}", setup.escalation.tiers());
    let _ = writeln!(out, "supervisors: {supervisors}");
    fallback_lines(config, &mut out);
    if !config.warnings.is_empty() {
        let _ = writeln!(
            out,
            "warnings: {} (values outside their recommended range, listed on stderr; fine for a test or a demo)",
            config.warnings.len()
        );
    }
    let _ = write!(
        out,
        "on duty now ({} {tz_name}): {duty}",
        local.strftime("%a %Y-%m-%d %H:%M")
    );
    out
}

/// "Name (id), ..." for staff ids, or `nobody` when there are none.
fn people<S: AsRef<str>>(setup: &crate::engine::Setup, ids: &[S], nobody: &str) -> String {
    if ids.is_empty() {
        return nobody.to_string();
    }
    ids.iter()
        .map(|id| format!("{} ({})", setup.staff_name(id.as_ref()), id.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per BTHome device, by device id.
fn bthome_lines(config: &Config, out: &mut String) {
    let setup = &config.setup;
    let mut bthome: Vec<_> = config.keys.bthome().iter().collect();
    bthome.sort_by_key(|(_, d)| d.device_id);
    for (mac, d) in bthome {
        let who = setup
            .residents
            .get(&d.device_id)
            .map_or("no resident".to_string(), |r| format!("resident {}", r.id));
        let silent = d.silent_after.map_or(
            "never reported silent (silent_after = \"off\")".to_string(),
            |t| format!("silent after {}", super::bounds::show(t)),
        );
        let _ = writeln!(
            out,
            "BTHome device {} ({}, {who}): sos = {:?}, cancel = {:?}, {silent}",
            d.device_id,
            crate::engine::bthome::format_mac(mac),
            d.sos.names().collect::<Vec<_>>(),
            d.cancel.names().collect::<Vec<_>>(),
        );
    }
}

/// The fallback ladder and the webhook, when configured.
fn fallback_lines(config: &Config, out: &mut String) {
    let setup = &config.setup;
    if let (Some(f), Some(modem)) = (&setup.fallback, &config.modem) {
        let steps: Vec<&str> = f.steps.iter().map(|s| s.as_str()).collect();
        let modem = match modem {
            ModemChoice::Auto => "the first modem ModemManager lists".to_string(),
            ModemChoice::None => "none: every step is recorded as failed".to_string(),
            ModemChoice::Path(p) => p.clone(),
        };
        let _ = writeln!(
            out,
            "fallback: {} after {} unconfirmed (modem: {modem})",
            steps.join(", "),
            crate::config::bounds::show(f.after)
        );
    }
    if let Some(w) = &config.webhook {
        let _ = writeln!(out, "webhook: {} (signed with HMAC-SHA256)", w.url);
    }
}

/// The advertisement source, and passive scanning when asked for.
fn source_line(config: &Config, out: &mut String) {
    match (&config.ble.source, config.ble.radio.scan) {
        (crate::config::checked::Source::Bluez, crate::adapters::ble::ScanMode::Passive) => {
            let _ = writeln!(
                out,
                "source: bluez, passive scan (falls back to active when BlueZ cannot; see the README)"
            );
        }
        (source, _) => {
            let _ = writeln!(out, "source: {}", source.name());
        }
    }
}
