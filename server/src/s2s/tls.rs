//! TLS for server-to-server streams: which certificates Kith trusts (system
//! roots plus `[s2s] ca_file`), the rustls configurations for both directions,
//! and the check that a peer's certificate is valid for the domain it claims.
//!
//! Both sides present their certificate: on incoming streams Kith asks for the
//! peer's certificate without requiring it at the handshake (a peer without one
//! can still be refused with a clear XMPP error afterwards), and checks it
//! against the claimed domain once the stream header names that domain.
//!
//! While the box's time is not confirmed (`clock.rs`), a certificate is not
//! refused for being not yet valid: it is checked, chain and names, at the
//! first moment it is valid.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::clock::Clock;
use crate::config::Config;
use crate::tls::{CertStore, TlsError};

/// ALPN protocol id for Direct TLS server connections (XEP-0368).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// The s2s TLS material, built once at start-up.
pub struct S2sTls {
    /// Incoming STARTTLS (asks for the peer's certificate).
    pub server: Arc<ServerConfig>,
    /// Incoming Direct TLS (ALPN `xmpp-server`).
    pub server_direct: Arc<ServerConfig>,
    /// Outgoing, verifying the peer's certificate, presenting ours.
    pub client: Arc<ClientConfig>,
    /// Outgoing to an `insecure_domains` peer: any certificate, logged loudly.
    pub client_insecure: Arc<ClientConfig>,
    /// Outgoing Direct TLS (ALPN `xmpp-server`), verifying.
    pub client_direct: Arc<ClientConfig>,
    verifier: Arc<TimeTolerant>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cfg_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

impl S2sTls {
    /// Our certificate is the store c2s uses (so a new one is presented
    /// here too without a restart); the trust anchors are loaded here.
    pub fn load(
        config: &Config,
        store: Arc<CertStore>,
        clock: Arc<Clock>,
    ) -> Result<Self, TlsError> {
        let read_err = |p: &std::path::Path, e: &dyn std::fmt::Display| TlsError::Read {
            path: p.display().to_string(),
            err: e.to_string(),
        };
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &config.s2s.ca_file {
            let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| read_err(ca, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| read_err(ca, &e))?;
            if extra.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: ca.display().to_string(),
                });
            }
            for c in extra {
                roots.add(c).map_err(|e| read_err(ca, &e))?;
            }
        }
        tracing::debug!(system_roots = added, "s2s trust anchors loaded");
        let verifier = Arc::new(TimeTolerant {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(cfg_err)?,
            clock,
        });

        let server = |alpn: Option<&[u8]>| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(cfg_err)?
                .with_client_cert_verifier(Arc::new(AskForCertificate(provider())))
                .with_cert_resolver(store.clone());
            if let Some(p) = alpn {
                c.alpn_protocols = vec![p.to_vec()];
            }
            c.send_tls13_tickets = 0;
            Ok(Arc::new(c))
        };
        let client = |v: Arc<dyn ServerCertVerifier>,
                      alpn: Option<&[u8]>|
         -> Result<Arc<ClientConfig>, TlsError> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(cfg_err)?
                .dangerous()
                .with_custom_certificate_verifier(v)
                .with_client_cert_resolver(store.clone());
            if let Some(p) = alpn {
                c.alpn_protocols = vec![p.to_vec()];
            }
            Ok(Arc::new(c))
        };
        Ok(S2sTls {
            server: server(None)?,
            server_direct: server(Some(ALPN_XMPP_SERVER))?,
            client: client(verifier.clone(), None)?,
            client_insecure: client(Arc::new(AnyCertificate(provider())), None)?,
            client_direct: client(verifier.clone(), Some(ALPN_XMPP_SERVER))?,
            verifier,
        })
    }

    /// Whether `chain` (leaf first) is a valid certificate for `domain`.
    pub fn valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), String> {
        let Some((leaf, rest)) = chain.split_first() else {
            return Err("no certificate presented".into());
        };
        let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
        self.verifier
            .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The WebPKI check, except that while time is unconfirmed a certificate that
/// is only "not valid yet" by this box's clock is checked at its `notBefore`.
#[derive(Debug)]
struct TimeTolerant {
    inner: Arc<WebPkiServerVerifier>,
    clock: Arc<Clock>,
}

impl ServerCertVerifier for TimeTolerant {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        match result {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYetContext { not_before, .. },
            )) if !self.clock.confirmed() => {
                let at_start = self.inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp,
                    not_before,
                );
                if at_start.is_ok() {
                    tracing::warn!(
                        target: "kith::federation",
                        peer = ?server_name,
                        valid_from = not_before.as_secs(),
                        "time not confirmed: accepted a certificate that is valid from later than this box's clock"
                    );
                }
                at_start
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Incoming: ask for the peer's certificate, accept any at the handshake
/// (the handshake signature is still checked), judge it later by domain.
#[derive(Debug)]
struct AskForCertificate(Arc<CryptoProvider>);

impl ClientCertVerifier for AskForCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Outgoing to a domain the admin listed in `insecure_domains`: encryption
/// without authentication of the certificate; dialback must then vouch.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimeSync;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA, and a leaf for `peer.example` valid from `from_year` (to 4096).
    fn chain(from_year: i32) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = rcgen::date_time_ymd(2000, 1, 1);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["peer.example".to_owned()]).expect("leaf");
        leaf.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        let leaf = leaf
            .signed_by(&KeyPair::generate().expect("key"), &issuer)
            .expect("leaf");
        (ca_cert.der().clone(), leaf.der().clone())
    }

    fn verifier(ca: CertificateDer<'static>, sync: TimeSync) -> TimeTolerant {
        let mut roots = RootCertStore::empty();
        roots.add(ca).expect("root");
        TimeTolerant {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("verifier"),
            clock: Arc::new(Clock::new(&sync)),
        }
    }

    fn check(v: &TimeTolerant, leaf: &CertificateDer<'_>, name: &str) -> Result<(), String> {
        let name = ServerName::try_from(name.to_owned()).expect("name");
        v.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_certificate_from_the_future_waits_for_confirmed_time() {
        // Valid from 2100: "not yet valid" by any clock that runs today.
        let (ca, leaf) = chain(2100);
        let flag = std::env::temp_dir().join(format!("kith-s2s-time-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);

        let unconfirmed = verifier(ca.clone(), TimeSync::Flag(flag.clone()));
        check(&unconfirmed, &leaf, "peer.example").expect("accepted while time is unconfirmed");
        let e = check(&unconfirmed, &leaf, "other.example").expect_err("names still checked");
        assert!(e.contains("not valid for name"), "{e}");
        let (_, foreign) = chain(2100);
        let (other_ca, _) = chain(2000);
        let e = check(
            &verifier(other_ca, TimeSync::Flag(flag.clone())),
            &foreign,
            "peer.example",
        )
        .expect_err("the chain is still checked");
        // (rcgen gives every CA the same name: found by name, refused by signature.)
        assert!(
            e.contains("BadSignature") || e.contains("UnknownIssuer"),
            "{e}"
        );

        std::fs::write(&flag, b"").expect("synchronised");
        let e = check(&unconfirmed, &leaf, "peer.example").expect_err("refused once confirmed");
        assert!(
            e.contains("not valid yet") || e.contains("NotValidYet"),
            "{e}"
        );
        let trusted = verifier(ca, TimeSync::Trusted);
        assert!(check(&trusted, &leaf, "peer.example").is_err());
        let _ = std::fs::remove_file(&flag);

        // A certificate valid now passes either way.
        let (ca, leaf) = chain(2001);
        check(&verifier(ca, TimeSync::Trusted), &leaf, "peer.example").expect("valid now");
    }
}
