//! Client-to-server stream negotiation (RFC 6120 §4–§7): STARTTLS (mandatory)
//! or Direct TLS (XEP-0368), SASL, resource binding; then the session loop.
//!
//! The whole negotiation runs under one deadline (`limits.auth_timeout`); a
//! connection that has not bound a resource by then gets `<connection-timeout/>`.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{error_for, StreamError, StreamFail, Transport, XmlStream};
use crate::core::{random_hex, Core};
use crate::limits::{Proof, Throttled};
use crate::registry::SessionEffect;
use crate::sasl::{parse_plain, Failure, Mechanism, ScramServer};
use crate::tls::ChannelBindings;
use crate::xml::{el, ns, Frame, ParserLimits, StreamHeader};

/// Failed SASL attempts allowed on one connection before it is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// How a negotiation step ended early.
pub(super) enum Stop {
    /// Send this stream error and close.
    Error(StreamError),
    /// The transport failed or the peer left; nothing more to send.
    Gone,
    /// The peer closed its stream cleanly.
    Closed,
}

impl From<StreamFail> for Stop {
    fn from(f: StreamFail) -> Self {
        match error_for(&f) {
            Some(e) => Stop::Error(e),
            None => Stop::Gone,
        }
    }
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Self {
        Stop::Gone
    }
}

fn limits_pre_auth(core: &Core) -> ParserLimits {
    let l = &core.limits();
    ParserLimits {
        stanza_bytes: l.pre_auth_stanza_size,
        depth: l.max_depth,
        attributes: l.max_attributes,
    }
}

pub(crate) fn limits_session(core: &Core) -> ParserLimits {
    let l = &core.limits();
    ParserLimits {
        stanza_bytes: l.stanza_size,
        depth: l.max_depth,
        attributes: l.max_attributes,
    }
}

/// Serve one accepted TCP connection on a c2s listener.
pub async fn serve(core: Arc<Core>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let alive = core.alive.clone();
    tune_socket(&tcp);
    let Some(permit) = core.conn_limiter.acquire(peer.ip()) else {
        tracing::warn!(%peer, "too many connections from this address");
        let mut s = XmlStream::new(tcp, limits_pre_auth(&core));
        s.fail(
            &core.domain,
            &StreamError::text("policy-violation", "too many connections from your address"),
        )
        .await;
        return;
    };
    let deadline = Instant::now() + core.limits().auth_timeout;
    let mut shutdown = core.shutdown.clone();

    let stream = XmlStream::new(tcp, limits_pre_auth(&core)).charge_to(&core.pre_auth_budget);
    let tls = if direct_tls {
        accept_tls(&core, stream, deadline, true).await
    } else {
        let mut stream = stream;
        let r = tokio::select! {
            r = timeout_at(deadline, Box::pin(starttls(&core, &mut stream))) => r.unwrap_or_else(|_| Err(timeout())),
            _ = shutdown.changed() => Err(Stop::Error(StreamError::new("system-shutdown"))),
        };
        match r {
            Ok(()) => accept_tls(&core, stream, deadline, false).await,
            Err(stop) => return finish(&core, &mut stream, stop).await,
        }
    };
    let Some(mut stream) = tls else { return };
    let bindings = {
        let (_, conn) = stream.io.get_ref();
        ChannelBindings::of(conn, &core.tls.store.server_end_point())
    };
    let r = tokio::select! {
        r = timeout_at(deadline, Box::pin(authenticate_and_bind(&core, &mut stream, peer, &bindings))) => r.unwrap_or_else(|_| Err(timeout())),
        _ = shutdown.changed() => Err(Stop::Error(StreamError::new("system-shutdown"))),
    };
    match r {
        Ok(Negotiated::Resumed(resumed, success)) => {
            // XEP-0198: this connection takes over a hibernated session.
            let guards = (permit, alive);
            // Boxed before the task captures it: a future keeps what it
            // captures by value for its whole life, beside its own copy.
            let stream = Box::new(stream);
            tokio::spawn(async move {
                super::session_loop::run_resumed(core, stream, resumed, success).await;
                drop(guards);
            });
        }
        Ok(Negotiated::Bound(Bound {
            jid,
            reply,
            effects,
            sm,
        })) => {
            tracing::info!(%peer, %jid, "session bound");
            // The negotiation futures above were boxed and are gone now: an
            // established session costs only what the session loop holds.
            // The session runs as its own task: the negotiation's state (and
            // this task) is freed, and an idle session costs only its loop.
            let guards = (permit, alive);
            let stream = Box::new(stream);
            tokio::spawn(async move {
                super::session_loop::run(core, stream, jid, reply, effects, sm).await;
                drop(guards);
            });
        }
        Err(stop) => finish(&core, &mut stream, stop).await,
    }
}

/// Serve a client whose transport the web pod already secured (HTTPS):
/// WebSocket and BOSH sessions, through [`super::framed`]. The same deadline,
/// per-IP limit, SASL, binding and session loop as TCP; no channel binding.
pub(crate) async fn serve_secured<T: Transport + 'static>(
    core: Arc<Core>,
    io: T,
    peer: SocketAddr,
) {
    let alive = core.alive.clone();
    let mut stream = XmlStream::new(io, limits_pre_auth(&core)).charge_to(&core.pre_auth_budget);
    let Some(permit) = core.conn_limiter.acquire(peer.ip()) else {
        let e = StreamError::text("policy-violation", "too many connections from your address");
        return finish(&core, &mut stream, Stop::Error(e)).await;
    };
    let deadline = Instant::now() + core.limits().auth_timeout;
    let mut shutdown = core.shutdown.clone();
    let bindings = ChannelBindings::default();
    let r = tokio::select! {
        r = timeout_at(deadline, Box::pin(authenticate_and_bind(&core, &mut stream, peer, &bindings))) => r.unwrap_or_else(|_| Err(timeout())),
        _ = shutdown.changed() => Err(Stop::Error(StreamError::new("system-shutdown"))),
    };
    match r {
        Ok(Negotiated::Resumed(resumed, success)) => {
            // XEP-0198: this web connection takes over a hibernated session.
            super::session_loop::run_resumed(core, Box::new(stream), resumed, success).await;
            drop((permit, alive));
        }
        Ok(Negotiated::Bound(Bound {
            jid,
            reply,
            effects,
            sm,
        })) => {
            tracing::info!(%peer, %jid, "session bound (web transport)");
            super::session_loop::run(core, Box::new(stream), jid, reply, effects, sm).await;
            drop((permit, alive));
        }
        Err(stop) => finish(&core, &mut stream, stop).await,
    }
}

/// Socket options for every client connection: no Nagle delay (each stanza is
/// one write), TCP keepalive probes, and a user timeout so that a peer that
/// vanished without closing (a phone that lost signal: a half-open connection)
/// is dropped within minutes instead of the kernel's default quarter of an hour.
fn tune_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
    if let Err(e) = sock.set_tcp_user_timeout(Some(std::time::Duration::from_secs(120))) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

fn timeout() -> Stop {
    Stop::Error(StreamError::text(
        "connection-timeout",
        "authentication took too long",
    ))
}

async fn finish<T: Transport>(core: &Core, stream: &mut XmlStream<T>, stop: Stop) {
    match stop {
        Stop::Error(e) => {
            tracing::debug!(condition = e.condition, text = ?e.text, "closing stream with an error");
            stream.fail(&core.domain, &e).await
        }
        Stop::Closed => stream.close().await,
        Stop::Gone => {}
    }
}

/// TLS handshake, bounded by the deadline.
async fn accept_tls(
    core: &Core,
    stream: XmlStream<TcpStream>,
    deadline: Instant,
    direct: bool,
) -> Option<XmlStream<TlsStream<TcpStream>>> {
    let cfg = if direct {
        core.tls.direct.clone()
    } else {
        core.tls.starttls.clone()
    };
    let acceptor = TlsAcceptor::from(cfg);
    let XmlStream { io, .. } = stream;
    match timeout_at(deadline, Box::pin(acceptor.accept(io))).await {
        Ok(Ok(tls)) => {
            Some(XmlStream::new(tls, limits_pre_auth(core)).charge_to(&core.pre_auth_budget))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Wait for the stream header and check it (RFC 6120 §4.7).
async fn open<T: Transport>(core: &Core, stream: &mut XmlStream<T>) -> Result<StreamHeader, Stop> {
    let header = match stream.next().await? {
        Frame::Open(h) => h,
        _ => return Err(Stop::Error(StreamError::new("not-well-formed"))),
    };
    stream
        .send_header(&core.domain, &random_hex(16), ns::CLIENT)
        .await?;
    if let Some(to) = &header.to {
        if !to.eq_ignore_ascii_case(&core.domain) {
            return Err(Stop::Error(StreamError::text(
                "host-unknown",
                format!("this server serves {}", core.domain),
            )));
        }
    }
    match header.version.as_deref().and_then(|v| v.split('.').next()) {
        Some("1") => Ok(header),
        _ => Err(Stop::Error(StreamError::text(
            "unsupported-version",
            "XMPP 1.0 streams only",
        ))),
    }
}

/// The next top-level element, or why there is none.
pub(super) async fn element<T: Transport>(stream: &mut XmlStream<T>) -> Result<Element, Stop> {
    match stream.next().await? {
        Frame::Stanza(el) => Ok(el),
        Frame::Close => Err(Stop::Closed),
        Frame::Open(_) => Err(Stop::Error(StreamError::text(
            "not-well-formed",
            "stream opened twice",
        ))),
    }
}

/// A stanza or unknown element where negotiation expected something else.
pub(super) fn unexpected(el: &Element, stage: &str) -> Stop {
    if el.ns() == ns::CLIENT {
        Stop::Error(StreamError::text(
            "not-authorized",
            format!("{stage} first"),
        ))
    } else {
        Stop::Error(StreamError::text(
            "unsupported-stanza-type",
            format!("unexpected <{}/> during {stage}", el.name()),
        ))
    }
}

/// Plaintext phase of port 5222: only STARTTLS is possible.
async fn starttls(core: &Core, stream: &mut XmlStream<TcpStream>) -> Result<(), Stop> {
    open(core, stream).await?;
    let starttls = el("starttls", ns::TLS)
        .child(Element::bare("required", ns::TLS))
        .build();
    stream.write(&features_bytes(&[starttls])).await?;
    let req = element(stream).await?;
    if !req.is("starttls", ns::TLS) {
        return Err(unexpected(&req, "STARTTLS"));
    }
    stream.send(&Element::bare("proceed", ns::TLS)).await?;
    Ok(())
}

/// `<stream:features>` uses the stream prefix declared in our header, which
/// minidom cannot express, so the wrapper is written by hand around the features.
pub(super) fn features_bytes(features: &[Element]) -> Vec<u8> {
    let mut out = b"<stream:features>".to_vec();
    for child in features {
        crate::xml::serialize(child, &mut out);
    }
    out.extend_from_slice(b"</stream:features>");
    out
}

/// A session ready to run.
pub(super) struct Bound {
    pub jid: FullJid,
    /// Written first: the bind result, or SASL2's `<success/>` and features.
    pub reply: Vec<u8>,
    /// What Bind2 inline requests do to the session once it exists.
    pub effects: Vec<SessionEffect>,
    /// Stream management as Bind2's inline `<enable/>` left it (off otherwise).
    pub sm: crate::sm::Sm,
}

/// What negotiation produced: a session to run, or (XEP-0198) a hibernated
/// session this connection resumed in place of binding; when resumed inside
/// SASL2's `<authenticate/>`, with the `<success/>` (carrying `<resumed/>`)
/// and features to write first.
pub(super) enum Negotiated {
    Bound(Bound),
    Resumed(crate::sm::Resumed, Option<Vec<u8>>),
}

/// How SASL ended successfully.
enum Authed {
    /// SASL1: the username; a stream restart and resource binding follow.
    Legacy(String),
    /// SASL2 (XEP-0388): no restart.
    Sasl2(super::sasl2::Outcome),
}

/// The stream features of an authenticated stream: resource binding (unless
/// Bind2 already bound one) and what modules offer.
pub(super) fn post_auth_features(core: &Core, bound: bool) -> Vec<Element> {
    let mut features = Vec::new();
    if !bound {
        features.push(Element::bare("bind", ns::BIND));
        features.push(
            el("session", ns::SESSION)
                .child(Element::bare("optional", ns::SESSION))
                .build(),
        );
    }
    features.extend(core.registry.stream_features());
    features
}

/// SASL, stream restart and resource binding on a TLS stream.
async fn authenticate_and_bind<T: Transport>(
    core: &Arc<Core>,
    stream: &mut XmlStream<T>,
    peer: SocketAddr,
    bindings: &ChannelBindings,
) -> Result<Negotiated, Stop> {
    open(core, stream).await?;
    let mut mechs = el("mechanisms", ns::SASL);
    for m in Mechanism::ALL {
        if !m.is_plus() || bindings.exporter.is_some() || bindings.server_end_point.is_some() {
            mechs = mechs.child(el("mechanism", ns::SASL).text(m.name()).build());
        }
    }
    let mut cb = el("sasl-channel-binding", ns::SASL_CB);
    if bindings.exporter.is_some() {
        cb = cb.child(
            el("channel-binding", ns::SASL_CB)
                .attr("type", "tls-exporter")
                .build(),
        );
    }
    if bindings.server_end_point.is_some() {
        cb = cb.child(
            el("channel-binding", ns::SASL_CB)
                .attr("type", "tls-server-end-point")
                .build(),
        );
    }
    let sasl2 = super::sasl2::feature(core, bindings);
    stream
        .write(&features_bytes(&[mechs.build(), cb.build(), sasl2]))
        .await?;

    let username = match sasl(core, stream, peer, bindings).await? {
        Authed::Legacy(username) => username,
        Authed::Sasl2(super::sasl2::Outcome::Bound(bound)) => return Ok(Negotiated::Bound(bound)),
        Authed::Sasl2(super::sasl2::Outcome::Resumed(r, success)) => {
            return Ok(Negotiated::Resumed(r, Some(success)))
        }
        // SASL2 without Bind2: success and features were sent; bind, no restart.
        Authed::Sasl2(super::sasl2::Outcome::Authenticated(bare)) => {
            return bind(core, stream, &bare).await
        }
    };
    let bare = BareJid::new(&format!("{username}@{}", core.domain))
        .map_err(|_| Stop::Error(StreamError::new("internal-server-error")))?;

    // Stream restart (RFC 6120 §6.4.6).
    stream.restart(limits_pre_auth(core));
    open(core, stream).await?;
    let features = post_auth_features(core, false);
    stream.write(&features_bytes(&features)).await?;
    bind(core, stream, &bare).await
}

impl Bound {
    fn legacy((jid, reply): (FullJid, Element)) -> Bound {
        let mut bytes = Vec::new();
        crate::xml::serialize(&reply, &mut bytes);
        Bound {
            jid,
            reply: bytes,
            effects: Vec::new(),
            sm: crate::sm::Sm::default(),
        }
    }
}

/// Run SASL (or SASL2) exchanges until one succeeds.
async fn sasl<T: Transport>(
    core: &Arc<Core>,
    stream: &mut XmlStream<T>,
    peer: SocketAddr,
    bindings: &ChannelBindings,
) -> Result<Authed, Stop> {
    let mut attempts = 0;
    loop {
        let auth = element(stream).await?;
        if auth.is("authenticate", super::sasl2::NS) {
            // SASL2 shares this connection's failed-attempt count.
            match super::sasl2::authenticate(core, stream, peer, bindings, &auth).await? {
                Ok(outcome) => return Ok(Authed::Sasl2(outcome)),
                Err(()) => {
                    attempts += 1;
                    if attempts >= MAX_AUTH_ATTEMPTS {
                        return Err(too_many_attempts());
                    }
                    continue;
                }
            }
        }
        if !auth.is("auth", ns::SASL) {
            return Err(unexpected(&auth, "authentication"));
        }
        let outcome = exchange(
            core,
            stream,
            peer,
            bindings,
            ns::SASL,
            auth.attr("mechanism"),
            decode(&auth.text()),
        )
        .await?;
        match outcome {
            Ok((username, extra)) => {
                let success = match extra {
                    Some(data) => el("success", ns::SASL).text(B64.encode(data)).build(),
                    None => Element::bare("success", ns::SASL),
                };
                stream.send(&success).await?;
                tracing::info!(%peer, user = %username, mechanism = auth.attr("mechanism").unwrap_or(""), "authenticated");
                return Ok(Authed::Legacy(username));
            }
            Err((failure, why)) => {
                tracing::info!(%peer, condition = failure.condition(), why, "authentication failed");
                stream
                    .send(
                        &el("failure", ns::SASL)
                            .child(Element::bare(failure.condition(), ns::SASL))
                            .build(),
                    )
                    .await?;
                attempts += 1;
                if attempts >= MAX_AUTH_ATTEMPTS {
                    return Err(too_many_attempts());
                }
            }
        }
    }
}

fn too_many_attempts() -> Stop {
    Stop::Error(StreamError::text(
        "policy-violation",
        "too many failed authentication attempts",
    ))
}

pub(super) type Exchange = Result<(String, Option<Vec<u8>>), (Failure, &'static str)>;

/// One SASL exchange: `mechanism` and the decoded `initial` response come from
/// SASL1's `<auth/>` or SASL2's `<authenticate/>`; challenges and responses are
/// in `sasl_ns` (the two protocols differ only in that namespace here).
pub(super) async fn exchange<T: Transport>(
    core: &Core,
    stream: &mut XmlStream<T>,
    peer: SocketAddr,
    bindings: &ChannelBindings,
    sasl_ns: &str,
    mechanism: Option<&str>,
    initial: Result<Option<Vec<u8>>, (Failure, &'static str)>,
) -> Result<Exchange, Stop> {
    let Some(mech) = mechanism.and_then(Mechanism::from_name) else {
        return Ok(Err((Failure::InvalidMechanism, "unknown mechanism")));
    };
    if mech.is_plus() && bindings.exporter.is_none() && bindings.server_end_point.is_none() {
        return Ok(Err((
            Failure::InvalidMechanism,
            "no channel binding on this connection",
        )));
    }
    let initial = match initial {
        Ok(Some(data)) => data,
        Ok(None) => {
            // No initial response: send an empty challenge (RFC 6120 §6.4.2).
            stream.send(&Element::bare("challenge", sasl_ns)).await?;
            match response(stream, sasl_ns).await? {
                Ok(d) => d,
                Err(f) => return Ok(Err(f)),
            }
        }
        Err(f) => return Ok(Err(f)),
    };
    let ip = peer.ip();
    match mech.scram_hash() {
        None => {
            let (authzid, user, password) = match parse_plain(&initial) {
                Ok(p) => p,
                Err(f) => return Ok(Err((f, "malformed PLAIN"))),
            };
            let Some(username) = normalize_user(&user, &core.domain) else {
                return Ok(Err((Failure::NotAuthorized, "invalid username")));
            };
            let attempt = match core
                .auth_limiter
                .begin(ip, &username, Proof::Password)
                .await
            {
                Ok(a) => a,
                Err(t) => return Ok(Err(throttled(t))),
            };
            if let Some(z) = authzid {
                if !authzid_ok(&z, &username, &core.domain) {
                    return Ok(Err((Failure::InvalidAuthzid, "authzid differs")));
                }
            }
            // The same check as the web pod's sign-in: an unknown account
            // costs the same PBKDF2 work as a wrong password, so timing does
            // not tell which accounts exist.
            let ok = crate::credentials::check_password(core, &username, &password)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "credential lookup failed");
                    Stop::Error(StreamError::new("internal-server-error"))
                })?;
            if ok {
                attempt.succeeded();
                Ok(Ok((username, None)))
            } else {
                drop(attempt);
                Ok(Err((
                    Failure::NotAuthorized,
                    "wrong password or unknown account",
                )))
            }
        }
        Some(hash) => {
            // `y` (client supports binding, thinks the server does not) is a
            // downgrade only where -PLUS was offered: never over WebSocket/BOSH.
            let plus_offered = bindings.exporter.is_some() || bindings.server_end_point.is_some();
            let mut scram =
                match ScramServer::start(hash, mech.is_plus(), plus_offered, bindings, &initial) {
                    Ok(s) => s,
                    Err(e) => return Ok(Err((e.0, e.1))),
                };
            let username = normalize_user(scram.username(), &core.domain);
            let key = username
                .clone()
                .unwrap_or_else(|| scram.username().to_string());
            // Counted now, before the challenge: a failure is only known at
            // client-final, and parallel exchanges must not each get a guess.
            let attempt = match core.auth_limiter.begin(ip, &key, Proof::Password).await {
                Ok(a) => a,
                Err(t) => return Ok(Err(throttled(t))),
            };
            let keys = match &username {
                Some(u) => core
                    .db
                    .account_credentials(u)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "credential lookup failed");
                        Stop::Error(StreamError::new("internal-server-error"))
                    })?
                    .map(|c| c.keys(hash).clone()),
                None => None,
            };
            let challenge = scram.challenge(
                keys,
                &core.scram_secret,
                core.config.scram_iterations,
                &random_hex(18),
            );
            stream
                .send(&el("challenge", sasl_ns).text(B64.encode(challenge)).build())
                .await?;
            let fin = match response(stream, sasl_ns).await? {
                Ok(d) => d,
                Err(f) => return Ok(Err(f)),
            };
            match (scram.finish(&fin), username) {
                (Ok(server_final), Some(u)) => {
                    if let Some(z) = scram.authzid() {
                        if !authzid_ok(z, &u, &core.domain) {
                            return Ok(Err((Failure::InvalidAuthzid, "authzid differs")));
                        }
                    }
                    attempt.succeeded();
                    Ok(Ok((u, Some(server_final))))
                }
                (Err(e), _) => Ok(Err((e.0, e.1))),
                (Ok(_), None) => Ok(Err((Failure::NotAuthorized, "invalid username"))),
            }
        }
    }
}

/// The SASL failure for a throttled attempt (RFC 6120 §6.5.12).
pub(crate) fn throttled(t: Throttled) -> (Failure, &'static str) {
    match t {
        Throttled::Address => (
            Failure::TemporaryAuthFailure,
            "too many login attempts from your address; wait a minute",
        ),
        Throttled::Account => (
            Failure::TemporaryAuthFailure,
            "too many login attempts on this account; wait a minute or use a device that logged in before",
        ),
    }
}

/// Read a `<response/>` (or `<abort/>`) in `sasl_ns`.
async fn response<T: Transport>(
    stream: &mut XmlStream<T>,
    sasl_ns: &str,
) -> Result<Result<Vec<u8>, (Failure, &'static str)>, Stop> {
    let r = element(stream).await?;
    if r.is("abort", sasl_ns) {
        return Ok(Err((Failure::Aborted, "client aborted")));
    }
    if !r.is("response", sasl_ns) {
        return Err(unexpected(&r, "authentication"));
    }
    Ok(decode(&r.text()).map(Option::unwrap_or_default))
}

/// SASL payload decoding: empty = no data, `=` = empty data (RFC 6120 §6.4.2).
pub(crate) fn decode(text: &str) -> Result<Option<Vec<u8>>, (Failure, &'static str)> {
    let t = text.trim();
    match t {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        _ => B64
            .decode(t)
            .map(Some)
            .map_err(|_| (Failure::IncorrectEncoding, "not base64")),
    }
}

/// The account name as stored: nodeprep'd by the JID library.
pub fn normalize_user(user: &str, domain: &str) -> Option<String> {
    let bare = BareJid::new(&format!("{user}@{domain}")).ok()?;
    let node = bare.node()?.as_str().to_string();
    (node == user.to_lowercase() || node == user).then_some(node)
}

pub(crate) fn authzid_ok(authzid: &str, username: &str, domain: &str) -> bool {
    BareJid::new(authzid).ok().is_some_and(|j| {
        j.node().map(|n| n.as_str()) == Some(username) && j.domain().as_str() == domain
    })
}

/// Resource binding (RFC 6120 §7): the bound session, or the session a
/// XEP-0198 `<resume/>` took over.
async fn bind<T: Transport>(
    core: &Arc<Core>,
    stream: &mut XmlStream<T>,
    bare: &BareJid,
) -> Result<Negotiated, Stop> {
    loop {
        let iq = element(stream).await?;
        if iq.ns() == crate::sm::NS {
            // Resumption replaces binding; enabling needs a bound resource.
            let failed = if iq.name() == "resume" {
                match crate::sm::table::claim(core, bare, &iq).await {
                    Ok(r) => return Ok(Negotiated::Resumed(r, None)),
                    Err(failed) => failed,
                }
            } else {
                crate::sm::failed("unexpected-request", None)
            };
            stream.send(&failed).await?;
            continue;
        }
        let is_bind_iq = iq.is("iq", ns::CLIENT)
            && iq.attr("type") == Some("set")
            && iq.has_child("bind", ns::BIND);
        if !is_bind_iq {
            return Err(unexpected(&iq, "resource binding"));
        }
        let id = iq.attr("id").unwrap_or("").to_string();
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text().trim().to_string())
            .filter(|r| !r.is_empty());
        let resource = requested.unwrap_or_else(|| format!("kith-{}", random_hex(6)));
        match bare.with_resource_str(&resource) {
            Ok(full) => {
                let reply = el("iq", ns::CLIENT)
                    .attr("type", "result")
                    .attr("id", id)
                    .child(
                        el("bind", ns::BIND)
                            .child(el("jid", ns::BIND).text(full.as_str()).build())
                            .build(),
                    )
                    .build();
                return Ok(Negotiated::Bound(Bound::legacy((full, reply))));
            }
            Err(_) => {
                let err = crate::stanza::StanzaError::bad_request().with_text("invalid resource");
                if let Some(reply) = crate::stanza::error_reply(&iq, &err) {
                    stream.send(&reply).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_or_refused() {
        assert_eq!(
            normalize_user("Alice", "localhost").as_deref(),
            Some("alice")
        );
        assert_eq!(normalize_user("bob", "localhost").as_deref(), Some("bob"));
        assert_eq!(normalize_user("a@b", "localhost"), None);
        assert_eq!(normalize_user("", "localhost"), None);
    }

    #[test]
    fn sasl_payload_decoding() {
        assert_eq!(decode(""), Ok(None));
        assert_eq!(decode("="), Ok(Some(vec![])));
        assert_eq!(decode("aGk="), Ok(Some(b"hi".to_vec())));
        assert!(decode("!!").is_err());
    }

    #[test]
    fn authzid_must_name_the_same_account() {
        assert!(authzid_ok("alice@localhost", "alice", "localhost"));
        assert!(!authzid_ok("bob@localhost", "alice", "localhost"));
        assert!(!authzid_ok("alice@elsewhere", "alice", "localhost"));
    }
}
