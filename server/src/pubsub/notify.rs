//! PEP notifications (XEP-0163 §4.3, XEP-0060 §7.1.2): who gets an event for
//! a node, and the last items a session gets when its capabilities become
//! known (XEP-0163 §6.2, "last published item on presence").
//!
//! Recipients are the owner's own resources and the available resources of
//! contacts subscribed to the owner's presence whom the access model admits
//! — and of those only the sessions whose entity capabilities list
//! `<node>+notify` (filtered notifications, XEP-0163 §5) — plus whoever
//! subscribed to the node explicitly (XEP-0060 §6.1) and is still admitted.
//! Contacts on other servers are reached across s2s, at the resources
//! `remote` knows to be available and interested.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use super::config::{NodeConfig, SendLast};
use super::{access, NS_EVENT};
use crate::core::Core;
use crate::deliver::{available, username};
use crate::session::SessionHandle;
use crate::storage::pubsub::ItemRow;
use crate::xml::{el, ns};

/// `<item id='…'>payload</item>` in `item_ns` (payloads that no longer parse are left out).
pub fn item_element(item_ns: &str, item: &ItemRow) -> Element {
    el("item", item_ns)
        .attr("id", item.id.clone())
        .children(item.payload.parse::<Element>().ok())
        .build()
}

/// An event's `<items node='…'>` carrying these items.
pub fn items_event(node: &str, items: &[ItemRow]) -> Element {
    el("items", NS_EVENT)
        .attr("node", node)
        .children(items.iter().map(|i| item_element(NS_EVENT, i)))
        .build()
}

/// An event's `<items node='…'><retract id='…'/></items>`.
pub fn retract_event(node: &str, id: &str) -> Element {
    el("items", NS_EVENT)
        .attr("node", node)
        .child(el("retract", NS_EVENT).attr("id", id).build())
        .build()
}

/// An event's `<purge node='…'/>`.
pub fn purge_event(node: &str) -> Element {
    el("purge", NS_EVENT).attr("node", node).build()
}

/// An event's `<delete node='…'/>`.
pub fn delete_event(node: &str) -> Element {
    el("delete", NS_EVENT).attr("node", node).build()
}

fn message(owner: &BareJid, to: &SessionHandle, event_child: Element) -> Element {
    message_to(owner, to.jid.as_str(), event_child)
}

/// The headline `<message/>` carrying an event about `owner`'s node to `to`.
pub fn message_to(owner: &BareJid, to: &str, event_child: Element) -> Element {
    el("message", ns::CLIENT)
        .attr("from", owner.as_str())
        .attr("to", to)
        .attr("type", "headline")
        .attr("id", crate::core::random_hex(8))
        .child(el("event", NS_EVENT).child(event_child).build())
        .build()
}

/// Send `event_child` about `owner`'s `node` to everyone entitled to it.
pub async fn broadcast(
    core: &Arc<Core>,
    owner: &BareJid,
    node: &str,
    cfg: &NodeConfig,
    event_child: Element,
) {
    let mut targets: Vec<Arc<SessionHandle>> = available(core, owner);
    let contacts = match core.db.roster_items(username(owner)).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "roster lookup for PEP notifications failed");
            Vec::new()
        }
    };
    for item in contacts.iter().filter(|i| i.subscription.has_from()) {
        let Ok(contact) = BareJid::new(&item.contact) else {
            continue;
        };
        if &contact == owner {
            continue;
        }
        let remote = contact.domain().as_str() != core.domain;
        if access::check(core, owner, cfg, &contact).await.is_err() {
            continue;
        }
        if remote {
            // A contact on another server: its resources that asked for
            // the node, as learned from their presence (`remote.rs`).
            for full in core.caps.remote.interested(&contact, node) {
                let m = message_to(owner, full.as_str(), event_child.clone());
                crate::s2s::route_out(core, m);
            }
        } else {
            targets.extend(available(core, &contact));
        }
    }
    targets.retain(|s| core.caps.wants_notify(s.id, node));
    // Explicit subscribers: no +notify needed, they asked; access re-checked.
    let explicit = core
        .db
        .pep_subscribers(username(owner), node)
        .await
        .unwrap_or_default();
    for j in explicit.iter().filter_map(|j| Jid::new(j).ok()) {
        if access::check(core, owner, cfg, &j.to_bare()).await.is_err() {
            continue;
        }
        let sessions = match j.clone().try_into_full() {
            Ok(full) => core.sessions.get(&full).into_iter().collect(),
            Err(bare) => available(core, &bare),
        };
        for s in sessions {
            if !targets.iter().any(|t| t.id == s.id) {
                targets.push(s);
            }
        }
    }
    for s in targets {
        s.send(message(owner, &s, event_child.clone()));
    }
}

/// Send an event to `jid` (a full JID's session, or a bare JID's available ones).
pub fn to_jid(core: &Core, owner: &BareJid, jid: &Jid, event_child: Element) {
    let sessions: Vec<Arc<SessionHandle>> = match jid.clone().try_into_full() {
        Ok(full) => core.sessions.get(&full).into_iter().collect(),
        Err(bare) => available(core, &bare),
    };
    for s in sessions {
        s.send(message(owner, &s, event_child.clone()));
    }
}

/// The session's capabilities became known: send it the last item of every
/// node it is interested in, of its own account and of each contact whose
/// presence it is subscribed to.
pub async fn last_items(core: &Arc<Core>, session: &Arc<SessionHandle>) {
    let me = session.jid.to_bare();
    let mut owners = vec![me.clone()];
    match core.db.roster_items(username(&me)).await {
        Ok(items) => owners.extend(
            items
                .iter()
                .filter(|i| i.subscription.has_to())
                .filter_map(|i| BareJid::new(&i.contact).ok())
                .filter(|c| c.domain().as_str() == core.domain),
        ),
        Err(e) => tracing::error!(error = %e, "roster lookup for PEP last items failed"),
    }
    for owner in owners {
        last_items_of(core, session, &owner, true).await;
    }
}

/// Send `session` the last item of each of `owner`'s nodes it wants and may
/// see, whose `send_last_published_item` allows it: `on_sub_and_presence`
/// when the session came online (`on_presence`), also `on_sub` when its
/// account was just subscribed.
pub async fn last_items_of(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    owner: &BareJid,
    on_presence: bool,
) {
    let me = session.jid.to_bare();
    let user = username(owner).to_string();
    let Ok(nodes) = core.db.pep_nodes(&user).await else {
        return;
    };
    for (node, row) in nodes {
        if !core.caps.wants_notify(session.id, &node) {
            continue;
        }
        let cfg = NodeConfig::from_row(&row);
        let wanted = match cfg.send_last {
            SendLast::Never => false,
            SendLast::OnSub => !on_presence,
            SendLast::OnSubAndPresence => true,
        };
        if !wanted || access::check(core, owner, &cfg, &me).await.is_err() {
            continue;
        }
        if let Ok(items) = core.db.pep_items(&user, &node, 1, usize::MAX).await {
            if !items.is_empty() {
                session.send(message(owner, session, items_event(&node, &items)));
            }
        }
    }
}
