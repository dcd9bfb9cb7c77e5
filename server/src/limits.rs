//! Per-IP connection counting, failed-login rate limiting, and the token
//! bucket other rate limits are made of.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (plain counters).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts open connections per IP address.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held while a connection is open; releases its slot on drop.
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// A limiter allowing `max` connections per IP (0: unlimited).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Take a slot for `ip`, or `None` when it already has `max` connections.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if self.max != 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Failed logins per minute, per IP and per account.
#[derive(Debug)]
pub struct AuthLimiter {
    per_minute: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    by_account: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Entries kept before old windows are swept.
const SWEEP_AT: usize = 10_000;

impl AuthLimiter {
    /// `per_minute` failures allowed (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self::with_window(per_minute, Duration::from_secs(60))
    }

    fn with_window(per_minute: u32, window: Duration) -> Self {
        AuthLimiter {
            per_minute,
            window,
            by_ip: Mutex::new(HashMap::new()),
            by_account: Mutex::new(HashMap::new()),
        }
    }

    fn over<K: std::hash::Hash + Eq>(
        &self,
        map: &Mutex<HashMap<K, (Instant, u32)>>,
        key: &K,
    ) -> bool {
        match lock(map).get(key) {
            Some((start, n)) => start.elapsed() < self.window && *n >= self.per_minute,
            None => false,
        }
    }

    fn bump<K: std::hash::Hash + Eq>(&self, map: &Mutex<HashMap<K, (Instant, u32)>>, key: K) {
        let mut map = lock(map);
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
        }
        let e = map.entry(key).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= self.window {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }

    /// Whether another attempt from `ip` for `account` may be tried now.
    pub fn allowed(&self, ip: IpAddr, account: &str) -> bool {
        self.per_minute == 0
            || !(self.over(&self.by_ip, &ip) || self.over(&self.by_account, &account.to_string()))
    }

    /// Record a failed attempt.
    pub fn failed(&self, ip: IpAddr, account: &str) {
        if self.per_minute == 0 {
            return;
        }
        self.bump(&self.by_ip, ip);
        self.bump(&self.by_account, account.to_string());
    }
}

/// A token bucket: holds at most `capacity` tokens and gains `per_sec` a
/// second. The caller passes the time, so tests never sleep.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    /// May be negative: a cost taken on credit (see [`TokenBucket::take_or_wait`]).
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, per_sec: f64, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity.max(1)),
            per_sec: per_sec.max(0.0),
            tokens: f64::from(capacity.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + gained).min(self.capacity);
            self.at = now;
        }
    }

    /// Take `cost` tokens if the bucket holds that many; otherwise take
    /// nothing and return false.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Take `cost` tokens even when the bucket holds fewer (it goes into
    /// debt); returns how long until the debt is paid back: how long the
    /// sender should wait before its next request. Zero when not in debt.
    pub fn take_or_wait(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= cost;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else if self.per_sec > 0.0 {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        } else {
            // Never refilled: a bucket of 0 per second is never built (0
            // means "no limit" in the configuration), but stay bounded.
            Duration::from_secs(60)
        }
    }

    /// Full again: forgetting this bucket and making a new one changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_counted_and_released() {
        let l = ConnLimiter::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.acquire(ip).expect("first");
        let _b = l.acquire(ip).expect("second");
        assert!(l.acquire(ip).is_none());
        assert!(l.acquire([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(l.acquire(ip).is_some());
    }

    #[test]
    fn failures_lock_out_per_ip_and_per_account_then_expire() {
        let l = AuthLimiter::with_window(2, Duration::from_millis(50));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 9].into();
        assert!(l.allowed(ip, "alice"));
        l.failed(ip, "alice");
        l.failed(ip, "alice");
        assert!(!l.allowed(ip, "bob"), "the IP is locked out");
        assert!(!l.allowed(other, "alice"), "the account is locked out");
        assert!(l.allowed(other, "bob"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.allowed(ip, "alice"));
    }

    #[test]
    fn zero_means_unlimited() {
        let l = AuthLimiter::new(0);
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..100 {
            l.failed(ip, "a");
        }
        assert!(l.allowed(ip, "a"));
        let c = ConnLimiter::new(0);
        let permits: Vec<_> = (0..1000).filter_map(|_| c.acquire(ip)).collect();
        assert_eq!(permits.len(), 1000);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 1.0, t0);
        assert!(b.try_take(1.0, t0) && b.try_take(1.0, t0) && b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0), "the burst is spent");
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(900)));
        assert!(
            b.try_take(1.0, t0 + Duration::from_millis(1000)),
            "one a second"
        );
        assert!(!b.is_full(t0 + Duration::from_secs(2)));
        // Refilling stops at the capacity.
        assert!(b.is_full(t0 + Duration::from_secs(100)));
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(3.0, later) && !b.try_take(1.0, later));
    }

    #[test]
    fn taking_on_credit_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5.0, t0);
        assert_eq!(b.take_or_wait(4.0, t0), Duration::ZERO);
        // 6 left; 16 more puts it 10 in debt: 2 s at 5 a second.
        let w = b.take_or_wait(16.0, t0);
        assert!((w.as_secs_f64() - 2.0).abs() < 1e-9, "{w:?}");
        // A time going backwards (another thread's earlier now) refills nothing.
        let earlier = t0.checked_sub(Duration::from_millis(1)).unwrap_or(t0);
        assert!(!b.try_take(1.0, earlier));
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(1999)));
        assert!(b.try_take(0.0, t0 + Duration::from_secs(2)));
        assert_eq!(
            b.take_or_wait(1.0, t0 + Duration::from_millis(2500)),
            Duration::ZERO
        );
    }
}
