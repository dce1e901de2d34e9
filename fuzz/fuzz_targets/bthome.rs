//! Fuzz target for the BTHome v2 decoder and its intake (`engine::bthome`, `Intake::accept_bthome`).
//!
//! The first input byte picks a mode:
//! - even: the rest is one service-data frame as heard from MAC `M`, a device enrolled with a
//!   fixed key (and, should the frame carry a MAC of its own, that one too), so a frame
//!   claiming encryption reaches the MIC check (and is refused there unless the fuzzer
//!   guessed it).
//! - odd: the rest is a sequence of `[len][counter (4, LE)][trigger flag][objects…]` chunks.
//!   The target encrypts each as the device would, so the object reader sees arbitrary
//!   authentic plaintexts and the counter check arbitrary authentic counters.
//!
//! Besides "no panic", it checks: `Intake` agrees with `open`; an accepted frame is accepted
//! once only (a repeat is a `duplicate`); accepted counters strictly increase.

#![no_main]

use bandgate::engine::bthome::{self, BtHomeDevice, Mac};
use bandgate::engine::frame::Reject;
use bandgate::engine::{DeviceKey, Intake, Keyring};
use libfuzzer_sys::fuzz_target;

const M: Mac = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
const KEY: DeviceKey = DeviceKey([0x5A; 16]);

fn enrol(keys: &mut Keyring, mac: Mac, device_id: u32) {
    keys.insert_bthome(
        mac,
        BtHomeDevice::new(device_id, KEY),
    );
}

fn check_one(data: &[u8]) {
    let mut keys = Keyring::new();
    enrol(&mut keys, M, 1);
    if data.first().is_some_and(|di| di & 0x02 != 0) && data.len() >= 7 {
        let m = &data[1..7];
        enrol(&mut keys, [m[5], m[4], m[3], m[2], m[1], m[0]], 2);
    }
    let opened = bthome::open(data, &M, keys.bthome()).map(|(d, r)| (d.device_id, r));
    if let Ok((_, r)) = opened {
        assert!(r.battery_pct.is_none_or(|b| b <= 100));
        assert!(r.encrypted);
    }
    let _ = bthome::read(data, &M, Some(&KEY));
    let mut intake = Intake::new(0xFFFF, keys.clone());
    let accepted = intake.accept_bthome(&M, data).map(|f| (f.device_id, f.reading));
    assert_eq!(accepted, opened);
    match opened {
        Ok(_) => assert_eq!(intake.accept_bthome(&M, data).map(|_| ()), Err(Reject::Duplicate)),
        Err(r) => assert_eq!(intake.accept_bthome(&M, data).map(|_| ()), Err(r)),
    }
}

fn check_sequence(mut data: &[u8]) {
    let mut keys = Keyring::new();
    enrol(&mut keys, M, 1);
    let mut intake = Intake::new(0xFFFF, keys.clone());
    let mut last: Option<u32> = None;
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        data = tail;
        if chunk.len() < 5 {
            continue;
        }
        let counter = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let sealed = bthome::seal_objects(&M, &KEY, counter, chunk[4] & 1 == 1, &chunk[5..]);
        let opened = bthome::open(&sealed, &M, keys.bthome()).map(|(_, r)| r);
        match intake.accept_bthome(&M, &sealed) {
            Ok(f) => {
                assert_eq!(opened, Ok(f.reading));
                assert_eq!(f.counter, counter);
                assert!(last.is_none_or(|l| counter > l), "counter {counter} after {last:?}");
                last = Some(counter);
            }
            Err(Reject::Duplicate) => assert_eq!(last, Some(counter)),
            Err(Reject::Stale) => assert!(last.is_some_and(|l| counter < l)),
            Err(r) => assert_eq!(opened.map(|_| ()), Err(r)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_one(rest);
    } else {
        check_sequence(rest);
    }
});
