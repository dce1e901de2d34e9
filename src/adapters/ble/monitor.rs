//! Passive scanning: the advertisement monitor bandgate serves to BlueZ, and its patterns.
//!
//! With `[ble] scan = "passive"` the source does not call `StartDiscovery`; it exports, on its
//! own D-Bus connection, an application root (`org.freedesktop.DBus.ObjectManager`) with one
//! `org.bluez.AdvertisementMonitor1` child of type `or_patterns`, and registers the root with
//! the adapter's `org.bluez.AdvertisementMonitorManager1`. BlueZ then scans passively (no scan
//! requests, so the bands spend nothing on scan responses) and lets through only adverts that
//! match a pattern; they still arrive as `Device1` `PropertiesChanged` signals, so the intake
//! path is the same as for active scanning.
//!
//! This file answers BlueZ's calls on those objects (`answer`, pure: message in, reply and
//! event out) and builds the patterns; `ble.rs` wires it to the connection and decides what a
//! `Release()` means.

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::Message;
use std::collections::HashMap;

pub const MANAGER1: &str = "org.bluez.AdvertisementMonitorManager1";
pub const MONITOR1: &str = "org.bluez.AdvertisementMonitor1";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";

/// The application root registered with `RegisterMonitor`.
pub const APP_ROOT: &str = "/org/bandgate/scan";
/// The one monitor under it.
pub const MONITOR_PATH: &str = "/org/bandgate/scan/monitor0";
/// The only monitor type BlueZ defines, and the one we need.
pub const OR_PATTERNS: &str = "or_patterns";

/// AD type of manufacturer-specific data.
pub const AD_MANUFACTURER_DATA: u8 = 0xFF;
/// AD type of service data with a 16-bit UUID.
pub const AD_SERVICE_DATA16: u8 = 0x16;
/// BTHome's 16-bit service UUID (`engine::bthome::UUID` is its 128-bit form).
pub const BTHOME_UUID16: u16 = 0xFCD2;

/// One or-pattern as BlueZ's `Patterns` property carries it: (start position, AD type,
/// content). The content is compared with the AD structure's data from `start`.
pub type Pattern = (u8, u8, Vec<u8>);

/// Our patterns: manufacturer data under our company id (little-endian, as on air), and,
/// when any BTHome device is enrolled, service data under UUID 0xFCD2.
pub fn patterns(company_id: u16, bthome: bool) -> Vec<Pattern> {
    let mut p = vec![(0, AD_MANUFACTURER_DATA, company_id.to_le_bytes().to_vec())];
    if bthome {
        p.push((0, AD_SERVICE_DATA16, BTHOME_UUID16.to_le_bytes().to_vec()));
    }
    p
}

/// What BlueZ told the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// The monitor is in force: matching adverts will come.
    Activated,
    /// BlueZ dropped the monitor (could not activate it, unregistered, or deactivated it).
    Released,
    /// `DeviceFound` / `DeviceLost`: informational (the adverts come as signals anyway).
    Device { found: bool, path: String },
}

/// BlueZ's call on one of our objects, answered: the reply to send (none for `[noreply]`
/// calls) and what it told us.
pub fn answer(msg: &Message, patterns: &[Pattern]) -> (Option<Message>, Option<MonitorEvent>) {
    let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
    let iface = msg.interface().map(|i| i.to_string()).unwrap_or_default();
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    let reply = |m: Message| (!msg.get_no_reply()).then_some(m);
    let unknown = || {
        let text = format!("bandgate serves no {iface}.{member} on {path}");
        (
            reply(msg.error(
                &"org.freedesktop.DBus.Error.UnknownMethod".into(),
                &std::ffi::CString::new(text).unwrap_or_default(),
            )),
            None,
        )
    };
    match (path.as_str(), iface.as_str(), member.as_str()) {
        (APP_ROOT, OBJECT_MANAGER, "GetManagedObjects") => {
            let mut objects: HashMap<dbus::Path<'static>, HashMap<String, PropMap>> =
                HashMap::new();
            let mut ifaces = HashMap::new();
            ifaces.insert(MONITOR1.to_string(), props(patterns));
            objects.insert(dbus::Path::from(MONITOR_PATH), ifaces);
            (reply(msg.method_return().append1(objects)), None)
        }
        (MONITOR_PATH, PROPERTIES, "GetAll") => match msg.read1::<&str>() {
            Ok(MONITOR1) => (reply(msg.method_return().append1(props(patterns))), None),
            _ => (reply(msg.method_return().append1(PropMap::new())), None),
        },
        (MONITOR_PATH, PROPERTIES, "Get") => {
            let mut all = props(patterns);
            match msg.read2::<&str, &str>() {
                Ok((MONITOR1, name)) if all.contains_key(name) => {
                    let v = all.remove(name).expect("checked");
                    (reply(msg.method_return().append1(v)), None)
                }
                _ => unknown(),
            }
        }
        (MONITOR_PATH, MONITOR1, "Activate") => {
            (reply(msg.method_return()), Some(MonitorEvent::Activated))
        }
        (MONITOR_PATH, MONITOR1, "Release") => {
            (reply(msg.method_return()), Some(MonitorEvent::Released))
        }
        (MONITOR_PATH, MONITOR1, found @ ("DeviceFound" | "DeviceLost")) => {
            let device = msg
                .read1::<dbus::Path>()
                .map(|p| p.to_string())
                .unwrap_or_default();
            (
                reply(msg.method_return()),
                Some(MonitorEvent::Device {
                    found: found == "DeviceFound",
                    path: device,
                }),
            )
        }
        (APP_ROOT | MONITOR_PATH | "/", INTROSPECTABLE, "Introspect") => {
            (reply(msg.method_return().append1(introspect(&path))), None)
        }
        _ => unknown(),
    }
}

/// The monitor's properties: `Type` and `Patterns` (no RSSI thresholds: every advert counts).
fn props(patterns: &[Pattern]) -> PropMap {
    let mut p = PropMap::new();
    p.insert(
        "Type".into(),
        Variant(Box::new(OR_PATTERNS.to_string()) as Box<dyn RefArg>),
    );
    p.insert(
        "Patterns".into(),
        Variant(Box::new(patterns.to_vec()) as Box<dyn RefArg>),
    );
    p
}

fn introspect(path: &str) -> String {
    let body = match path {
        MONITOR_PATH => format!(
            r#"<interface name="{MONITOR1}"><method name="Release"/><method name="Activate"/><method name="DeviceFound"><arg type="o" direction="in"/></method><method name="DeviceLost"><arg type="o" direction="in"/></method><property name="Type" type="s" access="read"/><property name="Patterns" type="a(yyay)" access="read"/></interface>"#
        ),
        APP_ROOT => format!(
            r#"<interface name="{OBJECT_MANAGER}"><method name="GetManagedObjects"><arg type="a{{oa{{sa{{sv}}}}}}" direction="out"/></method></interface><node name="monitor0"/>"#
        ),
        _ => r#"<node name="org"/>"#.to_string(),
    };
    format!("<node>{body}</node>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::arg::PropMap;

    fn call(path: &str, iface: &str, member: &str) -> Message {
        let mut m = Message::new_method_call(":1.7", path, iface, member).unwrap();
        m.set_serial(3);
        m
    }

    #[test]
    fn our_company_id_is_matched_little_endian_and_bthome_only_when_enrolled() {
        assert_eq!(patterns(0x1234, false), vec![(0, 0xFF, vec![0x34, 0x12])]);
        assert_eq!(
            patterns(0xFFFF, true),
            vec![(0, 0xFF, vec![0xFF, 0xFF]), (0, 0x16, vec![0xD2, 0xFC])]
        );
    }

    #[test]
    fn get_managed_objects_lists_one_or_patterns_monitor_with_our_patterns() {
        let pats = patterns(0xFFFF, true);
        let (reply, ev) = answer(&call(APP_ROOT, OBJECT_MANAGER, "GetManagedObjects"), &pats);
        assert_eq!(ev, None);
        let reply = reply.unwrap();
        let objects: HashMap<dbus::Path<'static>, HashMap<String, PropMap>> =
            reply.read1().unwrap();
        let monitor = &objects[&dbus::Path::from(MONITOR_PATH)][MONITOR1];
        assert_eq!(monitor["Type"].0.as_str(), Some("or_patterns"));
        // a(yyay), each pattern as BlueZ reads it.
        let mut got = Vec::new();
        for p in monitor["Patterns"].0.as_iter().unwrap() {
            let mut f = p.as_iter().unwrap();
            let start = f.next().unwrap().as_u64().unwrap() as u8;
            let ad = f.next().unwrap().as_u64().unwrap() as u8;
            let content: Vec<u8> = f
                .next()
                .unwrap()
                .as_iter()
                .unwrap()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            got.push((start, ad, content));
        }
        assert_eq!(got, pats);
        assert_eq!(monitor["Patterns"].0.signature().to_string(), "a(yyay)");
    }

    #[test]
    fn release_and_activate_are_events_and_noreply_calls_get_no_reply() {
        let pats = patterns(0xFFFF, false);
        let (r, ev) = answer(&call(MONITOR_PATH, MONITOR1, "Activate"), &pats);
        assert!(r.is_some());
        assert_eq!(ev, Some(MonitorEvent::Activated));
        let mut release = call(MONITOR_PATH, MONITOR1, "Release");
        release.set_no_reply(true);
        let (r, ev) = answer(&release, &pats);
        assert!(r.is_none(), "[noreply]: nothing is sent back");
        assert_eq!(ev, Some(MonitorEvent::Released));
        let found = call(MONITOR_PATH, MONITOR1, "DeviceFound")
            .append1(dbus::Path::from("/org/bluez/hci0/dev_C8_FD_19_00_00_11"));
        let (_, ev) = answer(&found, &pats);
        assert_eq!(
            ev,
            Some(MonitorEvent::Device {
                found: true,
                path: "/org/bluez/hci0/dev_C8_FD_19_00_00_11".into()
            })
        );
    }

    #[test]
    fn anything_else_is_an_unknown_method_error_not_a_panic() {
        let pats = patterns(0xFFFF, false);
        for (path, iface, member) in [
            (MONITOR_PATH, MONITOR1, "Explode"),
            ("/elsewhere", MONITOR1, "Activate"),
            (APP_ROOT, PROPERTIES, "Get"),
            (MONITOR_PATH, PROPERTIES, "Get"),
        ] {
            let (r, ev) = answer(&call(path, iface, member), &pats);
            let r = r.unwrap();
            assert_eq!(
                r.msg_type(),
                dbus::MessageType::Error,
                "{path} {iface}.{member}"
            );
            assert_eq!(ev, None);
        }
    }
}
