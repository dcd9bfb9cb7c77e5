//! XEP-0191 Blocking Command: an account's blocklist (get, block, unblock,
//! unblock all), pushed to every resource of the account, with its effects on
//! presence (a newly blocked contact sees the account go offline; an
//! unblocked one gets presence again). Enforcement is in `enforce.rs`, the
//! cache and matching in `list.rs`.

pub mod enforce;
pub mod list;

use std::collections::BTreeSet;
use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::deliver::{available, username};
use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::stanza::StanzaError;
use crate::xml::{el, ns};

pub use list::Cache;

pub const NS: &str = "urn:xmpp:blocking";

pub const MODULE: Module = Module {
    name: "blocking",
    register,
};

fn register(r: &mut Registry) {
    r.iq(false, Addr::SelfBare, NS, "blocklist", get);
    r.iq(true, Addr::SelfBare, NS, "block", block);
    r.iq(true, Addr::SelfBare, NS, "unblock", unblock);
    r.feature(FeatureScope::Account, NS);
    r.feature(FeatureScope::Host, NS);
    r.migrations(&crate::storage::blocking::MIGRATOR);
}

fn items(jids: &[String]) -> impl Iterator<Item = Element> + '_ {
    jids.iter()
        .map(|j| el("item", NS).attr("jid", j.clone()).build())
}

/// The normalised JIDs of the `<item/>`s of a request.
fn parse_items(payload: &Element) -> Result<Vec<String>, StanzaError> {
    let mut out = Vec::new();
    for i in payload.children().filter(|c| c.is("item", NS)) {
        let raw = i
            .attr("jid")
            .ok_or_else(|| StanzaError::bad_request().with_text("an item needs a jid"))?;
        let j = Jid::new(raw)
            .map_err(|_| StanzaError::jid_malformed().with_text(format!("'{raw}' is not a JID")))?;
        out.push(j.to_string());
    }
    out.sort();
    out.dedup();
    if out.len() > list::MAX_ITEMS {
        return Err(
            StanzaError::new("wait", "resource-constraint").with_text(format!(
                "a blocklist holds at most {} JIDs",
                list::MAX_ITEMS
            )),
        );
    }
    Ok(out)
}

fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let me = cx.session.jid.to_bare();
        let l = cx
            .core
            .blocklists
            .get(&cx.core.db, username(&me))
            .await
            .map_err(|_| StanzaError::internal())?;
        let jids: Vec<String> = l.iter().cloned().collect();
        Ok(Some(el("blocklist", NS).children(items(&jids)).build()))
    })
}

/// Push a change to every resource of the account (XEP-0191 §3.3, §3.4).
fn push(core: &Core, me: &BareJid, what: &str, jids: &[String]) {
    for s in core.sessions.of(me) {
        s.send(
            el("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", format!("block-{}", crate::core::random_hex(6)))
                .attr("to", s.jid.as_str())
                .child(el(what, NS).children(items(jids)).build())
                .build(),
        );
    }
}

async fn reload(core: &Core, user: &str) -> Result<BTreeSet<String>, StanzaError> {
    let fresh: BTreeSet<String> = core
        .db
        .blocklist(user)
        .await
        .map_err(|_| StanzaError::internal())?
        .into_iter()
        .collect();
    core.blocklists.set(user, fresh.clone());
    Ok(fresh)
}

fn block(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let jids = parse_items(cx.payload)?;
        if jids.is_empty() {
            return Err(StanzaError::bad_request().with_text("block needs at least one item"));
        }
        let me = cx.session.jid.to_bare();
        let user = username(&me).to_string();
        let added = cx
            .core
            .db
            .blocklist_add(&user, &jids, list::MAX_ITEMS)
            .await
            .map_err(|_| StanzaError::internal())?;
        if !added {
            return Err(
                StanzaError::new("wait", "resource-constraint").with_text(format!(
                    "a blocklist holds at most {} JIDs",
                    list::MAX_ITEMS
                )),
            );
        }
        reload(cx.core, &user).await?;
        push(cx.core, &me, "block", &jids);
        go_offline_for(cx.core, &me, &jids);
        Ok(None)
    })
}

fn unblock(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let jids = parse_items(cx.payload)?;
        let me = cx.session.jid.to_bare();
        let user = username(&me).to_string();
        let before: Vec<String> = cx
            .core
            .blocklists
            .get(&cx.core.db, &user)
            .await
            .map_err(|_| StanzaError::internal())?
            .iter()
            .cloned()
            .collect();
        cx.core
            .db
            .blocklist_remove(&user, &jids)
            .await
            .map_err(|_| StanzaError::internal())?;
        reload(cx.core, &user).await?;
        push(cx.core, &me, "unblock", &jids);
        let freed = if jids.is_empty() { before } else { jids };
        reprobe(cx.core, &me, &freed).await;
        Ok(None)
    })
}

/// Local accounts among blocklist items (bare or full JIDs of this domain).
fn local_contacts(core: &Core, jids: &[String]) -> Vec<BareJid> {
    let mut out: Vec<BareJid> = jids
        .iter()
        .filter_map(|j| Jid::new(j).ok())
        .filter(|j| j.node().is_some() && j.domain().as_str() == core.domain)
        .map(|j| j.to_bare())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A newly blocked contact sees every resource of the account go offline.
fn go_offline_for(core: &Core, me: &BareJid, jids: &[String]) {
    let mine = available(core, me);
    for contact in local_contacts(core, jids) {
        for theirs in available(core, &contact) {
            for s in &mine {
                theirs.send(
                    el("presence", ns::CLIENT)
                        .attr("from", s.jid.as_str())
                        .attr("to", theirs.jid.as_str())
                        .attr("type", "unavailable")
                        .build(),
                );
            }
        }
    }
}

/// An unblocked contact gets the account's presence again, and the account
/// the contact's, as far as their subscriptions allow.
async fn reprobe(core: &Arc<Core>, me: &BareJid, jids: &[String]) {
    let roster = crate::roster::items(core, me).await;
    for contact in local_contacts(core, jids) {
        if enforce::blocked_between(core, &Jid::from(contact.clone()), me) {
            continue; // still blocked by a remaining item (e.g. the domain)
        }
        let Some(item) = roster.iter().find(|i| i.contact == contact.as_str()) else {
            continue;
        };
        if item.subscription.has_from() {
            crate::presence::send_current_presence(core, me, &contact, true);
        }
        if item.subscription.has_to() {
            for theirs in available(core, &contact) {
                let last = theirs.state().last();
                if let Some(p) = last {
                    crate::deliver::to_available(core, me, &p);
                }
            }
        }
    }
}
