//! Bookmarks 2 (XEP-0402) compatibility with legacy bookmarks (XEP-0048 in
//! private XML, XEP-0049): `urn:xmpp:bookmarks:1#compat`.
//!
//! The `urn:xmpp:bookmarks:1` PEP node (one item per group chat, the item id
//! being the room's JID) is the single truth. A legacy client that stores
//! `<storage xmlns='storage:bookmarks'/>` has its conferences published to
//! that node (and the ones it dropped retracted, with notifications, so new
//! clients follow); a legacy read is answered from the node. Legacy URL
//! bookmarks have no bookmarks 2 form: they are kept in private storage and
//! merged back into legacy reads.

use std::collections::HashSet;
use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use crate::core::Core;
use crate::deliver::username;
use crate::pubsub::{config::Fields, service};
use crate::registry::{FeatureScope, Module, Registry};
use crate::stanza::StanzaError;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "bookmarks",
    register,
};

pub const NS_LEGACY: &str = "storage:bookmarks";
pub const NS: &str = "urn:xmpp:bookmarks:1";

fn register(r: &mut Registry) {
    r.feature(FeatureScope::Account, "urn:xmpp:bookmarks:1#compat");
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true"))
}

/// The node options XEP-0402 §5 asks for.
fn node_options() -> Fields {
    [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
    .collect()
}

/// A bookmarks 2 `<conference/>` from a legacy one; `None` without a room JID.
fn to_bookmarks2(c: &Element) -> Option<(String, Element)> {
    let room = c.attr("jid").and_then(|j| BareJid::new(j).ok())?;
    let mut b = el("conference", NS).attr_opt("name", c.attr("name")).attr(
        "autojoin",
        if truthy(c.attr("autojoin")) {
            "true"
        } else {
            "false"
        },
    );
    for child in ["nick", "password"] {
        if let Some(e) = c.get_child(child, NS_LEGACY) {
            b = b.child(el(child, NS).text(e.text()).build());
        }
    }
    Some((room.to_string(), b.build()))
}

/// A legacy `<conference/>` from a bookmarks 2 item.
fn to_legacy(room: &str, c: &Element) -> Element {
    let mut b = el("conference", NS_LEGACY)
        .attr("jid", room)
        .attr_opt("name", c.attr("name"))
        .attr(
            "autojoin",
            if truthy(c.attr("autojoin")) {
                "true"
            } else {
                "false"
            },
        );
    for child in ["nick", "password"] {
        if let Some(e) = c.get_child(child, NS) {
            b = b.child(el(child, NS_LEGACY).text(e.text()).build());
        }
    }
    b.build()
}

async fn current(core: &Arc<Core>, me: &BareJid) -> Result<Vec<(String, Element)>, StanzaError> {
    match service::items(core, me, me, NS, None, &[]).await {
        Ok(items) => Ok(items
            .iter()
            .filter_map(|i| {
                let p = i.payload.parse::<Element>().ok()?;
                p.is("conference", NS).then(|| (i.id.clone(), p))
            })
            .collect()),
        Err(e) if e.condition == "item-not-found" => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The legacy `<storage/>` for `me`, built from the bookmarks 2 node.
pub async fn legacy(core: &Arc<Core>, me: &BareJid) -> Result<Element, StanzaError> {
    let mut storage = Element::bare("storage", NS_LEGACY);
    for (room, c) in current(core, me).await? {
        storage.append_child(to_legacy(&room, &c));
    }
    let stored = core
        .db
        .private_get(username(me), NS_LEGACY)
        .await
        .map_err(|_| StanzaError::internal())?
        .and_then(|s| s.parse::<Element>().ok());
    if let Some(old) = stored {
        for url in old.children().filter(|u| u.is("url", NS_LEGACY)) {
            storage.append_child(url.clone());
        }
    }
    Ok(storage)
}

/// A legacy client stored `storage`: make the bookmarks 2 node say the same.
pub async fn store_legacy(
    core: &Arc<Core>,
    me: &BareJid,
    storage: &Element,
) -> Result<(), StanzaError> {
    let before = current(core, me).await?;
    let node_exists = core
        .db
        .pep_node(username(me), NS)
        .await
        .map_err(|_| StanzaError::internal())?
        .is_some();
    let options = node_options();
    let publisher = me.to_string();
    let mut keep = HashSet::new();
    for (room, conference) in storage
        .children()
        .filter(|c| c.is("conference", NS_LEGACY))
        .filter_map(to_bookmarks2)
    {
        keep.insert(room.clone());
        if before.iter().any(|(r, c)| *r == room && *c == conference) {
            continue; // unchanged: no needless notification
        }
        let opts = (!node_exists).then_some(&options);
        service::publish(core, me, &publisher, NS, Some(&room), &conference, opts).await?;
    }
    for (room, _) in before.iter().filter(|(r, _)| !keep.contains(r)) {
        service::retract(core, me, NS, room, true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_bookmarks2_conferences_round_trip() {
        let legacy: Element = "<conference xmlns='storage:bookmarks' jid='tea@muc.x' name='Tea' autojoin='1'><nick>al</nick></conference>"
            .parse()
            .expect("xml");
        let (room, b2) = to_bookmarks2(&legacy).expect("has a jid");
        assert_eq!(room, "tea@muc.x");
        assert_eq!(b2.attr("autojoin"), Some("true"));
        assert_eq!(
            b2.get_child("nick", NS).map(|n| n.text()),
            Some("al".into())
        );
        let back = to_legacy(&room, &b2);
        assert_eq!(back.attr("jid"), Some("tea@muc.x"));
        assert_eq!(back.attr("name"), Some("Tea"));
        assert_eq!(
            back.get_child("nick", NS_LEGACY).map(|n| n.text()),
            Some("al".into())
        );
    }
}
