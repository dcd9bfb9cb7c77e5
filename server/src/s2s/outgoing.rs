//! Outgoing server-to-server streams: one task per (local domain, remote
//! domain) — the local domain is Kith's own, or the group chat service's for
//! what its rooms send, and the stream speaks as that domain (stream header,
//! SASL EXTERNAL, dialback key). The task finds
//! the peer (`resolve.rs`), connects, requires TLS (STARTTLS offered by the
//! peer, or Direct TLS), verifies the certificate for the domain, presents our
//! own, authenticates with SASL EXTERNAL or else dialback, and then writes the
//! queued stanzas. A peer that offers no TLS or presents a certificate that is
//! not valid for its domain is never sent anything: queued stanzas bounce.
//! The link closes after `idle_timeout` without traffic.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minidom::Element;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::resolve::{self, Target};
use super::wire::{self, NS_BIDI, NS_BIDI_FEATURE, NS_DIALBACK};
use super::{bounce_local, dialback, drop_link, policy, Pair, S2sState};
use crate::core::Core;
use crate::stanza::StanzaError;
use crate::stream::{StreamError, Transport, XmlStream};
use crate::xml::{escape, ns, Frame, ParserLimits};

const LOG: &str = "kith::federation";

type Secure = XmlStream<TlsStream<TcpStream>>;

/// An authenticated outgoing stream.
struct Connected {
    stream: Secure,
    /// The id the peer gave the stream (dialback keys are bound to it).
    id: Option<String>,
    /// XEP-0288: the peer may send its stanzas to us on this stream too.
    bidi: bool,
}

/// Why a connection could not be set up; the condition bounced to senders.
struct Failed {
    condition: &'static str,
    why: String,
}

fn not_found(why: impl Into<String>) -> Failed {
    Failed {
        condition: "remote-server-not-found",
        why: why.into(),
    }
}

/// Run the link `id` for `pair` until it fails, idles out or the server stops.
pub async fn run(core: Arc<Core>, pair: Pair, id: u64, mut rx: mpsc::Receiver<Element>) {
    let _alive = core.alive.clone();
    let Some(state) = core.s2s.get().cloned() else {
        return;
    };
    let domain = pair.remote.clone();
    let connected = match timeout(
        core.config.s2s.connect_timeout,
        connect(&core, &state, &pair),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Failed {
            condition: "remote-server-timeout",
            why: "connecting and authenticating took too long".into(),
        }),
    };
    let Connected {
        stream,
        id: stream_id,
        bidi,
    } = match connected {
        Ok(c) => c,
        Err(f) => {
            tracing::warn!(target: LOG, %domain, reason = %f.why, local = %pair.local, "outgoing federation failed");
            drop_link(&state, &pair, id);
            rx.close();
            while let Ok(el) = rx.try_recv() {
                bounce_local(
                    &core,
                    &el,
                    StanzaError::new("cancel", f.condition).with_text(f.why.clone()),
                );
            }
            return;
        }
    };
    tracing::info!(target: LOG, %domain, local = %pair.local, "outgoing stream ready");
    let leftover = pump(&core, &pair, stream, &mut rx, bidi).await;
    drop_link(&state, &pair, id);
    if let Some(sid) = &stream_id {
        state.forget_opened(sid);
    }
    rx.close();
    // A stanza that could not be written, and whatever was queued behind it,
    // goes out on a new link.
    for el in leftover
        .into_iter()
        .chain(std::iter::from_fn(|| rx.try_recv().ok()))
    {
        super::route_out(&core, el);
    }
}

/// Write queued stanzas until idle, closed or shut down. Returns a stanza that
/// was taken from the queue but could not be written.
async fn pump(
    core: &Arc<Core>,
    pair: &Pair,
    mut s: Secure,
    rx: &mut mpsc::Receiver<Element>,
    bidi: bool,
) -> Option<Element> {
    let domain = pair.remote.as_str();
    let idle = core.config.s2s.idle_timeout;
    let mut last = Instant::now();
    let mut shutdown = core.shutdown.clone();
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(el) = item else { break };
                buf.clear();
                let out = wire::to_server(el.clone());
                crate::xml::serialize(&out, &mut buf);
                if timeout(std::time::Duration::from_secs(30), s.write(&buf)).await.map_or(true, |r| r.is_err()) {
                    tracing::info!(target: LOG, %domain, "outgoing stream write failed");
                    return Some(el);
                }
                last = Instant::now();
            }
            r = s.readable() => {
                let r = match r {
                    Ok(()) => s.read_some().await,
                    Err(e) => Err(e),
                };
                if r.is_err() {
                    tracing::info!(target: LOG, %domain, "outgoing stream closed by the peer");
                    return None;
                }
                while let Some(f) = s.take_ready() {
                    match f {
                        Frame::Close => {
                            tracing::info!(target: LOG, %domain, "outgoing stream closed by the peer");
                            s.close().await;
                            return None;
                        }
                        Frame::Stanza(e) if e.name() == "error" && e.ns() == ns::STREAM => {
                            let cond = e.children().find(|c| c.ns() == ns::STREAMS_ERR).map(|c| c.name().to_string());
                            tracing::warn!(target: LOG, %domain, condition = ?cond, "the peer closed the outgoing stream with an error");
                            return None;
                        }
                        Frame::Stanza(e) if bidi && e.ns() == ns::SERVER => {
                            // XEP-0288: the peer's stanzas on our stream, from
                            // the domain whose certificate we verified only.
                            if let Err(err) = Box::pin(from_peer(core, pair, e)).await {
                                wire::fail(&mut s, &err).await;
                                return None;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(last + idle) => {
                tracing::info!(target: LOG, %domain, "idle outgoing stream closed");
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    s.close().await;
    None
}

/// Resolve, connect and authenticate; the stream and the id the peer gave it.
async fn connect(core: &Arc<Core>, state: &S2sState, pair: &Pair) -> Result<Connected, Failed> {
    let domain = pair.remote.as_str();
    if let Err(why) = policy::check(&core.config.s2s, domain) {
        return Err(Failed {
            condition: "not-allowed",
            why: why.into(),
        });
    }
    let targets = resolve::targets(&core.config.s2s, domain).await;
    if targets.is_empty() {
        return Err(not_found(format!("no server found for {domain} in DNS")));
    }
    let mut last = not_found(format!("no server of {domain} could be reached"));
    for t in targets {
        match attempt(core, state, pair, &t).await {
            Ok(r) => return Ok(r),
            Err(f) => {
                tracing::info!(target: LOG, %domain, addr = %t.addr, reason = %f.why, "connection attempt failed");
                last = f;
            }
        }
    }
    Err(last)
}

fn limits(core: &Core) -> ParserLimits {
    ParserLimits {
        stanza_bytes: core.config.s2s.stanza_size,
        depth: core.limits().max_depth,
        attributes: core.limits().max_attributes,
    }
}

async fn next<T: Transport>(s: &mut XmlStream<T>, what: &str) -> Result<Element, Failed> {
    match s.next().await {
        Ok(Frame::Stanza(e)) if e.name() == "error" && e.ns() == ns::STREAM => {
            let cond = e
                .children()
                .find(|c| c.ns() == ns::STREAMS_ERR)
                .map(|c| c.name().to_string())
                .unwrap_or_default();
            Err(not_found(format!(
                "the peer sent a stream error ({cond}) while we waited for {what}"
            )))
        }
        Ok(Frame::Stanza(e)) => Ok(e),
        Ok(Frame::Open(_)) => Err(not_found(format!(
            "unexpected stream header while waiting for {what}"
        ))),
        Ok(Frame::Close) => Err(not_found(format!(
            "the peer closed the stream while we waited for {what}"
        ))),
        Err(e) => Err(not_found(format!("{e} while waiting for {what}"))),
    }
}

/// Open a stream from `local` to `domain`; the id the peer gave it and its
/// features.
async fn open<T: Transport>(
    s: &mut XmlStream<T>,
    local: &str,
    domain: &str,
) -> Result<(Option<String>, Element), Failed> {
    let hdr = wire::header(local, Some(domain), None);
    s.write(hdr.as_bytes())
        .await
        .map_err(|e| not_found(e.to_string()))?;
    let id = match s.next().await {
        Ok(Frame::Open(h)) => h.id,
        Ok(_) => return Err(not_found("the peer did not open a stream")),
        Err(e) => {
            return Err(not_found(format!(
                "{e} while waiting for the stream header"
            )))
        }
    };
    let features = next(s, "stream features").await?;
    if features.name() != "features" || features.ns() != ns::STREAM {
        return Err(not_found("the peer sent no stream features"));
    }
    Ok((id, features))
}

async fn attempt(
    core: &Arc<Core>,
    state: &S2sState,
    pair: &Pair,
    t: &Target,
) -> Result<Connected, Failed> {
    let (local, domain) = (pair.local.as_str(), pair.remote.as_str());
    let tcp = TcpStream::connect(t.addr)
        .await
        .map_err(|e| not_found(format!("cannot connect to {}: {e}", t.addr)))?;
    let _ = tcp.set_nodelay(true);
    let tcp = if t.direct_tls {
        tcp
    } else {
        let mut s = XmlStream::new(tcp, limits(core));
        let (_, features) = open(&mut s, local, domain).await?;
        if features.get_child("starttls", ns::TLS).is_none() {
            tracing::warn!(target: LOG, %domain, "REFUSED: the peer offers no TLS; Kith never federates in plaintext");
            s.close().await;
            return Err(not_found(format!("{domain} does not offer TLS")));
        }
        s.write(format!("<starttls xmlns='{}'/>", ns::TLS).as_bytes())
            .await
            .map_err(|e| not_found(e.to_string()))?;
        let proceed = next(&mut s, "<proceed/>").await?;
        if proceed.name() != "proceed" {
            return Err(not_found("the peer refused STARTTLS"));
        }
        let XmlStream { io, .. } = s;
        io
    };
    let insecure = policy::insecure(&core.config.s2s, domain);
    let cfg = if insecure {
        tracing::warn!(target: LOG, %domain, "INSECURE: certificate of this domain is not checked (listed in insecure_domains); dialback only");
        state.tls.client_insecure.clone()
    } else if t.direct_tls {
        state.tls.client_direct.clone()
    } else {
        state.tls.client.clone()
    };
    let name = ServerName::try_from(domain.to_string())
        .map_err(|e| not_found(format!("{domain} is not a valid server name: {e}")))?;
    let tls = TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            tracing::warn!(target: LOG, %domain, error = %e, "REFUSED: TLS with the peer failed (certificate not valid for the domain?)");
            not_found(format!("TLS with {domain} failed: {e}"))
        })?;
    let mut s = XmlStream::new(tls, limits(core));
    let (id, features) = open(&mut s, local, domain).await?;
    let bidi = features.get_child("bidi", NS_BIDI_FEATURE).is_some();
    if bidi {
        s.write(format!("<bidi xmlns='{NS_BIDI}'/>").as_bytes())
            .await
            .map_err(|e| not_found(e.to_string()))?;
    }
    let external = !insecure
        && features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
            m.children()
                .any(|c| c.name() == "mechanism" && c.text() == "EXTERNAL")
        });
    if external {
        let auth = format!(
            "<auth xmlns='{}' mechanism='EXTERNAL'>{}</auth>",
            ns::SASL,
            B64.encode(local.as_bytes())
        );
        s.write(auth.as_bytes())
            .await
            .map_err(|e| not_found(e.to_string()))?;
        let answer = next(&mut s, "the SASL answer").await?;
        if answer.name() == "success" {
            s.restart(limits(core));
            let (id, _) = open(&mut s, local, domain).await?;
            tracing::info!(target: LOG, %domain, direct_tls = t.direct_tls, method = "SASL EXTERNAL", %local, "outgoing stream authenticated");
            return Ok(Connected {
                stream: s,
                id,
                bidi,
            });
        }
        tracing::info!(target: LOG, %domain, "SASL EXTERNAL refused by the peer; trying dialback");
    }
    // Dialback (XEP-0220), the key bound to the stream id the peer gave us.
    let Some(sid) = id.clone() else {
        return Err(not_found(
            "the peer gave the stream no id; dialback impossible",
        ));
    };
    let key = dialback::key(&state.secret, domain, local, &sid);
    state.remember_opened(&sid, pair);
    let result = format!(
        "<db:result xmlns:db='{NS_DIALBACK}' from='{}' to='{}'>{key}</db:result>",
        escape(local),
        escape(domain)
    );
    let outcome = async {
        s.write(result.as_bytes())
            .await
            .map_err(|e| not_found(e.to_string()))?;
        let answer = next(&mut s, "the dialback result").await?;
        if answer.name() == "result"
            && answer.ns() == NS_DIALBACK
            && answer.attr("type") == Some("valid")
        {
            Ok(())
        } else {
            let cond = answer
                .get_child("error", NS_DIALBACK)
                .or_else(|| answer.children().find(|c| c.name() == "error"))
                .and_then(|e| e.children().next())
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| answer.attr("type").unwrap_or("?").to_string());
            Err(not_found(format!("{domain} refused our dialback ({cond})")))
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            tracing::info!(target: LOG, %domain, direct_tls = t.direct_tls, method = "dialback", %local, "outgoing stream authenticated");
            Ok(Connected {
                stream: s,
                id: Some(sid),
                bidi,
            })
        }
        Err(f) => {
            state.forget_opened(&sid);
            let _ = s
                .write(
                    format!(
                        "<stream:error><undefined-condition xmlns='{}'/></stream:error>",
                        ns::STREAMS_ERR
                    )
                    .as_bytes(),
                )
                .await;
            s.close().await;
            Err(f)
        }
    }
}

/// A stanza the peer sent on our bidirectional stream: only from its own
/// domain, only to the local domain the stream speaks for; otherwise the
/// stream closes with a stream error.
async fn from_peer(core: &Arc<Core>, pair: &Pair, e: Element) -> Result<(), StreamError> {
    let (local, domain) = (pair.local.as_str(), pair.remote.as_str());
    let from = e.attr("from").and_then(|f| jid::Jid::new(f).ok());
    let Some(from) = from.filter(|f| f.domain().as_str().eq_ignore_ascii_case(domain)) else {
        return Err(StreamError::text(
            "invalid-from",
            format!("this stream is authenticated for {domain} only"),
        ));
    };
    let to = e.attr("to").and_then(|t| jid::Jid::new(t).ok());
    let Some(to) = to.filter(|t| t.domain().as_str().eq_ignore_ascii_case(local)) else {
        return Err(StreamError::text(
            "host-unknown",
            format!("this stream serves {local}"),
        ));
    };
    super::inbound::dispatch(core, wire::to_client(e), from, to).await;
    Ok(())
}

/// Dialback verification (XEP-0220 §2.1.2), for an `insecure_domains` peer
/// only: ask `domain`'s authoritative server, found through DNS, whether it
/// issued `key` for the stream `id` it opened to our domain `local`.
pub async fn verify_key(
    core: &Arc<Core>,
    state: &S2sState,
    local: &str,
    domain: &str,
    id: &str,
    key: &str,
) -> Result<(), String> {
    let targets = resolve::targets(&core.config.s2s, domain).await;
    let t = targets
        .first()
        .ok_or_else(|| format!("no server found for {domain} in DNS"))?;
    let tcp = TcpStream::connect(t.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    let tcp = if t.direct_tls {
        tcp
    } else {
        let mut s = XmlStream::new(tcp, limits(core));
        let (_, features) = open(&mut s, local, domain).await.map_err(|f| f.why)?;
        if features.get_child("starttls", ns::TLS).is_none() {
            return Err(format!("{domain} does not offer TLS"));
        }
        s.write(format!("<starttls xmlns='{}'/>", ns::TLS).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        next(&mut s, "<proceed/>").await.map_err(|f| f.why)?;
        let XmlStream { io, .. } = s;
        io
    };
    let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(state.tls.client_insecure.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {domain} failed: {e}"))?;
    let mut s = XmlStream::new(tls, limits(core));
    open(&mut s, local, domain).await.map_err(|f| f.why)?;
    let ask = format!(
        "<db:verify xmlns:db='{NS_DIALBACK}' from='{}' to='{}' id='{}'>{}</db:verify>",
        escape(local),
        escape(domain),
        escape(id),
        escape(key)
    );
    s.write(ask.as_bytes()).await.map_err(|e| e.to_string())?;
    let answer = next(&mut s, "the dialback verify answer")
        .await
        .map_err(|f| f.why)?;
    s.close().await;
    let ok = answer.name() == "verify"
        && answer.ns() == NS_DIALBACK
        && answer.attr("id") == Some(id)
        && answer.attr("type") == Some("valid");
    if ok {
        Ok(())
    } else {
        Err(format!("{domain} did not confirm the key"))
    }
}
