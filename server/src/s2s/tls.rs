//! TLS for server-to-server streams: which certificates Kith trusts (system
//! roots plus `[s2s] ca_file`), the rustls configurations for both directions,
//! and the check that a peer's certificate is valid for the domain it claims.
//!
//! Both sides present their certificate: on incoming streams Kith asks for the
//! peer's certificate without requiring it at the handshake (a peer without one
//! can still be refused with a clear XMPP error afterwards), and checks it
//! against the claimed domain once the stream header names that domain.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

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
    verifier: Arc<WebPkiServerVerifier>,
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
    pub fn load(config: &Config, store: Arc<CertStore>) -> Result<Self, TlsError> {
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
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(cfg_err)?;

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
