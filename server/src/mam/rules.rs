//! What goes into the archive (XEP-0313 §"Business rules" with the XEP-0334
//! hints), XEP-0359 stanza ids (adding ours, stripping forged ones), archive
//! ids on the wire, and timestamps.

use minidom::Element;

use crate::xml::{el, ns};

pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// Payloads that make a message worth keeping even without a `<body/>`:
/// OMEMO (0.3 and 2), OpenPGP for XMPP, legacy OpenPGP.
const KEEP_WITHOUT_BODY: [(&str, &str); 4] = [
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
];

/// Whether a message from a local client should be archived: chats and normal
/// messages with content (a body or an encrypted payload), unless marked
/// `<no-store/>` or `<no-permanent-store/>`; anything chat-like marked
/// `<store/>`. Chat states, receipts and markers alone are not archived, nor
/// are errors, headlines and group chat messages.
pub fn archivable(msg: &Element) -> bool {
    let ty = msg.attr("type").unwrap_or("normal");
    if !matches!(ty, "chat" | "normal") {
        return false;
    }
    if msg.has_child("no-store", NS_HINTS) || msg.has_child("no-permanent-store", NS_HINTS) {
        return false;
    }
    if msg.has_child("store", NS_HINTS) {
        return msg
            .children()
            .any(|c| c.ns() != NS_CHATSTATES && c.ns() != NS_HINTS);
    }
    msg.has_child("body", ns::CLIENT)
        || KEEP_WITHOUT_BODY
            .iter()
            .any(|(name, ns)| msg.has_child(*name, *ns))
}

/// Remove every `<stanza-id/>` that claims to come from this server or one of
/// its accounts (XEP-0359 §3.3): only the server stamps those. Other
/// `<stanza-id/>`s and `<origin-id/>` stay.
pub fn strip_forged_stanza_ids(msg: &mut Element, domain: &str) {
    let forged = |c: &Element| {
        c.is("stanza-id", NS_SID)
            && c.attr("by").is_some_and(|by| {
                let host = by.rsplit_once('@').map_or(by, |(_, d)| d);
                let host = host.split('/').next().unwrap_or(host);
                host.eq_ignore_ascii_case(domain)
            })
    };
    if !msg.children().any(forged) {
        return;
    }
    let kept: Vec<Element> = msg.children().filter(|c| !forged(c)).cloned().collect();
    msg.take_nodes();
    for c in kept {
        msg.append_child(c);
    }
}

/// The `<stanza-id/>` stamped on a message archived by `by` under `id`.
pub fn stanza_id(by: &str, id: i64) -> Element {
    el("stanza-id", NS_SID)
        .attr("by", by)
        .attr("id", public_id(id))
        .build()
}

/// The archive id as clients see it: an opaque string (hex of the row id).
pub fn public_id(id: i64) -> String {
    format!("{id:x}")
}

/// The row id of a public archive id, if it is one.
pub fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// An XEP-0082 DateTime as microseconds since the epoch.
pub fn parse_stamp(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Microseconds since the epoch as an XEP-0082 DateTime (UTC, microseconds).
pub fn format_stamp(micros: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: &str, children: Vec<Element>) -> Element {
        el("message", ns::CLIENT)
            .attr("type", ty)
            .children(children)
            .build()
    }
    fn body() -> Element {
        el("body", ns::CLIENT).text("hi").build()
    }

    #[test]
    fn what_is_archived() {
        assert!(archivable(&msg("chat", vec![body()])));
        assert!(archivable(&msg("normal", vec![body()])));
        assert!(!archivable(&msg("headline", vec![body()])));
        assert!(!archivable(&msg("groupchat", vec![body()])));
        assert!(!archivable(&msg("error", vec![body()])));
        let state = Element::bare("composing", NS_CHATSTATES);
        assert!(!archivable(&msg("chat", vec![state.clone()])));
        let omemo = Element::bare("encrypted", "eu.siacs.conversations.axolotl");
        assert!(archivable(&msg("chat", vec![omemo, state.clone()])));
        let hint = |n| Element::bare(n, NS_HINTS);
        assert!(!archivable(&msg("chat", vec![body(), hint("no-store")])));
        assert!(!archivable(&msg(
            "chat",
            vec![body(), hint("no-permanent-store")]
        )));
        let receipt = Element::bare("received", "urn:xmpp:receipts");
        assert!(!archivable(&msg("chat", vec![receipt.clone()])));
        assert!(archivable(&msg("chat", vec![receipt, hint("store")])));
        assert!(!archivable(&msg("chat", vec![state, hint("store")])));
    }

    #[test]
    fn forged_stanza_ids_are_stripped_others_kept() {
        let sid = |by: &str| {
            el("stanza-id", NS_SID)
                .attr("by", by)
                .attr("id", "x")
                .build()
        };
        let origin = el("origin-id", NS_SID).attr("id", "o").build();
        let mut m = msg(
            "chat",
            vec![
                body(),
                sid("bob@kith.example"),
                sid("kith.example"),
                sid("KITH.example/x"),
                sid("room@muc.other.org"),
                origin,
            ],
        );
        strip_forged_stanza_ids(&mut m, "kith.example");
        let bys: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", NS_SID))
            .filter_map(|c| c.attr("by"))
            .collect();
        assert_eq!(bys, vec!["room@muc.other.org"]);
        assert!(m.has_child("origin-id", NS_SID) && m.has_child("body", ns::CLIENT));
    }

    #[test]
    fn ids_and_stamps_round_trip() {
        for id in [1, 255, 1_000_000, i64::MAX] {
            assert_eq!(parse_id(&public_id(id)), Some(id));
        }
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("ffffffffffffffff"), None);
        let t = 1_700_000_000_123_456;
        assert_eq!(parse_stamp(&format_stamp(t)), Some(t));
        assert_eq!(
            parse_stamp("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_stamp("yesterday"), None);
    }
}
