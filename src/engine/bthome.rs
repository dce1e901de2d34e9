//! BTHome v2 service data (`shared/spec/bthome.md`): the only module that knows its bytes.
//!
//! `open` checks a frame in this order: length, version, the device (by MAC), encryption
//! (an enrolled device must encrypt: `downgrade`), the MIC, then the objects. The counter
//! check that follows is state and lives in `Intake` (`replay::ReplayWindow::accept_counter`).
//! `read` decodes without the enrolment rules (for `bandgate decode` and tests); `seal` makes
//! an encrypted frame as a device would (tests, the benches, the simulator).
//!
//! Nothing here allocates: plaintext is decrypted into a stack buffer bounded by what one
//! advertisement can carry, and a `Reading` holds no vectors or strings.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aes::Aes128Enc;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U4};

use super::frame::{DeviceKey, Reject};

/// The 16-bit service UUID, as on air (`D2 FC`).
pub const UUID16: u16 = 0xFCD2;
/// The 128-bit form BlueZ names service data by.
pub const UUID: &str = "0000fcd2-0000-1000-8000-00805f9b34fb";
/// Longest service data one advertisement can carry (an AD structure's 255 bytes less its type
/// and the UUID). Longer input cannot come from a radio: `malformed`, never decrypted.
pub const MAX_LEN: usize = 252;
/// Buttons one frame may report (one `0x3A` object each); more is `malformed`. Real devices
/// have one (Shelly BLU Button1) to four (Wall Switch 4, RC Button 4).
pub const MAX_BUTTONS: usize = 8;
/// Counter (4) and MIC (4) that follow the ciphertext of an encrypted frame.
const TRAILER: usize = 8;

/// Device-information bits.
const DI_ENCRYPTED: u8 = 0x01;
const DI_MAC_INCLUDED: u8 = 0x02;
const DI_TRIGGER: u8 = 0x04;

type Cipher = ccm::Ccm<Aes128Enc, U4, U13>;

/// A Bluetooth device address in the order it is written (`54:48:E6:8F:80:A5`).
pub type Mac = [u8; 6];

/// Reads `AA:BB:CC:DD:EE:FF` (any case; `-` also accepted as the separator).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let b = s.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, out) in mac.iter_mut().enumerate() {
        if i > 0 && !matches!(b[i * 3 - 1], b':' | b'-') {
            return None;
        }
        let hex = std::str::from_utf8(&b[i * 3..i * 3 + 2]).ok()?;
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *out = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(mac)
}

/// `AA:BB:CC:DD:EE:FF`, as `keys.toml` writes it.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A button object's event (`0x3A`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ButtonEvent {
    None,
    Press,
    DoublePress,
    TriplePress,
    LongPress,
    LongDoublePress,
    LongTriplePress,
    /// `0x80`, and `0xFE` that some devices (Shelly) send for hold.
    HoldPress,
    /// A value the specification does not name; it raises nothing.
    Other(u8),
}

impl ButtonEvent {
    /// The events `keys.toml` may name in `sos` and `cancel`.
    pub const NAMED: [ButtonEvent; 7] = [
        ButtonEvent::Press,
        ButtonEvent::DoublePress,
        ButtonEvent::TriplePress,
        ButtonEvent::LongPress,
        ButtonEvent::LongDoublePress,
        ButtonEvent::LongTriplePress,
        ButtonEvent::HoldPress,
    ];

    pub fn from_byte(b: u8) -> ButtonEvent {
        match b {
            0x00 => ButtonEvent::None,
            0x01 => ButtonEvent::Press,
            0x02 => ButtonEvent::DoublePress,
            0x03 => ButtonEvent::TriplePress,
            0x04 => ButtonEvent::LongPress,
            0x05 => ButtonEvent::LongDoublePress,
            0x06 => ButtonEvent::LongTriplePress,
            0x80 | 0xFE => ButtonEvent::HoldPress,
            other => ButtonEvent::Other(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            ButtonEvent::None => 0x00,
            ButtonEvent::Press => 0x01,
            ButtonEvent::DoublePress => 0x02,
            ButtonEvent::TriplePress => 0x03,
            ButtonEvent::LongPress => 0x04,
            ButtonEvent::LongDoublePress => 0x05,
            ButtonEvent::LongTriplePress => 0x06,
            ButtonEvent::HoldPress => 0x80,
            ButtonEvent::Other(b) => b,
        }
    }

    /// The specification's name (`press`, `double_press`, ...; `none`; `other`).
    pub fn name(self) -> &'static str {
        match self {
            ButtonEvent::None => "none",
            ButtonEvent::Press => "press",
            ButtonEvent::DoublePress => "double_press",
            ButtonEvent::TriplePress => "triple_press",
            ButtonEvent::LongPress => "long_press",
            ButtonEvent::LongDoublePress => "long_double_press",
            ButtonEvent::LongTriplePress => "long_triple_press",
            ButtonEvent::HoldPress => "hold_press",
            ButtonEvent::Other(_) => "other",
        }
    }

    /// One of `NAMED` by its name.
    pub fn parse(name: &str) -> Option<ButtonEvent> {
        ButtonEvent::NAMED.into_iter().find(|e| e.name() == name)
    }

    fn bit(self) -> u8 {
        match ButtonEvent::NAMED.iter().position(|e| *e == self) {
            Some(i) => 1 << i,
            None => 0,
        }
    }
}

/// A set of named button events (`sos`, `cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet(u8);

impl EventSet {
    pub fn of(events: &[ButtonEvent]) -> EventSet {
        EventSet(events.iter().fold(0, |m, e| m | e.bit()))
    }

    /// The defaults of `bthome.md`: press or long press raise an SOS.
    pub fn default_sos() -> EventSet {
        EventSet::of(&[ButtonEvent::Press, ButtonEvent::LongPress])
    }

    /// The default: a double press cancels.
    pub fn default_cancel() -> EventSet {
        EventSet::of(&[ButtonEvent::DoublePress])
    }

    pub fn contains(self, e: ButtonEvent) -> bool {
        self.0 & e.bit() != 0
    }

    pub fn intersects(self, other: EventSet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        ButtonEvent::NAMED
            .into_iter()
            .filter(move |e| self.contains(*e))
            .map(ButtonEvent::name)
    }
}

/// The button events of one frame, in button order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Buttons {
    events: [u8; MAX_BUTTONS],
    len: u8,
}

impl Buttons {
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = ButtonEvent> + '_ {
        self.events[..self.len()]
            .iter()
            .map(|b| ButtonEvent::from_byte(*b))
    }

    fn push(&mut self, b: u8) -> Result<(), Reject> {
        let slot = self
            .events
            .get_mut(usize::from(self.len))
            .ok_or(Reject::Malformed)?;
        *slot = b;
        self.len += 1;
        Ok(())
    }
}

impl fmt::Debug for Buttons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<ButtonEvent> for Buttons {
    /// Keeps the first `MAX_BUTTONS`.
    fn from_iter<T: IntoIterator<Item = ButtonEvent>>(iter: T) -> Self {
        let mut b = Buttons::default();
        for e in iter {
            if b.push(e.to_byte()).is_err() {
                break;
            }
        }
        b
    }
}

/// A decoded BTHome frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reading {
    /// The device's address: the advert's, or the one the frame carries (DI bit 1).
    pub mac: Mac,
    pub encrypted: bool,
    /// The device sends only when something happens (DI bit 2).
    pub trigger_based: bool,
    /// Encrypted frames only.
    pub counter: Option<u32>,
    pub packet_id: Option<u8>,
    pub battery_pct: Option<u8>,
    /// `0x02`, hundredths of a degree Celsius.
    pub temperature_centi: Option<i16>,
    /// `0x03`, hundredths of a percent.
    pub humidity_centi: Option<u16>,
    pub buttons: Buttons,
}

/// What an enrolled BTHome device means to bandgate (from `keys.toml`).
#[derive(Clone, PartialEq, Eq)]
pub struct BtHomeDevice {
    pub device_id: u32,
    pub key: DeviceKey,
    /// Button events that raise an SOS.
    pub sos: EventSet,
    /// Button events that cancel the device's open alert.
    pub cancel: EventSet,
    /// Not heard this long: `device_silent`; `None`: never reported silent.
    pub silent_after: Option<Duration>,
    /// Names this enrolment: when it differs from the one stored with the device's counter
    /// (the device was enrolled again, or its key changed), the stored counter is forgotten.
    pub enrolment: String,
}

impl fmt::Debug for BtHomeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtHomeDevice")
            .field("device_id", &self.device_id)
            .field("sos", &self.sos)
            .field("cancel", &self.cancel)
            .field("silent_after", &self.silent_after)
            .finish_non_exhaustive()
    }
}

impl BtHomeDevice {
    /// A device with the default events (`sos`, `cancel`), never reported silent, and no
    /// enrolment name: for tests, benches and fuzzing.
    pub fn new(device_id: u32, key: DeviceKey) -> BtHomeDevice {
        BtHomeDevice {
            device_id,
            key,
            sos: EventSet::default_sos(),
            cancel: EventSet::default_cancel(),
            silent_after: None,
            enrolment: String::new(),
        }
    }

    /// A key check value: the first 4 bytes of AES-128 of sixteen zero bytes, in hex. It
    /// names a key (so a changed key forgets the stored counter) without revealing it.
    pub fn key_check(key: &DeviceKey) -> String {
        use aes::cipher::BlockEncrypt;
        let cipher = Aes128Enc::new(GenericArray::from_slice(&key.0));
        let mut block = GenericArray::clone_from_slice(&[0u8; 16]);
        cipher.encrypt_block(&mut block);
        hex::encode(&block[..4])
    }
}

/// Enrolled BTHome devices by MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BtHomeDevices {
    by_mac: HashMap<Mac, BtHomeDevice>,
    /// MAC by device id (supervision asks per frame, bands included).
    by_id: HashMap<u32, Mac>,
}

impl BtHomeDevices {
    /// Enrols `device` at `mac`, replacing what that MAC had.
    pub fn insert(&mut self, mac: Mac, device: BtHomeDevice) {
        if let Some(old) = self.by_mac.get(&mac) {
            if self.by_id.get(&old.device_id) == Some(&mac) {
                self.by_id.remove(&old.device_id);
            }
        }
        self.by_id.insert(device.device_id, mac);
        self.by_mac.insert(mac, device);
    }

    pub fn get(&self, mac: &Mac) -> Option<&BtHomeDevice> {
        self.by_mac.get(mac)
    }

    pub fn by_device_id(&self, device_id: u32) -> Option<(&Mac, &BtHomeDevice)> {
        let mac = self.by_id.get(&device_id)?;
        self.by_mac.get_key_value(mac)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Mac, &BtHomeDevice)> {
        self.by_mac.iter()
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// The value length of object `id`, from the BTHome v2 object table; `None` for an id this
/// version does not know (the receiver stops there). `0x53` (text) and `0x54` (raw) carry
/// their own length byte: `Some(0)` here, read by the caller.
fn object_len(id: u8) -> Option<usize> {
    Some(match id {
        0x00
        | 0x01
        | 0x09
        | 0x0F..=0x11
        | 0x15..=0x2F
        | 0x3A
        | 0x46
        | 0x57..=0x59
        | 0x60
        | 0x64 => 1,
        0x02
        | 0x03
        | 0x06..=0x08
        | 0x0C..=0x0E
        | 0x12..=0x14
        | 0x3C
        | 0x3D
        | 0x3F..=0x41
        | 0x43..=0x45
        | 0x47..=0x4A
        | 0x51
        | 0x52
        | 0x56
        | 0x5A
        | 0x5D..=0x5F
        | 0x61
        | 0xF0 => 2,
        0x04 | 0x05 | 0x0A | 0x0B | 0x42 | 0x4B | 0xF2 => 3,
        0x3E | 0x4C..=0x50 | 0x55 | 0x5B | 0x5C | 0x62 | 0x63 | 0xF1 => 4,
        0x53 | 0x54 => 0,
        _ => return None,
    })
}

/// Reads the objects of a plaintext into `r`. Stops at the first unknown id and at an object
/// cut short (what came before it stands); refuses a battery over 100 % and more buttons than
/// `MAX_BUTTONS`.
fn objects(mut p: &[u8], r: &mut Reading) -> Result<(), Reject> {
    while let Some((&id, rest)) = p.split_first() {
        let Some(fixed) = object_len(id) else {
            return Ok(());
        };
        let (value, rest) = if fixed == 0 {
            let Some((&n, rest)) = rest.split_first() else {
                return Ok(());
            };
            match rest.split_at_checked(usize::from(n)) {
                Some(split) => split,
                None => return Ok(()),
            }
        } else {
            match rest.split_at_checked(fixed) {
                Some(split) => split,
                None => return Ok(()),
            }
        };
        match (id, value) {
            (0x00, [v]) => r.packet_id = Some(*v),
            (0x01, [v]) => {
                if *v > 100 {
                    return Err(Reject::Malformed);
                }
                r.battery_pct = Some(*v);
            }
            (0x02, [a, b]) => r.temperature_centi = Some(i16::from_le_bytes([*a, *b])),
            (0x03, [a, b]) => r.humidity_centi = Some(u16::from_le_bytes([*a, *b])),
            (0x3A, [v]) => r.buttons.push(*v)?,
            _ => {}
        }
        p = rest;
    }
    Ok(())
}

/// The device information byte's checks, and where the MAC and the rest start.
fn header(data: &[u8], advert_mac: &Mac) -> Result<(u8, Mac, usize), Reject> {
    if data.is_empty() || data.len() > MAX_LEN {
        return Err(Reject::Malformed);
    }
    let di = data[0];
    if di >> 5 != 2 {
        return Err(Reject::Version);
    }
    if di & DI_MAC_INCLUDED == 0 {
        return Ok((di, *advert_mac, 1));
    }
    let Some(m) = data.get(1..7) else {
        return Err(Reject::Malformed);
    };
    // Sent least significant byte first.
    let mac = [m[5], m[4], m[3], m[2], m[1], m[0]];
    Ok((di, mac, 7))
}

fn nonce(mac: &Mac, di: u8, counter: [u8; 4]) -> [u8; 13] {
    let mut n = [0u8; 13];
    n[..6].copy_from_slice(mac);
    n[6..8].copy_from_slice(&UUID16.to_le_bytes());
    n[8] = di;
    n[9..].copy_from_slice(&counter);
    n
}

fn empty(di: u8, mac: Mac) -> Reading {
    Reading {
        mac,
        encrypted: di & DI_ENCRYPTED != 0,
        trigger_based: di & DI_TRIGGER != 0,
        counter: None,
        packet_id: None,
        battery_pct: None,
        temperature_centi: None,
        humidity_centi: None,
        buttons: Buttons::default(),
    }
}

/// Decrypts and reads the encrypted part `sealed` (ciphertext ‖ counter ‖ MIC).
fn decrypt(di: u8, mac: Mac, sealed: &[u8], key: &DeviceKey) -> Result<Reading, Reject> {
    let Some(cipher_len) = sealed.len().checked_sub(TRAILER) else {
        return Err(Reject::Malformed);
    };
    let (ciphertext, trailer) = sealed.split_at(cipher_len);
    let counter = [trailer[0], trailer[1], trailer[2], trailer[3]];
    let mut buf = [0u8; MAX_LEN];
    let plain = &mut buf[..cipher_len];
    plain.copy_from_slice(ciphertext);
    Cipher::new(GenericArray::from_slice(&key.0))
        .decrypt_in_place_detached(
            GenericArray::from_slice(&nonce(&mac, di, counter)),
            &[],
            plain,
            GenericArray::from_slice(&trailer[4..]),
        )
        .map_err(|_| Reject::Auth)?;
    let mut r = empty(di, mac);
    r.counter = Some(u32::from_le_bytes(counter));
    objects(plain, &mut r)?;
    Ok(r)
}

/// Decodes `data` (the service data, from the device-information byte on) heard from
/// `advert_mac`, decrypting with `key` when it is encrypted. No enrolment rules: an encrypted
/// frame without a key is `unknown_device`. For `bandgate decode` and tests.
pub fn read(data: &[u8], advert_mac: &Mac, key: Option<&DeviceKey>) -> Result<Reading, Reject> {
    let (di, mac, start) = header(data, advert_mac)?;
    if di & DI_ENCRYPTED == 0 {
        let mut r = empty(di, mac);
        objects(&data[start..], &mut r)?;
        return Ok(r);
    }
    decrypt(di, mac, &data[start..], key.ok_or(Reject::UnknownDevice)?)
}

/// Checks a frame from `advert_mac` against the enrolled devices: the device must be enrolled
/// (`unknown_device`) and encrypt (`downgrade`), the MIC must verify (`auth`). The counter is
/// the caller's to check.
pub fn open<'d>(
    data: &[u8],
    advert_mac: &Mac,
    devices: &'d BtHomeDevices,
) -> Result<(&'d BtHomeDevice, Reading), Reject> {
    let (di, mac, start) = header(data, advert_mac)?;
    let device = devices.get(&mac).ok_or(Reject::UnknownDevice)?;
    if di & DI_ENCRYPTED == 0 {
        return Err(Reject::Downgrade);
    }
    let r = decrypt(di, mac, &data[start..], &device.key)?;
    Ok((device, r))
}

/// Makes encrypted service data (from the device-information byte on) as a BTHome device
/// would: `0x00` packet id, `0x01` battery, then one `0x3A` per button. `trigger_based` sets
/// DI bit 2. Does not check `battery_pct <= 100`, so tests can make frames to refuse.
pub fn seal(
    mac: &Mac,
    key: &DeviceKey,
    counter: u32,
    trigger_based: bool,
    packet_id: u8,
    battery_pct: Option<u8>,
    buttons: &[ButtonEvent],
) -> Vec<u8> {
    let mut objects = vec![0x00, packet_id];
    if let Some(b) = battery_pct {
        objects.extend_from_slice(&[0x01, b]);
    }
    for e in buttons {
        objects.extend_from_slice(&[0x3A, e.to_byte()]);
    }
    seal_objects(mac, key, counter, trigger_based, &objects)
}

/// Encrypts arbitrary object bytes (the specification's worked example, property tests).
pub fn seal_objects(
    mac: &Mac,
    key: &DeviceKey,
    counter: u32,
    trigger_based: bool,
    objects: &[u8],
) -> Vec<u8> {
    let di = 0x40 | DI_ENCRYPTED | if trigger_based { DI_TRIGGER } else { 0 };
    let c = counter.to_le_bytes();
    let mut out = Vec::with_capacity(1 + objects.len() + TRAILER);
    out.push(di);
    out.extend_from_slice(objects);
    let tag = Cipher::new(GenericArray::from_slice(&key.0))
        .encrypt_in_place_detached(
            GenericArray::from_slice(&nonce(mac, di, c)),
            &[],
            &mut out[1..],
        )
        .expect("CCM accepts payloads this short");
    out.extend_from_slice(&c);
    out.extend_from_slice(&tag);
    out
}

/// The same objects unencrypted (a device with encryption off), DI `0x40` or `0x44`.
pub fn plain(
    trigger_based: bool,
    packet_id: u8,
    battery_pct: Option<u8>,
    buttons: &[ButtonEvent],
) -> Vec<u8> {
    let mut out = vec![
        0x40 | if trigger_based { DI_TRIGGER } else { 0 },
        0x00,
        packet_id,
    ];
    if let Some(b) = battery_pct {
        out.extend_from_slice(&[0x01, b]);
    }
    for e in buttons {
        out.extend_from_slice(&[0x3A, e.to_byte()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_MAC: Mac = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];

    fn example_key() -> DeviceKey {
        DeviceKey::from_hex("231d39c1d7cc1ab1aee224cd096db932").unwrap()
    }

    fn devices() -> BtHomeDevices {
        let mut d = BtHomeDevices::default();
        d.insert(EXAMPLE_MAC, BtHomeDevice::new(9001, example_key()));
        d
    }

    #[test]
    fn the_specifications_plain_example_is_25_degrees_and_50_55_percent() {
        let data = hex::decode("4002c40903bf13").unwrap();
        let r = read(&data, &EXAMPLE_MAC, None).unwrap();
        assert!(!r.encrypted && !r.trigger_based);
        assert_eq!(r.temperature_centi, Some(2500));
        assert_eq!(r.humidity_centi, Some(5055));
        assert_eq!(r.counter, None);
        assert!(r.buttons.is_empty());
    }

    #[test]
    fn the_specifications_encrypted_example_opens_with_its_key_and_mac() {
        // Service data as BlueZ hands it: the UUID `d2fc` is not part of it.
        let data = hex::decode("41e445f3c9962b332211006c7c4519").unwrap();
        let d = devices();
        let (device, r) = open(&data, &EXAMPLE_MAC, &d).unwrap();
        assert_eq!(device.device_id, 9001);
        assert!(r.encrypted);
        assert_eq!(r.counter, Some(0x0011_2233));
        assert_eq!(r.temperature_centi, Some(2506));
        assert_eq!(r.humidity_centi, Some(5055));
        assert_eq!(
            nonce(&EXAMPLE_MAC, 0x41, [0x33, 0x22, 0x11, 0x00]).to_vec(),
            hex::decode("5448e68f80a5d2fc4133221100").unwrap()
        );
        // And `seal` makes exactly those bytes.
        let objects = hex::decode("02ca0903bf13").unwrap();
        assert_eq!(
            seal_objects(&EXAMPLE_MAC, &example_key(), 0x0011_2233, false, &objects),
            data
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let d = devices();
        let key = example_key();
        let press = seal(
            &EXAMPLE_MAC,
            &key,
            7,
            true,
            1,
            Some(90),
            &[ButtonEvent::Press],
        );
        assert!(open(&press, &EXAMPLE_MAC, &d).is_ok());
        let other = [1, 2, 3, 4, 5, 6];
        assert_eq!(open(&press, &other, &d).unwrap_err(), Reject::UnknownDevice);
        let clear = plain(true, 1, Some(90), &[ButtonEvent::Press]);
        assert_eq!(
            open(&clear, &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Downgrade
        );
        assert_eq!(open(&clear, &other, &d).unwrap_err(), Reject::UnknownDevice);
        let mut bad = press.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(open(&bad, &EXAMPLE_MAC, &d).unwrap_err(), Reject::Auth);
        assert_eq!(open(&[], &EXAMPLE_MAC, &d).unwrap_err(), Reject::Malformed);
        assert_eq!(
            open(&[0x41, 1, 2], &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Malformed
        );
        assert_eq!(
            open(&[0x21, 1, 2], &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Version
        );
        let long = vec![0x41; MAX_LEN + 1];
        assert_eq!(
            open(&long, &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Malformed
        );
        let flat = seal(&EXAMPLE_MAC, &key, 8, true, 1, Some(101), &[]);
        assert_eq!(
            open(&flat, &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Malformed
        );
        let many = seal(
            &EXAMPLE_MAC,
            &key,
            9,
            true,
            1,
            None,
            &[ButtonEvent::None; MAX_BUTTONS + 1],
        );
        assert_eq!(
            open(&many, &EXAMPLE_MAC, &d).unwrap_err(),
            Reject::Malformed
        );
    }

    #[test]
    fn buttons_in_order_and_objects_stop_at_the_first_unknown_id() {
        let key = example_key();
        let d = devices();
        let events = [
            ButtonEvent::None,
            ButtonEvent::DoublePress,
            ButtonEvent::from_byte(0xFE),
        ];
        let f = seal(&EXAMPLE_MAC, &key, 1, true, 3, Some(55), &events);
        let (_, r) = open(&f, &EXAMPLE_MAC, &d).unwrap();
        assert_eq!(r.packet_id, Some(3));
        assert_eq!(r.battery_pct, Some(55));
        assert!(r.trigger_based);
        let got: Vec<ButtonEvent> = r.buttons.iter().collect();
        assert_eq!(
            got,
            [
                ButtonEvent::None,
                ButtonEvent::DoublePress,
                ButtonEvent::HoldPress
            ]
        );
        // 0x02 temperature, 0x3A press, 0xEE unknown, then a press that must not be read.
        let objects = [0x02, 0x10, 0x00, 0x3A, 0x01, 0xEE, 0x3A, 0x04];
        let f = seal_objects(&EXAMPLE_MAC, &key, 2, false, &objects);
        let (_, r) = open(&f, &EXAMPLE_MAC, &d).unwrap();
        assert_eq!(r.buttons.iter().collect::<Vec<_>>(), [ButtonEvent::Press]);
        // Text (0x53) carries its own length; an object cut short ends the list.
        let objects = [0x53, 0x02, b'h', b'i', 0x3A, 0x04, 0x3C, 0x01];
        let f = seal_objects(&EXAMPLE_MAC, &key, 3, false, &objects);
        let (_, r) = open(&f, &EXAMPLE_MAC, &d).unwrap();
        assert_eq!(
            r.buttons.iter().collect::<Vec<_>>(),
            [ButtonEvent::LongPress]
        );
    }

    #[test]
    fn a_mac_carried_in_the_frame_is_the_one_that_counts() {
        let key = example_key();
        let mut sealed = seal(&EXAMPLE_MAC, &key, 5, false, 1, None, &[ButtonEvent::Press]);
        // DI bit 1, and the MAC least significant byte first after it; the nonce's DI changes
        // too, so seal again by hand.
        let di = 0x43;
        let objects = [0x00, 0x01, 0x3A, 0x01];
        let mut body = objects.to_vec();
        let c = 5u32.to_le_bytes();
        let tag = Cipher::new(GenericArray::from_slice(&key.0))
            .encrypt_in_place_detached(
                GenericArray::from_slice(&nonce(&EXAMPLE_MAC, di, c)),
                &[],
                &mut body,
            )
            .unwrap();
        sealed.clear();
        sealed.push(di);
        sealed.extend(EXAMPLE_MAC.iter().rev());
        sealed.extend_from_slice(&body);
        sealed.extend_from_slice(&c);
        sealed.extend_from_slice(&tag);
        let d = devices();
        let (device, r) = open(&sealed, &[9; 6], &d).unwrap();
        assert_eq!(device.device_id, 9001);
        assert_eq!(r.mac, EXAMPLE_MAC);
    }

    #[test]
    fn macs_and_event_names() {
        assert_eq!(parse_mac("54:48:e6:8F:80:A5"), Some(EXAMPLE_MAC));
        assert_eq!(parse_mac("54-48-E6-8F-80-A5"), Some(EXAMPLE_MAC));
        assert_eq!(format_mac(&EXAMPLE_MAC), "54:48:E6:8F:80:A5");
        for bad in [
            "54:48:E6:8F:80",
            "54:48:E6:8F:80:A5:00",
            "54:48:E6:8F:80:G5",
            "5448E68F80A5",
            "54:48:E6:8F:80:+5",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        for e in ButtonEvent::NAMED {
            assert_eq!(ButtonEvent::parse(e.name()), Some(e));
            assert_eq!(ButtonEvent::from_byte(e.to_byte()), e);
        }
        assert_eq!(ButtonEvent::parse("none"), None);
        let s = EventSet::default_sos();
        assert!(s.contains(ButtonEvent::Press) && s.contains(ButtonEvent::LongPress));
        assert!(!s.contains(ButtonEvent::None) && !s.contains(ButtonEvent::Other(9)));
        assert!(!s.intersects(EventSet::default_cancel()));
        assert_eq!(s.names().collect::<Vec<_>>(), ["press", "long_press"]);
        assert_eq!(BtHomeDevice::key_check(&example_key()).len(), 8);
    }
}
