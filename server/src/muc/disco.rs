//! Service discovery for group chats (XEP-0045 §6): the service's identity
//! and features, the directory of public rooms, and each room's identity,
//! features (`muc_membersonly`, `muc_nonanonymous`…) and `muc#roominfo` form.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;

use super::room::Room;
use super::service::RoomRef;
use super::{occupant_id, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC};
use crate::core::Core;
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::el;
use crate::xml::form::{field, form_type_field, NS_DATA};

/// Rooms listed in one disco#items answer, at most.
const MAX_LISTED: usize = 500;

fn identity(name: &str) -> Element {
    el("identity", NS_DISCO_INFO)
        .attr("category", "conference")
        .attr("type", "text")
        .attr("name", name)
        .build()
}

fn feature(var: &str) -> Element {
    el("feature", NS_DISCO_INFO).attr("var", var).build()
}

/// Features of the service itself.
pub const SERVICE_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, occupant_id::NS];

/// The service's disco#info.
pub fn service_info(_core: &Core, q: &Element) -> IqResult {
    if q.attr("node").is_some() {
        return Err(StanzaError::item_not_found());
    }
    let mut out = el("query", NS_DISCO_INFO).child(identity("Group chats"));
    for f in SERVICE_FEATURES {
        out = out.child(feature(f));
    }
    Ok(Some(out.build()))
}

/// The service's disco#items: public rooms, and the rooms the asker is an
/// owner, admin or member of (so a household sees its own group chats).
pub async fn service_items(core: &Arc<Core>, asker: &FullJid, q: &Element) -> IqResult {
    if q.attr("node").is_some() {
        return Err(StanzaError::item_not_found());
    }
    let bare = asker.to_bare();
    let rooms = core
        .muc
        .all(core)
        .await
        .map_err(|_| StanzaError::internal())?;
    let mut listed: Vec<(String, String)> = Vec::new();
    for room in rooms {
        let r = room.lock().await;
        if r.locked || r.destroyed {
            continue;
        }
        if visible_to(&r, &bare) {
            listed.push((r.jid.to_string(), display_name(&r)));
        }
    }
    listed.sort();
    let mut out = el("query", NS_DISCO_ITEMS);
    for (jid, name) in listed.into_iter().take(MAX_LISTED) {
        out = out.child(
            el("item", NS_DISCO_ITEMS)
                .attr("jid", jid)
                .attr("name", name)
                .build(),
        );
    }
    Ok(Some(out.build()))
}

fn display_name(r: &Room) -> String {
    if r.config.name.is_empty() {
        r.name.clone()
    } else {
        r.config.name.clone()
    }
}

/// A room's disco#info.
pub async fn room_info(
    _core: &Arc<Core>,
    room: &RoomRef,
    _from: &FullJid,
    q: &Element,
) -> IqResult {
    if q.attr("node").is_some() {
        return Err(StanzaError::item_not_found());
    }
    let r = room.lock().await;
    if r.destroyed {
        return Err(StanzaError::item_not_found());
    }
    Ok(Some(room_info_query(&r)))
}

/// The features a room advertises (its settings as disco features).
pub fn room_features(r: &Room) -> Vec<&'static str> {
    let c = &r.config;
    let mut v = vec![
        NS_DISCO_INFO,
        NS_MUC,
        occupant_id::NS,
        if c.persistent {
            "muc_persistent"
        } else {
            "muc_temporary"
        },
        if c.public { "muc_public" } else { "muc_hidden" },
        if c.members_only {
            "muc_membersonly"
        } else {
            "muc_open"
        },
        if c.moderated {
            "muc_moderated"
        } else {
            "muc_unmoderated"
        },
        if c.password.is_empty() {
            "muc_unsecured"
        } else {
            "muc_passwordprotected"
        },
        if c.whois_anyone {
            "muc_nonanonymous"
        } else {
            "muc_semianonymous"
        },
    ];
    if r.locked {
        v.push("muc_unconfigured");
    }
    // Invitations, voice requests, nick registration, self-ping, pictures.
    v.extend([
        super::invite::NS_CONFERENCE,
        super::voice::NS_REQUEST,
        super::register::NS_REGISTER,
        super::ping::NS_SELF_PING,
        super::avatar::NS_VCARD,
    ]);
    v.extend(super::archive::features(r));
    v
}

fn room_info_query(r: &Room) -> Element {
    let mut out = el("query", NS_DISCO_INFO).child(identity(&display_name(r)));
    for f in room_features(r) {
        out = out.child(feature(f));
    }
    let occupants = r.occupant_count().to_string();
    let form = el("x", NS_DATA)
        .attr("type", "result")
        .child(form_type_field("http://jabber.org/protocol/muc#roominfo"))
        .child(
            field(
                "muc#roomconfig_roomname",
                None,
                Some("Name"),
                &[&r.config.name],
            )
            .build(),
        )
        .child(
            field(
                "muc#roominfo_description",
                None,
                Some("Description"),
                &[&r.config.description],
            )
            .build(),
        )
        .child(
            field(
                "muc#roominfo_occupants",
                None,
                Some("Occupants"),
                &[&occupants],
            )
            .build(),
        )
        .child(field("muc#roominfo_subject", None, Some("Subject"), &[&r.subject]).build())
        .child(
            field(
                "muc#roominfo_lang",
                None,
                Some("Language"),
                &[&r.config.language],
            )
            .build(),
        )
        .child(
            field(
                "muc#roomconfig_changesubject",
                None,
                None,
                &[if r.config.change_subject { "1" } else { "0" }],
            )
            .build(),
        )
        .build();
    let mut form = form;
    super::avatar::roominfo_field(r, &mut form);
    out.child(form).build()
}

/// Whether `bare` may see room `r` in listings.
pub fn visible_to(r: &Room, bare: &BareJid) -> bool {
    r.config.public || r.affiliation(bare) >= super::room::Affiliation::Member
}
