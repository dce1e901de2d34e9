//! The one integration test binary: behaviour through public interfaces and the built binary.

mod ble;
mod cli_decode;
mod engine_props;
mod engine_scenarios;
mod engine_sim;
mod frame_props;
mod keys_file;
mod support;
mod vectors;
