//! History on entering a room (XEP-0045 §7.2.13–§7.2.14): the room keeps
//! its last messages (at most the room's `max_history`, itself capped by
//! `[muc] max_history`) and sends them to a newcomer with `<delay/>`, as
//! the newcomer's `<history maxchars maxstanzas seconds since/>` narrows.
//! A room with an archive refills its history from it when it is loaded
//! (after a restart), with the archived times.

use jid::FullJid;
use minidom::Element;

use super::room::{HistoryEntry, Room};
use super::{send_to, NS_MUC};
use crate::core::Core;
use crate::mam::rules::{format_stamp, now_micros, parse_stamp};
use crate::xml::el;

const NS_DELAY: &str = "urn:xmpp:delay";

/// Keep a broadcast message (from the occupant JID, without `to`).
pub fn record(r: &mut Room, stanza: &Element, cap: usize) {
    let keep = r.config.max_history.min(cap);
    if keep == 0 {
        r.history.clear();
        return;
    }
    r.history.push_back(entry(stanza.clone(), now_micros()));
    while r.history.len() > keep {
        r.history.pop_front();
    }
}

/// A history entry for a broadcast message sent at `stamp`.
pub fn entry(stanza: Element, stamp: i64) -> HistoryEntry {
    let mut buf = Vec::new();
    crate::xml::serialize(&stanza, &mut buf);
    HistoryEntry {
        chars: String::from_utf8_lossy(&buf).chars().count(),
        stanza,
        stamp,
    }
}

/// Fill a room's history after a restart from its archive (when it keeps
/// one): its last messages, as they were broadcast, with their archived
/// times. A storage failure is logged and leaves the history empty.
pub async fn restore(core: &Core, room: &mut Room) {
    let keep = room.config.max_history.min(core.config.muc.max_history);
    if !room.config.archiving || keep == 0 {
        return;
    }
    let all = crate::storage::archive::ArchiveFilter::default();
    let owner = super::archive::owner(room).to_string();
    let page = match core.db.archive_page(&owner, &all, keep, true).await {
        Ok((page, _)) => page,
        Err(e) => {
            tracing::error!(error = %e, room = %room.jid, "could not read a room's history");
            return;
        }
    };
    room.history.clear();
    for a in page {
        let Ok(mut m) = a.stanza.parse::<Element>() else {
            tracing::error!(id = a.id, room = %room.jid, "an archived room message does not parse");
            continue;
        };
        super::archive::hide_real_jid(&mut m);
        m.append_child(crate::mam::rules::stanza_id(room.jid.as_str(), a.id));
        room.history.push_back(entry(m, a.stamp));
    }
}

/// What a `<history/>` request asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    max_stanzas: Option<usize>,
    max_chars: Option<usize>,
    since: Option<i64>,
}

fn wanted(req: Option<&Element>) -> Wanted {
    let Some(h) = req.filter(|h| h.is("history", NS_MUC)) else {
        return Wanted::default();
    };
    let num = |a: &str| h.attr(a).and_then(|v| v.trim().parse::<usize>().ok());
    let mut since = h.attr("since").and_then(parse_stamp);
    if let Some(secs) = num("seconds") {
        let t = now_micros().saturating_sub((secs as i64).saturating_mul(1_000_000));
        since = Some(since.map_or(t, |s| s.max(t)));
    }
    Wanted {
        max_stanzas: num("maxstanzas"),
        max_chars: num("maxchars"),
        since,
    }
}

/// The entries to send, oldest first.
fn select(r: &Room, w: Wanted) -> Vec<&HistoryEntry> {
    let mut out = Vec::new();
    let mut chars = 0usize;
    for e in r.history.iter().rev() {
        if w.max_stanzas.is_some_and(|m| out.len() >= m) {
            break;
        }
        if w.since.is_some_and(|s| e.stamp < s) {
            break;
        }
        if let Some(m) = w.max_chars {
            chars += e.chars;
            if chars > m {
                break;
            }
        }
        out.push(e);
    }
    out.reverse();
    out
}

/// Send a newcomer the history it asked for.
pub fn send(core: &Core, r: &Room, to: &FullJid, req: Option<&Element>) {
    for e in select(r, wanted(req)) {
        let mut m = e.stanza.clone();
        m.append_child(
            el("delay", NS_DELAY)
                .attr("from", r.jid.as_str())
                .attr("stamp", format_stamp(e.stamp))
                .build(),
        );
        send_to(core, to, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::muc::config::RoomConfig;
    use jid::BareJid;

    fn room(n: usize) -> Room {
        let mut r = Room::new(
            "r".into(),
            BareJid::new("r@groups.example").unwrap(),
            BareJid::new("o@example").unwrap(),
            RoomConfig::default(),
        );
        for i in 0..n {
            let m = el("message", crate::xml::ns::CLIENT)
                .child(
                    el("body", crate::xml::ns::CLIENT)
                        .text(format!("m{i}"))
                        .build(),
                )
                .build();
            record(&mut r, &m, 100);
            if let Some(last) = r.history.back_mut() {
                last.stamp = (i as i64 + 1) * 1_000_000;
            }
        }
        r
    }

    fn bodies(v: Vec<&HistoryEntry>) -> Vec<String> {
        v.iter()
            .map(|e| {
                e.stanza
                    .get_child("body", crate::xml::ns::CLIENT)
                    .unwrap()
                    .text()
            })
            .collect()
    }

    #[test]
    fn the_room_keeps_its_setting() {
        let r = room(30);
        assert_eq!(r.history.len(), 20);
        assert_eq!(bodies(select(&r, Wanted::default()))[0], "m10");
    }

    #[test]
    fn requests_narrow_the_history() {
        let r = room(10);
        let w = |s: Option<usize>, c: Option<usize>, since: Option<i64>| Wanted {
            max_stanzas: s,
            max_chars: c,
            since,
        };
        assert_eq!(bodies(select(&r, w(Some(2), None, None))), ["m8", "m9"]);
        assert!(select(&r, w(Some(0), None, None)).is_empty());
        assert!(select(&r, w(None, Some(0), None)).is_empty());
        let one = r.history[0].chars;
        assert_eq!(select(&r, w(None, Some(one * 3), None)).len(), 3);
        assert_eq!(
            bodies(select(&r, w(None, None, Some(8_000_000)))),
            ["m7", "m8", "m9"]
        );
    }
}
