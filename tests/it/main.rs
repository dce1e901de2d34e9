//! The one integration test binary: behaviour through public interfaces and the built binary.

mod cli_decode;
mod config_file;
mod frame_props;
mod keys_file;
mod support;
mod vectors;
