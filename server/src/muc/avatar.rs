//! Room pictures: vcard-temp on the room JID (XEP-0054) as XEP-0486
//! describes it.
//!
//! Anyone who may see the room (it is public, or they are an occupant or
//! affiliated with it) reads its vCard; only owners set it, up to
//! [`MAX_VCARD_BYTES`] serialised, and only on persistent rooms (the vCard is
//! stored with the room). An empty `<vCard/>` removes the picture. The SHA-1
//! of each `PHOTO` is the room's avatar hash: `muc#roominfo_avatarhash` in
//! disco#info, and on a change the room sends its occupants a presence from
//! its bare JID with `<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>`
//! and a status 104 message (configuration changed) that makes clients look
//! again.

use std::sync::Arc;

use base64::Engine;
use jid::{BareJid, FullJid};
use minidom::Element;

use super::room::{Affiliation, Room};
use super::service::RoomRef;
use super::{send_to, NS_USER};
use crate::core::Core;
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::form::field;
use crate::xml::{el, ns, serialize};

/// `vcard-temp`
pub const NS_VCARD: &str = "vcard-temp";
const NS_UPDATE: &str = "vcard-temp:x:update";

/// Largest room vCard, serialised (a photo of about 95 KiB; a stanza is at most 256 KiB).
pub const MAX_VCARD_BYTES: usize = 128 * 1024;

/// Load the stored hash of a room (when the rooms are loaded).
pub async fn restore(core: &Core, r: &mut Room) {
    match core.db.muc_avatar_hash(&r.name).await {
        Ok(h) => r.avatar_hash = h,
        Err(e) => tracing::error!(error = %e, room = %r.jid, "could not load a room picture"),
    }
}

/// A vcard-temp query to a room.
pub async fn handle(
    core: &Arc<Core>,
    room: &RoomRef,
    from: &FullJid,
    set: bool,
    q: &Element,
) -> IqResult {
    let mut r = room.lock().await;
    if r.destroyed {
        return Err(StanzaError::item_not_found());
    }
    let bare = from.to_bare();
    if !set {
        if !may_see(&r, &bare) {
            return Err(StanzaError::new("auth", "forbidden")
                .with_text("only members see this room's picture"));
        }
        let stored = core
            .db
            .muc_avatar_vcard(&r.name)
            .await
            .map_err(|_| StanzaError::internal())?;
        return match stored {
            Some(text) => text
                .parse::<Element>()
                .map(Some)
                .map_err(|_| StanzaError::internal()),
            None => Ok(Some(Element::bare("vCard", NS_VCARD))),
        };
    }
    if r.affiliation(&bare) != Affiliation::Owner {
        return Err(
            StanzaError::new("auth", "forbidden").with_text("only owners set the room's picture")
        );
    }
    if !r.config.persistent || r.locked {
        return Err(StanzaError::not_allowed().with_text("only kept rooms have a picture"));
    }
    let hash = photo_hash(q)?;
    if q.children().next().is_none() {
        core.db
            .muc_avatar_delete(&r.name)
            .await
            .map_err(|_| StanzaError::internal())?;
    } else {
        let mut buf = Vec::new();
        serialize(q, &mut buf);
        if buf.len() > MAX_VCARD_BYTES {
            return Err(
                StanzaError::new("modify", "not-acceptable").with_text(format!(
                    "a room's vCard is at most {} KiB",
                    MAX_VCARD_BYTES / 1024
                )),
            );
        }
        let text = String::from_utf8(buf).map_err(|_| StanzaError::bad_request())?;
        core.db
            .muc_avatar_set(&r.name, &text, hash.as_deref().unwrap_or(""))
            .await
            .map_err(|_| StanzaError::internal())?;
    }
    let hash = hash.filter(|h| !h.is_empty());
    if hash != r.avatar_hash {
        r.avatar_hash = hash;
        announce(core, &r);
    }
    Ok(None)
}

/// Whether `bare` may read the room's vCard.
pub fn may_see(r: &Room, bare: &BareJid) -> bool {
    r.config.public
        || r.affiliation(bare) >= Affiliation::Member
        || r.by_bare(bare).next().is_some()
}

/// The hex SHA-1 of each photo's image, comma-separated (`None` without a
/// photo); a photo that is not base64 is refused.
pub fn photo_hash(vcard: &Element) -> Result<Option<String>, StanzaError> {
    let mut hashes = Vec::new();
    for photo in vcard.children().filter(|c| c.is("PHOTO", NS_VCARD)) {
        let Some(binval) = photo.get_child("BINVAL", NS_VCARD) else {
            continue;
        };
        let clean: String = binval
            .text()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|_| StanzaError::bad_request().with_text("the photo is not base64"))?;
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes);
        hashes.push(
            d.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
    }
    Ok((!hashes.is_empty()).then(|| hashes.join(",")))
}

/// Tell everyone in the room the picture changed.
fn announce(core: &Core, r: &Room) {
    let mut photo = el("photo", NS_UPDATE);
    if let Some(h) = r.avatar_hash.as_deref().and_then(|h| h.split(',').next()) {
        photo = photo.text(h);
    }
    let presence = el("presence", ns::CLIENT)
        .attr("from", r.jid.as_str())
        .child(el("x", NS_UPDATE).child(photo.build()).build())
        .build();
    let notice = el("message", ns::CLIENT)
        .attr("from", r.jid.as_str())
        .attr("type", "groupchat")
        .attr("id", crate::core::random_hex(8))
        .child(
            el("x", NS_USER)
                .child(el("status", NS_USER).attr("code", "104").build())
                .build(),
        )
        .build();
    for o in &r.occupants {
        for s in &o.sessions {
            send_to(core, &s.jid, presence.clone());
            send_to(core, &s.jid, notice.clone());
        }
    }
}

/// Add `muc#roominfo_avatarhash` to a room's `muc#roominfo` form when the
/// room has a picture.
pub fn roominfo_field(r: &Room, form: &mut Element) {
    if let Some(h) = &r.avatar_hash {
        let values: Vec<&str> = h.split(',').collect();
        form.append_child(
            field(
                "muc#roominfo_avatarhash",
                Some("text-multi"),
                Some("Avatar hash"),
                &values,
            )
            .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcard(photos: &[&str]) -> Element {
        let mut v = el("vCard", NS_VCARD);
        for p in photos {
            v = v.child(
                el("PHOTO", NS_VCARD)
                    .child(el("TYPE", NS_VCARD).text("image/png").build())
                    .child(el("BINVAL", NS_VCARD).text(*p).build())
                    .build(),
            );
        }
        v.build()
    }

    #[test]
    fn the_hash_is_the_sha1_of_each_decoded_photo() {
        // base64("abc"); sha1("abc") = a9993e36…
        let h = photo_hash(&vcard(&["YWJj"])).unwrap().unwrap();
        assert_eq!(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
        let two = photo_hash(&vcard(&["YWJj", "YW Jj\n"])).unwrap().unwrap();
        assert_eq!(two.split(',').count(), 2);
        assert_eq!(photo_hash(&vcard(&[])).unwrap(), None);
        assert_eq!(
            photo_hash(&vcard(&["not base64!"])).unwrap_err().condition,
            "bad-request"
        );
    }
}
