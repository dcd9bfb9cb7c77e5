//! Rosters (RFC 6121 §2) with versioning (XEP-0237) and subscription handling
//! (§3) for local accounts. The state machine lives in [`state`], what an
//! inbound subscription stanza keeps in [`request`]; this module stores items,
//! pushes changes to interested resources and moves subscription stanzas
//! between the two local accounts.
//!
//! Bounds: a roster holds at most [`MAX_ITEMS`] contacts (roster sets, and
//! subscription requests or approvals that would add one), and an account has
//! at most `[limits] pending_subscriptions` requests waiting for its answer,
//! from any server including this one. One more refuses the oldest: it is
//! removed and its requester gets `unsubscribed`, the answer a user's "no"
//! sends. (Refusing the newest instead would let one burst of requests shut
//! the door on everyone else until the user cleaned up; this way a flood has
//! to go on to keep a real request out, and whoever is pushed out is told and
//! may ask again.)

pub mod request;
pub mod state;

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use crate::core::Core;
use crate::deliver::{self, username};
use crate::registry::{BoxFuture, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::{error_reply, StanzaError};
use crate::xml::{el, ns, serialize};
use state::{inbound, outbound, Item, SubType};

/// The roster module.
pub const MODULE: Module = Module {
    name: "roster",
    register,
};

pub const NS_ROSTER: &str = "jabber:iq:roster";

/// Contacts one roster may hold (RFC 6121 §2.3.3 lets a server bound it).
const MAX_ITEMS: usize = 2000;

fn register(r: &mut Registry) {
    r.iq(false, Addr::SelfBare, NS_ROSTER, "query", get);
    r.iq(true, Addr::SelfBare, NS_ROSTER, "query", set);
    r.stream_feature(|| Element::bare("ver", "urn:xmpp:features:rosterver"));
    r.stream_feature(|| Element::bare("sub", "urn:xmpp:features:pre-approval"));
    r.migrations(&crate::storage::roster::MIGRATOR);
}

fn item_element(item: &Item, remove: bool) -> Element {
    let mut b = el("item", NS_ROSTER).attr("jid", item.contact.clone());
    if remove {
        return b.attr("subscription", "remove").build();
    }
    b = b
        .attr("subscription", item.subscription.as_str())
        .attr_opt("name", item.name.clone());
    if item.ask {
        b = b.attr("ask", "subscribe");
    }
    if item.approved {
        b = b.attr("approved", "true");
    }
    for g in &item.groups {
        b = b.child(el("group", NS_ROSTER).text(g.clone()).build());
    }
    b.build()
}

fn storage_err(e: crate::storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "roster storage failed");
    StanzaError::internal()
}

fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let user = username(&cx.session.jid.to_bare()).to_string();
        cx.session.state().interested = true;
        let version = cx
            .core
            .db
            .roster_version(&user)
            .await
            .map_err(storage_err)?;
        let ver = version.to_string();
        if cx.payload.attr("ver") == Some(ver.as_str()) {
            // XEP-0237: unchanged; changes (none) would come as pushes.
            return Ok(None);
        }
        let items = cx.core.db.roster_items(&user).await.map_err(storage_err)?;
        let q = el("query", NS_ROSTER)
            .attr("ver", ver)
            .children(
                items
                    .iter()
                    .filter(|i| i.in_roster)
                    .map(|i| item_element(i, false)),
            )
            .build();
        Ok(Some(q))
    })
}

fn set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let items: Vec<&Element> = cx
            .payload
            .children()
            .filter(|c| c.is("item", NS_ROSTER))
            .collect();
        let [item_el] = items[..] else {
            return Err(
                StanzaError::bad_request().with_text("a roster set carries exactly one item")
            );
        };
        let contact = item_el
            .attr("jid")
            .and_then(|j| BareJid::new(j).ok())
            .ok_or_else(StanzaError::jid_malformed)?;
        let me = cx.session.jid.to_bare();
        if contact == me {
            return Err(StanzaError::not_allowed().with_text("you cannot add yourself"));
        }
        let user = username(&me).to_string();
        let db = &cx.core.db;
        if item_el.attr("subscription") == Some("remove") {
            let item = item_of(db, &user, &contact).await?;
            if !item.in_roster && item.is_empty() {
                return Err(StanzaError::item_not_found());
            }
            // RFC 6121 §2.5.2: cancel both directions, then forget the item.
            for t in [SubType::Unsubscribe, SubType::Unsubscribed] {
                subscription(cx.core, cx.session, t, &contact, None).await;
            }
            let _roster = roster_lock(&me).lock().await;
            let gone = Item {
                contact: contact.to_string(),
                ..Item::default()
            };
            let ver = db.roster_put(&user, &gone).await.map_err(storage_err)?;
            push(cx.core, &me, &gone, ver, true);
            return Ok(None);
        }
        let groups: Vec<String> = item_el
            .children()
            .filter(|g| g.is("group", NS_ROSTER))
            .map(|g| g.text())
            .filter(|g| !g.is_empty())
            .collect();
        let mut dedup = groups.clone();
        dedup.sort();
        dedup.dedup();
        if dedup.len() != groups.len() {
            return Err(StanzaError::bad_request().with_text("duplicate group"));
        }
        // Under the account's roster lock: a subscription change at the same
        // moment is neither lost nor overwritten with the old state.
        let _roster = roster_lock(&me).lock().await;
        let mut item = item_of(db, &user, &contact).await?;
        item.name = item_el
            .attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        item.groups = groups;
        if !item.in_roster {
            roster_has_room(db, &user).await?;
        }
        item.in_roster = true;
        let ver = db.roster_put(&user, &item).await.map_err(storage_err)?;
        push(cx.core, &me, &item, ver, false);
        Ok(None)
    })
}

/// `Ok` while `user`'s roster has room for one more contact.
async fn roster_has_room(db: &crate::storage::Db, user: &str) -> Result<(), StanzaError> {
    if db.roster_size(user).await.map_err(storage_err)? >= MAX_ITEMS {
        return Err(StanzaError::not_allowed()
            .with_text(format!("a roster holds at most {MAX_ITEMS} contacts")));
    }
    Ok(())
}

/// `user`'s item for `contact`, a fresh one when there is none.
async fn item_of(
    db: &crate::storage::Db,
    user: &str,
    contact: &BareJid,
) -> Result<Item, StanzaError> {
    Ok(db
        .roster_item(user, contact.as_str())
        .await
        .map_err(storage_err)?
        .unwrap_or_else(|| Item::new(contact.as_str())))
}

/// Push a changed item to every interested resource of `owner` (RFC 6121 §2.1.6).
pub fn push(core: &Core, owner: &BareJid, item: &Item, ver: u64, remove: bool) {
    if !item.in_roster && !remove {
        return;
    }
    for s in core.sessions.of(owner) {
        if !s.state().interested {
            continue;
        }
        let iq = el("iq", ns::CLIENT)
            .attr("type", "set")
            .attr("id", format!("push-{}", crate::core::random_hex(6)))
            .attr("to", s.jid.as_str())
            .child(
                el("query", NS_ROSTER)
                    .attr("ver", ver.to_string())
                    .child(item_element(item, remove))
                    .build(),
            )
            .build();
        s.send(iq);
    }
}

/// Store `item` for `owner` and push it.
async fn save(core: &Core, owner: &BareJid, item: &Item) {
    match core.db.roster_put(username(owner), item).await {
        Ok(ver) => push(core, owner, item, ver, false),
        Err(e) => tracing::error!(error = %e, "saving a roster item failed"),
    }
}

/// Serialises the read-modify-write of an account's roster items: when two
/// accounts subscribe to each other at the same moment, two tasks update the
/// same items, and an unlocked load/save pair would lose one of the changes
/// (a `both` ending up as `to`). Striped; a task never holds two at once.
static ROSTER_LOCKS: [tokio::sync::Mutex<()>; 64] =
    [const { tokio::sync::Mutex::const_new(()) }; 64];

fn roster_lock(owner: &BareJid) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    owner.as_str().hash(&mut h);
    &ROSTER_LOCKS[(h.finish() % 64) as usize]
}

async fn load(core: &Core, owner: &BareJid, contact: &BareJid) -> Option<Item> {
    match core.db.roster_item(username(owner), contact.as_str()).await {
        Ok(i) => Some(i.unwrap_or_else(|| Item::new(contact.as_str()))),
        Err(e) => {
            tracing::error!(error = %e, "loading a roster item failed");
            None
        }
    }
}

fn sub_presence(from: &BareJid, to: &BareJid, t: SubType, original: Option<&Element>) -> Element {
    let mut p = el("presence", ns::CLIENT)
        .attr("from", from.as_str())
        .attr("to", to.as_str())
        .attr("type", t.as_str());
    if let Some(o) = original {
        // Keep what the user said with the request (status text, nickname).
        p = p.children(o.children().cloned());
    }
    p.build()
}

/// An outbound subscription stanza of type `t` from `session`'s user to the
/// local `contact` (RFC 6121 §3): updates both rosters and delivers.
pub async fn subscription(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    t: SubType,
    contact: &BareJid,
    original: Option<&Element>,
) {
    let me = session.jid.to_bare();
    let o = {
        let _roster = roster_lock(&me).lock().await;
        let Some(mut item) = load(core, &me, contact).await else {
            return;
        };
        let adds = !item.in_roster && matches!(t, SubType::Subscribe | SubType::Subscribed);
        if adds {
            // A request or an approval puts the contact in the roster.
            if let Err(e) = roster_has_room(&core.db, username(&me)).await {
                if let Some(reply) = original.and_then(|o| error_reply(o, &e)) {
                    session.send(reply);
                }
                return;
            }
        }
        let o = outbound(&mut item, t);
        if o.changed {
            save(core, &me, &item).await;
        }
        o
    };
    if o.route && crate::s2s::is_remote(core, contact.domain().as_str()) {
        // The contact's own server keeps the contact's side (federation).
        crate::s2s::route_out(core, sub_presence(&me, contact, t, original));
    } else if o.route {
        let exists = core
            .db
            .account_exists(username(contact))
            .await
            .unwrap_or(false);
        if exists {
            deliver_inbound(core, &me, contact, t, original).await;
        }
    }
    if o.send_presence {
        crate::presence::send_current_presence(core, &me, contact, t == SubType::Subscribed);
        if t == SubType::Subscribed {
            // PEP: the new subscriber's devices get the last items (XEP-0163).
            crate::pubsub::subscribed(core, &me, contact).await;
        }
    }
}

/// The contact's side: apply an inbound subscription stanza from `from`
/// (a local account, or a remote one through federation). What the stanza
/// carried is trimmed ([`request`]) before it is stored or delivered.
pub(crate) async fn deliver_inbound(
    core: &Arc<Core>,
    from: &BareJid,
    contact: &BareJid,
    t: SubType,
    original: Option<&Element>,
) {
    let stanza = request::presence(from, contact, t, original);
    let mut text = Vec::new();
    serialize(&stanza, &mut text);
    let (i, refused) = {
        let _roster = roster_lock(contact).lock().await;
        let Some(mut citem) = load(core, contact, from).await else {
            return;
        };
        let waiting = citem.pending_in.is_some();
        let i = inbound(&mut citem, t, &String::from_utf8_lossy(&text));
        if i.changed {
            save(core, contact, &citem).await;
        }
        let refused = if !waiting && citem.pending_in.is_some() {
            drop_oldest_requests(core, contact).await
        } else {
            Vec::new()
        };
        (i, refused)
    };
    for requester in &refused {
        // The answer a user's "no" sends (RFC 6121 §3.2), now that the
        // request is gone; for an account here, its side is updated too.
        if crate::s2s::is_remote(core, requester.domain().as_str()) {
            let no = sub_presence(contact, requester, SubType::Unsubscribed, None);
            crate::s2s::route_out(core, no);
        } else {
            Box::pin(deliver_inbound(
                core,
                contact,
                requester,
                SubType::Unsubscribed,
                None,
            ))
            .await;
        }
    }
    if i.deliver {
        deliver::to_available(core, contact, &stanza);
    }
    if let Some(reply) = i.auto_reply {
        if crate::s2s::is_remote(core, from.domain().as_str()) {
            // `from`'s server keeps `from`'s roster: just answer it.
            crate::s2s::route_out(core, sub_presence(contact, from, reply, None));
            if reply == SubType::Subscribed {
                crate::presence::send_current_presence(core, contact, from, true);
                crate::pubsub::subscribed(core, contact, from).await;
            }
            return;
        }
        // The contact's server answers for the contact; the answer lands at `from`.
        let back = sub_presence(contact, from, reply, None);
        let r = {
            let _roster = roster_lock(from).lock().await;
            let Some(mut fitem) = load(core, from, contact).await else {
                return;
            };
            let r = inbound(&mut fitem, reply, "");
            if r.changed {
                save(core, from, &fitem).await;
            }
            r
        };
        if r.deliver {
            deliver::to_available(core, from, &back);
        }
        if reply == SubType::Subscribed {
            crate::presence::send_current_presence(core, contact, from, true);
            crate::pubsub::subscribed(core, contact, from).await;
        }
    }
}

/// With `owner`'s roster lock held, after a new request began waiting:
/// forget the requests beyond the newest `[limits] pending_subscriptions`
/// and return who made them (oldest first), to be told.
async fn drop_oldest_requests(core: &Core, owner: &BareJid) -> Vec<BareJid> {
    let cap = core.limits().pending_subscriptions.max(1);
    let user = username(owner);
    let beyond = match core.db.pending_beyond(user, cap).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "counting pending subscription requests failed");
            return Vec::new();
        }
    };
    let mut refused = Vec::new();
    for contact in beyond {
        let Ok(jid) = BareJid::new(&contact) else {
            continue;
        };
        let Some(mut item) = load(core, owner, &jid).await else {
            continue;
        };
        item.pending_in = None;
        save(core, owner, &item).await;
        tracing::debug!(account = %owner, requester = %jid, cap, "oldest pending subscription request refused");
        refused.push(jid);
    }
    refused
}

/// Pending inbound subscription requests of `owner`, to show a new session
/// (trimmed again: rows stored before requests were trimmed may be large).
pub async fn pending_requests(core: &Core, owner: &BareJid) -> Vec<Element> {
    match core.db.roster_items(username(owner)).await {
        Ok(items) => items
            .iter()
            .filter_map(|i| {
                let stored = i.pending_in.as_ref()?.parse::<Element>().ok()?;
                let from = BareJid::new(&i.contact).ok()?;
                Some(request::presence(
                    &from,
                    owner,
                    SubType::Subscribe,
                    Some(&stored),
                ))
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "loading pending subscription requests failed");
            Vec::new()
        }
    }
}

/// The roster of `owner` (for presence broadcast and probes).
pub async fn items(core: &Core, owner: &BareJid) -> Vec<Item> {
    core.db
        .roster_items(username(owner))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "loading a roster failed");
            Vec::new()
        })
}
