//! HTTP File Upload (XEP-0363, `urn:xmpp:http:upload:0`): the service
//! `upload.DOMAIN` hands out upload slots; the web pod (`kith-web`) receives
//! the PUT and serves the GET on the same origin.
//!
//! This file owns the XMPP side: the service's disco identity and features
//! (with `max-file-size`), slot requests with their errors (`<file-too-large/>`
//! with the limit, `<resource-constraint/>` over the quota, `<bad-request/>`
//! for a bad file name or size), and the listing in the server's disco#items.
//! `slot.rs` signs slot URLs; `store.rs` is the file store the web pod uses.

pub(crate) mod slot;
pub(crate) mod store;

use std::sync::Arc;

use jid::Jid;
use minidom::Element;

use crate::core::Core;
use crate::registry::{Module, Registry};
use crate::router::bounce;
use crate::session::SessionHandle;
use crate::stanza::{error_reply, iq_result, Kind, StanzaError};
use crate::xml::{el, ns};

pub use store::{PutGrant, PutQuery, PutRefused, StoredFile, Uploads};

/// The XEP-0363 namespace.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DATA: &str = "jabber:x:data";

/// The upload module: its storage and its place in the server's disco#items.
pub const MODULE: Module = Module {
    name: "upload",
    register,
};

fn register(r: &mut Registry) {
    r.migrations(&crate::storage::uploads::MIGRATOR);
    r.host_items(|core| vec![service_domain(core)]);
}

/// `upload.DOMAIN`.
pub fn service_domain(core: &Core) -> String {
    format!("upload.{}", core.domain)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The slot-signing secret (generated once, kept in the database).
pub(crate) async fn secret(core: &Core) -> Result<Vec<u8>, crate::storage::StorageError> {
    core.db
        .server_secret("upload-slot-hmac", || {
            crate::core::random_hex(32).into_bytes()
        })
        .await
}

/// The origin slot URLs point at.
fn base_url(core: &Core) -> String {
    if let Some(b) = &core.config.upload.base_url {
        return b.trim_end_matches('/').to_string();
    }
    match core.config.listen.https.map(|a| a.port()) {
        Some(443) | None => format!("https://{}", core.domain),
        Some(p) => format!("https://{}:{p}", core.domain),
    }
}

/// Handle a stanza a client addressed to the upload service; false if it is
/// not addressed to it. Called by the router before remote routing.
pub async fn route_from_client(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    stanza: &Element,
    to: Option<&Jid>,
) -> bool {
    let Some(to) = to else { return false };
    if to.domain().as_str() != service_domain(core) {
        return false;
    }
    match Kind::of(stanza) {
        Some(Kind::Iq) if matches!(stanza.attr("type"), Some("get")) => {
            let reply = match answer(core, session, stanza).await {
                Ok(payload) => iq_result(stanza, Some(payload), to.as_str()),
                Err(e) => match error_reply(stanza, &e.error) {
                    Some(mut r) => {
                        if let (Some(extra), Some(err)) =
                            (e.app, r.get_child_mut("error", ns::CLIENT))
                        {
                            err.append_child(extra);
                        }
                        r
                    }
                    None => return true,
                },
            };
            session.send(reply);
        }
        Some(Kind::Presence) => {}
        Some(Kind::Iq) if matches!(stanza.attr("type"), Some("result" | "error")) => {}
        _ => bounce(session, stanza, StanzaError::service_unavailable()),
    }
    true
}

/// A stanza error with an optional application-specific condition.
struct Refusal {
    error: StanzaError,
    app: Option<Element>,
}

impl From<StanzaError> for Refusal {
    fn from(error: StanzaError) -> Self {
        Refusal { error, app: None }
    }
}

async fn answer(
    core: &Arc<Core>,
    session: &SessionHandle,
    iq: &Element,
) -> Result<Element, Refusal> {
    let mut children = iq.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request().into());
    };
    if payload.is("query", NS_DISCO_INFO) {
        return Ok(disco_info(core));
    }
    if payload.is("query", NS_DISCO_ITEMS) {
        return Ok(Element::bare("query", NS_DISCO_ITEMS));
    }
    if payload.is("request", NS_UPLOAD) {
        return request_slot(core, session, payload).await;
    }
    Err(StanzaError::service_unavailable().into())
}

fn disco_info(core: &Core) -> Element {
    let field = |var: &str, value: &str, ty: Option<&str>| {
        let mut f = el("field", NS_DATA).attr("var", var);
        if let Some(t) = ty {
            f = f.attr("type", t);
        }
        f.child(el("value", NS_DATA).text(value).build()).build()
    };
    el("query", NS_DISCO_INFO)
        .child(
            el("identity", NS_DISCO_INFO)
                .attr("category", "store")
                .attr("type", "file")
                .attr("name", "HTTP File Upload")
                .build(),
        )
        .child(
            el("feature", NS_DISCO_INFO)
                .attr("var", NS_DISCO_INFO)
                .build(),
        )
        .child(el("feature", NS_DISCO_INFO).attr("var", NS_UPLOAD).build())
        .child(
            el("x", NS_DATA)
                .attr("type", "result")
                .child(field("FORM_TYPE", NS_UPLOAD, Some("hidden")))
                .child(field(
                    "max-file-size",
                    &core.config.upload.max_file_size.to_string(),
                    None,
                ))
                .build(),
        )
        .build()
}

/// A slot request (XEP-0363 §4).
async fn request_slot(
    core: &Arc<Core>,
    session: &SessionHandle,
    req: &Element,
) -> Result<Element, Refusal> {
    let cfg = &core.config.upload;
    let filename = req.attr("filename").unwrap_or("");
    if !slot::valid_filename(filename) {
        return Err(StanzaError::bad_request()
            .with_text("the file name is empty, too long or contains '/'")
            .into());
    }
    let Some(size) = req.attr("size").and_then(|s| s.parse::<u64>().ok()) else {
        return Err(StanzaError::bad_request()
            .with_text("size must be a number of bytes")
            .into());
    };
    if size > cfg.max_file_size {
        return Err(Refusal {
            error: StanzaError::new("modify", "not-acceptable").with_text(format!(
                "the file is too large (at most {} bytes)",
                cfg.max_file_size
            )),
            app: Some(
                el("file-too-large", NS_UPLOAD)
                    .child(
                        el("max-file-size", NS_UPLOAD)
                            .text(cfg.max_file_size.to_string())
                            .build(),
                    )
                    .build(),
            ),
        });
    }
    let owner = crate::deliver::username(&session.jid.to_bare()).to_string();
    let used = core
        .db
        .upload_usage(&owner)
        .await
        .map_err(|_| StanzaError::internal())?;
    if used.saturating_add(size) > cfg.quota {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text(format!(
                "your uploads would exceed your quota of {} bytes",
                cfg.quota
            ))
            .into());
    }
    let secret = secret(core).await.map_err(|_| StanzaError::internal())?;
    let slot = slot::Slot {
        id: crate::core::random_hex(16),
        filename: filename.to_string(),
        size,
        content_type: slot::content_type_or_default(req.attr("content-type")),
        owner,
        expires: now() + cfg.slot_lifetime.as_secs() as i64,
    };
    let base = base_url(core);
    Ok(el("slot", NS_UPLOAD)
        .child(
            el("put", NS_UPLOAD)
                .attr("url", slot.put_url(&base, &secret))
                .build(),
        )
        .child(
            el("get", NS_UPLOAD)
                .attr("url", slot.get_url(&base))
                .build(),
        )
        .build())
}
