//! The BlueZ advertisement source: btleplug scanning that does not go deaf.
//!
//! Hands every advertisement carrying manufacturer data under our company id to an
//! `AdvertTx`, and keeps scanning through what BlueZ does to long-running scanners (DESIGN.md,
//! "BLE on Linux"). What btleplug 0.13.5 does on Linux, measured against a mock BlueZ, shapes
//! this file:
//! - a device's *first* advertisement arrives only as `DeviceDiscovered` (no data), so its
//!   properties are read there, or a band's first SOS would be lost;
//! - later ones arrive as `ManufacturerDataAdvertisement` (RSSI separately, just before, and
//!   only when it changed); `DeviceUpdated` never comes;
//! - when bluetoothd restarts or the adapter goes away the event stream neither ends nor
//!   errs, it goes quiet; and when the D-Bus daemon dies, calls in flight hang forever. So
//!   every btleplug call has a timeout, the bus is probed every second (owner of `org.bluez`,
//!   adapter powered/discovering, read directly with `dbus` because btleplug hides them), and a
//!   silence watchdog covers what the probe cannot see. The decisions live in `recovery`.
//!
//! `peripherals()` is never called: it lists every device BlueZ remembers. Our own per-device
//! state is a bounded map (`DeviceTable`), so thousands of random-address advertisers that
//! are not ours cost nothing.

pub mod recovery;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use btleplug::api::{
    Central, CentralEvent, CentralState, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::adapters::{Advert, AdvertTx};
use recovery::{AdapterProbe, BluezHealth, HealthStep, Probe, SilenceStep, Watchdog};

/// What the BLE source needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleSettings {
    /// Adapter name (`hci0`); `None` takes the first BlueZ lists.
    pub adapter: Option<String>,
    /// Company id our frames are sent under (the key of the manufacturer data).
    pub company_id: u16,
    /// Silence from every advertiser after which the watchdog climbs one step.
    pub silence_restart: Duration,
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
    /// Advertisements heard with manufacturer data, and first sightings of devices.
    pub adverts_seen: u64,
    /// Of those, ones without data under our company id (dropped here).
    pub foreign_adverts: u64,
}

/// Bound on every D-Bus round trip: the daemon dying leaves calls hanging forever otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the bus is probed for the adapter's and bluetoothd's state.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Wait between attempts to reach BlueZ while it is away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Devices we remember (ours only: those that sent data under our company id).
pub const DEVICE_TABLE_CAPACITY: usize = 2048;

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
    let mut src = Source {
        tx,
        status,
        local: BleStatus::default(),
        dog: Watchdog::new(Instant::now().into_std(), cfg.silence_restart),
        devices: DeviceTable::new(DEVICE_TABLE_CAPACITY),
        last_rssi: None,
        cfg,
    };
    let mut reported_unreachable = false;
    loop {
        let session = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            s = Session::open(&src.cfg) => s,
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

enum Ended {
    Shutdown,
    Recreate(&'static str),
}

struct Source {
    cfg: BleSettings,
    tx: AdvertTx,
    status: watch::Sender<BleStatus>,
    /// Counted here and published once a second (and on state changes), not per advert.
    local: BleStatus,
    dog: Watchdog,
    devices: DeviceTable,
    /// BlueZ signals RSSI and manufacturer data of one advertisement together, and btleplug
    /// turns that into an `RssiUpdate` just before the data event: remember the last one.
    last_rssi: Option<(PeripheralId, i16)>,
}

impl Source {
    /// Publishes `local`, with `adapter_ok` false while the watchdog counts silences: a scan
    /// that hears nobody is not one the operator may trust, whatever BlueZ says.
    fn publish(&self) {
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

    /// Anything heard: the radio works, and a silence ladder under way is over.
    fn heard(&mut self, live: bool) {
        if !live {
            return;
        }
        let silences = self.dog.silences();
        self.dog.heard(Instant::now().into_std());
        if silences > 0 {
            tracing::info!(silences, "BLE: hearing advertisements again");
            self.publish();
        }
    }

    async fn scan(
        &mut self,
        mut session: Session,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> anyhow::Result<Ended> {
        let mut events = session.start().await?;
        // btleplug opens the stream with a `DeviceDiscovered` for every device BlueZ remembers.
        // Their data is passed on (BlueZ may hold an SOS sent while we reconnected; the replay
        // window drops repeats), but they are not advertisements heard now: counted as heard
        // they reset the watchdog at every new connection, so with any remembered device its
        // ladder never reached its third step.
        while let Some(Some(ev)) = events.next().now_or_never() {
            if !self.on_event(&session, ev, false).await? {
                return Ok(Ended::Shutdown);
            }
        }
        self.local.adapter = session.name.clone();
        self.local.adapter_ok = true;
        self.publish();
        self.dog.resume(Instant::now().into_std());
        tracing::info!(adapter = %session.name, "BLE: scanning");

        let mut health = BluezHealth::new(session.probe.owner().await);
        let mut probe_tick = tokio::time::interval(PROBE_EVERY);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe_tick.tick().await;

        loop {
            let dog_deadline = self.dog.deadline().map(Instant::from_std);
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(Ended::Shutdown),
                ev = events.next() => {
                    let Some(ev) = ev else {
                        return Ok(Ended::Recreate("event stream ended"));
                    };
                    if !self.on_event(&session, ev, true).await? {
                        return Ok(Ended::Shutdown);
                    }
                }
                () = sleep_until_opt(dog_deadline) => {
                    let step = self.dog.on_timeout(Instant::now().into_std());
                    if step.is_some() {
                        // Deaf until anything is heard: the status says so at once.
                        self.publish();
                    }
                    match step {
                        None => {}
                        Some(SilenceStep::RestartScan) => {
                            self.restart_scan(&session, "silence").await;
                        }
                        Some(SilenceStep::RecreateManager) => {
                            return Ok(Ended::Recreate("second silence"));
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
                }
                _ = probe_tick.tick() => {
                    let probe = session.probe.probe(&session.path).await;
                    match health.observe(&probe) {
                        HealthStep::Nothing => {}
                        HealthStep::Lost(why) => {
                            tracing::warn!(adapter = %session.name, reason = why, "BLE: adapter lost; waiting for it");
                            self.local.adapter_ok = false;
                            self.dog.pause();
                        }
                        HealthStep::RestartScan(why) => {
                            self.restart_scan(&session, why).await;
                        }
                        HealthStep::RecreateManager(why) => {
                            self.dog.pause();
                            return Ok(Ended::Recreate(why));
                        }
                    }
                    self.publish();
                }
            }
            // Keep the probe's connection fresh if the bus itself went away and came back.
            session.probe.heal();
        }
    }

    async fn restart_scan(&mut self, session: &Session, why: &str) {
        self.local.scan_restarts += 1;
        tracing::warn!(
            adapter = %session.name,
            reason = why,
            scan_restarts = self.local.scan_restarts,
            "BLE: restarting the scan"
        );
        // Stopping first makes BlueZ forget a discovery session it may think we still hold.
        let _ = call("stop scan", session.adapter.stop_scan()).await;
        match call(
            "start scan",
            session.adapter.start_scan(ScanFilter::default()),
        )
        .await
        {
            Ok(()) => {
                self.local.adapter_ok = true;
                self.dog.resume(Instant::now().into_std());
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "BLE: restarting the scan failed");
            }
        }
        self.publish();
    }

    /// Returns `false` once the daemon is gone. `live`: heard on air now, not a device BlueZ
    /// remembered when the stream opened (which proves nothing about the radio).
    async fn on_event(
        &mut self,
        session: &Session,
        ev: CentralEvent,
        live: bool,
    ) -> anyhow::Result<bool> {
        let company_id = self.cfg.company_id;
        match ev {
            CentralEvent::DeviceDiscovered(id) => {
                self.heard(live);
                self.local.adverts_seen += 1;
                // The first advertisement's data is only in the device's properties.
                let read = async {
                    let p = call("read a new device", session.adapter.peripheral(&id)).await?;
                    call("read a new device", p.properties()).await
                };
                let mut props = match read.await {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(true),
                    Err(e) => {
                        // Gone already, or bluetoothd overloaded: that first advert is lost.
                        tracing::debug!(device = %id, error = %format!("{e:#}"), "BLE: cannot read a new device");
                        return Ok(true);
                    }
                };
                match props.manufacturer_data.remove(&company_id) {
                    Some(data) => {
                        self.devices.touch(&id, props.rssi);
                        let advert = Advert {
                            addr: props.address.to_string(),
                            rssi: props.rssi,
                            data,
                            received_at: jiff::Timestamp::now(),
                        };
                        return Ok(self.tx.send(advert).await);
                    }
                    None => self.local.foreign_adverts += 1,
                }
            }
            CentralEvent::ManufacturerDataAdvertisement {
                id,
                mut manufacturer_data,
            } => {
                self.heard(live);
                self.local.adverts_seen += 1;
                match manufacturer_data.remove(&company_id) {
                    Some(data) => {
                        let fresh = match &self.last_rssi {
                            Some((rid, rssi)) if *rid == id => Some(*rssi),
                            _ => None,
                        };
                        let rssi = self.devices.touch(&id, fresh);
                        let advert = Advert {
                            addr: addr_of(&id),
                            rssi,
                            data,
                            received_at: jiff::Timestamp::now(),
                        };
                        self.last_rssi = None;
                        return Ok(self.tx.send(advert).await);
                    }
                    None => self.local.foreign_adverts += 1,
                }
            }
            CentralEvent::RssiUpdate { id, rssi } => {
                self.heard(live);
                self.devices.set_rssi(&id, rssi);
                self.last_rssi = Some((id, rssi));
            }
            CentralEvent::ServiceDataAdvertisement { .. }
            | CentralEvent::ServicesAdvertisement { .. } => {
                self.heard(live);
            }
            // bluez-async sets Powered=true itself before each StartDiscovery, and a
            // PropertiesChanged may follow: only a return from PoweredOff is news.
            CentralEvent::StateUpdate(CentralState::PoweredOn) if !self.local.adapter_ok => {
                self.restart_scan(session, "adapter powered on").await;
            }
            CentralEvent::StateUpdate(CentralState::PoweredOn) => {}
            CentralEvent::StateUpdate(state) => {
                if self.local.adapter_ok {
                    tracing::warn!(adapter = %session.name, ?state, "BLE: adapter not powered; waiting for it");
                }
                self.local.adapter_ok = false;
                self.dog.pause();
                self.publish();
            }
            _ => {}
        }
        Ok(true)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A btleplug call with a deadline.
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

/// `hci0/dev_C8_FD_19_00_00_11` → `C8:FD:19:00:00:11`, without a D-Bus call.
fn addr_of(id: &PeripheralId) -> String {
    addr_of_path(&id.to_string())
}

fn addr_of_path(s: &str) -> String {
    match s.rsplit_once("/dev_") {
        Some((_, mac)) => mac.replace('_', ":"),
        None => s.to_string(),
    }
}

/// One BlueZ connection: manager, adapter, and the probe that watches them.
struct Session {
    // Held so the connection lives as long as the session.
    _manager: Manager,
    adapter: Adapter,
    /// `hci0`.
    name: String,
    /// `/org/bluez/hci0`.
    path: String,
    probe: BusProbe,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = CentralEvent> + Send>>;

impl Session {
    async fn open(cfg: &BleSettings) -> anyhow::Result<Session> {
        let manager = call("connect to the system bus", Manager::new()).await?;
        let adapters = call("list adapters", manager.adapters()).await?;
        let mut names = Vec::new();
        for adapter in adapters {
            let info = call("read adapter", adapter.adapter_info()).await?;
            // btleplug formats it as "hci0 (usb:v1D6Bp0245d050A)".
            let name = info
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if cfg.adapter.as_ref().is_none_or(|want| *want == name) {
                let probe = BusProbe::connect().context("connect to the system bus")?;
                return Ok(Session {
                    _manager: manager,
                    adapter,
                    path: format!("/org/bluez/{name}"),
                    name,
                    probe,
                });
            }
            names.push(name);
        }
        match &cfg.adapter {
            Some(want) => bail!("no Bluetooth adapter named {want:?} (BlueZ has {names:?})"),
            None => bail!("BlueZ has no Bluetooth adapter"),
        }
    }

    /// Subscribes (first, so no discovery is missed) and starts the scan.
    async fn start(&mut self) -> anyhow::Result<Events> {
        let events = call("subscribe to events", self.adapter.events()).await?;
        call("start scan", self.adapter.start_scan(ScanFilter::default())).await?;
        Ok(events)
    }
}

/// A D-Bus connection of our own to read what btleplug does not expose.
struct BusProbe {
    conn: Option<(
        Arc<dbus::nonblock::SyncConnection>,
        tokio::task::JoinHandle<()>,
    )>,
    broken: bool,
}

impl Drop for BusProbe {
    fn drop(&mut self) {
        if let Some((_, task)) = self.conn.take() {
            task.abort();
        }
    }
}

impl BusProbe {
    fn connect() -> anyhow::Result<BusProbe> {
        let mut p = BusProbe {
            conn: None,
            broken: true,
        };
        p.reconnect()?;
        Ok(p)
    }

    fn reconnect(&mut self) -> anyhow::Result<()> {
        if let Some((_, task)) = self.conn.take() {
            task.abort();
        }
        let (resource, conn) = dbus_tokio::connection::new_system_sync()?;
        let task = tokio::spawn(async move {
            // Ends when the bus connection is lost.
            let _ = resource.await;
        });
        self.conn = Some((conn, task));
        self.broken = false;
        Ok(())
    }

    /// Reconnects after a failed probe (the bus daemon may have been restarted).
    fn heal(&mut self) {
        let dead = match &self.conn {
            Some((_, task)) => task.is_finished(),
            None => true,
        };
        if self.broken || dead {
            let _ = self.reconnect();
        }
    }

    async fn owner(&mut self) -> Option<String> {
        let (conn, _) = self.conn.as_ref()?;
        let bus = dbus::nonblock::Proxy::new(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            CALL_TIMEOUT,
            conn.clone(),
        );
        let r: Result<Result<(String,), dbus::Error>, _> = tokio::time::timeout(
            CALL_TIMEOUT,
            bus.method_call("org.freedesktop.DBus", "GetNameOwner", ("org.bluez",)),
        )
        .await;
        match r {
            Ok(Ok((owner,))) => Some(owner),
            Ok(Err(e)) if e.name() == Some("org.freedesktop.DBus.Error.NameHasNoOwner") => None,
            _ => {
                self.broken = true;
                None
            }
        }
    }

    /// Whether our bus connection has died (its I/O task ends when the socket closes).
    fn bus_lost(&self) -> bool {
        self.conn
            .as_ref()
            .is_none_or(|(_, task)| task.is_finished())
    }

    async fn probe(&mut self, adapter_path: &str) -> Probe {
        use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
        if self.bus_lost() {
            return Probe {
                bus_lost: true,
                owner: None,
                adapter: None,
            };
        }
        let owner = self.owner().await;
        let Some((conn, _)) = self.conn.as_ref().filter(|_| owner.is_some()) else {
            return Probe {
                bus_lost: self.bus_lost(),
                owner,
                adapter: None,
            };
        };
        let proxy =
            dbus::nonblock::Proxy::new("org.bluez", adapter_path, CALL_TIMEOUT, conn.clone());
        let props = tokio::time::timeout(CALL_TIMEOUT, proxy.get_all("org.bluez.Adapter1")).await;
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
            Ok(Err(_)) => None,
            Err(_) => {
                self.broken = true;
                None
            }
        };
        Probe {
            bus_lost: false,
            owner,
            adapter,
        }
    }
}

/// Our bounded per-device memory: last RSSI of devices that sent data under our company id.
/// Past capacity the least recently heard is forgotten (it only costs one advert's RSSI).
struct DeviceTable<K = PeripheralId> {
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
    fn touch(&mut self, id: &K, fresh: Option<i16>) -> Option<i16> {
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
        self.map.insert(id.clone(), (fresh, clock));
        fresh
    }

    /// Updates a known device's RSSI; strangers are not remembered.
    fn set_rssi(&mut self, id: &K, rssi: i16) {
        if let Some(entry) = self.map.get_mut(id) {
            entry.0 = Some(rssi);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn addresses_come_from_the_object_path() {
        assert_eq!(
            addr_of_path("hci0/dev_C8_FD_19_00_00_11"),
            "C8:FD:19:00:00:11"
        );
        assert_eq!(addr_of_path("weird"), "weird");
    }
}
