//! The shared state of a running server, handed to every connection and module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, Limits};
use crate::limits::{AuthLimiter, ByteBudget, ConnLimiter};
use crate::registry::{Registry, SessionEvent};
use crate::router::Sessions;
use crate::session::SessionHandle;
use crate::storage::Db;
use crate::tls::TlsContext;

/// Everything shared by the server's tasks.
pub struct Core {
    pub domain: String,
    /// The configuration the server started with; its `limits` may have
    /// changed since: read them through [`Core::limits`].
    pub config: Config,
    /// The limits in force (settings may change them while the server runs).
    limits: std::sync::RwLock<Arc<Limits>>,
    pub db: Db,
    pub registry: Registry,
    pub sessions: Sessions,
    /// XEP-0198: resumable sessions by resumption id.
    pub sm: crate::sm::Table,
    pub tls: TlsContext,
    pub conn_limiter: Arc<ConnLimiter>,
    pub auth_limiter: AuthLimiter,
    /// Bytes all unauthenticated peers together may make the server buffer.
    pub pre_auth_budget: Arc<ByteBudget>,
    /// Key that derives fake SCRAM parameters for unknown accounts.
    pub scram_secret: Vec<u8>,
    /// XEP-0191 blocklists, loaded on first use (see `blocking/list.rs`).
    pub blocklists: crate::blocking::Cache,
    /// Flips to `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every connection task; shutdown waits for all to be dropped.
    pub(crate) alive: mpsc::Sender<()>,
    /// Federation state; unset when federation is off.
    pub s2s: std::sync::OnceLock<Arc<crate::s2s::S2sState>>,
    /// Connected external components (XEP-0114).
    pub components: crate::component::Components,
    /// IQs the server sent and is waiting for replies to.
    pub iq_out: crate::iq_out::IqOut,
    /// Push notification state (XEP-0357): summaries and rate limits.
    pub push: crate::push::PushState,
    /// What clients' entity capabilities say they support (XEP-0115/0390).
    pub caps: crate::xep::caps::Caps,
    /// Group chats (XEP-0045): the rooms, loaded on first use.
    pub muc: crate::muc::Muc,
    /// Whether the clock is known to be right (see `clock.rs`).
    pub clock: Arc<crate::clock::Clock>,
    next_id: AtomicU64,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        db: Db,
        registry: Registry,
        tls: TlsContext,
        scram_secret: Vec<u8>,
        shutdown: watch::Receiver<bool>,
        alive: mpsc::Sender<()>,
        clock: Arc<crate::clock::Clock>,
    ) -> Self {
        Core {
            domain: config.domain.clone(),
            conn_limiter: ConnLimiter::new(config.limits.connections_per_ip),
            auth_limiter: AuthLimiter::new(config.limits.auth_failures_per_minute),
            pre_auth_budget: ByteBudget::new(config.limits.pre_auth_buffer_total),
            limits: std::sync::RwLock::new(Arc::new(config.limits.clone())),
            config,
            db,
            registry,
            sessions: Sessions::default(),
            sm: crate::sm::Table::default(),
            tls,
            scram_secret,
            blocklists: crate::blocking::Cache::default(),
            shutdown,
            alive,
            s2s: std::sync::OnceLock::new(),
            components: Default::default(),
            iq_out: Default::default(),
            push: Default::default(),
            muc: Default::default(),
            caps: Default::default(),
            clock,
            next_id: AtomicU64::new(1),
        }
    }

    /// The limits in force now. A stream reads the ones it needs when it
    /// starts (stanza sizes, timeouts); the rest are read at each use.
    pub fn limits(&self) -> Arc<Limits> {
        match self.limits.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put new limits in force (see [`crate::Server::set_limits`]).
    pub fn set_limits(&self, limits: Limits) {
        self.conn_limiter.set_max(limits.connections_per_ip);
        self.pre_auth_budget.set_max(limits.pre_auth_buffer_total);
        let new = Arc::new(limits);
        match self.limits.write() {
            Ok(mut l) => *l = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// A process-unique number (connection ids, generated resources).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Run the hooks of `ev` for `session`.
    pub async fn session_event(self: &Arc<Self>, ev: SessionEvent, session: &Arc<SessionHandle>) {
        for h in self.registry.hooks(ev) {
            h(self, session).await;
        }
    }
}

/// Random bytes as lowercase hex (ids, nonces, resources).
pub fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        // Unreachable on Linux (getrandom); fall back to a time-based value
        // that is still unique, never to a constant.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{t:x}");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
