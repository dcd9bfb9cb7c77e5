//! XEP-0054 vcard-temp: each account stores one vCard; anyone may read it.

use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry};
use crate::router::Addr;
use crate::stanza::StanzaError;
use minidom::Element;

pub const MODULE: Module = Module {
    name: "vcard",
    register,
};
const NS: &str = "vcard-temp";

fn register(r: &mut Registry) {
    r.iq(false, Addr::SelfBare, NS, "vCard", get);
    r.iq(false, Addr::Bare, NS, "vCard", get);
    r.iq(true, Addr::SelfBare, NS, "vCard", set);
    r.feature(FeatureScope::Host, NS);
    r.feature(FeatureScope::Account, NS);
    r.migrations(&crate::storage::vcard::MIGRATOR);
}

fn target(cx: &IqCtx<'_>) -> String {
    cx.to
        .and_then(|j| j.node().map(|n| n.as_str().to_string()))
        .unwrap_or_else(|| crate::deliver::username(&cx.session.jid.to_bare()).to_string())
}

fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let user = target(&cx);
        let db = &cx.core.db;
        if !db
            .account_exists(&user)
            .await
            .map_err(|_| StanzaError::internal())?
        {
            return Err(StanzaError::service_unavailable());
        }
        match db
            .vcard_get(&user)
            .await
            .map_err(|_| StanzaError::internal())?
        {
            Some(text) => text
                .parse::<Element>()
                .map(Some)
                .map_err(|_| StanzaError::internal()),
            // XEP-0054 §3.1: an empty vCard when none was published.
            None => Ok(Some(Element::bare("vCard", NS))),
        }
    })
}

fn set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let user = target(&cx);
        let mut buf = Vec::new();
        crate::xml::serialize(cx.payload, &mut buf);
        let text = String::from_utf8(buf).map_err(|_| StanzaError::bad_request())?;
        cx.core
            .db
            .vcard_set(&user, &text)
            .await
            .map_err(|_| StanzaError::internal())?;
        // XEP-0398: a PHOTO becomes the PEP avatar too.
        crate::xep::avatar::vcard_stored(cx.core, &cx.session.jid.to_bare(), cx.payload).await;
        Ok(None)
    })
}
