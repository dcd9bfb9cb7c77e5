//! Pings of idle peers (XEP-0199, server to client and server to component).
//!
//! A peer that sent nothing for `idle` gets an `<iq type='get'><ping/></iq>`;
//! anything it sends afterwards (the reply, an error reply from a client that
//! does not know ping, any stanza) proves the connection alive. Nothing within
//! `timeout` means the connection is half-open — a phone that lost signal
//! without closing — and the connection is closed. The state is two instants,
//! so an idle session pays almost nothing for it.

use minidom::Element;
use tokio::time::Instant;

use crate::config::PingConfig;
use crate::xml::{el, ns};

const NS_PING: &str = "urn:xmpp:ping";

/// What the connection loop must do now.
#[derive(Debug, PartialEq, Eq)]
pub enum PingAction {
    /// Nothing yet.
    Wait,
    /// Send a ping.
    Ping,
    /// No reply in time: close the connection.
    Dead,
}

/// The idle-ping state of one connection.
#[derive(Debug)]
pub struct IdlePing {
    idle: std::time::Duration,
    timeout: std::time::Duration,
    last_heard: Instant,
    /// When a ping went out that is not answered yet.
    pinged: Option<Instant>,
}

impl IdlePing {
    pub fn new(cfg: &PingConfig) -> Self {
        IdlePing {
            idle: cfg.idle,
            timeout: cfg.timeout,
            last_heard: Instant::now(),
            pinged: None,
        }
    }

    /// The peer sent something.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = None;
    }

    /// When [`IdlePing::check`] has something to do.
    pub fn deadline(&self) -> Instant {
        match self.pinged {
            Some(at) => at + self.timeout,
            None => self.last_heard + self.idle,
        }
    }

    /// Call at (or after) [`IdlePing::deadline`].
    pub fn check(&mut self) -> PingAction {
        let now = Instant::now();
        if now < self.deadline() {
            return PingAction::Wait;
        }
        if self.pinged.is_some() {
            return PingAction::Dead;
        }
        self.pinged = Some(now);
        PingAction::Ping
    }
}

/// The ping IQ from `from` (the server's domain) to `to`.
pub fn ping_iq(from: &str, to: &str) -> Element {
    el("iq", ns::CLIENT)
        .attr("type", "get")
        .attr("id", format!("ping-{}", crate::core::random_hex(6)))
        .attr("from", from)
        .attr("to", to)
        .child(Element::bare("ping", NS_PING))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn idle_then_ping_then_dead_unless_heard() {
        let cfg = PingConfig {
            idle: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        };
        let mut p = IdlePing::new(&cfg);
        assert_eq!(p.check(), PingAction::Wait);
        tokio::time::sleep_until(p.deadline()).await;
        assert_eq!(p.check(), PingAction::Ping);
        assert_eq!(p.check(), PingAction::Wait);
        p.heard();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(p.check(), PingAction::Wait);
        tokio::time::sleep_until(p.deadline()).await;
        assert_eq!(p.check(), PingAction::Ping);
        tokio::time::sleep_until(p.deadline()).await;
        assert_eq!(p.check(), PingAction::Dead);
    }
}
