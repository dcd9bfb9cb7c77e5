//! The configuration file: TOML text through the appliance's own
//! `config::parse` (compiled in from `appliance/src/config.rs`, which is a
//! module of the `kith` binary). Any text gives a configuration or an error
//! naming the key, never a panic; every time a valid configuration names can
//! be added to the clock.
//!
//! Input: the file's text.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../appliance/src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text) {
        Ok(c) => {
            assert!(!c.domain.is_empty());
            assert!(c.listen.c2s.is_some() || c.listen.c2s_tls.is_some());
            assert!(c.scram_iterations >= 4096);
            // The server adds these to the clock: they must not overflow it.
            let now = std::time::Instant::now();
            for d in [
                c.limits.auth_timeout,
                c.limits.sm_resume_timeout,
                c.limits.sm_ack_request_interval,
                c.archive.prune_interval,
                c.push.min_interval,
                c.ping.idle,
                c.ping.timeout,
                c.upload.retention,
                c.upload.slot_lifetime,
                c.s2s.idle_timeout,
                c.s2s.connect_timeout,
                c.fast_token_lifetime,
            ] {
                assert!(now.checked_add(d).is_some(), "{d:?} overflows the clock");
                assert!(d.as_secs() < 1 << 40, "{d:?} is not a sane time");
            }
        }
        Err(e) => assert!(!e.is_empty(), "an empty error for {text:?}"),
    }
});
