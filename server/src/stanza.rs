//! Stanza-level helpers: kinds, stanza errors (RFC 6120 §8.3) and replies.

use minidom::Element;

use crate::xml::{attr_remove, attr_set, el, ns};

/// The three stanza kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    /// The kind of a `jabber:client` element, if it is a stanza.
    pub fn of(el: &Element) -> Option<Kind> {
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// An error to return to the sender of a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// `cancel`, `modify`, `auth`, `wait`, `continue`.
    pub kind: &'static str,
    /// The defined condition (RFC 6120 §8.3.3).
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition (name, namespace), e.g. XEP-0060's
    /// `<precondition-not-met/>`.
    pub app: Option<(&'static str, &'static str)>,
}

impl StanzaError {
    pub fn new(kind: &'static str, condition: &'static str) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }
    /// Add an application-specific condition.
    pub fn with_app(mut self, name: &'static str, ns: &'static str) -> Self {
        self.app = Some((name, ns));
        self
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub fn service_unavailable() -> Self {
        Self::new("cancel", "service-unavailable")
    }
    pub fn bad_request() -> Self {
        Self::new("modify", "bad-request")
    }
    pub fn not_allowed() -> Self {
        Self::new("cancel", "not-allowed")
    }
    pub fn item_not_found() -> Self {
        Self::new("cancel", "item-not-found")
    }
    pub fn internal() -> Self {
        Self::new("wait", "internal-server-error")
    }
    pub fn jid_malformed() -> Self {
        Self::new("modify", "jid-malformed")
    }
    pub fn remote_server_not_found() -> Self {
        Self::new("cancel", "remote-server-not-found")
    }

    /// The `<error/>` child element.
    pub fn to_element(&self) -> Element {
        el("error", ns::CLIENT)
            .attr("type", self.kind)
            .child(Element::bare(self.condition, ns::STANZAS))
            .children(
                self.text
                    .as_ref()
                    .map(|t| el("text", ns::STANZAS).text(t.clone()).build()),
            )
            .children(self.app.map(|(name, app_ns)| Element::bare(name, app_ns)))
            .build()
    }
}

/// Turn `stanza` into an error reply: swap `from`/`to`, set `type='error'`, and
/// append the error (keeping the original payload, as RFC 6120 §8.3.1 allows).
/// Returns `None` for stanzas that must never be answered with an error.
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    if Kind::of(stanza) == Some(Kind::Iq) && stanza.attr("type") == Some("result") {
        return None;
    }
    let mut reply = stanza.clone();
    swap_addresses(&mut reply, stanza);
    attr_set(&mut reply, "type", "error");
    reply.append_child(err.to_element());
    Some(reply)
}

/// [`error_reply`] without the original payload: the stanza's name, `id`,
/// swapped addresses and the error. For refusing what another server sent:
/// echoing a payload of up to 512 KiB would queue it back at full size.
pub fn bare_error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    if Kind::of(stanza) == Some(Kind::Iq) && stanza.attr("type") == Some("result") {
        return None;
    }
    let mut reply = Element::bare(stanza.name(), stanza.ns());
    swap_addresses(&mut reply, stanza);
    if let Some(id) = stanza.attr("id") {
        attr_set(&mut reply, "id", id);
    }
    attr_set(&mut reply, "type", "error");
    reply.append_child(err.to_element());
    Some(reply)
}

fn swap_addresses(reply: &mut Element, orig: &Element) {
    attr_remove(reply, "to");
    attr_remove(reply, "from");
    if let Some(f) = orig.attr("from") {
        attr_set(reply, "to", f);
    }
    if let Some(t) = orig.attr("to") {
        attr_set(reply, "from", t);
    }
}

/// An IQ result for `iq`, with an optional payload. `from` is used when the
/// request carried no `to` (answered on behalf of the account or the server).
pub fn iq_result(iq: &Element, payload: Option<Element>, default_from: &str) -> Element {
    let mut b = el("iq", ns::CLIENT)
        .attr("type", "result")
        .attr("id", iq.attr("id").unwrap_or(""))
        .attr("from", iq.attr("to").unwrap_or(default_from));
    if let Some(f) = iq.attr("from") {
        b = b.attr("to", f);
    }
    if let Some(p) = payload {
        b = b.child(p);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let msg = el("message", ns::CLIENT)
            .attr("from", "a@x/r")
            .attr("to", "b@x")
            .attr("type", "chat")
            .build();
        let r = error_reply(&msg, &StanzaError::service_unavailable()).expect("reply");
        assert_eq!(
            (r.attr("to"), r.attr("from"), r.attr("type")),
            (Some("a@x/r"), Some("b@x"), Some("error"))
        );
        let e = r.get_child("error", ns::CLIENT).expect("error child");
        assert!(e.has_child("service-unavailable", ns::STANZAS));
        assert!(error_reply(&r, &StanzaError::service_unavailable()).is_none());
        let result = el("iq", ns::CLIENT).attr("type", "result").build();
        assert!(error_reply(&result, &StanzaError::bad_request()).is_none());
    }

    #[test]
    fn a_bare_error_reply_leaves_the_payload_out() {
        let p = el("presence", ns::CLIENT)
            .attr("from", "spam@far.example")
            .attr("to", "alice@x")
            .attr("type", "subscribe")
            .attr("id", "s1")
            .child(el("status", ns::CLIENT).text("x".repeat(400_000)).build())
            .build();
        let err = StanzaError::new("wait", "policy-violation").with_text("slow down");
        let r = bare_error_reply(&p, &err).expect("reply");
        assert_eq!(
            (
                r.name(),
                r.attr("to"),
                r.attr("from"),
                r.attr("id"),
                r.attr("type")
            ),
            (
                "presence",
                Some("spam@far.example"),
                Some("alice@x"),
                Some("s1"),
                Some("error")
            )
        );
        assert!(r.get_child("status", ns::CLIENT).is_none());
        let e = r.get_child("error", ns::CLIENT).expect("error child");
        assert!(e.has_child("policy-violation", ns::STANZAS));
        assert!(
            bare_error_reply(&r, &err).is_none(),
            "errors are never answered"
        );
    }
}
