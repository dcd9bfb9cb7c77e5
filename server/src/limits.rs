//! What anonymous peers may cost: connections per address, the bytes buffered for
//! unauthenticated streams across all of them, login attempts, and the token
//! bucket other rate limits are made of.
//!
//! An "address" is an IPv4 address or an IPv6 /64 ([`addr_key`]): one household or
//! one attacker gets a whole /64 from its provider, so counting single IPv6
//! addresses would give an attacker 2^64 slots.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (plain counters).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key limits count under: IPv4 addresses as they are (IPv4-mapped IPv6
/// addresses as IPv4), IPv6 addresses by their /64 prefix.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts open connections per address ([`addr_key`]).
#[derive(Debug, Default)]
pub struct ConnLimiter {
    max: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held while a connection is open; releases its slot on drop.
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: IpAddr,
}

impl ConnLimiter {
    /// A limiter allowing `max` connections per address (0: unlimited).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max: AtomicUsize::new(max),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Change the limit (settings changed while running); open connections stay.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Take a slot for `ip`, or `None` when its address already has `max` connections.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let key = addr_key(ip);
        let mut open = lock(&self.open);
        let n = open.entry(key).or_insert(0);
        let max = self.max.load(Ordering::Relaxed);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            limiter: self.clone(),
            key,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// One budget of bytes shared by many holders: the memory that unauthenticated
/// peers together may make the server buffer. Each stream holds a [`Charge`]
/// for what it buffers now; when the sum would pass the budget, the stream
/// asking for more is refused (and closed), whoever holds the rest.
#[derive(Debug)]
pub struct ByteBudget {
    max: AtomicUsize,
    used: AtomicUsize,
}

impl ByteBudget {
    /// A budget of `max` bytes (0: unlimited).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            max: AtomicUsize::new(max),
            used: AtomicUsize::new(0),
        })
    }

    /// Change the budget (settings changed while running); charges held stay.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Bytes charged right now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A new charge of zero bytes against this budget.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// One holder's share of a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl Charge {
    /// Hold `bytes` from now on (more or less than before). `false` when growing
    /// to `bytes` would pass the budget; the charge then keeps what it held.
    pub fn set(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            self.budget
                .used
                .fetch_sub(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
            return true;
        }
        let more = bytes - self.held;
        let before = self.budget.used.fetch_add(more, Ordering::Relaxed);
        let max = self.budget.max.load(Ordering::Relaxed);
        if max != 0 && before + more > max {
            self.budget.used.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.held = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// Login attempts per minute, per address and per account.
///
/// An attempt counts when it *starts* ([`AuthLimiter::begin`]), so parallel
/// connections cannot run more guesses than the limit before the first one
/// fails; a successful login gives its count back. The per-account count
/// applies only to addresses the account has not logged in from lately and to
/// password logins: the owner's devices (a known address, or a FAST token,
/// which no one can guess) still get in while someone elsewhere guesses the
/// password. The per-address count applies to everyone.
#[derive(Debug)]
pub struct AuthLimiter {
    per_minute: u32,
    window: Duration,
    by_addr: Mutex<HashMap<IpAddr, Counter>>,
    by_account: Mutex<HashMap<String, Counter>>,
    /// Addresses each account logged in from lately (at most [`KNOWN_PER_ACCOUNT`]).
    known: Mutex<HashMap<String, Vec<(IpAddr, Instant)>>>,
}

/// Attempts under one key (an address or an account) in the current window.
#[derive(Debug)]
struct Counter {
    start: Instant,
    /// Attempts counted: failed, abandoned or still in flight.
    counted: u32,
    /// Of those, the ones still in flight (not yet failed or succeeded).
    in_flight: u32,
}

/// How long an attempt over the limit waits for attempts in flight to settle
/// before it is refused: a household's devices logging in at once (after a
/// power cut, behind one NAT) succeed and give their counts back, so the ones
/// waiting get in; an attacker's parallel guesses fail, so the waiting ones
/// are refused.
const WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10);

/// Entries kept before old windows are swept.
const SWEEP_AT: usize = 10_000;
/// Addresses remembered per account as "the owner's".
const KNOWN_PER_ACCOUNT: usize = 8;
/// How long a successful login makes its address known to the account.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many attempts from this address.
    Address,
    /// Too many attempts on this account from addresses it does not know.
    Account,
}

/// How an attempt proves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A password (PLAIN, SCRAM): guessable, so the per-account limit applies.
    Password,
    /// A FAST token: not guessable, so only the per-address limit applies.
    Token,
}

/// A login attempt in progress. It stays counted unless [`Attempt::succeeded`]
/// is called: a failed, abandoned or cut-off attempt counts alike.
#[must_use = "an attempt that is dropped counts as failed"]
pub struct Attempt<'a> {
    limiter: &'a AuthLimiter,
    addr: IpAddr,
    account: String,
    counted_addr: bool,
    counted_account: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let l = self.limiter;
        if self.counted_addr {
            settle(&l.by_addr, &self.addr);
        }
        if self.counted_account {
            settle(&l.by_account, &self.account);
        }
    }
}

impl Attempt<'_> {
    /// The login succeeded: give the count back and remember the address.
    pub fn succeeded(self) {
        let l = self.limiter;
        if !self.counted_addr {
            return;
        }
        refund(&l.by_addr, &self.addr);
        if self.counted_account {
            refund(&l.by_account, &self.account);
        }
        let mut known = lock(&l.known);
        if known.len() >= SWEEP_AT {
            known.retain(|_, v| {
                v.retain(|(_, at)| at.elapsed() < KNOWN_FOR);
                !v.is_empty()
            });
        }
        let list = known.entry(self.account.clone()).or_default();
        list.retain(|(a, _)| *a != self.addr);
        if list.len() >= KNOWN_PER_ACCOUNT {
            list.remove(0);
        }
        list.push((self.addr, Instant::now()));
    }
}

/// A success: the attempt no longer counts.
fn refund<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Counter>>, key: &K) {
    if let Some(e) = lock(map).get_mut(key) {
        e.counted = e.counted.saturating_sub(1);
    }
}

/// The attempt is over (it succeeded or failed): no longer in flight.
fn settle<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Counter>>, key: &K) {
    if let Some(e) = lock(map).get_mut(key) {
        e.in_flight = e.in_flight.saturating_sub(1);
    }
}

impl AuthLimiter {
    /// `per_minute` attempts allowed (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self::with_window(per_minute, Duration::from_secs(60))
    }

    fn with_window(per_minute: u32, window: Duration) -> Self {
        AuthLimiter {
            per_minute,
            window,
            by_addr: Mutex::new(HashMap::new()),
            by_account: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` logged in to `account` lately.
    fn is_known(&self, account: &str, addr: IpAddr) -> bool {
        lock(&self.known).get(account).is_some_and(|v| {
            v.iter()
                .any(|(a, at)| *a == addr && at.elapsed() < KNOWN_FOR)
        })
    }

    /// Count one more attempt under `key` unless it is at the limit; at the
    /// limit, say how many of the counted ones are still in flight.
    fn take<K: std::hash::Hash + Eq>(
        &self,
        map: &Mutex<HashMap<K, Counter>>,
        key: K,
    ) -> Result<(), u32> {
        let mut map = lock(map);
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, c| c.start.elapsed() < window || c.in_flight > 0);
        }
        let e = map.entry(key).or_insert(Counter {
            start: Instant::now(),
            counted: 0,
            in_flight: 0,
        });
        if e.start.elapsed() >= self.window {
            // A new window: what is still in flight counts in it.
            e.start = Instant::now();
            e.counted = e.in_flight;
        }
        if e.counted >= self.per_minute {
            return Err(e.in_flight);
        }
        e.counted += 1;
        e.in_flight += 1;
        Ok(())
    }

    /// Start an attempt from `ip` on `account`, counting it now. Over the
    /// limit, it waits (at most [`WAIT_FOR_IN_FLIGHT`]) while attempts of
    /// the same address or account are still in flight, and is refused once
    /// none is.
    pub async fn begin(
        &self,
        ip: IpAddr,
        account: &str,
        proof: Proof,
    ) -> Result<Attempt<'_>, Throttled> {
        let deadline = Instant::now() + WAIT_FOR_IN_FLIGHT;
        loop {
            match self.try_begin(ip, account, proof) {
                Ok(a) => return Ok(a),
                Err((_, in_flight)) if in_flight > 0 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((t, _)) => return Err(t),
            }
        }
    }

    /// [`AuthLimiter::begin`] without waiting: over the limit, the reason and
    /// how many attempts under that limit are still in flight.
    fn try_begin(
        &self,
        ip: IpAddr,
        account: &str,
        proof: Proof,
    ) -> Result<Attempt<'_>, (Throttled, u32)> {
        let addr = addr_key(ip);
        let mut attempt = Attempt {
            limiter: self,
            addr,
            account: account.to_string(),
            counted_addr: false,
            counted_account: false,
        };
        if self.per_minute == 0 {
            return Ok(attempt);
        }
        let by_account = proof == Proof::Password && !self.is_known(account, addr);
        self.take(&self.by_addr, addr)
            .map_err(|n| (Throttled::Address, n))?;
        attempt.counted_addr = true;
        if by_account {
            if let Err(n) = self.take(&self.by_account, account.to_string()) {
                // Not counted after all: give the address's count back.
                refund(&self.by_addr, &addr);
                return Err((Throttled::Account, n));
            }
            attempt.counted_account = true;
        }
        Ok(attempt)
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
    fn limits_change_while_connections_are_open() {
        let l = ConnLimiter::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let _a = l.acquire(ip).expect("first");
        let _b = l.acquire(ip).expect("second");
        l.set_max(3);
        let c = l.acquire(ip).expect("a third under the new limit");
        l.set_max(1);
        drop(c);
        assert!(
            l.acquire(ip).is_none(),
            "two are still open, over the new limit"
        );
        let budget = ByteBudget::new(10);
        let mut charge = budget.charge();
        assert!(!charge.set(20));
        budget.set_max(30);
        assert!(charge.set(20));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        let _p = (l.acquire(a).expect("one"), l.acquire(b).expect("two"));
        assert!(l.acquire(a).is_none(), "the /64 is full");
        assert!(l.acquire(other).is_some(), "the next /64 is not");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("v6");
        assert_eq!(addr_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[test]
    fn attempts_count_when_they_start_so_parallel_ones_cannot_race() {
        let l = AuthLimiter::with_window(3, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        // Three attempts in flight at once (none has failed yet): the fourth waits.
        let held: Vec<_> = (0..3)
            .map(|_| {
                l.try_begin(ip, "alice", Proof::Password)
                    .expect("within the limit")
            })
            .collect();
        assert_eq!(
            l.try_begin(ip, "alice", Proof::Password).err(),
            Some((Throttled::Address, 3)),
            "refused, with three in flight to wait for"
        );
        drop(held);
        assert!(
            l.try_begin(ip, "bob", Proof::Password).is_err(),
            "failures stay counted"
        );
    }

    #[tokio::test]
    async fn a_burst_of_real_logins_from_one_address_waits_its_turn() {
        // Sixteen devices behind one NAT log in at once (limit 5): those over
        // the limit wait for the ones in flight, which succeed.
        let l = Arc::new(AuthLimiter::with_window(5, Duration::from_secs(60)));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let logins = (0..16).map(|i| {
            let l = l.clone();
            tokio::spawn(async move {
                let a = l
                    .begin(ip, &format!("user{i}"), Proof::Password)
                    .await
                    .map_err(|t| format!("user{i}: {t:?}"))?;
                tokio::time::sleep(Duration::from_millis(30)).await;
                a.succeeded();
                Ok::<_, String>(())
            })
        });
        for j in logins.collect::<Vec<_>>() {
            assert_eq!(j.await.expect("joined"), Ok(()));
        }
        // Parallel wrong guesses: five are tried, the rest refused once those fail.
        let guesses = (0..20).map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                match l.begin(ip, "alice", Proof::Password).await {
                    Ok(a) => {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        drop(a);
                        true
                    }
                    Err(_) => false,
                }
            })
        });
        let mut tried = 0;
        for j in guesses.collect::<Vec<_>>() {
            tried += usize::from(j.await.expect("joined"));
        }
        assert_eq!(tried, 5);
    }

    #[test]
    fn success_gives_the_count_back() {
        let l = AuthLimiter::with_window(2, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..10 {
            l.try_begin(ip, "alice", Proof::Password)
                .expect("never throttled")
                .succeeded();
        }
    }

    #[test]
    fn guessing_from_elsewhere_does_not_lock_out_the_owner() {
        let l = AuthLimiter::with_window(2, Duration::from_secs(60));
        let home: IpAddr = [192, 0, 2, 1].into();
        l.try_begin(home, "alice", Proof::Password)
            .expect("ok")
            .succeeded();
        // An attacker spreads guesses over many addresses.
        for i in 0..2u8 {
            drop(
                l.try_begin([198, 51, 100, i].into(), "alice", Proof::Password)
                    .expect("counted"),
            );
        }
        assert_eq!(
            l.try_begin([198, 51, 100, 9].into(), "alice", Proof::Password)
                .err(),
            Some((Throttled::Account, 0)),
            "the account is throttled for unknown addresses"
        );
        assert!(
            l.try_begin(home, "alice", Proof::Password).is_ok(),
            "the owner's address gets in"
        );
        assert!(
            l.try_begin([203, 0, 113, 5].into(), "alice", Proof::Token)
                .is_ok(),
            "a device with a FAST token gets in from anywhere"
        );
    }

    #[test]
    fn windows_expire() {
        let l = AuthLimiter::with_window(1, Duration::from_millis(50));
        let ip: IpAddr = [127, 0, 0, 1].into();
        drop(l.try_begin(ip, "a", Proof::Password).expect("first"));
        assert!(l.try_begin(ip, "a", Proof::Password).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.try_begin(ip, "a", Proof::Password).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = AuthLimiter::new(0);
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..100 {
            drop(l.try_begin(ip, "a", Proof::Password).expect("unlimited"));
        }
        let c = ConnLimiter::new(0);
        let permits: Vec<_> = (0..1000).filter_map(|_| c.acquire(ip)).collect();
        assert_eq!(permits.len(), 1000);
    }

    #[test]
    fn a_byte_budget_is_shared_and_given_back() {
        let b = ByteBudget::new(100);
        let mut x = b.charge();
        let mut y = b.charge();
        assert!(x.set(60));
        assert!(!y.set(50), "60 + 50 is over 100");
        assert!(y.set(40));
        assert_eq!(b.used(), 100);
        assert!(x.set(10), "shrinking always works");
        assert!(y.set(90));
        drop(x);
        drop(y);
        assert_eq!(b.used(), 0);
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
