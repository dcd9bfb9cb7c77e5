//! The server's configuration as plain data.
//!
//! The appliance reads the TOML file and fills this in; everything here has
//! already been validated, so the server never re-checks it.

use std::collections::BTreeMap;
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
    /// Federation with other XMPP servers (`[s2s]`).
    pub s2s: S2s,
    /// Message history (XEP-0313 archive).
    pub archive: Archive,
    /// How long a FAST login token (XEP-0484) stays valid without being used.
    pub fast_token_lifetime: Duration,
    /// External components (XEP-0114): component domain → shared secret.
    pub components: BTreeMap<String, Secret>,
    /// Push notifications (XEP-0357).
    pub push: PushConfig,
    /// Server-to-client and server-to-component pings (XEP-0199).
    pub ping: PingConfig,
    /// HTTP File Upload (XEP-0363).
    pub upload: UploadConfig,
    /// Group chats (XEP-0045).
    pub muc: MucConfig,
    /// How Kith learns that the clock is synchronised (`[time]`, see `clock.rs`).
    pub time_sync: TimeSync,
}

/// Where the "clock synchronised" signal comes from (`[time] sync_flag`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeSync {
    /// systemd-timesyncd's flag (`/run/systemd/timesync/synchronized`) when
    /// timesyncd runs here (its folder in /run exists at start); else the
    /// clock is trusted (a laptop, a server with another time daemon).
    #[default]
    Auto,
    /// The clock is always trusted.
    Trusted,
    /// The clock is confirmed once this file exists.
    Flag(PathBuf),
}

/// Group chats (XEP-0045): the service `groups.DOMAIN` and its bounds.
#[derive(Debug, Clone)]
pub struct MucConfig {
    /// Group chats on or off.
    pub enabled: bool,
    /// The service's domain; `None` means `groups.DOMAIN`.
    pub domain: Option<String>,
    /// Occupants per room (owners and admins may still join a full room).
    pub max_occupants: usize,
    /// Rooms one account may own.
    pub max_rooms_per_user: usize,
    /// Messages a room keeps for history on join (the room's own setting
    /// can only lower it).
    pub max_history: usize,
    /// Room joins per minute per account.
    pub join_rate: u32,
    /// Rooms on the service.
    pub max_rooms: usize,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: None,
            max_occupants: 200,
            max_rooms_per_user: 20,
            max_history: 100,
            join_rate: 30,
            max_rooms: 1000,
        }
    }
}

/// HTTP File Upload (XEP-0363): the service `upload.DOMAIN` and its bounds.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Largest file, in bytes; larger slot requests get `<file-too-large/>`.
    pub max_file_size: u64,
    /// Bytes of stored files per account; a slot that would exceed it gets
    /// `<resource-constraint/>`.
    pub quota: u64,
    /// Files are deleted this long after upload.
    pub retention: Duration,
    /// A slot's PUT URL is valid this long.
    pub slot_lifetime: Duration,
    /// The web pod's public origin for slot URLs (`https://kith.example`);
    /// `None` means `https://DOMAIN` with the HTTPS listener's port.
    pub base_url: Option<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            max_file_size: 100 * 1024 * 1024,
            quota: 1024 * 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            slot_lifetime: Duration::from_secs(300),
            base_url: None,
        }
    }
}

/// Message history settings.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Days a message is kept in an account's history unless the account has
    /// its own setting; 0 keeps history forever.
    pub retention_days: u32,
    /// How often the background pruner looks for expired messages.
    pub prune_interval: Duration,
}

impl Default for Archive {
    fn default() -> Self {
        Archive {
            retention_days: 0,
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// A shared secret; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Push notifications to app servers (XEP-0357).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Put the message text (`last-message-body`) into notifications. Off by
    /// default: the app server (and the phone vendor's push service behind
    /// it) would otherwise read the household's messages.
    pub include_body: bool,
    /// Registrations kept per account; enabling one more replaces the oldest.
    pub max_per_account: usize,
    /// At most one notification per registration in this time; messages in
    /// between are summed up in the next one.
    pub min_interval: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            include_body: false,
            max_per_account: 10,
            min_interval: Duration::from_secs(2),
        }
    }
}

/// Pings of idle connections, to find half-open ones.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// A client or component that sent nothing for this long gets a ping.
    pub idle: Duration,
    /// No reply (no data at all) within this time closes the connection.
    pub timeout: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            idle: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }
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
    /// Server-to-server Direct TLS, XEP-0368 (5270).
    pub s2s_tls: Option<SocketAddr>,
    /// Plain HTTP (web pod).
    pub http: Option<SocketAddr>,
    /// HTTPS (web pod).
    pub https: Option<SocketAddr>,
    /// External components, XEP-0114 (5347); loopback only, off by default.
    pub component: Option<SocketAddr>,
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
    /// Bytes all unauthenticated connections together may make the server
    /// buffer (partial stanzas and headers); a connection asking for more is
    /// closed with `<resource-constraint/>`. 0 means unlimited.
    pub pre_auth_buffer_total: usize,
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
    /// Subscription requests waiting for one account's answer (from other
    /// servers and from accounts on this one); one more refuses the oldest.
    pub pending_subscriptions: usize,
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
    /// PEP nodes one account may own (avatar, nickname, bookmarks, OMEMO
    /// keys: one node per OMEMO 0.3 device bundle).
    pub pep_nodes: usize,
    /// Items one PEP node may keep (`pubsub#max_items` "max").
    pub pep_items: usize,
    /// Largest PEP item payload, in bytes (serialised).
    pub pep_item_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stanza_size: 256 * 1024,
            pre_auth_stanza_size: 8 * 1024,
            pre_auth_buffer_total: 8 * 1024 * 1024,
            max_depth: 32,
            max_attributes: 64,
            connections_per_ip: 100,
            auth_failures_per_minute: 5,
            auth_timeout: Duration::from_secs(30),
            session_queue: 1000,
            offline_max: 1000,
            pending_subscriptions: 50,
            sm_resume_timeout: Duration::from_secs(300),
            sm_max_unacked: 1000,
            sm_ack_request_every: 5,
            sm_ack_request_interval: Duration::from_secs(30),
            sm_max_hibernated: 5,
            pep_nodes: 100,
            pep_items: 1000,
            pep_item_size: 128 * 1024,
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
            archive: Archive::default(),
            fast_token_lifetime: Duration::from_secs(21 * 86_400),
            components: BTreeMap::new(),
            push: PushConfig::default(),
            ping: PingConfig::default(),
            upload: UploadConfig::default(),
            muc: MucConfig::default(),
            s2s: S2s::default(),
            time_sync: TimeSync::default(),
        }
    }
}

/// Federation settings (`[s2s]`). Every server-to-server stream is TLS and
/// authenticated; these only decide *whom* Kith talks to and how much.
#[derive(Debug, Clone)]
pub struct S2s {
    /// Federation on or off (off: no s2s listener, remote stanzas bounce).
    pub enabled: bool,
    /// Extra trust anchors (PEM) for peers' certificates, on top of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Fixed addresses for domains (`"example.org" = "192.0.2.7:5269"`), used
    /// instead of DNS: LANs and tests.
    pub hosts: std::collections::BTreeMap<String, SocketAddr>,
    /// Domains whose invalid certificates are tolerated (dialback only, logged loudly).
    pub insecure_domains: Vec<String>,
    /// When non-empty, only these domains may federate.
    pub allow: Vec<String>,
    /// These domains never federate.
    pub deny: Vec<String>,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Time to resolve, connect, encrypt and authenticate an outgoing stream.
    pub connect_timeout: Duration,
    /// Stanzas waiting for one remote domain's connection; more bounce.
    pub queue: usize,
    /// Largest stanza accepted from a remote server, in bytes.
    pub stanza_size: usize,
    /// Incoming connections authenticated for one remote domain at a time.
    pub connections_per_domain: usize,
    /// Stanzas per second one remote domain may send, all its incoming
    /// streams together (a stanza counts once per started 8 KiB); a domain
    /// sending faster is read more slowly. 0: no limit.
    pub stanzas_per_second: u32,
    /// Stanzas one remote domain may send at once before `stanzas_per_second` applies.
    pub stanza_burst: u32,
    /// Subscription requests (`subscribe`) per minute one remote domain may
    /// send; more are refused with `<policy-violation/>`. 0: no limit.
    pub subscriptions_per_minute: u32,
    /// Subscription requests one remote domain may send at once before
    /// `subscriptions_per_minute` applies.
    pub subscription_burst: u32,
}

impl Default for S2s {
    fn default() -> Self {
        S2s {
            enabled: true,
            ca_file: None,
            hosts: Default::default(),
            insecure_domains: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(30),
            queue: 1000,
            stanza_size: 512 * 1024,
            connections_per_domain: 4,
            stanzas_per_second: 50,
            stanza_burst: 500,
            subscriptions_per_minute: 2,
            subscription_burst: 20,
        }
    }
}
