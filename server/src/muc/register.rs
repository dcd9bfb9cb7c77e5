//! Nick registration (XEP-0045 §7.10) and discovering one's reserved nick
//! (§7.12).
//!
//! `jabber:iq:register` on the room JID: a get returns the
//! `muc#register` form (one field, `muc#register_roomnick`) or, for someone
//! registered, `<registered/>` with the nick; a set submits the form; a set
//! with `<remove/>` cancels. A registered nick is reserved: nobody else may
//! enter with it (`presence.rs` checks `nick_reserved_for_other`) or register
//! it (`<conflict/>`; storage has a unique index on (room, nick) too).
//!
//! Registering in an open room makes you a member; in a members-only room
//! only members (and above) may register (`<registration-required/>`),
//! outcasts never (`<forbidden/>`). Cancelling releases the nick; in an open
//! room it also ends the membership registering gave (as Prosody does), in a
//! members-only room the membership an admin granted stays.
//!
//! disco#info with node `x-roomuser-item` returns the asker's reserved nick
//! as an identity, or an empty query when there is none.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;

use super::room::{set_in, Affiliation, Room};
use super::service::RoomRef;
use super::{NS_DISCO_INFO, NS_USER};
use crate::core::Core;
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::el;
use crate::xml::form::{self, field, form_type_field, NS_DATA};

/// `jabber:iq:register`
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The registration form's `FORM_TYPE`.
pub const FORM_TYPE: &str = "http://jabber.org/protocol/muc#register";
/// The disco#info node that reveals one's reserved nick (§7.12).
pub const NODE_ROOMUSER: &str = "x-roomuser-item";
/// Longest nick, in characters (as for entering).
const MAX_NICK: usize = 64;

/// A `jabber:iq:register` query to a room.
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
    may_register(&r, &bare)?;
    if !set {
        return Ok(Some(query(&r, &bare)));
    }
    if q.get_child("remove", NS_REGISTER).is_some() {
        cancel(core, &mut r, &bare).await?;
    } else {
        let x = q
            .get_child("x", NS_DATA)
            .ok_or_else(|| StanzaError::bad_request().with_text("submit the registration form"))?;
        let nick = submitted_nick(x)?;
        if let Some(o) = r.by_nick(&nick) {
            if o.bare != bare {
                return Err(conflict());
            }
        }
        if r.nick_reserved_for_other(&nick, &bare) {
            return Err(conflict());
        }
        // Stored first (a failed write changes nothing), then applied.
        let becomes_member = r.affiliation(&bare) < Affiliation::Member;
        let mut affs = r.affiliations.clone();
        if becomes_member {
            set_in(&mut affs, &bare, Affiliation::Member, String::new());
        }
        if let Some(entry) = affs.get_mut(&bare) {
            entry.nick = Some(nick.clone());
        }
        super::owner::store(core, &r, &r.config, &affs).await?;
        if becomes_member {
            let actor = actor(&bare);
            super::admin::set_affiliation(
                core,
                &mut r,
                &bare,
                Affiliation::Member,
                &actor,
                String::new(),
            );
        }
        r.affiliations = affs;
        tracing::debug!(room = %r.jid, %bare, %nick, "nick registered");
    }
    Ok(None)
}

fn conflict() -> StanzaError {
    StanzaError::new("cancel", "conflict").with_text("that nick is someone else's")
}

fn actor(bare: &BareJid) -> Element {
    el("actor", NS_USER).attr("jid", bare.as_str()).build()
}

/// Whether `bare` may register (or ask how to) in `r`.
pub fn may_register(r: &Room, bare: &BareJid) -> Result<(), StanzaError> {
    let aff = r.affiliation(bare);
    if aff == Affiliation::Outcast {
        return Err(
            StanzaError::new("auth", "forbidden").with_text("you are banned from this room")
        );
    }
    if r.locked {
        return Err(StanzaError::item_not_found().with_text("this room is still being set up"));
    }
    if r.config.members_only && aff < Affiliation::Member {
        return Err(StanzaError::new("auth", "registration-required")
            .with_text("only members register nicks in this room"));
    }
    Ok(())
}

/// The answer to a get: the nick already registered, or the form.
fn query(r: &Room, bare: &BareJid) -> Element {
    let registered = r.affiliations.get(bare).and_then(|a| a.nick.clone());
    let q = el("query", NS_REGISTER);
    match registered {
        Some(nick) => q
            .child(Element::bare("registered", NS_REGISTER))
            .child(el("username", NS_REGISTER).text(nick).build())
            .build(),
        None => q
            .child(
                el("instructions", NS_REGISTER)
                    .text("Choose the nick this room keeps for you.")
                    .build(),
            )
            .child(
                el("x", NS_DATA)
                    .attr("type", "form")
                    .child(el("title", NS_DATA).text("Nick registration").build())
                    .child(form_type_field(FORM_TYPE))
                    .child(
                        field(
                            "muc#register_roomnick",
                            Some("text-single"),
                            Some("Nick"),
                            &[],
                        )
                        .child(Element::bare("required", NS_DATA))
                        .build(),
                    )
                    .build(),
            )
            .build(),
    }
}

/// The nick of a submitted registration form.
pub fn submitted_nick(x: &Element) -> Result<String, StanzaError> {
    if x.attr("type") != Some("submit") || form::form_type(x).as_deref() != Some(FORM_TYPE) {
        return Err(StanzaError::bad_request().with_text("expected the muc#register form"));
    }
    let nick = form::fields(x)
        .into_iter()
        .find(|(v, _)| v == "muc#register_roomnick")
        .and_then(|(_, vals)| vals.into_iter().next())
        .unwrap_or_default();
    let nick = nick.trim().to_string();
    if nick.is_empty() || nick.chars().count() > MAX_NICK || nick.chars().any(char::is_control) {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("a nick is 1 to 64 printable characters"));
    }
    Ok(nick)
}

/// Release the nick of `bare`; an open room's membership goes with it.
async fn cancel(core: &Core, r: &mut Room, bare: &BareJid) -> Result<(), StanzaError> {
    let aff = r.affiliation(bare);
    let drops_membership = aff == Affiliation::Member && !r.config.members_only;
    let mut affs = r.affiliations.clone();
    if let Some(entry) = affs.get_mut(bare) {
        entry.nick = None;
    }
    if drops_membership || aff == Affiliation::None {
        set_in(&mut affs, bare, Affiliation::None, String::new());
    }
    super::owner::store(core, r, &r.config, &affs).await?;
    if let Some(entry) = r.affiliations.get_mut(bare) {
        entry.nick = None;
    }
    if drops_membership {
        let actor = actor(bare);
        super::admin::set_affiliation(core, r, bare, Affiliation::None, &actor, String::new());
    }
    r.affiliations = affs;
    Ok(())
}

/// disco#info on node `x-roomuser-item`: the asker's reserved nick.
pub async fn reserved_nick(room: &RoomRef, from: &FullJid) -> IqResult {
    let r = room.lock().await;
    if r.destroyed {
        return Err(StanzaError::item_not_found());
    }
    let mut q = el("query", NS_DISCO_INFO).attr("node", NODE_ROOMUSER);
    if let Some(nick) = r
        .affiliations
        .get(&from.to_bare())
        .and_then(|a| a.nick.clone())
    {
        q = q.child(
            el("identity", NS_DISCO_INFO)
                .attr("category", "conference")
                .attr("type", "text")
                .attr("name", nick)
                .build(),
        );
    }
    Ok(Some(q.build()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::muc::config::RoomConfig;

    fn form(nick: &str) -> Element {
        el("x", NS_DATA)
            .attr("type", "submit")
            .child(form_type_field(FORM_TYPE))
            .child(field("muc#register_roomnick", None, None, &[nick]).build())
            .build()
    }

    #[test]
    fn the_submitted_nick_is_checked() {
        assert_eq!(submitted_nick(&form(" bee ")).unwrap(), "bee");
        assert_eq!(
            submitted_nick(&form("")).unwrap_err().condition,
            "not-acceptable"
        );
        assert_eq!(
            submitted_nick(&form(&"x".repeat(65)))
                .unwrap_err()
                .condition,
            "not-acceptable"
        );
        let mut wrong = form("bee");
        crate::xml::attr_set(&mut wrong, "type", "form");
        assert_eq!(submitted_nick(&wrong).unwrap_err().condition, "bad-request");
    }

    #[test]
    fn who_may_register() {
        let jid = BareJid::new("r@groups.example").unwrap();
        let owner = BareJid::new("o@example").unwrap();
        let mut r = Room::new("r".into(), jid, owner.clone(), RoomConfig::default());
        r.locked = false;
        let stranger = BareJid::new("s@example").unwrap();
        assert_eq!(
            may_register(&r, &stranger).unwrap_err().condition,
            "registration-required"
        );
        assert!(may_register(&r, &owner).is_ok());
        r.config.members_only = false;
        assert!(may_register(&r, &stranger).is_ok());
        set_in(
            &mut r.affiliations,
            &stranger,
            Affiliation::Outcast,
            String::new(),
        );
        assert_eq!(
            may_register(&r, &stranger).unwrap_err().condition,
            "forbidden"
        );
    }
}
