//! TLS for XMPP and HTTPS: the certificate store (one swappable resolver that
//! every listener shares, c2s, s2s and HTTPS), the rustls server
//! configurations (ring provider, TLS 1.2+), the certificate from PEM files or
//! a self-signed one generated once into the data directory (valid for the
//! domain, its subdomains and the group chat service's domain), and what SASL
//! channel binding needs from a finished handshake.
//!
//! The store is what certificate provisioning (`kith-provisioning`) feeds: a
//! new chain and key take effect for the next handshake on every listener,
//! open sessions keep theirs, and TLS-ALPN-01 (RFC 8737) validation
//! handshakes are answered with a challenge certificate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::Config;

/// ALPN protocol id for Direct TLS client connections (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// ALPN protocol id of HTTP/1.1 on the web pod's HTTPS listener.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN protocol id of HTTP/2 on the web pod's HTTPS listener (preferred:
/// each open tab's event stream would otherwise hold one of the browser's six
/// HTTP/1.1 connections).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of ACME TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The certificate in use and what is derived from it once.
struct Current {
    key: Arc<rustls::sign::CertifiedKey>,
    /// `tls-server-end-point` binding of the leaf (RFC 5929).
    end_point: Arc<Vec<u8>>,
}

/// The certificate store: the chain and key every listener presents,
/// replaceable while the server runs, and the TLS-ALPN-01 challenge
/// certificates being validated.
pub struct CertStore {
    current: RwLock<Arc<Current>>,
    /// TLS-ALPN-01 challenge certificates by (lower-case) server name.
    challenges: Mutex<HashMap<String, Arc<rustls::sign::CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls signing pair from a DER chain and a DER key, checked to match.
/// (A TLS-ALPN-01 certificate is not checked: its critical acmeIdentifier
/// extension is unknown to the certificate parser, and no client trusts it.)
fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    check: bool,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::Config("the chain holds no certificate".into()));
    }
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    if check {
        certified
            .keys_match()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(certified))
}

impl CertStore {
    fn new(key: Arc<rustls::sign::CertifiedKey>) -> Self {
        CertStore {
            current: RwLock::new(Arc::new(Current::of(key))),
            challenges: Mutex::new(HashMap::new()),
        }
    }

    fn current(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put a new chain (leaf first) and key in force for every new handshake
    /// (c2s, s2s, HTTPS). Open connections keep the certificate they have.
    /// A chain and key that do not match are refused; the old pair stays.
    pub fn install_pem(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Config(format!("the chain is not PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Config(format!("the key is not PEM: {e}")))?;
        let new = Arc::new(Current::of(certified(certs, key, true)?));
        match self.current.write() {
            Ok(mut c) => *c = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    /// The chain in use, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().key.cert.clone()
    }

    /// `tls-server-end-point` of the certificate in use. Read right after a
    /// handshake: a certificate swapped in the instant between that handshake
    /// and this read gives the new certificate's hash, and that one -PLUS
    /// login fails (the client tries again on a new connection).
    pub fn server_end_point(&self) -> Arc<Vec<u8>> {
        self.current().end_point.clone()
    }

    /// Answer TLS-ALPN-01 handshakes for `name` with this certificate (DER)
    /// and key (PKCS#8 DER) until [`CertStore::clear_challenge`].
    pub fn set_challenge(&self, name: &str, cert: Vec<u8>, key: Vec<u8>) -> Result<(), TlsError> {
        let key = PrivateKeyDer::Pkcs8(key.into());
        let certified = certified(vec![CertificateDer::from(cert)], key, false)?;
        if let Ok(mut map) = self.challenges.lock() {
            map.insert(name.to_ascii_lowercase(), certified);
        }
        Ok(())
    }

    /// Stop answering TLS-ALPN-01 handshakes for `name`.
    pub fn clear_challenge(&self, name: &str) {
        if let Ok(mut map) = self.challenges.lock() {
            map.remove(&name.to_ascii_lowercase());
        }
    }
}

impl Current {
    fn of(key: Arc<rustls::sign::CertifiedKey>) -> Self {
        let end_point = key
            .cert
            .first()
            .map(|leaf| server_end_point(leaf))
            .unwrap_or_default();
        Current {
            key,
            end_point: Arc::new(end_point),
        }
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ALPN_ACME_TLS));
        if acme {
            // RFC 8737 §3: only the challenge certificate, and only for a
            // name being validated; any other acme-tls/1 handshake fails.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.lock().ok()?.get(&name).cloned();
        }
        Some(self.current().key.clone())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls configurations for STARTTLS, Direct TLS and HTTPS, all on one
/// certificate store.
#[derive(Clone)]
pub struct TlsContext {
    /// For STARTTLS, no ALPN required.
    pub starttls: Arc<ServerConfig>,
    /// For Direct TLS: ALPN `xmpp-client` offered.
    pub direct: Arc<ServerConfig>,
    /// For the web pod's HTTPS listener: ALPN `h2` and `http/1.1`. The same certificate
    /// resolver as XMPP, so a new certificate is swapped in at one place.
    pub https: Arc<ServerConfig>,
    /// The certificate every listener presents, replaceable while running;
    /// `tls-server-end-point` is hashed once per certificate there.
    pub store: Arc<CertStore>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: String },
    #[error("certificate and key do not work together: {0}")]
    Config(String),
}

impl TlsContext {
    /// Load `[tls]` from the config, or generate/reuse the self-signed pair.
    pub fn load(config: &Config) -> Result<Self, TlsError> {
        let (cert_path, key_path) = match &config.tls {
            Some(files) => (files.cert.clone(), files.key.clone()),
            None => {
                let dir = config.data_dir.join("tls");
                let cert = dir.join("cert.pem");
                let key = dir.join("key.pem");
                // `names` records what the certificate was made for: when the
                // domain or the group chat service's name changes, a new one
                // is made. (A certificate from before `names` existed is kept.)
                let names = certificate_names(config);
                let wanted = names.join("\n") + "\n";
                let names_file = dir.join("names");
                let stale = std::fs::read_to_string(&names_file).is_ok_and(|n| n != wanted);
                let mut make = stale || !cert.exists() || !key.exists();
                // Present is not enough: a pair that does not load (an empty
                // or torn file after a power cut on an older Kith, a damaged
                // card) is made again, with a log line saying so.
                if !make {
                    if let Err(e) = Self::from_files(&cert, &key) {
                        tracing::warn!(
                            dir = %dir.display(),
                            "the self-signed certificate or its key is damaged ({e}); making a new pair"
                        );
                        make = true;
                    }
                }
                if make {
                    generate_self_signed(&config.domain, &names, &dir, &cert, &key)?;
                }
                if stale || !names_file.exists() {
                    crate::files::write_atomic(&names_file, wanted.as_bytes()).map_err(|e| {
                        TlsError::Write {
                            path: names_file.display().to_string(),
                            err: e.to_string(),
                        }
                    })?;
                }
                (cert, key)
            }
        };
        Self::from_files(&cert_path, &key_path)
    }

    /// Build from a PEM chain and a PEM key.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let read_err = |p: &Path, e: &dyn std::fmt::Display| TlsError::Read {
            path: p.display().to_string(),
            err: e.to_string(),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| read_err(cert_path, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(cert_path, &e))?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| read_err(key_path, &e))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_path.display().to_string(),
            });
        }
        let store = Arc::new(CertStore::new(certified(certs, key, true)?));
        // One resolver serves every listener (XMPP and HTTPS).
        let resolver: Arc<dyn rustls::server::ResolvesServerCert> = store.clone();
        let build = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
            let mut cfg = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            // Tickets would let a resumed session skip the certificate; XMPP
            // sessions are long-lived, so keep the server simple and stateless.
            cfg.send_tls13_tickets = 0;
            Ok(Arc::new(cfg))
        };
        Ok(TlsContext {
            starttls: build(&[])?,
            direct: build(&[ALPN_XMPP_CLIENT])?,
            // TLS-ALPN-01 validation comes to 443, the HTTPS listener.
            https: build(&[ALPN_H2, ALPN_HTTP1, ALPN_ACME_TLS])?,
            store,
        })
    }
}

/// The names Kith's certificate must be valid for: the domain, its
/// subdomains, and the group chat service's domain by name (other servers
/// check it when their users join rooms, and `[muc] domain` may be outside
/// the domain). The service's default is `muc::domain`'s.
pub fn certificate_names(config: &Config) -> Vec<String> {
    let domain = &config.domain;
    let mut names = vec![domain.clone(), format!("*.{domain}")];
    if config.muc.enabled {
        let muc = config
            .muc
            .domain
            .clone()
            .unwrap_or_else(|| format!("groups.{domain}"));
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&muc)) {
            names.push(muc);
        }
    }
    names
}

/// Generate a self-signed certificate for `names` (`domain` first) into `dir`.
fn generate_self_signed(
    domain: &str,
    names: &[String],
    dir: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), TlsError> {
    let signed = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let write_err = |p: &Path, e: std::io::Error| TlsError::Write {
        path: p.display().to_string(),
        err: e.to_string(),
    };
    crate::files::private_dir(dir).map_err(|e| write_err(dir, e))?;
    crate::files::write_atomic(key, signed.signing_key.serialize_pem().as_bytes())
        .map_err(|e| write_err(key, e))?;
    crate::files::write_atomic(cert, signed.cert.pem().as_bytes())
        .map_err(|e| write_err(cert, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate for {domain}");
    Ok(())
}

/// Channel-binding data of an established TLS connection (RFC 9266, RFC 5929).
#[derive(Debug, Clone, Default)]
pub struct ChannelBindings {
    /// `tls-exporter` (RFC 9266): 32 bytes of keying material.
    pub exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` (RFC 5929): hash of the server certificate.
    pub server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// The bindings of a server-side connection; `server_end_point` is the
    /// certificate's precomputed hash ([`TlsContext::server_end_point`]).
    pub fn of(conn: &rustls::ServerConnection, server_end_point: &[u8]) -> Self {
        let exporter = conn
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok();
        ChannelBindings {
            exporter,
            server_end_point: Some(server_end_point.to_vec()),
        }
    }
}

/// RFC 5929 §4.1: the certificate's signature hash, with MD5/SHA-1 upgraded to
/// SHA-256. Kith's certificates are ECDSA/RSA with SHA-256 or better; SHA-384 and
/// SHA-512 signatures are recognised from their algorithm OIDs.
pub fn server_end_point(leaf: &[u8]) -> Vec<u8> {
    // OIDs (DER content bytes) of sha384/sha512 signature algorithms.
    const SHA384_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03], // ecdsa-with-SHA384
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSA
    ];
    const SHA512_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    ];
    // The signatureAlgorithm sits after tbsCertificate, near the end of the DER.
    let tail = &leaf[leaf.len().saturating_sub(600)..];
    let has = |oid: &[u8]| tail.windows(oid.len()).any(|w| w == oid);
    let alg = if SHA512_OIDS.iter().any(|o| has(o)) {
        &ring::digest::SHA512
    } else if SHA384_OIDS.iter().any(|o| has(o)) {
        &ring::digest::SHA384
    } else {
        &ring::digest::SHA256
    };
    ring::digest::digest(alg, leaf).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_covers_the_group_chat_service() {
        let mut c = Config::new("home.example", "/nonexistent");
        assert_eq!(
            certificate_names(&c),
            ["home.example", "*.home.example", "groups.home.example"]
        );
        c.muc.domain = Some("rooms.other.example".into());
        assert_eq!(certificate_names(&c)[2], "rooms.other.example");
        c.muc.enabled = false;
        assert_eq!(certificate_names(&c).len(), 2);
    }

    fn pem_pair(name: &str) -> (String, String) {
        let signed = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        (signed.cert.pem(), signed.signing_key.serialize_pem())
    }

    #[test]
    fn a_new_certificate_replaces_the_old_and_a_broken_one_does_not() {
        let dir = std::env::temp_dir().join(format!("kith-tls-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ctx = TlsContext::load(&Config::new("home.example", &dir)).expect("made");
        let first = (ctx.store.chain(), ctx.store.server_end_point());
        let (cert, key) = pem_pair("home.example");
        ctx.store
            .install_pem(cert.as_bytes(), key.as_bytes())
            .expect("installed");
        let second = ctx.store.chain();
        assert_ne!(second, first.0);
        assert_ne!(ctx.store.server_end_point(), first.1, "the binding follows");
        assert_eq!(*ctx.store.server_end_point(), server_end_point(&second[0]));
        // A key of another certificate: refused, the installed pair stays.
        let (_, other_key) = pem_pair("home.example");
        assert!(ctx
            .store
            .install_pem(cert.as_bytes(), other_key.as_bytes())
            .is_err());
        assert!(ctx.store.install_pem(b"garbage", key.as_bytes()).is_err());
        assert_eq!(ctx.store.chain(), second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_self_signed_certificate_follows_the_domain() {
        let dir = std::env::temp_dir().join(format!("kith-tls-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cert = || std::fs::read(dir.join("tls/cert.pem")).expect("cert");
        TlsContext::load(&Config::new("kith.local", &dir)).expect("made");
        let first = cert();
        TlsContext::load(&Config::new("kith.local", &dir)).expect("kept");
        assert_eq!(cert(), first, "the same names keep the certificate");
        TlsContext::load(&Config::new("family.example", &dir)).expect("made again");
        assert_ne!(cert(), first);
        let names = std::fs::read_to_string(dir.join("tls/names")).expect("names");
        assert!(names.starts_with("family.example\n"), "{names}");
        // A certificate from before `names` existed is kept, and its names written.
        std::fs::remove_file(dir.join("tls/names")).expect("removed");
        let second = cert();
        TlsContext::load(&Config::new("other.example", &dir)).expect("kept");
        assert_eq!(cert(), second);
        assert!(dir.join("tls/names").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_self_signed_pair_is_made_again() {
        let dir = std::env::temp_dir().join(format!("kith-tls-damaged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config::new("kith.local", &dir);
        let (cert, key) = (dir.join("tls/cert.pem"), dir.join("tls/key.pem"));
        TlsContext::load(&config).expect("made");
        let good_key = std::fs::read(&key).expect("key");
        let half = &good_key[..good_key.len() / 2];
        let damages: [(&Path, &[u8]); 4] = [
            (&cert, b""),
            (&cert, b"-----BEGIN CERTIFICATE-----\nAAAA\n"),
            (&key, half),
            (&key, b"\0\0\0\0"),
        ];
        for (file, bytes) in damages {
            std::fs::write(file, bytes).expect("damaged");
            TlsContext::load(&config).expect("made again");
            TlsContext::from_files(&cert, &key).expect("a working pair");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
