//! One XMPP client session over raw bytes: TCP, STARTTLS, SASL SCRAM-SHA-1, resource
//! binding, initial presence. Every step has a deadline.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ring::rand::SystemRandom;
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::{timeout_at, Instant},
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{
    scram::Scram,
    xml::{self, Item, Splitter},
};

/// The largest single item the generator buffers.
const MAX_ITEM: usize = 1 << 20;

/// Where and how to connect; shared by every session of a run.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// Deadline for a whole login, and for any single read or write afterwards.
    pub timeout: Duration,
    pub password: String,
    pub user_prefix: String,
    pub rng: Arc<SystemRandom>,
}

impl Target {
    /// The local part of user number `n` (`u1`, `u2` ...).
    pub fn user(&self, n: usize) -> String {
        format!("{}{n}", self.user_prefix)
    }
}

/// An authenticated, bound session.
pub struct Session {
    pub stream: TlsStream<TcpStream>,
    pub splitter: Splitter,
    /// The full JID the server bound.
    pub jid: String,
}

impl Session {
    /// Closes the stream politely without waiting long for the server's answer.
    pub async fn close(mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let _ = send(&mut self.stream, "</stream:stream>", deadline).await;
        let _ = timeout_at(deadline, self.stream.shutdown()).await;
    }
}

/// Reads until the splitter yields an item, or fails at `deadline`.
pub async fn next_item<R: AsyncRead + Unpin>(
    reader: &mut R,
    splitter: &mut Splitter,
    deadline: Instant,
) -> Result<Item> {
    loop {
        if let Some(item) = splitter.next_item()? {
            return Ok(item);
        }
        let buf = splitter.buffer();
        buf.reserve(16 * 1024);
        let n = timeout_at(deadline, reader.read_buf(buf))
            .await
            .map_err(|_| anyhow!("timed out waiting for the server"))??;
        ensure!(n > 0, "server closed the connection");
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, data: &str, deadline: Instant) -> Result<()> {
    timeout_at(deadline, w.write_all(data.as_bytes()))
        .await
        .map_err(|_| anyhow!("timed out writing"))??;
    Ok(())
}

/// Reads the next stanza, failing on a stream error or the end of the stream.
async fn stanza<R: AsyncRead + Unpin>(
    r: &mut R,
    sp: &mut Splitter,
    deadline: Instant,
) -> Result<String> {
    match next_item(r, sp, deadline).await? {
        Item::Stanza(s) if xml::name(&s) == "stream:error" => bail!("stream error: {s}"),
        Item::Stanza(s) => Ok(s),
        Item::Header(h) => bail!("unexpected stream header {h}"),
        Item::End => bail!("server ended the stream"),
    }
}

/// Opens (or restarts) the stream and returns the features stanza.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    sp: &mut Splitter,
    domain: &str,
    deadline: Instant,
) -> Result<String> {
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    send(s, &header, deadline).await?;
    match next_item(s, sp, deadline).await? {
        Item::Header(_) => {}
        other => bail!("expected a stream header, got {other:?}"),
    }
    let features = stanza(s, sp, deadline).await?;
    ensure!(
        xml::name(&features) == "stream:features",
        "expected features, got {features}"
    );
    Ok(features)
}

/// Logs user number `n` in with resource `resource`; sends initial presence if asked.
pub async fn login(target: &Target, n: usize, resource: &str, presence: bool) -> Result<Session> {
    let deadline = Instant::now() + target.timeout;
    let user = target.user(n);
    login_inner(target, &user, resource, presence, deadline)
        .await
        .with_context(|| format!("login of {user}"))
}

async fn login_inner(
    target: &Target,
    user: &str,
    resource: &str,
    presence: bool,
    deadline: Instant,
) -> Result<Session> {
    let domain = &target.domain;
    let mut tcp = timeout_at(deadline, TcpStream::connect(target.addr))
        .await
        .map_err(|_| anyhow!("timed out connecting"))??;
    tcp.set_nodelay(true)?;
    let mut sp = Splitter::new(MAX_ITEM);

    let features = open(&mut tcp, &mut sp, domain, deadline).await?;
    ensure!(features.contains("<starttls"), "no STARTTLS offered");
    send(
        &mut tcp,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        deadline,
    )
    .await?;
    let proceed = stanza(&mut tcp, &mut sp, deadline).await?;
    ensure!(
        xml::name(&proceed) == "proceed",
        "STARTTLS refused: {proceed}"
    );
    ensure!(sp.is_empty(), "bytes after <proceed/>");

    let connector = TlsConnector::from(target.tls.clone());
    let mut tls = timeout_at(deadline, connector.connect(target.server_name.clone(), tcp))
        .await
        .map_err(|_| anyhow!("timed out in the TLS handshake"))??;
    let mut sp = Splitter::new(MAX_ITEM);

    let features = open(&mut tls, &mut sp, domain, deadline).await?;
    ensure!(
        features.contains(">SCRAM-SHA-1<"),
        "SCRAM-SHA-1 not offered: {features}"
    );
    let (mut scram, first) = Scram::start(user, target.rng.as_ref())?;
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
        B64.encode(first)
    );
    send(&mut tls, &auth, deadline).await?;
    let challenge = stanza(&mut tls, &mut sp, deadline).await?;
    ensure!(
        xml::name(&challenge) == "challenge",
        "SASL failed: {challenge}"
    );
    let server_first = decode(xml::root_text(&challenge))?;
    let last = scram.respond(&server_first, &target.password)?;
    let response = format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        B64.encode(last)
    );
    send(&mut tls, &response, deadline).await?;
    let success = stanza(&mut tls, &mut sp, deadline).await?;
    ensure!(xml::name(&success) == "success", "SASL failed: {success}");
    scram.verify(&decode(xml::root_text(&success))?)?;

    let mut sp = Splitter::new(MAX_ITEM);
    let features = open(&mut tls, &mut sp, domain, deadline).await?;
    ensure!(
        features.contains("xmpp-bind"),
        "no resource binding offered"
    );
    let bind = format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    );
    send(&mut tls, &bind, deadline).await?;
    let bound = stanza(&mut tls, &mut sp, deadline).await?;
    ensure!(
        xml::attr(&bound, "type") == Some("result"),
        "bind failed: {bound}"
    );
    let Some(jid) = xml::child_text(&bound, "jid") else {
        bail!("bind result without jid: {bound}");
    };
    let jid = jid.to_string();

    if needs_session(&features) {
        send(
            &mut tls,
            "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
            deadline,
        )
        .await?;
        let reply = stanza(&mut tls, &mut sp, deadline).await?;
        ensure!(
            xml::attr(&reply, "type") == Some("result"),
            "session failed: {reply}"
        );
    }
    if presence {
        send(&mut tls, "<presence/>", deadline).await?;
    }
    Ok(Session {
        stream: tls,
        splitter: sp,
        jid,
    })
}

/// RFC 3921 session establishment, only when the server marks it mandatory.
fn needs_session(features: &str) -> bool {
    let Some(at) = features.find("urn:ietf:params:xml:ns:xmpp-session") else {
        return false;
    };
    let rest = &features[at..];
    let element = &rest[..rest.find("</session>").unwrap_or(rest.len().min(80))];
    !element.contains("optional")
}

fn decode(text: &str) -> Result<String> {
    let bytes = B64.decode(text.trim()).context("SASL data is not base64")?;
    String::from_utf8(bytes).context("SASL data is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_only_when_mandatory() {
        assert!(!needs_session("<stream:features><bind/></stream:features>"));
        assert!(!needs_session(
            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
        ));
        assert!(needs_session(
            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/><bind/>"
        ));
    }
}
