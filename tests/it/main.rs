//! The one integration test binary: behaviour through public interfaces and the built binary.

mod architecture;
mod ble;
mod ble_daemon;
mod cli_decode;
mod clock_behind;
mod config_file;
mod config_texts;
mod daemon;
mod demo;
mod engine_bounds_props;
mod engine_clock;
mod engine_props;
mod engine_scenarios;
mod engine_who_may_act;
mod frame_props;
mod harness;
mod keys_file;
mod lanes;
mod mqtt;
mod mqtt_tls;
mod ops;
mod package;
mod phones;
mod recovery;
mod store;
mod store_recover;
mod vectors;

// The harness's old paths, for the files being rewritten elsewhere now (ble.rs, ble_daemon.rs;
// config_file.rs, keys_file.rs): they go when those files `use crate::harness`.
mod broker {
    pub use crate::harness::Broker;
}
mod gateway {
    pub use crate::harness::*;
}
mod support {
    pub use crate::harness::vectors::*;
}
