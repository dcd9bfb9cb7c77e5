//! The certificate manager: at start it puts the stored certificate in force
//! (no request to the CA); then it sleeps until the certificate is due for
//! renewal (two thirds into its lifetime), until `kith cert renew` asks, or
//! until shutdown, and obtains a new one: account (key created once and
//! kept), order for every name Kith serves, challenges, a fresh P-256 key and
//! CSR, the chain. A new pair is stored and then installed in the store; a
//! failed attempt changes nothing in use, is recorded with its one-line fix,
//! and is retried with doubling waits (at least an hour after a rate limit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use kith_server::tls::CertStore;
use tokio::sync::watch;

use crate::certinfo::{format_time, now, CertInfo};
use crate::challenge::{dns_hook, tls_alpn_certificate, Http01Answers};
use crate::config::{AcmeConfig, Challenge};
use crate::errors::{from_acme, Cause, Failure};
use crate::files::AcmeDir;
use crate::status::Status;

/// Which web listeners are on (for `challenge = "auto"` and error messages).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listeners {
    /// Plain HTTP (HTTP-01); the port the CA reaches is 80 behind the router.
    pub http: bool,
    /// HTTPS (TLS-ALPN-01).
    pub https: bool,
}

/// How often the manager looks for a `kith cert renew` request.
const POLL: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);
/// How long the CA may take to validate and issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// The certificate manager of one running service.
pub struct Manager {
    config: AcmeConfig,
    dir: AcmeDir,
    names: Vec<String>,
    store: Arc<CertStore>,
    http01: Http01Answers,
    listeners: Listeners,
}

/// The stored certificate and key files if they can be used for `names`
/// (present, readable, matching, covering every name): the service starts
/// with them, so no handshake ever sees the self-signed certificate in between.
pub fn stored_files(data_dir: &Path, names: &[String]) -> Option<(PathBuf, PathBuf)> {
    let dir = AcmeDir::new(data_dir);
    let (chain, _) = dir.stored_pair()?;
    let info = CertInfo::from_pem(&chain).ok()?;
    let wanted: Vec<String> = names
        .iter()
        .filter(|n| !n.starts_with("*."))
        .cloned()
        .collect();
    if !info.covers(&wanted) {
        return None;
    }
    kith_server::tls::TlsContext::from_files(&dir.cert(), &dir.key()).ok()?;
    Some((dir.cert(), dir.key()))
}

/// Ask the running service to renew now (`kith cert renew`): leaves the
/// request file the manager looks for. Returns the time of the request.
pub fn request_renewal(data_dir: &Path) -> std::io::Result<i64> {
    let dir = AcmeDir::new(data_dir);
    let t = now();
    dir.write(&dir.renew_request(), t.to_string().as_bytes())?;
    Ok(t)
}

impl Manager {
    /// `names`: every name Kith serves (the domain first); wildcards are
    /// left out (they need DNS-01 and Kith serves no arbitrary subdomain).
    pub fn new(
        config: AcmeConfig,
        data_dir: &Path,
        names: &[String],
        store: Arc<CertStore>,
        http01: Http01Answers,
        listeners: Listeners,
    ) -> Self {
        let names = names
            .iter()
            .filter(|n| !n.starts_with("*."))
            .cloned()
            .collect();
        Manager {
            config,
            dir: AcmeDir::new(data_dir),
            names,
            store,
            http01,
            listeners,
        }
    }

    /// The challenge this box uses.
    pub fn challenge(&self) -> Challenge {
        match self.config.challenge {
            Challenge::Auto
                if self.config.dns_hook.is_some() || self.config.dns_update.is_some() =>
            {
                Challenge::Dns01
            }
            Challenge::Auto if self.listeners.http => Challenge::Http01,
            Challenge::Auto => Challenge::TlsAlpn01,
            c => c,
        }
    }

    /// Put the stored certificate in force if it covers the names (at start,
    /// without asking the CA). Returns what it installed.
    pub fn install_stored(&self) -> Option<CertInfo> {
        let (chain, key) = self.dir.stored_pair()?;
        let info = CertInfo::from_pem(&chain).ok()?;
        if !info.covers(&self.names) {
            tracing::info!(target: "kith::cert", names = ?info.names, "the stored certificate does not cover every name; a new one will be asked for");
            return None;
        }
        match self.store.install_pem(&chain, &key) {
            Ok(()) => {
                tracing::info!(target: "kith::cert", names = ?info.names, issuer = %info.issuer, expires = %format_time(info.not_after), "using the stored certificate");
                Some(info)
            }
            Err(e) => {
                tracing::warn!(target: "kith::cert", "the stored certificate cannot be used: {e}");
                None
            }
        }
    }

    /// Run until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut status = Status {
            enabled: self.config.enabled,
            directory: self.config.directory.clone(),
            challenge: self.challenge().as_str().into(),
            names: self.names.clone(),
            ..Status::read(&self.dir).unwrap_or_default()
        };
        let mut current = self.install_stored();
        if !self.config.enabled {
            status.next_attempt = None;
            self.save(&status);
            tracing::info!(target: "kith::cert", "certificates from a CA are off (acme.enabled); using the self-signed certificate");
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
        let mut failures: u32 = 0;
        let mut not_before = 0i64;
        loop {
            let mut due = current.as_ref().map(|c| c.renew_at()).unwrap_or(0);
            let mut recheck = i64::MAX;
            status.renewal_info = None;
            if let Some(c) = current.as_ref().filter(|c| c.renew_at() > now()) {
                if let Some(w) = self.renewal_info(c).await {
                    due = w.pick(c);
                    recheck = now() + w.retry_after.as_secs().clamp(60, 6 * 3600) as i64;
                    status.renewal_info = Some(format!(
                        "the CA suggests renewing between {} and {}",
                        format_time(w.start),
                        format_time(w.end)
                    ));
                }
            }
            let next = due.max(not_before);
            status.next_attempt = Some(next);
            self.save(&status);
            match self.wait_until(next.min(recheck), &mut shutdown).await {
                None => return,
                // Time to ask the CA's renewal information again.
                Some(false) if now() < next => continue,
                Some(_) => {}
            }
            status.last_attempt = Some(now());
            // Shutdown (or a restart of the service for new settings) does not
            // wait for the CA: the attempt is dropped, nothing was installed.
            let attempt = tokio::select! {
                r = self.obtain() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match attempt {
                Ok(info) => {
                    tracing::info!(target: "kith::cert", names = ?info.names, issuer = %info.issuer, expires = %format_time(info.not_after), "new certificate in use");
                    status.last_success = status.last_attempt;
                    status.last_error = None;
                    failures = 0;
                    not_before = 0;
                    current = Some(info);
                }
                Err(f) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(self.config.retry_min, failures).max(f.floor());
                    tracing::warn!(target: "kith::cert", retry_in_secs = wait.as_secs(), "no new certificate: {}", f.line);
                    status.last_error = Some(f.line);
                    not_before = now() + wait.as_secs() as i64;
                }
            }
        }
    }

    fn save(&self, status: &Status) {
        if let Err(e) = status.write(&self.dir) {
            tracing::warn!(target: "kith::cert", "cannot write {}: {e}", self.dir.status().display());
        }
    }

    /// RFC 9773: the CA's suggested renewal window for `cert`, if the CA
    /// offers renewal information (its directory has `renewalInfo`).
    async fn renewal_info(&self, cert: &CertInfo) -> Option<Window> {
        let account = self.account().await.ok()?;
        let der = rustls_pki_types::CertificateDer::from(cert.leaf.as_slice());
        let id = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => Some(Window {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                retry_after,
            }),
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                tracing::info!(target: "kith::cert", "no renewal information from the CA ({e}); renewing at two thirds of the lifetime");
                None
            }
        }
    }

    /// Sleep until `at`, a renew request or shutdown: `None` on shutdown,
    /// `Some(true)` when asked (`kith cert renew`), `Some(false)` at `at`.
    async fn wait_until(&self, at: i64, shutdown: &mut watch::Receiver<bool>) -> Option<bool> {
        loop {
            if *shutdown.borrow() {
                return None;
            }
            if std::fs::remove_file(self.dir.renew_request()).is_ok() {
                tracing::info!(target: "kith::cert", "renewal asked for (kith cert renew)");
                return Some(true);
            }
            if now() >= at {
                return Some(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The account: the stored key (created and kept the first time),
    /// registered with the CA if it is not yet.
    async fn account(&self) -> Result<Account, Failure> {
        let ca_err = |e: &dyn std::fmt::Display| {
            Failure::new(
                Cause::CaUnreachable,
                format!("cannot reach the CA at {} ({e}); fix: check the box's internet connection, or acme.directory and acme.ca_file", self.config.directory),
            )
        };
        let key_path = self.dir.account_key();
        let pkcs8 = match std::fs::read_to_string(&key_path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem)
                .map_err(|e| local(&key_path, &e))?
                .serialize_der(),
            Err(_) => {
                let (_, der) = instant_acme::Key::generate_pkcs8().map_err(|e| {
                    Failure::new(Cause::Other, format!("cannot make an account key: {e}"))
                })?;
                let pem = rcgen::KeyPair::try_from(der.secret_pkcs8_der())
                    .map_err(|e| local(&key_path, &e))?
                    .serialize_pem();
                self.dir
                    .write(&key_path, pem.as_bytes())
                    .map_err(|e| local(&key_path, &e))?;
                der.secret_pkcs8_der().to_vec()
            }
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8);
        let key =
            instant_acme::Key::from_pkcs8_der(der.clone_key()).map_err(|e| local(&key_path, &e))?;
        let builder = match &self.config.ca_file {
            Some(ca) => {
                if !ca.exists() {
                    return Err(Failure::new(Cause::Other, format!("acme.ca_file {} does not exist; fix: point acme.ca_file at the CA's root certificate (PEM) or unset it", ca.display())));
                }
                Account::builder_with_root(ca).map_err(|e| ca_err(&e))?
            }
            None => Account::builder().map_err(|e| ca_err(&e))?,
        };
        let (account, _) = builder
            .create_from_key(
                (key, rustls_pki_types::PrivateKeyDer::Pkcs8(der)),
                self.config.directory.clone(),
            )
            .await
            .map_err(|e| from_acme(&self.names[0], &self.config.directory, &e, None))?;
        if let Some(mail) = &self.config.email {
            let contact = format!("mailto:{mail}");
            if let Err(e) = account.update_contacts(&[contact.as_str()]).await {
                tracing::warn!(target: "kith::cert", "the CA did not take the contact address: {e}");
            }
        }
        Ok(account)
    }

    /// One attempt: a new certificate stored and in use, or why not. The
    /// certificate in use is untouched on every error path.
    async fn obtain(&self) -> Result<CertInfo, Failure> {
        let first = self.names.first().cloned().unwrap_or_default();
        let challenge = self.challenge();
        let port = match challenge {
            Challenge::Http01 | Challenge::Auto => Some(80),
            Challenge::TlsAlpn01 => Some(443),
            Challenge::Dns01 => None,
        };
        let acme_err =
            |name: &str, e: instant_acme::Error| from_acme(name, &self.config.directory, &e, port);
        let account = self.account().await?;
        let ids: Vec<Identifier> = self.names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| acme_err(&first, e))?;
        let mut dns_records: Vec<(String, String)> = Vec::new();
        let mut alpn_names: Vec<String> = Vec::new();
        let setup = self
            .answer_challenges(&mut order, challenge, &mut dns_records, &mut alpn_names)
            .await;
        let ready = match setup {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
                .await
                .map_err(|e| acme_err(&first, e)),
            Err(f) => Err(f),
        };
        // The answers are taken down whatever happened.
        self.http01.clear();
        for n in &alpn_names {
            self.store.clear_challenge(n);
        }
        for (record, value) in &dns_records {
            if let Err(e) = self.set_txt(false, record, value).await {
                tracing::warn!(target: "kith::cert", "cannot remove {record}: {}", e.line);
            }
        }
        match ready? {
            OrderStatus::Ready => {}
            _ => return Err(self.why_invalid(&mut order, port).await),
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Failure::new(Cause::Other, format!("cannot make a key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(self.names.clone())
            .map_err(|e| Failure::new(Cause::Other, format!("bad names {:?}: {e}", self.names)))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Failure::new(Cause::Other, format!("cannot make the request: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| acme_err(&first, e))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await
            .map_err(|e| acme_err(&first, e))?;
        let info = CertInfo::from_pem(chain.as_bytes())
            .map_err(|e| Failure::new(Cause::Other, format!("the CA sent a certificate Kith cannot read ({e}); fix: `kith cert renew` later")))?;
        let key_pem = key.serialize_pem();
        // Checked against the key before anything is written.
        self.store
            .install_pem(chain.as_bytes(), key_pem.as_bytes())
            .map_err(|e| {
                Failure::new(
                    Cause::Other,
                    format!("the CA's certificate does not work with its key ({e})"),
                )
            })?;
        self.dir
            .store_pair(chain.as_bytes(), key_pem.as_bytes())
            .map_err(|e| local(self.dir.path(), &e))?;
        Ok(info)
    }

    /// Put up one answer per pending authorization and tell the CA to look.
    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        challenge: Challenge,
        dns_records: &mut Vec<(String, String)>,
        alpn_names: &mut Vec<String>,
    ) -> Result<(), Failure> {
        let port = match challenge {
            Challenge::TlsAlpn01 => Some(443),
            Challenge::Dns01 => None,
            _ => Some(80),
        };
        let kind = match challenge {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Dns01 => ChallengeType::Dns01,
            _ => ChallengeType::Http01,
        };
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| from_acme("", &self.config.directory, &e, port))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => {
                    return Err(Failure::new(
                        Cause::Other,
                        format!(
                            "the CA's authorization for {} is {s:?}; fix: `kith cert renew`",
                            a.identifier()
                        ),
                    ))
                }
            }
            let name = a.identifier().to_string();
            let Some(mut ch) = a.challenge(kind.clone()) else {
                return Err(Failure::new(
                    Cause::Other,
                    format!("the CA does not offer {} for {name}; fix: set acme.challenge to another one", challenge.as_str()),
                ));
            };
            let ka = ch.key_authorization();
            match challenge {
                Challenge::TlsAlpn01 => {
                    let (cert, key) = tls_alpn_certificate(&name, ka.digest().as_ref())
                        .map_err(|e| Failure::new(Cause::Other, e))?;
                    self.store
                        .set_challenge(&name, cert, key)
                        .map_err(|e| Failure::new(Cause::Other, e.to_string()))?;
                    alpn_names.push(name.clone());
                }
                Challenge::Dns01 => {
                    let record = format!("_acme-challenge.{name}");
                    let value = ka.dns_value();
                    self.set_txt(true, &record, &value).await?;
                    dns_records.push((record, value));
                    if !self.config.dns_wait.is_zero() {
                        tokio::time::sleep(self.config.dns_wait).await;
                    }
                }
                _ => self.http01.set(&ch.token, ka.as_str()),
            }
            ch.set_ready()
                .await
                .map_err(|e| from_acme(&name, &self.config.directory, &e, port))?;
        }
        Ok(())
    }

    /// Set or remove a DNS-01 TXT record: RFC 2136 when configured, else the hook.
    async fn set_txt(&self, set: bool, record: &str, value: &str) -> Result<(), Failure> {
        let action = if set { "set" } else { "unset" };
        if let Some(u) = &self.config.dns_update {
            return crate::dns_update::update(u, set, record, value).await.map_err(|e| {
                Failure::new(Cause::DnsHook, format!("the DNS update (RFC 2136) to {} could not {action} {record}: {e}; fix: check the acme.dns_update_* settings against the DNS server's key and zone", u.server))
            });
        }
        match &self.config.dns_hook {
            Some(hook) => dns_hook(hook, action, record, value).await.map_err(|e| {
                Failure::new(Cause::DnsHook, format!("the DNS hook could not {action} {record}: {e}; fix: run the hook by hand (`{} {action} {record} VALUE`) and correct it", hook.display()))
            }),
            None => Err(Failure::new(Cause::DnsHook, "DNS-01 without acme.dns_hook or acme.dns_update_server; fix: set one of them")),
        }
    }

    /// The CA's reason for an invalid order: the first failed challenge's error.
    async fn why_invalid(&self, order: &mut instant_acme::Order, port: Option<u16>) -> Failure {
        let mut authzs = order.authorizations();
        while let Some(Ok(mut a)) = authzs.next().await {
            let _ = a.refresh().await;
            let name = a.identifier().to_string();
            for c in &a.challenges {
                if let Some(p) = &c.error {
                    return crate::errors::from_problem(
                        &name,
                        p.r#type.as_deref().unwrap_or(""),
                        p.detail.as_deref().unwrap_or("no detail"),
                        port,
                    );
                }
            }
        }
        Failure::new(
            Cause::Other,
            "the CA declared the order invalid without a reason; fix: `kith cert renew` later",
        )
    }
}

/// A suggested renewal window (RFC 9773), Unix seconds.
struct Window {
    start: i64,
    end: i64,
    /// When to ask again.
    retry_after: Duration,
}

impl Window {
    /// A time inside the window, spread over it by the certificate (so boxes
    /// renewing the same day do not all ask at its first second), and never
    /// later than a tenth of the lifetime before expiry.
    fn pick(&self, cert: &CertInfo) -> i64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        cert.leaf.hash(&mut h);
        let span = (self.end - self.start).max(0) as u64;
        let at = self.start + (h.finish() % (span + 1)) as i64;
        let latest = cert.not_after - (cert.not_after - cert.not_before).max(0) / 10;
        at.min(latest)
    }
}

/// A local file problem, said with its path.
fn local(path: &Path, e: &dyn std::fmt::Display) -> Failure {
    Failure::new(
        Cause::Other,
        format!(
            "{}: {e}; fix: check the data partition (free space, permissions)",
            PathBuf::from(path).display()
        ),
    )
}

/// The wait after `failures` failed attempts in a row: `min`, doubled each
/// time, at most a day.
fn backoff(min: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    min.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_day() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(m, 1), m);
        assert_eq!(backoff(m, 2), m * 2);
        assert_eq!(backoff(m, 4), m * 8);
        assert_eq!(backoff(m, 40), MAX_BACKOFF);
    }
}
