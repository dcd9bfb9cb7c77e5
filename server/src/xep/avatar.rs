//! Avatars across protocols: User Avatar (XEP-0084) in PEP, the vCard
//! `PHOTO` (XEP-0054) and the photo hash in presence (XEP-0153), kept in
//! step as XEP-0398 (`urn:xmpp:pep-vcard-conversion:0`) describes.
//!
//! - A client that publishes avatar metadata in PEP gets the image (from its
//!   `urn:xmpp:avatar:data` item) copied into its vCard `PHOTO`.
//! - A client that stores a vCard with a `PHOTO` gets it published as PEP
//!   avatar data and metadata (access model as the nodes have, presence by default).
//! - Available presence from an account with a PEP avatar carries
//!   `<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>` unless the
//!   client put its own there; when the avatar changes, the account's online
//!   presence is sent again to its contacts with the new hash, so vCard-only
//!   clients notice without waiting for the next presence.
//!
//! A vCard stored without a `PHOTO` leaves the PEP avatar alone (many clients
//! save vCards without reading the photo first).

use std::sync::Arc;

use base64::Engine;
use jid::BareJid;
use minidom::Element;

use crate::core::Core;
use crate::deliver::{available, username};
use crate::pubsub::service;
use crate::registry::{BoxFuture, FeatureScope, Module, Registry};
use crate::session::SessionHandle;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "avatar",
    register,
};

pub const NS_DATA: &str = "urn:xmpp:avatar:data";
pub const NS_METADATA: &str = "urn:xmpp:avatar:metadata";
const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
const NS_UPDATE: &str = "vcard-temp:x:update";
const NS_VCARD: &str = "vcard-temp";

fn register(r: &mut Registry) {
    r.feature(FeatureScope::Account, NS_CONVERSION);
    r.presence_filter(stamp_presence);
}

fn sha1_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

/// The current avatar metadata item: (item id, whether it names an image).
async fn current(core: &Core, owner: &BareJid) -> Option<(String, bool)> {
    let items = core
        .db
        .pep_items(username(owner), NS_METADATA, 1, usize::MAX)
        .await
        .ok()?;
    let last = items.last()?;
    let has_info = last
        .payload
        .parse::<Element>()
        .map(|m| m.has_child("info", NS_METADATA))
        .unwrap_or(false);
    Some((last.id.clone(), has_info))
}

/// The SHA-1 of the image in a stored vCard, if it has one.
fn vcard_photo_hash(vcard: &Element) -> Option<String> {
    let binval = vcard
        .get_child("PHOTO", NS_VCARD)?
        .get_child("BINVAL", NS_VCARD)?;
    b64(&binval.text()).map(|b| sha1_hex(&b))
}

/// A PEP publish by the owner succeeded (called by the pubsub module).
pub async fn published(core: &Arc<Core>, owner: &BareJid, node: &str, id: &str, payload: &Element) {
    if node != NS_METADATA {
        return;
    }
    let shown = payload
        .children()
        .find(|i| i.is("info", NS_METADATA))
        .map(|i| i.attr("id").unwrap_or(id).to_string());
    rebroadcast(core, owner, shown.as_deref().unwrap_or("")).await;
    let Some(info) = payload
        .children()
        .find(|i| i.is("info", NS_METADATA) && i.attr("url").is_none_or(str::is_empty))
    else {
        return; // avatar switched off, or hosted elsewhere: leave the vCard alone
    };
    let hash = info.attr("id").unwrap_or(id).to_string();
    let mime = info.attr("type").unwrap_or("image/png").to_string();
    let user = username(owner).to_string();
    let stored = core.db.vcard_get(&user).await.ok().flatten();
    let mut vcard = stored
        .and_then(|s| s.parse::<Element>().ok())
        .unwrap_or_else(|| Element::bare("vCard", NS_VCARD));
    if vcard_photo_hash(&vcard).as_deref() == Some(hash.as_str()) {
        return; // already in step (or this publish came from the vCard)
    }
    let Ok(items) = core
        .db
        .pep_items_by_id(&user, NS_DATA, std::slice::from_ref(&hash), usize::MAX)
        .await
    else {
        return;
    };
    let Some(data) = items
        .first()
        .and_then(|i| i.payload.parse::<Element>().ok())
        .filter(|d| d.is("data", NS_DATA))
    else {
        return;
    };
    let photo = el("PHOTO", NS_VCARD)
        .child(el("TYPE", NS_VCARD).text(mime).build())
        .child(el("BINVAL", NS_VCARD).text(data.text().trim()).build())
        .build();
    let mut rebuilt = Element::bare("vCard", NS_VCARD);
    for c in vcard.children().filter(|c| !c.is("PHOTO", NS_VCARD)) {
        rebuilt.append_child(c.clone());
    }
    rebuilt.append_child(photo);
    vcard = rebuilt;
    let mut buf = Vec::new();
    crate::xml::serialize(&vcard, &mut buf);
    if let Ok(text) = String::from_utf8(buf) {
        if let Err(e) = core.db.vcard_set(&user, &text).await {
            tracing::warn!(error = %e, "could not copy the PEP avatar into the vCard");
        }
    }
}

/// A vCard was stored by its owner (called by the vCard module).
pub async fn vcard_stored(core: &Arc<Core>, owner: &BareJid, vcard: &Element) {
    let Some(photo) = vcard.get_child("PHOTO", NS_VCARD) else {
        return;
    };
    let Some(bin) = photo.get_child("BINVAL", NS_VCARD) else {
        return;
    };
    let Some(bytes) = b64(&bin.text()) else {
        return;
    };
    let hash = sha1_hex(&bytes);
    if current(core, owner).await.is_some_and(|(id, _)| id == hash) {
        return; // already in step
    }
    let mime = photo
        .get_child("TYPE", NS_VCARD)
        .map(|t| t.text().trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "image/png".into());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let data = el("data", NS_DATA).text(encoded).build();
    let meta = el("metadata", NS_METADATA)
        .child(
            el("info", NS_METADATA)
                .attr("id", hash.clone())
                .attr("type", mime)
                .attr("bytes", bytes.len().to_string())
                .build(),
        )
        .build();
    let me = owner.to_string();
    for (node, payload) in [(NS_DATA, data), (NS_METADATA, meta)] {
        if let Err(e) = service::publish(core, owner, &me, node, Some(&hash), &payload, None).await
        {
            tracing::warn!(node, error = ?e, "could not publish the vCard photo as PEP avatar");
            return;
        }
    }
    rebroadcast(core, owner, &hash).await;
}

/// The avatar is now `hash` (empty: none): stamp it into the presence of
/// each online session of `owner` and send that presence to the contacts
/// who see it (XEP-0153 §4.1), if it changed.
async fn rebroadcast(core: &Arc<Core>, owner: &BareJid, hash: &str) {
    let mut changed = false;
    for s in available(core, owner) {
        let mut st = s.state();
        let Some(mut p) = st.last() else { continue };
        let current = p
            .get_child("x", NS_UPDATE)
            .and_then(|x| x.get_child("photo", NS_UPDATE))
            .map(|ph| ph.text());
        if current.as_deref() == Some(hash) {
            continue;
        }
        while p.remove_child("x", NS_UPDATE).is_some() {}
        p.append_child(
            el("x", NS_UPDATE)
                .child(el("photo", NS_UPDATE).text(hash).build())
                .build(),
        );
        st.set_last(Some(&p));
        changed = true;
    }
    if !changed {
        return;
    }
    let Ok(items) = core.db.roster_items(username(owner)).await else {
        return;
    };
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        if let Ok(contact) = BareJid::new(&item.contact) {
            crate::presence::send_current_presence(core, owner, &contact, true);
        }
    }
}

fn stamp_presence<'a>(
    core: &'a Arc<Core>,
    session: &'a Arc<SessionHandle>,
    p: &'a mut Element,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if p.has_child("x", NS_UPDATE) {
            return;
        }
        let Some((id, has_info)) = current(core, &session.jid.to_bare()).await else {
            return;
        };
        let photo = if has_info {
            el("photo", NS_UPDATE).text(id).build()
        } else {
            el("photo", NS_UPDATE).build()
        };
        p.append_child(el("x", NS_UPDATE).child(photo).build());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_hash_is_sha1_hex_of_the_decoded_image() {
        let v = el("vCard", NS_VCARD)
            .child(
                el("PHOTO", NS_VCARD)
                    .child(el("BINVAL", NS_VCARD).text("aGVs\nbG8=").build())
                    .build(),
            )
            .build();
        // sha1("hello")
        assert_eq!(
            vcard_photo_hash(&v).as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
    }
}
