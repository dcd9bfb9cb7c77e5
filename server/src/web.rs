//! What the web pod (`kith-web`) uses of the XMPP server: the domain, the
//! shared TLS configuration, the limits, and framed XMPP sessions for
//! WebSocket and BOSH clients. Nothing here knows HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::core::Core;
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

    /// The XMPP domain.
    pub fn domain(&self) -> &str {
        &self.core.domain
    }

    /// The rustls configuration for HTTPS: the same certificate resolver as
    /// the XMPP listeners, ALPN `http/1.1`.
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
}
