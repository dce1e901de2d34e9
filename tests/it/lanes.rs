//! The lanes between advertisement sources and the daemon: under a flood of heartbeats an SOS
//! is never dropped and never queued behind them.

use std::sync::Arc;

use bandgate::adapters::lanes::{advert_lanes, Advert, Lane, TELEMETRY_CAPACITY};
use bandgate::engine::{frame, BandEvent, DeviceKey, Frame, Keyring};

fn advert(data: Vec<u8>) -> Advert {
    Advert {
        addr: "C8:FD:19:00:00:11".into(),
        rssi: Some(-60),
        data,
        received_at: jiff::Timestamp::UNIX_EPOCH,
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
        assert!(tx.send(advert(sealed(seq, heartbeat, &key))).await);
    }
    // The telemetry lane is full; the excess was dropped and counted, not queued.
    assert_eq!(rx.dropped(), u64::from(flood) - TELEMETRY_CAPACITY as u64);
    let sos = sealed(flood, BandEvent::Sos, &key);
    assert_eq!(tx.lane(&sos), Lane::Alarm);
    assert!(tx.send(advert(sos.clone())).await);
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
    assert_eq!(tx.lane(&forged), Lane::Telemetry);
    assert_eq!(tx.lane(&[0xB1, 17]), Lane::Telemetry);
}
