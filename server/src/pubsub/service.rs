//! PEP operations on typed arguments: publish, retract, retrieve, create,
//! configure and delete, with their bounds and notifications. The IQ
//! handlers in `mod.rs` parse the wire format into calls to these; other
//! modules (bookmarks compatibility, avatar conversion) call them directly.

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use super::config::{Fields, NodeConfig};
use super::{access, notify, NS_ERRORS};
use crate::core::Core;
use crate::deliver::username;
use crate::stanza::StanzaError;
use crate::storage::pubsub::{ItemRow, NodeOutcome};
use crate::storage::StorageError;

/// Longest node name or item id, in bytes.
pub const MAX_NAME: usize = 1024;

/// Explicit subscriptions one node may have.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// Most payload bytes in one items answer: older items beyond it are left
/// out (the newest always comes), so an answer never overflows the
/// session's outbound queue.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

fn storage_err(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "PEP storage failed");
    StanzaError::internal()
}

fn too_many_nodes(core: &Core) -> StanzaError {
    StanzaError::new("cancel", "not-allowed")
        .with_app("max-nodes-exceeded", NS_ERRORS)
        .with_text(format!(
            "an account may have at most {} PEP nodes",
            core.limits().pep_nodes
        ))
}

/// Check a node name.
pub fn check_node(node: Option<&str>) -> Result<&str, StanzaError> {
    match node {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME => Ok(n),
        Some(n) if !n.is_empty() => {
            Err(StanzaError::new("modify", "not-acceptable").with_text("node name too long"))
        }
        _ => {
            Err(StanzaError::new("modify", "not-acceptable").with_app("nodeid-required", NS_ERRORS))
        }
    }
}

/// A node's configuration, or item-not-found.
pub async fn node_config(
    core: &Core,
    owner: &BareJid,
    node: &str,
) -> Result<NodeConfig, StanzaError> {
    core.db
        .pep_node(username(owner), node)
        .await
        .map_err(storage_err)?
        .map(|r| NodeConfig::from_row(&r))
        .ok_or_else(StanzaError::item_not_found)
}

/// Publish `payload` as item `id` (generated when absent) on `owner`'s
/// `node`, creating the node if needed (with `options` applied), checking
/// `options` against an existing node (precondition), and notifying.
/// Returns the item id.
pub async fn publish(
    core: &Arc<Core>,
    owner: &BareJid,
    publisher: &str,
    node: &str,
    id: Option<&str>,
    payload: &Element,
    options: Option<&Fields>,
) -> Result<String, StanzaError> {
    let limits = &core.limits();
    let mut bytes = Vec::new();
    crate::xml::serialize(payload, &mut bytes);
    if bytes.len() > limits.pep_item_size {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_app("payload-too-big", NS_ERRORS)
            .with_text(format!(
                "an item may be at most {} bytes",
                limits.pep_item_size
            )));
    }
    let payload_text = String::from_utf8(bytes).map_err(|_| StanzaError::bad_request())?;
    let id = match id {
        Some(i) if i.len() > MAX_NAME => {
            return Err(StanzaError::new("modify", "not-acceptable").with_text("item id too long"))
        }
        Some(i) if !i.is_empty() => i.to_string(),
        _ => crate::core::random_hex(10),
    };
    let user = username(owner);
    let existing = core.db.pep_node(user, node).await.map_err(storage_err)?;
    let cfg = match (existing, options) {
        (Some(row), opts) => {
            let cfg = NodeConfig::from_row(&row);
            if let Some(f) = opts {
                cfg.check_precondition(f, limits.pep_items)?;
            }
            cfg
        }
        (None, opts) => {
            let mut cfg = NodeConfig::default();
            if let Some(f) = opts {
                cfg.apply(f, limits.pep_items)?;
            }
            cfg
        }
    };
    let item = ItemRow {
        id: id.clone(),
        payload: payload_text,
        publisher: publisher.to_string(),
    };
    match core
        .db
        .pep_publish(user, node, &cfg.to_row(), limits.pep_nodes, &item)
        .await
        .map_err(storage_err)?
    {
        NodeOutcome::TooManyNodes => return Err(too_many_nodes(core)),
        NodeOutcome::Done { .. } | NodeOutcome::Exists => {}
    }
    notify::broadcast(core, owner, node, &cfg, notify::items_event(node, &[item])).await;
    Ok(id)
}

/// Remove item `id` from `node`, telling subscribers if `notify`.
pub async fn retract(
    core: &Arc<Core>,
    owner: &BareJid,
    node: &str,
    id: &str,
    notify: bool,
) -> Result<(), StanzaError> {
    let cfg = node_config(core, owner, node).await?;
    if !core
        .db
        .pep_retract(username(owner), node, id)
        .await
        .map_err(storage_err)?
    {
        return Err(StanzaError::item_not_found());
    }
    if notify {
        notify::broadcast(core, owner, node, &cfg, notify::retract_event(node, id)).await;
    }
    Ok(())
}

/// Items of `owner`'s `node` as `requester` may see them: those with `ids`,
/// or the newest `max` (all, up to the per-node bound, when `None`).
pub async fn items(
    core: &Arc<Core>,
    owner: &BareJid,
    requester: &BareJid,
    node: &str,
    max: Option<usize>,
    ids: &[String],
) -> Result<Vec<ItemRow>, StanzaError> {
    let cfg = node_config(core, owner, node).await?;
    access::check(core, owner, &cfg, requester).await?;
    let user = username(owner);
    if ids.is_empty() {
        let limit = max.unwrap_or(usize::MAX).min(core.limits().pep_items);
        core.db
            .pep_items(user, node, limit, MAX_RESULT_BYTES)
            .await
            .map_err(storage_err)
    } else {
        core.db
            .pep_items_by_id(user, node, ids, MAX_RESULT_BYTES)
            .await
            .map_err(storage_err)
    }
}

/// Create `node` with `options` applied to the defaults.
pub async fn create(
    core: &Arc<Core>,
    owner: &BareJid,
    node: &str,
    options: Option<&Fields>,
) -> Result<(), StanzaError> {
    let mut cfg = NodeConfig::default();
    if let Some(f) = options {
        cfg.apply(f, core.limits().pep_items)?;
    }
    match core
        .db
        .pep_create(
            username(owner),
            node,
            &cfg.to_row(),
            core.limits().pep_nodes,
        )
        .await
        .map_err(storage_err)?
    {
        NodeOutcome::Done { .. } => Ok(()),
        NodeOutcome::Exists => {
            Err(StanzaError::new("cancel", "conflict").with_text("the node exists"))
        }
        NodeOutcome::TooManyNodes => Err(too_many_nodes(core)),
    }
}

/// Change `node`'s configuration; lowering max_items drops the oldest items.
pub async fn configure(
    core: &Arc<Core>,
    owner: &BareJid,
    node: &str,
    fields: &Fields,
) -> Result<(), StanzaError> {
    let mut cfg = node_config(core, owner, node).await?;
    cfg.apply(fields, core.limits().pep_items)?;
    if !core
        .db
        .pep_configure(username(owner), node, &cfg.to_row())
        .await
        .map_err(storage_err)?
    {
        return Err(StanzaError::item_not_found());
    }
    Ok(())
}

/// Remove every item of `node`, telling subscribers (XEP-0060 §8.5).
pub async fn purge(core: &Arc<Core>, owner: &BareJid, node: &str) -> Result<(), StanzaError> {
    let cfg = node_config(core, owner, node).await?;
    core.db
        .pep_purge(username(owner), node)
        .await
        .map_err(storage_err)?;
    notify::broadcast(core, owner, node, &cfg, notify::purge_event(node)).await;
    Ok(())
}

/// Delete `node` and its items, telling subscribers.
pub async fn delete(core: &Arc<Core>, owner: &BareJid, node: &str) -> Result<(), StanzaError> {
    let cfg = node_config(core, owner, node).await?;
    core.db
        .pep_delete(username(owner), node)
        .await
        .map_err(storage_err)?;
    notify::broadcast(core, owner, node, &cfg, notify::delete_event(node)).await;
    Ok(())
}

/// Subscribe `jid` (the requester's bare or full JID) to `owner`'s `node`
/// explicitly (XEP-0060 §6.1), if the access model lets the requester see it;
/// the last item follows at once unless the node says never.
pub async fn subscribe(
    core: &Arc<Core>,
    owner: &BareJid,
    requester: &jid::FullJid,
    node: &str,
    jid: &jid::Jid,
) -> Result<(), StanzaError> {
    if jid.to_bare() != requester.to_bare() {
        return Err(StanzaError::bad_request().with_app("invalid-jid", NS_ERRORS));
    }
    let cfg = node_config(core, owner, node).await?;
    access::check(core, owner, &cfg, &requester.to_bare()).await?;
    if !core
        .db
        .pep_subscribe(username(owner), node, jid.as_str(), MAX_SUBSCRIPTIONS)
        .await
        .map_err(storage_err)?
    {
        return Err(
            StanzaError::new("wait", "resource-constraint").with_text(format!(
                "a node may have at most {MAX_SUBSCRIPTIONS} subscribers"
            )),
        );
    }
    if cfg.send_last != super::config::SendLast::Never {
        let items = core
            .db
            .pep_items(username(owner), node, 1, usize::MAX)
            .await
            .map_err(storage_err)?;
        if !items.is_empty() {
            notify::to_jid(core, owner, jid, notify::items_event(node, &items));
        }
    }
    Ok(())
}

/// Remove `jid`'s explicit subscription to `owner`'s `node`.
pub async fn unsubscribe(
    core: &Arc<Core>,
    owner: &BareJid,
    requester: &jid::FullJid,
    node: &str,
    jid: &jid::Jid,
) -> Result<(), StanzaError> {
    if jid.to_bare() != requester.to_bare() {
        return Err(StanzaError::bad_request().with_app("invalid-jid", NS_ERRORS));
    }
    node_config(core, owner, node).await?;
    if !core
        .db
        .pep_unsubscribe(username(owner), node, jid.as_str())
        .await
        .map_err(storage_err)?
    {
        return Err(
            StanzaError::new("cancel", "unexpected-request").with_app("not-subscribed", NS_ERRORS)
        );
    }
    Ok(())
}
