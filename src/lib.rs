#![warn(missing_docs)]
//! termshare: share a live terminal safely.
//!
//! The supervision tree lives in [`termshare_actors`] (re-exported as [`actors`]); this
//! crate is the real-world side: backend adapters over OS processes ([`backends`],
//! [`process`]), the host terminal ([`terminal`]), the policy file ([`policy`]), the
//! config file ([`config`]), the audit file ([`audit_file`]), the daemon and its
//! protocol ([`daemon`], [`protocol`], [`client`]), and [`Termshare`], which wires them
//! into a running service.
//!
//! A runtime links this crate and drives [`Termshare`]: the guide below shows how,
//! and its example runs as a doctest. `examples/embed.rs` and `examples/linked.rs` are
//! complete programs (`cargo run --example linked`).
//!
#![doc = include_str!("doc/embedding.md")]

pub mod audit_file;
pub mod backends;
pub mod cast;
pub mod client;
pub mod config;
pub mod daemon;
mod embed;
pub mod exit;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod launch;
pub mod limits;
#[cfg(feature = "metrics-endpoint")]
pub mod metrics_endpoint;
pub mod netdiag;
pub mod netns;
pub mod paths;
pub mod policy;
pub mod process;
mod programs;
pub mod protocol;
pub mod recording;
pub mod secure_fs;
pub mod terminal;

pub use embed::{Builder, StartError, Termshare};
pub use programs::Programs;
pub use termshare_actors as actors;
