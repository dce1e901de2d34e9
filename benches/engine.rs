//! Engine throughput: 10,000 enrolled bands sending heartbeats while 100 alerts are open (and
//! while 5,000 are: alert lookups by band and by deadline are indexed, so the cost per frame
//! must not grow with them), and the engine's memory per band (counted by a wrapping
//! allocator, printed once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bandgate::engine::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

const BANDS: u32 = 10_000;
const OPEN_ALERTS: u32 = 100;

fn key(id: u32) -> DeviceKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&id.to_le_bytes());
    DeviceKey(k)
}

fn setup() -> Setup {
    let staff: BTreeMap<String, Staff> = (0..20)
        .map(|i| {
            let id = format!("s{i}");
            (
                id.clone(),
                Staff {
                    id,
                    name: format!("Staff {i}"),
                    phone: String::new(),
                },
            )
        })
        .collect();
    let residents = (1..=BANDS)
        .map(|d| {
            (
                d,
                Resident {
                    id: format!("r{d}"),
                    name: format!("Resident {d}"),
                    address: "Building 1".into(),
                    phone: String::new(),
                    notes: String::new(),
                    device_id: d,
                    team: vec![format!("s{}", d % 20), format!("s{}", (d + 1) % 20)],
                },
            )
        })
        .collect();
    Setup {
        gateway_id: "bench".into(),
        locale: Locale::En,
        staff,
        residents,
        rota: Rota {
            tz: TimeZone::get("Asia/Shanghai").unwrap(),
            shifts: vec![Shift {
                days: vec![
                    Weekday::Monday,
                    Weekday::Tuesday,
                    Weekday::Wednesday,
                    Weekday::Thursday,
                    Weekday::Friday,
                    Weekday::Saturday,
                    Weekday::Sunday,
                ],
                from: Time::constant(0, 0, 0, 0),
                to: Time::constant(0, 0, 0, 0),
                staff: vec!["s0".into()],
            }],
        },
        escalation: Escalation {
            ack_timeouts: vec![Duration::from_secs(60), Duration::from_secs(60)],
            renotify_every: Duration::from_secs(20),
            repeat_every: Duration::from_secs(60),
            claim_timeout: Duration::from_secs(900),
            wearer_cancel: WearerCancel::Verify,
            cancel_verify_timeout: Duration::from_secs(300),
            supervisors: vec!["s19".into()],
        },
        supervision: Supervision {
            silent_after: Duration::from_secs(1800),
            low_battery_pct: 20,
        },
        resolved_retention: Duration::from_secs(600),
        device_state_interval: Duration::from_secs(60),
        fallback: None,
    }
}

fn keyring() -> Keyring {
    (1..=BANDS).map(|d| (d, key(d))).collect()
}

/// Heartbeat frames: `rounds` per band, seqs increasing, interleaved across bands.
fn heartbeats(rounds: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity((BANDS * rounds) as usize);
    for r in 0..rounds {
        for d in 1..=BANDS {
            let f = Frame {
                device_id: d,
                seq: 1000 + r,
                battery_pct: 80,
                worn: true,
                event: BandEvent::Heartbeat {
                    heart_rate: Some(70),
                    spo2: Some(97),
                    steps: r * 10,
                },
            };
            out.push(frame::seal(&f, 0xFFFF, &key(d)));
        }
    }
    out
}

fn engine_with_open_alerts(now: Instant, wall: Timestamp) -> Engine {
    engine_with(OPEN_ALERTS, now, wall)
}

fn engine_with(open: u32, now: Instant, wall: Timestamp) -> Engine {
    let mut e = Engine::new(setup(), Intake::new(0xFFFF, keyring()), now);
    for d in 1..=open {
        let f = Frame {
            device_id: d,
            seq: 1,
            battery_pct: 80,
            worn: true,
            event: BandEvent::Sos,
        };
        e.handle_frame(
            Now { mono: now, wall },
            &frame::seal(&f, 0xFFFF, &key(d)),
            Some(-60),
        );
    }
    while e.poll_output().is_some() {}
    e.take_changes(Now { mono: now, wall });
    e.take_telemetry(usize::MAX);
    e
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let wall = Timestamp::now();
    let before = LIVE.load(Ordering::Relaxed);
    let mut e = engine_with_open_alerts(t0, wall);
    for f in heartbeats(1) {
        e.handle_frame(Now { mono: t0, wall }, &f, Some(-60));
    }
    while e.poll_output().is_some() {}
    e.take_changes(Now { mono: t0, wall });
    e.take_telemetry(usize::MAX);
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "engine state: {} bytes for {BANDS} bands and {OPEN_ALERTS} open alerts = {} bytes per band (config included)",
        after - before,
        (after - before) / BANDS as isize
    );
    drop(e);

    let frames = heartbeats(20);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.sample_size(10);
    group.bench_function("heartbeats_10k_bands_100_open_alerts", |b| {
        b.iter_batched(
            || engine_with_open_alerts(t0, wall),
            |e| run(e, &frames, t0, wall),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("heartbeats_10k_bands_5000_open_alerts", |b| {
        b.iter_batched(
            || engine_with(5_000, t0, wall),
            |e| run(e, &frames, t0, wall),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn run(mut e: Engine, frames: &[Vec<u8>], t0: Instant, wall: Timestamp) -> Engine {
    let mut now = t0;
    for (i, f) in frames.iter().enumerate() {
        if i % 1000 == 0 {
            now += Duration::from_millis(100);
            if e.poll_timeout().is_some_and(|d| d <= now) {
                e.handle_timeout(Now { mono: now, wall });
            }
        }
        e.handle_frame(Now { mono: now, wall }, f, Some(-60));
        while e.poll_output().is_some() {}
    }
    e.take_changes(Now { mono: now, wall });
    e.take_telemetry(usize::MAX);
    e
}

criterion_group!(benches, bench);
criterion_main!(benches);
