//! XEP-0198 Stream Management, per connection: `<enable/>`/`<enabled/>`,
//! `<r/>`/`<a/>` in both directions with `h` counted modulo 2^32, and the
//! bounded queue of stanzas sent to the client and not yet acknowledged.
//!
//! [`Sm`] lives in the session loop and moves to the new connection when a
//! session is resumed; [`table`] owns resumption (hibernation, `<resume/>`,
//! the end of a session that was not resumed).
//!
//! Acks from the server mean durable: the session loop handles an inbound
//! stanza completely (a message for an offline or hibernated account is in
//! SQLite, `synchronous=FULL`) before it counts it, and `<a h/>` reports only
//! counted stanzas. A delivered message is archived without waiting for the
//! commit (`storage/archive.rs`), so before an `<a h/>` (and before a
//! hibernated session can report its `h`) the session waits for the highest
//! archive id its own stanzas produced to be durable ([`durable`]). Sessions
//! without stream management never wait.

pub mod table;

use std::collections::VecDeque;
use std::sync::Arc;

use minidom::Element;
use tokio::time::Instant;

use crate::core::Core;
use crate::registry::{Module, Registry};
use crate::session::SessionHandle;
use crate::stream::StreamError;
use crate::xml::{el, ns};

pub use table::{Resumed, Table};

/// The stream management namespace.
pub const NS: &str = "urn:xmpp:sm:3";

/// The module: offers the stream feature after authentication.
pub const MODULE: Module = Module {
    name: "sm",
    register,
};

fn register(r: &mut Registry) {
    r.stream_feature(|| Element::bare("sm", NS));
    // Listed as a Bind2 inline feature (XEP-0386). The `<enable/>` itself is
    // answered by the SASL2 code with [`Sm::enable_inline`]: the state it
    // creates belongs to the connection, not to the session handle.
    r.bind2_inline(NS, |_, _, _| crate::registry::Bind2Outcome::default());
}

/// `<failed/>` with a stanza error condition (and the server's `h` when known).
pub fn failed(condition: &str, h: Option<u32>) -> Element {
    el("failed", NS)
        .attr_opt("h", h.map(|h| h.to_string()))
        .child(Element::bare(condition, ns::STANZAS))
        .build()
}

/// Stream management state of one session.
#[derive(Debug, Default)]
pub struct Sm {
    /// The client sent `<enable/>`.
    pub enabled: bool,
    /// The resumption id, when the session may be resumed.
    pub id: Option<String>,
    /// Stanzas received from the client and handled (its `h`).
    pub inbound: u32,
    /// The client's last `h`: stanzas it acknowledged.
    acked: u32,
    /// Stanzas sent and not acknowledged, oldest first; the first one has
    /// sequence number `acked + 1`.
    pub unacked: VecDeque<Vec<u8>>,
    /// Bytes in `unacked`.
    unacked_bytes: usize,
    /// Stanzas sent since the last `<r/>`.
    since_request: usize,
    /// When the server last asked for an ack (or wrote, if it did not ask).
    last_request: Option<Instant>,
}

impl Sm {
    /// Whether a dropped connection should hibernate this session.
    pub fn resumable(&self) -> bool {
        self.id.is_some()
    }

    /// Turn stream management on as `<enable/>` asks; returns `<enabled/>`.
    /// A resumable session gets its id here; [`Sm::register`] makes it
    /// claimable once the session exists.
    fn enable(&mut self, core: &Core, req: &Element) -> Element {
        self.enabled = true;
        let wants = matches!(req.attr("resume"), Some("true" | "1"));
        let secs = core.limits().sm_resume_timeout.as_secs();
        if !(wants && secs > 0) {
            return Element::bare("enabled", NS);
        }
        let id = crate::core::random_hex(16);
        self.id = Some(id.clone());
        el("enabled", NS)
            .attr("id", id)
            .attr("resume", "true")
            .attr("max", secs.to_string())
            .build()
    }

    /// `<enable/>` inside Bind2's `<bind/>` (XEP-0198 with XEP-0386): the
    /// state for the session about to start (counting from 0) and the
    /// `<enabled/>` for `<bound/>`.
    pub fn enable_inline(core: &Core, req: &Element) -> (Sm, Element) {
        let mut sm = Sm::default();
        let enabled = sm.enable(core, req);
        (sm, enabled)
    }

    /// Enter a resumable session in the resumption table (no-op otherwise).
    pub fn register(&self, core: &Core, session: &Arc<SessionHandle>) {
        if let Some(id) = &self.id {
            core.sm.register(id.clone(), session);
            tracing::debug!(jid = %session.jid, "stream management enabled, resumable");
        }
    }

    /// A stanza from the client was handled.
    pub fn count_in(&mut self) {
        if self.enabled {
            self.inbound = self.inbound.wrapping_add(1);
        }
    }

    /// Handle a stream management element from a bound client; returns what
    /// to write back (possibly nothing).
    pub fn nonza(
        &mut self,
        core: &Arc<Core>,
        session: &Arc<SessionHandle>,
        req: &Element,
    ) -> Result<Option<Element>, StreamError> {
        match req.name() {
            "enable" => {
                if self.enabled {
                    return Ok(Some(failed("unexpected-request", None)));
                }
                let enabled = self.enable(core, req);
                self.register(core, session);
                Ok(Some(enabled))
            }
            "r" if self.enabled => Ok(Some(self.answer())),
            "a" if self.enabled => {
                let h = parse_h(req)?;
                self.ack(h).map_err(|sent| {
                    StreamError::text(
                        "undefined-condition",
                        format!("h={h} acknowledges more than the {sent} stanzas sent"),
                    )
                    .with_app(
                        &el("handled-count-too-high", NS)
                            .attr("h", h.to_string())
                            .attr("send-count", sent.to_string())
                            .build(),
                    )
                })?;
                Ok(None)
            }
            "r" | "a" | "resume" => Ok(Some(failed("unexpected-request", None))),
            other => Err(StreamError::text(
                "unsupported-stanza-type",
                format!("<{other}/> is not a stream management element"),
            )),
        }
    }

    /// `<a h/>` for the client.
    pub fn answer(&self) -> Element {
        el("a", NS).attr("h", self.inbound.to_string()).build()
    }

    /// The client acknowledged up to `h`: drop those from the unacked queue.
    /// Errs with the number the server has sent if `h` is beyond it.
    pub fn ack(&mut self, h: u32) -> Result<(), u32> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(self.sent());
        }
        let freed: usize = self.unacked.drain(..n).map(|s| s.len()).sum();
        self.unacked_bytes = self.unacked_bytes.saturating_sub(freed);
        self.acked = h;
        Ok(())
    }

    /// Stanzas sent so far (mod 2^32).
    pub fn sent(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Stanzas about to be written: remembered when enabled; returns the
    /// bytes to write, with an `<r/>` after them when one is due. Errs when
    /// the unacked queue is over its bound (the stanzas are kept, so the end
    /// of the session can still store them).
    pub fn outgoing(
        &mut self,
        items: VecDeque<Vec<u8>>,
        core: &Core,
    ) -> Result<Vec<u8>, StreamError> {
        let total: usize = items.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(total + 32);
        for i in &items {
            out.extend_from_slice(i);
        }
        if !self.enabled {
            return Ok(out);
        }
        let limits = &core.limits();
        self.since_request += items.len();
        self.unacked_bytes += total;
        self.unacked.extend(items);
        if self.unacked.len() > limits.sm_max_unacked
            || self.unacked_bytes > max_unacked_bytes(core)
        {
            return Err(StreamError::text(
                "policy-violation",
                "too many unacknowledged stanzas",
            ));
        }
        if self.last_request.is_none() {
            self.last_request = Some(Instant::now());
        }
        if self.since_request >= limits.sm_ack_request_every {
            out.extend_from_slice(&request_bytes());
            self.requested_now();
        }
        Ok(out)
    }

    /// Stanzas queued for the client but never written (its connection
    /// dropped): kept as unacked, so that a resume sends them.
    pub fn keep_unsent(&mut self, items: VecDeque<Vec<u8>>) {
        self.unacked_bytes += items.iter().map(Vec::len).sum::<usize>();
        self.unacked.extend(items);
    }

    /// When the idle ack request is due, if stanzas wait for an ack.
    pub fn request_due(&self, core: &Core) -> Option<Instant> {
        if !self.enabled || self.unacked.is_empty() {
            return None;
        }
        self.last_request
            .map(|t| t + core.limits().sm_ack_request_interval)
    }

    /// An `<r/>` was written.
    pub fn requested_now(&mut self) {
        self.since_request = 0;
        self.last_request = Some(Instant::now());
    }

    /// `<resumed/>` followed by every stanza the client did not receive
    /// (those after its `h`), as bytes to write first on the new connection.
    pub fn resumed_bytes(&self, previd: &str) -> Vec<u8> {
        let mut out = Vec::new();
        crate::xml::serialize(&self.resumed(previd), &mut out);
        out.extend(self.resend_bytes());
        out
    }

    /// `<resumed previd h/>` (inside SASL2's `<success/>` when resumed there).
    pub fn resumed(&self, previd: &str) -> Element {
        el("resumed", NS)
            .attr("previd", previd)
            .attr("h", self.inbound.to_string())
            .build()
    }

    /// Every stanza the client did not receive, with an `<r/>` after them.
    pub fn resend_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.unacked {
            out.extend_from_slice(s);
        }
        if !self.unacked.is_empty() {
            out.extend_from_slice(&request_bytes());
        }
        out
    }
}

/// Wait until everything the session's own stanzas archived is on disk:
/// called before an `h` covering them goes to the client.
pub async fn durable(core: &Core, session: &SessionHandle) {
    core.db.archive_durable(session.archived()).await;
}

/// Bytes of unacknowledged stanzas one session may hold: 16 of the largest
/// stanzas (4 MiB by default), whatever `sm_max_unacked` says.
pub fn max_unacked_bytes(core: &Core) -> usize {
    core.limits().stanza_size.saturating_mul(16)
}

/// `<r/>`, serialised.
pub fn request_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    crate::xml::serialize(&Element::bare("r", NS), &mut out);
    out
}

/// The `h` attribute: an unsigned 32-bit counter.
pub fn parse_h(el: &Element) -> Result<u32, StreamError> {
    el.attr("h")
        .and_then(|h| h.trim().parse::<u32>().ok())
        .ok_or_else(|| StreamError::text("invalid-xml", "h must be an unsigned 32-bit number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm_with(n: usize, acked: u32) -> Sm {
        let mut sm = Sm {
            enabled: true,
            acked,
            ..Sm::default()
        };
        for i in 0..n {
            sm.unacked.push_back(format!("<m{i}/>").into_bytes());
        }
        sm
    }

    #[test]
    fn acks_drop_what_the_client_has() {
        let mut sm = sm_with(3, 0);
        assert_eq!(sm.sent(), 3);
        assert!(sm.ack(2).is_ok());
        assert_eq!(sm.unacked.len(), 1);
        assert_eq!(sm.unacked[0], b"<m2/>");
        assert!(sm.ack(2).is_ok(), "a repeated h is harmless");
        assert_eq!(sm.ack(5), Err(3), "h beyond what was sent");
    }

    #[test]
    fn h_wraps_around_at_two_to_the_32() {
        let mut sm = sm_with(4, u32::MAX - 1);
        assert_eq!(sm.sent(), 2);
        assert!(sm.ack(1).is_ok());
        assert_eq!(sm.unacked.len(), 1);
        let mut inbound = Sm {
            enabled: true,
            inbound: u32::MAX,
            ..Sm::default()
        };
        inbound.count_in();
        assert_eq!(inbound.inbound, 0);
    }

    #[test]
    fn nothing_is_counted_before_enable() {
        let mut sm = Sm::default();
        sm.count_in();
        assert_eq!(sm.inbound, 0);
    }

    #[test]
    fn failed_carries_condition_and_h() {
        let f = failed("item-not-found", Some(7));
        assert_eq!(f.attr("h"), Some("7"));
        assert!(f.has_child("item-not-found", ns::STANZAS));
    }
}
