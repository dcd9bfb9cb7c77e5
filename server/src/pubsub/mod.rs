//! PEP, the Personal Eventing Protocol (XEP-0163), on the subset of
//! PubSub (XEP-0060) that PEP clients use: every account is a pubsub
//! service holding its own nodes (avatar, nickname, bookmarks, OMEMO keys).
//!
//! This file turns `<pubsub/>` IQs into [`service`] calls: publish (with
//! XEP-0223 publish-options), retract, items, create, configure and delete.
//! Nodes and items live in SQLite (`storage/pubsub.rs`); configuration and
//! forms in [`config`]; access models in [`access`]; notifications and the
//! last item on presence in [`notify`]. Only the owner writes; readers are
//! admitted by the node's access model. Subscriptions are implicit (presence
//! subscription plus `+notify` in the reader's entity capabilities) or
//! explicit (subscribe/unsubscribe, for readers who do not share presence);
//! affiliations and subscription options answer `feature-not-implemented`;
//! purge empties a node.

pub mod access;
pub mod config;
pub mod notify;
pub mod remote;
pub mod service;

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use crate::core::Core;
use crate::deliver::username;
use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::StanzaError;
use crate::xml::el;
use config::parse_form;

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

pub const MODULE: Module = Module {
    name: "pep",
    register,
};

/// The XEP-0060 features this implementation honours (advertised on accounts).
const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#presence-subscribe",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#subscribe",
];

fn register(r: &mut Registry) {
    r.iq(false, Addr::Bare, NS, "pubsub", get);
    r.iq(true, Addr::Bare, NS, "pubsub", set);
    r.iq(false, Addr::Bare, NS_OWNER, "pubsub", owner_get);
    r.iq(true, Addr::Bare, NS_OWNER, "pubsub", owner_set);
    r.identity(FeatureScope::Account, "pubsub", "pep", "");
    r.feature(FeatureScope::Account, NS);
    for f in FEATURES {
        r.feature(FeatureScope::Account, f);
    }
    r.migrations(&crate::storage::pubsub::MIGRATOR);
    r.disco_items(disco_items);
    r.disco_node_info(disco_node_info);
}

/// The capabilities of `session` became known or changed (called by
/// `xep::caps`): send it the last items it is now interested in.
pub async fn caps_known(core: &Arc<Core>, session: &Arc<SessionHandle>) {
    notify::last_items(core, session).await;
}

/// `subscriber` was just allowed to see `owner`'s presence (XEP-0163 §4.3.4
/// auto-subscription): its online devices get `owner`'s last items now.
pub async fn subscribed(core: &Arc<Core>, owner: &BareJid, subscriber: &BareJid) {
    for s in crate::deliver::available(core, subscriber) {
        notify::last_items_of(core, &s, owner, false).await;
    }
    if crate::s2s::is_remote(core, subscriber.domain().as_str()) {
        remote::subscribed(core, owner, subscriber).await;
    }
}

/// Whose PEP service an IQ addresses (the sender's own when no `to`), after
/// checking that account exists.
async fn owner(cx: &IqCtx<'_>) -> Result<BareJid, StanzaError> {
    let owner = cx
        .to
        .map(|j| j.to_bare())
        .unwrap_or_else(|| cx.session.jid.to_bare());
    if owner != cx.session.jid.to_bare() {
        let exists = cx
            .core
            .db
            .account_exists(username(&owner))
            .await
            .map_err(|_| StanzaError::internal())?;
        if !exists {
            return Err(StanzaError::service_unavailable());
        }
    }
    Ok(owner)
}

/// Writes are the owner's alone.
async fn own(cx: &IqCtx<'_>) -> Result<BareJid, StanzaError> {
    let o = owner(cx).await?;
    if o != cx.session.jid.to_bare() {
        return Err(StanzaError::new("auth", "forbidden"));
    }
    Ok(o)
}

fn unsupported(what: &str) -> StanzaError {
    StanzaError::new("cancel", "feature-not-implemented")
        .with_app("unsupported", NS_ERRORS)
        .with_text(format!("{what} is not supported by this PEP service"))
}

/// The one operation element of a `<pubsub/>` (options/configure travel beside it).
fn operation<'e>(payload: &'e Element, ns: &str) -> Result<&'e Element, StanzaError> {
    payload
        .children()
        .find(|c| c.ns() == ns && !matches!(c.name(), "publish-options" | "configure" | "options"))
        .or_else(|| payload.children().find(|c| c.ns() == ns))
        .ok_or_else(|| StanzaError::bad_request().with_text("empty pubsub request"))
}

fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let owner = owner(&cx).await?;
        let op = operation(cx.payload, NS)?;
        match op.name() {
            "items" => {
                let node = service::check_node(op.attr("node"))?;
                let max = match op.attr("max_items") {
                    None => None,
                    Some(m) => Some(m.parse::<usize>().map_err(|_| {
                        StanzaError::bad_request().with_text("max_items is not a number")
                    })?),
                };
                let ids: Vec<String> = op
                    .children()
                    .filter(|i| i.is("item", NS))
                    .filter_map(|i| i.attr("id").map(str::to_string))
                    .take(cx.core.limits().pep_items)
                    .collect();
                let requester = cx.session.jid.to_bare();
                let items = service::items(cx.core, &owner, &requester, node, max, &ids).await?;
                Ok(Some(
                    el("pubsub", NS)
                        .child(
                            el("items", NS)
                                .attr("node", node)
                                .children(items.iter().map(|i| notify::item_element(NS, i)))
                                .build(),
                        )
                        .build(),
                ))
            }
            other => Err(unsupported(other)),
        }
    })
}

fn set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let op = operation(cx.payload, NS)?;
        match op.name() {
            "publish" => {
                let owner = own(&cx).await?;
                let node = service::check_node(op.attr("node"))?;
                let items: Vec<&Element> = op.children().filter(|i| i.is("item", NS)).collect();
                let [item] = items[..] else {
                    return Err(StanzaError::bad_request().with_app(
                        if items.is_empty() {
                            "item-required"
                        } else {
                            "invalid-payload"
                        },
                        NS_ERRORS,
                    ));
                };
                let payloads: Vec<&Element> = item.children().collect();
                let [payload] = payloads[..] else {
                    return Err(StanzaError::bad_request().with_app(
                        if payloads.is_empty() {
                            "payload-required"
                        } else {
                            "invalid-payload"
                        },
                        NS_ERRORS,
                    ));
                };
                let options = match cx.payload.get_child("publish-options", NS) {
                    None => None,
                    Some(po) => match po.children().next() {
                        None => None,
                        Some(x) => Some(parse_form(x)?),
                    },
                };
                let publisher = cx.session.jid.to_bare().to_string();
                let id = service::publish(
                    cx.core,
                    &owner,
                    &publisher,
                    node,
                    item.attr("id"),
                    payload,
                    options.as_ref(),
                )
                .await?;
                crate::xep::avatar::published(cx.core, &owner, node, &id, payload).await;
                Ok(Some(
                    el("pubsub", NS)
                        .child(
                            el("publish", NS)
                                .attr("node", node)
                                .child(el("item", NS).attr("id", id).build())
                                .build(),
                        )
                        .build(),
                ))
            }
            "retract" => {
                let owner = own(&cx).await?;
                let node = service::check_node(op.attr("node"))?;
                let notify = matches!(op.attr("notify"), Some("1" | "true"));
                let ids: Vec<&str> = op
                    .children()
                    .filter(|i| i.is("item", NS))
                    .filter_map(|i| i.attr("id"))
                    .collect();
                let [id] = ids[..] else {
                    return Err(StanzaError::bad_request().with_app("item-required", NS_ERRORS));
                };
                service::retract(cx.core, &owner, node, id, notify).await?;
                Ok(None)
            }
            "subscribe" | "unsubscribe" => {
                let owner = owner(&cx).await?;
                let node = service::check_node(op.attr("node"))?;
                let jid = op
                    .attr("jid")
                    .and_then(|j| jid::Jid::new(j).ok())
                    .ok_or_else(|| {
                        StanzaError::bad_request().with_app("jid-required", NS_ERRORS)
                    })?;
                if op.name() == "unsubscribe" {
                    service::unsubscribe(cx.core, &owner, &cx.session.jid, node, &jid).await?;
                    return Ok(None);
                }
                service::subscribe(cx.core, &owner, &cx.session.jid, node, &jid).await?;
                Ok(Some(
                    el("pubsub", NS)
                        .child(
                            el("subscription", NS)
                                .attr("node", node)
                                .attr("jid", jid.as_str())
                                .attr("subscription", "subscribed")
                                .build(),
                        )
                        .build(),
                ))
            }
            "create" => {
                let owner = own(&cx).await?;
                let node = service::check_node(op.attr("node"))?;
                let options = match cx
                    .payload
                    .get_child("configure", NS)
                    .and_then(|c| c.children().next())
                {
                    None => None,
                    Some(x) => Some(parse_form(x)?),
                };
                service::create(cx.core, &owner, node, options.as_ref()).await?;
                Ok(None)
            }
            other => Err(unsupported(other)),
        }
    })
}

fn owner_get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let owner = own(&cx).await?;
        let op = operation(cx.payload, NS_OWNER)?;
        match op.name() {
            "configure" => {
                let node = service::check_node(op.attr("node"))?;
                let cfg = service::node_config(cx.core, &owner, node).await?;
                Ok(Some(
                    el("pubsub", NS_OWNER)
                        .child(
                            el("configure", NS_OWNER)
                                .attr("node", node)
                                .child(cfg.to_form(cx.core.limits().pep_items))
                                .build(),
                        )
                        .build(),
                ))
            }
            "default" => Ok(Some(
                el("pubsub", NS_OWNER)
                    .child(
                        el("default", NS_OWNER)
                            .child(
                                config::NodeConfig::default().to_form(cx.core.limits().pep_items),
                            )
                            .build(),
                    )
                    .build(),
            )),
            other => Err(unsupported(other)),
        }
    })
}

fn owner_set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let owner = own(&cx).await?;
        let op = operation(cx.payload, NS_OWNER)?;
        match op.name() {
            "configure" => {
                let node = service::check_node(op.attr("node"))?;
                let x = op
                    .children()
                    .next()
                    .ok_or_else(|| StanzaError::bad_request().with_text("no form"))?;
                service::configure(cx.core, &owner, node, &parse_form(x)?).await?;
                Ok(None)
            }
            "delete" => {
                let node = service::check_node(op.attr("node"))?;
                service::delete(cx.core, &owner, node).await?;
                Ok(None)
            }
            "purge" => {
                let node = service::check_node(op.attr("node"))?;
                service::purge(cx.core, &owner, node).await?;
                Ok(None)
            }
            other => Err(unsupported(other)),
        }
    })
}

/// disco#items on an account: the nodes the asker may read (XEP-0060 §5.2).
fn disco_items<'a>(
    core: &'a Arc<Core>,
    asker: &'a BareJid,
    user: &'a str,
) -> BoxFuture<'a, Vec<Element>> {
    Box::pin(async move {
        let Ok(owner) = BareJid::new(&format!("{user}@{}", core.domain)) else {
            return Vec::new();
        };
        let Ok(nodes) = core.db.pep_nodes(user).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (node, row) in nodes {
            let cfg = config::NodeConfig::from_row(&row);
            if access::check(core, &owner, &cfg, asker).await.is_ok() {
                out.push(
                    el("item", crate::xep::disco::NS_ITEMS)
                        .attr("jid", owner.as_str())
                        .attr("node", node)
                        .build(),
                );
            }
        }
        out
    })
}

/// disco#info on a node the asker may see (XEP-0060 §5.3): a leaf node.
fn disco_node_info<'a>(
    core: &'a Arc<Core>,
    asker: &'a BareJid,
    user: &'a str,
    node: &'a str,
) -> BoxFuture<'a, Option<Vec<Element>>> {
    Box::pin(async move {
        let owner = BareJid::new(&format!("{user}@{}", core.domain)).ok()?;
        let row = core.db.pep_node(user, node).await.ok()??;
        let cfg = config::NodeConfig::from_row(&row);
        access::check(core, &owner, &cfg, asker).await.ok()?;
        let info = crate::xep::disco::NS_INFO;
        Some(vec![
            el("identity", info)
                .attr("category", "pubsub")
                .attr("type", "leaf")
                .build(),
            el("feature", info).attr("var", NS).build(),
        ])
    })
}
