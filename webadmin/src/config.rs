//! The web pod's keys in the configuration file: the `[web]` section, its
//! TOML shape (`serde`, unknown keys refused by name) and its bounds. The
//! defaults are [`HttpLimits::default`].

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use crate::HttpLimits;

/// The section's name at the top level of the file.
pub const SECTION: &str = "web";

/// `[web]`: bounds on what one HTTP client may cost (see [`HttpLimits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    pub header_bytes: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub tls_timeout_secs: Option<u64>,
    pub max_handshakes: Option<usize>,
    pub handshakes_per_address: Option<usize>,
    pub connections_per_address: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
}

impl WebFile {
    /// Validate every key over the defaults. An error starts with the key's
    /// name (`web.header_bytes: …`).
    pub fn into_limits(self) -> Result<HttpLimits, String> {
        let mut l = HttpLimits::default();
        let count =
            |key: &str, v: Option<usize>, range: RangeInclusive<usize>, slot: &mut usize| {
                bounded(key, v, &range).map(|v| {
                    if let Some(v) = v {
                        *slot = v;
                    }
                })
            };
        count(
            "header_bytes",
            self.header_bytes,
            8192..=1 << 20,
            &mut l.header_bytes,
        )?;
        count(
            "body_bytes",
            self.body_bytes,
            1024..=64 << 20,
            &mut l.body_bytes,
        )?;
        count(
            "max_handshakes",
            self.max_handshakes,
            1..=100_000,
            &mut l.max_handshakes,
        )?;
        count(
            "handshakes_per_address",
            self.handshakes_per_address,
            1..=100_000,
            &mut l.handshakes_per_address,
        )?;
        count(
            "connections_per_address",
            self.connections_per_address,
            1..=100_000,
            &mut l.connections_per_address,
        )?;
        count(
            "max_connections",
            self.max_connections,
            1..=1_000_000,
            &mut l.max_connections,
        )?;
        let secs = |key: &str, v: Option<u64>, max: u64, slot: &mut Duration| {
            bounded(key, v, &(1..=max)).map(|v| {
                if let Some(v) = v {
                    *slot = Duration::from_secs(v);
                }
            })
        };
        secs(
            "header_timeout_secs",
            self.header_timeout_secs,
            3600,
            &mut l.header_timeout,
        )?;
        secs(
            "tls_timeout_secs",
            self.tls_timeout_secs,
            600,
            &mut l.tls_timeout,
        )?;
        secs(
            "request_timeout_secs",
            self.request_timeout_secs,
            3600,
            &mut l.request_timeout,
        )?;
        Ok(l)
    }
}

fn bounded<T: PartialOrd + std::fmt::Display>(
    key: &str,
    v: Option<T>,
    range: &RangeInclusive<T>,
) -> Result<Option<T>, String> {
    match v {
        Some(v) if !range.contains(&v) => Err(format!(
            "{SECTION}.{key}: {v} is outside {}..={}",
            range.start(),
            range.end()
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_named() {
        let l = WebFile {
            header_bytes: Some(10_000),
            request_timeout_secs: Some(5),
            ..Default::default()
        }
        .into_limits()
        .expect("valid");
        assert_eq!(l.header_bytes, 10_000);
        assert_eq!(l.request_timeout, Duration::from_secs(5));
        assert_eq!(l.body_bytes, HttpLimits::default().body_bytes);
        let e = WebFile {
            header_bytes: Some(10),
            ..Default::default()
        }
        .into_limits()
        .unwrap_err();
        assert!(e.starts_with("web.header_bytes"), "{e}");
        let e = WebFile {
            tls_timeout_secs: Some(0),
            ..Default::default()
        }
        .into_limits()
        .unwrap_err();
        assert!(e.starts_with("web.tls_timeout_secs"), "{e}");
    }
}
