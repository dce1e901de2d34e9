"""Drives python-dbusmock's bluez5 mock for bandgate's BLE tests: one JSON command per stdin
line, one reply line per command on stdout ("ok ..." or "err ...").

The stock AddDevice types ManufacturerData as `aa{qv}`; real BlueZ (and btleplug) use
`a{qv}` with each value a variant holding `ay`. So bands are added here with AddObject and
an InterfacesAdded signal of our own, and each new advertisement is a PropertiesChanged
signal carrying RSSI and ManufacturerData, as bluetoothd sends them with
DuplicateData=true.

Commands:
  {"cmd": "adapter", "name": "hci0", "monitor_manager": true}
                         also gives the adapter org.bluez.AdvertisementMonitorManager1
                         (SupportedMonitorTypes ["or_patterns"]) unless monitor_manager is false
  {"cmd": "monitors", "adapter": "hci0"}
                         replies "ok <json>": {"discovering", "registrations", "rejected",
                         "monitors": [{"sender", "app", "path", "type", "patterns":
                         [[start, ad_type, hex]], "active"}]} (what RegisterMonitor accepted)
  {"cmd": "release", "adapter": "hci0"}  BlueZ releases every registered monitor (Release())
  {"cmd": "drop_manager", "adapter": "hci0"}
                         the adapter loses AdvertisementMonitorManager1 (and its monitors,
                         without a Release), as if bluetoothd stopped offering it

Passive scanning: once a monitor has been registered on the adapter, and while no discovery
is running, "advert" and "service" emit only adverts that match an active monitor's pattern
(replying "ok filtered" for the others), as a passive scan behind BlueZ's monitor would.
The state behind that is cached for up to 0.5 s between "monitors"/"release"/"adapter"/"power"
commands (see monitor_state).
  {"cmd": "advert", "adapter": "hci0", "addr": "C8:FD:19:00:00:11", "rssi": -60,
   "company_id": 65535, "data": "b1112a..."}       first advert of an address adds it
  {"cmd": "service", "adapter": "hci0", "addr": "54:48:E6:8F:80:A5", "rssi": -60,
   "uuid": "0000fcd2-0000-1000-8000-00805f9b34fb", "data": "45..."}
                         the same with ServiceData (a{sv}, each value a variant holding ay), as
                         BlueZ signals a BTHome advertisement
  {"cmd": "power", "adapter": "hci0", "on": false}
  {"cmd": "ping"}
  {"cmd": "stop_discovery", "adapter": "hci0"}   another client stops discovery behind our back
  {"cmd": "signal", "adapter": "hci0", "addr": ..., "rssi": -60, "company_id": 65535,
   "data": "b1..."}      a PropertiesChanged for a device the mock does not have (BlueZ forgot it)
  {"cmd": "malformed", "adapter": "hci0", "addr": ..., "company_id": 65535}
                         a PropertiesChanged whose ManufacturerData value is a string, not bytes
  {"cmd": "burst", "adapter": "hci0", "company_id": 65535, "frames": [[addr, rssi, hex], ...],
   "mark": 5000, "rate": 0}
                         emits every frame as a PropertiesChanged from inside the mock's own
                         process (EmitBurst, added to the mock once), as fast as it can when
                         rate is 0, else paced at `rate` per second; replies
                         "ok <t_start> <t_mark> <t_end>" (wall-clock seconds; t_mark just after
                         frame number `mark` was handed to the bus)
Uses the system bus, i.e. DBUS_SYSTEM_BUS_ADDRESS (the test's private bus).
"""

import json
import sys
import time

import dbus

MOCK = "org.freedesktop.DBus.Mock"
DEVICE = "org.bluez.Device1"
ADAPTER = "org.bluez.Adapter1"
OM = "org.freedesktop.DBus.ObjectManager"


def mfr(company_id, data_hex):
    data = bytes.fromhex(data_hex)
    return dbus.Dictionary(
        {dbus.UInt16(company_id): dbus.Array([dbus.Byte(b) for b in data], signature="y", variant_level=1)},
        signature="qv",
        variant_level=1,
    )


# Runs inside the mock bluetoothd (dbusmock's AddMethod): builds every signal first, then sends
# them back to back, so the feed is limited by libdbus and the bus, not by this controller.
EMIT_BURST = """
import time
import dbus.lowlevel
paths, rssis, datas, company_id, mark, rate = args
msgs = []
for p, r, d in zip(paths, rssis, datas):
    m = dbus.lowlevel.SignalMessage(p, 'org.freedesktop.DBus.Properties', 'PropertiesChanged')
    m.append('org.bluez.Device1',
             dbus.Dictionary({'RSSI': dbus.Int16(r, variant_level=1),
                              'ManufacturerData': dbus.Dictionary(
                                  {dbus.UInt16(company_id): dbus.ByteArray(bytes(d), variant_level=1)},
                                  signature='qv', variant_level=1)}, signature='sv'),
             dbus.Array([], signature='s'),
             signature='sa{sv}as')
    msgs.append(m)
conn = self.connection
t_mark = 0.0
t0 = time.time()
for i, m in enumerate(msgs):
    if rate > 0:
        # Sleep (not spin) while ahead: a spinning mock would take a core from the gateway.
        ahead = t0 + i / rate - time.time()
        if ahead > 0.0005:
            time.sleep(ahead)
    conn.send_message(m)
    if i == mark:
        t_mark = time.time()
conn.flush()
ret = (t0, t_mark, time.time())
"""


MANAGER = "org.bluez.AdvertisementMonitorManager1"
STATE_TTL = 0.5
MONITOR = "org.bluez.AdvertisementMonitor1"

# Runs inside the mock bluetoothd as its adapter's methods (dbusmock's AddMethod; `_` holds the
# caller's unique name once SENDERS has run). As BlueZ's adv_monitor.c does: list the caller's
# objects under the registered root, validate each AdvertisementMonitor1, Release() the bad
# ones, Activate() the good ones ([noreply] calls), then answer.
REGISTER = """
import dbus, dbus.lowlevel
root = str(args[0])
sender = _['sender']
if not hasattr(self, 'monitors'):
    self.monitors = {}
    self.registrations = 0
    self.rejected = 0
if (sender, root) in self.monitors:
    raise dbus.exceptions.DBusException('already registered', name='org.bluez.Error.AlreadyExists')
def noreply(path, method, sender=sender, conn=self.connection, lowlevel=dbus.lowlevel):
    # Defaults, not closures: exec'd code's functions do not see its locals.
    m = lowlevel.MethodCallMessage(sender, path, 'org.bluez.AdvertisementMonitor1', method)
    m.set_no_reply(True)
    conn.send_message(m)
try:
    objs = self.connection.call_blocking(sender, root, 'org.freedesktop.DBus.ObjectManager',
                                         'GetManagedObjects', '', [], timeout=5)
except dbus.exceptions.DBusException as e:
    raise dbus.exceptions.DBusException('cannot list the application: ' + str(e), name='org.bluez.Error.Failed')
found = []
for path, ifaces in objs.items():
    path = str(path)
    if not (path == root or path.startswith(root.rstrip('/') + '/')) or 'org.bluez.AdvertisementMonitor1' not in ifaces:
        continue
    props = ifaces['org.bluez.AdvertisementMonitor1']
    kind = str(props.get('Type', ''))
    pats = []
    ok = kind == 'or_patterns' and len(props.get('Patterns', [])) > 0
    for p in props.get('Patterns', []):
        start, ad, content = int(p[0]), int(p[1]), bytes(bytearray(p[2]))
        if not (1 <= ad <= 0x3d or ad == 0xff) or len(content) < 1 or start + len(content) > 31:
            ok = False
        pats.append([start, ad, content.hex()])
    mon = {'sender': sender, 'app': root, 'path': path, 'type': kind, 'patterns': pats, 'active': ok}
    if ok:
        found.append(mon)
        noreply(path, 'Activate')
    else:
        self.rejected += 1
        noreply(path, 'Release')
self.registrations += 1
self.monitors[(sender, root)] = found
"""

UNREGISTER = """
import dbus, dbus.lowlevel
key = (_['sender'], str(args[0]))
if key not in getattr(self, 'monitors', {}):
    raise dbus.exceptions.DBusException('not registered', name='org.bluez.Error.DoesNotExist')
for mon in self.monitors.pop(key):
    m = dbus.lowlevel.MethodCallMessage(mon['sender'], mon['path'], 'org.bluez.AdvertisementMonitor1', 'Release')
    m.set_no_reply(True)
    self.connection.send_message(m)
"""

# Lets the two methods above see who called (dbusmock passes no sender otherwise).
SENDERS = """
for name in ('RegisterMonitor', 'UnregisterMonitor'):
    self.methods['org.bluez.AdvertisementMonitorManager1'][name][3]._dbus_sender_keyword = 'sender'
"""

RELEASE_ALL = """
import dbus.lowlevel
n = 0
for key, mons in list(getattr(self, 'monitors', {}).items()):
    for mon in mons:
        m = dbus.lowlevel.MethodCallMessage(mon['sender'], mon['path'], 'org.bluez.AdvertisementMonitor1', 'Release')
        m.set_no_reply(True)
        self.connection.send_message(m)
        n += 1
    del self.monitors[key]
ret = n
"""

DROP = """
self.props.pop('org.bluez.AdvertisementMonitorManager1', None)
self.methods.pop('org.bluez.AdvertisementMonitorManager1', None)
self.monitors = {}
"""

STATE = """
import json
mons = [m for ms in getattr(self, 'monitors', {}).values() for m in ms]
ret = json.dumps({'discovering': bool(self.props['org.bluez.Adapter1']['Discovering']),
                  'ever': hasattr(self, 'monitors'),
                  'registrations': getattr(self, 'registrations', 0),
                  'rejected': getattr(self, 'rejected', 0),
                  'monitors': mons})
"""


def ad_bytes(company_id=None, data_hex="", uuid=None):
    """An advert's AD structure as (AD type, bytes), as a monitor pattern sees it."""
    if uuid is not None:
        u16 = int(uuid[4:8], 16)
        return 0x16, u16.to_bytes(2, "little") + bytes.fromhex(data_hex)
    return 0xFF, int(company_id).to_bytes(2, "little") + bytes.fromhex(data_hex)


def passes(state, ad_type, data):
    """Whether a passive scan behind the registered monitors lets this advert through."""
    if not state["ever"] or state["discovering"]:
        return True
    for mon in state["monitors"]:
        for start, ad, content in mon["patterns"]:
            c = bytes.fromhex(content)
            if ad == ad_type and data[start:start + len(c)] == c:
                return True
    return False


def svc(uuid, data_hex):
    data = bytes.fromhex(data_hex)
    return dbus.Dictionary(
        {dbus.String(uuid): dbus.Array([dbus.Byte(b) for b in data], signature="y", variant_level=1)},
        signature="sv",
        variant_level=1,
    )


def device_props(adapter_path, addr, rssi, company_id, data_hex, service=None):
    return dbus.Dictionary(
        {
            "Address": dbus.String(addr, variant_level=1),
            "AddressType": dbus.String("random", variant_level=1),
            "Alias": dbus.String(addr.replace(":", "-"), variant_level=1),
            "Paired": dbus.Boolean(False, variant_level=1),
            "Trusted": dbus.Boolean(False, variant_level=1),
            "Blocked": dbus.Boolean(False, variant_level=1),
            "LegacyPairing": dbus.Boolean(False, variant_level=1),
            "Connected": dbus.Boolean(False, variant_level=1),
            "ServicesResolved": dbus.Boolean(False, variant_level=1),
            "Adapter": dbus.ObjectPath(adapter_path, variant_level=1),
            "UUIDs": dbus.Array([], signature="s", variant_level=1),
            "RSSI": dbus.Int16(rssi, variant_level=1),
            **({"ServiceData": svc(*service)} if service else {"ManufacturerData": mfr(company_id, data_hex)}),
        },
        signature="sv",
    )


class Ctl:
    def __init__(self):
        self.bus = dbus.SystemBus()
        self.known = set()
        self.burst_ready = False
        self.manager_present = False
        self.state_cache = None

    @property
    def monitored(self):
        # Only adapters with the manager can have monitors.
        return self.manager_present

    def monitor_state(self, c, fresh=True):
        """The manager's state (MonitorState). Adverts use a copy up to STATE_TTL old, refreshed
        by every "monitors", "release", "adapter" and "power" command: asking per advert would
        slow a burst eightfold (tests wait for a registration with "monitors" before relying
        on the filter)."""
        if not self.manager_present:
            return json.dumps({"discovering": None, "ever": False, "registrations": 0, "rejected": 0, "monitors": []})
        now = time.monotonic()
        if fresh or self.state_cache is None or now - self.state_cache[0] > STATE_TTL:
            adapter = self.bus.get_object("org.bluez", "/org/bluez/" + c.get("adapter", "hci0"), introspect=False)
            self.state_cache = (now, str(adapter.MonitorState(dbus_interface=MOCK)))
        return self.state_cache[1]

    def obj(self, path):
        return self.bus.get_object("org.bluez", path)

    def handle(self, c):
        cmd = c["cmd"]
        if cmd == "ping":
            return "ok"
        if cmd == "adapter":
            # A new mock process knows no devices (nor the burst method).
            self.known = set()
            self.burst_ready = False
            self.state_cache = None
            path = self.obj("/").AddAdapter(c["name"], "bandgate-test", dbus_interface="org.bluez.Mock")
            self.manager_present = c.get("monitor_manager", True)
            if self.manager_present:
                adapter = self.obj(path)
                adapter.AddProperties(
                    MANAGER,
                    dbus.Dictionary(
                        {
                            "SupportedMonitorTypes": dbus.Array(["or_patterns"], signature="s", variant_level=1),
                            "SupportedFeatures": dbus.Array([], signature="s", variant_level=1),
                        },
                        signature="sv",
                    ),
                    dbus_interface=MOCK,
                )
                adapter.AddMethod(MANAGER, "RegisterMonitor", "o", "", REGISTER, dbus_interface=MOCK)
                adapter.AddMethod(MANAGER, "UnregisterMonitor", "o", "", UNREGISTER, dbus_interface=MOCK)
                adapter.AddMethod(MOCK, "MonitorSenders", "", "", SENDERS, dbus_interface=MOCK)
                adapter.AddMethod(MOCK, "ReleaseMonitors", "", "i", RELEASE_ALL, dbus_interface=MOCK)
                adapter.AddMethod(MOCK, "MonitorState", "", "s", STATE, dbus_interface=MOCK)
                adapter.AddMethod(MOCK, "DropManager", "", "", DROP, dbus_interface=MOCK)
                adapter.MonitorSenders(dbus_interface=MOCK)
            return f"ok {path}"
        if cmd == "monitors":
            return "ok " + self.monitor_state(c)
        if cmd == "drop_manager":
            self.obj("/org/bluez/" + c.get("adapter", "hci0")).DropManager(dbus_interface=MOCK)
            self.state_cache = None
            return "ok"
        if cmd == "release":
            n = self.obj("/org/bluez/" + c.get("adapter", "hci0")).ReleaseMonitors(dbus_interface=MOCK)
            self.state_cache = None
            return f"ok {n}"
        if cmd in ("advert", "service"):
            adapter_path = "/org/bluez/" + c.get("adapter", "hci0")
            path = adapter_path + "/dev_" + c["addr"].replace(":", "_").upper()
            service = (c["uuid"], c["data"]) if cmd == "service" else None
            if service:
                payload = ("ServiceData", svc(*service))
            else:
                payload = ("ManufacturerData", mfr(c["company_id"], c["data"]))
            if self.monitored:
                state = json.loads(self.monitor_state(c, fresh=False))
                ad_type, data = ad_bytes(c.get("company_id"), c["data"], c.get("uuid"))
                if not passes(state, ad_type, data):
                    return "ok filtered"
            if path not in self.known:
                props = device_props(adapter_path, c["addr"], c["rssi"], c.get("company_id"), c["data"], service)
                root = self.obj("/")
                root.AddObject(path, DEVICE, props, dbus.Array([], signature="(ssss)"), dbus_interface=MOCK)
                root.EmitSignal(
                    OM,
                    "InterfacesAdded",
                    "oa{sa{sv}}",
                    [dbus.ObjectPath(path), dbus.Dictionary({DEVICE: props}, signature="sa{sv}")],
                    dbus_interface=MOCK,
                )
                self.known.add(path)
            else:
                # One PropertiesChanged with both, as bluetoothd sends a new advertisement.
                # (UpdateProperties cannot wrap a dictionary value; btleplug reads updates from
                # the signal, so the stored properties need not follow.)
                self.obj(path).EmitSignal(
                    "org.freedesktop.DBus.Properties",
                    "PropertiesChanged",
                    "sa{sv}as",
                    [
                        DEVICE,
                        dbus.Dictionary(
                            {
                                "RSSI": dbus.Int16(c["rssi"], variant_level=1),
                                payload[0]: payload[1],
                            },
                            signature="sv",
                        ),
                        dbus.Array([], signature="s"),
                    ],
                    dbus_interface=MOCK,
                )
            return "ok"
        if cmd == "signal":
            path = "/org/bluez/" + c.get("adapter", "hci0") + "/dev_" + c["addr"].replace(":", "_").upper()
            self.bus.get_object("org.bluez", "/").EmitSignalDetailed(
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                "sa{sv}as",
                [
                    DEVICE,
                    dbus.Dictionary(
                        {
                            "RSSI": dbus.Int16(c["rssi"], variant_level=1),
                            "ManufacturerData": mfr(c["company_id"], c["data"]),
                        },
                        signature="sv",
                    ),
                    dbus.Array([], signature="s"),
                ],
                dbus.Dictionary({"path": dbus.ObjectPath(path)}, signature="sv"),
                dbus_interface=MOCK,
            )
            return "ok"
        if cmd == "malformed":
            path = "/org/bluez/" + c.get("adapter", "hci0") + "/dev_" + c["addr"].replace(":", "_").upper()
            bad = dbus.Dictionary(
                {dbus.UInt16(c["company_id"]): dbus.String("not bytes", variant_level=1)},
                signature="qv",
                variant_level=1,
            )
            self.bus.get_object("org.bluez", "/").EmitSignalDetailed(
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                "sa{sv}as",
                [DEVICE, dbus.Dictionary({"ManufacturerData": bad}, signature="sv"), dbus.Array([], signature="s")],
                dbus.Dictionary({"path": dbus.ObjectPath(path)}, signature="sv"),
                dbus_interface=MOCK,
            )
            return "ok"
        if cmd == "burst":
            root = self.obj("/")
            if not self.burst_ready:
                root.AddMethod(MOCK, "EmitBurst", "aoanaayqid", "ddd", EMIT_BURST, dbus_interface=MOCK)
                self.burst_ready = True
            prefix = "/org/bluez/" + c.get("adapter", "hci0") + "/dev_"
            paths = dbus.Array([dbus.ObjectPath(prefix + f[0].replace(":", "_").upper()) for f in c["frames"]], signature="o")
            rssis = dbus.Array([dbus.Int16(f[1]) for f in c["frames"]], signature="n")
            datas = dbus.Array([dbus.ByteArray(bytes.fromhex(f[2])) for f in c["frames"]], signature="ay")
            t0, t_mark, t_end = root.EmitBurst(
                paths, rssis, datas, dbus.UInt16(c["company_id"]), dbus.Int32(c.get("mark", -1)),
                dbus.Double(c.get("rate", 0)), dbus_interface=MOCK, timeout=600,
            )
            return f"ok {t0:.6f} {t_mark:.6f} {t_end:.6f}"
        if cmd == "stop_discovery":
            self.obj("/org/bluez/" + c.get("adapter", "hci0")).StopDiscovery(dbus_interface=ADAPTER)
            return "ok"
        if cmd == "power":
            self.state_cache = None
            path = "/org/bluez/" + c.get("adapter", "hci0")
            props = {"Powered": dbus.Boolean(c["on"], variant_level=1)}
            if not c["on"]:
                # As bluetoothd does: powering off ends discovery.
                props["Discovering"] = dbus.Boolean(False, variant_level=1)
            self.obj(path).UpdateProperties(ADAPTER, dbus.Dictionary(props, signature="sv"), dbus_interface=MOCK)
            return "ok"
        return f"err unknown command {cmd}"


def main():
    ctl = Ctl()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = ctl.handle(json.loads(line))
        except Exception as e:  # the test reads the reason
            reply = "err " + str(e).replace("\n", " ")
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
