//! Fuzz target for the frame decoder and the intake (decode, authenticate, replay window).
//!
//! The first input byte picks a mode:
//! - even: the rest is one frame, exactly as heard on air. The keyring enrols whatever device
//!   id the header names, so a frame with a good header reaches decryption (and is refused
//!   there unless the fuzzer guessed the tag).
//! - odd: the rest is a sequence of `[len][header ‖ plaintext]` chunks. The target encrypts
//!   each plaintext with the band's key as a wristband would, so the payload decoder sees
//!   arbitrary authentic bytes and the replay window sees arbitrary authentic seqs.
//!
//! Besides "no panic", it checks: whatever `open` accepts round-trips through `seal`; `Intake`
//! agrees with `open`; a window never accepts the same (device, seq) twice.

#![no_main]

use std::collections::HashSet;

use aes::Aes128;
use bandgate::engine::frame::{self, Reject};
use bandgate::engine::{DeviceKey, Intake, Keyring};
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U4};
use libfuzzer_sys::fuzz_target;

const COMPANY_ID: u16 = 0xFFFF;
const KEY: DeviceKey = DeviceKey([0x5A; 16]);

fn keyring_naming(data: &[u8]) -> Keyring {
    let mut keys = Keyring::new();
    if let Ok((device_id, _)) = frame::peek_header(data) {
        keys.insert(device_id, KEY);
    }
    keys
}

/// Length of `0xB1 ‖ varint ‖ varint`, valid whenever `peek_header` accepted the bytes.
fn header_len(data: &[u8]) -> usize {
    let mut at = 1;
    for _ in 0..2 {
        while data[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
    }
    at
}

/// Encrypts the bytes after the header in place of a wristband, appending the tag.
fn seal_raw(header_and_plain: &[u8]) -> Option<Vec<u8>> {
    let (device_id, seq) = frame::peek_header(header_and_plain).ok()?;
    let end = header_len(header_and_plain);
    let mut nonce = [0u8; 13];
    nonce[0..4].copy_from_slice(&device_id.to_le_bytes());
    nonce[4..8].copy_from_slice(&seq.to_le_bytes());
    nonce[8..10].copy_from_slice(&COMPANY_ID.to_le_bytes());
    nonce[10] = frame::VERSION;
    let mut out = header_and_plain.to_vec();
    let (aad, plain) = out.split_at_mut(end);
    let cipher = ccm::Ccm::<Aes128, U4, U13>::new(GenericArray::from_slice(&KEY.0));
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), aad, plain)
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

fn check_one(data: &[u8]) {
    let keys = keyring_naming(data);
    let opened = frame::open(data, COMPANY_ID, &keys);
    if let Ok(f) = opened {
        assert!(f.battery_pct <= 100);
        let again = frame::seal(&f, COMPANY_ID, &KEY);
        assert_eq!(frame::open(&again, COMPANY_ID, &keys), Ok(f));
    }
    let mut intake = Intake::new(COMPANY_ID, keys);
    assert_eq!(intake.accept(data), opened);
    match opened {
        Ok(_) => assert_eq!(intake.accept(data), Err(Reject::Duplicate)),
        Err(r) => assert_eq!(intake.accept(data), Err(r)),
    }
}

fn check_sequence(mut data: &[u8]) {
    let mut frames = Vec::new();
    let mut keys = Keyring::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        data = tail;
        if let Some(sealed) = seal_raw(chunk) {
            let (device_id, _) = frame::peek_header(&sealed).expect("sealed from a good header");
            keys.insert(device_id, KEY);
            frames.push(sealed);
        } else {
            frames.push(chunk.to_vec());
        }
    }
    let mut intake = Intake::new(COMPANY_ID, keys.clone());
    let mut seen = HashSet::new();
    for f in &frames {
        let opened = frame::open(f, COMPANY_ID, &keys);
        match intake.accept(f) {
            Ok(accepted) => {
                assert_eq!(opened, Ok(accepted));
                assert!(
                    seen.insert((accepted.device_id, accepted.seq)),
                    "window accepted {}/{} twice",
                    accepted.device_id,
                    accepted.seq
                );
            }
            Err(Reject::Duplicate | Reject::Stale) => assert!(opened.is_ok()),
            Err(r) => assert_eq!(opened, Err(r)),
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
