//! Messages in a room (XEP-0045 §7.4, §7.5, §8.1): groupchat messages
//! broadcast from the sender's occupant JID, subject changes, and private
//! messages through the room. Only occupants may speak (not-acceptable),
//! visitors in a moderated room may not (forbidden), and who may change the
//! subject or send private messages follows the room's settings.

use std::sync::Arc;

use jid::FullJid;
use minidom::Element;

use super::config::AllowPm;
use super::room::{Occupant, Role, Room};
use super::{history, occupant_id, reply_error, send_to, NS_USER};
use crate::core::Core;
use crate::stanza::StanzaError;
use crate::xml::{attr_remove, attr_set, el, ns};

const NS_SID: &str = "urn:xmpp:sid:0";

/// A message to the room's bare JID.
pub async fn to_room(core: &Arc<Core>, from: &FullJid, node: &str, stanza: &Element) {
    let Some(room) = super::existing(core, node).await else {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    };
    let mut r = room.lock().await;
    if r.destroyed {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    }
    if stanza.attr("type") != Some("groupchat") {
        reply_error(
            core,
            stanza,
            StanzaError::new("modify", "bad-request")
                .with_text("not a message the room understands"),
        );
        return;
    }
    let Some(sender) = r.by_session(from) else {
        reply_error(
            core,
            stanza,
            StanzaError::new("modify", "not-acceptable").with_text("only occupants may speak here"),
        );
        return;
    };
    let (nick, role, bare) = (sender.nick.clone(), sender.role, sender.bare.clone());
    if role < Role::Participant {
        reply_error(
            core,
            stanza,
            StanzaError::new("auth", "forbidden").with_text("you have no voice in this room"),
        );
        return;
    }
    // A retraction of one's own message (XEP-0424), in `moderate.rs`.
    if stanza.has_child("retract", super::moderate::NS_RETRACT) {
        return super::moderate::retract(core, &mut r, from, stanza, &nick, &bare).await;
    }
    let subject = stanza.get_child("subject", ns::CLIENT);
    let has_body = stanza.get_child("body", ns::CLIENT).is_some();
    if let (Some(subject), false) = (subject, has_body) {
        if role != Role::Moderator && !r.config.change_subject {
            reply_error(
                core,
                stanza,
                StanzaError::new("auth", "forbidden")
                    .with_text("only moderators may change the subject"),
            );
            return;
        }
        r.subject = subject.text();
        r.subject_by = nick.clone();
        if r.config.persistent && !r.locked {
            if let Err(e) = core.db.muc_set_subject(&r.name, &r.subject, &nick).await {
                tracing::error!(error = %e, room = %r.jid, "could not store the subject");
                reply_error(core, stanza, StanzaError::internal());
                return;
            }
        }
    }
    let mut out = room_copy(core, &r, stanza, &nick, &bare);
    // The stanza id (XEP-0359), archiving the message when the room keeps an archive.
    super::archive::stamp(core, &r, Some(from), Some(&bare), &mut out).await;
    broadcast(core, &r, &out);
    wake_phones(core, &r.occupants, &out, &bare);
    // History on entering keeps what the archive keeps (a body, an encrypted
    // payload), so it is the same before and after a restart.
    if super::archive::keeps(&out) {
        let cap = core.config.muc.max_history;
        history::record(&mut r, &out, cap);
    }
}

/// The message as the room sends it: from the occupant JID, with the
/// room's occupant id, without a `to` and without what only the room may
/// say (its stanza ids, occupant ids, `muc#user` items and status codes).
pub fn room_copy(
    core: &Core,
    r: &Room,
    stanza: &Element,
    nick: &str,
    bare: &jid::BareJid,
) -> Element {
    let mut out = Element::bare("message", ns::CLIENT);
    for ((space, name), v) in stanza.attrs() {
        if !matches!(name.as_str(), "from" | "to") {
            out.attrs_mut()
                .insert(space.clone(), name.clone(), v.clone());
        }
    }
    attr_set(&mut out, "from", format!("{}/{nick}", r.jid));
    let room = r.jid.as_str();
    for c in stanza.children() {
        let forged_sid = c.is("stanza-id", NS_SID) && c.attr("by") == Some(room);
        // The room speaks muc#user (real JIDs, status codes), never the sender.
        let forged_user = c.is("x", NS_USER);
        if forged_sid || forged_user || c.is("occupant-id", occupant_id::NS) {
            continue;
        }
        out.append_child(c.clone());
    }
    out.append_child(occupant_id::element(core, r, bare));
    out
}

/// Send a room message to every session in the room.
pub fn broadcast(core: &Core, r: &Room, msg: &Element) {
    for o in &r.occupants {
        for s in &o.sessions {
            send_to(core, &s.jid, msg.clone());
        }
    }
}

/// Push notifications (XEP-0357) for occupants none of whose devices can
/// show the message now: all inactive (XEP-0352) or waiting to resume
/// (XEP-0198). The sender is never notified of its own message.
pub fn wake_phones<'a>(
    core: &Arc<Core>,
    occupants: impl IntoIterator<Item = &'a Occupant>,
    msg: &Element,
    sender: &jid::BareJid,
) {
    for o in occupants.into_iter().filter(|o| o.bare != *sender) {
        let asleep = o.sessions.iter().all(|s| {
            core.sessions.get(&s.jid).is_none_or(|h| {
                h.is_inactive() || h.detached.load(std::sync::atomic::Ordering::Relaxed)
            })
        });
        if asleep {
            crate::push::notify(core, &o.bare, msg);
        }
    }
}

/// A private message to `room/nick` (§7.5).
pub async fn private(core: &Arc<Core>, from: &FullJid, node: &str, nick: &str, stanza: &Element) {
    let Some(room) = super::existing(core, node).await else {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    };
    let r = room.lock().await;
    if stanza.attr("type") == Some("groupchat") {
        reply_error(
            core,
            stanza,
            StanzaError::bad_request().with_text("groupchat messages go to the room"),
        );
        return;
    }
    let Some(sender) = r.by_session(from) else {
        reply_error(
            core,
            stanza,
            StanzaError::new("modify", "not-acceptable")
                .with_text("only occupants may send private messages"),
        );
        return;
    };
    let allowed = match r.config.allow_pm {
        AllowPm::Anyone => true,
        AllowPm::Participants => sender.role >= Role::Participant,
        AllowPm::Moderators => sender.role == Role::Moderator,
        AllowPm::Nobody => false,
    };
    if !allowed {
        reply_error(
            core,
            stanza,
            StanzaError::new("cancel", "not-allowed")
                .with_text("private messages are off in this room"),
        );
        return;
    }
    let Some(target) = r.by_nick(nick) else {
        reply_error(
            core,
            stanza,
            StanzaError::item_not_found().with_text("nobody has that nick here"),
        );
        return;
    };
    let mut out = room_copy(core, &r, stanza, &sender.nick, &sender.bare);
    attr_remove(&mut out, "to");
    if out.get_child("x", NS_USER).is_none() {
        out.append_child(el("x", NS_USER).build());
    }
    for s in &target.sessions {
        send_to(core, &s.jid, out.clone());
    }
    wake_phones(core, [target], &out, &sender.bare);
}
