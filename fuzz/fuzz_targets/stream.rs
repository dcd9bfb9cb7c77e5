//! Stream bytes (TCP and TLS c2s, s2s, components): `StreamParser::feed` with
//! the server's default limits, before and after authentication, in reads of
//! any size; then what negotiation reads from the stanzas it let through
//! (SASL1 `<auth/>`, SASL2 `<authenticate/>` with Bind2, addresses).
//!
//! Input: one control byte (bit 0: authenticated limits; all bits: the seed of
//! the read sizes), then the bytes the peer sends.
//!
//! Properties: no stanza passes the depth or attribute limits; the same bytes
//! give the same frames in one read or in many (only the size limit may hit
//! at a different point); every stanza re-serialises into itself.

#![no_main]

use jid::{BareJid, Jid};
use kith_fuzz::{check_round_trip, feed, reads, same_frames};
use kith_server::fuzzing::{addr_of, bind2_jid, c2s_limits, sasl2_authenticate, sasl_decode};
use kith_server::sasl::Mechanism;
use kith_server::tls::ChannelBindings;
use kith_server::xml::{ns, Element, Frame, ParseError};
use kith_server::Limits;
use libfuzzer_sys::fuzz_target;

const NS_SASL2: &str = "urn:xmpp:sasl:2";
const NS_BIND2: &str = "urn:xmpp:bind:0";

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let limits = c2s_limits(&Limits::default(), control & 1 == 1);
    let whole = feed(limits, [bytes]);
    let split = feed(limits, reads(bytes, control));

    let policy = |e: &Option<ParseError>| matches!(e, Some(ParseError::PolicyViolation(_)));
    if !policy(&whole.error) && !policy(&split.error) {
        assert_eq!(
            whole.error, split.error,
            "one read and many reads end differently"
        );
        assert!(
            same_frames(&whole.frames, &split.frames),
            "one read and many reads give different frames:\n{:?}\n{:?}",
            whole.frames,
            split.frames
        );
    }

    for frame in &whole.frames {
        if let Frame::Stanza(el) = frame {
            check_round_trip(el, limits);
            negotiation(el);
        }
    }
});

/// Read a stanza as c2s negotiation and the router would.
fn negotiation(el: &Element) {
    let none = ChannelBindings::default();
    let tls = ChannelBindings {
        exporter: Some(vec![7; 32]),
        server_end_point: Some(vec![9; 32]),
    };
    if el.is("auth", ns::SASL) {
        let _ = el.attr("mechanism").and_then(Mechanism::from_name);
        let _ = sasl_decode(&el.text());
    }
    if el.is("authenticate", NS_SASL2) {
        for bindings in [&none, &tls] {
            if let Ok(a) = sasl2_authenticate(el, bindings) {
                if let Some(id) = &a.agent_id {
                    assert!(!id.is_empty() && id.len() <= 128, "agent id {id:?}");
                }
                assert!(a.software.chars().count() <= 64 && a.device.chars().count() <= 64);
                let bare = BareJid::new("alice@localhost").ok();
                let bind = el.get_child("bind", NS_BIND2);
                if let (Some(bare), Some(bind)) = (bare, bind) {
                    let tag = bind.get_child("tag", NS_BIND2).map(|t| t.text());
                    let jid = bind2_jid(&bare, tag.as_deref(), a.agent_id.as_deref());
                    assert!(jid.is_some(), "Bind2 bound nothing for tag {tag:?}");
                }
            }
        }
    }
    if let Ok(sender) = BareJid::new("alice@localhost") {
        let to = el.attr("to").map(Jid::new);
        if let Some(Ok(to)) = &to {
            let _ = addr_of(Some(to), &sender, "localhost");
        }
        let _ = el.attr("from").map(Jid::new);
    }
}
