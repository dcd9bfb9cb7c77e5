//! Helpers for the interop tests in `tests/`: a test certificate authority, a running
//! `kith` process, and a raw XMPP connection for the SASL details no client library shows.
//!
//! The `kith` binary is `$KITH_BIN`, else `<workspace>/target/ci/kith`
//! (`cargo build --profile ci -p kith`).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The XMPP domain every test server serves.
pub const DOMAIN: &str = "localhost";
/// The password of every test user.
pub const PASSWORD: &str = "correct horse battery staple";
/// Bound on any single protocol step (a reply, a delivery, a login).
pub const STEP: Duration = Duration::from_secs(10);

/// Install ring as rustls' process-wide provider (idempotent).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A throw-away CA; the servers' leaf certificates are signed by it.
pub struct TestCa {
    /// The CA certificate (DER), the trust anchor of the test clients.
    pub cert: CertificateDer<'static>,
    /// Where the CA certificate is written as PEM (what `SSL_CERT_FILE` names).
    pub pem_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Kith interop test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let dir = tempfile::tempdir()?;
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem())?;
        Ok(Self {
            cert: cert.der().clone(),
            pem_path,
            issuer: Issuer::new(params, key),
            _dir: dir,
        })
    }

    /// A leaf certificate and key (PEM) for `name`, signed by this CA.
    pub fn leaf(&self, name: &str) -> Result<(String, String)> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A rustls client config trusting only this CA. `tls12_only` pins TLS 1.2.
    pub fn client_config(&self, tls12_only: bool, alpn: Option<&[u8]>) -> Arc<ClientConfig> {
        crypto();
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .expect("the test CA is a valid trust anchor");
        let builder = if tls12_only {
            ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            ClientConfig::builder()
        };
        let mut config = builder.with_root_certificates(roots).with_no_client_auth();
        if let Some(alpn) = alpn {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        Arc::new(config)
    }
}

/// The process-wide test CA. Its PEM is exported as `SSL_CERT_FILE`, which
/// `rustls-native-certs` (hence tokio-xmpp) honours, before any client is made.
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        crypto();
        let ca = TestCa::new().expect("generate the test CA");
        // Set once, before any test builds a client (they all come through here first).
        std::env::set_var("SSL_CERT_FILE", &ca.pem_path);
        ca
    })
}

fn kith_bin() -> PathBuf {
    match std::env::var_os("KITH_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ci/kith"),
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `kith serve` with its own data dir, config and ports; killed on drop.
pub struct Kith {
    /// STARTTLS listener.
    pub c2s: SocketAddr,
    /// Direct TLS listener (XEP-0368).
    pub c2s_tls: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Kith {
    /// Start a server whose certificate is signed by [`test_ca`], with `users` (password
    /// [`PASSWORD`]) created before it starts.
    pub fn start(users: &[&str]) -> Result<Self> {
        let ca = test_ca();
        let dir = tempfile::tempdir()?;
        let (cert, key) = ca.leaf(DOMAIN)?;
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        let c2s: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let c2s_tls: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = dir.path().join("kith.toml");
        std::fs::write(
            &config,
            format!(
                "domain = \"{DOMAIN}\"\ndata_dir = \"{data}\"\n\n[listen]\nc2s = \"{c2s}\"\n\
                 c2s_tls = \"{c2s_tls}\"\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
                 [auth]\nscram_iterations = 4096\n",
                data = dir.path().join("data").display(),
                cert = cert_path.display(),
                key = key_path.display(),
            ),
        )?;
        let log = dir.path().join("kith.log");
        let mut kith = Self {
            c2s,
            c2s_tls,
            config,
            log,
            child: None,
            _dir: dir,
        };
        for user in users {
            kith.add_user(user, PASSWORD)?;
        }
        kith.spawn()?;
        Ok(kith)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(kith_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", kith_bin().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("kith serve exited {status} at start:\n{}", self.log_tail());
            }
            let up = [self.c2s, self.c2s_tls]
                .iter()
                .all(|a| StdTcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kith serve did not open its ports:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kith user add JID` with the password on stdin.
    pub fn add_user(&self, user: &str, password: &str) -> Result<()> {
        let mut child = Command::new(kith_bin())
            .arg("--config")
            .arg(&self.config)
            .args(["user", "add", &format!("{user}@{DOMAIN}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", kith_bin().display()))?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(format!("{password}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kith user add {user} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The server's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Kith {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- kith log (tail) ---\n{}", self.log_tail());
        }
    }
}

/// What the server answered to a SASL exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslOutcome {
    /// `<success/>`, with its additional data (the SCRAM server-final message).
    Success(Vec<u8>),
    /// `<failure/>`, with the raw element text (its condition is inside).
    Failure(String),
}

/// An XMPP connection spoken by hand: text in, text out, every read bounded by [`STEP`].
pub struct RawConn<S> {
    io: S,
    buf: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// Wrap an established transport.
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: String::new(),
        }
    }

    /// The transport (e.g. to read TLS session data).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Send raw text.
    pub async fn send(&mut self, text: &str) -> Result<()> {
        self.io.write_all(text.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Read until `needle` has arrived; returns everything up to and including it, and
    /// keeps the rest for the next read.
    pub async fn read_until(&mut self, needle: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Some(pos) = self.buf.find(needle) {
                let rest = self.buf.split_off(pos + needle.len());
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("timed out waiting for {needle:?}; have {:?}", self.buf))??;
            if n == 0 {
                bail!("closed while waiting for {needle:?}; have {:?}", self.buf);
            }
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Open a stream and read the server's features (the whole `<stream:features>`).
    pub async fn open_stream(&mut self) -> Result<String> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await?;
        self.read_until("</stream:features>").await
    }

    /// Send `<auth/>` and answer challenges with `mech` until success or failure.
    pub async fn sasl(&mut self, mech: &mut dyn sasl::client::Mechanism) -> Result<SaslOutcome> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let initial = b64.encode(mech.initial());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{initial}</auth>",
            mech.name()
        ))
        .await?;
        for _ in 0..4 {
            let el = self.next_sasl_element().await?;
            if el.starts_with("<challenge") {
                let data = b64.decode(element_text(&el))?;
                let reply = match mech.response(&data) {
                    Ok(r) => r,
                    Err(e) => bail!("client refused the challenge: {e:?}"),
                };
                self.send(&format!(
                    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                    b64.encode(reply)
                ))
                .await?;
            } else if el.starts_with("<success") {
                let data = b64.decode(element_text(&el))?;
                if let Err(e) = mech.success(&data) {
                    bail!("server signature did not verify: {e:?}");
                }
                return Ok(SaslOutcome::Success(data));
            } else {
                return Ok(SaslOutcome::Failure(el));
            }
        }
        bail!("SASL went on for too long")
    }

    async fn next_sasl_element(&mut self) -> Result<String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            for name in ["challenge", "success", "failure"] {
                if let Some(start) = self.buf.find(&format!("<{name}")) {
                    let close = format!("</{name}>");
                    let open_end = self.buf[start..].find('>').map(|i| start + i);
                    let end = match open_end {
                        Some(e) if self.buf[..e].ends_with('/') => Some(e + 1),
                        Some(_) => self.buf[start..]
                            .find(&close)
                            .map(|i| start + i + close.len()),
                        None => None,
                    };
                    if let Some(end) = end {
                        let el = self.buf[start..end].to_owned();
                        self.buf.drain(..end);
                        return Ok(el);
                    }
                }
            }
            if self.buf.contains("</stream:stream>") {
                bail!("stream closed during SASL: {:?}", self.buf);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("no SASL answer; have {:?}", self.buf))??;
            if n == 0 {
                bail!("closed during SASL; have {:?}", self.buf);
            }
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// After SASL success: restart the stream and bind `resource`; returns the full JID.
    pub async fn bind(&mut self, resource: &str) -> Result<String> {
        let features = self.open_stream().await?;
        if !features.contains("urn:ietf:params:xml:ns:xmpp-bind") {
            bail!("no bind feature after SASL: {features}");
        }
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        let text = self.read_until("</jid>").await?;
        let start = text
            .rfind("<jid>")
            .ok_or_else(|| anyhow!("no <jid> in {text}"))?;
        Ok(text[start + 5..text.len() - 6].to_owned())
    }
}

fn element_text(el: &str) -> &str {
    if el.ends_with("/>") {
        return "";
    }
    let start = el.find('>').map_or(0, |i| i + 1);
    let end = el.rfind("</").unwrap_or(el.len());
    el[start..end].trim()
}

/// STARTTLS on `addr` with `config`: returns the TLS connection and the features the
/// server offers inside it.
pub async fn starttls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<(RawConn<TlsStream<TcpStream>>, String)> {
    let mut plain = RawConn::new(TcpStream::connect(addr).await?);
    let features = plain.open_stream().await?;
    if !features.contains("urn:ietf:params:xml:ns:xmpp-tls") {
        bail!("no STARTTLS offered: {features}");
    }
    plain
        .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await?;
    plain.read_until("<proceed").await?;
    plain.read_until(">").await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from(DOMAIN)?, plain.io)
        .await?;
    let mut conn = RawConn::new(tls);
    let features = conn.open_stream().await?;
    Ok((conn, features))
}

/// Direct TLS (XEP-0368) on `addr`.
pub async fn direct_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<(RawConn<TlsStream<TcpStream>>, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from(DOMAIN)?, tcp)
        .await?;
    let mut conn = RawConn::new(tls);
    let features = conn.open_stream().await?;
    Ok((conn, features))
}

/// RFC 9266 tls-exporter channel-binding data of a TLS connection.
pub fn tls_exporter(conn: &RawConn<TlsStream<TcpStream>>) -> Result<Vec<u8>> {
    let (_, session) = conn.get_ref().get_ref();
    session
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .map_err(|e| anyhow!("export_keying_material: {e}"))
}
