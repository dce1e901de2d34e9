//! Property tests of the wire format: round trips over the full value ranges, arbitrary bytes,
//! single bit flips, and allocation on the decode path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bandgate::engine::{frame, BandEvent, DeviceKey, Frame, Keyring, Reject};
use proptest::prelude::*;

/// Counts allocations made by the current thread, so a test can prove a call allocates nothing.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

pub(crate) fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(|n| n.get());
    let out = f();
    (out, ALLOCATIONS.with(|n| n.get()) - before)
}

fn any_event() -> impl Strategy<Value = BandEvent> {
    prop_oneof![
        (any::<Option<u8>>(), any::<Option<u8>>(), any::<u32>()).prop_map(
            |(heart_rate, spo2, steps)| BandEvent::Heartbeat {
                heart_rate,
                spo2,
                steps
            }
        ),
        Just(BandEvent::Sos),
        any::<u16>().prop_map(|impact_dg| BandEvent::Fall { impact_dg }),
        any::<u32>().prop_map(|of_seq| BandEvent::Cancel { of_seq }),
        any::<u16>().prop_map(|minutes| BandEvent::NoMotion { minutes }),
    ]
}

fn any_frame() -> impl Strategy<Value = Frame> {
    (
        any::<u32>(),
        any::<u32>(),
        0u8..=100,
        any::<bool>(),
        any_event(),
    )
        .prop_map(|(device_id, seq, battery_pct, worn, event)| Frame {
            device_id,
            seq,
            battery_pct,
            worn,
            event,
        })
}

fn ring(device_id: u32, key: [u8; 16]) -> Keyring {
    [(device_id, DeviceKey(key))].into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn seal_then_open_round_trips(f in any_frame(), key in any::<[u8; 16]>(), company in any::<u16>()) {
        let data = frame::seal(&f, company, &DeviceKey(key));
        prop_assert!(data.len() <= 27, "{} bytes", data.len());
        let keys = ring(f.device_id, key);
        let (got, allocs) = allocations_during(|| frame::open(&data, company, &keys));
        prop_assert_eq!(got, Ok(f));
        prop_assert_eq!(allocs, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate(data in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u32>()) {
        // Enrol whatever device the bytes name, so the path reaches decryption too.
        let named = frame::peek_header(&data).map(|(d, _)| d).unwrap_or(id);
        let keys = ring(named, [9; 16]);
        let (got, allocs) = allocations_during(|| frame::open(&data, 0xFFFF, &keys));
        prop_assert!(got.is_err() || data.len() <= 27);
        prop_assert_eq!(allocs, 0);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_are_rejected(device in any::<u32>(), seq in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut data = frame::seal(&Frame { device_id: device, seq, battery_pct: 1, worn: true, event: BandEvent::Sos }, 0xFFFF, &DeviceKey([3; 16]));
        let header_len = data.len() - 4 - 3;
        data.truncate(header_len);
        data.extend_from_slice(&tail);
        let got = frame::open(&data, 0xFFFF, &ring(device, [3; 16]));
        // A random 4-byte tag verifies once in 2^32 tries: proptest will not find one.
        prop_assert_eq!(got, Err(Reject::Auth));
    }

    #[test]
    fn any_single_bit_flip_is_rejected(f in any_frame(), key in any::<[u8; 16]>(), bit in any::<prop::sample::Index>()) {
        let mut data = frame::seal(&f, 0xFFFF, &DeviceKey(key));
        let bit = bit.index(data.len() * 8);
        data[bit / 8] ^= 1 << (bit % 8);
        let got = frame::open(&data, 0xFFFF, &ring(f.device_id, key));
        prop_assert!(got.is_err(), "bit {} flipped and still accepted: {:?}", bit, got);
    }

    #[test]
    fn a_frame_for_another_company_id_fails_auth(f in any_frame(), key in any::<[u8; 16]>(), a in any::<u16>(), b in any::<u16>()) {
        prop_assume!(a != b);
        let data = frame::seal(&f, a, &DeviceKey(key));
        prop_assert_eq!(frame::open(&data, b, &ring(f.device_id, key)), Err(Reject::Auth));
    }
}

#[test]
fn battery_over_100_is_malformed_even_when_authentic() {
    let key = DeviceKey([5; 16]);
    for battery_pct in [101u8, 200, 255] {
        let f = Frame {
            device_id: 9,
            seq: 1,
            battery_pct,
            worn: true,
            event: BandEvent::Sos,
        };
        let data = frame::seal(&f, 0xFFFF, &key);
        assert_eq!(
            frame::open(&data, 0xFFFF, &ring(9, key.0)),
            Err(Reject::Malformed)
        );
    }
}
