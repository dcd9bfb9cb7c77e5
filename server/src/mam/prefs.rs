//! Archiving preferences (XEP-0313 §5): `<prefs default='always|never|roster'>`
//! with `<always/>` and `<never/>` JID lists, and the decision they make for
//! each message.

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::deliver::username;
use crate::registry::{BoxFuture, IqCtx, IqResult};
use crate::stanza::StanzaError;
use crate::storage::archive::ArchivePrefs;
use crate::xml::el;

use super::NS;

/// Most JIDs in each of the `always` and `never` lists.
pub const MAX_PREF_JIDS: usize = 1000;

/// Whether `user`'s preferences keep messages exchanged with `with`.
pub async fn wants(core: &Core, user: &BareJid, with: &BareJid) -> bool {
    let prefs = match core.db.archive_prefs(username(user)).await {
        Ok(p) => p,
        Err(e) => {
            // Archiving by default loses nothing; say so in the log.
            tracing::error!(error = %e, "reading archiving preferences failed; archiving");
            return true;
        }
    };
    let w = with.as_str();
    if prefs.never.iter().any(|j| j == w) {
        return false;
    }
    if prefs.always.iter().any(|j| j == w) {
        return true;
    }
    match prefs.default_mode.as_str() {
        "never" => false,
        "roster" => crate::roster::items(core, user)
            .await
            .iter()
            .any(|i| i.contact == w),
        _ => true,
    }
}

fn to_element(p: &ArchivePrefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        el(name, NS)
            .children(jids.iter().map(|j| el("jid", NS).text(j.clone()).build()))
            .build()
    };
    el("prefs", NS)
        .attr("default", p.default_mode.clone())
        .child(list("always", &p.always))
        .child(list("never", &p.never))
        .build()
}

/// Parse a `<prefs/>` set request.
fn parse(p: &Element) -> Result<ArchivePrefs, StanzaError> {
    let default_mode = match p.attr("default") {
        Some(m @ ("always" | "never" | "roster")) => m.to_string(),
        Some(other) => {
            return Err(StanzaError::bad_request().with_text(format!(
                "default must be always, never or roster, not '{other}'"
            )))
        }
        None => return Err(StanzaError::bad_request().with_text("prefs needs a default")),
    };
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut out = Vec::new();
        for j in p
            .get_child(name, NS)
            .into_iter()
            .flat_map(|l| l.children())
            .filter(|c| c.is("jid", NS))
        {
            let jid = Jid::new(j.text().trim()).map_err(|_| {
                StanzaError::jid_malformed().with_text(format!("'{}' is not a JID", j.text()))
            })?;
            out.push(jid.to_bare().to_string());
        }
        out.sort();
        out.dedup();
        if out.len() > MAX_PREF_JIDS {
            return Err(StanzaError::new("modify", "not-acceptable")
                .with_text(format!("at most {MAX_PREF_JIDS} JIDs per list")));
        }
        Ok(out)
    };
    Ok(ArchivePrefs {
        default_mode,
        always: list("always")?,
        never: list("never")?,
    })
}

/// `<iq type='get'><prefs/></iq>`
pub fn get(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let user = cx.session.jid.to_bare();
        let p = cx
            .core
            .db
            .archive_prefs(username(&user))
            .await
            .map_err(|_| StanzaError::internal())?;
        Ok(Some(to_element(&p)))
    })
}

/// `<iq type='set'><prefs default='…'>…</prefs></iq>`: replaces the preferences
/// and answers with them as stored.
pub fn set(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let prefs = parse(cx.payload)?;
        let user = cx.session.jid.to_bare();
        cx.core
            .db
            .archive_set_prefs(username(&user), &prefs)
            .await
            .map_err(|_| StanzaError::internal())?;
        Ok(Some(to_element(&prefs)))
    })
}
