//! PEP across federation (XEP-0163 §4.3 for contacts on other servers): which
//! resources of remote contacts are available and which `+notify` features
//! their entity capabilities list, learned from the presence they send to
//! Kith users.
//!
//! A remote contact's available presence with a XEP-0115/XEP-0390 claim is
//! looked up in the capability cache of `xep::caps`; an unknown hash makes
//! the server ask that full JID for its disco#info across s2s (through
//! `iq_out`, one question per remote resource at a time), verified and cached
//! exactly like a local client's. Once the features are known, the Kith user
//! the presence was addressed to sends that resource the last item of each
//! node it wants (XEP-0163 §6.2). Only contacts subscribed to the Kith user's
//! presence are tracked, at most [`MAX_REMOTE_RESOURCES`] resources; beyond
//! that a resource gets no notifications until others go offline. An
//! unavailable presence forgets the resource; a resource whose server link
//! drops without one stays until its next presence.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::access;
use super::config::{NodeConfig, SendLast};
use super::notify::{items_event, message_to};
use crate::core::Core;
use crate::deliver::username;
use crate::xep::caps::{self, Claim, Features};
use crate::xml::{el, ns};

/// Remote resources whose capabilities are remembered at one time.
pub const MAX_REMOTE_RESOURCES: usize = 10_000;

/// What the server knows of remote contacts' resources.
#[derive(Debug, Default)]
pub struct RemoteCaps {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bare JID → resource → (claim key, features, Kith users who already
    /// sent this resource their last items).
    by_contact: HashMap<BareJid, HashMap<String, Resource>>,
    count: usize,
    /// Remote full JIDs being asked for disco#info, with the Kith users
    /// waiting to send them their last items.
    querying: HashMap<FullJid, (String, HashSet<BareJid>)>,
}

#[derive(Debug)]
struct Resource {
    key: String,
    features: Arc<Features>,
    served: HashSet<BareJid>,
}

impl RemoteCaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The available resources of `contact` that asked for `node` (`node+notify`).
    pub fn interested(&self, contact: &BareJid, node: &str) -> Vec<FullJid> {
        let want = format!("{node}+notify");
        let inner = self.lock();
        let Some(resources) = inner.by_contact.get(contact) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter(|(_, r)| r.features.contains(&want))
            .filter_map(|(res, _)| FullJid::new(&format!("{contact}/{res}")).ok())
            .collect()
    }

    fn forget(&self, full: &FullJid) {
        let mut inner = self.lock();
        let bare = full.to_bare();
        let mut removed = false;
        if let Some(m) = inner.by_contact.get_mut(&bare) {
            removed = m.remove(full.resource().as_str()).is_some();
            if m.is_empty() {
                inner.by_contact.remove(&bare);
            }
        }
        if removed {
            inner.count -= 1;
        }
        inner.querying.remove(full);
    }

    /// Record `full`'s features; returns whether `owner` still has to send
    /// it the last items (false when already done or when the table is full).
    fn set(&self, full: &FullJid, key: &str, features: Arc<Features>, owner: &BareJid) -> bool {
        let mut inner = self.lock();
        let bare = full.to_bare();
        let res = full.resource().as_str().to_string();
        let exists = inner
            .by_contact
            .get(&bare)
            .is_some_and(|m| m.contains_key(&res));
        if !exists {
            if inner.count >= MAX_REMOTE_RESOURCES {
                return false;
            }
            inner.count += 1;
        }
        let entry = inner
            .by_contact
            .entry(bare)
            .or_default()
            .entry(res)
            .or_insert_with(|| Resource {
                key: key.to_string(),
                features: features.clone(),
                served: HashSet::new(),
            });
        if entry.key != key {
            entry.key = key.to_string();
            entry.features = features;
            entry.served.clear();
        }
        entry.served.insert(owner.clone())
    }

    /// Whether `full` is known with the claim `key` and `owner` served it.
    fn served(&self, full: &FullJid, key: &str, owner: &BareJid) -> bool {
        self.lock()
            .by_contact
            .get(&full.to_bare())
            .and_then(|m| m.get(full.resource().as_str()))
            .is_some_and(|r| r.key == key && r.served.contains(owner))
    }
}

/// A presence from a remote `from` to the local account `owner` (called by
/// `s2s::inbound` for available and unavailable presence).
pub async fn presence(core: &Arc<Core>, p: &Element, from: &Jid, owner: &BareJid) {
    let Ok(full) = from.clone().try_into_full() else {
        return;
    };
    if p.attr("type").is_some() {
        core.caps.remote.forget(&full);
        return;
    }
    let contact = full.to_bare();
    // Contacts only (their presence reaches `owner` through a subscription);
    // whether they may see a node is checked when something is sent.
    let contact_of_owner = matches!(
        core.db.roster_item(username(owner), contact.as_str()).await,
        Ok(Some(i)) if i.subscription.has_from() || i.subscription.has_to()
    );
    if !contact_of_owner {
        return;
    }
    let Some(c) = caps::claim(p) else {
        core.caps.remote.forget(&full);
        return;
    };
    if core.caps.remote.served(&full, &c.key, owner) {
        return;
    }
    if let Some(f) = core.caps.cached(&c.key) {
        if core.caps.remote.set(&full, &c.key, f, owner) {
            last_items(core, owner, &full, true).await;
        }
        return;
    }
    {
        let mut inner = core.caps.remote.lock();
        if let Some((key, waiting)) = inner.querying.get_mut(&full) {
            if *key == c.key {
                waiting.insert(owner.clone());
                return;
            }
        }
        let waiting = HashSet::from([owner.clone()]);
        inner
            .querying
            .insert(full.clone(), (c.key.clone(), waiting));
    }
    let iq = el("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("from", core.domain.clone())
        .attr("to", full.as_str())
        .child(
            el("query", caps::NS_DISCO_INFO)
                .attr("node", c.node.clone())
                .build(),
        )
        .build();
    let (core2, full2) = (core.clone(), full.clone());
    let then: crate::iq_out::Then =
        Box::new(move |reply| Box::pin(async move { learned(&core2, &full2, &c, reply).await }));
    let core3 = core.clone();
    let send = move |iq| {
        crate::s2s::route_out(&core3, iq);
        true
    };
    if !crate::iq_out::request_then(core, iq, caps::QUERY_TIMEOUT, send, then) {
        core.caps.remote.lock().querying.remove(&full);
    }
}

/// The remote resource answered (or not) the disco#info question behind `c`.
async fn learned(core: &Arc<Core>, full: &FullJid, c: &Claim, reply: Option<Element>) {
    let querying = core.caps.remote.lock().querying.remove(full);
    let waiting = match querying {
        Some((key, waiting)) if key == c.key => waiting,
        _ => return, // gone offline, or changed its claim meanwhile
    };
    let Some((features, verified)) = reply.as_ref().and_then(|r| caps::check(r, c)) else {
        tracing::debug!(%full, "no usable disco#info from a remote contact");
        return;
    };
    let features = Arc::new(features);
    if verified {
        core.caps.cache(&c.key, features.clone());
    }
    for owner in waiting {
        if core.caps.remote.set(full, &c.key, features.clone(), &owner) {
            last_items(core, &owner, full, true).await;
        }
    }
}

/// `subscriber`, on another server, was just allowed to see `owner`'s
/// presence: its known resources get `owner`'s last items now.
pub async fn subscribed(core: &Arc<Core>, owner: &BareJid, subscriber: &BareJid) {
    let resources: Vec<FullJid> = {
        let inner = core.caps.remote.lock();
        inner
            .by_contact
            .get(subscriber)
            .map(|m| {
                m.keys()
                    .filter_map(|r| FullJid::new(&format!("{subscriber}/{r}")).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for full in resources {
        last_items(core, owner, &full, false).await;
    }
}

/// Send the remote resource `to` the last item of each of `owner`'s nodes it
/// wants and may see, whose `send_last_published_item` allows it
/// (`on_sub_and_presence` when it came online, also `on_sub` when it was
/// just subscribed).
async fn last_items(core: &Arc<Core>, owner: &BareJid, to: &FullJid, on_presence: bool) {
    let user = username(owner).to_string();
    let Ok(nodes) = core.db.pep_nodes(&user).await else {
        return;
    };
    let wanted = core.caps.remote.interested_nodes(to);
    for (node, row) in nodes {
        if !wanted.contains(&format!("{node}+notify")) {
            continue;
        }
        let cfg = NodeConfig::from_row(&row);
        let send = match cfg.send_last {
            SendLast::Never => false,
            SendLast::OnSub => !on_presence,
            SendLast::OnSubAndPresence => true,
        };
        if !send
            || access::check(core, owner, &cfg, &to.to_bare())
                .await
                .is_err()
        {
            continue;
        }
        if let Ok(items) = core.db.pep_items(&user, &node, 1, usize::MAX).await {
            if !items.is_empty() {
                crate::s2s::route_out(
                    core,
                    message_to(owner, to.as_str(), items_event(&node, &items)),
                );
            }
        }
    }
}

impl RemoteCaps {
    /// The features of one remote resource (empty when unknown).
    fn interested_nodes(&self, full: &FullJid) -> Arc<Features> {
        self.lock()
            .by_contact
            .get(&full.to_bare())
            .and_then(|m| m.get(full.resource().as_str()))
            .map(|r| r.features.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).expect("jid")
    }

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).expect("jid")
    }

    fn nick_features() -> Arc<Features> {
        Arc::new(Features::from([
            "http://jabber.org/protocol/nick+notify".to_string()
        ]))
    }

    #[test]
    fn only_interested_resources_are_notified_and_unavailable_ones_forgotten() {
        let r = RemoteCaps::default();
        let dave = bare("dave@kith.test");
        let phone = full("quinn@peer.test/phone");
        let laptop = full("quinn@peer.test/laptop");
        assert!(r.set(&phone, "k1", nick_features(), &dave));
        assert!(!r.set(&phone, "k1", nick_features(), &dave), "served once");
        assert!(r.set(&laptop, "k2", Arc::new(Features::new()), &dave));
        let quinn = bare("quinn@peer.test");
        let nick = "http://jabber.org/protocol/nick";
        assert_eq!(r.interested(&quinn, nick), vec![phone.clone()]);
        assert!(r.served(&phone, "k1", &dave));
        assert!(
            !r.served(&phone, "k2", &dave),
            "a new claim is served again"
        );
        r.forget(&phone);
        assert!(r.interested(&quinn, nick).is_empty());
        r.forget(&laptop);
        assert_eq!(r.lock().count, 0);
        assert!(r.lock().by_contact.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let r = RemoteCaps::default();
        let dave = bare("dave@kith.test");
        for i in 0..MAX_REMOTE_RESOURCES {
            assert!(r.set(
                &full(&format!("q@peer.test/{i}")),
                "k",
                nick_features(),
                &dave
            ));
        }
        assert!(!r.set(&full("q@peer.test/one-more"), "k", nick_features(), &dave));
        assert_eq!(r.lock().count, MAX_REMOTE_RESOURCES);
    }
}
