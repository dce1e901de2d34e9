//! The one integration test binary: behaviour through public interfaces and the built binary.

mod architecture;
mod cli_decode;
mod frame_props;
mod keys_file;
mod support;
mod vectors;
