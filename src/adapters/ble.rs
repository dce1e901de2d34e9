//! The BlueZ advertisement source: D-Bus signals in, lanes out, and a scan that does not go
//! deaf.
//!
//! Hands every advertisement carrying manufacturer data under our company id, or BTHome service
//! data (UUID `0000fcd2-…`, `engine::bthome`), to an `AdvertTx`, and keeps scanning through what BlueZ does to long-running scanners (DESIGN.md,
//! "BLE on Linux"). How:
//! - **Data from the signal.** BlueZ announces each advertisement (with `DuplicateData=true`)
//!   as a `PropertiesChanged` on the device's `org.bluez.Device1` carrying `ManufacturerData`
//!   (and `RSSI` when it changed), and a device it had not seen as an `InterfacesAdded` carrying
//!   all its properties. Both are read in place (`signals`), in the D-Bus connection's own
//!   dispatch, with no call back to bluetoothd: a foreign company id costs one comparison, ours
//!   goes straight to `AdvertTx::send`, which sorts it into the alarm or telemetry lane. So
//!   an SOS is behind nothing but the D-Bus socket, and a forgotten device cannot lose one.
//! - **Nothing dropped silently.** `AdvertTx::send` never waits, so it is called inside the
//!   dispatch: the alarm lane is fair between bands and collapses a storming band's repeats
//!   (counted there), heartbeats past a full telemetry lane are counted (`lanes.rs`). Signals
//!   whose arguments are not what BlueZ documents are counted (`unreadable_adverts`).
//! - **Recovery.** When bluetoothd restarts or the adapter goes away, signals just stop. So the
//!   bus is probed every second (owner of `org.bluez`, adapter `Powered`/`Discovering`), every
//!   call has a timeout (calls hang forever when the bus daemon dies), the adapter's `Powered`
//!   signal restarts the scan at once, and a silence watchdog covers what the probe cannot
//!   see. The decisions live in `recovery`.
//!
//! - **Passive scanning, as an option** (`[ble] scan = "passive"`, `monitor`): instead of
//!   discovering, the source serves BlueZ an advertisement monitor whose patterns are our
//!   company id (and BTHome's UUID when such devices are enrolled) and registers it; the
//!   adverts come as the same signals. Re-registered after every recovery step and after
//!   BlueZ releases it (with backoff); when it cannot be had (no monitor manager, no
//!   `or_patterns`, refused, released again and again with nothing heard) the source scans
//!   actively instead, logs an error saying what to do, and its status says so
//!   (`ScanInForce::ActiveFallback`): never deaf for want of an option.
//!
//! Each BlueZ connection lists what BlueZ remembers once (`GetManagedObjects`): their data is
//! passed on (an SOS sent while we reconnected), but it does not count as heard. Our own
//! per-device state is a bounded map (`DeviceTable`), so thousands of random-address
//! advertisers that are not ours cost nothing.

pub mod monitor;
pub mod recovery;
pub mod signals;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use dbus::arg::{PropMap, Variant};
use dbus::channel::{MatchingReceiver, Sender};
use dbus::message::MatchRule;
use dbus::nonblock::{MsgMatch, NonblockReply, Proxy, SyncConnection};
use dbus::Message;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::adapters::{Advert, AdvertTx, Format};
use monitor::{MonitorEvent, Pattern};
use recovery::{AdapterProbe, BluezHealth, HealthStep, Probe, SilenceStep, Watchdog};
use signals::{addr_of_path, DeviceUpdate, Interest, Signal};

/// What the BLE source needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleSettings {
    /// Adapter name (`hci0`); `None` takes the first BlueZ lists.
    pub adapter: Option<String>,
    /// Company id our frames are sent under (the key of the manufacturer data).
    pub company_id: u16,
    /// Silence from every advertiser after which the watchdog climbs one step.
    pub silence_restart: Duration,
    /// Active discovery (the default) or passive scanning behind an advertisement monitor.
    pub scan: ScanMode,
    /// Any BTHome device is enrolled: the passive monitor also matches BTHome's service UUID.
    pub bthome: bool,
}

/// How BlueZ is asked for advertisements (`[ble] scan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScanMode {
    /// `StartDiscovery` with a filter (LE, every advert): works with any BlueZ 5.
    #[default]
    Active,
    /// An `org.bluez.AdvertisementMonitor1` of or-patterns, no discovery (`monitor`).
    Passive,
}

impl ScanMode {
    /// As `[ble] scan` writes it.
    pub fn name(self) -> &'static str {
        match self {
            ScanMode::Active => "active",
            ScanMode::Passive => "passive",
        }
    }
}

/// The scan in force, as the status reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScanInForce {
    /// No scan started yet.
    #[default]
    None,
    Active,
    Passive,
    /// Passive scanning is configured but could not be had: scanning actively (logged at
    /// error with what to do).
    ActiveFallback,
}

impl ScanInForce {
    /// For the status document and `bandgate status` (`active`, `passive`, `active-fallback`;
    /// empty before any scan).
    pub fn name(self) -> &'static str {
        match self {
            ScanInForce::None => "",
            ScanInForce::Active => "active",
            ScanInForce::Passive => "passive",
            ScanInForce::ActiveFallback => "active-fallback",
        }
    }
}

impl BleSettings {
    pub const DEFAULT_SILENCE_RESTART: Duration = Duration::from_secs(60);
}

impl Default for BleSettings {
    fn default() -> BleSettings {
        BleSettings {
            adapter: None,
            company_id: 0xFFFF,
            silence_restart: BleSettings::DEFAULT_SILENCE_RESTART,
            scan: ScanMode::Active,
            bthome: false,
        }
    }
}

/// The BLE source's state, for the gateway status and `bandgate scan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BleStatus {
    /// Adapter in use (`hci0`), empty before one was found.
    pub adapter: String,
    /// Powered and scanning as far as we know, and not deaf: false from the watchdog's first
    /// silence until anything is heard again.
    pub adapter_ok: bool,
    /// Scans restarted (silence, power back on, discovery stopped behind our back).
    pub scan_restarts: u64,
    /// BlueZ connections rebuilt (bluetoothd restarted, second silence).
    pub manager_recreations: u64,
    /// Advertisements heard with manufacturer or service data (and remembered devices listed
    /// by a new BlueZ connection).
    pub adverts_seen: u64,
    /// Of those, ones with neither data under our company id nor BTHome service data
    /// (dropped here).
    pub foreign_adverts: u64,
    /// Signals whose arguments were not the types BlueZ documents (dropped here, counted).
    pub unreadable_adverts: u64,
    /// Active, passive, or active because passive could not be had.
    pub scan: ScanInForce,
}

/// Bound on every D-Bus round trip: the daemon dying leaves calls hanging forever otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the bus is probed for the adapter's and bluetoothd's state.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Wait between attempts to reach BlueZ while it is away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Releases of the passive monitor (or probes finding it inactive) in a row with nothing heard
/// in between, after which the source gives up on passive scanning for this BlueZ connection.
const MAX_PASSIVE_STRIKES: u32 = 3;
/// Wait before registering a released monitor again: doubled per strike.
const REREGISTER_FIRST: Duration = Duration::from_secs(1);

/// Devices we remember (ours only: those that sent data under our company id or BTHome
/// service data).
pub const DEVICE_TABLE_CAPACITY: usize = 2048;

const BLUEZ: &str = "org.bluez";

/// Runs the BlueZ source until `shutdown` completes (`Ok`), the daemon side of `tx` goes
/// away (`Ok`), or the watchdog gives up after a third silence (`Err`: exit non-zero so
/// systemd restarts the process).
pub async fn run(
    cfg: BleSettings,
    tx: AdvertTx,
    status: watch::Sender<BleStatus>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let interest = Interest {
        company_id: cfg.company_id,
        service_uuids: vec![crate::engine::bthome::UUID.to_string()],
    };
    let mut src = Source::new(cfg, tx, interest, status);
    let mut reported_unreachable = false;
    loop {
        let session = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            s = Session::open(&src.cfg, &src.shared, src.patterns()) => s,
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                src.local.adapter_ok = false;
                src.publish();
                src.dog.pause();
                if !reported_unreachable {
                    tracing::warn!(error = %format!("{e:#}"), "BLE: cannot scan yet; retrying every second");
                    reported_unreachable = true;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(RECONNECT_EVERY) => {}
                }
                continue;
            }
        };
        reported_unreachable = false;
        match src.scan(session, &mut shutdown).await? {
            Ended::Shutdown => return Ok(()),
            Ended::Recreate(why) => {
                src.local.manager_recreations += 1;
                src.local.adapter_ok = false;
                src.publish();
                tracing::warn!(
                    reason = why,
                    manager_recreations = src.local.manager_recreations,
                    "BLE: recreating the BlueZ connection"
                );
            }
        }
    }
}

/// `/org/bluez/hci0` when the adapter is configured, `/org/bluez` (any) until one is chosen.
fn adapter_prefix(cfg: &BleSettings) -> String {
    match &cfg.adapter {
        Some(name) => format!("/org/bluez/{name}"),
        None => "/org/bluez".into(),
    }
}

enum Ended {
    Shutdown,
    Recreate(&'static str),
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    seen: u64,
    foreign: u64,
    unreadable: u64,
}

/// What the D-Bus dispatch (signal callbacks) and the source task share.
struct Shared {
    intake: Mutex<Intake>,
    /// Wakes the source task: adapter power changed, heard after a silence, the daemon gone.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Intake> {
        // A panic while holding it would be a bug in `Intake`; its state is still usable.
        self.intake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What BlueZ told our advertisement monitor, in the D-Bus connection's dispatch.
    fn on_monitor(&self, ev: MonitorEvent) {
        let wake = {
            let mut i = self.lock();
            match ev {
                MonitorEvent::Activated => {
                    i.monitor_active = true;
                    false
                }
                MonitorEvent::Released => {
                    i.monitor_active = false;
                    i.monitor_released = true;
                    true
                }
                MonitorEvent::Device { found, path } => {
                    tracing::debug!(
                        found,
                        path,
                        "BLE: the advertisement monitor reports a device"
                    );
                    false
                }
            }
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// A signal from BlueZ, in the D-Bus connection's dispatch.
    fn on_signal(&self, msg: &Message) {
        let wake = self.lock().on_signal(msg);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// The hot path's state: everything one signal needs, behind one uncontended mutex.
struct Intake {
    tx: AdvertTx,
    interest: Interest,
    /// Signals from objects outside it (another adapter) are ignored.
    adapter_path: String,
    devices: DeviceTable<String>,
    counts: Counts,
    /// When anything was last heard on air; taken by the source task for the watchdog.
    last_heard: Option<std::time::Instant>,
    /// Wake the source task on the next thing heard (the watchdog counts silences).
    wake_on_hear: bool,
    /// The adapter's `Powered`, last signalled and not yet acted on.
    powered: Option<bool>,
    /// The daemon side of the lanes has gone away.
    closed: bool,
    /// BlueZ called `Activate` on our monitor (and has not released it since).
    monitor_active: bool,
    /// BlueZ called `Release` on our monitor; taken by the source task.
    monitor_released: bool,
}

impl Intake {
    /// Returns whether the source task must be woken.
    fn on_signal(&mut self, msg: &Message) -> bool {
        match signals::read(msg, &self.interest) {
            Err(e) => {
                self.counts.unreadable += 1;
                tracing::debug!(error = %e, path = ?msg.path(), "BLE: unreadable signal from BlueZ");
                false
            }
            Ok(Signal::Ignored) => false,
            Ok(Signal::Adapter { path, update }) => {
                if path != self.adapter_path || update.powered.is_none() {
                    return false;
                }
                self.powered = update.powered;
                true
            }
            Ok(Signal::Device { path, update }) => {
                let inside = path
                    .strip_prefix(self.adapter_path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
                if !inside {
                    return false;
                }
                self.take(&path, update, true)
            }
        }
    }

    /// One device's advertisement (or RSSI). `live`: heard on air now, not a device BlueZ
    /// remembered when we connected (which proves nothing about the radio).
    fn take(&mut self, path: &str, up: DeviceUpdate, live: bool) -> bool {
        let mut wake = false;
        if live {
            self.last_heard = Some(std::time::Instant::now());
            wake |= std::mem::take(&mut self.wake_on_hear);
        }
        if !up.advert {
            if let Some(rssi) = up.rssi {
                self.devices.set_rssi(path, rssi);
            }
            return wake;
        }
        self.counts.seen += 1;
        if up.ours.is_none() && up.service.is_none() {
            self.counts.foreign += 1;
            return wake;
        }
        let rssi = self.devices.touch(path, up.rssi);
        let received_at = jiff::Timestamp::now();
        // Both formats in one advert (unlikely, but possible): both are handed on.
        if let Some(data) = up.ours {
            wake |= self.hand_on(Advert {
                addr: addr_of_path(path),
                rssi,
                data,
                received_at,
                format: Format::Band,
            });
        }
        if let Some((_uuid, data)) = up.service {
            // BTHome service data (the only UUID in `Interest::service_uuids`).
            wake |= self.hand_on(Advert {
                addr: addr_of_path(path),
                rssi,
                data,
                received_at,
                format: Format::BtHome,
            });
        }
        wake
    }

    /// Into the lanes (which never wait). Returns whether the source task must be woken: the
    /// daemon has gone away.
    fn hand_on(&mut self, advert: Advert) -> bool {
        if self.closed {
            return false;
        }
        if !self.tx.send(advert) {
            self.closed = true;
            return true;
        }
        false
    }
}

struct Source {
    cfg: BleSettings,
    shared: Arc<Shared>,
    status: watch::Sender<BleStatus>,
    /// Counted here and published once a second (and on state changes), not per advert.
    local: BleStatus,
    dog: Watchdog,
    /// Passive scanning could not be had on this BlueZ connection: scanning actively.
    fallen_back: bool,
    /// Monitor releases (or inactive probes) with nothing heard since (`MAX_PASSIVE_STRIKES`).
    passive_strikes: u32,
    /// When to register the released monitor again.
    reregister_at: Option<Instant>,
}

impl Source {
    fn new(
        cfg: BleSettings,
        tx: AdvertTx,
        interest: Interest,
        status: watch::Sender<BleStatus>,
    ) -> Source {
        Source {
            shared: Arc::new(Shared {
                intake: Mutex::new(Intake {
                    tx,
                    interest,
                    adapter_path: adapter_prefix(&cfg),
                    devices: DeviceTable::new(DEVICE_TABLE_CAPACITY),
                    counts: Counts::default(),
                    last_heard: None,
                    wake_on_hear: false,
                    powered: None,
                    closed: false,
                    monitor_active: false,
                    monitor_released: false,
                }),
                wake: Notify::new(),
            }),
            status,
            local: BleStatus::default(),
            dog: Watchdog::new(Instant::now().into_std(), cfg.silence_restart),
            fallen_back: false,
            passive_strikes: 0,
            reregister_at: None,
            cfg,
        }
    }

    /// Publishes `local`, with `adapter_ok` false while the watchdog counts silences: a scan
    /// that hears nobody is not one the operator may trust, whatever BlueZ says.
    fn publish(&mut self) {
        let c = self.shared.lock().counts;
        self.local.adverts_seen = c.seen;
        self.local.foreign_adverts = c.foreign;
        self.local.unreadable_adverts = c.unreadable;
        let mut now = self.local.clone();
        now.adapter_ok &= self.dog.silences() == 0;
        self.status.send_if_modified(|s| {
            if *s == now {
                false
            } else {
                *s = now;
                true
            }
        });
    }

    /// Feeds the watchdog what the dispatch heard; logs the end of a silence ladder.
    fn fold_heard(&mut self) {
        let heard = self.shared.lock().last_heard.take();
        let Some(at) = heard else { return };
        let silences = self.dog.silences();
        self.dog.heard(at);
        self.passive_strikes = 0;
        if silences > 0 && self.dog.silences() == 0 {
            tracing::info!(silences, "BLE: hearing advertisements again");
            self.publish();
        }
    }

    /// Scanning (again). After a pause the silence clock starts afresh, and what was heard
    /// before the pause is not folded in later (it would bring the first deadline forward).
    /// While armed (a restart on silence) nothing changes: the ladder keeps its strikes.
    fn resume_dog(&mut self) {
        if self.dog.is_paused() {
            self.shared.lock().last_heard = None;
        }
        self.dog.resume(Instant::now().into_std());
    }

    /// Asks the dispatch to wake us on the next thing heard while silences are counted.
    fn arm_wake_on_hear(&self) {
        let silent = self.dog.silences() > 0;
        self.shared.lock().wake_on_hear = silent;
    }

    /// The monitor's patterns when passive scanning is configured.
    fn patterns(&self) -> Option<Arc<Vec<Pattern>>> {
        (self.cfg.scan == ScanMode::Passive)
            .then(|| Arc::new(monitor::patterns(self.cfg.company_id, self.cfg.bthome)))
    }

    /// Passive scanning is configured and has not been given up on this connection.
    fn passive(&self) -> bool {
        self.cfg.scan == ScanMode::Passive && !self.fallen_back
    }

    /// Starts the configured scan on a new connection. Passive scanning that cannot be had
    /// falls back to active discovery.
    async fn start_scan(&mut self, session: &Session) -> anyhow::Result<()> {
        self.fallen_back = false;
        self.reregister_at = None;
        if self.passive() {
            match self.register(session).await {
                Ok(()) => {
                    self.local.scan = ScanInForce::Passive;
                    return Ok(());
                }
                Err(e) => self.fall_back(session, &format!("{e:#}")),
            }
        }
        session.discover().await?;
        self.local.scan = self.active_mode();
        Ok(())
    }

    fn active_mode(&self) -> ScanInForce {
        if self.fallen_back {
            ScanInForce::ActiveFallback
        } else {
            ScanInForce::Active
        }
    }

    /// Registers our monitor; fails when BlueZ has no monitor manager, cannot do
    /// `or_patterns`, refuses it, or releases it at once.
    async fn register(&mut self, session: &Session) -> anyhow::Result<()> {
        {
            let mut i = self.shared.lock();
            i.monitor_active = false;
            i.monitor_released = false;
        }
        session.register_monitor().await?;
        // BlueZ validates the monitor (reading it back from us) before it answers; a monitor
        // it refused has been released by now.
        let released = std::mem::take(&mut self.shared.lock().monitor_released);
        if released {
            // Not ours to keep registered: BlueZ would not use it.
            session.unregister_monitor().await;
            bail!("BlueZ released the advertisement monitor as soon as it was registered (it could not activate it)");
        }
        Ok(())
    }

    /// Passive scanning cannot be had on this connection: say so, and what to do.
    fn fall_back(&mut self, session: &Session, why: &str) {
        self.fallen_back = true;
        self.reregister_at = None;
        tracing::error!(
            adapter = %session.name,
            reason = why,
            "BLE: [ble] scan = \"passive\" is configured but passive scanning is not available; \
             scanning ACTIVELY instead (the bands spend battery on scan responses). Passive \
             scanning needs BlueZ 5.56 or later with experimental features on (bluetoothd -E, \
             or Experimental = true in /etc/bluetooth/main.conf) and Linux 5.10 or later; \
             or set [ble] scan = \"active\" to silence this"
        );
    }

    /// Gives up passive scanning for this connection and discovers instead.
    async fn fall_back_now(&mut self, session: &Session, why: &str) {
        self.fall_back(session, why);
        session.unregister_monitor().await;
        match session.discover().await {
            Ok(()) => {
                self.local.scan = ScanInForce::ActiveFallback;
                self.local.adapter_ok = true;
                self.resume_dog();
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "BLE: starting the scan failed");
            }
        }
        self.publish();
    }

    /// The monitor was lost (released, or found inactive by a probe): one strike. Returns
    /// whether passive scanning is given up (too many strikes with nothing heard).
    fn strike(&mut self) -> bool {
        self.passive_strikes += 1;
        self.passive_strikes > MAX_PASSIVE_STRIKES
    }

    async fn scan(
        &mut self,
        session: Session,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> anyhow::Result<Ended> {
        self.start_scan(&session).await?;
        self.local.adapter = session.name.clone();
        self.local.adapter_ok = true;
        // A power signal from before the scan started is stale.
        self.shared.lock().powered = None;
        self.publish();
        self.resume_dog();
        tracing::info!(adapter = %session.name, scan = self.local.scan.name(), "BLE: scanning");

        let mut health = BluezHealth::new(session.owner().await);
        let mut probe_tick = tokio::time::interval(PROBE_EVERY);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe_tick.tick().await;

        loop {
            self.arm_wake_on_hear();
            let dog_deadline = self.dog.deadline().map(Instant::from_std);
            let reregister_at = self.reregister_at;
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(Ended::Shutdown),
                () = self.shared.wake.notified() => {
                    if !self.on_wake(&session).await {
                        return Ok(Ended::Shutdown);
                    }
                }
                () = sleep_until_opt(reregister_at) => {
                    self.reregister_at = None;
                    self.restart_scan(&session, "BlueZ released the advertisement monitor").await;
                }
                () = sleep_until_opt(dog_deadline) => {
                    if let Some(ended) = self.on_silence(&session).await? {
                        return Ok(ended);
                    }
                }
                _ = probe_tick.tick() => {
                    if let Some(ended) = self.on_probe(&session, &mut health).await {
                        return Ok(ended);
                    }
                }
            }
        }
    }

    /// The silence watchdog's deadline passed: the next step of its ladder.
    async fn on_silence(&mut self, session: &Session) -> anyhow::Result<Option<Ended>> {
        self.fold_heard();
        let step = self.dog.on_timeout(Instant::now().into_std());
        if step.is_some() {
            // Deaf until anything is heard: the status says so at once.
            self.publish();
        }
        match step {
            None => {}
            Some(SilenceStep::RestartScan) => {
                self.restart_scan(session, "silence").await;
            }
            Some(SilenceStep::RecreateManager) => {
                return Ok(Some(Ended::Recreate("second silence")));
            }
            Some(SilenceStep::GiveUp) => {
                self.local.adapter_ok = false;
                self.publish();
                tracing::error!(
                    silence = ?self.cfg.silence_restart,
                    "BLE: third silence in a row after restarting the scan and the \
                     BlueZ connection; giving up so the service manager restarts us"
                );
                bail!(
                    "no advertisement from anyone for 3 x {:?}, even after restarting \
                     the scan and the BlueZ connection",
                    self.cfg.silence_restart
                );
            }
        }
        Ok(None)
    }

    /// Once a second: is the adapter there, powered, scanning (or monitored), and BlueZ the
    /// same process?
    async fn on_probe(&mut self, session: &Session, health: &mut BluezHealth) -> Option<Ended> {
        self.fold_heard();
        let mut probe = session.probe().await;
        if self.passive() {
            // "Discovering", for a passive scan: our monitor is in force (or about
            // to be registered again) and the adapter still has its manager.
            let active = self.shared.lock().monitor_active;
            let pending = self.reregister_at.is_some();
            if let Some(a) = probe.adapter.as_mut() {
                a.discovering = pending || (active && session.has_monitor_manager().await);
            }
        }
        match health.observe(&probe) {
            HealthStep::Nothing => {}
            HealthStep::Lost(why) => {
                tracing::warn!(adapter = %session.name, reason = why, "BLE: adapter lost; waiting for it");
                self.local.adapter_ok = false;
                self.dog.pause();
            }
            HealthStep::RestartScan(why)
                if self.passive() && why == recovery::STOPPED_DISCOVERING =>
            {
                let why = "the advertisement monitor is not in force (released, or the adapter's monitor manager is gone)";
                if self.strike() {
                    self.fall_back_now(session, why).await;
                } else {
                    self.restart_scan(session, why).await;
                }
            }
            HealthStep::RestartScan(why) => {
                self.restart_scan(session, why).await;
            }
            HealthStep::RecreateManager(why) => {
                self.dog.pause();
                return Some(Ended::Recreate(why));
            }
        }
        self.publish();
        None
    }

    /// The dispatch woke us. Returns `false` once the daemon is gone.
    async fn on_wake(&mut self, session: &Session) -> bool {
        let (closed, powered, released) = {
            let mut i = self.shared.lock();
            (
                i.closed,
                i.powered.take(),
                std::mem::take(&mut i.monitor_released),
            )
        };
        if closed {
            return false;
        }
        self.fold_heard();
        if released && self.passive() {
            self.monitor_released(session).await;
        }
        match powered {
            // Only a return from power-off is news.
            Some(true) if !self.local.adapter_ok => {
                self.restart_scan(session, "adapter powered on").await;
            }
            Some(false) => {
                if self.local.adapter_ok {
                    tracing::warn!(adapter = %session.name, "BLE: adapter not powered; waiting for it");
                }
                self.local.adapter_ok = false;
                self.dog.pause();
                self.publish();
            }
            _ => {}
        }
        true
    }

    /// BlueZ released our monitor: deaf until it is registered again, after a backoff; after
    /// too many releases with nothing heard, scan actively instead.
    async fn monitor_released(&mut self, session: &Session) {
        if self.strike() {
            self.fall_back_now(
                session,
                "BlueZ released the advertisement monitor again and again with no advert heard in between",
            )
            .await;
            return;
        }
        let wait = REREGISTER_FIRST * 2u32.pow(self.passive_strikes.saturating_sub(1).min(5));
        tracing::warn!(
            adapter = %session.name,
            strikes = self.passive_strikes,
            retry_in = ?wait,
            "BLE: BlueZ released the advertisement monitor (passive scan stopped); registering it again"
        );
        self.local.adapter_ok = false;
        self.reregister_at = Some(Instant::now() + wait);
        self.publish();
    }

    async fn restart_scan(&mut self, session: &Session, why: &str) {
        self.local.scan_restarts += 1;
        tracing::warn!(
            adapter = %session.name,
            reason = why,
            scan = if self.passive() { "passive" } else { "active" },
            scan_restarts = self.local.scan_restarts,
            "BLE: restarting the scan"
        );
        let started = if self.passive() {
            self.reregister_at = None;
            // Unregistering first makes BlueZ forget a monitor it may think we still hold
            // (its Release for that arrives before the answer, and `register` clears it).
            session.unregister_monitor().await;
            match self.register(session).await {
                Ok(()) => {
                    self.local.scan = ScanInForce::Passive;
                    Ok(())
                }
                Err(e) => {
                    self.fall_back(session, &format!("{e:#}"));
                    session.discover().await
                }
            }
        } else {
            // Stopping first makes BlueZ forget a discovery session it may think we still hold.
            let _ = session.adapter_call("StopDiscovery", ()).await;
            session.discover().await
        };
        if !self.passive() {
            self.local.scan = self.active_mode();
        }
        match started {
            Ok(()) => {
                self.local.adapter_ok = true;
                self.resume_dog();
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "BLE: restarting the scan failed");
            }
        }
        self.publish();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A D-Bus call with a deadline.
async fn call<T, E>(what: &str, fut: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    call_within(CALL_TIMEOUT, what, fut).await
}

async fn call_within<T, E>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.with_context(|| format!("BlueZ: {what}")),
        Err(_) => Err(anyhow!("BlueZ: {what}: no answer within {limit:?}")),
    }
}

/// A method call whose reply is read by hand (`signals`), not into a typed value.
async fn call_raw(conn: &SyncConnection, what: &str, msg: Message) -> anyhow::Result<Message> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    conn.send_with_reply(
        msg,
        SyncConnection::make_f(move |reply: Message, _: &SyncConnection| {
            let _ = tx.send(reply);
        }),
    )
    .map_err(|()| anyhow!("BlueZ: {what}: cannot send"))?;
    let mut reply = call(what, rx).await?;
    reply
        .as_result()
        .with_context(|| format!("BlueZ: {what}"))?;
    Ok(reply)
}

/// One BlueZ connection: our own D-Bus connection, the adapter, and the signal matches that
/// feed `Shared` from the connection's dispatch.
struct Session {
    conn: Arc<SyncConnection>,
    /// The connection's I/O task: it ends when the bus connection is lost.
    io: tokio::task::JoinHandle<()>,
    /// `hci0`.
    name: String,
    /// `/org/bluez/hci0`.
    path: String,
    /// Held so the signals keep coming.
    _matches: Vec<MsgMatch>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.io.abort();
    }
}

impl Session {
    /// Connects, subscribes to the signals (first, so no advert between listing and
    /// subscribing is missed), picks the adapter and hands on what BlueZ remembers.
    async fn open(
        cfg: &BleSettings,
        shared: &Arc<Shared>,
        patterns: Option<Arc<Vec<Pattern>>>,
    ) -> anyhow::Result<Session> {
        let (resource, conn) =
            dbus_tokio::connection::new_system_sync().context("connect to the system bus")?;
        let io = tokio::spawn(async move {
            // Ends when the bus connection is lost.
            let _ = resource.await;
        });
        let mut session = Session {
            conn,
            io,
            name: String::new(),
            path: String::new(),
            _matches: Vec::new(),
        };
        shared.lock().adapter_path = adapter_prefix(cfg);
        if let Some(patterns) = patterns {
            session.serve_monitor(shared, patterns);
        }
        session.subscribe(shared).await?;

        let list =
            Message::new_method_call(BLUEZ, "/", signals::OBJECT_MANAGER, "GetManagedObjects")
                .map_err(|e| anyhow!("GetManagedObjects: {e}"))?;
        let reply = call_raw(&session.conn, "list objects", list).await?;
        let interest = shared.lock().interest.clone();
        let (mut managed, unreadable) = signals::managed_objects(&reply, &interest)
            .map_err(|e| anyhow!("BlueZ: list objects: {e}"))?;
        managed.adapters.sort_by(|a, b| a.0.cmp(&b.0));
        let (name, path, state) = choose_adapter(cfg, &managed.adapters)?;
        session.name = name;
        session.path.clone_from(&path);
        take_remembered(shared, &path, managed.devices, unreadable);
        if state.powered == Some(false) {
            // As bluez-async did before each scan: a powered-off adapter cannot discover.
            use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
            let proxy = Proxy::new(BLUEZ, path, CALL_TIMEOUT, session.conn.clone());
            call(
                "power the adapter on",
                proxy.set(signals::ADAPTER1, "Powered", true),
            )
            .await?;
        }
        Ok(session)
    }

    /// Our monitor's objects, served from the connection's dispatch (BlueZ reads them while we
    /// wait for RegisterMonitor's answer). Nothing else is served here.
    fn serve_monitor(&self, shared: &Arc<Shared>, patterns: Arc<Vec<Pattern>>) {
        let shared = shared.clone();
        self.conn.start_receive(
            MatchRule::new_method_call(),
            Box::new(move |msg, conn| {
                let (reply, event) = monitor::answer(&msg, &patterns);
                if let Some(reply) = reply {
                    let _ = conn.send(reply);
                }
                if let Some(event) = event {
                    shared.on_monitor(event);
                }
                true
            }),
        );
    }

    /// BlueZ's signals that carry adverts, handed to `Shared::on_signal` in the dispatch.
    async fn subscribe(&mut self, shared: &Arc<Shared>) -> anyhow::Result<()> {
        let rules = [
            MatchRule::new_signal(signals::PROPERTIES, "PropertiesChanged")
                .with_sender(BLUEZ)
                .with_namespaced_path("/org/bluez"),
            MatchRule::new_signal(signals::OBJECT_MANAGER, "InterfacesAdded").with_sender(BLUEZ),
        ];
        for rule in rules {
            let m = call("subscribe to signals", self.conn.add_match(rule)).await?;
            let shared = shared.clone();
            self._matches.push(m.msg_cb(move |msg| {
                shared.on_signal(&msg);
                true
            }));
        }

        Ok(())
    }

    async fn adapter_call<A: dbus::arg::AppendAll>(
        &self,
        method: &str,
        args: A,
    ) -> anyhow::Result<()> {
        let proxy = Proxy::new(BLUEZ, self.path.as_str(), CALL_TIMEOUT, self.conn.clone());
        call(
            method,
            proxy.method_call::<(), _, _, _>(signals::ADAPTER1, method, args),
        )
        .await
    }

    /// Asks for every advertisement (`DuplicateData`), LE only, then starts discovering.
    async fn discover(&self) -> anyhow::Result<()> {
        let mut filter = PropMap::new();
        filter.insert("Transport".into(), Variant(Box::new("le".to_string())));
        filter.insert("DuplicateData".into(), Variant(Box::new(true)));
        self.adapter_call("SetDiscoveryFilter", (filter,)).await?;
        match self.adapter_call("StartDiscovery", ()).await {
            Ok(()) => Ok(()),
            // Already discovering for us (a restart raced a probe): that is what we want.
            Err(e)
                if e.chain().any(|c| {
                    c.downcast_ref::<dbus::Error>()
                        .is_some_and(|d| d.name() == Some("org.bluez.Error.InProgress"))
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Checks the adapter's monitor manager, then registers our monitor's root with it.
    async fn register_monitor(&self) -> anyhow::Result<()> {
        use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
        let proxy = Proxy::new(BLUEZ, self.path.as_str(), CALL_TIMEOUT, self.conn.clone());
        let props = tokio::time::timeout(CALL_TIMEOUT, proxy.get_all(monitor::MANAGER1))
            .await
            .map_err(|_| anyhow!("BlueZ did not answer within {CALL_TIMEOUT:?}"))?;
        let props = match props {
            Ok(p) if !p.is_empty() => p,
            _ => bail!(
                "the adapter {} has no {} (BlueZ older than 5.56, or bluetoothd without                  experimental features: -E)",
                self.name,
                monitor::MANAGER1
            ),
        };
        let types: Vec<String> = props
            .get("SupportedMonitorTypes")
            .and_then(|v| v.0.as_iter())
            .map(|it| it.filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if !types.iter().any(|t| t == monitor::OR_PATTERNS) {
            bail!(
                "the adapter {}'s monitor manager does not offer \"{}\" monitors (it offers {types:?})",
                self.name,
                monitor::OR_PATTERNS
            );
        }
        let root = dbus::Path::from(monitor::APP_ROOT);
        call(
            "RegisterMonitor",
            proxy.method_call::<(), _, _, _>(monitor::MANAGER1, "RegisterMonitor", (root,)),
        )
        .await
    }

    /// Unregisters our monitor's root; BlueZ not knowing it is fine.
    async fn unregister_monitor(&self) {
        let proxy = Proxy::new(BLUEZ, self.path.as_str(), CALL_TIMEOUT, self.conn.clone());
        let root = dbus::Path::from(monitor::APP_ROOT);
        let _ = call(
            "UnregisterMonitor",
            proxy.method_call::<(), _, _, _>(monitor::MANAGER1, "UnregisterMonitor", (root,)),
        )
        .await;
    }

    /// Whether the adapter still has its advertisement monitor manager.
    async fn has_monitor_manager(&self) -> bool {
        use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
        let proxy = Proxy::new(BLUEZ, self.path.as_str(), CALL_TIMEOUT, self.conn.clone());
        let r: Result<Result<Vec<String>, _>, _> = tokio::time::timeout(
            CALL_TIMEOUT,
            proxy.get(monitor::MANAGER1, "SupportedMonitorTypes"),
        )
        .await;
        matches!(r, Ok(Ok(_)))
    }

    async fn owner(&self) -> Option<String> {
        let bus = Proxy::new(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            CALL_TIMEOUT,
            self.conn.clone(),
        );
        let r: Result<Result<(String,), dbus::Error>, _> = tokio::time::timeout(
            CALL_TIMEOUT,
            bus.method_call("org.freedesktop.DBus", "GetNameOwner", (BLUEZ,)),
        )
        .await;
        match r {
            Ok(Ok((owner,))) => Some(owner),
            _ => None,
        }
    }

    /// Whether our bus connection has died (its I/O task ends when the socket closes).
    fn bus_lost(&self) -> bool {
        self.io.is_finished()
    }

    async fn probe(&self) -> Probe {
        use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
        if self.bus_lost() {
            return Probe {
                bus_lost: true,
                owner: None,
                adapter: None,
            };
        }
        let owner = self.owner().await;
        if owner.is_none() {
            return Probe {
                bus_lost: self.bus_lost(),
                owner,
                adapter: None,
            };
        }
        let proxy = Proxy::new(BLUEZ, self.path.as_str(), CALL_TIMEOUT, self.conn.clone());
        let props = tokio::time::timeout(CALL_TIMEOUT, proxy.get_all(signals::ADAPTER1)).await;
        let adapter = match props {
            Ok(Ok(props)) => {
                let flag = |name: &str| {
                    props
                        .get(name)
                        .and_then(|v| v.0.as_u64())
                        .is_some_and(|b| b != 0)
                };
                Some(AdapterProbe {
                    powered: flag("Powered"),
                    discovering: flag("Discovering"),
                })
            }
            _ => None,
        };
        Probe {
            bus_lost: self.bus_lost(),
            owner,
            adapter,
        }
    }
}

/// Our bounded per-device memory: last RSSI of devices that sent data under our company id.
/// Past capacity the least recently heard is forgotten (it only costs one advert's RSSI).
struct DeviceTable<K = String> {
    cap: usize,
    clock: u64,
    map: HashMap<K, (Option<i16>, u64)>,
}

impl<K: std::hash::Hash + Eq + Clone> DeviceTable<K> {
    fn new(cap: usize) -> DeviceTable<K> {
        DeviceTable {
            cap,
            clock: 0,
            map: HashMap::with_capacity(cap),
        }
    }

    /// Records a device heard now, with a fresh RSSI if the event had one; returns its RSSI.
    fn touch<Q>(&mut self, id: &Q, fresh: Option<i16>) -> Option<i16>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.clock += 1;
        let clock = self.clock;
        if let Some(entry) = self.map.get_mut(id) {
            if fresh.is_some() {
                entry.0 = fresh;
            }
            entry.1 = clock;
            return entry.0;
        }
        if self.map.len() >= self.cap {
            // Forget the quieter half at once, so the O(n) pass is paid once per cap/2 inserts.
            let mut ages: Vec<u64> = self.map.values().map(|e| e.1).collect();
            let mid = ages.len() / 2;
            let (_, median, _) = ages.select_nth_unstable(mid);
            let median = *median;
            self.map.retain(|_, e| e.1 > median);
        }
        self.map.insert(id.to_owned(), (fresh, clock));
        fresh
    }

    /// Updates a known device's RSSI; strangers are not remembered.
    fn set_rssi<Q>(&mut self, id: &Q, rssi: i16)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(entry) = self.map.get_mut(id) {
            entry.0 = Some(rssi);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The adapter `[ble] adapter` names, or the first; its name, object path and state.
fn choose_adapter(
    cfg: &BleSettings,
    adapters: &[(String, signals::AdapterUpdate)],
) -> anyhow::Result<(String, String, signals::AdapterUpdate)> {
    let mut names = Vec::new();
    let mut chosen = None;
    for (path, state) in adapters {
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        if chosen.is_none() && cfg.adapter.as_ref().is_none_or(|want| *want == name) {
            chosen = Some((name.clone(), path.clone(), *state));
        }
        names.push(name);
    }
    let Some(chosen) = chosen else {
        match &cfg.adapter {
            Some(want) => bail!("no Bluetooth adapter named {want:?} (BlueZ has {names:?})"),
            None => bail!("BlueZ has no Bluetooth adapter"),
        }
    };
    Ok(chosen)
}

/// What BlueZ remembers of our devices under the adapter: passed on (an SOS sent while we
/// reconnected), not counted as heard.
fn take_remembered(
    shared: &Shared,
    path: &str,
    devices: Vec<(String, DeviceUpdate)>,
    unreadable: u64,
) {
    let wake = {
        let mut i = shared.lock();
        i.adapter_path = path.to_string();
        i.counts.unreadable += unreadable;
        let prefix = format!("{path}/");
        let mut wake = false;
        for (dev, up) in devices {
            if dev.starts_with(&prefix) && (up.ours.is_some() || up.service.is_some()) {
                wake |= i.take(&dev, up, false);
            }
        }
        wake
    };
    if wake {
        shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::adapters::advert_lanes;
    use crate::engine::{frame, BandEvent, DeviceKey, Frame, Keyring};

    const KEY: DeviceKey = DeviceKey([3; 16]);

    fn sealed(seq: u32, event: BandEvent) -> Vec<u8> {
        frame::seal(
            &Frame {
                device_id: 17,
                seq,
                battery_pct: 50,
                worn: true,
                event,
            },
            0xFFFF,
            &KEY,
        )
    }

    /// A source over real lanes whose daemon side is held but not read.
    fn source() -> (Source, crate::adapters::AdvertRx) {
        let mut keys = Keyring::new();
        keys.insert(17, KEY);
        let (tx, rx) = advert_lanes(0xFFFF, Arc::new(keys));
        let cfg = BleSettings {
            adapter: Some("hci0".into()),
            ..BleSettings::default()
        };
        let (status, _) = watch::channel(BleStatus::default());
        let interest = Interest {
            company_id: 0xFFFF,
            service_uuids: Vec::new(),
        };
        let src = Source::new(cfg, tx, interest, status);
        (src, rx)
    }

    fn ours(data: Vec<u8>) -> DeviceUpdate {
        DeviceUpdate {
            rssi: Some(-60),
            advert: true,
            ours: Some(data),
            service: None,
        }
    }

    const DEV: &str = "/org/bluez/hci0/dev_C8_FD_19_00_00_11";

    #[test]
    fn a_storm_of_alarms_never_waits_in_the_source_and_its_first_alarm_reaches_the_daemon() {
        // The alarm lane is fair between bands and never makes a source wait (a storming
        // band's repeats collapse there, counted): every advert is handed on at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (src, mut rx) = source();
            let total = 5_000u32;
            {
                let mut i = src.shared.lock();
                for seq in 0..total {
                    i.take(DEV, ours(sealed(seq, BandEvent::Sos)), true);
                }
                assert!(!i.closed);
                assert_eq!(i.counts.seen, u64::from(total));
            }
            let first = rx.alarms.recv().await.unwrap();
            assert_eq!(
                frame::peek_header(&first.data).unwrap().1,
                0,
                "the head is kept"
            );
            assert!(
                rx.alarms.collapsed() > 0,
                "the band's surplus collapsed in the lane"
            );
        });
    }

    #[test]
    fn bthome_service_data_is_handed_on_as_bthome_and_other_data_is_counted_foreign() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (src, mut rx) = source();
            {
                let mut i = src.shared.lock();
                let up = DeviceUpdate {
                    rssi: Some(-50),
                    advert: true,
                    ours: None,
                    service: Some((crate::engine::bthome::UUID.into(), vec![0x44, 0, 1])),
                };
                i.take(DEV, up, true);
                let nothing = DeviceUpdate {
                    rssi: Some(-50),
                    advert: true,
                    ..DeviceUpdate::default()
                };
                i.take(DEV, nothing, true);
                assert_eq!((i.counts.seen, i.counts.foreign), (2, 1));
            }
            let a = rx.telemetry.recv().await.unwrap();
            assert_eq!(a.format, Format::BtHome);
            assert_eq!(a.data, vec![0x44, 0, 1]);
            assert_eq!(a.addr, "C8:FD:19:00:00:11");
            assert_eq!(a.rssi, Some(-50));
        });
    }

    #[test]
    fn the_daemon_gone_ends_the_source() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (src, rx) = source();
            drop(rx);
            let mut i = src.shared.lock();
            assert!(i.take(DEV, ours(sealed(1, BandEvent::Sos)), true));
            assert!(i.closed);
            assert!(!i.take(DEV, ours(sealed(2, BandEvent::Sos)), true));
        });
    }

    #[test]
    fn settings_default_to_the_spec_values() {
        let s = BleSettings::default();
        assert_eq!(s.company_id, 0xFFFF);
        assert_eq!(s.silence_restart, Duration::from_secs(60));
        assert_eq!(s.adapter, None);
    }

    #[test]
    fn call_times_out_instead_of_hanging() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let r: anyhow::Result<()> = rt.block_on(call_within(
            Duration::from_millis(10),
            "hang",
            std::future::pending::<Result<(), std::io::Error>>(),
        ));
        assert!(r.unwrap_err().to_string().contains("no answer"));
    }

    #[test]
    fn the_device_table_stays_bounded_and_keeps_the_recently_heard() {
        let mut t: DeviceTable<u32> = DeviceTable::new(8);
        assert_eq!(t.touch(&1, Some(-50)), Some(-50));
        for id in 100..10_000 {
            t.touch(&id, Some(-90));
            // Band 1 keeps talking; strangers come and go.
            if id % 3 == 0 {
                assert_eq!(t.touch(&1, None), Some(-50));
            }
            assert!(t.len() <= 8);
        }
        t.set_rssi(&1, -40);
        assert_eq!(t.touch(&1, None), Some(-40));
        t.set_rssi(&5, -40);
        assert_eq!(
            t.touch(&5, None),
            None,
            "set_rssi does not remember strangers"
        );
    }
}
