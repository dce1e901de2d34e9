//! The one integration test binary: behaviour through public interfaces and the built binary.

mod architecture;
mod ble;
mod ble_daemon;
mod broker;
mod cli_decode;
mod config_file;
mod daemon;
mod demo;
mod engine_props;
mod engine_scenarios;
mod engine_sim;
mod engine_storms;
mod frame_props;
mod gateway;
mod keys_file;
mod lanes;
mod mqtt;
mod mqtt_tls;
mod ops;
mod package;
mod store;
mod storms;
mod support;
mod vectors;
