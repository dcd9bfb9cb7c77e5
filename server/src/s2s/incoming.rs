//! Incoming server-to-server streams (RFC 6120): STARTTLS is required (or
//! Direct TLS, XEP-0368), then the peer authenticates its domain with SASL
//! EXTERNAL (XEP-0178) or dialback (XEP-0220), both keyed on a certificate
//! that is valid for that domain. Only then are stanzas accepted, and each
//! one's `from` domain must be a domain this stream authenticated, for the
//! local domain the stanza is addressed to, or the stream is closed with
//! `<invalid-from/>`.
//!
//! Kith serves two domains to other servers: its own, and the group chat
//! service's (`groups.DOMAIN`, whose stanzas go to the service). A stream is
//! opened to one of them; dialback may add the other (XEP-0220 §2.4), each
//! (remote, local) pair authenticated on its own.
//!
//! This side also answers dialback `<db:verify/>` requests from servers Kith
//! connected to: a key is confirmed only for a stream Kith itself opened to
//! that server (the "wrong number" defence of XEP-0220 §4.3).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use jid::Jid;
use minidom::Element;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use super::rate::Verdict;
use super::wire::{self, NS_BIDI, NS_BIDI_FEATURE, NS_DIALBACK, NS_DIALBACK_FEATURE};
use super::{dialback, policy, Pair, S2sState};
use crate::core::{random_hex, Core};
use crate::stanza::StanzaError;
use crate::stream::{error_for, StreamError, StreamFail, Transport, XmlStream};
use crate::xml::{escape, ns, Frame, ParserLimits};

const LOG: &str = "kith::federation";

fn limits(core: &Core, stanza_bytes: usize) -> ParserLimits {
    ParserLimits {
        stanza_bytes,
        depth: core.limits().max_depth,
        attributes: core.limits().max_attributes,
    }
}

/// Serve one connection accepted on an s2s listener.
pub async fn serve(core: Arc<Core>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _alive = core.alive.clone();
    let _ = tcp.set_nodelay(true);
    let Some(state) = core.s2s.get().cloned() else {
        return;
    };
    let Some(_permit) = core.conn_limiter.acquire(peer.ip()) else {
        tracing::warn!(target: LOG, %peer, "too many connections from this address");
        return;
    };
    let deadline = Instant::now() + core.limits().auth_timeout;
    let pre = limits(&core, core.limits().pre_auth_stanza_size);
    let mut plain = XmlStream::new(tcp, pre).charge_to(&core.pre_auth_budget);
    if !direct_tls {
        match timeout_at(deadline, starttls(&core, &mut plain)).await {
            Ok(Ok(())) => {}
            Ok(Err(Some(e))) => {
                tracing::info!(target: LOG, %peer, condition = e.condition, text = ?e.text, "incoming stream refused before TLS");
                wire::fail(&mut plain, &e).await;
                return;
            }
            Ok(Err(None)) | Err(_) => return,
        }
    }
    let cfg = if direct_tls {
        state.tls.server_direct.clone()
    } else {
        state.tls.server.clone()
    };
    let XmlStream { io, .. } = plain;
    let tls = match timeout_at(deadline, TlsAcceptor::from(cfg).accept(io)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(target: LOG, %peer, error = %e, "incoming TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let certs: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let stream = XmlStream::new(tls, pre).charge_to(&core.pre_auth_budget);
    Secure {
        core: core.clone(),
        state,
        peer,
        certs,
        authenticated: HashSet::new(),
        pairs: HashSet::new(),
        local: core.domain.clone(),
        bidi: false,
        link: None,
        stream_id: String::new(),
        resume_at: None,
    }
    .run(stream, deadline)
    .await;
}

/// The plaintext phase: our features say STARTTLS is required; nothing else
/// is accepted. `Err(None)`: the peer left.
async fn starttls(core: &Core, s: &mut XmlStream<TcpStream>) -> Result<(), Option<StreamError>> {
    let header = match s.next().await {
        Ok(Frame::Open(h)) => h,
        Ok(_) => return Err(Some(StreamError::new("not-well-formed"))),
        Err(f) => return Err(error_for(&f)),
    };
    let local = check_to(core, header.to.as_deref());
    let me = local.as_deref().unwrap_or(&core.domain);
    let hdr = wire::header(me, header.from.as_deref(), Some(&random_hex(16)));
    s.write(hdr.as_bytes()).await.map_err(|_| None)?;
    local?;
    let features = format!(
        "<stream:features><starttls xmlns='{}'><required/></starttls></stream:features>",
        ns::TLS
    );
    s.write(features.as_bytes()).await.map_err(|_| None)?;
    match s.next().await {
        Ok(Frame::Stanza(el)) if el.name() == "starttls" && el.ns() == ns::TLS => {
            let proceed = format!("<proceed xmlns='{}'/>", ns::TLS);
            s.write(proceed.as_bytes()).await.map_err(|_| None)
        }
        Ok(Frame::Close) => Err(None),
        Ok(_) => Err(Some(StreamError::text(
            "policy-violation",
            "this server federates over TLS only: STARTTLS first",
        ))),
        Err(f) => Err(error_for(&f)),
    }
}

/// The local domain a stream header's `to` names (the server's own when it
/// names none); `host-unknown` for a domain Kith does not serve.
fn check_to(core: &Core, to: Option<&str>) -> Result<String, Option<StreamError>> {
    match to {
        None => Ok(core.domain.clone()),
        Some(to) => super::served(core, to).ok_or_else(|| Some(unknown_host(core))),
    }
}

fn unknown_host(core: &Core) -> StreamError {
    let mut served = core.domain.clone();
    if core.config.muc.enabled {
        served.push_str(" and ");
        served.push_str(&crate::muc::domain(core));
    }
    StreamError::text("host-unknown", format!("this server serves {served}"))
}

/// An encrypted incoming stream.
struct Secure {
    core: Arc<Core>,
    state: Arc<S2sState>,
    peer: SocketAddr,
    certs: Vec<CertificateDer<'static>>,
    /// Remote domains this stream authenticated (SASL EXTERNAL or dialback).
    authenticated: HashSet<String>,
    /// Which of our domains each of them authenticated for.
    pairs: HashSet<Pair>,
    /// The local domain the current stream header was addressed to.
    local: String,
    /// The peer asked for a bidirectional stream (XEP-0288).
    bidi: bool,
    /// With bidi: Kith's stanzas for the peer's domain flow on this stream.
    link: Option<BidiLink>,
    /// The id Kith gave the current stream (dialback keys are bound to it).
    stream_id: String,
    /// The remote domain sent faster than its rate (`rate.rs`): nothing more
    /// is read from this stream before then.
    resume_at: Option<Instant>,
}

/// The outgoing side of a bidirectional incoming stream.
struct BidiLink {
    pair: Pair,
    id: u64,
    rx: mpsc::Receiver<Element>,
}

enum Step {
    Continue,
    /// SASL succeeded: the peer opens a new stream.
    Restart,
}

impl Secure {
    async fn run<T: Transport>(mut self, mut s: XmlStream<T>, deadline: Instant) {
        let end = self.serve(&mut s, deadline).await;
        match end {
            Some(e) => {
                tracing::info!(target: LOG, peer = %self.peer, domains = ?self.authenticated, condition = e.condition, text = ?e.text, "incoming stream closed with an error");
                wire::fail(&mut s, &e).await;
            }
            None => {
                tracing::info!(target: LOG, peer = %self.peer, domains = ?self.authenticated, "incoming stream closed");
                s.close().await;
            }
        }
        for d in &self.authenticated {
            self.state.incoming_release(d);
        }
        if let Some(mut link) = self.link.take() {
            super::drop_link(&self.state, &link.pair, link.id);
            link.rx.close();
            // Whatever was still queued goes out on a new link.
            while let Ok(el) = link.rx.try_recv() {
                super::route_out(&self.core, el);
            }
        }
    }

    fn cert_ok(&self, domain: &str) -> Result<(), String> {
        self.state.tls.valid_for(&self.certs, domain)
    }

    /// The whole stream; `Some(error)` to close with a stream error.
    async fn serve<T: Transport>(
        &mut self,
        s: &mut XmlStream<T>,
        deadline: Instant,
    ) -> Option<StreamError> {
        let mut shutdown = self.core.shutdown.clone();
        let mut sasl_done = false;
        let mut claimed: Option<String> = None;
        let mut header_pending = true;
        loop {
            let wait = if self.authenticated.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                self.core.config.s2s.idle_timeout
            };
            let frame = tokio::select! {
                item = next_out(&mut self.link) => {
                    // Bidirectional: a stanza of ours for the peer, on its stream.
                    let Some(el) = item else {
                        self.link = None;
                        continue;
                    };
                    let mut buf = Vec::new();
                    crate::xml::serialize(&wire::to_server(el), &mut buf);
                    if s.write(&buf).await.is_err() {
                        return None;
                    }
                    continue;
                }
                r = async {
                    if let Some(t) = self.resume_at {
                        tokio::time::sleep_until(t).await;
                    }
                    timeout(wait, s.next()).await
                } => match r {
                    Ok(Ok(f)) => f,
                    Ok(Err(StreamFail::Eof)) => return None,
                    Ok(Err(f)) => return error_for(&f),
                    Err(_) if self.authenticated.is_empty() => {
                        return Some(StreamError::text("connection-timeout", "authentication took too long"))
                    }
                    Err(_) => {
                        tracing::info!(target: LOG, peer = %self.peer, "idle incoming stream closed");
                        return None;
                    }
                },
                _ = shutdown.changed() => return Some(StreamError::new("system-shutdown")),
            };
            match frame {
                Frame::Open(h) => {
                    if !header_pending {
                        return Some(StreamError::text("not-well-formed", "stream opened twice"));
                    }
                    header_pending = false;
                    let id = random_hex(16);
                    self.stream_id = id.clone();
                    let local = check_to(&self.core, h.to.as_deref());
                    let me = local.as_deref().unwrap_or(&self.core.domain);
                    let hdr = wire::header(me, h.from.as_deref(), Some(&id));
                    if s.write(hdr.as_bytes()).await.is_err() {
                        return None;
                    }
                    match local {
                        Ok(l) => self.local = l,
                        Err(e) => return e,
                    }
                    if h.from.is_some() {
                        claimed = h.from.map(|f| f.to_ascii_lowercase());
                    }
                    let features = self.features(claimed.as_deref(), sasl_done);
                    if s.write(features.as_bytes()).await.is_err() {
                        return None;
                    }
                }
                Frame::Close => return None,
                Frame::Stanza(el) => {
                    if header_pending {
                        return Some(StreamError::new("not-well-formed"));
                    }
                    match self.element(s, el, claimed.as_deref()).await {
                        Ok(Step::Continue) => {}
                        Ok(Step::Restart) => {
                            sasl_done = true;
                            header_pending = true;
                            let l = limits(&self.core, self.core.config.s2s.stanza_size);
                            s.restart(l);
                        }
                        Err(e) => return e,
                    }
                }
            }
        }
    }

    fn features(&self, claimed: Option<&str>, sasl_done: bool) -> String {
        let mut f = String::from("<stream:features>");
        if !sasl_done {
            if let Some(d) = claimed {
                if self.cert_ok(d).is_ok() {
                    f.push_str(&format!(
                        "<mechanisms xmlns='{}'><mechanism>EXTERNAL</mechanism></mechanisms>",
                        ns::SASL
                    ));
                }
            }
            f.push_str(&format!(
                "<dialback xmlns='{NS_DIALBACK_FEATURE}'><errors/></dialback>"
            ));
            f.push_str(&format!("<bidi xmlns='{NS_BIDI_FEATURE}'/>"));
        }
        f.push_str("</stream:features>");
        f
    }

    async fn element<T: Transport>(
        &mut self,
        s: &mut XmlStream<T>,
        el: Element,
        claimed: Option<&str>,
    ) -> Result<Step, Option<StreamError>> {
        let ns_ = el.ns();
        match (ns_.as_str(), el.name()) {
            (ns::SASL, "auth") => self.sasl_external(s, &el, claimed).await,
            (NS_BIDI, "bidi") => {
                self.bidi = true;
                Ok(Step::Continue)
            }
            (NS_DIALBACK, "result") => {
                self.db_result(s, &el).await?;
                Ok(Step::Continue)
            }
            (NS_DIALBACK, "verify") => {
                self.db_verify(s, &el).await?;
                Ok(Step::Continue)
            }
            (ns::SERVER, "message" | "presence" | "iq") => {
                self.stanza(el).await?;
                Ok(Step::Continue)
            }
            _ => Err(Some(StreamError::text(
                "unsupported-stanza-type",
                format!(
                    "<{}/> is not handled on server-to-server streams",
                    el.name()
                ),
            ))),
        }
    }

    /// Accept `domain` as authenticated on this stream for our domain
    /// `local` (policy and per-domain limit permitting).
    fn admit(&mut self, domain: &str, local: &str, how: &str) -> Result<(), &'static str> {
        let pair = Pair {
            local: local.to_string(),
            remote: domain.to_string(),
        };
        if self.pairs.contains(&pair) {
            return Ok(());
        }
        policy::check(&self.core.config.s2s, domain)?;
        if !self.authenticated.contains(domain) {
            if !self
                .state
                .incoming_acquire(domain, self.core.config.s2s.connections_per_domain.max(1))
            {
                return Err("too many connections from this domain");
            }
            self.authenticated.insert(domain.to_string());
        }
        tracing::info!(target: LOG, peer = %self.peer, %domain, method = how, bidi = self.bidi, %local, "incoming stream authenticated");
        self.pairs.insert(pair.clone());
        if self.bidi && self.link.is_none() {
            let id = self.core.next_id();
            if let Some(rx) = super::adopt_link(&self.state, &self.core, &pair, id) {
                self.link = Some(BidiLink { pair, id, rx });
            }
        }
        Ok(())
    }

    async fn sasl_external<T: Transport>(
        &mut self,
        s: &mut XmlStream<T>,
        el: &Element,
        claimed: Option<&str>,
    ) -> Result<Step, Option<StreamError>> {
        let failure = |cond: &str| format!("<failure xmlns='{}'><{cond}/></failure>", ns::SASL);
        if el.attr("mechanism") != Some("EXTERNAL") {
            s.write(failure("invalid-mechanism").as_bytes())
                .await
                .map_err(|_| None)?;
            return Ok(Step::Continue);
        }
        let Some(domain) = claimed else {
            s.write(failure("not-authorized").as_bytes())
                .await
                .map_err(|_| None)?;
            return Ok(Step::Continue);
        };
        let text = el.text();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            domain.to_string()
        } else {
            match B64
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(a) => a.to_ascii_lowercase(),
                None => {
                    s.write(failure("incorrect-encoding").as_bytes())
                        .await
                        .map_err(|_| None)?;
                    return Ok(Step::Continue);
                }
            }
        };
        if authzid != domain {
            tracing::warn!(target: LOG, peer = %self.peer, %domain, %authzid, "SASL EXTERNAL for another domain refused");
            s.write(failure("invalid-authzid").as_bytes())
                .await
                .map_err(|_| None)?;
            return Ok(Step::Continue);
        }
        if let Err(why) = self.cert_ok(domain) {
            tracing::warn!(target: LOG, peer = %self.peer, %domain, reason = %why, "SASL EXTERNAL refused: certificate not valid for the domain");
            s.write(failure("not-authorized").as_bytes())
                .await
                .map_err(|_| None)?;
            return Ok(Step::Continue);
        }
        let local = self.local.clone();
        if let Err(why) = self.admit(domain, &local, "SASL EXTERNAL") {
            tracing::warn!(target: LOG, peer = %self.peer, %domain, reason = why, "incoming federation refused");
            s.write(failure("not-authorized").as_bytes())
                .await
                .map_err(|_| None)?;
            return Ok(Step::Continue);
        }
        s.write(format!("<success xmlns='{}'/>", ns::SASL).as_bytes())
            .await
            .map_err(|_| None)?;
        Ok(Step::Restart)
    }

    /// `<db:result/>`: the peer asks to be accepted as `from`, for our domain
    /// `to` (either of the two Kith serves). Kith accepts when the
    /// certificate is valid for `from` (the dialback key then needs no
    /// callback); anything else is refused with a dialback error.
    async fn db_result<T: Transport>(
        &mut self,
        s: &mut XmlStream<T>,
        el: &Element,
    ) -> Result<(), Option<StreamError>> {
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(Some(StreamError::text(
                "improper-addressing",
                "dialback needs from and to",
            )));
        };
        let from = from.to_ascii_lowercase();
        let reply = |ty: &str, err: Option<(&str, &str)>| {
            let mut r = format!(
                "<db:result xmlns:db='{NS_DIALBACK}' from='{}' to='{}' type='{ty}'",
                escape(to),
                escape(&from)
            );
            match err {
                Some((kind, cond)) => r.push_str(&format!(
                    "><error type='{kind}'><{cond} xmlns='{}'/></error></db:result>",
                    ns::STANZAS
                )),
                None => r.push_str("/>"),
            }
            r
        };
        let Some(local) = super::served(&self.core, to) else {
            let out = reply("error", Some(("cancel", "item-not-found")));
            return s.write(out.as_bytes()).await.map_err(|_| None);
        };
        let out = if let Err(why) = self.cert_ok(&from) {
            if policy::insecure(&self.core.config.s2s, &from) {
                // The admin listed this domain: classic dialback, asking the
                // domain's own (DNS-found) server whether it issued this key.
                tracing::warn!(target: LOG, peer = %self.peer, domain = %from, reason = %why, "INSECURE: invalid certificate tolerated (insecure_domains); verifying by dialback alone");
                let verified = timeout(
                    self.core.config.s2s.connect_timeout,
                    super::outgoing::verify_key(
                        &self.core,
                        &self.state,
                        &local,
                        &from,
                        &self.stream_id,
                        el.text().trim(),
                    ),
                )
                .await
                .unwrap_or(Err("the authoritative server did not answer in time".into()));
                match verified {
                    Ok(()) => {
                        match self.admit(&from, &local, "dialback (INSECURE: no valid certificate)")
                        {
                            Ok(()) => {
                                s.set_limits(limits(&self.core, self.core.config.s2s.stanza_size));
                                reply("valid", None)
                            }
                            Err(why) => {
                                tracing::warn!(target: LOG, peer = %self.peer, domain = %from, reason = why, "incoming federation refused");
                                reply("error", Some(("cancel", "policy-violation")))
                            }
                        }
                    }
                    Err(why) => {
                        tracing::warn!(target: LOG, peer = %self.peer, domain = %from, reason = %why, "dialback refused: the authoritative server did not confirm the key");
                        reply("invalid", None)
                    }
                }
            } else {
                tracing::warn!(target: LOG, peer = %self.peer, domain = %from, reason = %why, "dialback refused: certificate not valid for the domain");
                reply("error", Some(("auth", "not-authorized")))
            }
        } else {
            match self.admit(&from, &local, "dialback (certificate)") {
                Ok(()) => {
                    // Authenticated: from now on stanzas up to the s2s limit.
                    s.set_limits(limits(&self.core, self.core.config.s2s.stanza_size));
                    reply("valid", None)
                }
                Err(why) => {
                    tracing::warn!(target: LOG, peer = %self.peer, domain = %from, reason = why, "incoming federation refused");
                    reply("error", Some(("cancel", "policy-violation")))
                }
            }
        };
        s.write(out.as_bytes()).await.map_err(|_| None)
    }

    /// `<db:verify/>`: is this the key Kith gave on a stream it opened, from
    /// our domain `to` (either of the two Kith serves) to the asker?
    async fn db_verify<T: Transport>(
        &mut self,
        s: &mut XmlStream<T>,
        el: &Element,
    ) -> Result<(), Option<StreamError>> {
        let (Some(from), Some(to), Some(id)) = (el.attr("from"), el.attr("to"), el.attr("id"))
        else {
            return Err(Some(StreamError::text(
                "improper-addressing",
                "dialback verify needs from, to and id",
            )));
        };
        let local = super::served(&self.core, to);
        let valid = self.state.opened_to(id).is_some_and(|p| {
            local.as_deref() == Some(p.local.as_str())
                && p.remote.eq_ignore_ascii_case(from)
                && dialback::matches(
                    &dialback::key(&self.state.secret, &p.remote, &p.local, id),
                    &el.text(),
                )
        });
        if !valid {
            tracing::warn!(target: LOG, peer = %self.peer, asker = from, stream = id, local = to, "dialback verify refused: not a stream this server opened, or a wrong key");
        }
        let out = format!(
            "<db:verify xmlns:db='{NS_DIALBACK}' from='{}' to='{}' id='{}' type='{}'/>",
            escape(to),
            escape(from),
            escape(id),
            if valid { "valid" } else { "invalid" }
        );
        s.write(out.as_bytes()).await.map_err(|_| None)
    }

    /// A stanza: only from a domain this stream authenticated, only to a
    /// local domain it authenticated that domain for.
    async fn stanza(&mut self, el: Element) -> Result<(), Option<StreamError>> {
        if self.authenticated.is_empty() {
            return Err(Some(StreamError::text(
                "not-authorized",
                "authenticate (SASL EXTERNAL or dialback) before sending stanzas",
            )));
        }
        let from = el.attr("from").and_then(|f| Jid::new(f).ok());
        let Some(from) = from.filter(|f| {
            self.authenticated
                .contains(&f.domain().as_str().to_ascii_lowercase())
        }) else {
            return Err(Some(StreamError::text(
                "invalid-from",
                format!(
                    "'{}' is not a domain this stream authenticated",
                    el.attr("from").unwrap_or("")
                ),
            )));
        };
        let to = el.attr("to").and_then(|t| Jid::new(t).ok());
        let Some((to, local)) =
            to.and_then(|t| super::served(&self.core, t.domain().as_str()).map(|l| (t, l)))
        else {
            return Err(Some(unknown_host(&self.core)));
        };
        let pair = Pair {
            local,
            remote: from.domain().as_str().to_ascii_lowercase(),
        };
        if !self.pairs.contains(&pair) {
            return Err(Some(StreamError::text(
                "invalid-from",
                format!(
                    "{} did not authenticate for {} on this stream",
                    pair.remote, pair.local
                ),
            )));
        }
        let remote = pair.remote;
        let rates = &self.state.rates;
        let wait = rates.stanza(&remote, crate::xml::approx_len(&el));
        self.resume_at = (!wait.is_zero()).then(|| Instant::now() + wait);
        let el = wire::to_client(el);
        if el.name() == "presence" && el.attr("type") == Some("subscribe") {
            match rates.subscription(&remote) {
                Verdict::Accept => {}
                Verdict::Refuse { first } => {
                    if first {
                        tracing::warn!(target: LOG, peer = %self.peer, domain = %remote, "subscription requests over the rate limit: refusing them");
                    }
                    super::inbound::refuse(
                        &self.core,
                        &el,
                        StanzaError::new("wait", "policy-violation").with_text(format!(
                            "too many subscription requests from {remote}; try again later"
                        )),
                    );
                    return Ok(());
                }
                Verdict::Close => {
                    tracing::warn!(target: LOG, peer = %self.peer, domain = %remote, "far too many subscription requests: stream closed");
                    return Err(Some(StreamError::text(
                        "policy-violation",
                        format!("{remote} sent far too many subscription requests"),
                    )));
                }
            }
        }
        Box::pin(super::inbound::dispatch(&self.core, el, from, to)).await;
        Ok(())
    }
}

/// The next stanza for a bidirectional link; never resolves without one.
async fn next_out(link: &mut Option<BidiLink>) -> Option<Element> {
    match link {
        Some(l) => l.rx.recv().await,
        None => std::future::pending().await,
    }
}
