//! `bandgate scan`: the installer's tool. Listens like the gateway does (same BLE source, same
//! lanes), shows which bands are heard, how well, and whether their frames open with the
//! keys; optionally records what it heard in the replay capture format. Needs no broker.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::adapters::ble::{self, BleSettings, BleStatus, ScanInForce, ScanMode};
use crate::adapters::{advert_lanes, Advert, Format};
use crate::engine::{bthome, frame, Keyring, Reject};

/// What `bandgate scan` was asked to do.
#[derive(Debug)]
pub struct ScanArgs {
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Write every advert heard here (replay capture format, JSON lines).
    pub record: Option<PathBuf>,
    /// Enrolled bands; without keys every band shows `unknown_device`.
    pub keys: Keyring,
    pub ble: BleSettings,
    /// Resident names by device id, from `bandgate.toml`'s residents (`--config`); empty
    /// without it.
    pub names: HashMap<u32, String>,
}

/// Runs the scan; the final table goes to stdout. Fails when the BLE source gives up.
pub fn run(args: ScanArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(scan(args))
}

async fn scan(args: ScanArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let company_id = args.ble.company_id;
    let keys = Arc::new(args.keys);
    let (tx, mut rx) = advert_lanes(company_id, keys.clone());
    let (status_tx, status_rx) = watch::channel(BleStatus::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut source = tokio::spawn(ble::run(args.ble, tx, status_tx, async move {
        let _ = stop_rx.await;
    }));
    let record = match &args.record {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("create the capture file {}", path.display()))?,
        )),
        None => None,
    };
    let mut heard = Heard {
        started,
        company_id,
        record,
        table: ScanTable::new(company_id, keys, args.names),
    };
    let live = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let until = until(args.duration.map(|d| started + d));
    tokio::pin!(until);
    let mut failure = None;
    loop {
        let advert = tokio::select! {
            biased;
            Some(a) = rx.alarms.recv() => a,
            Some(a) = rx.telemetry.recv() => a,
            () = &mut until => break,
            r = &mut source => {
                failure = Some(source_failure(r));
                break;
            }
            _ = tick.tick() => {
                heard.flush()?;
                if live {
                    let text = heard.table.render(started.elapsed(), &status_rx.borrow(), rx.dropped());
                    print!("\x1b[H\x1b[2J{text}");
                    let _ = std::io::stdout().flush();
                }
                continue;
            }
        };
        heard.take(&advert)?;
    }
    let _ = stop_tx.send(());
    if failure.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut source).await;
    }
    // Whatever the lanes still hold was heard before the end.
    while let Ok(a) = rx.alarms.try_recv().or_else(|_| rx.telemetry.try_recv()) {
        heard.take(&a)?;
    }
    heard.flush()?;
    let text = heard
        .table
        .render(started.elapsed(), &status_rx.borrow(), rx.dropped());
    if live {
        print!("\x1b[H\x1b[2J");
    }
    print!("{text}");
    let _ = std::io::stdout().flush();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What was heard: the table, and the capture file when recording.
struct Heard {
    started: Instant,
    company_id: u16,
    record: Option<std::io::BufWriter<std::fs::File>>,
    table: ScanTable,
}

impl Heard {
    fn take(&mut self, advert: &Advert) -> anyhow::Result<()> {
        let t = self.started.elapsed();
        if let Some(w) = self.record.as_mut() {
            writeln!(w, "{}", capture_line(t, advert, self.company_id))
                .context("write the capture file")?;
        }
        self.table.observe(t, advert);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.record.as_mut() {
            w.flush().context("write the capture file")?;
        }
        Ok(())
    }
}

/// The scan's end: its duration, or Ctrl-C.
async fn until(deadline: Option<Instant>) {
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = timer => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn source_failure(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the BLE source stopped"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("the BLE source panicked: {e}"),
    }
}

/// One line of the replay capture format (`spec/mqtt-contract.md`); a BTHome advert's line
/// carries `service_uuid` and `service_data` instead of `company_id` and `data` (README).
pub fn capture_line(t: Duration, a: &Advert, company_id: u16) -> serde_json::Value {
    match a.format {
        Format::Band => serde_json::json!({
            "t_ms": t.as_millis() as u64,
            "addr": a.addr,
            "rssi": a.rssi,
            "company_id": company_id,
            "data": hex::encode(&a.data),
        }),
        Format::BtHome => serde_json::json!({
            "t_ms": t.as_millis() as u64,
            "addr": a.addr,
            "rssi": a.rssi,
            "service_uuid": bthome::UUID,
            "service_data": hex::encode(&a.data),
        }),
    }
}

/// What the scan has heard, per band and per unknown advertiser under our company id.
pub struct ScanTable {
    company_id: u16,
    keys: Arc<Keyring>,
    names: HashMap<u32, String>,
    bands: BTreeMap<u32, BandRow>,
    unknown: BTreeMap<String, UnknownRow>,
    /// BTHome advertisers by address (enrolled or not; capped like `unknown`).
    bthome: BTreeMap<String, BtHomeRow>,
}

#[derive(Debug, Default)]
struct BtHomeRow {
    device_id: Option<u32>,
    frames: u64,
    rssi: RssiStats,
    last_event: Option<&'static str>,
    battery: Option<u8>,
    /// The last counter accepted here (the scan's own replay check).
    counter: Option<u32>,
    /// `ok`, `no key`, `bad MIC`, `replay`, `unencrypted` (or `malformed`, `version`).
    status: &'static str,
    last_heard: Duration,
}

#[derive(Debug, Default)]
struct BandRow {
    addr: String,
    frames: u64,
    rssi: RssiStats,
    last_event: Option<&'static str>,
    battery: Option<u8>,
    /// `ok` or the reject reason of the latest frame.
    verdict: &'static str,
    last_heard: Duration,
}

#[derive(Debug, Default)]
struct UnknownRow {
    frames: u64,
    rssi: RssiStats,
    reason: &'static str,
    len: usize,
}

#[derive(Debug, Default)]
struct RssiStats {
    min: i16,
    max: i16,
    sum: i64,
    n: u64,
}

impl RssiStats {
    fn add(&mut self, rssi: Option<i16>) {
        let Some(r) = rssi else { return };
        if self.n == 0 {
            self.min = r;
            self.max = r;
        }
        self.min = self.min.min(r);
        self.max = self.max.max(r);
        self.sum += i64::from(r);
        self.n += 1;
    }

    fn show(&self) -> String {
        if self.n == 0 {
            "-".into()
        } else {
            format!("{}/{}/{}", self.min, self.sum / self.n as i64, self.max)
        }
    }
}

impl ScanTable {
    pub fn new(company_id: u16, keys: Arc<Keyring>, names: HashMap<u32, String>) -> ScanTable {
        ScanTable {
            company_id,
            keys,
            names,
            bands: BTreeMap::new(),
            unknown: BTreeMap::new(),
            bthome: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, t: Duration, a: &Advert) {
        if a.format == Format::BtHome {
            self.observe_bthome(t, a);
            return;
        }
        match frame::peek_header(&a.data) {
            Ok((device_id, _seq)) => {
                let row = self.bands.entry(device_id).or_default();
                row.addr.clone_from(&a.addr);
                row.frames += 1;
                row.rssi.add(a.rssi);
                row.last_heard = t;
                match frame::open(&a.data, self.company_id, &self.keys) {
                    Ok(f) => {
                        row.verdict = "ok";
                        row.battery = Some(f.battery_pct);
                        row.last_event = Some(f.event.name());
                    }
                    Err(reason) => row.verdict = reason.as_str(),
                }
            }
            Err(reason) => {
                // Unknown advertisers are capped: a busy room must not grow this table.
                if self.unknown.len() >= 256 && !self.unknown.contains_key(&a.addr) {
                    return;
                }
                let row = self.unknown.entry(a.addr.clone()).or_default();
                row.frames += 1;
                row.rssi.add(a.rssi);
                row.reason = reason.as_str();
                row.len = a.data.len();
            }
        }
    }

    fn observe_bthome(&mut self, t: Duration, a: &Advert) {
        if self.bthome.len() >= 256 && !self.bthome.contains_key(&a.addr) {
            return;
        }
        let mac = crate::adapters::lanes::mac_of(&a.addr);
        let enrolled = self.keys.bthome().get(&mac);
        let row = self.bthome.entry(a.addr.clone()).or_default();
        row.frames += 1;
        row.rssi.add(a.rssi);
        row.last_heard = t;
        row.device_id = enrolled.map(|d| d.device_id);
        let reading = bthome::read(&a.data, &mac, enrolled.map(|d| &d.key));
        row.status = match reading {
            Ok(r) if !r.encrypted => "unencrypted",
            Ok(r) => match (r.counter, row.counter) {
                (Some(c), Some(last)) if c < last => "replay",
                // The same frame again (devices repeat each one): as it was.
                (Some(c), Some(last)) if c == last => row.status,
                _ => {
                    row.counter = r.counter;
                    "ok"
                }
            },
            Err(Reject::UnknownDevice) => "no key",
            Err(Reject::Auth) => "bad MIC",
            Err(other) => other.as_str(),
        };
        if let Ok(r) = reading {
            if r.battery_pct.is_some() {
                row.battery = r.battery_pct;
            }
            if let Some(e) = r.buttons.iter().find(|e| *e != bthome::ButtonEvent::None) {
                row.last_event = Some(e.name());
            } else if !r.buttons.is_empty() {
                row.last_event = Some("none");
            }
        }
    }

    /// The table as text; `elapsed` is the scan's duration so far.
    pub fn render(&self, elapsed: Duration, status: &BleStatus, dropped: u64) -> String {
        let mins = elapsed.as_secs_f64().max(1.0) / 60.0;
        let mut s = String::new();
        self.header(&mut s, elapsed, status);
        self.band_rows(&mut s, mins);
        self.bthome_rows(&mut s, mins);
        self.unknown_rows(&mut s);
        let _ = writeln!(
            s,
            "adverts seen {}, not ours {}, unreadable {}, scan restarts {}, \
             BlueZ reconnects {}, telemetry dropped {}",
            status.adverts_seen,
            status.foreign_adverts,
            status.unreadable_adverts,
            status.scan_restarts,
            status.manager_recreations,
            dropped
        );
        s
    }

    fn header(&self, s: &mut String, elapsed: Duration, status: &BleStatus) {
        let _ = writeln!(
            s,
            "bandgate scan: adapter {} ({}{}), company id 0x{:04X}, {:.0} s",
            if status.adapter.is_empty() {
                "?"
            } else {
                &status.adapter
            },
            if status.adapter_ok {
                "scanning"
            } else {
                "NOT scanning"
            },
            match status.scan {
                ScanInForce::None => "",
                ScanInForce::Active => ", active scan",
                ScanInForce::Passive => ", passive scan",
                ScanInForce::ActiveFallback => {
                    ", active scan: passive scanning is NOT available, see the log"
                }
            },
            self.company_id,
            elapsed.as_secs_f64()
        );
    }

    fn band_rows(&self, s: &mut String, mins: f64) {
        let _ = writeln!(
            s,
            "{:>10}  {:<16} {:<17} {:>14} {:>8} {:>9} {:<10} {:>7}  status",
            "band",
            "name",
            "address",
            "rssi min/avg/max",
            "frames",
            "frames/min",
            "last event",
            "battery"
        );
        for (id, r) in &self.bands {
            let _ = writeln!(
                s,
                "{:>10}  {:<16} {:<17} {:>14} {:>8} {:>9.1} {:<10} {:>7}  {}",
                id,
                self.names.get(id).map(String::as_str).unwrap_or("-"),
                r.addr,
                r.rssi.show(),
                r.frames,
                r.frames as f64 / mins,
                r.last_event.unwrap_or("-"),
                r.battery.map_or("-".into(), |b| format!("{b}%")),
                r.verdict
            );
        }
        if self.bands.is_empty() {
            let _ = writeln!(s, "{:>10}  (no band heard yet)", "");
        }
    }

    fn bthome_rows(&self, s: &mut String, mins: f64) {
        if !self.bthome.is_empty() {
            let _ = writeln!(s, "BTHome devices (service data 0xFCD2):");
            for (addr, r) in &self.bthome {
                let (id, name) = match r.device_id {
                    Some(id) => (
                        id.to_string(),
                        self.names.get(&id).map(String::as_str).unwrap_or("-"),
                    ),
                    None => ("-".to_string(), "-"),
                };
                let _ = writeln!(
                    s,
                    "{:>10}  {:<16} {:<17} {:>14} {:>8} {:>9.1} {:<10} {:>7}  {}",
                    id,
                    name,
                    addr,
                    r.rssi.show(),
                    r.frames,
                    r.frames as f64 / mins,
                    r.last_event.unwrap_or("-"),
                    r.battery.map_or("-".into(), |b| format!("{b}%")),
                    r.status
                );
            }
        }
    }

    fn unknown_rows(&self, s: &mut String) {
        if !self.unknown.is_empty() {
            let _ = writeln!(
                s,
                "unknown advertisers under 0x{:04X} (not our frame format):",
                self.company_id
            );
            for (addr, r) in &self.unknown {
                let _ = writeln!(
                    s,
                    "  {:<17} {:>14} {:>8} frames, {} bytes, {}",
                    addr,
                    r.rssi.show(),
                    r.frames,
                    r.len,
                    r.reason
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BandEvent, DeviceKey, Frame};

    fn advert(addr: &str, rssi: i16, data: Vec<u8>) -> Advert {
        Advert {
            addr: addr.into(),
            rssi: Some(rssi),
            data,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            format: crate::adapters::Format::Band,
        }
    }

    #[test]
    fn the_table_names_bands_rejects_and_strangers() {
        let key = DeviceKey([7; 16]);
        let mut keys = Keyring::new();
        keys.insert(17, key);
        let sos = frame::seal(
            &Frame {
                device_id: 17,
                seq: 42,
                battery_pct: 80,
                worn: true,
                event: BandEvent::Sos,
            },
            0xFFFF,
            &key,
        );
        let stranger = frame::seal(
            &Frame {
                device_id: 99,
                seq: 1,
                battery_pct: 50,
                worn: true,
                event: BandEvent::Sos,
            },
            0xFFFF,
            &DeviceKey([9; 16]),
        );
        let names = HashMap::from([(17, "Mrs Example".to_string())]);
        let mut t = ScanTable::new(0xFFFF, Arc::new(keys), names);
        t.observe(
            Duration::from_secs(1),
            &advert("C8:FD:19:00:00:11", -60, sos.clone()),
        );
        t.observe(
            Duration::from_secs(2),
            &advert("C8:FD:19:00:00:11", -70, sos),
        );
        t.observe(
            Duration::from_secs(2),
            &advert("AA:BB:CC:DD:EE:01", -80, stranger),
        );
        t.observe(
            Duration::from_secs(3),
            &advert("AA:BB:CC:DD:EE:02", -90, vec![1, 2]),
        );
        let text = t.render(Duration::from_secs(60), &BleStatus::default(), 0);
        let band17 = text
            .lines()
            .find(|l| l.trim_start().starts_with("17 "))
            .unwrap();
        assert!(band17.contains("Mrs Example"), "{text}");
        assert!(band17.contains("-70/-65/-60"), "{text}");
        assert!(band17.contains("sos"), "{text}");
        assert!(band17.contains("80%"), "{text}");
        assert!(band17.trim_end().ends_with("ok"), "{text}");
        let band99 = text
            .lines()
            .find(|l| l.trim_start().starts_with("99 "))
            .unwrap();
        assert!(band99.trim_end().ends_with("unknown_device"), "{text}");
        assert!(text.contains("AA:BB:CC:DD:EE:02"), "{text}");
        assert!(text.contains("version"), "{text}");
    }

    #[test]
    fn bthome_devices_show_ok_no_key_bad_mic_replay_and_unencrypted() {
        use crate::engine::bthome::{BtHomeDevice, ButtonEvent};
        let key = DeviceKey([0x23; 16]);
        let mac = bthome::parse_mac("54:48:E6:8F:80:A5").unwrap();
        let mut keys = Keyring::new();
        keys.insert_bthome(mac, BtHomeDevice::new(9001, key));
        let names = HashMap::from([(9001, "Mr Button".to_string())]);
        let mut t = ScanTable::new(0xFFFF, Arc::new(keys), names);
        let bt = |addr: &str, data: Vec<u8>| Advert {
            format: Format::BtHome,
            ..advert(addr, -50, data)
        };
        let press = |c| bthome::seal(&mac, &key, c, true, 1, Some(77), &[ButtonEvent::Press]);
        let row = |t: &ScanTable, addr: &str| {
            let text = t.render(Duration::from_secs(60), &BleStatus::default(), 0);
            text.lines()
                .find(|l| l.contains(addr))
                .unwrap_or_else(|| panic!("{text}"))
                .trim_end()
                .to_string()
        };
        const A: &str = "54:48:E6:8F:80:A5";
        t.observe(Duration::from_secs(1), &bt(A, press(10)));
        assert!(row(&t, A).ends_with("ok"), "{}", row(&t, A));
        assert!(row(&t, A).contains("9001") && row(&t, A).contains("Mr Button"));
        assert!(row(&t, A).contains("press") && row(&t, A).contains("77%"));
        t.observe(Duration::from_secs(2), &bt(A, press(10)));
        assert!(row(&t, A).ends_with("ok"), "a repeat is not a replay");
        t.observe(Duration::from_secs(3), &bt(A, press(9)));
        assert!(row(&t, A).ends_with("replay"));
        let mut bad = press(11);
        bad[2] ^= 1;
        t.observe(Duration::from_secs(4), &bt(A, bad));
        assert!(row(&t, A).ends_with("bad MIC"));
        let plain = bthome::plain(true, 2, Some(77), &[ButtonEvent::Press]);
        t.observe(Duration::from_secs(5), &bt(A, plain));
        assert!(row(&t, A).ends_with("unencrypted"));
        const B: &str = "AA:BB:CC:DD:EE:01";
        let other = bthome::seal(
            &[0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x01],
            &key,
            1,
            true,
            1,
            None,
            &[],
        );
        t.observe(Duration::from_secs(6), &bt(B, other));
        assert!(row(&t, B).ends_with("no key"));
    }

    #[test]
    fn capture_lines_follow_the_replay_format() {
        let a = advert("C8:FD:19:00:00:11", -61, vec![0xb1, 0x11]);
        let line = capture_line(Duration::from_millis(1200), &a, 0xFFFF);
        assert_eq!(
            line,
            serde_json::json!({"t_ms": 1200, "addr": "C8:FD:19:00:00:11", "rssi": -61,
                               "company_id": 65535, "data": "b111"})
        );
    }
}

/// What `bandgate scan` was given on the command line.
#[derive(Debug, Default)]
pub struct ScanOptions {
    pub seconds: Option<u64>,
    pub record: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub keys: Option<PathBuf>,
    pub adapter: Option<String>,
    pub company_id: Option<u16>,
    pub silence_restart: Option<Duration>,
    /// `--passive`: scan as `[ble] scan = "passive"` does (BlueZ's advertisement monitor).
    pub passive: bool,
}

/// `bandgate scan`: bandgate.toml first (the daemon's view of the site), then the options on
/// top. Exit 78 for a bad configuration or key file, 1 when the watchdog gives up.
pub fn scan_command(o: ScanOptions) -> Result<super::Done, super::Failure> {
    use super::Failure;
    let config_problem = |p: &dyn std::fmt::Display| Failure::Config(p.to_string());
    let site = o
        .config
        .map(|c| crate::config::load(&c))
        .transpose()
        .map_err(|p| config_problem(&p))?;
    let keys = match o.keys.map(|k| crate::config::keys::load(&k)).transpose() {
        Ok(Some(k)) => k,
        Ok(None) => site.as_ref().map(|s| s.keys.clone()).unwrap_or_default(),
        Err(problems) => return Err(config_problem(&problems)),
    };
    let defaults = BleSettings::default();
    let passive = o.passive.then_some(ScanMode::Passive);
    let bthome = !keys.bthome().is_empty();
    let ble = match &site {
        Some(s) => BleSettings {
            adapter: o.adapter.or_else(|| s.ble.radio.adapter.clone()),
            company_id: o.company_id.unwrap_or(s.ble.company_id),
            silence_restart: o.silence_restart.unwrap_or(s.ble.radio.silence_restart),
            scan: passive.unwrap_or(s.ble.radio.scan),
            bthome,
        },
        None => BleSettings {
            adapter: o.adapter,
            company_id: o.company_id.unwrap_or(defaults.company_id),
            silence_restart: o.silence_restart.unwrap_or(defaults.silence_restart),
            scan: passive.unwrap_or(defaults.scan),
            bthome,
        },
    };
    let names = site
        .map(|s| {
            s.setup
                .residents
                .into_iter()
                .map(|(device_id, r)| (device_id, r.name))
                .collect()
        })
        .unwrap_or_default();
    super::run::init_logs();
    let args = ScanArgs {
        duration: o.seconds.map(Duration::from_secs),
        record: o.record,
        keys,
        ble,
        names,
    };
    run(args)
        .map(|()| super::Done::Ok)
        .map_err(|e| Failure::Failed(format!("bandgate scan: {e:#}")))
}
