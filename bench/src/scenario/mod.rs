//! The scenarios the generator runs; each returns one [`Report`](crate::report::Report).

pub mod mam;
pub mod muc;
pub mod sessions;
pub mod smoke;
pub mod throughput;

use crate::client::Target;

/// What every scenario needs: where to connect and which process to measure.
pub struct Ctx {
    pub target: Target,
    /// PID of the server process whose RSS and CPU are read from `/proc`.
    pub server_pid: Option<u32>,
    /// Name of the server in reports (`kith`, `prosody`, `ejabberd`).
    pub label: String,
}
