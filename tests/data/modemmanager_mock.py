"""A mock ModemManager for bandgate's fallback tests: a python-dbusmock template (load it with
`python3 -m dbusmock --template tests/data/modemmanager_mock.py`), on the system bus, i.e.
DBUS_SYSTEM_BUS_ADDRESS (the test's private bus).

Neither Debian's python3-dbusmock (no ModemManager template) nor PyPI's (a `modemmanager`
template without SMS or calls) can send an SMS or place a call, so this one has what
bandgate uses:

- /org/freedesktop/ModemManager1 is an ObjectManager; a modem is
  /org/freedesktop/ModemManager1/Modem/0 with Modem (State, SignalQuality, UnlockRequired,
  Sim), Modem.Messaging (Create, List, Delete) and Modem.Voice (CreateCall, ListCalls,
  DeleteCall);
- an SMS object (Sms: Send, Store; Number, Text, State, PduType, MessageReference,
  DeliveryState); Send marks it sent with the next message reference and, with "report" on,
  adds the carrier's status report at once as another SMS object (PduType 3, the same
  MessageReference, DeliveryState 0);
- a call object (Call: Start, Hangup; Number, State, StateReason): Start rings (State 2), or
  with "call" = "answer" is answered at once (State 4), with "refuse" is refused at once
  (State 7, reason 5); Hangup ends it (State 7, reason 4).

Test control, interface org.freedesktop.ModemManager1.Mock on the main object:
  AddModem()          adds the modem (again, after RemoveModem)
  RemoveModem()       the modem vanishes (unplugged), with its SMS and calls
  Configure(s json)   e.g. {"send_fails": true, "call": "refuse", "report": false}
  Journal() -> s      JSON {"created": [[number, text]], "sent": [[number, text]],
                      "calls": [[number, how it ended]]}
"""

import json

import dbus

from dbusmock import OBJECT_MANAGER_IFACE, mockobject

BUS_NAME = 'org.freedesktop.ModemManager1'
MAIN_OBJ = '/org/freedesktop/ModemManager1'
MAIN_IFACE = 'org.freedesktop.ModemManager1'
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = 'org.freedesktop.ModemManager1.Mock'
MODEM_IFACE = 'org.freedesktop.ModemManager1.Modem'
MESSAGING_IFACE = 'org.freedesktop.ModemManager1.Modem.Messaging'
VOICE_IFACE = 'org.freedesktop.ModemManager1.Modem.Voice'
SMS_IFACE = 'org.freedesktop.ModemManager1.Sms'
CALL_IFACE = 'org.freedesktop.ModemManager1.Call'
MODEM = MAIN_OBJ + '/Modem/0'


# The main mock object (set by load(), before dbusmock lists it in mockobject.objects).
MAIN = None


def main():
    return MAIN


def emit_added(path):
    obj = mockobject.objects[path]
    ifaces = dbus.Dictionary({i: dbus.Dictionary(p, signature='sv') for i, p in obj.props.items()},
                             signature='sa{sv}')
    main().EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}', [dbus.ObjectPath(path), ifaces])


def emit_removed(path):
    obj = mockobject.objects[path]
    main().EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesRemoved', 'oas',
                      [dbus.ObjectPath(path), dbus.Array(list(obj.props.keys()), signature='s')])


class State:
    def __init__(self):
        self.behaviour = {'send_fails': False, 'call': 'ring', 'report': True}
        self.created = []
        self.sent = []
        self.calls = []
        self.sms = []
        self.call_paths = []
        self.next_sms = 0
        self.next_call = 0
        self.next_ref = 40

    def create_sms(self, props):
        if MODEM not in mockobject.objects:
            raise dbus.exceptions.DBusException('no modem', name='org.freedesktop.DBus.Error.UnknownObject')
        path = f'{MAIN_OBJ}/SMS/{self.next_sms}'
        self.next_sms += 1
        number = str(props.get('number', ''))
        text = str(props.get('text', ''))
        main().AddObject(path, SMS_IFACE, {
            'Number': dbus.String(number),
            'Text': dbus.String(text),
            'State': dbus.UInt32(0),
            'PduType': dbus.UInt32(2),
            'MessageReference': dbus.UInt32(0),
            'DeliveryState': dbus.UInt32(0x100),
            'DeliveryReportRequest': dbus.Boolean(bool(props.get('delivery-report-request', False))),
        }, [
            ('Send', '', '', f'objects["{MAIN_OBJ}"].mm.send(self)'),
            ('Store', 'u', '', ''),
        ])
        self.sms.append(path)
        self.created.append([number, text])
        return dbus.ObjectPath(path)

    def send(self, sms):
        if self.behaviour.get('send_fails'):
            raise dbus.exceptions.DBusException('Sending SMS failed: network timeout (mock)',
                                                name='org.freedesktop.ModemManager1.Error.Core.Failed')
        ref = self.next_ref
        self.next_ref += 1
        sms.props[SMS_IFACE]['State'] = dbus.UInt32(5)
        sms.props[SMS_IFACE]['MessageReference'] = dbus.UInt32(ref)
        number = str(sms.props[SMS_IFACE]['Number'])
        self.sent.append([number, str(sms.props[SMS_IFACE]['Text'])])
        if self.behaviour.get('report') and sms.props[SMS_IFACE]['DeliveryReportRequest']:
            path = f'{MAIN_OBJ}/SMS/{self.next_sms}'
            self.next_sms += 1
            main().AddObject(path, SMS_IFACE, {
                'Number': dbus.String(number),
                'Text': dbus.String(''),
                'State': dbus.UInt32(3),
                'PduType': dbus.UInt32(3),
                'MessageReference': dbus.UInt32(ref),
                'DeliveryState': dbus.UInt32(0),
                'DeliveryReportRequest': dbus.Boolean(False),
            }, [])
            self.sms.append(path)

    def list_sms(self):
        return dbus.Array([dbus.ObjectPath(p) for p in self.sms if p in mockobject.objects], signature='o')

    def delete_sms(self, path):
        path = str(path)
        if path in self.sms:
            self.sms.remove(path)
        if path in mockobject.objects:
            main().RemoveObject(path)

    def create_call(self, props):
        if MODEM not in mockobject.objects:
            raise dbus.exceptions.DBusException('no modem', name='org.freedesktop.DBus.Error.UnknownObject')
        path = f'{MAIN_OBJ}/Call/{self.next_call}'
        self.next_call += 1
        main().AddObject(path, CALL_IFACE, {
            'Number': dbus.String(str(props.get('number', ''))),
            'State': dbus.Int32(0),
            'StateReason': dbus.Int32(0),
            'Direction': dbus.Int32(2),
        }, [
            ('Start', '', '', f'objects["{MAIN_OBJ}"].mm.start(self)'),
            ('Hangup', '', '', f'objects["{MAIN_OBJ}"].mm.hangup(self)'),
        ])
        self.call_paths.append(path)
        return dbus.ObjectPath(path)

    def start(self, call):
        p = call.props[CALL_IFACE]
        how = self.behaviour.get('call', 'ring')
        if how == 'answer':
            p['State'], p['StateReason'] = dbus.Int32(4), dbus.Int32(3)
        elif how == 'refuse':
            p['State'], p['StateReason'] = dbus.Int32(7), dbus.Int32(5)
            self.calls.append([str(p['Number']), 'refused'])
        else:
            p['State'], p['StateReason'] = dbus.Int32(2), dbus.Int32(1)

    def hangup(self, call):
        p = call.props[CALL_IFACE]
        was = int(p['State'])
        p['State'], p['StateReason'] = dbus.Int32(7), dbus.Int32(4)
        self.calls.append([str(p['Number']), 'answered' if was == 4 else 'hung up ringing'])

    def delete_call(self, path):
        path = str(path)
        if path in self.call_paths:
            self.call_paths.remove(path)
        if path in mockobject.objects:
            main().RemoveObject(path)


def add_modem():
    if MODEM in mockobject.objects:
        return
    main().AddObject(MODEM, MODEM_IFACE, {
        'State': dbus.Int32(8),
        'SignalQuality': dbus.Struct((dbus.UInt32(71), dbus.Boolean(True)), signature='ub'),
        'UnlockRequired': dbus.UInt32(1),
        'Sim': dbus.ObjectPath(MAIN_OBJ + '/SIM/0'),
    }, [])
    modem = mockobject.objects[MODEM]
    modem.AddProperties(MESSAGING_IFACE, {'Messages': dbus.Array([], signature='o')})
    modem.AddMethods(MESSAGING_IFACE, [
        ('Create', 'a{sv}', 'o', f'ret = objects["{MAIN_OBJ}"].mm.create_sms(args[0])'),
        ('List', '', 'ao', f'ret = objects["{MAIN_OBJ}"].mm.list_sms()'),
        ('Delete', 'o', '', f'objects["{MAIN_OBJ}"].mm.delete_sms(args[0])'),
    ])
    modem.AddProperties(VOICE_IFACE, {'Calls': dbus.Array([], signature='o')})
    modem.AddMethods(VOICE_IFACE, [
        ('CreateCall', 'a{sv}', 'o', f'ret = objects["{MAIN_OBJ}"].mm.create_call(args[0])'),
        ('ListCalls', '', 'ao', f'ret = dbus.Array([dbus.ObjectPath(p) for p in objects["{MAIN_OBJ}"].mm.call_paths], signature="o")'),
        ('DeleteCall', 'o', '', f'objects["{MAIN_OBJ}"].mm.delete_call(args[0])'),
    ])
    emit_added(MODEM)


def load(mock, _parameters):
    global MAIN  # pylint: disable=global-statement
    MAIN = mock
    mock.mm = State()
    add_modem()


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='')
def AddModem(_self):
    add_modem()


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='')
def RemoveModem(self):
    st = self.mm
    for path in list(st.sms) + list(st.call_paths):
        if path in mockobject.objects:
            self.RemoveObject(path)
    st.sms, st.call_paths = [], []
    if MODEM in mockobject.objects:
        emit_removed(MODEM)
        self.RemoveObject(MODEM)


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='')
def Configure(self, behaviour):
    self.mm.behaviour.update(json.loads(behaviour))


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='s')
def Journal(self):
    st = self.mm
    return json.dumps({'created': st.created, 'sent': st.sent, 'calls': st.calls}, ensure_ascii=False)
