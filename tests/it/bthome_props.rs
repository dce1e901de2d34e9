//! Property tests of the BTHome v2 decoder and intake (`shared/spec/bthome.md`): arbitrary
//! bytes never panic nor allocate, any tampered byte of an encrypted frame is refused, and no
//! frame is ever accepted twice.

use bandgate::engine::bthome::{self, BtHomeDevice, ButtonEvent, Mac};
use bandgate::engine::{DeviceKey, Intake, Keyring, Reject};
use proptest::prelude::*;

use crate::frame_props::allocations_during;

const MAC: Mac = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];

fn ring(key: [u8; 16]) -> Keyring {
    let mut k = Keyring::new();
    k.insert_bthome(MAC, BtHomeDevice::new(9001, DeviceKey(key)));
    k
}

fn any_event() -> impl Strategy<Value = ButtonEvent> {
    any::<u8>().prop_map(ButtonEvent::from_byte)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        encrypted in any::<bool>(),
    ) {
        // Half the inputs claim encryption and version 2, so the path reaches the MIC.
        let mut data = data;
        if encrypted && !data.is_empty() {
            data[0] = 0x41 | (data[0] & 0x06);
        }
        let keys = ring([9; 16]);
        let (got, allocs) = allocations_during(|| bthome::open(&data, &MAC, keys.bthome()).map(|(d, r)| (d.device_id, r)));
        prop_assert_eq!(allocs, 0);
        // Only a frame whose random 4-byte MIC verifies could pass: proptest will not find one.
        prop_assert!(got.is_err(), "{:?}", got);
        let (_, allocs) = allocations_during(|| bthome::read(&data, &MAC, Some(&DeviceKey([9; 16]))));
        prop_assert_eq!(allocs, 0);
    }

    #[test]
    fn seal_then_open_round_trips_without_allocating(
        key in any::<[u8; 16]>(),
        counter in any::<u32>(),
        trigger in any::<bool>(),
        packet_id in any::<u8>(),
        battery in proptest::option::of(0u8..=100),
        events in proptest::collection::vec(any_event(), 0..=bthome::MAX_BUTTONS),
    ) {
        let data = bthome::seal(&MAC, &DeviceKey(key), counter, trigger, packet_id, battery, &events);
        let keys = ring(key);
        let (got, allocs) = allocations_during(|| bthome::open(&data, &MAC, keys.bthome()).map(|(_, r)| r));
        prop_assert_eq!(allocs, 0);
        let r = got.unwrap();
        prop_assert_eq!(r.counter, Some(counter));
        prop_assert_eq!(r.trigger_based, trigger);
        prop_assert_eq!(r.packet_id, Some(packet_id));
        prop_assert_eq!(r.battery_pct, battery);
        let want: Vec<ButtonEvent> = events.iter().map(|e| ButtonEvent::from_byte(e.to_byte())).collect();
        prop_assert_eq!(r.buttons.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn tampering_any_byte_of_an_encrypted_frame_is_refused(
        key in any::<[u8; 16]>(),
        counter in any::<u32>(),
        events in proptest::collection::vec(any_event(), 0..=3),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let data = bthome::seal(&MAC, &DeviceKey(key), counter, true, 1, Some(50), &events);
        let mut bad = data.clone();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        let mut intake = Intake::new(0xFFFF, ring(key));
        let got = intake.accept_bthome(&MAC, &bad);
        // A changed DI byte may also turn the frame into a plain one (downgrade), another
        // version, or claim a MAC inside (malformed or unknown): never accepted.
        prop_assert!(got.is_err(), "byte {} ^ {:#04x} accepted: {:?}", i, flip, got);
        // And the untouched frame still opens: the refusal moved no counter.
        prop_assert!(intake.accept_bthome(&MAC, &data).is_ok());
    }

    #[test]
    fn no_frame_is_ever_accepted_twice(
        key in any::<[u8; 16]>(),
        counters in proptest::collection::vec(any::<u32>(), 1..40),
        repeat in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let frames: Vec<Vec<u8>> = counters
            .iter()
            .map(|c| bthome::seal(&MAC, &DeviceKey(key), *c, true, 1, None, &[ButtonEvent::Press]))
            .collect();
        // Every frame once, then repeats of any of them in any order.
        let order: Vec<usize> = (0..frames.len()).chain(repeat.iter().map(|i| i.index(frames.len()))).collect();
        let mut intake = Intake::new(0xFFFF, ring(key));
        let mut accepted: Vec<u32> = Vec::new();
        let mut last: Option<u32> = None;
        for i in order {
            match intake.accept_bthome(&MAC, &frames[i]) {
                Ok(f) => {
                    prop_assert!(!accepted.contains(&f.counter), "counter {} accepted twice", f.counter);
                    prop_assert!(last.is_none_or(|l| f.counter > l), "counter {} after {:?}", f.counter, last);
                    last = Some(f.counter);
                    accepted.push(f.counter);
                }
                Err(r) => prop_assert!(matches!(r, Reject::Duplicate | Reject::Stale), "{r}"),
            }
        }
        prop_assert_eq!(intake.accepted(), accepted.len() as u64);
    }
}
