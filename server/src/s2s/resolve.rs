//! Finding a remote domain's XMPP server: `[s2s.hosts]` first, then DNS SRV
//! (`_xmpps-server._tcp` for Direct TLS, `_xmpp-server._tcp` for STARTTLS,
//! by priority), then the domain's own A/AAAA records on port 5269 (RFC 6120
//! §3.2). Uses the system's resolver configuration (`/etc/resolv.conf`).

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;

/// One place to try.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
}

/// Every candidate, in the order to try them; empty when nothing resolves.
pub async fn targets(cfg: &crate::config::S2s, domain: &str) -> Vec<Target> {
    if let Some(addr) = cfg.hosts.get(domain) {
        return vec![Target {
            addr: *addr,
            direct_tls: false,
        }];
    }
    let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(target: "kith::federation", error = %e, "cannot set up the DNS resolver");
            return Vec::new();
        }
    };
    // Sorted by priority; at equal priority Direct TLS first (no plaintext
    // round trip before TLS), then by weight.
    let mut srv: Vec<(u16, bool, u16, String, u16, bool)> = Vec::new();
    for (service, direct) in [("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)] {
        if let Ok(found) = resolver.srv_lookup(format!("{service}.{domain}.")).await {
            for r in found.answers() {
                if let hickory_resolver::proto::rr::RData::SRV(s) = &r.data {
                    let target = s.target.to_utf8();
                    // "." means "no such service here" (RFC 2782).
                    if target == "." {
                        continue;
                    }
                    srv.push((
                        s.priority,
                        !direct,
                        u16::MAX - s.weight,
                        target,
                        s.port,
                        direct,
                    ));
                }
            }
        }
    }
    srv.sort();
    let mut out = Vec::new();
    for (_, _, _, host, port, direct_tls) in srv {
        if let Ok(ips) = resolver.lookup_ip(host.as_str()).await {
            for ip in ips.iter() {
                out.push(Target {
                    addr: SocketAddr::new(ip, port),
                    direct_tls,
                });
            }
        }
    }
    if out.is_empty() {
        if let Ok(ips) = resolver.lookup_ip(format!("{domain}.")).await {
            for ip in ips.iter() {
                out.push(Target {
                    addr: SocketAddr::new(ip, 5269),
                    direct_tls: false,
                });
            }
        }
    }
    out
}
