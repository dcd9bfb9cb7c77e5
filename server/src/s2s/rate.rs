//! Rate limits per remote domain: other servers are guests.
//!
//! Every remote domain has, for all its incoming streams together:
//!
//! * a **stanza bucket** (`[s2s] stanzas_per_second`, `stanza_burst`): each
//!   stanza costs one token per started 8 KiB. A domain that spends more
//!   than it earns is not refused: its streams are read more slowly (the
//!   stream waits until the debt is paid back before it reads the next
//!   stanza), as Prosody's `mod_limits` and ejabberd's shapers do. Nothing a
//!   busy but honest server sends is lost; TCP pushes the wait back to it.
//! * a **subscription bucket** (`[s2s] subscriptions_per_minute`,
//!   `subscription_burst`), much stricter: `subscribe` is the one stanza
//!   that makes Kith store something for a stranger. A request over the
//!   limit is refused with `<policy-violation/>` (type `wait`, with a text)
//!   and neither stored nor shown to the user. Throttling would not do here:
//!   it would hold up everything else the domain sends behind its spam.
//! * a **strike bucket**: every refused request is a strike; a domain with
//!   more than [`STRIKES`] of them within a minute is not a server with one
//!   noisy user any more, and the stream that carried the last one is
//!   closed with `<policy-violation/>`. A new stream can come straight back,
//!   but its first refused request closes it again until strikes have
//!   refilled.
//!
//! Refusing costs the attacker a round trip and Kith a small error stanza
//! (without the payload: see `inbound::refuse`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::S2s;
use crate::limits::TokenBucket;

/// Refused subscription requests per minute before a domain's stream is closed.
pub const STRIKES: u32 = 100;

/// A stanza costs one token per started this many bytes.
pub const STANZA_UNIT: usize = 8 * 1024;

/// Domains remembered before idle ones (every bucket full) are forgotten.
const SWEEP_AT: usize = 1024;

/// What to do with a subscription request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Accept,
    /// Over the limit: refuse it with a stanza error. `first`: the first
    /// refusal since the domain was last within its limit (log it once).
    Refuse { first: bool },
    /// Far over the limit: close the stream with `<policy-violation/>`.
    Close,
}

/// One remote domain's buckets.
struct Domain {
    stanzas: Option<TokenBucket>,
    subscriptions: Option<TokenBucket>,
    strikes: TokenBucket,
    /// Subscription requests are being refused (for logging once).
    refusing: bool,
}

/// The buckets of every remote domain that sent something recently.
pub struct Rates {
    stanzas_per_second: u32,
    stanza_burst: u32,
    subscriptions_per_minute: u32,
    subscription_burst: u32,
    domains: Mutex<HashMap<String, Domain>>,
}

impl Rates {
    pub fn new(c: &S2s) -> Self {
        Rates {
            stanzas_per_second: c.stanzas_per_second,
            stanza_burst: c.stanza_burst,
            subscriptions_per_minute: c.subscriptions_per_minute,
            subscription_burst: c.subscription_burst,
            domains: Mutex::new(HashMap::new()),
        }
    }

    fn new_domain(&self, now: Instant) -> Domain {
        Domain {
            stanzas: (self.stanzas_per_second > 0).then(|| {
                TokenBucket::new(self.stanza_burst, f64::from(self.stanzas_per_second), now)
            }),
            subscriptions: (self.subscriptions_per_minute > 0).then(|| {
                TokenBucket::new(
                    self.subscription_burst,
                    f64::from(self.subscriptions_per_minute) / 60.0,
                    now,
                )
            }),
            strikes: TokenBucket::new(STRIKES, f64::from(STRIKES) / 60.0, now),
            refusing: false,
        }
    }

    /// Run `f` on `domain`'s buckets (made on first use).
    fn with<R>(&self, domain: &str, now: Instant, f: impl FnOnce(&mut Domain) -> R) -> R {
        // A panic while holding the map leaves plain numbers behind.
        let mut map = self.domains.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(domain) && map.len() >= SWEEP_AT {
            map.retain(|_, d| !d.idle(now));
        }
        let d = map
            .entry(domain.to_ascii_lowercase())
            .or_insert_with(|| self.new_domain(now));
        f(d)
    }

    /// Charge a stanza of about `bytes` bytes to `domain`: how long its
    /// stream should wait before reading the next one (zero within the limit).
    pub fn stanza(&self, domain: &str, bytes: usize) -> Duration {
        self.stanza_at(domain, bytes, Instant::now())
    }

    fn stanza_at(&self, domain: &str, bytes: usize, now: Instant) -> Duration {
        if self.stanzas_per_second == 0 {
            return Duration::ZERO;
        }
        let cost = bytes.div_ceil(STANZA_UNIT).max(1) as f64;
        self.with(domain, now, |d| match &mut d.stanzas {
            Some(b) => b.take_or_wait(cost, now),
            None => Duration::ZERO,
        })
    }

    /// A subscription request from `domain`: accept, refuse or close.
    pub fn subscription(&self, domain: &str) -> Verdict {
        self.subscription_at(domain, Instant::now())
    }

    fn subscription_at(&self, domain: &str, now: Instant) -> Verdict {
        if self.subscriptions_per_minute == 0 {
            return Verdict::Accept;
        }
        self.with(domain, now, |d| {
            let within = d
                .subscriptions
                .as_mut()
                .is_none_or(|b| b.try_take(1.0, now));
            if within {
                d.refusing = false;
                return Verdict::Accept;
            }
            if !d.strikes.try_take(1.0, now) {
                return Verdict::Close;
            }
            let first = !d.refusing;
            d.refusing = true;
            Verdict::Refuse { first }
        })
    }
}

impl Domain {
    /// Nothing spent: the same as a domain never seen.
    fn idle(&mut self, now: Instant) -> bool {
        self.stanzas.as_mut().is_none_or(|b| b.is_full(now))
            && self.subscriptions.as_mut().is_none_or(|b| b.is_full(now))
            && self.strikes.is_full(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(stanzas: u32, burst: u32, subs: u32, sub_burst: u32) -> Rates {
        Rates::new(&S2s {
            stanzas_per_second: stanzas,
            stanza_burst: burst,
            subscriptions_per_minute: subs,
            subscription_burst: sub_burst,
            ..S2s::default()
        })
    }

    #[test]
    fn stanzas_beyond_the_burst_wait_in_proportion_to_their_size() {
        let r = rates(10, 20, 0, 1);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(r.stanza_at("a.example", 100, t0), Duration::ZERO);
        }
        // The 21st small stanza puts the domain one token in debt: 0.1 s.
        let w = r.stanza_at("a.example", 100, t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
        // 400 KiB counts as 50 stanzas: another 5 s.
        let w = r.stanza_at("a.example", 400 * 1024, t0);
        assert!((w.as_secs_f64() - 5.1).abs() < 1e-9, "{w:?}");
        // Another domain has its own bucket; case does not make a new one.
        assert_eq!(r.stanza_at("b.example", 100, t0), Duration::ZERO);
        let w = r.stanza_at("B.Example", 200_000, t0);
        assert!((w.as_secs_f64() - 0.6).abs() < 1e-9, "{w:?}");
        // Paid back in time.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(r.stanza_at("a.example", 100, later), Duration::ZERO);
    }

    #[test]
    fn subscriptions_are_accepted_then_refused_then_the_stream_is_closed() {
        let r = rates(0, 1, 2, 20);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(r.subscription_at("spam.example", t0), Verdict::Accept);
        }
        assert_eq!(
            r.subscription_at("spam.example", t0),
            Verdict::Refuse { first: true }
        );
        for _ in 1..STRIKES {
            assert_eq!(
                r.subscription_at("spam.example", t0),
                Verdict::Refuse { first: false }
            );
        }
        assert_eq!(r.subscription_at("spam.example", t0), Verdict::Close);
        // A new stream a moment later is closed at its first refusal…
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(r.subscription_at("spam.example", soon), Verdict::Close);
        // …while another domain is untouched.
        assert_eq!(r.subscription_at("friend.example", soon), Verdict::Accept);
        // Half a minute later: one more request earned (2 a minute), and
        // strikes refilled.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(r.subscription_at("spam.example", later), Verdict::Accept);
        assert_eq!(
            r.subscription_at("spam.example", later),
            Verdict::Refuse { first: true }
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let r = rates(0, 1, 0, 1);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(r.subscription_at("a.example", t0), Verdict::Accept);
            assert_eq!(r.stanza_at("a.example", 500_000, t0), Duration::ZERO);
        }
    }

    #[test]
    fn idle_domains_are_forgotten_and_busy_ones_kept() {
        let r = rates(10, 10, 2, 20);
        let t0 = Instant::now();
        r.subscription_at("busy.example", t0);
        for i in 0..SWEEP_AT {
            r.stanza_at(&format!("d{i}.example"), 1, t0);
        }
        let later = t0 + Duration::from_secs(1);
        r.stanza_at("new.example", 1, later);
        let map = r.domains.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            map.contains_key("busy.example"),
            "its request is still counted"
        );
        assert!(map.contains_key("new.example"));
        assert!(map.len() <= 3, "{} domains kept", map.len());
    }
}
