//! Querying a room's archive (XEP-0313 §"Querying a MUC archive"): an IQ
//! to the room's bare JID with the same query, form and `#extended`
//! metadata as an account's own archive (`mam/query.rs` does the work);
//! results come from the room's bare JID, each archived message from
//! `room/nick`.
//!
//! Who may read: the room's occupants; in a members-only room its members,
//! admins and owners; in an open room without a password anyone not
//! banned; otherwise `<forbidden/>`. A room with archiving off answers
//! `<service-unavailable/>`. Real JIDs in the results are shown to those
//! the room shows them to live (everyone in a non-anonymous room,
//! moderators otherwise).

use std::sync::Arc;

use jid::FullJid;
use minidom::Element;

use super::room::{Affiliation, Role, Room};
use super::service::RoomRef;
use crate::core::Core;
use crate::mam::query::{answer, form_payload, metadata_of, Source};
use crate::registry::IqResult;
use crate::stanza::StanzaError;

/// An IQ in `urn:xmpp:mam:2` to a room.
pub async fn handle(
    core: &Arc<Core>,
    room: &RoomRef,
    from: &FullJid,
    set: bool,
    q: &Element,
) -> IqResult {
    let (owner, reveal) = {
        let r = room.lock().await;
        if r.destroyed {
            return Err(StanzaError::item_not_found());
        }
        if !r.config.archiving {
            return Err(
                StanzaError::service_unavailable().with_text("this room does not keep an archive")
            );
        }
        let role = reader_role(&r, from)?;
        (r.jid.to_string(), r.shows_jids_to(role))
    };
    match (set, q.name()) {
        (true, "query") => {
            let hide = |m: &mut Element| super::archive::hide_real_jid(m);
            let keep = |_: &mut Element| {};
            let send = |m: Element| super::send_to(core, from, m);
            let src = Source {
                user: &owner,
                from: &owner,
                shape: if reveal { &keep } else { &hide },
                reader: from.as_str(),
                send: &send,
            };
            answer(&core.db, &src, q).await
        }
        (false, "query") => Ok(Some(form_payload())),
        (false, "metadata") => metadata_of(&core.db, &owner).await,
        _ => Err(StanzaError::service_unavailable()),
    }
}

/// Whether `jid` may read the room's archive, and with which role it reads
/// (its role as an occupant, else the one its affiliation would give).
fn reader_role(r: &Room, jid: &FullJid) -> Result<Role, StanzaError> {
    if let Some(o) = r.by_session(jid) {
        return Ok(o.role);
    }
    let aff = r.affiliation(&jid.to_bare());
    let forbidden = |why: &str| Err(StanzaError::new("auth", "forbidden").with_text(why));
    if aff == Affiliation::Outcast {
        return forbidden("you are banned from this room");
    }
    if aff >= Affiliation::Member {
        return Ok(r.default_role(aff));
    }
    if r.locked || r.config.members_only {
        return forbidden("only members may read this room's archive");
    }
    if !r.config.password.is_empty() {
        return forbidden("enter the room to read its archive");
    }
    Ok(r.default_role(aff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::muc::config::RoomConfig;
    use crate::muc::room::{set_in, Joined, Occupant};
    use jid::BareJid;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).unwrap()
    }

    #[test]
    fn who_may_read_the_archive() {
        let mut r = Room::new(
            "r".into(),
            BareJid::new("r@groups.x").unwrap(),
            BareJid::new("owner@x").unwrap(),
            RoomConfig::default(),
        );
        r.locked = false;
        let bob = BareJid::new("bob@x").unwrap();
        let eve = BareJid::new("eve@x").unwrap();
        let cond = |r: &Room, j: &str| reader_role(r, &full(j)).err().map(|e| e.condition);
        // Members-only: members and above.
        assert_eq!(cond(&r, "eve@x/p"), Some("forbidden"));
        set_in(
            &mut r.affiliations,
            &bob,
            Affiliation::Member,
            String::new(),
        );
        assert_eq!(
            reader_role(&r, &full("bob@x/p")).ok(),
            Some(Role::Participant)
        );
        assert_eq!(
            reader_role(&r, &full("owner@x/p")).ok(),
            Some(Role::Moderator)
        );
        // Open: anyone not banned; with a password, only occupants.
        r.config.members_only = false;
        assert_eq!(cond(&r, "eve@x/p"), None);
        r.config.password = "pw".into();
        assert_eq!(cond(&r, "eve@x/p"), Some("forbidden"));
        r.occupants.push(Occupant {
            nick: "eve".into(),
            bare: eve.clone(),
            role: Role::Visitor,
            sessions: vec![Joined {
                jid: full("eve@x/p"),
                presence: Element::bare("presence", crate::xml::ns::CLIENT),
            }],
        });
        assert_eq!(reader_role(&r, &full("eve@x/p")).ok(), Some(Role::Visitor));
        r.occupants.clear();
        r.config.password.clear();
        set_in(
            &mut r.affiliations,
            &eve,
            Affiliation::Outcast,
            String::new(),
        );
        assert_eq!(cond(&r, "eve@x/p"), Some("forbidden"));
    }
}
