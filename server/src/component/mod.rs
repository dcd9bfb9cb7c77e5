//! External components (XEP-0114, `jabber:component:accept`): services such
//! as a push app server that run as separate programs, connect to a loopback
//! port, prove a shared secret and then own a domain (`push.example.org`).
//!
//! This file owns the table of connected components and the delivery of
//! stanzas *to* them; `conn.rs` runs a component's connection (handshake, read
//! and write loop) and `route.rs` routes the stanzas a component sends. A
//! component's outbound queue is a [`SessionHandle`], so it is bounded exactly
//! like a client's, and it rewrites every stanza into the component
//! namespace, whoever queues it.

mod conn;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jid::Jid;
use minidom::{Element, Node};

use crate::core::Core;
use crate::registry::{Module, Registry};
use crate::router::bounce;
use crate::session::SessionHandle;
use crate::stanza::{Kind, StanzaError};

pub use conn::serve;

/// The namespace of component streams.
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// The component module: lists connected components in the server's disco#items.
pub const MODULE: Module = Module {
    name: "component",
    register,
};

fn register(r: &mut Registry) {
    r.host_items(|core| core.components.domains());
}

/// The connected components, by domain (lowercase). One connection per domain.
#[derive(Debug, Default)]
pub struct Components {
    map: RwLock<HashMap<String, Arc<SessionHandle>>>,
}

impl Components {
    /// Claim `domain` for a connection; false if another connection has it.
    fn claim(&self, domain: &str, handle: Arc<SessionHandle>) -> bool {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(domain) {
            return false;
        }
        map.insert(domain.to_string(), handle);
        true
    }

    /// Release `domain` if this connection (`id`) still holds it.
    fn release(&self, domain: &str, id: u64) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.get(domain).is_some_and(|h| h.id == id) {
            map.remove(domain);
        }
    }

    /// The connection serving `domain`.
    pub fn get(&self, domain: &str) -> Option<Arc<SessionHandle>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&domain.to_ascii_lowercase()).cloned()
    }

    /// Domains with a connected component, sorted.
    pub fn domains(&self) -> Vec<String> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut d: Vec<String> = map.keys().cloned().collect();
        d.sort();
        d
    }
}

/// Whether `domain` is a configured component domain.
pub fn is_component(core: &Core, domain: &str) -> bool {
    core.config
        .components
        .contains_key(&domain.to_ascii_lowercase())
}

/// Queue `stanza` (already addressed and stamped) for the component serving
/// its `to` domain. Returns false if no component serves it now.
pub fn send(core: &Core, stanza: &Element) -> bool {
    let Some(to) = stanza.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return false;
    };
    match core.components.get(to.domain().as_str()) {
        Some(h) => {
            // The handle moves it to the component namespace (conn.rs).
            h.send(stanza.clone());
            true
        }
        None => false,
    }
}

/// Router hook for a stanza from a local client: if it is addressed to a
/// component domain, forward it (or bounce it when the component is not
/// connected) and return true; otherwise return false and route as usual.
pub fn route_from_client(
    core: &Core,
    session: &SessionHandle,
    stanza: &Element,
    to: Option<&Jid>,
) -> bool {
    let Some(to) = to else { return false };
    if !is_component(core, to.domain().as_str()) {
        return false;
    }
    if !send(core, stanza) && Kind::of(stanza) != Some(Kind::Presence) {
        bounce(
            session,
            stanza,
            StanzaError::service_unavailable().with_text("that service is not connected"),
        );
    }
    true
}

/// A copy of `el` with every element in namespace `from` moved to `to`
/// (`jabber:client` stanzas become `jabber:component:accept` ones and back).
pub fn renamespace(el: &Element, from: &str, to: &str) -> Element {
    let ns = el.ns();
    let mut out = Element::bare(el.name(), if ns == from { to } else { ns.as_str() });
    *out.attrs_mut() = el.attrs().clone();
    for node in el.nodes() {
        match node {
            Node::Element(c) => {
                out.append_child(renamespace(c, from, to));
            }
            Node::Text(t) => out.append_text_node(t.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{el, ns};

    #[test]
    fn stanzas_change_namespace_and_keep_everything_else() {
        let m = el("message", ns::CLIENT)
            .attr("to", "push.localhost")
            .child(el("body", ns::CLIENT).text("hi & bye").build())
            .child(Element::bare(
                "active",
                "http://jabber.org/protocol/chatstates",
            ))
            .build();
        let c = renamespace(&m, ns::CLIENT, NS_COMPONENT);
        assert_eq!(c.ns(), NS_COMPONENT);
        assert_eq!(c.attr("to"), Some("push.localhost"));
        assert_eq!(
            c.get_child("body", NS_COMPONENT).map(|b| b.text()),
            Some("hi & bye".to_string())
        );
        assert!(c.has_child("active", "http://jabber.org/protocol/chatstates"));
        assert_eq!(renamespace(&c, NS_COMPONENT, ns::CLIENT), m);
    }
}
