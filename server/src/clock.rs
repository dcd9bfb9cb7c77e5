//! Time before trust: whether the box's clock is known to be right.
//!
//! A Raspberry Pi has no battery-backed clock. After a power-off,
//! systemd-timesyncd starts the clock at the last time it saved, which is
//! behind by however long the box was off, until it reaches a time server
//! (it then creates `/run/systemd/timesync/synchronized`). Until that signal
//! — or the file named by `[time] sync_flag` — appears, time is *not
//! confirmed*, and Kith does not let that clock decide what cannot be undone:
//!
//! - a peer server's certificate is not refused as "not valid yet" (a clock
//!   behind makes new certificates look like they come from the future); its
//!   chain and names are still checked, at the first moment it is valid
//!   (`s2s/tls.rs`);
//! - nothing is deleted for its age: archive retention, expired uploads and
//!   expired browser sessions wait (`mam/retention.rs`, `upload/store.rs`, the
//!   web pod's sweep through [`crate::WebHandle::time_confirmed`]).
//!
//! Expiry checks of tokens and sessions keep using the clock: behind, it can
//! only make them last longer by the time the box was off, never end early.
//! Once confirmed, time stays confirmed until Kith stops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::config::TimeSync;

/// systemd-timesyncd's "synchronised at least once since boot" flag.
pub const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// How often the watcher looks for the signal while time is unconfirmed.
const POLL: Duration = Duration::from_secs(2);

/// The clock's standing: confirmed or not, and from where the signal comes.
#[derive(Debug)]
pub struct Clock {
    /// `None`: the clock is trusted from the start.
    flag: Option<PathBuf>,
    confirmed: AtomicBool,
    /// The wall clock and the monotonic clock at start: how far the wall
    /// clock moved by itself is told when time is confirmed.
    started: (SystemTime, Instant),
}

impl Clock {
    /// The clock as `[time] sync_flag` says to judge it.
    pub fn new(sync: &TimeSync) -> Self {
        let flag = match sync {
            TimeSync::Trusted => None,
            TimeSync::Flag(p) => Some(p.clone()),
            TimeSync::Auto => Path::new(TIMESYNCD_FLAG)
                .parent()
                .filter(|d| d.is_dir())
                .map(|_| PathBuf::from(TIMESYNCD_FLAG)),
        };
        Clock {
            confirmed: AtomicBool::new(flag.is_none()),
            flag,
            started: (SystemTime::now(), Instant::now()),
        }
    }

    /// Whether time is confirmed (a cheap check of the flag file until it is).
    pub fn confirmed(&self) -> bool {
        if self.confirmed.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.flag.as_deref().is_none_or(Path::exists);
        if now {
            self.confirmed.store(true, Ordering::Relaxed);
        }
        now
    }

    /// Say at start whether time is confirmed; if not, wait for the signal
    /// (returning early on shutdown) and say when it comes, with how far the
    /// clock moved.
    pub async fn watch(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.confirmed() {
            return;
        }
        let flag = self.flag.as_deref().unwrap_or(Path::new(""));
        tracing::warn!(
            flag = %flag.display(),
            "time not confirmed: the clock has not been synchronised yet; until it is, \
             peers' certificates are not refused as not yet valid, and nothing is deleted for its age"
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if self.confirmed() {
                tracing::info!(
                    flag = %flag.display(),
                    moved_secs = self.moved_secs(),
                    "time confirmed: the clock is synchronised"
                );
                return;
            }
        }
    }

    /// How many seconds the wall clock moved beyond the time that passed
    /// (positive: forward, as after a power-off).
    fn moved_secs(&self) -> i64 {
        let (wall, mono) = self.started;
        let expected = wall + mono.elapsed();
        match SystemTime::now().duration_since(expected) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(behind) => -(behind.duration().as_secs() as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_confirmed_by_its_flag_and_stays_confirmed() {
        let dir = std::env::temp_dir().join(format!("kith-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("made");
        let flag = dir.join("synchronized");
        let clock = Clock::new(&TimeSync::Flag(flag.clone()));
        assert!(!clock.confirmed());
        std::fs::write(&flag, b"").expect("flag");
        assert!(clock.confirmed());
        std::fs::remove_file(&flag).expect("removed");
        assert!(clock.confirmed(), "once confirmed, until kith stops");
        assert!(Clock::new(&TimeSync::Trusted).confirmed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auto_follows_timesyncd_only_where_it_runs() {
        let clock = Clock::new(&TimeSync::Auto);
        let runs = Path::new("/run/systemd/timesync").is_dir();
        assert_eq!(clock.flag.is_some(), runs);
        if !runs {
            assert!(clock.confirmed());
        }
    }
}
