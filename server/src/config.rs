//! The server's configuration as plain data.
//!
//! The appliance reads the TOML file and fills this in; everything here has
//! already been validated, so the server never re-checks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the XMPP server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The XMPP domain this server is authoritative for (`localhost`, `kith.example`).
    pub domain: String,
    /// Directory holding the database, generated certificates and uploads.
    pub data_dir: PathBuf,
    /// Where to listen; `None` turns a listener off.
    pub listen: Listen,
    /// Certificate and key; `None` means a self-signed certificate in `data_dir/tls/`.
    pub tls: Option<TlsFiles>,
    /// Bounds on what one peer may cost the server.
    pub limits: Limits,
    /// PBKDF2 iteration count for newly stored SCRAM credentials (≥ 4096).
    pub scram_iterations: u32,
}

/// Listener addresses.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// Client-to-server with mandatory STARTTLS (5222).
    pub c2s: Option<SocketAddr>,
    /// Client-to-server Direct TLS, XEP-0368 (5223).
    pub c2s_tls: Option<SocketAddr>,
    /// Server-to-server (5269).
    pub s2s: Option<SocketAddr>,
    /// Plain HTTP (web pod).
    pub http: Option<SocketAddr>,
    /// HTTPS (web pod).
    pub https: Option<SocketAddr>,
}

/// PEM files for the certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Resource limits. Every one of them protects the box from one peer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest stanza after authentication, in bytes.
    pub stanza_size: usize,
    /// Largest stanza before authentication, in bytes.
    pub pre_auth_stanza_size: usize,
    /// Deepest element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Open connections from one IP address; 0 means unlimited.
    pub connections_per_ip: usize,
    /// Failed logins per minute allowed per IP and per account; 0 means unlimited.
    pub auth_failures_per_minute: u32,
    /// Time an unauthenticated connection may stay open.
    pub auth_timeout: Duration,
    /// Stanzas queued for one session before it is considered stuck and closed.
    pub session_queue: usize,
    /// Offline messages kept per account.
    pub offline_max: usize,
    /// XEP-0198: how long a session whose connection dropped waits for its
    /// client to resume before it ends (its unacked messages stay offline).
    pub sm_resume_timeout: Duration,
    /// XEP-0198: stanzas sent to a client and not yet acknowledged; a client
    /// that lets more pile up is disconnected with `<policy-violation/>`.
    pub sm_max_unacked: usize,
    /// XEP-0198: the server asks for an ack (`<r/>`) after this many unacked stanzas…
    pub sm_ack_request_every: usize,
    /// …or when stanzas have stayed unacked this long.
    pub sm_ack_request_interval: Duration,
    /// XEP-0198: sessions of one account that may wait to be resumed at once;
    /// beyond that, a dropped session ends at once (messages go offline).
    pub sm_max_hibernated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stanza_size: 256 * 1024,
            pre_auth_stanza_size: 8 * 1024,
            max_depth: 32,
            max_attributes: 64,
            connections_per_ip: 100,
            auth_failures_per_minute: 5,
            auth_timeout: Duration::from_secs(30),
            session_queue: 1000,
            offline_max: 1000,
            sm_resume_timeout: Duration::from_secs(300),
            sm_max_unacked: 1000,
            sm_ack_request_every: 5,
            sm_ack_request_interval: Duration::from_secs(30),
            sm_max_hibernated: 5,
        }
    }
}

impl Config {
    /// A configuration for `domain` with every default; listeners off.
    pub fn new(domain: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Config {
            domain: domain.into(),
            data_dir: data_dir.into(),
            listen: Listen::default(),
            tls: None,
            limits: Limits::default(),
            scram_iterations: 4096,
        }
    }
}
