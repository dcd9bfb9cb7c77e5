//! Taking messages back: moderation (XEP-0425) and retraction (XEP-0424)
//! in rooms, both naming the message by the room's stanza id.
//!
//! A moderator asks with `<iq type='set'><moderate id='…'
//! xmlns='urn:xmpp:message-moderate:1'><retract
//! xmlns='urn:xmpp:message-retract:1'/><reason/></moderate></iq>` (the older
//! `urn:xmpp:fasten:0` `<apply-to/>` form with `urn:xmpp:message-moderate:0`
//! is accepted too); the room broadcasts, from its bare JID,
//! `<retract id='…'><moderated by='room/modnick'><occupant-id/></moderated>
//! <reason/></retract>` (with the `<apply-to/>` form beside it for older
//! clients). An occupant retracts its own message with a groupchat message
//! holding `<retract id='…' xmlns='urn:xmpp:message-retract:1'/>`, which the
//! room checks (same occupant id, so same account) and broadcasts like any
//! message. Either way the message is replaced by a tombstone — its content
//! gone, `<retracted stamp/>` in its place — in the archive and in the
//! history sent on join, and the announcement itself is archived so clients
//! catching up learn of it. Not a moderator: `<forbidden/>`; someone else's
//! message: `<forbidden/>`; an unknown id: `<item-not-found/>`.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;

use super::groupchat::{broadcast, room_copy};
use super::room::{Role, Room};
use super::service::RoomRef;
use super::{archive, history, occupant_id, reply_error, NS_USER};
use crate::core::Core;
use crate::mam::rules::{format_stamp, now_micros, parse_id};
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::{el, ns, serialize};

/// `urn:xmpp:message-moderate:1`
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// `urn:xmpp:message-moderate:0` (the older form, still sent by some clients)
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// `urn:xmpp:message-retract:1`
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
const NS_FASTEN: &str = "urn:xmpp:fasten:0";
/// Longest reason kept, in characters (a longer one is cut).
pub const MAX_REASON: usize = 1000;

/// Whether an IQ payload asks for a moderation.
pub fn is_request(p: &Element) -> bool {
    p.is("moderate", NS_MODERATE) || p.is("apply-to", NS_FASTEN)
}

/// A moderation request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// The stanza id of the message.
    id: String,
    reason: Option<String>,
}

fn parse_request(p: &Element) -> Result<Request, StanzaError> {
    let (id, m, retract_ns) = if p.is("apply-to", NS_FASTEN) {
        let m = p.get_child("moderate", NS_MODERATE_0).ok_or_else(|| {
            StanzaError::new("cancel", "feature-not-implemented")
                .with_text("only moderation can be applied to a room message")
        })?;
        (p.attr("id"), m, NS_RETRACT_0)
    } else {
        (p.attr("id"), p, NS_RETRACT)
    };
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| StanzaError::bad_request().with_text("name the message by its stanza id"))?;
    if !m.has_child("retract", retract_ns) {
        return Err(StanzaError::new("cancel", "feature-not-implemented")
            .with_text("moderation here means retracting the message"));
    }
    let reason = m
        .children()
        .find(|c| c.name() == "reason")
        .map(|r| r.text().chars().take(MAX_REASON).collect::<String>())
        .filter(|r| !r.trim().is_empty());
    Ok(Request {
        id: id.to_string(),
        reason,
    })
}

/// A message some request names.
struct Target {
    /// Its archive row, when the room archived it.
    row: Option<i64>,
    /// The message as archived or broadcast.
    stanza: Element,
}

/// Find the message with stanza id `id`: in the room's archive, else in its
/// history (rooms without an archive).
async fn find(core: &Core, r: &Room, id: &str) -> Result<Option<Target>, StanzaError> {
    if let Some(row) = parse_id(id) {
        let got = core
            .db
            .archive_get(archive::owner(r), row)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, room = %r.jid, "could not read the room archive");
                StanzaError::internal()
            })?;
        if let Some(a) = got {
            if let Ok(stanza) = a.stanza.parse::<Element>() {
                return Ok(Some(Target {
                    row: Some(row),
                    stanza,
                }));
            }
        }
    }
    Ok(r.history
        .iter()
        .find(|e| archive::stanza_id_of(r, &e.stanza).as_deref() == Some(id))
        .map(|e| Target {
            row: None,
            stanza: e.stanza.clone(),
        }))
}

/// The occupant id a message carries.
fn author_id(m: &Element) -> Option<&str> {
    m.get_child("occupant-id", occupant_id::NS)
        .and_then(|o| o.attr("id"))
}

/// What is left of a message once taken back: its addressing and id, its
/// author's occupant id (and real JID, in the archive), and `retracted`.
fn tombstone(orig: &Element, retracted: Element) -> Element {
    let mut out = Element::bare("message", ns::CLIENT);
    for ((space, name), v) in orig.attrs() {
        out.attrs_mut()
            .insert(space.clone(), name.clone(), v.clone());
    }
    out.append_child(retracted);
    for c in orig.children() {
        if c.is("occupant-id", occupant_id::NS)
            || c.is("x", NS_USER)
            || c.is("stanza-id", crate::mam::rules::NS_SID)
        {
            out.append_child(c.clone());
        }
    }
    out
}

/// Replace message `id` by its tombstone in the archive and in the history.
async fn bury(core: &Core, r: &mut Room, id: &str, t: &Target, retracted: Element) {
    if let Some(row) = t.row {
        let mut buf = Vec::new();
        serialize(&tombstone(&t.stanza, retracted.clone()), &mut buf);
        let text = String::from_utf8_lossy(&buf);
        if let Err(e) = core.db.archive_replace(archive::owner(r), row, &text).await {
            tracing::error!(error = %e, room = %r.jid, "could not replace a retracted message");
        }
    }
    let room = r.jid.clone();
    for e in r.history.iter_mut() {
        let sid = e
            .stanza
            .children()
            .find(|c| c.is("stanza-id", crate::mam::rules::NS_SID))
            .filter(|c| c.attr("by") == Some(room.as_str()))
            .and_then(|c| c.attr("id"));
        if sid == Some(id) {
            *e = history::entry(tombstone(&e.stanza, retracted.clone()), e.stamp);
        }
    }
}

/// A moderation request (an IQ set to the room).
pub async fn iq(core: &Arc<Core>, room: &RoomRef, from: &FullJid, p: &Element) -> IqResult {
    let req = parse_request(p)?;
    let mut r = room.lock().await;
    if r.destroyed {
        return Err(StanzaError::item_not_found());
    }
    let Some(moderator) = r.by_session(from).filter(|o| o.role == Role::Moderator) else {
        return Err(StanzaError::new("auth", "forbidden")
            .with_text("only moderators may moderate messages"));
    };
    let by = format!("{}/{}", r.jid, moderator.nick);
    let mod_bare = moderator.bare.clone();
    let Some(target) = find(core, &r, &req.id).await? else {
        return Err(StanzaError::item_not_found().with_text("no message with that id here"));
    };
    let mod_id = occupant_id::element(core, &r, &mod_bare);
    let moderated = el("moderated", NS_MODERATE)
        .attr("by", by.clone())
        .child(mod_id.clone())
        .build();
    let reason = |ns: &str| {
        req.reason
            .as_ref()
            .map(|t| el("reason", ns).text(t.clone()).build())
    };
    let mut notice = el("retract", NS_RETRACT)
        .attr("id", req.id.clone())
        .child(moderated.clone());
    if let Some(x) = reason(NS_RETRACT) {
        notice = notice.child(x);
    }
    let mut legacy = el("moderated", NS_MODERATE_0)
        .attr("by", by)
        .child(mod_id)
        .child(Element::bare("retract", NS_RETRACT_0));
    if let Some(x) = reason(NS_MODERATE_0) {
        legacy = legacy.child(x);
    }
    let mut out = el("message", ns::CLIENT)
        .attr("type", "groupchat")
        .attr("from", r.jid.as_str())
        .attr("id", crate::core::random_hex(8))
        .child(notice.build())
        .child(
            el("apply-to", NS_FASTEN)
                .attr("id", req.id.clone())
                .child(legacy.build())
                .build(),
        )
        .build();
    archive::stamp(core, &r, None, Some(&mod_bare), &mut out).await;
    let mut retracted = el("retracted", NS_RETRACT)
        .attr("stamp", format_stamp(now_micros()))
        .child(moderated);
    if let Some(x) = reason(NS_RETRACT) {
        retracted = retracted.child(x);
    }
    bury(core, &mut r, &req.id, &target, retracted.build()).await;
    broadcast(core, &r, &out);
    history::record(&mut r, &out, core.config.muc.max_history);
    tracing::info!(room = %r.jid, "a message was moderated");
    Ok(None)
}

/// A groupchat message holding `<retract id/>` from occupant `nick`
/// (account `bare`): retract one's own message.
pub async fn retract(
    core: &Arc<Core>,
    r: &mut Room,
    from: &FullJid,
    stanza: &Element,
    nick: &str,
    bare: &BareJid,
) {
    let Some(id) = stanza
        .get_child("retract", NS_RETRACT)
        .and_then(|x| x.attr("id"))
        .filter(|i| !i.is_empty())
        .map(str::to_string)
    else {
        reply_error(
            core,
            stanza,
            StanzaError::bad_request().with_text("name the message by its stanza id"),
        );
        return;
    };
    let target = match find(core, r, &id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            reply_error(
                core,
                stanza,
                StanzaError::item_not_found().with_text("no message with that id here"),
            );
            return;
        }
        Err(e) => {
            reply_error(core, stanza, e);
            return;
        }
    };
    if author_id(&target.stanza) != Some(occupant_id::id(core, r, bare).as_str()) {
        reply_error(
            core,
            stanza,
            StanzaError::new("auth", "forbidden")
                .with_text("you may only retract your own messages"),
        );
        return;
    }
    let mut out = room_copy(core, r, stanza, nick, bare);
    let sid = archive::stamp(core, r, Some(from), Some(bare), &mut out).await;
    let retracted = el("retracted", NS_RETRACT)
        .attr("stamp", format_stamp(now_micros()))
        .attr_opt("id", sid)
        .build();
    bury(core, r, &id, &target, retracted).await;
    broadcast(core, r, &out);
    history::record(r, &out, core.config.muc.max_history);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_request_forms_parse() {
        let v1 = el("moderate", NS_MODERATE)
            .attr("id", "a1")
            .child(Element::bare("retract", NS_RETRACT))
            .child(el("reason", NS_MODERATE).text("spam").build())
            .build();
        assert_eq!(
            parse_request(&v1).ok(),
            Some(Request {
                id: "a1".into(),
                reason: Some("spam".into())
            })
        );
        let v0 = el("apply-to", NS_FASTEN)
            .attr("id", "b2")
            .child(
                el("moderate", NS_MODERATE_0)
                    .child(Element::bare("retract", NS_RETRACT_0))
                    .build(),
            )
            .build();
        assert_eq!(
            parse_request(&v0).ok(),
            Some(Request {
                id: "b2".into(),
                reason: None
            })
        );
        let no_id = el("moderate", NS_MODERATE)
            .child(Element::bare("retract", NS_RETRACT))
            .build();
        assert_eq!(
            parse_request(&no_id).err().map(|e| e.condition),
            Some("bad-request")
        );
        let no_retract = el("moderate", NS_MODERATE).attr("id", "a").build();
        assert_eq!(
            parse_request(&no_retract).err().map(|e| e.condition),
            Some("feature-not-implemented")
        );
    }

    #[test]
    fn a_tombstone_keeps_who_and_drops_what() {
        let orig = el("message", ns::CLIENT)
            .attr("from", "r@g/bob")
            .attr("type", "groupchat")
            .attr("id", "m1")
            .child(el("body", ns::CLIENT).text("secret").build())
            .child(Element::bare("encrypted", "urn:xmpp:omemo:2"))
            .child(el("occupant-id", occupant_id::NS).attr("id", "o").build())
            .build();
        let t = tombstone(&orig, Element::bare("retracted", NS_RETRACT));
        assert_eq!(t.attr("from"), Some("r@g/bob"));
        assert_eq!(t.attr("id"), Some("m1"));
        assert!(!t.has_child("body", ns::CLIENT));
        assert!(!t.has_child("encrypted", "urn:xmpp:omemo:2"));
        assert!(t.has_child("retracted", NS_RETRACT));
        assert_eq!(author_id(&t), Some("o"));
    }
}
