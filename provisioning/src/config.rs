//! The `[acme]` section of the configuration: its TOML shape (`serde`,
//! unknown keys refused by name), its defaults and its checks. One of the
//! settings the box can change itself (`kith settings set acme.enabled true`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The section's name at the top level of the file.
pub const SECTION: &str = "acme";

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[acme]` as written in a file; every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    pub enabled: Option<bool>,
    pub directory: Option<String>,
    pub email: Option<String>,
    pub challenge: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub dns_hook: Option<PathBuf>,
    pub dns_wait_secs: Option<u64>,
    pub dns_update_server: Option<String>,
    pub dns_update_zone: Option<String>,
    pub dns_update_key_name: Option<String>,
    pub dns_update_key_secret: Option<String>,
    pub dns_update_key_algorithm: Option<String>,
    pub retry_min_secs: Option<u64>,
}

/// DNS-01 through RFC 2136 dynamic updates signed with a TSIG key.
#[derive(Clone, PartialEq, Eq)]
pub struct DnsUpdate {
    /// `host:port` of the primary server (`192.0.2.53:53`).
    pub server: String,
    /// The zone the `_acme-challenge` records go in.
    pub zone: String,
    pub key_name: String,
    /// The key's secret (the base64 of the file decoded).
    pub key_secret: Vec<u8>,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub key_algorithm: String,
}

impl std::fmt::Debug for DnsUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsUpdate")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("key_algorithm", &self.key_algorithm)
            .finish_non_exhaustive()
    }
}

/// Which ACME challenge proves the box holds its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// DNS-01 when a DNS hook is configured, else HTTP-01 when the plain-HTTP
    /// listener is on, else TLS-ALPN-01.
    Auto,
    /// A file under `/.well-known/acme-challenge/` on port 80.
    Http01,
    /// A special certificate on port 443 (RFC 8737).
    TlsAlpn01,
    /// A TXT record `_acme-challenge.NAME`, set by the DNS hook.
    Dns01,
}

impl Challenge {
    /// The name used in the configuration and in `kith cert status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Auto => "auto",
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Dns01 => "dns-01",
        }
    }
}

/// The validated `[acme]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// Ask a CA for certificates at all (off: the self-signed certificate).
    pub enabled: bool,
    /// The CA's ACME directory URL.
    pub directory: String,
    /// Contact for the CA's expiry and policy mail.
    pub email: Option<String>,
    pub challenge: Challenge,
    /// Extra roots (PEM) to trust the directory's HTTPS with (private CAs, tests).
    pub ca_file: Option<PathBuf>,
    /// DNS-01: the command that sets and removes the TXT record.
    pub dns_hook: Option<PathBuf>,
    /// DNS-01: RFC 2136 updates (used when set; else the hook).
    pub dns_update: Option<DnsUpdate>,
    /// DNS-01: how long to wait after the hook before asking the CA to look.
    pub dns_wait: Duration,
    /// The first wait after a failed attempt; doubled each time, at most a day.
    pub retry_min: Duration,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            enabled: false,
            directory: LETS_ENCRYPT.into(),
            email: None,
            challenge: Challenge::Auto,
            ca_file: None,
            dns_hook: None,
            dns_update: None,
            dns_wait: Duration::from_secs(0),
            retry_min: Duration::from_secs(60),
        }
    }
}

impl AcmeFile {
    /// Validate every key over the defaults; an error names the key
    /// (`acme.challenge: …`).
    pub fn into_config(self) -> Result<AcmeConfig, String> {
        let mut c = AcmeConfig::default();
        if let Some(e) = self.enabled {
            c.enabled = e;
        }
        if let Some(d) = self.directory {
            if !d.starts_with("https://") {
                return Err(format!(
                    "acme.directory: {d:?} is not an https:// URL (Let's Encrypt's is {LETS_ENCRYPT})"
                ));
            }
            c.directory = d;
        }
        if let Some(m) = self.email {
            let ok = m.split_once('@').is_some_and(|(u, d)| {
                !u.is_empty() && d.contains('.') && !m.chars().any(char::is_whitespace)
            });
            if !ok {
                return Err(format!("acme.email: {m:?} is not a mail address"));
            }
            c.email = Some(m);
        }
        if let Some(ch) = self.challenge {
            c.challenge = match ch.as_str() {
                "auto" => Challenge::Auto,
                "http-01" => Challenge::Http01,
                "tls-alpn-01" => Challenge::TlsAlpn01,
                "dns-01" => Challenge::Dns01,
                other => {
                    return Err(format!(
                        "acme.challenge: {other:?} is not one of auto, http-01, tls-alpn-01, dns-01"
                    ))
                }
            };
        }
        c.ca_file = self.ca_file;
        c.dns_hook = self.dns_hook;
        c.dns_update = dns_update(
            self.dns_update_server,
            self.dns_update_zone,
            self.dns_update_key_name,
            self.dns_update_key_secret,
            self.dns_update_key_algorithm,
        )?;
        if c.challenge == Challenge::Dns01 && c.dns_hook.is_none() && c.dns_update.is_none() {
            return Err("acme.challenge: dns-01 needs acme.dns_hook (a command that sets the TXT record) or acme.dns_update_server (RFC 2136)".into());
        }
        if let Some(s) = self.dns_wait_secs {
            if s > 3600 {
                return Err(format!("acme.dns_wait_secs: {s} is more than 3600"));
            }
            c.dns_wait = Duration::from_secs(s);
        }
        if let Some(s) = self.retry_min_secs {
            if !(1..=86_400).contains(&s) {
                return Err(format!("acme.retry_min_secs: {s} is not within 1..=86400"));
            }
            c.retry_min = Duration::from_secs(s);
        }
        Ok(c)
    }
}

/// The RFC 2136 keys: all of server, zone, key name and secret, or none.
fn dns_update(
    server: Option<String>,
    zone: Option<String>,
    key_name: Option<String>,
    key_secret: Option<String>,
    algorithm: Option<String>,
) -> Result<Option<DnsUpdate>, String> {
    use base64::Engine;
    let Some(server) = server else {
        if zone.is_some() || key_name.is_some() || key_secret.is_some() {
            return Err("acme.dns_update_server: missing (the zone and key are set)".into());
        }
        return Ok(None);
    };
    if server.parse::<std::net::SocketAddr>().is_err() && !server.contains(':') {
        return Err(format!(
            "acme.dns_update_server: {server:?} is not host:port (like 192.0.2.53:53)"
        ));
    }
    let zone = zone.ok_or("acme.dns_update_zone: missing (the zone the TXT records go in)")?;
    let key_name = key_name.ok_or("acme.dns_update_key_name: missing (the TSIG key's name)")?;
    let secret =
        key_secret.ok_or("acme.dns_update_key_secret: missing (the TSIG key's base64 secret)")?;
    let key_secret = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| {
            "acme.dns_update_key_secret: not base64 (copy the secret from the key file)".to_string()
        })?;
    let key_algorithm = algorithm.unwrap_or_else(|| "hmac-sha256".into());
    if !matches!(
        key_algorithm.as_str(),
        "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
    ) {
        return Err(format!("acme.dns_update_key_algorithm: {key_algorithm:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512"));
    }
    Ok(Some(DnsUpdate {
        server,
        zone,
        key_name,
        key_secret,
        key_algorithm,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AcmeConfig, String> {
        let f: AcmeFile = toml::from_str(text).map_err(|e| e.to_string())?;
        f.into_config()
    }

    #[test]
    fn defaults_are_off_and_lets_encrypt() {
        let c = parse("").expect("empty");
        assert!(!c.enabled);
        assert_eq!(c.directory, LETS_ENCRYPT);
        assert_eq!(c.challenge, Challenge::Auto);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("challenge = \"dns\"", "acme.challenge"),
            ("directory = \"http://x\"", "acme.directory"),
            ("email = \"nobody\"", "acme.email"),
            ("challenge = \"dns-01\"", "acme.challenge"),
            ("retry_min_secs = 0", "acme.retry_min_secs"),
            ("dns_update_server = \"127.0.0.1:53\"", "acme.dns_update_zone"),
            ("dns_update_zone = \"home.example\"", "acme.dns_update_server"),
            (
                "dns_update_server = \"127.0.0.1:53\"\ndns_update_zone = \"x\"\ndns_update_key_name = \"k\"\ndns_update_key_secret = \"%%\"",
                "acme.dns_update_key_secret",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with(key), "{text}: {e}");
        }
        let e = parse("colour = 1").expect_err("unknown");
        assert!(e.contains("colour"), "{e}");
    }
}
