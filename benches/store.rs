//! What durability costs on this disk: a store commit of one alert transition with its three
//! outbox messages at `synchronous=FULL`, a PUBACK's `mark_sent`, and the raw write+fsync of a
//! small file in the same directory for comparison.
//!
//! Runs in a directory under `target/` (same disk as the checkout); set `BANDGATE_BENCH_DIR`
//! to measure another disk, e.g. the SD card the gateway will run from.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bandgate::adapters::store::{OutboxMessage, Store};
use bandgate::engine::snapshot::{AlertRecord, Changes};
use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;

fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("BANDGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    tempfile::tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("making a directory in {}: {e}", parent.display()))
}

fn alert(tier: u8) -> AlertRecord {
    let t = Timestamp::from_second(1_700_000_000).unwrap();
    AlertRecord {
        tier,
        notified: vec!["anna".into(), "ben".into()],
        paged: vec!["anna".into(), "ben".into(), "carla".into()],
        delivered_to: vec!["anna".into()],
        seqs: vec![42, 43],
        ..AlertRecord::sos("sos-17-000042", 17, 42, t)
    }
}

/// An escalation: the alert moves a tier and three phones are paged.
fn transition(tier: u8) -> (Changes, Vec<OutboxMessage>) {
    let changes = Changes {
        alerts: vec![alert(tier)],
        ..Changes::default()
    };
    let payload = serde_json::to_vec(&alert(tier)).unwrap();
    let outbox = ["anna", "ben", "carla"]
        .iter()
        .map(|who| OutboxMessage {
            topic: format!("bandgate/staff/{who}/page"),
            payload: payload.clone(),
            qos: 1,
            retain: false,
        })
        .collect();
    (changes, outbox)
}

fn store(c: &mut Criterion) {
    let dir = bench_dir();
    let mut store = Store::open(dir.path()).unwrap();
    let mut tier = 0u8;
    // The outbox is emptied outside the timed part, as PUBACKs would, so it stays small.
    c.bench_function("store/commit_alert_and_3_messages_full", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                tier = tier.wrapping_add(1);
                let (changes, outbox) = transition(tier);
                let started = Instant::now();
                let ids = store.commit(&changes, &outbox).unwrap();
                spent += started.elapsed();
                store.mark_sent(black_box(&ids)).unwrap();
            }
            spent
        })
    });
    c.bench_function("store/mark_sent_3_normal", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                tier = tier.wrapping_add(1);
                let (changes, outbox) = transition(tier);
                let ids = store.commit(&changes, &outbox).unwrap();
                let started = Instant::now();
                store.mark_sent(black_box(&ids)).unwrap();
                spent += started.elapsed();
            }
            spent
        })
    });
}

fn raw_fsync(c: &mut Criterion) {
    let dir = bench_dir();
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("probe"))
        .unwrap();
    let block = [0x5au8; 256];
    file.write_all_at(&block, 0).unwrap();
    file.sync_all().unwrap();
    c.bench_function("disk/write_256B_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(black_box(&block), 0).unwrap();
            file.sync_data().unwrap();
        })
    });
    // A WAL commit appends pages, so the file grows and ext4 must commit its journal too.
    let mut end = 4096u64;
    let page = [0xa5u8; 4096];
    c.bench_function("disk/append_4KiB_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(black_box(&page), end).unwrap();
            end += 4096;
            file.sync_data().unwrap();
        })
    });
    c.bench_function("disk/write_256B_fsync", |b| {
        b.iter(|| {
            file.write_all_at(black_box(&block), 0).unwrap();
            file.sync_all().unwrap();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(6));
    targets = store, raw_fsync
}
criterion_main!(benches);
