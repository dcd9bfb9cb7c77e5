//! What a subscription stanza keeps on its way to a user: its addresses and
//! type, the requester's nickname (XEP-0172), a status text, and a XEP-0379
//! pre-authentication token (which lets the user's client approve a request
//! it invited) — each bounded — and nothing else.
//!
//! A request from another server may be a 512 KiB stanza. It is stored until
//! the user answers and shown to every session of the user at login, so
//! what is kept is at most a few hundred bytes besides the two JIDs.

use jid::BareJid;
use minidom::Element;

use super::state::SubType;
use crate::xml::{el, ns};

/// XEP-0172 User Nickname.
pub const NS_NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0379 Pre-Authenticated Roster Subscription.
pub const NS_PARS: &str = "urn:xmpp:pars:0";

/// Longest nickname kept, in bytes (longer ones are cut).
pub const MAX_NICK: usize = 128;
/// Longest status text kept, in bytes (longer ones are cut).
pub const MAX_STATUS: usize = 512;
/// Longest pre-authentication token kept (longer ones are dropped: a cut
/// token is worthless).
pub const MAX_TOKEN: usize = 128;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The subscription presence `t` from `from` to `to`, with what `original`
/// carried that is worth keeping.
pub fn presence(from: &BareJid, to: &BareJid, t: SubType, original: Option<&Element>) -> Element {
    let mut p = el("presence", ns::CLIENT)
        .attr("from", from.as_str())
        .attr("to", to.as_str())
        .attr("type", t.as_str());
    let Some(o) = original else {
        return p.build();
    };
    if let Some(status) = o.get_child("status", ns::CLIENT) {
        let text = status.text();
        let text = cut(text.trim(), MAX_STATUS);
        if !text.is_empty() {
            p = p.child(el("status", ns::CLIENT).text(text).build());
        }
    }
    if t == SubType::Subscribe {
        if let Some(nick) = o.get_child("nick", NS_NICK) {
            let text = nick.text();
            let text = cut(text.trim(), MAX_NICK);
            if !text.is_empty() {
                p = p.child(el("nick", NS_NICK).text(text).build());
            }
        }
        let token = o
            .get_child("preauth", NS_PARS)
            .and_then(|e| e.attr("token"))
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN);
        if let Some(token) = token {
            p = p.child(el("preauth", NS_PARS).attr("token", token).build());
        }
    }
    p.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::serialize;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).expect("jid")
    }

    fn len(e: &Element) -> usize {
        let mut out = Vec::new();
        serialize(e, &mut out);
        out.len()
    }

    #[test]
    fn a_huge_request_keeps_its_nick_status_and_token_bounded() {
        let junk = "j".repeat(400 * 1024);
        let original = el("presence", ns::CLIENT)
            .attr("type", "subscribe")
            .child(el("status", ns::CLIENT).text("é".repeat(1000)).build())
            .child(
                el("nick", NS_NICK)
                    .text(format!("  Ann {}", "n".repeat(500)))
                    .build(),
            )
            .child(el("preauth", NS_PARS).attr("token", "tok123").build())
            .child(el("x", "urn:example:junk").text(junk).build())
            .child(el("priority", ns::CLIENT).text("5").build())
            .build();
        let p = presence(
            &jid("ann@far.example"),
            &jid("alice@x"),
            SubType::Subscribe,
            Some(&original),
        );
        assert_eq!(
            (p.attr("from"), p.attr("to"), p.attr("type")),
            (Some("ann@far.example"), Some("alice@x"), Some("subscribe"))
        );
        let status = p.get_child("status", ns::CLIENT).expect("status").text();
        assert!(status.len() <= MAX_STATUS && status.len() >= MAX_STATUS - 1);
        assert!(
            status.chars().all(|c| c == 'é'),
            "cut at a character boundary"
        );
        let nick = p.get_child("nick", NS_NICK).expect("nick").text();
        assert!(
            nick.starts_with("Ann ") && nick.len() == MAX_NICK,
            "{nick:?}"
        );
        assert_eq!(
            p.get_child("preauth", NS_PARS)
                .and_then(|e| e.attr("token")),
            Some("tok123")
        );
        assert!(p.get_child("x", "urn:example:junk").is_none());
        assert!(p.get_child("priority", ns::CLIENT).is_none());
        assert_eq!(p.children().count(), 3);
        assert!(len(&p) < 1024, "{} bytes kept", len(&p));
    }

    #[test]
    fn long_tokens_empty_texts_and_other_types() {
        let original = el("presence", ns::CLIENT)
            .child(el("status", ns::CLIENT).text("  ").build())
            .child(el("nick", NS_NICK).text("Bo").build())
            .child(
                el("preauth", NS_PARS)
                    .attr("token", "t".repeat(129))
                    .build(),
            )
            .build();
        let (a, b) = (jid("bo@x"), jid("alice@x"));
        let p = presence(&a, &b, SubType::Subscribe, Some(&original));
        assert!(
            p.get_child("status", ns::CLIENT).is_none(),
            "blank status dropped"
        );
        assert!(
            p.get_child("preauth", NS_PARS).is_none(),
            "too long a token"
        );
        assert!(p.get_child("nick", NS_NICK).is_some());
        // Only a request carries a nickname and a token.
        let p = presence(&a, &b, SubType::Unsubscribed, Some(&original));
        assert_eq!(p.children().count(), 0);
        let p = presence(&a, &b, SubType::Subscribe, None);
        assert_eq!(p.children().count(), 0);
    }
}
