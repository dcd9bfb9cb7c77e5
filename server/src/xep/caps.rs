//! Entity capabilities, XEP-0115 (`http://jabber.org/protocol/caps`) and
//! XEP-0390 (`urn:xmpp:caps`): what each client session says it supports.
//!
//! A client's available presence carries a hash of its disco#info. When the
//! server has not seen that hash, it asks the client (`iq_out`) for the
//! disco#info behind it, recomputes the hash and, if it matches, caches the
//! feature set under it (at most [`MAX_CACHED`] hashes, oldest dropped
//! first, each at most [`MAX_FEATURE_BYTES`]). A reply that does not match the hash is used for that session only
//! and never cached, so one client cannot poison what others are believed to
//! support. PEP reads the result to send a session only the notifications it
//! asked for (`<node>+notify`, XEP-0163 §4.3). XEP-0390 claims are checked
//! with SHA-256 (the hash every implementation must offer); a claim with only
//! other hash functions is ignored, as is a legacy claim without `hash`
//! (believed for the session, never cached). Remote contacts' claims go
//! through the same checks and cache (`pubsub::remote`).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use minidom::Element;

use crate::core::Core;
use crate::registry::{BoxFuture, Module, Registry, SessionEvent};
use crate::session::SessionHandle;
use crate::xml::{el, ns};

pub const MODULE: Module = Module {
    name: "caps",
    register,
};

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
pub const NS_CAPS2: &str = "urn:xmpp:caps";
const NS_HASHES: &str = "urn:xmpp:hashes:2";
pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DATA: &str = "jabber:x:data";

/// Verified capability hashes kept in memory.
pub const MAX_CACHED: usize = 500;
/// Most bytes of feature names one client may advertise (a busy desktop
/// client needs about 5 KiB); a larger set is not used at all, so the cache
/// stays under `MAX_CACHED` × this (8 MiB) whatever clients claim.
pub const MAX_FEATURE_BYTES: usize = 16 * 1024;
/// How long the server waits for a client's disco#info answer.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A set of disco features.
pub type Features = BTreeSet<String>;

fn register(r: &mut Registry) {
    r.presence_hook(on_presence);
    r.hook(SessionEvent::InitialPresence, back_online);
    r.hook(SessionEvent::Ended, ended);
}

/// A session became available again (after an unavailable presence) with
/// capabilities already known: it gets the last items again (XEP-0163 §6.2).
fn back_online<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let known = {
            let mut inner = core.caps.lock();
            let fresh = inner.fresh.remove(&session.id);
            !fresh && inner.sessions.contains_key(&session.id)
        };
        if known {
            crate::pubsub::caps_known(core, session).await;
        }
    })
}

/// The capability state of the server: verified hashes and each session's set.
#[derive(Debug, Default)]
pub struct Caps {
    inner: Mutex<Inner>,
    /// Remote contacts' capabilities, for PEP across federation.
    pub remote: crate::pubsub::remote::RemoteCaps,
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<String, Arc<Features>>,
    order: VecDeque<String>,
    sessions: HashMap<u64, (String, Arc<Features>)>,
    querying: HashSet<u64>,
    /// Sessions whose latest presence already led to (or will lead to) a
    /// last-items delivery, so the initial-presence hook must not repeat it.
    fresh: HashSet<u64>,
}

impl Caps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a session asked for notifications of `node` (`node+notify`).
    pub fn wants_notify(&self, session_id: u64, node: &str) -> bool {
        self.lock()
            .sessions
            .get(&session_id)
            .is_some_and(|(_, f)| f.contains(&format!("{node}+notify")))
    }

    /// The verified feature set cached under a claim's key, if any.
    pub(crate) fn cached(&self, key: &str) -> Option<Arc<Features>> {
        self.lock().by_hash.get(key).cloned()
    }

    pub(crate) fn cache(&self, key: &str, features: Arc<Features>) {
        let mut inner = self.lock();
        if inner.by_hash.contains_key(key) {
            return;
        }
        while inner.order.len() >= MAX_CACHED {
            if let Some(old) = inner.order.pop_front() {
                inner.by_hash.remove(&old);
            }
        }
        inner.order.push_back(key.to_string());
        inner.by_hash.insert(key.to_string(), features);
    }

    fn set_session(&self, id: u64, key: &str, features: Arc<Features>) {
        self.lock().sessions.insert(id, (key.to_string(), features));
    }
}

/// What a presence claims: the hash (for the cache key), the disco node to
/// ask, and how to verify the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) key: String,
    pub(crate) node: String,
    algo: Algo,
    hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    /// XEP-0115 with `hash='sha-1'` (or a legacy claim without a hash: not verifiable).
    Legacy(Option<&'static str>),
    /// XEP-0390 with SHA-256.
    Caps2Sha256,
}

pub(crate) fn claim(p: &Element) -> Option<Claim> {
    // XEP-0390 first: the newer protocol wins when a client sends both.
    if let Some(c) = p.get_child("c", NS_CAPS2) {
        if let Some(h) = c
            .children()
            .find(|h| h.is("hash", NS_HASHES) && h.attr("algo") == Some("sha-256"))
        {
            let hash = h.text().trim().to_string();
            return Some(Claim {
                key: format!("390 sha-256 {hash}"),
                node: format!("urn:xmpp:caps#sha-256.{hash}"),
                algo: Algo::Caps2Sha256,
                hash,
            });
        }
    }
    let c = p.get_child("c", NS_CAPS)?;
    let (node, ver) = (c.attr("node")?, c.attr("ver")?);
    let algo = match c.attr("hash") {
        Some("sha-1") => Algo::Legacy(Some("sha-1")),
        _ => Algo::Legacy(None),
    };
    Some(Claim {
        key: format!("115 {} {node} {ver}", c.attr("hash").unwrap_or("-")),
        node: format!("{node}#{ver}"),
        algo,
        hash: ver.to_string(),
    })
}

fn on_presence<'a>(
    core: &'a Arc<Core>,
    session: &'a Arc<SessionHandle>,
    p: &'a Element,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        core.caps.lock().fresh.remove(&session.id);
        let Some(c) = claim(p) else { return };
        let cached = {
            let mut inner = core.caps.lock();
            if inner
                .sessions
                .get(&session.id)
                .is_some_and(|(k, _)| *k == c.key)
            {
                return; // same capabilities as before
            }
            inner.fresh.insert(session.id);
            match inner.by_hash.get(&c.key).cloned() {
                Some(f) => Some(f),
                None => {
                    // One question per session at a time: a client cannot make
                    // the server fill the outstanding-IQ table.
                    if !inner.querying.insert(session.id) {
                        return;
                    }
                    None
                }
            }
        };
        if let Some(f) = cached {
            core.caps.set_session(session.id, &c.key, f);
            crate::pubsub::caps_known(core, session).await;
            return;
        }
        let iq = el("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("from", core.domain.clone())
            .attr("to", session.jid.to_string())
            .child(
                el("query", NS_DISCO_INFO)
                    .attr("node", c.node.clone())
                    .build(),
            )
            .build();
        let (core2, session2) = (core.clone(), session.clone());
        // The answer is handled in the session's stanza order: what the
        // client sends after answering already sees its capabilities.
        let then: crate::iq_out::Then = Box::new(move |reply| {
            Box::pin(async move { learned(&core2, &session2, &c, reply).await })
        });
        let target = session.clone();
        let send = move |iq| {
            target.send(iq);
            true
        };
        if !crate::iq_out::request_then(core, iq, QUERY_TIMEOUT, send, then) {
            core.caps.lock().querying.remove(&session.id);
        }
    })
}

/// The client answered (or not) the disco#info question behind `c`.
async fn learned(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    c: &Claim,
    reply: Option<Element>,
) {
    core.caps.lock().querying.remove(&session.id);
    let Some((features, verified)) = reply.as_ref().and_then(|r| check(r, c)) else {
        tracing::debug!(jid = %session.jid, "no usable disco#info for the capability hash");
        return;
    };
    let features = Arc::new(features);
    if verified {
        core.caps.cache(&c.key, features.clone());
    } else {
        tracing::debug!(jid = %session.jid, "capability hash did not verify; not cached");
    }
    // The session may have ended while we waited.
    if core
        .sessions
        .get(&session.jid)
        .is_some_and(|s| s.id == session.id)
    {
        core.caps.set_session(session.id, &c.key, features);
        crate::pubsub::caps_known(core, session).await;
        // The client may have changed its capabilities while we asked.
        let last = session.state().last();
        if let Some(p) = last.filter(|p| claim(p).is_some_and(|l| l.key != c.key)) {
            on_presence(core, session, &p).await;
        }
    }
}

/// The features of a disco#info reply and whether they hash to the claim.
pub(crate) fn check(reply: &Element, c: &Claim) -> Option<(Features, bool)> {
    if reply.attr("type") != Some("result") {
        return None;
    }
    let query = reply.get_child("query", NS_DISCO_INFO)?;
    let features: Features = query
        .children()
        .filter(|f| f.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect();
    if features.iter().map(String::len).sum::<usize>() > MAX_FEATURE_BYTES {
        return None;
    }
    let verified = match c.algo {
        Algo::Legacy(Some(_)) => legacy_ver(query).is_some_and(|v| v == c.hash),
        Algo::Legacy(None) => false,
        Algo::Caps2Sha256 => caps2_sha256(query).is_some_and(|v| v == c.hash),
    };
    Some((features, verified))
}

fn ended<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let mut inner = core.caps.lock();
        inner.sessions.remove(&session.id);
        inner.querying.remove(&session.id);
        inner.fresh.remove(&session.id);
    })
}

fn lang(e: &Element) -> String {
    // minidom keeps xml:lang under the XML namespace.
    e.attrs()
        .iter()
        .find(|((n, k), _)| n.as_str() == ns::XML && k.as_str() == "lang")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn forms(query: &Element) -> Vec<&Element> {
    query.children().filter(|x| x.is("x", NS_DATA)).collect()
}

fn field_values(f: &Element) -> Vec<String> {
    f.children()
        .filter(|v| v.is("value", NS_DATA))
        .map(|v| v.text())
        .collect()
}

/// The XEP-0115 §5.1 verification string, hashed with SHA-1 and base64-encoded.
pub fn legacy_ver(query: &Element) -> Option<String> {
    let mut ids: Vec<String> = query
        .children()
        .filter(|i| i.is("identity", NS_DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                lang(i),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    let mut feats: Vec<&str> = query
        .children()
        .filter(|f| f.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    feats.sort_unstable();
    let mut s = String::new();
    for i in ids {
        s.push_str(&i);
        s.push('<');
    }
    for f in feats {
        s.push_str(f);
        s.push('<');
    }
    let mut typed: Vec<(String, &Element)> = Vec::new();
    for x in forms(query) {
        let ft = x
            .children()
            .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some("FORM_TYPE"))
            .map(|f| field_values(f).join(""))?;
        typed.push((ft, x));
    }
    typed.sort_by(|a, b| a.0.cmp(&b.0));
    for (ft, x) in typed {
        s.push_str(&ft);
        s.push('<');
        let mut fields: Vec<(&str, Vec<String>)> = x
            .children()
            .filter(|f| f.is("field", NS_DATA))
            .filter_map(|f| Some((f.attr("var")?, field_values(f))))
            .filter(|(v, _)| *v != "FORM_TYPE")
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (var, mut values) in fields {
            s.push_str(var);
            s.push('<');
            values.sort();
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    Some(base64::engine::general_purpose::STANDARD.encode(d.as_ref()))
}

/// The XEP-0390 §4.1 hash input, hashed with SHA-256 and base64-encoded.
/// `None` when the disco#info may not be hashed (unexpected children).
pub fn caps2_sha256(query: &Element) -> Option<String> {
    const L1: u8 = 0x1c;
    const L2: u8 = 0x1d;
    const L3: u8 = 0x1e;
    const L4: u8 = 0x1f;
    let mut feats: Vec<Vec<u8>> = Vec::new();
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut exts: Vec<Vec<u8>> = Vec::new();
    for c in query.children() {
        if c.is("feature", NS_DISCO_INFO) {
            let mut v = c.attr("var").unwrap_or("").as_bytes().to_vec();
            v.push(L4);
            feats.push(v);
        } else if c.is("identity", NS_DISCO_INFO) {
            let mut v = Vec::new();
            for part in [
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
                &lang(c),
                c.attr("name").unwrap_or(""),
            ] {
                v.extend_from_slice(part.as_bytes());
                v.push(L4);
            }
            v.push(L3);
            ids.push(v);
        } else if c.is("x", NS_DATA) {
            if c.has_child("reported", NS_DATA) || c.has_child("item", NS_DATA) {
                return None;
            }
            let mut fields: Vec<Vec<u8>> = Vec::new();
            for f in c.children().filter(|f| f.is("field", NS_DATA)) {
                let mut values: Vec<Vec<u8>> = field_values(f)
                    .into_iter()
                    .map(|v| {
                        let mut b = v.into_bytes();
                        b.push(L4);
                        b
                    })
                    .collect();
                values.sort();
                let mut b = f.attr("var").unwrap_or("").as_bytes().to_vec();
                b.push(L4);
                b.extend(values.concat());
                b.push(L3);
                fields.push(b);
            }
            fields.sort();
            let mut b = fields.concat();
            b.push(L2);
            exts.push(b);
        } else {
            return None;
        }
    }
    feats.sort();
    ids.sort();
    exts.sort();
    let mut input = feats.concat();
    input.push(L1);
    input.extend(ids.concat());
    input.push(L1);
    input.extend(exts.concat());
    input.push(L1);
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    Some(base64::engine::general_purpose::STANDARD.encode(d.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(identity: (&str, &str, &str), features: &[&str]) -> Element {
        el("query", NS_DISCO_INFO)
            .child(
                el("identity", NS_DISCO_INFO)
                    .attr("category", identity.0)
                    .attr("type", identity.1)
                    .attr("name", identity.2)
                    .build(),
            )
            .children(
                features
                    .iter()
                    .map(|f| el("feature", NS_DISCO_INFO).attr("var", *f).build()),
            )
            .build()
    }

    #[test]
    fn xep0115_simple_example_verifies() {
        let q = query(
            ("client", "pc", "Exodus 0.9.1"),
            &[
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
                "http://jabber.org/protocol/caps",
            ],
        );
        assert_eq!(
            legacy_ver(&q).as_deref(),
            Some("QgayPKawpkPSDYmwT/WM94uAlu0=")
        );
    }

    #[test]
    fn xep0390_simple_example_verifies() {
        let q = query(
            ("client", "mobile", "BombusMod"),
            &[
                "http://jabber.org/protocol/si",
                "http://jabber.org/protocol/bytestreams",
                "http://jabber.org/protocol/chatstates",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "urn:xmpp:ping",
                "jabber:iq:time",
                "jabber:iq:privacy",
                "jabber:iq:version",
                "http://jabber.org/protocol/rosterx",
                "urn:xmpp:time",
                "jabber:x:oob",
                "http://jabber.org/protocol/ibb",
                "http://jabber.org/protocol/si/profile/file-transfer",
                "urn:xmpp:receipts",
                "jabber:iq:roster",
                "jabber:iq:last",
            ],
        );
        assert_eq!(
            caps2_sha256(&q).as_deref(),
            Some("kzBZbkqJ3ADrj7v08reD1qcWUwNGHaidNUgD7nHpiw8=")
        );
    }

    #[test]
    fn presence_claims_prefer_xep0390() {
        let p = el("presence", ns::CLIENT)
            .child(
                el("c", NS_CAPS)
                    .attr("hash", "sha-1")
                    .attr("node", "http://n")
                    .attr("ver", "abc=")
                    .build(),
            )
            .build();
        let c = claim(&p).expect("claim");
        assert_eq!(c.node, "http://n#abc=");
        assert_eq!(c.algo, Algo::Legacy(Some("sha-1")));
        let p2 = el("presence", ns::CLIENT)
            .child(
                el("c", NS_CAPS2)
                    .child(
                        el("hash", NS_HASHES)
                            .attr("algo", "sha-256")
                            .text("xyz=")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(
            claim(&p2).expect("claim").node,
            "urn:xmpp:caps#sha-256.xyz="
        );
    }
}
