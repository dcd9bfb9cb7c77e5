//! Why getting a certificate failed, said in one line a household admin can
//! act on: what is wrong and the fix. ACME problem documents (RFC 8555 §6.7)
//! are sorted into the few causes that happen at home.

use std::time::Duration;

/// The causes an admin can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The name's DNS does not lead to this box (no record, or another host answered).
    NotHere,
    /// The CA could not connect to the challenge port (80 or 443).
    Unreachable,
    /// The CA's rate limit was hit.
    RateLimited,
    /// A CAA record forbids this CA.
    Caa,
    /// The CA itself could not be reached.
    CaUnreachable,
    /// The DNS hook command failed.
    DnsHook,
    /// Anything else (the CA's own words are kept).
    Other,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    /// One line: what happened and the fix.
    pub line: String,
}

impl Failure {
    pub fn new(cause: Cause, line: impl Into<String>) -> Self {
        Failure {
            cause,
            line: line.into(),
        }
    }

    /// The least time to wait before the next attempt.
    pub fn floor(&self) -> Duration {
        match self.cause {
            // Let's Encrypt counts failed validations per hour.
            Cause::RateLimited => Duration::from_secs(3600),
            _ => Duration::ZERO,
        }
    }
}

/// Sort an ACME problem (`type`, `detail`) about `name` into a one-line failure.
/// `port` is the challenge's port (80 for HTTP-01, 443 for TLS-ALPN-01, none for DNS-01).
pub fn from_problem(name: &str, kind: &str, detail: &str, port: Option<u16>) -> Failure {
    let kind = kind
        .strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind);
    let port_text = port.map(|p| format!("port {p}")).unwrap_or("DNS".into());
    match kind {
        "rateLimited" => Failure::new(
            Cause::RateLimited,
            format!("the CA's rate limit is hit ({detail}); fix: nothing to do, Kith waits at least an hour and tries again (do not restart it to hurry)"),
        ),
        "caa" => Failure::new(
            Cause::Caa,
            format!("a CAA record in the DNS of {name} forbids this CA ({detail}); fix: add a CAA record allowing the CA (Let's Encrypt: 0 issue \"letsencrypt.org\") or remove the CAA records"),
        ),
        "dns" => Failure::new(
            Cause::NotHere,
            format!("the DNS name {name} does not point here ({detail}); fix: give {name} an A/AAAA record with this box's public address (or a CNAME to the domain)"),
        ),
        "connection" => Failure::new(
            Cause::Unreachable,
            format!("the CA could not reach this box on {port_text} for {name} ({detail}); fix: forward TCP {port_text} in the router to this box, or use another challenge (acme.challenge)"),
        ),
        "unauthorized" | "incorrectResponse" if port.is_none() => Failure::new(
            Cause::NotHere,
            format!("the CA did not find the right TXT record _acme-challenge.{name} ({detail}); fix: check the DNS hook (acme.dns_hook) sets it in the zone that serves {name}"),
        ),
        "unauthorized" | "incorrectResponse" => Failure::new(
            Cause::NotHere,
            format!("another machine answered for {name} on {port_text} ({detail}); fix: point {name}'s DNS at this box and forward {port_text} to it"),
        ),
        _ => Failure::new(
            Cause::Other,
            format!("the CA refused {name}: {detail} ({kind}); fix: see the detail, then `kith cert renew`"),
        ),
    }
}

/// Sort an error from the ACME client.
pub fn from_acme(
    name: &str,
    directory: &str,
    e: &instant_acme::Error,
    port: Option<u16>,
) -> Failure {
    match e {
        instant_acme::Error::Api(p) => from_problem(
            name,
            p.r#type.as_deref().unwrap_or(""),
            p.detail.as_deref().unwrap_or("no detail"),
            port,
        ),
        instant_acme::Error::Http(_) | instant_acme::Error::Hyper(_) | instant_acme::Error::Other(_) => {
            Failure::new(
                Cause::CaUnreachable,
                format!("cannot reach the CA at {directory} ({e}); fix: check the box's internet connection, or acme.directory and acme.ca_file"),
            )
        }
        _ => Failure::new(
            Cause::Other,
            format!("the ACME exchange with {directory} failed: {e}; fix: `kith cert renew` later, and report it if it stays"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_says_its_fix_in_one_line() {
        let cases = [
            (
                "urn:ietf:params:acme:error:rateLimited",
                Some(80),
                Cause::RateLimited,
                "tries again",
            ),
            (
                "urn:ietf:params:acme:error:caa",
                Some(80),
                Cause::Caa,
                "CAA record",
            ),
            (
                "urn:ietf:params:acme:error:dns",
                Some(80),
                Cause::NotHere,
                "does not point here",
            ),
            (
                "urn:ietf:params:acme:error:connection",
                Some(443),
                Cause::Unreachable,
                "forward TCP port 443",
            ),
            (
                "urn:ietf:params:acme:error:unauthorized",
                Some(80),
                Cause::NotHere,
                "another machine",
            ),
            (
                "urn:ietf:params:acme:error:unauthorized",
                None,
                Cause::NotHere,
                "TXT record",
            ),
            (
                "urn:ietf:params:acme:error:malformed",
                None,
                Cause::Other,
                "refused",
            ),
        ];
        for (kind, port, cause, words) in cases {
            let f = from_problem("home.example", kind, "x", port);
            assert_eq!(f.cause, cause, "{kind}");
            assert!(f.line.contains(words), "{kind}: {}", f.line);
            assert!(f.line.contains("fix:"), "{}", f.line);
            assert!(!f.line.contains('\n'));
        }
        assert!(
            from_problem("a", "urn:ietf:params:acme:error:rateLimited", "x", None).floor()
                >= Duration::from_secs(3600)
        );
    }
}
