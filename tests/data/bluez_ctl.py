"""Drives python-dbusmock's bluez5 mock for bandgate's BLE tests: one JSON command per stdin
line, one reply line per command on stdout ("ok ..." or "err ...").

The stock AddDevice types ManufacturerData as `aa{qv}`; real BlueZ (and btleplug) use
`a{qv}` with each value a variant holding `ay`. So bands are added here with AddObject and
an InterfacesAdded signal of our own, and each new advertisement is a PropertiesChanged
signal carrying RSSI and ManufacturerData, as bluetoothd sends them with
DuplicateData=true.

Commands:
  {"cmd": "adapter", "name": "hci0"}
  {"cmd": "advert", "adapter": "hci0", "addr": "C8:FD:19:00:00:11", "rssi": -60,
   "company_id": 65535, "data": "b1112a..."}       first advert of an address adds it
  {"cmd": "power", "adapter": "hci0", "on": false}
  {"cmd": "ping"}
Uses the system bus, i.e. DBUS_SYSTEM_BUS_ADDRESS (the test's private bus).
"""

import json
import sys

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


def device_props(adapter_path, addr, rssi, company_id, data_hex):
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
            "ManufacturerData": mfr(company_id, data_hex),
        },
        signature="sv",
    )


class Ctl:
    def __init__(self):
        self.bus = dbus.SystemBus()
        self.known = set()

    def obj(self, path):
        return self.bus.get_object("org.bluez", path)

    def handle(self, c):
        cmd = c["cmd"]
        if cmd == "ping":
            return "ok"
        if cmd == "adapter":
            # A new mock process knows no devices.
            self.known = set()
            path = self.obj("/").AddAdapter(c["name"], "bandgate-test", dbus_interface="org.bluez.Mock")
            return f"ok {path}"
        if cmd == "advert":
            adapter_path = "/org/bluez/" + c.get("adapter", "hci0")
            path = adapter_path + "/dev_" + c["addr"].replace(":", "_").upper()
            if path not in self.known:
                props = device_props(adapter_path, c["addr"], c["rssi"], c["company_id"], c["data"])
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
                                "ManufacturerData": mfr(c["company_id"], c["data"]),
                            },
                            signature="sv",
                        ),
                        dbus.Array([], signature="s"),
                    ],
                    dbus_interface=MOCK,
                )
            return "ok"
        if cmd == "power":
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
