//! bandgate: from a wristband's SOS to a person on the way.
//!
//! Codemap (see README.md, "Architecture"):
//! - `engine`: the pure, sans-IO core. `engine::frame` is the wire format, `engine::replay`
//!   the anti-replay window, `engine::Intake` the two in the spec's order.
//! - `config`: files an installer writes (`keys.toml`, `bandgate.toml`), checked with errors
//!   that name the file, the entry and the fix.
//! - `daemon`: the loop that owns the engine (events in, delivery out).
//! - `adapters`: the only code that touches the world (radio, broker, store, control socket).
//! - `cmd`: the commands' bodies and the one mapping of their results to exit codes.

pub mod adapters;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod engine;
