//! The owner's side of a room (XEP-0045 §10.1–§10.2, §10.9): the
//! configuration form, the instant-room shortcut and cancelling a new
//! room, the notices a change sends (104, 172/173, 170/171, and removals
//! with 322 when a room becomes members-only), destruction with an
//! alternate venue, and keeping persistent rooms in storage.

use std::sync::Arc;

use jid::{FullJid, Jid};
use minidom::Element;

use super::admin::removed;
use super::room::{Affiliation, Role, Room};
use super::service::RoomRef;
use super::{send_to, NS_OWNER, NS_USER};
use crate::core::Core;
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::form::NS_DATA;
use crate::xml::{attr_set, el, ns};

/// A muc#owner query.
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
    if r.affiliation(&from.to_bare()) != Affiliation::Owner {
        return Err(
            StanzaError::new("auth", "forbidden").with_text("only owners configure the room")
        );
    }
    let limits = &core.config.muc;
    if !set {
        let form = r.config.to_form(limits.max_occupants, limits.max_history);
        return Ok(Some(el("query", NS_OWNER).child(form).build()));
    }
    if let Some(d) = q.get_child("destroy", NS_OWNER) {
        let d = d.clone();
        destroy(core, &mut r, &d).await?;
        let name = r.name.clone();
        drop(r);
        core.muc.remove(core, &name).await;
        return Ok(None);
    }
    let Some(x) = q.get_child("x", NS_DATA) else {
        return Err(StanzaError::bad_request().with_text("send a form or a destroy request"));
    };
    match x.attr("type") {
        Some("submit") => {}
        Some("cancel") => {
            // Cancelling the first form of a new room destroys it (§10.1.3).
            if r.locked {
                let d = Element::bare("destroy", NS_OWNER);
                destroy(core, &mut r, &d).await?;
                let name = r.name.clone();
                drop(r);
                core.muc.remove(core, &name).await;
            }
            return Ok(None);
        }
        _ => return Err(StanzaError::bad_request().with_text("the form must be submitted")),
    }
    let new = r
        .config
        .apply(x, limits.max_occupants, limits.max_history)?;
    let was_locked = r.locked;
    if new.persistent {
        r.locked = false;
        let stored = store(core, &r, &new, &r.affiliations).await;
        r.locked = was_locked;
        stored?;
    } else if r.config.persistent && !was_locked {
        core.db.muc_delete_room(&r.name).await.map_err(|e| {
            tracing::error!(error = %e, room = %r.jid, "could not forget a room");
            StanzaError::internal()
        })?;
    }
    let old = std::mem::replace(&mut r.config, new);
    r.locked = false;
    if !r
        .config
        .max_history
        .min(limits.max_history)
        .eq(&r.history.len())
    {
        let keep = r.config.max_history.min(limits.max_history);
        while r.history.len() > keep {
            r.history.pop_front();
        }
    }
    notify_changes(core, &mut r, &old, was_locked);
    tracing::info!(room = %r.jid, "room configured");
    Ok(None)
}

/// Tell occupants what a configuration change means for them.
fn notify_changes(core: &Core, r: &mut Room, old: &super::config::RoomConfig, was_locked: bool) {
    if was_locked {
        return;
    }
    let mut codes = vec![104];
    if old.whois_anyone != r.config.whois_anyone {
        codes.push(if r.config.whois_anyone { 172 } else { 173 });
    }
    if old.archiving != r.config.archiving {
        codes.push(if r.config.archiving { 170 } else { 171 });
    }
    let mut x = el("x", NS_USER);
    for c in codes {
        x = x.child(el("status", NS_USER).attr("code", c.to_string()).build());
    }
    let m = el("message", ns::CLIENT)
        .attr("type", "groupchat")
        .attr("from", r.jid.as_str())
        .attr("id", crate::core::random_hex(8))
        .child(x.build())
        .build();
    super::groupchat::broadcast(core, r, &m);
    // Becoming members-only removes those who are not members (322).
    if r.config.members_only && !old.members_only {
        let outsiders: Vec<String> = r
            .occupants
            .iter()
            .filter(|o| r.affiliation(&o.bare) < Affiliation::Member)
            .map(|o| o.nick.clone())
            .collect();
        for nick in outsiders {
            if let Some(idx) = r.occupants.iter().position(|o| o.nick == nick) {
                let mut occ = r.occupants.remove(idx);
                occ.role = Role::None;
                for s in &occ.sessions {
                    core.muc.mark(&s.jid, &r.name, false);
                }
                removed(core, r, &occ, &[322], &[]);
            }
        }
    }
}

/// Destroy the room: every occupant is told, with the alternate venue and
/// reason if given, and the room is forgotten (§10.9).
async fn destroy(core: &Core, r: &mut Room, d: &Element) -> Result<(), StanzaError> {
    let mut notice = el("destroy", NS_USER);
    if let Some(alt) = d.attr("jid") {
        let alt = Jid::new(alt).map_err(|_| StanzaError::jid_malformed())?;
        notice = notice.attr("jid", alt.to_bare().as_str());
    }
    if let Some(reason) = d.get_child("reason", NS_OWNER) {
        notice = notice.child(el("reason", NS_USER).text(reason.text()).build());
    }
    if let Some(pw) = d.get_child("password", NS_OWNER) {
        notice = notice.child(el("password", NS_USER).text(pw.text()).build());
    }
    let notice = notice.build();
    if let Err(e) = core.db.muc_delete_room(&r.name).await {
        tracing::error!(error = %e, room = %r.jid, "could not delete a destroyed room");
        return Err(StanzaError::internal());
    }
    super::archive::forget(core, r).await;
    for o in std::mem::take(&mut r.occupants) {
        let mut p = Element::bare("presence", ns::CLIENT);
        attr_set(&mut p, "type", "unavailable");
        attr_set(&mut p, "from", format!("{}/{}", r.jid, o.nick));
        p.append_child(
            el("x", NS_USER)
                .child(
                    el("item", NS_USER)
                        .attr("affiliation", "none")
                        .attr("role", "none")
                        .build(),
                )
                .child(notice.clone())
                .build(),
        );
        for s in &o.sessions {
            core.muc.mark(&s.jid, &r.name, false);
            send_to(core, &s.jid, p.clone());
        }
    }
    r.destroyed = true;
    tracing::info!(room = %r.jid, "room destroyed");
    Ok(())
}

/// Store a persistent room's configuration, subject and affiliations.
pub async fn persist(core: &Core, r: &Room) -> Result<(), StanzaError> {
    store(core, r, &r.config, &r.affiliations).await
}

/// Store a room as it will be with `config` and `affiliations` (a change
/// is stored before it is applied, so a failed write changes nothing).
/// Rooms that are not persistent (or still locked) are not stored.
pub async fn store(
    core: &Core,
    r: &Room,
    config: &super::config::RoomConfig,
    affiliations: &std::collections::BTreeMap<jid::BareJid, super::room::AffEntry>,
) -> Result<(), StanzaError> {
    if !config.persistent || r.locked {
        return Ok(());
    }
    let (room, affs) = r.stored_with(config, affiliations);
    core.db.muc_save_room(&room, &affs).await.map_err(|e| {
        tracing::error!(error = %e, room = %r.jid, "could not store a room");
        StanzaError::internal().with_text("the room could not be saved; nothing was changed")
    })
}
