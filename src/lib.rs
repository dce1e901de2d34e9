//! bandgate: from a wristband's SOS to a person on the way.
//!
//! Codemap (see README.md, "Architecture"):
//! - `engine`: the pure, sans-IO core. `engine::frame` is the wire format, `engine::replay`
//!   the anti-replay window, `engine::Intake` the two in the spec's order.
//! - `config`: files an installer writes (`keys.toml`, `bandgate.toml`), checked with errors
//!   that name the file, the entry and the fix.
//! - `cli`: output formats of the command line (`decode`'s JSON lines).
//! - `control`: the operator's control socket (wire types, the accept task, the answers the
//!   daemon loop gives, the client and its text); `enrol`: adding a band's key to keys.toml.
//! - `demo`: `bandgate demo`, the daemon in-process with simulated bands, a loopback broker
//!   and the duty phones' view.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod enrol;
pub mod health;
pub mod scan;
