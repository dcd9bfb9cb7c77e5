//! XEP-0352 Client State Indication: a phone in a pocket says `<inactive/>`,
//! and the server holds back what can wait — presence updates and bare chat
//! states — until something important arrives (a message with a body, an IQ,
//! anything else) or the phone says `<active/>`. Held stanzas then go out
//! first, in order, so nothing is lost or reordered; at most 100 wait.

use minidom::Element;

use crate::registry::{Module, Registry};
use crate::xml::ns;

pub const MODULE: Module = Module {
    name: "csi",
    register,
};
const NS: &str = "urn:xmpp:csi:0";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

fn register(r: &mut Registry) {
    r.stream_feature(|| Element::bare("csi", NS));
    r.nonza(NS, "inactive", |_, s, _| s.set_inactive(true));
    r.nonza(NS, "active", |_, s, _| s.set_inactive(false));
    r.hold_filter(may_wait);
    // Bind2 (XEP-0386): `<inactive/>` inside `<bind/>` starts the session inactive.
    r.bind2_inline(NS, |_, _, req| crate::registry::Bind2Outcome {
        bound: None,
        effect: (req.name() == "inactive")
            .then(|| -> crate::registry::SessionEffect { Box::new(|_, s| s.set_inactive(true)) }),
    });
}

/// Presence (but not subscription requests, which a person answers) and
/// messages that carry nothing but a chat state may wait.
fn may_wait(stanza: &Element) -> bool {
    stanza.ns() == ns::CLIENT
        && match stanza.name() {
            "presence" => matches!(stanza.attr("type"), None | Some("unavailable")),
            "message" => {
                stanza.children().next().is_some()
                    && stanza.children().all(|c| c.ns() == NS_CHATSTATES)
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::el;

    #[test]
    fn what_may_wait() {
        let p = |ty: Option<&str>| el("presence", ns::CLIENT).attr_opt("type", ty).build();
        assert!(may_wait(&p(None)));
        assert!(may_wait(&p(Some("unavailable"))));
        assert!(!may_wait(&p(Some("subscribe"))));
        let typing = el("message", ns::CLIENT)
            .child(Element::bare("composing", NS_CHATSTATES))
            .build();
        assert!(may_wait(&typing));
        let body = el("message", ns::CLIENT)
            .child(el("body", ns::CLIENT).text("hi").build())
            .child(Element::bare("active", NS_CHATSTATES))
            .build();
        assert!(!may_wait(&body));
        assert!(!may_wait(&el("message", ns::CLIENT).build()));
        assert!(!may_wait(&el("iq", ns::CLIENT).build()));
    }
}
