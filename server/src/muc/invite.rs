//! Invitations (XEP-0045 §7.8.2, §7.8.2's decline) and what direct
//! invitations (XEP-0249) need from the room.
//!
//! A mediated invitation is a message to the room's bare JID:
//! `<x xmlns='…muc#user'><invite to='jid'><reason/></invite></x>` (up to
//! [`MAX_INVITES`] `<invite/>`s in one message). The room sends each invitee
//! `<x muc#user><invite from='inviter'/><password/></x>` plus the XEP-0249
//! `<x xmlns='jabber:x:conference' jid='room'/>` many clients read instead,
//! and a plain body for clients that read neither. Local invitees get it on
//! their available sessions or, when none is online, from offline storage.
//!
//! Who may invite: anyone in the room with voice (or whose affiliation would
//! give it). In a members-only room, admins and owners — and members when the
//! room allows invitations — make the invitee a member (stored, as Prosody
//! does), so the invitation can be followed; anyone else gets `<forbidden/>`.
//! Banned people are not invited (`<not-allowed/>`). Every invitation of a
//! message is checked before any is sent.
//!
//! A decline (`<decline to='inviter'>`) is forwarded to the inviter, who must
//! be in the room or affiliated with it (the room relays nothing to strangers).
//!
//! Direct invitations go from client to client as ordinary messages and never
//! reach the room; the room's part is to let the invitee in once an admin has
//! made them a member.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::room::{set_in, Affiliation, Role, Room};
use super::{reply_error, NS_USER};
use crate::core::Core;
use crate::stanza::StanzaError;
use crate::xml::{el, ns};

/// `jabber:x:conference` (XEP-0249).
pub const NS_CONFERENCE: &str = "jabber:x:conference";

/// Invitations (or declines) in one message, at most.
pub const MAX_INVITES: usize = 10;

/// Longest reason relayed, in characters (longer ones are cut).
const MAX_REASON: usize = 1000;

/// A non-groupchat message with a `muc#user` payload to the room's bare JID.
pub async fn handle(core: &Arc<Core>, from: &FullJid, node: &str, stanza: &Element) {
    let Some(room) = super::existing(core, node).await else {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    };
    let Some(x) = stanza.get_child("x", NS_USER) else {
        reply_error(
            core,
            stanza,
            StanzaError::bad_request().with_text("not a message the room understands"),
        );
        return;
    };
    let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", NS_USER)).collect();
    let declines: Vec<&Element> = x.children().filter(|c| c.is("decline", NS_USER)).collect();
    let result = {
        let mut r = room.lock().await;
        if r.destroyed {
            Err(StanzaError::item_not_found())
        } else if !invites.is_empty() {
            invite(core, &mut r, from, &invites).await
        } else if !declines.is_empty() {
            decline(&r, from, &declines)
        } else {
            Err(StanzaError::bad_request().with_text("expected an invite or a decline"))
        }
    };
    match result {
        Ok(out) => {
            for (to, msg) in out {
                deliver(core, &to, msg).await;
            }
        }
        Err(e) => reply_error(core, stanza, e),
    }
}

/// The `to` of each item, checked.
fn targets(items: &[&Element]) -> Result<Vec<(Jid, String)>, StanzaError> {
    if items.len() > MAX_INVITES {
        return Err(StanzaError::new("modify", "policy-violation")
            .with_text(format!("at most {MAX_INVITES} in one message")));
    }
    items
        .iter()
        .map(|i| {
            let to = i
                .attr("to")
                .ok_or_else(|| StanzaError::bad_request().with_text("an invite needs a 'to'"))?;
            let to = Jid::new(to).map_err(|_| StanzaError::jid_malformed())?;
            let reason: String = i
                .get_child("reason", NS_USER)
                .map(|r| r.text())
                .unwrap_or_default()
                .chars()
                .take(MAX_REASON)
                .collect();
            Ok((to, reason))
        })
        .collect()
}

/// Check and apply the invitations; the messages to send.
async fn invite(
    core: &Arc<Core>,
    r: &mut Room,
    from: &FullJid,
    items: &[&Element],
) -> Result<Vec<(Jid, Element)>, StanzaError> {
    let inviter = from.to_bare();
    let aff = r.affiliation(&inviter);
    let role = r
        .by_session(from)
        .map(|o| o.role)
        .unwrap_or_else(|| r.default_role(aff));
    if role <= Role::Visitor {
        return Err(
            StanzaError::new("auth", "forbidden").with_text("only occupants with voice may invite")
        );
    }
    let targets = targets(items)?;
    let makes_members = r.config.members_only;
    if makes_members && !may_add_members(r, aff) {
        return Err(StanzaError::new("auth", "forbidden")
            .with_text("only admins (or members, if the room allows it) invite here"));
    }
    if targets
        .iter()
        .any(|(to, _)| r.affiliation(&to.to_bare()) == Affiliation::Outcast)
    {
        return Err(StanzaError::not_allowed().with_text("that person is banned from this room"));
    }
    if makes_members {
        // Stored first: a failed write invites nobody.
        let mut affiliations = r.affiliations.clone();
        let mut added = false;
        for (to, _) in &targets {
            let bare = to.to_bare();
            if r.affiliation(&bare) < Affiliation::Member {
                set_in(&mut affiliations, &bare, Affiliation::Member, String::new());
                added = true;
            }
        }
        if added {
            super::owner::store(core, r, &r.config, &affiliations).await?;
            r.affiliations = affiliations;
        }
    }
    tracing::debug!(room = %r.jid, by = %inviter, count = targets.len(), "invitations");
    Ok(targets
        .into_iter()
        .map(|(to, reason)| {
            let msg = invitation(r, &inviter, &to, &reason);
            (to, msg)
        })
        .collect())
}

/// Whether someone with `aff` may make people members by inviting them.
pub fn may_add_members(r: &Room, aff: Affiliation) -> bool {
    aff >= Affiliation::Admin || (aff == Affiliation::Member && r.config.allow_invites)
}

/// The invitation the room sends.
fn invitation(r: &Room, inviter: &BareJid, to: &Jid, reason: &str) -> Element {
    let mut inv = el("invite", NS_USER).attr("from", inviter.as_str());
    if !reason.is_empty() {
        inv = inv.child(el("reason", NS_USER).text(reason).build());
    }
    let mut x = el("x", NS_USER).child(inv.build());
    let mut conference = el("x", NS_CONFERENCE).attr("jid", r.jid.as_str());
    if !r.config.password.is_empty() {
        x = x.child(
            el("password", NS_USER)
                .text(r.config.password.clone())
                .build(),
        );
        conference = conference.attr("password", r.config.password.clone());
    }
    if !reason.is_empty() {
        conference = conference.attr("reason", reason);
    }
    let name = if r.config.name.is_empty() {
        r.jid.to_string()
    } else {
        format!("{} ({})", r.config.name, r.jid)
    };
    let body = if reason.is_empty() {
        format!("{inviter} invited you to the group chat {name}")
    } else {
        format!("{inviter} invited you to the group chat {name}: {reason}")
    };
    el("message", ns::CLIENT)
        .attr("from", r.jid.as_str())
        .attr("to", to.as_str())
        .attr("id", crate::core::random_hex(8))
        .child(x.build())
        .child(conference.build())
        .child(el("body", ns::CLIENT).text(body).build())
        .build()
}

/// Forward declines to inviters related to the room.
fn decline(
    r: &Room,
    from: &FullJid,
    items: &[&Element],
) -> Result<Vec<(Jid, Element)>, StanzaError> {
    let decliner = from.to_bare();
    let targets = targets(items)?;
    let related = |j: &Jid| {
        let bare = j.to_bare();
        r.affiliation(&bare) >= Affiliation::Member || r.by_bare(&bare).next().is_some()
    };
    if !targets.iter().all(|(to, _)| related(to)) {
        return Err(StanzaError::item_not_found()
            .with_text("the room knows nobody by that address to tell"));
    }
    Ok(targets
        .into_iter()
        .map(|(to, reason)| {
            let mut d = el("decline", NS_USER).attr("from", decliner.as_str());
            if !reason.is_empty() {
                d = d.child(el("reason", NS_USER).text(reason.clone()).build());
            }
            let body = format!("{decliner} declined your invitation to {}", r.jid);
            let msg = el("message", ns::CLIENT)
                .attr("from", r.jid.as_str())
                .attr("to", to.as_str())
                .attr("id", crate::core::random_hex(8))
                .child(el("x", NS_USER).child(d.build()).build())
                .child(el("body", ns::CLIENT).text(body).build())
                .build();
            (to, msg)
        })
        .collect())
}

/// Deliver a message from the room to an account (or one of its sessions):
/// another server's account through federation; a local account on its
/// available sessions, or into offline storage when none is online.
pub async fn deliver(core: &Arc<Core>, to: &Jid, msg: Element) {
    if let Ok(full) = to.clone().try_into_full() {
        if !crate::s2s::is_remote(core, full.domain().as_str()) {
            super::send_to(core, &full, msg);
            return;
        }
    }
    let bare = to.to_bare();
    if crate::s2s::is_remote(core, bare.domain().as_str()) {
        crate::s2s::route_out(core, msg);
        return;
    }
    let user = crate::deliver::username(&bare).to_string();
    match core.db.account_exists(&user).await {
        Ok(true) => {}
        _ => return,
    }
    let _guard = crate::message::offline_lock(&user).lock().await;
    if crate::deliver::to_available(core, &bare, &msg) == 0
        && !crate::blocking::enforce::stanza_blocked(core, &msg, &bare)
    {
        if let Err(e) = crate::message::keep_offline(core, &user, &msg).await {
            tracing::warn!(error = ?e, to = %bare, "could not keep an invitation for later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::muc::config::RoomConfig;

    fn room() -> Room {
        let jid = BareJid::new("r@groups.example").unwrap();
        let owner = BareJid::new("o@example").unwrap();
        Room::new("r".into(), jid, owner, RoomConfig::default())
    }

    #[test]
    fn members_invite_only_when_the_room_allows_it() {
        let mut r = room();
        assert!(may_add_members(&r, Affiliation::Owner));
        assert!(may_add_members(&r, Affiliation::Admin));
        assert!(may_add_members(&r, Affiliation::Member));
        assert!(!may_add_members(&r, Affiliation::None));
        r.config.allow_invites = false;
        assert!(!may_add_members(&r, Affiliation::Member));
        assert!(may_add_members(&r, Affiliation::Admin));
    }

    #[test]
    fn an_invitation_carries_both_forms_and_the_password() {
        let mut r = room();
        r.config.password = "pw".into();
        let inviter = BareJid::new("o@example").unwrap();
        let to = Jid::new("b@example").unwrap();
        let m = invitation(&r, &inviter, &to, "come");
        let x = m.get_child("x", NS_USER).unwrap();
        let inv = x.get_child("invite", NS_USER).unwrap();
        assert_eq!(inv.attr("from"), Some("o@example"));
        assert_eq!(inv.get_child("reason", NS_USER).unwrap().text(), "come");
        assert_eq!(x.get_child("password", NS_USER).unwrap().text(), "pw");
        let c = m.get_child("x", NS_CONFERENCE).unwrap();
        assert_eq!(c.attr("jid"), Some("r@groups.example"));
        assert_eq!(c.attr("password"), Some("pw"));
    }

    #[test]
    fn too_many_invitations_are_refused() {
        let invites: Vec<Element> = (0..=MAX_INVITES)
            .map(|i| {
                el("invite", NS_USER)
                    .attr("to", format!("u{i}@example"))
                    .build()
            })
            .collect();
        let refs: Vec<&Element> = invites.iter().collect();
        assert_eq!(targets(&refs).unwrap_err().condition, "policy-violation");
        assert_eq!(targets(&refs[..2]).unwrap().len(), 2);
    }
}
