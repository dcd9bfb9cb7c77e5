//! XEP-0030 Service Discovery, answered from the module registry: the features
//! and identities every module declared, for the server and for accounts.

use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::stanza::StanzaError;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "disco",
    register,
};
pub const NS_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn register(r: &mut Registry) {
    r.iq(false, Addr::Host, NS_INFO, "query", info);
    r.iq(false, Addr::SelfBare, NS_INFO, "query", info);
    r.iq(false, Addr::Bare, NS_INFO, "query", info);
    r.iq(false, Addr::Host, NS_ITEMS, "query", items);
    r.iq(false, Addr::SelfBare, NS_ITEMS, "query", items);
    r.iq(false, Addr::Bare, NS_ITEMS, "query", items);
    for scope in [FeatureScope::Host, FeatureScope::Account] {
        r.feature(scope, NS_INFO);
        r.feature(scope, NS_ITEMS);
    }
    r.identity(FeatureScope::Host, "server", "im", "Kith");
    r.identity(FeatureScope::Account, "account", "registered", "");
}

async fn check(cx: &IqCtx<'_>) -> Result<FeatureScope, StanzaError> {
    if cx.payload.attr("node").is_some_and(|n| !n.is_empty()) {
        return Err(StanzaError::item_not_found());
    }
    if cx.addr == Addr::Host {
        return Ok(FeatureScope::Host);
    }
    let user = cx
        .to
        .and_then(|j| j.node().map(|n| n.as_str().to_string()))
        .unwrap_or_else(|| crate::deliver::username(&cx.session.jid.to_bare()).to_string());
    match cx.core.db.account_exists(&user).await {
        Ok(true) => Ok(FeatureScope::Account),
        Ok(false) => Err(StanzaError::service_unavailable()),
        Err(_) => Err(StanzaError::internal()),
    }
}

fn info(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        if let Some(node) = cx.payload.attr("node").filter(|n| !n.is_empty()) {
            return node_info(&cx, node).await;
        }
        let scope = check(&cx).await?;
        let reg = &cx.core.registry;
        let mut q = el("query", NS_INFO);
        for (category, ty, name) in reg.identities(scope) {
            q = q.child(
                el("identity", NS_INFO)
                    .attr("category", category)
                    .attr("type", ty)
                    .attr_opt("name", (!name.is_empty()).then_some(name))
                    .build(),
            );
        }
        for var in reg.features(scope) {
            q = q.child(el("feature", NS_INFO).attr("var", var).build());
        }
        Ok(Some(q.build()))
    })
}

/// disco#info on a node of an account (e.g. a PEP node, XEP-0060 §5.3),
/// answered by the module that owns it.
async fn node_info(cx: &IqCtx<'_>, node: &str) -> IqResult {
    if cx.addr == Addr::Host {
        return Err(StanzaError::item_not_found());
    }
    let user = cx
        .to
        .and_then(|j| j.node().map(|n| n.as_str().to_string()))
        .unwrap_or_else(|| crate::deliver::username(&cx.session.jid.to_bare()).to_string());
    let asker = cx.session.jid.to_bare();
    for h in cx.core.registry.disco_node_info_hooks() {
        if let Some(children) = h(cx.core, &asker, &user, node).await {
            return Ok(Some(
                el("query", NS_INFO)
                    .attr("node", node)
                    .children(children)
                    .build(),
            ));
        }
    }
    Err(StanzaError::item_not_found())
}

fn items(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let scope = check(&cx).await?;
        let mut q = el("query", NS_ITEMS);
        if scope == FeatureScope::Host {
            // Services modules list: connected components (XEP-0114), …
            for jid in cx.core.registry.host_item_jids(cx.core) {
                q = q.child(el("item", NS_ITEMS).attr("jid", jid).build());
            }
        }
        if scope == FeatureScope::Account {
            // Account items come from modules (PEP nodes the asker may see).
            let user = cx
                .to
                .and_then(|j| j.node().map(|n| n.as_str().to_string()))
                .unwrap_or_else(|| crate::deliver::username(&cx.session.jid.to_bare()).to_string());
            let asker = cx.session.jid.to_bare();
            for h in cx.core.registry.disco_items_hooks() {
                q = q.children(h(cx.core, &asker, &user).await);
            }
        }
        Ok(Some(q.build()))
    })
}
