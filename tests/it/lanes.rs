//! The lanes between advertisement sources and the daemon: under a flood of heartbeats an SOS
//! is never dropped and never queued behind them.

use std::sync::Arc;

use bandgate::adapters::lanes::{advert_lanes, Advert, Lane, ALARM_PER_BAND, TELEMETRY_CAPACITY};
use bandgate::engine::{frame, BandEvent, DeviceKey, Frame, Keyring};

fn advert(data: Vec<u8>) -> Advert {
    Advert {
        addr: "C8:FD:19:00:00:11".into(),
        rssi: Some(-60),
        data,
        received_at: jiff::Timestamp::UNIX_EPOCH,
        format: bandgate::adapters::Format::Band,
    }
}

fn sealed(seq: u32, event: BandEvent, key: &DeviceKey) -> Vec<u8> {
    frame::seal(
        &Frame {
            device_id: 17,
            seq,
            battery_pct: 80,
            worn: true,
            event,
        },
        0xFFFF,
        key,
    )
}

#[tokio::test]
async fn an_sos_in_a_heartbeat_flood_takes_the_alarm_lane_and_is_never_dropped() {
    let key = DeviceKey([0x17; 16]);
    let keys: Keyring = [(17, key)].into_iter().collect();
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(keys));
    let heartbeat = BandEvent::Heartbeat {
        heart_rate: Some(70),
        spo2: None,
        steps: 1,
    };
    let flood = TELEMETRY_CAPACITY as u32 * 2;
    for seq in 0..flood {
        assert!(tx.send(advert(sealed(seq, heartbeat, &key))));
    }
    // The telemetry lane is full; the excess was dropped and counted, not queued.
    assert_eq!(rx.dropped(), u64::from(flood) - TELEMETRY_CAPACITY as u64);
    let sos = sealed(flood, BandEvent::Sos, &key);
    assert_eq!(tx.lane(&advert(sos.clone())), Lane::Alarm);
    assert!(tx.send(advert(sos.clone())));
    // The daemon polls the alarm lane first: the SOS is there, ahead of 4096 heartbeats.
    assert_eq!(rx.alarms.try_recv().unwrap().data, sos);
    assert_eq!(rx.telemetry.len(), TELEMETRY_CAPACITY);
}

#[tokio::test]
async fn forged_alarms_cannot_use_the_alarm_lane() {
    let key = DeviceKey([0x17; 16]);
    let keys: Keyring = [(17, key)].into_iter().collect();
    let (tx, _rx) = advert_lanes(0xFFFF, Arc::new(keys));
    let forged = sealed(1, BandEvent::Sos, &DeviceKey([0x99; 16]));
    assert_eq!(tx.lane(&advert(forged)), Lane::Telemetry);
    assert_eq!(tx.lane(&advert(vec![0xB1, 17])), Lane::Telemetry);
}

fn band_frame(device_id: u32, seq: u32, event: BandEvent) -> Vec<u8> {
    frame::seal(
        &Frame {
            device_id,
            seq,
            battery_pct: 80,
            worn: true,
            event,
        },
        0xFFFF,
        &DeviceKey([device_id as u8; 16]),
    )
}

fn two_bands() -> Keyring {
    [(17, DeviceKey([17; 16])), (18, DeviceKey([18; 16]))]
        .into_iter()
        .collect()
}

fn device_of(a: &Advert) -> u32 {
    frame::open(&a.data, 0xFFFF, &two_bands())
        .unwrap()
        .device_id
}

#[tokio::test]
async fn a_storming_band_cannot_hold_back_another_bands_first_alarm() {
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    // Band 17's stuck button: 10,000 SOS frames with fresh seqs, faster than the loop reads;
    // the source never waits for room.
    let first17 = band_frame(17, 1, BandEvent::Sos);
    assert!(tx.send(advert(first17.clone())));
    for seq in 2..=10_000 {
        assert!(tx.send(advert(band_frame(17, seq, BandEvent::Sos))));
    }
    // Then band 18 presses once.
    let sos18 = band_frame(18, 1, BandEvent::Sos);
    assert!(tx.send(advert(sos18.clone())));
    assert_eq!(
        rx.alarms.len(),
        ALARM_PER_BAND + 1,
        "band 17's surplus collapsed"
    );
    assert_eq!(rx.alarms.collapsed(), 10_000 - ALARM_PER_BAND as u64);
    // Band 17's first alarm comes first (it was first), band 18's right after it.
    assert_eq!(rx.alarms.recv().await.unwrap().data, first17);
    assert_eq!(rx.alarms.recv().await.unwrap().data, sos18);
    let mut rest = 0;
    while let Ok(a) = rx.alarms.try_recv() {
        assert_eq!(device_of(&a), 17);
        rest += 1;
    }
    assert_eq!(rest, ALARM_PER_BAND - 1);
}

#[tokio::test]
async fn a_cancel_after_a_storm_is_kept_and_the_first_alarm_too() {
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    let first = band_frame(17, 1, BandEvent::Sos);
    tx.send(advert(first.clone()));
    for seq in 2..500 {
        tx.send(advert(band_frame(17, seq, BandEvent::Sos)));
    }
    let cancel = band_frame(17, 500, BandEvent::Cancel { of_seq: 1 });
    tx.send(advert(cancel.clone()));
    let fall = band_frame(17, 501, BandEvent::Fall { impact_dg: 30 });
    tx.send(advert(fall.clone()));
    let mut got = Vec::new();
    while let Ok(a) = rx.alarms.try_recv() {
        got.push(a.data);
    }
    assert_eq!(got.len(), ALARM_PER_BAND);
    assert_eq!(got[0], first, "the head is never dropped");
    assert!(got.contains(&cancel), "a new kind of news is kept");
    assert!(got.contains(&fall));
}

#[tokio::test]
async fn a_press_after_a_cancel_in_a_full_queue_still_comes_after_the_cancel() {
    // A slow commit: the band's queue fills with one SOS heard again and again, then the
    // wearer's Cancel, then the wearer presses SOS again. The new press must not be taken for
    // a repeat (it is a new frame), and it must reach the engine after the Cancel, or the
    // engine would close the alert on the Cancel and lose the second press.
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    let first = band_frame(17, 1, BandEvent::Sos);
    for _ in 0..ALARM_PER_BAND - 1 {
        tx.send(advert(first.clone()));
    }
    let cancel = band_frame(17, 2, BandEvent::Cancel { of_seq: 1 });
    tx.send(advert(cancel.clone()));
    let again = band_frame(17, 3, BandEvent::Sos);
    tx.send(advert(again.clone()));
    let mut got = Vec::new();
    while let Ok(a) = rx.alarms.try_recv() {
        got.push(a.data);
    }
    assert_eq!(got[0], first, "the head is never dropped");
    let at = |f: &Vec<u8>| got.iter().position(|g| g == f);
    let (c, a) = (
        at(&cancel).expect("the cancel is kept"),
        at(&again).expect("the new press is kept"),
    );
    assert!(c < a, "the press after the cancel came before it: {c} {a}");
    assert_eq!(got.len(), ALARM_PER_BAND);
}

#[tokio::test]
async fn bands_take_turns_and_each_keeps_its_own_order() {
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    for seq in 1..=3 {
        tx.send(advert(band_frame(17, seq, BandEvent::Sos)));
    }
    for seq in 1..=3 {
        tx.send(advert(band_frame(18, seq, BandEvent::Sos)));
    }
    let mut order = Vec::new();
    while let Ok(a) = rx.alarms.try_recv() {
        let f = frame::open(&a.data, 0xFFFF, &two_bands()).unwrap();
        order.push((f.device_id, f.seq));
    }
    assert_eq!(
        order,
        [(17, 1), (18, 1), (17, 2), (18, 2), (17, 3), (18, 3)]
    );
}

#[tokio::test]
async fn a_waiting_loop_is_woken_and_the_lane_closes_with_its_sources() {
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    let sos = band_frame(18, 7, BandEvent::Sos);
    let sent = sos.clone();
    let source = tokio::spawn(async move {
        tokio::task::yield_now().await;
        assert!(tx.send(advert(sent)));
        // `tx` dropped here: the only source is gone.
    });
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.alarms.recv())
        .await
        .expect("woken by the send");
    assert_eq!(got.unwrap().data, sos);
    source.await.unwrap();
    assert!(
        rx.alarms.recv().await.is_none(),
        "closed once its sources are gone"
    );

    let (tx, rx) = advert_lanes(0xFFFF, Arc::new(two_bands()));
    drop(rx);
    assert!(!tx.send(advert(band_frame(17, 1, BandEvent::Sos))));
}

#[tokio::test]
async fn a_bthome_press_or_cancel_takes_the_alarm_lane_and_beacons_forgeries_and_plain_frames_do_not(
) {
    use bandgate::adapters::Format;
    use bandgate::engine::bthome::{self, BtHomeDevice, ButtonEvent};
    let key = DeviceKey([0x23; 16]);
    let addr = "54:48:E6:8F:80:A5";
    let mac = bthome::parse_mac(addr).unwrap();
    let mut keys = Keyring::new();
    keys.insert_bthome(mac, BtHomeDevice::new(9001, key));
    let (tx, mut rx) = advert_lanes(0xFFFF, Arc::new(keys));
    let bt = |data: Vec<u8>| Advert {
        addr: addr.into(),
        format: Format::BtHome,
        ..advert(data)
    };
    let press = bthome::seal(&mac, &key, 5, true, 1, Some(90), &[ButtonEvent::Press]);
    let cancel = bthome::seal(
        &mac,
        &key,
        6,
        true,
        2,
        Some(90),
        &[ButtonEvent::DoublePress],
    );
    let beacon = bthome::seal(&mac, &key, 7, true, 3, Some(90), &[ButtonEvent::None]);
    let forged = bthome::seal(
        &mac,
        &DeviceKey([9; 16]),
        8,
        true,
        4,
        None,
        &[ButtonEvent::Press],
    );
    let plain = bthome::plain(true, 5, None, &[ButtonEvent::Press]);
    assert_eq!(tx.lane(&bt(press.clone())), Lane::Alarm);
    assert_eq!(tx.lane(&bt(cancel.clone())), Lane::Alarm);
    assert_eq!(tx.lane(&bt(beacon.clone())), Lane::Telemetry);
    assert_eq!(tx.lane(&bt(forged)), Lane::Telemetry);
    assert_eq!(tx.lane(&bt(plain)), Lane::Telemetry);
    // Read as a band's frame, the same bytes are nobody's alarm.
    assert_eq!(tx.lane(&advert(press.clone())), Lane::Telemetry);
    assert!(tx.send(bt(beacon.clone())));
    assert!(tx.send(bt(press.clone())));
    assert_eq!(rx.alarms.try_recv().unwrap().data, press);
    assert_eq!(rx.telemetry.try_recv().unwrap().data, beacon);
}
