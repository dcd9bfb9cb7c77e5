//! Federation: server-to-server streams (RFC 6120, XEP-0178, XEP-0220,
//! XEP-0368), always over TLS and always authenticated.
//!
//! This module owns the state shared by every s2s connection ([`S2sState`]:
//! TLS material, the dialback secret, the outgoing links by (local domain,
//! remote domain), the stream ids of streams Kith opened), which local
//! domains federate (the server's own, and the group chat service's), and
//! the one entry point the rest of the server uses, [`route_out`]. The pieces
//! live in their own files: `policy.rs` (who may federate), `resolve.rs`
//! (SRV and A/AAAA), `tls.rs` (certificates), `dialback.rs` (XEP-0185 keys),
//! `incoming.rs` and `outgoing.rs` (the two stream directions), `inbound.rs`
//! (delivering what arrives to local users), `groups.rs` (what arrives for
//! the group chat service), `rate.rs` (what one remote domain may send per
//! second and per minute) and `wire.rs` (stream headers, namespaces, errors).

mod dialback;
mod groups;
mod inbound;
pub mod incoming;
mod outgoing;
pub mod policy;
mod rate;
mod resolve;
pub mod tls;
mod wire;

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use jid::Jid;
use minidom::Element;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::stanza::{error_reply, StanzaError};
use crate::stream::Transport;

pub use self::tls::S2sTls;

impl Transport for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    async fn readable(&self) -> std::io::Result<()> {
        // As for the server side: reads drain rustls completely, so socket
        // readiness is enough.
        self.get_ref().0.readable().await
    }
}

/// Outgoing links (connected or connecting) at a time, one per (local
/// domain, remote domain); stanzas needing one more are refused with
/// `resource-constraint`.
pub const MAX_LINKS: usize = 1000;

/// Which local domain speaks to which remote domain on a link: Kith's own
/// domain for its users, the group chat service's for its rooms (each is
/// authenticated separately, with its own stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pair {
    /// Ours: the server's domain or the group chat service's.
    pub local: String,
    /// The other server's.
    pub remote: String,
}

/// One outgoing link: the queue of stanzas waiting for (or flowing into) the
/// connection to a remote domain.
struct Link {
    id: u64,
    tx: mpsc::Sender<Element>,
}

/// State shared by all s2s connections.
pub struct S2sState {
    pub tls: S2sTls,
    /// XEP-0185 secret: random per process (a restart only means keys
    /// issued before it no longer verify, and peers redo dialback).
    secret: Vec<u8>,
    links: Mutex<HashMap<Pair, Link>>,
    /// Stream ids the peers gave to streams *we* opened, with the domains the
    /// stream was opened between: the only streams whose dialback keys Kith
    /// will vouch for.
    opened: Mutex<HashMap<String, Pair>>,
    /// Authenticated incoming streams per remote domain.
    incoming: Mutex<HashMap<String, usize>>,
    /// What each remote domain may send (`rate.rs`).
    rates: rate::Rates,
    /// The server, for link tasks started from code that holds only `&Core`.
    core: Weak<Core>,
}

impl S2sState {
    pub fn new(tls: S2sTls, core: Weak<Core>, config: &crate::config::S2s) -> Self {
        S2sState {
            rates: rate::Rates::new(config),
            core,
            tls,
            secret: crate::core::random_hex(32).into_bytes(),
            links: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
        }
    }

    fn remember_opened(&self, id: &str, pair: &Pair) {
        let mut m = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(id.to_string(), pair.clone());
    }

    fn forget_opened(&self, id: &str) {
        let mut m = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id);
    }

    fn opened_to(&self, id: &str) -> Option<Pair> {
        let m = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id).cloned()
    }

    /// Count one more authenticated incoming stream from `domain`; false
    /// when the per-domain limit is reached.
    fn incoming_acquire(&self, domain: &str, max: usize) -> bool {
        let mut m = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(domain.to_string()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn incoming_release(&self, domain: &str) {
        let mut m = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(domain) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(domain);
            }
        }
    }
}

/// The local domain `domain` names, as Kith spells it, if Kith federates for
/// it: the server's own domain, or the group chat service's.
pub(crate) fn served(core: &Core, domain: &str) -> Option<String> {
    if domain.eq_ignore_ascii_case(&core.domain) {
        Some(core.domain.clone())
    } else if crate::muc::is_service(core, domain) {
        Some(crate::muc::domain(core).to_ascii_lowercase())
    } else {
        None
    }
}

/// The local domain a stanza leaves from: the group chat service's for what
/// its rooms send, the server's own for everything else.
fn origin(core: &Core, stanza: &Element) -> String {
    stanza
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .and_then(|f| served(core, f.domain().as_str()))
        .unwrap_or_else(|| core.domain.clone())
}

/// Send a stanza from a local entity to a remote domain: queued on the link
/// from its local domain to that domain (opened on demand). Refusals and
/// failures come back to the sender as stanza errors.
pub fn route_out(core: &Core, stanza: Element) {
    let Some(domain) = stanza
        .attr("to")
        .and_then(|t| Jid::new(t).ok())
        .map(|j| j.domain().as_str().to_string())
    else {
        return;
    };
    // XEP-0114: a component domain is served by its local connection, never
    // by federation, whichever path the stanza took to get here.
    if crate::component::is_component(core, &domain) {
        if !crate::component::send(core, &stanza) && stanza.name() != "presence" {
            bounce_local(
                core,
                &stanza,
                StanzaError::service_unavailable().with_text("that service is not connected"),
            );
        }
        return;
    }
    // The group chat service is in this process, never reached by federation.
    if crate::muc::is_service(core, &domain) {
        groups::local(core, stanza);
        return;
    }
    let Some(state) = core.s2s.get() else {
        bounce_local(
            core,
            &stanza,
            StanzaError::remote_server_not_found()
                .with_text("federation is turned off on this server"),
        );
        return;
    };
    if let Err(why) = policy::check(&core.config.s2s, &domain) {
        tracing::info!(target: "kith::federation", %domain, reason = why, "outgoing stanza refused by policy");
        bounce_local(
            core,
            &stanza,
            StanzaError::not_allowed().with_text(format!("federation with {domain}: {why}")),
        );
        return;
    }
    let pair = Pair {
        local: origin(core, &stanza),
        remote: domain.to_ascii_lowercase(),
    };
    let mut links = state.links.lock().unwrap_or_else(|e| e.into_inner());
    let stanza = match links.get(&pair) {
        Some(link) => match link.tx.try_send(stanza) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(s)) => {
                drop(links);
                bounce_local(
                    core,
                    &s,
                    StanzaError::new("wait", "resource-constraint").with_text(format!(
                        "too many stanzas waiting for {domain}; try again later"
                    )),
                );
                return;
            }
            Err(mpsc::error::TrySendError::Closed(s)) => s,
        },
        None => stanza,
    };
    if links.len() >= MAX_LINKS {
        drop(links);
        tracing::warn!(target: "kith::federation", %domain, "too many remote domains at once");
        bounce_local(
            core,
            &stanza,
            StanzaError::new("wait", "resource-constraint")
                .with_text("this server is talking to too many other servers; try again later"),
        );
        return;
    }
    let (tx, rx) = mpsc::channel(core.config.s2s.queue.max(1));
    let id = core.next_id();
    // A fresh channel has room for one.
    let _ = tx.try_send(stanza);
    links.insert(pair.clone(), Link { id, tx });
    drop(links);
    match state.core.upgrade() {
        Some(core) => {
            tokio::spawn(outgoing::run(core, pair, id, rx));
        }
        None => drop_link(state, &pair, id),
    }
}

/// XEP-0288: make an authenticated bidirectional incoming stream for `pair`
/// the link Kith writes to, unless a link for it already exists.
fn adopt_link(
    state: &S2sState,
    core: &Core,
    pair: &Pair,
    id: u64,
) -> Option<mpsc::Receiver<Element>> {
    let mut links = state.links.lock().unwrap_or_else(|e| e.into_inner());
    if links.get(pair).is_some_and(|l| !l.tx.is_closed()) {
        return None;
    }
    let (tx, rx) = mpsc::channel(core.config.s2s.queue.max(1));
    links.insert(pair.clone(), Link { id, tx });
    Some(rx)
}

/// Forget the link `id` for `pair` (if it is still the current one).
fn drop_link(state: &S2sState, pair: &Pair, id: u64) {
    let mut links = state.links.lock().unwrap_or_else(|e| e.into_inner());
    if links.get(pair).is_some_and(|l| l.id == id) {
        links.remove(pair);
    }
}

/// Return an error for `stanza` (sent by a local entity) to its sender.
pub fn bounce_local(core: &Core, stanza: &Element, err: StanzaError) {
    if let Some(mut reply) = error_reply(stanza, &err) {
        if reply.attr("from").is_none() {
            crate::xml::attr_set(&mut reply, "from", core.domain.clone());
        }
        let to_service = reply
            .attr("to")
            .and_then(|t| Jid::new(t).ok())
            .is_some_and(|t| crate::muc::is_service(core, t.domain().as_str()));
        if to_service {
            // A room's stanza to an occupant on another server failed.
            groups::local(core, reply);
        } else {
            inbound::deliver_local(core, reply);
        }
    }
}

/// [`route_out`] for callers that hold the core by reference.
pub fn route_out_from(core: &Core, stanza: Element) {
    route_out(core, stanza)
}

/// Whether `domain` is not this server's own (another server's, reached
/// through [`route_out`], or a local component's or the group chat
/// service's, which `route_out` hands to them).
pub fn is_remote(core: &Core, domain: &str) -> bool {
    !domain.eq_ignore_ascii_case(&core.domain)
}
