//! What the web pod (`kith-web`) uses of the XMPP server: the domain, the
//! shared TLS configuration, the limits, and framed XMPP sessions for
//! WebSocket and BOSH clients. Nothing here knows HTTP.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::accounts::AccountError;
use crate::core::Core;
use crate::credentials::{PasswordChangeError, PasswordRefused, Role, VerifiedAccount};
use crate::storage::web_sessions::WebSessionRow;
use crate::stream::framed::{FramedReceiver, FramedSender};

/// A handle on the running server for the web pod. Dropped before the
/// server shuts down (it keeps the server's state alive).
#[derive(Clone)]
pub struct WebHandle {
    core: Arc<Core>,
}

impl WebHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        WebHandle { core }
    }

    /// Whether the box's clock is known to be right: until it is, nothing
    /// is deleted for its age (see `clock.rs`).
    pub fn time_confirmed(&self) -> bool {
        self.core.clock.confirmed()
    }

    /// The XMPP domain.
    pub fn domain(&self) -> &str {
        &self.core.domain
    }

    /// The rustls configuration for HTTPS: the same certificate resolver as
    /// the XMPP listeners, ALPN `h2` and `http/1.1`.
    pub fn https_tls(&self) -> Arc<rustls::ServerConfig> {
        self.core.tls.https.clone()
    }

    /// The largest stanza a session may send, in bytes.
    pub fn stanza_size(&self) -> usize {
        self.core.limits().stanza_size
    }

    /// Limits for one XML document that wraps stanzas (a BOSH `<body/>`):
    /// the stream's depth and attribute limits plus one level for the
    /// wrapper, and `bytes` in all. Use with [`crate::xml::parse_element`].
    pub fn wrapper_limits(&self, bytes: usize) -> crate::xml::ParserLimits {
        let l = &self.core.limits();
        crate::xml::ParserLimits {
            stanza_bytes: bytes,
            depth: l.max_depth + 1,
            attributes: l.max_attributes,
        }
    }

    /// The data directory (uploads live under it).
    pub fn data_dir(&self) -> &Path {
        &self.core.config.data_dir
    }

    /// Open an XMPP session for a framed transport (RFC 7395 framing): send
    /// the client's messages into the sender, relay the receiver's messages
    /// to the client. The session has the same negotiation, limits and
    /// session loop as a TCP client.
    pub fn open_framed(&self, peer: SocketAddr) -> std::io::Result<(FramedSender, FramedReceiver)> {
        crate::stream::framed::open(&self.core, peer)
    }

    /// The HTTP File Upload store (XEP-0363).
    pub fn uploads(&self) -> crate::upload::Uploads {
        crate::upload::Uploads::new(self.core.clone())
    }

    /// Resolves when the server begins shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.core.shutdown.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Check an account's password, tried from `ip`, exactly as an XMPP
    /// password login is checked: the stored SCRAM-SHA-256 keys, the login
    /// limits per address and per account (the attempt counts when it starts,
    /// a success gives it back), the same work and the same answer for an
    /// unknown account as for a wrong password. `address` is `alice` or
    /// `alice@DOMAIN`. The web pod's sign-in uses this; so will any later
    /// page that asks for a password again.
    pub async fn verify_password(
        &self,
        ip: IpAddr,
        address: &str,
        password: &str,
    ) -> Result<VerifiedAccount, PasswordRefused> {
        crate::credentials::verify_password(&self.core, ip, address, password).await
    }

    /// Change `username`'s password after checking `current` (limited like a
    /// login from `ip`). Signs out every FAST token and every browser of the
    /// account but the web session whose token hash is `keep`.
    pub async fn change_password(
        &self,
        ip: IpAddr,
        username: &str,
        current: &str,
        new: &str,
        keep: Option<&[u8]>,
    ) -> Result<(), PasswordChangeError> {
        crate::credentials::change_password(&self.core, ip, username, current, new, keep).await
    }

    /// An account's role, or `None` when the account no longer exists.
    pub async fn account_role(&self, username: &str) -> Result<Option<Role>, AccountError> {
        Ok(self
            .core
            .db
            .account_role(username)
            .await?
            .map(|r| Role::from_stored(&r)))
    }

    /// Store a newly signed-in browser.
    pub async fn web_session_create(&self, s: &WebSessionRow) -> Result<(), AccountError> {
        Ok(self.core.db.web_session_create(s).await?)
    }

    /// The browser session with this token hash, unless it expired by `now`
    /// (seconds since the epoch).
    pub async fn web_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<WebSessionRow>, AccountError> {
        Ok(self.core.db.web_session_get(token_hash, now).await?)
    }

    /// Record a session's use: seen at `now`, ends at `expires_at`.
    pub async fn web_session_touch(
        &self,
        token_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<(), AccountError> {
        Ok(self
            .core
            .db
            .web_session_touch(token_hash, now, expires_at)
            .await?)
    }

    /// An account's signed-in browsers, most recently used first.
    pub async fn web_sessions_of(
        &self,
        username: &str,
        now: i64,
    ) -> Result<Vec<WebSessionRow>, AccountError> {
        Ok(self.core.db.web_sessions_of(username, now).await?)
    }

    /// Sign out the browser whose token hash this is.
    pub async fn web_session_end(&self, token_hash: &[u8]) -> Result<(), AccountError> {
        Ok(self.core.db.web_session_delete(token_hash).await?)
    }

    /// Sign out one of `username`'s browsers by its handle; whether it existed.
    pub async fn web_session_end_handle(
        &self,
        username: &str,
        handle: &str,
    ) -> Result<bool, AccountError> {
        Ok(self
            .core
            .db
            .web_session_delete_handle(username, handle)
            .await?)
    }

    /// Sign out every browser of `username`; how many were signed in.
    pub async fn web_sessions_end_all(&self, username: &str) -> Result<u64, AccountError> {
        Ok(self.core.db.web_sessions_delete_all(username).await?)
    }

    /// Forget browser sessions that expired by `now`; how many.
    pub async fn web_sessions_sweep(&self, now: i64) -> Result<u64, AccountError> {
        Ok(self.core.db.web_sessions_sweep(now).await?)
    }
}
