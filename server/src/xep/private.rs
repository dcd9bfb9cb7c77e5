//! Private XML storage (XEP-0049, `jabber:iq:private`): each account keeps
//! one element per namespace, readable and writable only by itself.
//! Legacy bookmarks (`storage:bookmarks`, XEP-0048) are not stored here but
//! mapped onto the bookmarks 2 PEP node (`xep::bookmarks`), so old and new
//! clients see the same group chats.
//!
//! Bounds: at most [`MAX_NAMESPACES`] namespaces per account, each element at
//! most `limits.pep_item_size` bytes.

use minidom::Element;

use crate::deliver::username;
use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::stanza::StanzaError;

pub const MODULE: Module = Module {
    name: "private",
    register,
};
pub const NS: &str = "jabber:iq:private";

/// Namespaces one account may store.
pub const MAX_NAMESPACES: usize = 100;

fn register(r: &mut Registry) {
    r.iq(false, Addr::SelfBare, NS, "query", get);
    r.iq(true, Addr::SelfBare, NS, "query", set);
    r.iq(false, Addr::Bare, NS, "query", others);
    r.iq(true, Addr::Bare, NS, "query", others);
    r.feature(FeatureScope::Host, NS);
    r.feature(FeatureScope::Account, NS);
    r.migrations(&crate::storage::private::MIGRATOR);
}

/// XEP-0049 §3: another user's private data is not for anyone else.
fn others(_cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async { Err(StanzaError::new("cancel", "forbidden")) })
}

fn storage_err(e: crate::storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "private XML storage failed");
    StanzaError::internal()
}

/// The one child of the query, which names the namespace.
fn key(payload: &Element) -> Result<&Element, StanzaError> {
    let children: Vec<&Element> = payload.children().collect();
    let [child] = children[..] else {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("the query holds exactly one element"));
    };
    let ns = child.ns();
    if ns.is_empty() || ns == NS || ns.starts_with("jabber:") && ns != "jabber:client" {
        // XEP-0049 §3: the jabber: namespaces are reserved.
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("that namespace cannot be stored"));
    }
    Ok(child)
}

fn query(child: Element) -> Element {
    Element::builder("query", NS).append(child).build()
}

fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let child = key(cx.payload)?;
        let me = cx.session.jid.to_bare();
        let ns = child.ns();
        if ns == super::bookmarks::NS_LEGACY {
            return Ok(Some(query(super::bookmarks::legacy(cx.core, &me).await?)));
        }
        let stored = cx
            .core
            .db
            .private_get(username(&me), &ns)
            .await
            .map_err(storage_err)?;
        let out = stored
            .and_then(|s| s.parse::<Element>().ok())
            .unwrap_or_else(|| child.clone());
        Ok(Some(query(out)))
    })
}

fn set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let child = key(cx.payload)?;
        let me = cx.session.jid.to_bare();
        let ns = child.ns();
        let mut buf = Vec::new();
        crate::xml::serialize(child, &mut buf);
        if buf.len() > cx.core.limits().pep_item_size {
            return Err(
                StanzaError::new("modify", "not-acceptable").with_text(format!(
                    "private data may be at most {} bytes",
                    cx.core.limits().pep_item_size
                )),
            );
        }
        let text = String::from_utf8(buf).map_err(|_| StanzaError::bad_request())?;
        let user = username(&me);
        let db = &cx.core.db;
        if db
            .private_get(user, &ns)
            .await
            .map_err(storage_err)?
            .is_none()
            && db.private_count(user).await.map_err(storage_err)? >= MAX_NAMESPACES
        {
            return Err(
                StanzaError::new("wait", "resource-constraint").with_text(format!(
                    "at most {MAX_NAMESPACES} namespaces of private data per account"
                )),
            );
        }
        if ns == super::bookmarks::NS_LEGACY {
            super::bookmarks::store_legacy(cx.core, &me, child).await?;
        }
        db.private_set(user, &ns, &text)
            .await
            .map_err(storage_err)?;
        Ok(None)
    })
}
