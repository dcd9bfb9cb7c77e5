//! The router: the table of bound sessions and the delivery of one stanza.
//!
//! It knows addresses, not protocols. A stanza from a client is stamped with
//! the sender's full JID, classified by kind and by where it is addressed
//! ([`Addr`]), and handed to the handler a module registered for that key (for
//! IQs, also keyed by the payload namespace). IQs to a full JID are forwarded
//! to that session as is. Nothing here matches on an XEP namespace.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::registry::{IqCtx, StanzaCtx};
use crate::session::{Kick, SessionHandle};
use crate::stanza::{error_reply, Kind, StanzaError};
use crate::xml::attr_set;

/// Where a stanza is addressed, relative to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addr {
    /// The server itself (`to` is the domain).
    Host,
    /// No `to`, or the sender's own bare JID: handled on behalf of the account.
    SelfBare,
    /// Another account's bare JID on this server.
    Bare,
    /// A full JID on this server.
    Full,
    /// Another domain.
    Remote,
}

/// Classify a destination.
pub fn addr_of(to: Option<&Jid>, sender: &BareJid, domain: &str) -> Addr {
    let Some(to) = to else { return Addr::SelfBare };
    if to.domain().as_str() != domain {
        return Addr::Remote;
    }
    match (to.node(), to.resource()) {
        (None, _) => Addr::Host,
        (Some(_), Some(_)) => Addr::Full,
        (Some(_), None) if to.to_bare() == *sender => Addr::SelfBare,
        (Some(_), None) => Addr::Bare,
    }
}

/// All bound sessions, by bare JID.
#[derive(Debug, Default)]
pub struct Sessions {
    map: RwLock<HashMap<BareJid, Vec<Arc<SessionHandle>>>>,
}

impl Sessions {
    /// Add a session; a session already bound to the same full JID is kicked
    /// with `<conflict/>` and replaced (the newer login wins).
    pub fn insert(&self, s: Arc<SessionHandle>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(s.jid.to_bare()).or_default();
        if let Some(pos) = list.iter().position(|o| o.jid == s.jid) {
            let old = list.swap_remove(pos);
            old.kick(Kick::Conflict);
        }
        list.push(s);
    }

    /// Remove this exact session (no-op if it was already replaced).
    pub fn remove(&self, s: &SessionHandle) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let bare = s.jid.to_bare();
        if let Some(list) = map.get_mut(&bare) {
            list.retain(|o| o.id != s.id);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    /// The sessions of an account.
    pub fn of(&self, bare: &BareJid) -> Vec<Arc<SessionHandle>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(bare).cloned().unwrap_or_default()
    }

    /// The session bound to a full JID.
    pub fn get(&self, full: &FullJid) -> Option<Arc<SessionHandle>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&full.to_bare())?
            .iter()
            .find(|s| s.jid == *full)
            .cloned()
    }

    /// Number of bound sessions.
    pub fn count(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

/// Route a stanza sent by `session`'s client. The `from` is stamped here.
pub async fn route_from_client(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    mut stanza: Element,
) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    attr_set(&mut stanza, "from", session.jid.as_str());
    let to = match stanza.attr("to").map(Jid::new) {
        None => None,
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => {
            bounce(session, &stanza, StanzaError::jid_malformed());
            return;
        }
    };
    // Normalise the address the handlers see.
    if let Some(j) = &to {
        attr_set(&mut stanza, "to", j.as_str());
    }
    // XEP-0114: a component domain is served by its connection, never by
    // federation; checked before the remote-domain branch below.
    if crate::component::route_from_client(core, session, &stanza, to.as_ref()) {
        return;
    }
    // XEP-0363: the upload service (upload.DOMAIN) is served in process.
    if crate::upload::route_from_client(core, session, &stanza, to.as_ref()).await {
        return;
    }
    // XEP-0045: group chats (groups.DOMAIN) are served in process.
    if crate::muc::route_from_client(core, session, &stanza, to.as_ref()).await {
        return;
    }
    let addr = addr_of(to.as_ref(), &session.jid.to_bare(), &core.domain);
    // XEP-0191: blocking applies before any handler (archive, offline store),
    // to remote contacts as well as local ones.
    if let (Some(j), Addr::Bare | Addr::Full | Addr::Remote) = (&to, addr) {
        if !crate::blocking::enforce::allow(core, session, kind, &stanza, j).await {
            return;
        }
    }
    if addr == Addr::Remote {
        // Federation (s2s/): presence goes through the presence module (it
        // keeps rosters and directed presence); the rest goes out as is.
        if kind == Kind::Presence {
            let a = match to.as_ref().and_then(|j| j.resource()) {
                Some(_) => Addr::Full,
                None => Addr::Bare,
            };
            if let Some(h) = core.registry.stanza_handler(kind, a) {
                h(
                    StanzaCtx {
                        core,
                        session,
                        to: to.as_ref(),
                    },
                    stanza,
                )
                .await;
            }
            return;
        }
        let copy = (kind == Kind::Message).then(|| stanza.clone());
        crate::s2s::route_out(core, stanza);
        if let Some(msg) = copy {
            // Carbons (and any other message hook) see messages to remote contacts too.
            for h in core.registry.message_hooks() {
                h(core, session, &msg, &[]);
            }
        }
        return;
    }
    if kind == Kind::Iq {
        return route_iq(core, session, stanza, to, addr).await;
    }
    match core.registry.stanza_handler(kind, addr) {
        Some(h) => {
            h(
                StanzaCtx {
                    core,
                    session,
                    to: to.as_ref(),
                },
                stanza,
            )
            .await
        }
        None => {
            if kind == Kind::Message {
                bounce(session, &stanza, StanzaError::service_unavailable());
            }
        }
    }
}

async fn route_iq(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    iq: Element,
    to: Option<Jid>,
    addr: Addr,
) {
    let ty = iq.attr("type").unwrap_or("");
    let is_request = matches!(ty, "get" | "set");
    if !is_request && !matches!(ty, "result" | "error") {
        bounce(
            session,
            &iq,
            StanzaError::bad_request().with_text("iq needs a type"),
        );
        return;
    }
    if iq.attr("id").is_none() {
        bounce(
            session,
            &iq,
            StanzaError::bad_request().with_text("iq needs an id"),
        );
        return;
    }
    if addr == Addr::Full {
        // Forward to that resource, whatever the payload.
        let target = to
            .and_then(|j| j.try_into_full().ok())
            .and_then(|f| core.sessions.get(&f));
        match target {
            Some(t) => t.send(iq),
            None if is_request => bounce(session, &iq, StanzaError::service_unavailable()),
            None => {}
        }
        return;
    }
    if !is_request {
        // Results/errors to the server or an account: answers to our pushes,
        // or to an IQ the server sent and waits for (iq_out.rs); a
        // continuation (entity caps) runs here, in this session's order.
        core.iq_out.resolve_in_order(&iq).await;
        return;
    }
    let payloads: Vec<&Element> = iq.children().collect();
    let [payload] = payloads[..] else {
        bounce(
            session,
            &iq,
            StanzaError::bad_request().with_text("iq get/set needs exactly one child"),
        );
        return;
    };
    let set = ty == "set";
    let handler = core
        .registry
        .iq_handler(set, addr, &payload.ns(), payload.name())
        .or_else(|| {
            (addr == Addr::SelfBare)
                .then(|| {
                    core.registry
                        .iq_handler(set, Addr::Bare, &payload.ns(), payload.name())
                })
                .flatten()
        });
    let reply = match handler {
        Some(h) => {
            let cx = IqCtx {
                core,
                session,
                to: to.as_ref(),
                addr,
                payload,
            };
            h(cx).await
        }
        None => Err(StanzaError::service_unavailable()),
    };
    let default_from = session.jid.to_bare();
    match reply {
        Ok(payload) => session.send(crate::stanza::iq_result(
            &iq,
            payload,
            default_from.as_str(),
        )),
        Err(e) => bounce(session, &iq, e),
    }
}

/// Send the sender an error reply for `stanza` (if the stanza may have one).
pub fn bounce(session: &SessionHandle, stanza: &Element, err: StanzaError) {
    if let Some(mut reply) = error_reply(stanza, &err) {
        if reply.attr("from").is_none() {
            attr_set(&mut reply, "from", session.jid.domain().as_str());
        }
        session.send(reply);
    }
}
