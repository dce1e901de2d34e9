//! Throughput of the intake path (decode, authenticate, replay window) through
//! `Intake::accept`, on the two streams a gateway sees: fresh heartbeats from many bands,
//! and the repeats a band sends of each frame (duplicates, refused by the window); and the
//! same two for BTHome devices through `Intake::accept_bthome` (fresh encrypted beacons from
//! 1,000 Shelly-style buttons, and one press heard over and over).

use std::hint::black_box;

use bandgate::engine::bthome::{self, BtHomeDevice, ButtonEvent, Mac};
use bandgate::engine::{frame, BandEvent, DeviceKey, Frame, Intake, Keyring};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const COMPANY_ID: u16 = 0xFFFF;
const BANDS: u32 = 10_000;
const FRAMES: usize = 100_000;
const BUTTONS: u32 = 1_000;

fn mac_of(i: u32) -> Mac {
    let b = i.to_be_bytes();
    [0x38, 0x39, b[0], b[1], b[2], b[3]]
}

/// The bands, and `BUTTONS` BTHome devices (ids from 900,000).
fn keyring_with_buttons() -> Keyring {
    let mut k = keyring();
    for i in 0..BUTTONS {
        k.insert_bthome(
            mac_of(i),
            BtHomeDevice::new(900_000 + i, key_of(900_000 + i)),
        );
    }
    k
}

/// Beacons round-robin over the buttons (packet id, battery, button "none"), each device's
/// counter increasing: every frame is new. (MAC, service data.)
fn beacon_stream() -> Vec<(Mac, Vec<u8>)> {
    (0..FRAMES)
        .map(|n| {
            let i = (n as u32) % BUTTONS;
            let counter = 500 + (n as u32) / BUTTONS;
            let data = bthome::seal(
                &mac_of(i),
                &key_of(900_000 + i),
                counter,
                true,
                counter as u8,
                Some(90),
                &[ButtonEvent::None],
            );
            (mac_of(i), data)
        })
        .collect()
}

fn key_of(device_id: u32) -> DeviceKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&device_id.to_le_bytes());
    k[4..8].copy_from_slice(&device_id.wrapping_mul(0x9E37_79B9).to_le_bytes());
    DeviceKey(k)
}

fn keyring() -> Keyring {
    // Device ids spread like real enrolments (not 0..N), so hashing sees realistic keys.
    (0..BANDS)
        .map(|i| (1000 + i * 7, key_of(1000 + i * 7)))
        .collect()
}

/// Heartbeats round-robin over all bands, each band's seq increasing: every frame is new.
fn heartbeat_stream() -> Vec<Vec<u8>> {
    (0..FRAMES)
        .map(|n| {
            let band = (n as u32) % BANDS;
            let device_id = 1000 + band * 7;
            let frame = Frame {
                device_id,
                seq: 500 + (n as u32) / BANDS,
                battery_pct: 87,
                worn: true,
                event: BandEvent::Heartbeat {
                    heart_rate: Some(72),
                    spo2: Some(97),
                    steps: 4_000 + n as u32,
                },
            };
            frame::seal(&frame, COMPANY_ID, &key_of(device_id))
        })
        .collect()
}

fn bench_intake(c: &mut Criterion) {
    let keys = keyring();
    let stream = heartbeat_stream();

    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.sample_size(20);

    // A fresh Intake per batch (setup, not timed) so every frame is accepted.
    group.bench_function("fresh_heartbeats_10k_bands", |b| {
        b.iter_batched_ref(
            || Intake::new(COMPANY_ID, keys.clone()),
            |intake| {
                for data in &stream {
                    black_box(
                        intake
                            .accept(black_box(data))
                            .expect("fresh frame accepted"),
                    );
                }
            },
            BatchSize::LargeInput,
        )
    });

    // One frame heard over and over, as during an SOS burst: all but the first are duplicates.
    let sos = frame::seal(
        &Frame {
            device_id: 1000,
            seq: 42,
            battery_pct: 80,
            worn: true,
            event: BandEvent::Sos,
        },
        COMPANY_ID,
        &key_of(1000),
    );
    let mut intake = Intake::new(COMPANY_ID, keys.clone());
    intake.accept(&sos).expect("first copy accepted");
    group.bench_function("repeated_sos_duplicates", |b| {
        b.iter(|| {
            for _ in 0..FRAMES {
                black_box(intake.accept(black_box(&sos)).unwrap_err());
            }
        })
    });

    let keys = keyring_with_buttons();
    let beacons = beacon_stream();
    group.bench_function("bthome_fresh_beacons_1k_devices", |b| {
        b.iter_batched_ref(
            || Intake::new(COMPANY_ID, keys.clone()),
            |intake| {
                for (mac, data) in &beacons {
                    black_box(
                        intake
                            .accept_bthome(mac, black_box(data))
                            .expect("fresh frame accepted"),
                    );
                }
            },
            BatchSize::LargeInput,
        )
    });

    // One press heard over and over (a button repeats each frame; several gateways): all but
    // the first are duplicates.
    let press = bthome::seal(
        &mac_of(7),
        &key_of(900_007),
        42,
        true,
        1,
        Some(90),
        &[ButtonEvent::Press],
    );
    let mut intake = Intake::new(COMPANY_ID, keys.clone());
    intake
        .accept_bthome(&mac_of(7), &press)
        .expect("first copy accepted");
    group.bench_function("bthome_repeated_press_duplicates", |b| {
        b.iter(|| {
            for _ in 0..FRAMES {
                black_box(
                    intake
                        .accept_bthome(&mac_of(7), black_box(&press))
                        .unwrap_err(),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_intake);
criterion_main!(benches);
