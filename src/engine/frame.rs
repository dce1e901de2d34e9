//! Wristband frame v1 (`shared/spec/wire-format.md`): the only module that knows the bytes on air.
//!
//! `open` checks a frame in the spec's order (version, header, enrolment, tag, payload) and
//! `seal` makes one (for tests, the simulator, the benches and firmware authors). The
//! anti-replay step that follows lives in `replay.rs`; `Intake` in `mod.rs` chains the two.
//!
//! Nothing here allocates: frames are decrypted in a stack buffer whose size is fixed by BLE
//! itself (an AD structure cannot carry more than 254 bytes), and the wire types hold no
//! vectors or strings, so no length read off the air can make us allocate.

use std::fmt;

use aes::Aes128Enc;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U4};
use serde::{Deserialize, Serialize};

use super::bthome::{BtHomeDevice, BtHomeDevices, Mac};
use super::device_map::DeviceMap;

/// First byte of every v1 frame.
pub const VERSION: u8 = 0xB1;
/// CCM authentication tag length (M = 4).
pub const TAG_LEN: usize = 4;
/// Longest manufacturer data an advertisement can carry (an AD length byte counts at most
/// 255 bytes, one of which is the type and two the company id). Longer input cannot come
/// from a radio and is rejected as `malformed` without decrypting.
pub const MAX_FRAME_LEN: usize = 252;
/// Postcard's widest v1 payload (heartbeat with both vitals and a 5-byte steps varint).
pub const MAX_PAYLOAD_LEN: usize = 12;

// CCM only ever runs AES forwards (CBC-MAC and CTR), so the decryption key schedule would be
// dead weight: 176 bytes less per band keeps a large keyring in cache.
type Cipher = ccm::Ccm<Aes128Enc, U4, U13>;

/// Why a frame was not accepted. The order of the variants is the order of the wire
/// format's checks; `Downgrade` is BTHome's alone (`bthome::open` gives its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Reject {
    #[error("version")]
    Version,
    #[error("malformed")]
    Malformed,
    #[error("unknown_device")]
    UnknownDevice,
    #[error("auth")]
    Auth,
    #[error("duplicate")]
    Duplicate,
    #[error("stale")]
    Stale,
    /// An unencrypted BTHome frame from an enrolled device (`bthome.md`).
    #[error("downgrade")]
    Downgrade,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::Version,
        Reject::Malformed,
        Reject::UnknownDevice,
        Reject::Auth,
        Reject::Duplicate,
        Reject::Stale,
        Reject::Downgrade,
    ];

    /// The spec's name for the reason (`version`, `malformed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Version => "version",
            Reject::Malformed => "malformed",
            Reject::UnknownDevice => "unknown_device",
            Reject::Auth => "auth",
            Reject::Duplicate => "duplicate",
            Reject::Stale => "stale",
            Reject::Downgrade => "downgrade",
        }
    }
}

/// What a wristband reports, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BandEvent {
    Heartbeat {
        heart_rate: Option<u8>,
        spo2: Option<u8>,
        steps: u32,
    },
    Sos,
    Fall {
        impact_dg: u16,
    },
    Cancel {
        of_seq: u32,
    },
    NoMotion {
        minutes: u16,
    },
}

impl BandEvent {
    /// The spec's snake_case name of the event.
    pub fn name(&self) -> &'static str {
        match self {
            BandEvent::Heartbeat { .. } => "heartbeat",
            BandEvent::Sos => "sos",
            BandEvent::Fall { .. } => "fall",
            BandEvent::Cancel { .. } => "cancel",
            BandEvent::NoMotion { .. } => "no_motion",
        }
    }
}

/// An authenticated, decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    pub device_id: u32,
    pub seq: u32,
    pub battery_pct: u8,
    pub worn: bool,
    pub event: BandEvent,
}

// ---- wire types: postcard layout, in declaration order ----

#[derive(Serialize, Deserialize)]
struct WireHeader {
    device_id: u32,
    seq: u32,
}

#[derive(Serialize, Deserialize)]
struct WirePayload {
    battery_pct: u8,
    worn: bool,
    event: WireEvent,
}

#[derive(Serialize, Deserialize)]
enum WireEvent {
    Heartbeat {
        heart_rate: Option<u8>,
        spo2: Option<u8>,
        steps: u32,
    },
    Sos,
    Fall {
        impact_dg: u16,
    },
    Cancel {
        of_seq: u32,
    },
    NoMotion {
        minutes: u16,
    },
}

impl From<WireEvent> for BandEvent {
    fn from(e: WireEvent) -> Self {
        match e {
            WireEvent::Heartbeat {
                heart_rate,
                spo2,
                steps,
            } => BandEvent::Heartbeat {
                heart_rate,
                spo2,
                steps,
            },
            WireEvent::Sos => BandEvent::Sos,
            WireEvent::Fall { impact_dg } => BandEvent::Fall { impact_dg },
            WireEvent::Cancel { of_seq } => BandEvent::Cancel { of_seq },
            WireEvent::NoMotion { minutes } => BandEvent::NoMotion { minutes },
        }
    }
}

impl From<BandEvent> for WireEvent {
    fn from(e: BandEvent) -> Self {
        match e {
            BandEvent::Heartbeat {
                heart_rate,
                spo2,
                steps,
            } => WireEvent::Heartbeat {
                heart_rate,
                spo2,
                steps,
            },
            BandEvent::Sos => WireEvent::Sos,
            BandEvent::Fall { impact_dg } => WireEvent::Fall { impact_dg },
            BandEvent::Cancel { of_seq } => WireEvent::Cancel { of_seq },
            BandEvent::NoMotion { minutes } => WireEvent::NoMotion { minutes },
        }
    }
}

/// A wristband's 128-bit key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey(pub [u8; 16]);

impl DeviceKey {
    /// Parses the key file's form: exactly 32 hex characters.
    pub fn from_hex(s: &str) -> Option<DeviceKey> {
        let mut out = [0u8; 16];
        if s.len() != 32 {
            return None;
        }
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(DeviceKey(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for DeviceKey {
    // Keys never reach a log by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// The enrolled bands and their keys, and the enrolled BTHome devices (`bthome.md`).
///
/// Only the 16-byte keys are kept; each frame expands its key's AES schedule when it is
/// opened (tens of nanoseconds with AES-NI). Kept expanded, the schedules took ~730 bytes a
/// band: 11.5 MiB of the daemon's resident memory for 10,000 bands.
/// Cloning is cheap and shares the keys (the config, the intake and the lanes each hold it).
#[derive(Clone, Default)]
pub struct Keyring {
    keys: std::sync::Arc<DeviceMap<DeviceKey>>,
    bthome: std::sync::Arc<BtHomeDevices>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("devices", &self.keys.len())
            .field("bthome", &self.bthome.len())
            .finish()
    }
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    pub fn insert(&mut self, device_id: u32, key: DeviceKey) {
        std::sync::Arc::make_mut(&mut self.keys).insert(device_id, key);
    }

    /// Enrols a BTHome device by its MAC.
    pub fn insert_bthome(&mut self, mac: Mac, device: BtHomeDevice) {
        std::sync::Arc::make_mut(&mut self.bthome).insert(mac, device);
    }

    /// The enrolled BTHome devices.
    pub fn bthome(&self) -> &BtHomeDevices {
        &self.bthome
    }

    /// A band or a BTHome device has this device id.
    pub fn contains(&self, device_id: u32) -> bool {
        self.keys.contains_key(&device_id) || self.bthome.by_device_id(device_id).is_some()
    }

    /// A band (wire-format frames) has this device id.
    pub fn is_band(&self, device_id: u32) -> bool {
        self.keys.contains_key(&device_id)
    }

    /// Bands and BTHome devices enrolled.
    pub fn len(&self) -> usize {
        self.keys.len() + self.bthome.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.bthome.is_empty()
    }

    /// The bands' device ids.
    pub fn device_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Makes the on-air bytes of `frame` with the enrolled key of its band (for the
    /// simulator, which must go through the same keys as real bands).
    pub fn seal(&self, frame: &Frame, company_id: u16) -> Option<Vec<u8>> {
        Some(seal(frame, company_id, self.keys.get(&frame.device_id)?))
    }
}

impl FromIterator<(u32, DeviceKey)> for Keyring {
    fn from_iter<T: IntoIterator<Item = (u32, DeviceKey)>>(iter: T) -> Self {
        let mut k = Keyring::new();
        for (id, key) in iter {
            k.insert(id, key);
        }
        k
    }
}

fn nonce(device_id: u32, seq: u32, company_id: u16) -> [u8; 13] {
    let mut n = [0u8; 13];
    n[0..4].copy_from_slice(&device_id.to_le_bytes());
    n[4..8].copy_from_slice(&seq.to_le_bytes());
    n[8..10].copy_from_slice(&company_id.to_le_bytes());
    n[10] = VERSION;
    n
}

/// Reads the cleartext header only (steps 1 and 2): for logs and the installer's scan table,
/// which want to name the band even when its frame is then rejected.
pub fn peek_header(data: &[u8]) -> Result<(u32, u32), Reject> {
    let (header, _) = split_header(data)?;
    Ok((header.device_id, header.seq))
}

fn split_header(data: &[u8]) -> Result<(WireHeader, usize), Reject> {
    match data.first() {
        None => return Err(Reject::Malformed),
        Some(&VERSION) => {}
        Some(_) => return Err(Reject::Version),
    }
    let (header, rest) =
        postcard::take_from_bytes::<WireHeader>(&data[1..]).map_err(|_| Reject::Malformed)?;
    Ok((header, data.len() - rest.len()))
}

/// Checks steps 1 to 5 of the spec and returns the frame. The anti-replay window (step 6)
/// is the caller's, because it is state.
pub fn open(data: &[u8], company_id: u16, keys: &Keyring) -> Result<Frame, Reject> {
    let (header, header_end) = split_header(data)?;
    let key = keys
        .keys
        .get(&header.device_id)
        .ok_or(Reject::UnknownDevice)?;
    let sealed = &data[header_end..];
    if sealed.len() < TAG_LEN {
        return Err(Reject::Auth);
    }
    if data.len() > MAX_FRAME_LEN {
        return Err(Reject::Malformed);
    }
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let mut buf = [0u8; MAX_FRAME_LEN];
    let plain = &mut buf[..ciphertext.len()];
    plain.copy_from_slice(ciphertext);
    let nonce = nonce(header.device_id, header.seq, company_id);
    Cipher::new(GenericArray::from_slice(&key.0))
        .decrypt_in_place_detached(
            GenericArray::from_slice(&nonce),
            &data[..header_end],
            plain,
            GenericArray::from_slice(tag),
        )
        .map_err(|_| Reject::Auth)?;
    let (payload, rest) =
        postcard::take_from_bytes::<WirePayload>(plain).map_err(|_| Reject::Malformed)?;
    if !rest.is_empty() || payload.battery_pct > 100 {
        return Err(Reject::Malformed);
    }
    Ok(Frame {
        device_id: header.device_id,
        seq: header.seq,
        battery_pct: payload.battery_pct,
        worn: payload.worn,
        event: payload.event.into(),
    })
}

/// Makes the on-air bytes of a frame, as a wristband would. It does not check
/// `battery_pct <= 100`, so tests can make frames the gateway must refuse.
pub fn seal(frame: &Frame, company_id: u16, key: &DeviceKey) -> Vec<u8> {
    seal_with(
        frame,
        company_id,
        &Cipher::new(GenericArray::from_slice(&key.0)),
    )
}

fn seal_with(frame: &Frame, company_id: u16, cipher: &Cipher) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(VERSION);
    let header = WireHeader {
        device_id: frame.device_id,
        seq: frame.seq,
    };
    let mut hbuf = [0u8; 10];
    out.extend_from_slice(postcard::to_slice(&header, &mut hbuf).expect("header fits 10 bytes"));
    let header_end = out.len();
    let payload = WirePayload {
        battery_pct: frame.battery_pct,
        worn: frame.worn,
        event: frame.event.into(),
    };
    let mut pbuf = [0u8; MAX_PAYLOAD_LEN];
    out.extend_from_slice(
        postcard::to_slice(&payload, &mut pbuf).expect("payload fits MAX_PAYLOAD_LEN"),
    );
    let nonce = nonce(frame.device_id, frame.seq, company_id);
    let (aad, plain) = out.split_at_mut(header_end);
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), aad, plain)
        .expect("CCM accepts payloads this short");
    out.extend_from_slice(&tag);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_frame_is_27_bytes_as_the_spec_says() {
        let key = DeviceKey([7; 16]);
        let frame = Frame {
            device_id: u32::MAX,
            seq: u32::MAX,
            battery_pct: 100,
            worn: true,
            event: BandEvent::Heartbeat {
                heart_rate: Some(255),
                spo2: Some(255),
                steps: u32::MAX,
            },
        };
        assert_eq!(seal(&frame, 0xFFFF, &key).len(), 27);
    }

    #[test]
    fn oversized_input_is_malformed_not_decrypted() {
        let keys: Keyring = [(17, DeviceKey([1; 16]))].into_iter().collect();
        let mut data = vec![VERSION, 17, 1];
        data.resize(MAX_FRAME_LEN + 1, 0);
        assert_eq!(open(&data, 0xFFFF, &keys), Err(Reject::Malformed));
    }
}
