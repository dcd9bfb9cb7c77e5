//! Bind2 (XEP-0386): resource binding inside the SASL2 `<authenticate/>`.
//!
//! The resource is `<tag>.<hash>`: the client's `<tag/>` (its name, cut to 32
//! characters) and 8 hex digits of HMAC-SHA-256(server secret, account NUL
//! user-agent id), so the same device always gets the same resource (and a
//! reconnecting phone replaces its own stale session), while the id itself is
//! not revealed. Without a user-agent id the suffix is random.
//!
//! Inline features are pluggable: a module calls `Registry::bind2_inline(ns, handler)`
//! (carbons and CSI do); the feature is then listed in `<bind><inline/>` and its
//! handler gets the request child in that namespace, returning the element for
//! `<bound/>` and an effect applied to the session before it becomes routable.
//! XEP-0198 `<enable/>` is listed the same way by the stream-management
//! module, but answered by SASL2 (`Sm::enable_inline`): its state belongs to
//! the connection, which an effect on the session handle cannot reach.

use jid::{BareJid, FullJid};
use minidom::Element;

use crate::core::Core;
use crate::registry::SessionEffect;
use crate::xml::el;

/// The Bind2 namespace.
pub const NS: &str = "urn:xmpp:bind:0";
/// Longest tag kept in a resource, in characters.
const MAX_TAG: usize = 32;

/// The `<bind/>` SASL2 inline feature with the registered inline features.
pub fn feature(core: &Core) -> Element {
    let inline = el("inline", NS).children(
        core.registry
            .bind2_features()
            .into_iter()
            .map(|var| el("feature", NS).attr("var", var).build()),
    );
    el("bind", NS).child(inline.build()).build()
}

/// The resource for a client of `username` with this tag and user-agent id.
pub fn resource(
    secret: &[u8],
    username: &str,
    tag: Option<&str>,
    agent_id: Option<&str>,
) -> String {
    let suffix = match agent_id {
        Some(id) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            let mut ctx = ring::hmac::Context::with_key(&key);
            ctx.update(username.as_bytes());
            ctx.update(b"\0");
            ctx.update(id.as_bytes());
            ctx.sign().as_ref()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
        None => crate::core::random_hex(4),
    };
    let tag: String = tag
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && *c != '/' && *c != '@')
        .take(MAX_TAG)
        .collect();
    if tag.is_empty() {
        suffix
    } else {
        format!("{tag}.{suffix}")
    }
}

/// A resource bound by Bind2.
pub struct Bound {
    pub jid: FullJid,
    /// `<bound/>` for the SASL2 `<success/>`.
    pub bound: Element,
    /// What inline features do to the session once it exists.
    pub effects: Vec<SessionEffect>,
    /// Stream management, when `<enable/>` was inline (set by SASL2).
    pub sm: crate::sm::Sm,
}

/// Bind a resource for `bare` as the `<bind/>` request `req` asks.
pub fn bind(core: &Core, bare: &BareJid, req: &Element, agent_id: Option<&str>) -> Option<Bound> {
    let username = bare.node().map(|n| n.as_str()).unwrap_or("");
    let tag = req.get_child("tag", NS).map(|t| t.text());
    let res = resource(&core.scram_secret, username, tag.as_deref(), agent_id);
    // A tag the JID library still refuses (resourceprep) is dropped.
    let jid = bare
        .with_resource_str(&res)
        .or_else(|_| {
            bare.with_resource_str(&resource(&core.scram_secret, username, None, agent_id))
        })
        .ok()?;
    let mut bound = el("bound", NS);
    let mut effects = Vec::new();
    for child in req.children() {
        if child.ns() == NS {
            continue;
        }
        let Some(h) = core.registry.bind2_handler(&child.ns()) else {
            tracing::debug!(ns = %child.ns(), "ignoring an unknown Bind2 inline request");
            continue;
        };
        let out = h(core, bare, child);
        if let Some(b) = out.bound {
            bound = bound.child(b);
        }
        effects.extend(out.effect);
    }
    Some(Bound {
        jid,
        bound: bound.build(),
        effects,
        sm: crate::sm::Sm::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_device_same_resource_other_device_other_resource() {
        let a = resource(b"k", "alice", Some("Phone"), Some("uuid-1"));
        assert_eq!(a, resource(b"k", "alice", Some("Phone"), Some("uuid-1")));
        assert!(
            a.starts_with("Phone.") && a.len() == "Phone.".len() + 8,
            "{a}"
        );
        assert_ne!(a, resource(b"k", "alice", Some("Phone"), Some("uuid-2")));
        assert_ne!(a, resource(b"k", "bob", Some("Phone"), Some("uuid-1")));
        assert_ne!(
            a,
            resource(b"other", "alice", Some("Phone"), Some("uuid-1"))
        );
        // No user agent: random each time.
        assert_ne!(
            resource(b"k", "alice", Some("Phone"), None),
            resource(b"k", "alice", Some("Phone"), None)
        );
    }

    #[test]
    fn tags_are_cleaned_and_bounded() {
        let r = resource(b"k", "alice", Some("my phone/x@y"), Some("id"));
        assert!(r.starts_with("myphonexy."), "{r}");
        let long = "x".repeat(100);
        let r = resource(b"k", "alice", Some(&long), Some("id"));
        assert_eq!(r.len(), MAX_TAG + 1 + 8);
        assert_eq!(resource(b"k", "alice", None, Some("id")).len(), 8);
    }
}
