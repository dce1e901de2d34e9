//! The one integration test binary: behaviour through public interfaces and the built binary.

mod broker;
mod cli_decode;
mod frame_props;
mod keys_file;
mod mqtt;
mod support;
mod vectors;
