//! The one integration test binary: behaviour through public interfaces and the built binary.

mod ble;
mod broker;
mod cli_decode;
mod config_file;
mod demo;
mod engine_props;
mod engine_scenarios;
mod engine_sim;
mod frame_props;
mod keys_file;
mod mqtt;
mod store;
mod support;
mod vectors;
