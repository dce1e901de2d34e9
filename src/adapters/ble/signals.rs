//! Reading BlueZ's signals in place: an advertisement's data comes with the `PropertiesChanged`
//! (or, for a device BlueZ has not seen before, the `InterfacesAdded`) signal that announces it,
//! so nothing is read back from bluetoothd per advert (DESIGN.md, "Take data from the signal").
//!
//! The readers walk libdbus's iterators without building a dictionary: a foreign company id
//! costs a comparison, and only our own bytes are copied. Anything that is not the type BlueZ
//! documents is `Malformed` (counted by the caller), never a panic.

use dbus::arg::{ArgType, Iter};
use dbus::Message;

pub const DEVICE1: &str = "org.bluez.Device1";
pub const ADAPTER1: &str = "org.bluez.Adapter1";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
pub const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";

/// What the source wants out of advertisements, checked before anything is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// Manufacturer data under this company id is ours.
    pub company_id: u16,
    /// Service data under these 128-bit UUIDs (lower case, as BlueZ writes them) is ours too:
    /// BTHome's (`0000fcd2-0000-1000-8000-00805f9b34fb`).
    pub service_uuids: Vec<String>,
}

/// What one signal says about one device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceUpdate {
    pub rssi: Option<i16>,
    /// The signal carried advertisement data (`ManufacturerData` or `ServiceData`).
    pub advert: bool,
    /// Manufacturer data under our company id.
    pub ours: Option<Vec<u8>>,
    /// Service data under one of our UUIDs: (UUID, bytes).
    pub service: Option<(String, Vec<u8>)>,
}

impl DeviceUpdate {
    /// Anything at all was heard on air (the watchdog's notion of "not deaf").
    pub fn heard(&self) -> bool {
        self.advert || self.rssi.is_some()
    }
}

/// An adapter's properties that the source acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdapterUpdate {
    pub powered: Option<bool>,
    pub discovering: Option<bool>,
}

/// A signal from BlueZ, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Device {
        path: String,
        update: DeviceUpdate,
    },
    Adapter {
        path: String,
        update: AdapterUpdate,
    },
    /// Another interface, or a device update without anything we use.
    Ignored,
}

/// A signal whose arguments are not what BlueZ documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Reads a `PropertiesChanged` (`s a{sv} as`) or `InterfacesAdded` (`o a{sa{sv}}`) signal.
pub fn read(msg: &Message, interest: &Interest) -> Result<Signal, Malformed> {
    let member = msg.member();
    match member.as_deref() {
        Some("PropertiesChanged") => {
            let path = msg
                .path()
                .ok_or(Malformed("signal without a path"))?
                .to_string();
            properties_changed(path, &mut msg.iter_init(), interest)
        }
        Some("InterfacesAdded") => interfaces_added(&mut msg.iter_init(), interest),
        _ => Ok(Signal::Ignored),
    }
}

fn properties_changed(
    path: String,
    it: &mut Iter<'_>,
    interest: &Interest,
) -> Result<Signal, Malformed> {
    let iface: &str = it
        .get()
        .ok_or(Malformed("PropertiesChanged without an interface name"))?;
    let iface_is = |name: &str| iface == name;
    if iface_is(DEVICE1) {
        it.next();
        let mut update = DeviceUpdate::default();
        device_props(it, interest, &mut update)?;
        return Ok(if update.heard() {
            Signal::Device { path, update }
        } else {
            Signal::Ignored
        });
    }
    if iface_is(ADAPTER1) {
        it.next();
        let update = adapter_props(it)?;
        return Ok(Signal::Adapter { path, update });
    }
    Ok(Signal::Ignored)
}

fn interfaces_added(it: &mut Iter<'_>, interest: &Interest) -> Result<Signal, Malformed> {
    let path: dbus::Path = it
        .get()
        .ok_or(Malformed("InterfacesAdded without an object path"))?;
    it.next();
    let mut ifaces = it
        .recurse(ArgType::Array)
        .ok_or(Malformed("InterfacesAdded without interfaces"))?;
    while ifaces.arg_type() != ArgType::Invalid {
        let mut entry = ifaces
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("InterfacesAdded: not a dictionary"))?;
        let name: &str = entry
            .get()
            .ok_or(Malformed("InterfacesAdded: interface name"))?;
        if name == DEVICE1 {
            entry.next();
            let mut update = DeviceUpdate::default();
            device_props(&mut entry, interest, &mut update)?;
            return Ok(Signal::Device {
                path: path.to_string(),
                update,
            });
        }
        ifaces.next();
    }
    Ok(Signal::Ignored)
}

/// Walks an `a{sv}` of a Device1 at `it`.
pub fn device_props(
    it: &mut Iter<'_>,
    interest: &Interest,
    up: &mut DeviceUpdate,
) -> Result<(), Malformed> {
    let mut entries = it
        .recurse(ArgType::Array)
        .ok_or(Malformed("device properties: not a dictionary"))?;
    while entries.arg_type() != ArgType::Invalid {
        let mut entry = entries
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("device properties: not a dictionary"))?;
        let key: &str = entry
            .get()
            .ok_or(Malformed("device properties: key not a string"))?;
        entry.next();
        let mut value = entry
            .recurse(ArgType::Variant)
            .ok_or(Malformed("device properties: value not a variant"))?;
        match key {
            "RSSI" => {
                up.rssi = Some(value.get::<i16>().ok_or(Malformed("RSSI not an int16"))?);
            }
            "ManufacturerData" => {
                up.advert = true;
                manufacturer_data(&mut value, interest.company_id, up)?;
            }
            "ServiceData" => {
                up.advert = true;
                service_data(&mut value, &interest.service_uuids, up)?;
            }
            _ => {}
        }
        entries.next();
    }
    Ok(())
}

/// `a{qv}`, each value a variant holding `ay`; only our company id's bytes are read.
fn manufacturer_data(
    value: &mut Iter<'_>,
    company_id: u16,
    up: &mut DeviceUpdate,
) -> Result<(), Malformed> {
    let mut entries = value
        .recurse(ArgType::Array)
        .ok_or(Malformed("ManufacturerData not a dictionary"))?;
    while entries.arg_type() != ArgType::Invalid {
        let mut entry = entries
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("ManufacturerData not a dictionary"))?;
        let cid: u16 = entry
            .get()
            .ok_or(Malformed("ManufacturerData key not a uint16"))?;
        if cid == company_id {
            entry.next();
            let mut bytes = entry
                .recurse(ArgType::Variant)
                .ok_or(Malformed("ManufacturerData value not a variant"))?;
            let data: &[u8] = bytes
                .get()
                .ok_or(Malformed("ManufacturerData value not bytes"))?;
            up.ours = Some(data.to_vec());
        }
        entries.next();
    }
    Ok(())
}

/// `a{sv}`, UUID strings to variants holding `ay`; only wanted UUIDs' bytes are read.
fn service_data(
    value: &mut Iter<'_>,
    wanted: &[String],
    up: &mut DeviceUpdate,
) -> Result<(), Malformed> {
    let mut entries = value
        .recurse(ArgType::Array)
        .ok_or(Malformed("ServiceData not a dictionary"))?;
    while entries.arg_type() != ArgType::Invalid {
        let mut entry = entries
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("ServiceData not a dictionary"))?;
        let uuid: &str = entry
            .get()
            .ok_or(Malformed("ServiceData key not a string"))?;
        if wanted.iter().any(|w| w.eq_ignore_ascii_case(uuid)) {
            entry.next();
            let mut bytes = entry
                .recurse(ArgType::Variant)
                .ok_or(Malformed("ServiceData value not a variant"))?;
            let data: &[u8] = bytes
                .get()
                .ok_or(Malformed("ServiceData value not bytes"))?;
            up.service = Some((uuid.to_ascii_lowercase(), data.to_vec()));
        }
        entries.next();
    }
    Ok(())
}

/// Walks an `a{sv}` of an Adapter1 at `it`.
pub fn adapter_props(it: &mut Iter<'_>) -> Result<AdapterUpdate, Malformed> {
    let mut up = AdapterUpdate::default();
    let mut entries = it
        .recurse(ArgType::Array)
        .ok_or(Malformed("adapter properties: not a dictionary"))?;
    while entries.arg_type() != ArgType::Invalid {
        let mut entry = entries
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("adapter properties: not a dictionary"))?;
        let key: &str = entry
            .get()
            .ok_or(Malformed("adapter properties: key not a string"))?;
        entry.next();
        let mut value = entry
            .recurse(ArgType::Variant)
            .ok_or(Malformed("adapter properties: value not a variant"))?;
        match key {
            "Powered" => up.powered = Some(value.get::<bool>().ok_or(Malformed("Powered"))?),
            "Discovering" => {
                up.discovering = Some(value.get::<bool>().ok_or(Malformed("Discovering"))?);
            }
            _ => {}
        }
        entries.next();
    }
    Ok(up)
}

/// What `GetManagedObjects` (`a{oa{sa{sv}}}`) lists: adapters and the devices BlueZ remembers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Managed {
    pub adapters: Vec<(String, AdapterUpdate)>,
    pub devices: Vec<(String, DeviceUpdate)>,
}

/// Reads a `GetManagedObjects` reply; a device whose properties cannot be read is skipped and
/// counted in `unreadable`.
pub fn managed_objects(msg: &Message, interest: &Interest) -> Result<(Managed, u64), Malformed> {
    let mut out = Managed::default();
    let mut unreadable = 0;
    let mut it = msg.iter_init();
    let mut objects = it
        .recurse(ArgType::Array)
        .ok_or(Malformed("GetManagedObjects: not a dictionary"))?;
    while objects.arg_type() != ArgType::Invalid {
        let mut object = objects
            .recurse(ArgType::DictEntry)
            .ok_or(Malformed("GetManagedObjects: not a dictionary"))?;
        let path: dbus::Path = object
            .get()
            .ok_or(Malformed("GetManagedObjects: key not a path"))?;
        object.next();
        let mut ifaces = object
            .recurse(ArgType::Array)
            .ok_or(Malformed("GetManagedObjects: interfaces"))?;
        while ifaces.arg_type() != ArgType::Invalid {
            let mut entry = ifaces
                .recurse(ArgType::DictEntry)
                .ok_or(Malformed("GetManagedObjects: interfaces"))?;
            let name: &str = entry
                .get()
                .ok_or(Malformed("GetManagedObjects: interface name"))?;
            entry.next();
            if name == ADAPTER1 {
                out.adapters
                    .push((path.to_string(), adapter_props(&mut entry)?));
            } else if name == DEVICE1 {
                let mut up = DeviceUpdate::default();
                match device_props(&mut entry, interest, &mut up) {
                    Ok(()) => out.devices.push((path.to_string(), up)),
                    Err(_) => unreadable += 1,
                }
            }
            ifaces.next();
        }
        objects.next();
    }
    Ok((out, unreadable))
}

/// `/org/bluez/hci0/dev_C8_FD_19_00_00_11` → `C8:FD:19:00:00:11`, without a D-Bus call.
pub fn addr_of_path(s: &str) -> String {
    match s.rsplit_once("/dev_") {
        Some((_, mac)) => mac.replace('_', ":"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::arg::{PropMap, Variant};
    use std::collections::HashMap;

    fn interest() -> Interest {
        Interest {
            company_id: 0xFFFF,
            service_uuids: vec!["0000fcd2-0000-1000-8000-00805f9b34fb".into()],
        }
    }

    fn changed(path: &str, iface: &str, props: PropMap) -> Message {
        Message::new_signal(path, PROPERTIES, "PropertiesChanged")
            .unwrap()
            .append3(iface, props, Vec::<String>::new())
    }

    fn mfr(entries: &[(u16, &[u8])]) -> Variant<Box<dyn dbus::arg::RefArg>> {
        let m: HashMap<u16, Variant<Vec<u8>>> = entries
            .iter()
            .map(|(k, v)| (*k, Variant(v.to_vec())))
            .collect();
        Variant(Box::new(m))
    }

    const DEV: &str = "/org/bluez/hci0/dev_C8_FD_19_00_00_11";

    #[test]
    fn our_bytes_and_the_rssi_come_out_of_properties_changed() {
        let mut props = PropMap::new();
        props.insert("RSSI".into(), Variant(Box::new(-61i16)));
        props.insert(
            "ManufacturerData".into(),
            mfr(&[(0x004C, &[9, 9]), (0xFFFF, &[0xb1, 0x11])]),
        );
        let sig = read(&changed(DEV, DEVICE1, props), &interest()).unwrap();
        let Signal::Device { path, update } = sig else {
            panic!("{sig:?}")
        };
        assert_eq!(path, DEV);
        assert_eq!(update.rssi, Some(-61));
        assert_eq!(update.ours, Some(vec![0xb1, 0x11]));
        assert!(update.advert);
    }

    #[test]
    fn foreign_data_is_heard_but_not_ours_and_service_data_is_read_only_when_wanted() {
        let mut props = PropMap::new();
        props.insert("ManufacturerData".into(), mfr(&[(0x0006, &[1, 2, 3])]));
        let sd: HashMap<String, Variant<Vec<u8>>> = [
            (
                "0000fe9f-0000-1000-8000-00805f9b34fb".to_string(),
                Variant(vec![7]),
            ),
            (
                "0000FCD2-0000-1000-8000-00805f9b34fb".to_string(),
                Variant(vec![0x40, 1]),
            ),
        ]
        .into_iter()
        .collect();
        props.insert("ServiceData".into(), Variant(Box::new(sd)));
        let Signal::Device { update, .. } =
            read(&changed(DEV, DEVICE1, props), &interest()).unwrap()
        else {
            panic!()
        };
        assert_eq!(update.ours, None);
        assert!(update.advert && update.heard());
        assert_eq!(
            update.service,
            Some(("0000fcd2-0000-1000-8000-00805f9b34fb".into(), vec![0x40, 1]))
        );
    }

    #[test]
    fn a_new_devices_first_advert_comes_with_interfaces_added() {
        let mut props = PropMap::new();
        props.insert(
            "Address".into(),
            Variant(Box::new("C8:FD:19:00:00:11".to_string())),
        );
        props.insert("RSSI".into(), Variant(Box::new(-70i16)));
        props.insert("ManufacturerData".into(), mfr(&[(0xFFFF, &[1, 2])]));
        let mut ifaces: HashMap<String, PropMap> = HashMap::new();
        ifaces.insert("org.freedesktop.DBus.Properties".into(), PropMap::new());
        ifaces.insert(DEVICE1.into(), props);
        let msg = Message::new_signal("/", OBJECT_MANAGER, "InterfacesAdded")
            .unwrap()
            .append2(dbus::Path::from(DEV), ifaces);
        let Signal::Device { path, update } = read(&msg, &interest()).unwrap() else {
            panic!()
        };
        assert_eq!(addr_of_path(&path), "C8:FD:19:00:00:11");
        assert_eq!(update.rssi, Some(-70));
        assert_eq!(update.ours, Some(vec![1, 2]));
    }

    #[test]
    fn wrong_types_are_malformed_not_a_panic() {
        // ManufacturerData whose value is a string, RSSI as an int32, a dictionary key that is
        // not a company id: each is reported, none is taken for our data.
        let mut p = PropMap::new();
        let bad: HashMap<u16, Variant<String>> = [(0xFFFF, Variant("x".to_string()))].into();
        p.insert("ManufacturerData".into(), Variant(Box::new(bad)));
        assert!(read(&changed(DEV, DEVICE1, p), &interest()).is_err());
        let mut p = PropMap::new();
        p.insert("RSSI".into(), Variant(Box::new(-61i32)));
        assert!(read(&changed(DEV, DEVICE1, p), &interest()).is_err());
        let mut p = PropMap::new();
        let bad: HashMap<String, Variant<Vec<u8>>> =
            [("ffff".to_string(), Variant(vec![1]))].into();
        p.insert("ManufacturerData".into(), Variant(Box::new(bad)));
        assert!(read(&changed(DEV, DEVICE1, p), &interest()).is_err());
        // Arguments missing altogether.
        let empty = Message::new_signal(DEV, PROPERTIES, "PropertiesChanged").unwrap();
        assert!(read(&empty, &interest()).is_err());
        let empty = Message::new_signal("/", OBJECT_MANAGER, "InterfacesAdded").unwrap();
        assert!(read(&empty, &interest()).is_err());
    }

    #[test]
    fn adapter_power_and_discovery_are_read_and_rssi_alone_is_heard() {
        let mut p = PropMap::new();
        p.insert("Powered".into(), Variant(Box::new(false)));
        p.insert("Discovering".into(), Variant(Box::new(false)));
        assert_eq!(
            read(&changed("/org/bluez/hci0", ADAPTER1, p), &interest()).unwrap(),
            Signal::Adapter {
                path: "/org/bluez/hci0".into(),
                update: AdapterUpdate {
                    powered: Some(false),
                    discovering: Some(false)
                }
            }
        );
        let mut p = PropMap::new();
        p.insert("RSSI".into(), Variant(Box::new(-40i16)));
        let Signal::Device { update, .. } = read(&changed(DEV, DEVICE1, p), &interest()).unwrap()
        else {
            panic!()
        };
        assert!(update.heard() && !update.advert && update.ours.is_none());
        let mut p = PropMap::new();
        p.insert("Connected".into(), Variant(Box::new(true)));
        assert_eq!(
            read(&changed(DEV, DEVICE1, p), &interest()).unwrap(),
            Signal::Ignored
        );
    }

    #[test]
    fn addresses_come_from_the_object_path() {
        assert_eq!(
            addr_of_path("/org/bluez/hci0/dev_C8_FD_19_00_00_11"),
            "C8:FD:19:00:00:11"
        );
        assert_eq!(addr_of_path("weird"), "weird");
    }
}
