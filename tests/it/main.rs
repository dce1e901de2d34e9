//! The one integration test binary: behaviour through public interfaces and the built binary.

mod cli_decode;
mod frame_props;
mod keys_file;
mod store;
mod support;
mod vectors;
