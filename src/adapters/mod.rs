//! Adapters: the only code that touches the world (radio, files, broker, disk).
//!
//! Every advertisement source (BlueZ, a replay capture, the simulator) hands what it hears to
//! an `AdvertTx`, which puts alarms and telemetry in separate bounded lanes: telemetry may be
//! dropped (and counted) when the daemon falls behind, an alarm never is and never waits
//! behind telemetry.
//!
//! `store` keeps the durable state (alerts, bands, the MQTT outbox) in SQLite; nothing else
//! knows SQL.

pub mod ble;
pub mod control;
pub mod lanes;
pub mod modem;
pub mod mqtt;
pub mod replay;
pub mod simulate;
pub mod store;
pub mod web;
pub mod webhook;

pub use lanes::{advert_lanes, Advert, AdvertRx, AdvertTx, Format, Lane};
pub use store::{OutboxMessage, Store};
