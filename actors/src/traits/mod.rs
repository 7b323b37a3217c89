//! The seams between the supervision tree and the real world. `termshare` implements
//! them over OS processes and tmux; tests and the chaos harness implement them in
//! process. The actors never touch an OS process directly.
//!
//! One file per seam: [`backend`] (backends and their workers), [`policy`] (the
//! policy gate) and [`host`] (the host terminal and the audit sink).

mod backend;
mod host;
mod policy;

pub use backend::*;
pub use host::*;
pub use policy::*;
