//! A room's archive (MUC MAM, XEP-0313 on the room) and its stanza ids
//! (XEP-0359): in a room with archiving on, every message the room
//! broadcasts with content (a body, an encrypted payload, a retraction) is
//! archived by the room, through the server's archive writer, under the
//! room's bare JID, and the broadcast copy carries
//! `<stanza-id by='room@service' id='archive id'/>`, so every occupant, the
//! history on join and the archive name it alike. In a room without an
//! archive such messages get a random stanza id (not an archive id, so it
//! can never name another room's archived message). The archived copy also
//! carries the author's real bare JID (`<x xmlns='…muc#user'><item jid/>`),
//! shown only to those the room lets see real JIDs. Destroying a room (or
//! closing a temporary one) deletes its archive; otherwise it follows the
//! server's `[archive] retention_days` (`mam/retention.rs`).

use jid::{BareJid, FullJid};
use minidom::Element;

use super::room::Room;
use super::NS_USER;
use crate::core::Core;
use crate::mam::rules::{now_micros, public_id, stanza_id, NS_SID};
use crate::storage::archive::NewArchived;
use crate::xml::{el, ns, serialize};

const NS_HINTS: &str = "urn:xmpp:hints";
/// Rows deleted per statement when an archive is deleted.
const DELETE_BATCH: usize = 1000;
/// Payloads that make a room message worth keeping without a `<body/>`:
/// OMEMO (0.3 and 2), OpenPGP for XMPP, and retractions (XEP-0424).
const KEEP_WITHOUT_BODY: [(&str, &str); 4] = [
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("retract", super::moderate::NS_RETRACT),
];

/// The archive owner of a room in storage: its bare JID (a local account
/// name never holds an `@`, so it cannot clash).
pub fn owner(r: &Room) -> &str {
    r.jid.as_str()
}

/// Whether a message the room broadcasts has content worth an id and a
/// place in the archive (chat states, markers and `<no-store/>` do not).
pub fn keeps(msg: &Element) -> bool {
    if msg.has_child("no-store", NS_HINTS) || msg.has_child("no-permanent-store", NS_HINTS) {
        return false;
    }
    msg.has_child("body", ns::CLIENT)
        || KEEP_WITHOUT_BODY
            .iter()
            .any(|(name, ns)| msg.has_child(*name, *ns))
}

/// The stanza id `msg` carries from room `r`, if any.
pub fn stanza_id_of(r: &Room, msg: &Element) -> Option<String> {
    msg.children()
        .find(|c| c.is("stanza-id", NS_SID) && c.attr("by") == Some(r.jid.as_str()))
        .and_then(|c| c.attr("id"))
        .map(str::to_string)
}

/// Give a message the room is about to broadcast (`out`, from the occupant
/// JID or the room) its stanza id, archiving it first when the room keeps
/// an archive. `author` is the real bare JID of the occupant who wrote it
/// and `session` the session it came from (a stream management ack waits
/// for the archive commit). Returns the stanza id; none for messages
/// without content, or when storage failed (logged; the message still goes).
pub async fn stamp(
    core: &Core,
    r: &Room,
    session: Option<&FullJid>,
    author: Option<&BareJid>,
    out: &mut Element,
) -> Option<String> {
    if !keeps(out) {
        return None;
    }
    if !r.config.archiving {
        // Not hex: never mistaken for an archive id.
        let id = format!("t{}", crate::core::random_hex(12));
        out.append_child(
            el("stanza-id", NS_SID)
                .attr("by", r.jid.as_str())
                .attr("id", id.clone())
                .build(),
        );
        return Some(id);
    }
    let nick = out
        .attr("from")
        .and_then(|f| f.split_once('/'))
        .map(|(_, n)| n.to_string())
        .unwrap_or_default();
    let mut kept = out.clone();
    with_real_jid(&mut kept, author);
    let mut buf = Vec::new();
    serialize(&kept, &mut buf);
    let text = String::from_utf8_lossy(&buf);
    let row = NewArchived {
        username: owner(r),
        with_bare: r.jid.as_str(),
        with_resource: &nick,
        stamp: now_micros(),
        stanza: &text,
    };
    match core.db.archive_enqueue(&[row]).await {
        Ok(ids) => {
            let id = *ids.first()?;
            if let Some(s) = session.and_then(|j| core.sessions.get(j)) {
                s.note_archived(id);
            }
            out.append_child(stanza_id(r.jid.as_str(), id));
            Some(public_id(id))
        }
        Err(e) => {
            tracing::error!(error = %e, room = %r.jid, "archiving a room message failed");
            None
        }
    }
}

/// The archived copy names its author's real JID (and nothing a client
/// put there claims otherwise).
fn with_real_jid(msg: &mut Element, author: Option<&BareJid>) {
    hide_real_jid(msg);
    if let Some(a) = author {
        msg.append_child(
            el("x", NS_USER)
                .child(el("item", NS_USER).attr("jid", a.as_str()).build())
                .build(),
        );
    }
}

/// Remove the real JID of an archived message (for those who may not see
/// it, and for history on join).
pub fn hide_real_jid(msg: &mut Element) {
    if !msg.children().any(|c| c.is("x", NS_USER)) {
        return;
    }
    let kept: Vec<Element> = msg
        .children()
        .filter(|c| !c.is("x", NS_USER))
        .cloned()
        .collect();
    msg.take_nodes();
    for c in kept {
        msg.append_child(c);
    }
}

/// Delete a room's archive (it was destroyed, or a temporary room closed).
/// A failure is logged; the pruner removes what is left with time.
pub async fn forget(core: &Core, r: &Room) {
    match core.db.archive_delete_owner(owner(r), DELETE_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(room = %r.jid, deleted = n, "room archive deleted"),
        Err(e) => tracing::error!(error = %e, room = %r.jid, "could not delete a room archive"),
    }
}

/// Delete, at start-up, the archives of rooms of this service that no
/// longer exist (`exists` says which do): temporary rooms open when the
/// server stopped. A new room of the same name must not inherit them.
pub async fn drop_orphans(core: &Core, exists: impl Fn(&str) -> bool) {
    let suffix = format!("@{}", super::domain(core));
    let owners = match core.db.archive_room_owners().await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "could not list room archives");
            return;
        }
    };
    for o in owners {
        let Some(name) = o.strip_suffix(&suffix) else {
            continue;
        };
        if exists(name) {
            continue;
        }
        match core.db.archive_delete_owner(&o, DELETE_BATCH).await {
            Ok(n) => {
                tracing::info!(room = %o, deleted = n, "archive of a room that is gone deleted")
            }
            Err(e) => tracing::error!(error = %e, room = %o, "could not delete a room archive"),
        }
    }
}

/// The disco features of a room's archive, stanza ids, moderation and
/// retraction.
pub fn features(r: &Room) -> Vec<&'static str> {
    let mut v = vec![
        NS_SID,
        super::moderate::NS_MODERATE,
        super::moderate::NS_MODERATE_0,
        super::moderate::NS_RETRACT,
    ];
    if r.config.archiving {
        v.push(crate::mam::NS);
        v.push("urn:xmpp:mam:2#extended");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(children: Vec<Element>) -> Element {
        el("message", ns::CLIENT)
            .attr("type", "groupchat")
            .children(children)
            .build()
    }

    #[test]
    fn what_the_room_keeps() {
        let body = el("body", ns::CLIENT).text("hi").build();
        assert!(keeps(&msg(vec![body.clone()])));
        assert!(!keeps(&msg(vec![Element::bare(
            "composing",
            "http://jabber.org/protocol/chatstates"
        )])));
        assert!(!keeps(&msg(vec![
            body,
            Element::bare("no-store", NS_HINTS)
        ])));
        assert!(keeps(&msg(vec![Element::bare(
            "encrypted",
            "urn:xmpp:omemo:2"
        )])));
    }

    #[test]
    fn the_archived_copy_names_only_the_real_author() {
        let forged = el("x", NS_USER)
            .child(el("item", NS_USER).attr("jid", "mum@x").build())
            .build();
        let mut m = msg(vec![forged]);
        let bob = BareJid::new("bob@x").unwrap();
        with_real_jid(&mut m, Some(&bob));
        let jids: Vec<_> = m
            .children()
            .filter(|c| c.is("x", NS_USER))
            .filter_map(|x| x.get_child("item", NS_USER)?.attr("jid"))
            .collect();
        assert_eq!(jids, ["bob@x"]);
        hide_real_jid(&mut m);
        assert!(!m.has_child("x", NS_USER));
    }
}
