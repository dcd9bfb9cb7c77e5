//! The established session: stanzas in from the client go to the router;
//! stanzas queued for the session go out, batched into one write. The loop
//! also closes the stream when the session is kicked (conflict, too slow) or
//! the server shuts down, and sends a whitespace keepalive when idle.

use std::sync::Arc;
use std::time::Duration;

use jid::FullJid;
use minidom::Element;

use super::c2s::limits_session;
use super::idle_ping::{ping_iq, PingAction};
use super::{error_for, StreamError, StreamFail, Transport, XmlStream};
use crate::core::Core;
use crate::registry::SessionEvent;
use crate::session::{Kick, SessionHandle};
use crate::sm::table::Hibernation;
use crate::sm::{Resumed, Sm};
use crate::stanza::Kind;
use crate::xml::{ns, Frame};

/// Idle time before the server sends a whitespace keepalive.
const KEEPALIVE: Duration = Duration::from_secs(120);
/// A write that cannot complete in this time means a stuck peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum End {
    Closed,
    Error(StreamError),
    Gone,
}

/// Run a bound session until it ends; `bind_reply` (serialised, so that no
/// element outlives its sending) is written first. `effects` (what Bind2
/// inline requests enabled) are applied before the session becomes routable.
/// `stream` comes boxed: an async fn keeps its by-value arguments beside the
/// locals they move into, so an inline stream (~2 KiB with TLS) would be held
/// twice here and twice more in `serve`, for the whole session.
pub async fn run<T: Transport>(
    core: Arc<Core>,
    mut stream: Box<XmlStream<T>>,
    jid: FullJid,
    bind_reply: Vec<u8>,
    effects: Vec<crate::registry::SessionEffect>,
    sm: Sm,
) {
    let max_queued = (core.limits().stanza_size * 8).max(1024 * 1024);
    let max_items = core.limits().session_queue.max(1);
    let session = Arc::new(SessionHandle::new(
        jid,
        core.next_id(),
        max_items,
        max_queued,
        core.registry.hold(),
    ));
    for effect in effects {
        effect(&core, &session);
    }
    // XEP-0198 enabled inline (Bind2): resumable from the start.
    sm.register(&core, &session);
    core.sessions.insert(session.clone());
    stream.set_limits(limits_session(&core));
    stream.release_buffers();
    serve(core, stream, session, sm, bind_reply, None).await
}

/// Run a session resumed by a new connection (XEP-0198): `<resumed/>` and
/// the stanzas the client missed go first, then what arrived meanwhile.
/// Resumed inside SASL2, `success` (its `<success/>` holds the `<resumed/>`)
/// takes the place of the bare `<resumed/>`.
pub async fn run_resumed<T: Transport>(
    core: Arc<Core>,
    mut stream: Box<XmlStream<T>>,
    r: Resumed,
    success: Option<Vec<u8>>,
) {
    stream.set_limits(limits_session(&core));
    stream.release_buffers();
    tracing::info!(jid = %r.session.jid, resent = r.sm.unacked.len(), "session resumed");
    let first = match success {
        Some(mut first) => {
            first.extend(r.sm.resend_bytes());
            first
        }
        None => r.sm.resumed_bytes(&r.previd),
    };
    serve(core, stream, r.session, r.sm, first, Some(r.rows)).await
}

async fn serve<T: Transport>(
    core: Arc<Core>,
    mut stream: Box<XmlStream<T>>,
    session: Arc<SessionHandle>,
    mut sm: Sm,
    first: Vec<u8>,
    reattach: Option<Vec<i64>>,
) {
    let mut shutdown = core.shutdown.clone();
    // XEP-0199: ping the client when it has been silent for a while.
    let mut pinger = super::idle_ping::IdlePing::new(&core.config.ping);
    // Boxed, like every rare or large step below: an idle session's task
    // holds only the loop's own state, not the largest future it ever awaits.
    let sent = Box::pin(stream.write(&first)).await;
    drop(first);
    if let Some(rows) = reattach {
        Box::pin(crate::message::reattach(&core, &session, &rows)).await;
    }
    let end = if sent.is_err() {
        End::Gone
    } else {
        loop {
            // Stanzas already parsed (several may arrive in one read).
            let mut ended = None;
            while let Some(frame) = stream.take_ready() {
                match frame {
                    Frame::Stanza(el) if el.ns() == crate::sm::NS => {
                        let reply = match sm.nonza(&core, &session, &el) {
                            Ok(r) => r,
                            Err(e) => {
                                ended = Some(End::Error(e));
                                break;
                            }
                        };
                        if let Some(reply) = reply {
                            // `<a h/>` covers only stanzas whose archive rows are durable.
                            if reply.name() == "a" {
                                Box::pin(crate::sm::durable(&core, &session)).await;
                            }
                            if Box::pin(tokio::time::timeout(WRITE_TIMEOUT, stream.send(&reply)))
                                .await
                                .map_or(true, |r| r.is_err())
                            {
                                ended = Some(End::Gone);
                                break;
                            }
                        }
                    }
                    Frame::Stanza(el) => {
                        let counted = el.ns() == ns::CLIENT && Kind::of(&el).is_some();
                        // Boxed: routing is a large future, only alive while a
                        // stanza is handled, so idle sessions do not carry it.
                        if let Err(e) = Box::pin(incoming(&core, &session, el)).await {
                            ended = Some(End::Error(e));
                            break;
                        }
                        // Counted only once handled: an ack covers durable effects.
                        if counted {
                            sm.count_in();
                        }
                    }
                    Frame::Close => {
                        ended = Some(End::Closed);
                        break;
                    }
                    Frame::Open(_) => {
                        ended = Some(End::Error(StreamError::text(
                            "not-well-formed",
                            "stream opened twice",
                        )));
                        break;
                    }
                }
            }
            if let Some(e) = ended {
                break e;
            }
            // Every frame handled: about 0.9 KiB less per quiet session.
            stream.release_buffers();
            let ack_due = sm.request_due(&core);
            tokio::select! {
                r = stream.readable() => {
                    let r = match r {
                        Ok(()) => Box::pin(stream.read_some()).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => pinger.heard(),
                        Err(StreamFail::Eof) => break End::Gone,
                        Err(f) => break error_for(&f).map(End::Error).unwrap_or(End::Gone),
                    }
                },
                _ = session.queued() => {
                    // Everything queued goes out in one write.
                    let items = session.take_queued_items();
                    if items.is_empty() {
                        continue;
                    }
                    let out = match sm.outgoing(items, &core) {
                        Ok(out) => out,
                        Err(e) => break End::Error(e),
                    };
                    match Box::pin(tokio::time::timeout(WRITE_TIMEOUT, stream.write(&out))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Gone,
                        Err(_) if sm.resumable() => break End::Gone,
                        Err(_) => break End::Error(StreamError::text("connection-timeout", "the client stopped reading")),
                    }
                }
                _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)), if ack_due.is_some() => {
                    sm.requested_now();
                    if Box::pin(tokio::time::timeout(WRITE_TIMEOUT, stream.write(&crate::sm::request_bytes()))).await.map_or(true, |r| r.is_err()) {
                        break End::Gone;
                    }
                }
                kick = session.kicked() => break match kick {
                    Kick::Conflict => End::Error(StreamError::text("conflict", "replaced by a new session")),
                    Kick::TooSlow => End::Error(StreamError::text("policy-violation", "too many stanzas waiting: the client is not reading")),
                    Kick::Resumed => End::Gone,
                },
                _ = shutdown.changed() => break End::Error(StreamError::text("system-shutdown", "the server is shutting down")),
                _ = tokio::time::sleep_until(pinger.deadline()) => match pinger.check() {
                    PingAction::Ping => session.send(ping_iq(&core.domain, session.jid.as_str())),
                    // A half-open connection: a resumable session hibernates.
                    PingAction::Dead if sm.resumable() => break End::Gone,
                    PingAction::Dead => break End::Error(StreamError::text("connection-timeout", "no answer to a ping")),
                    PingAction::Wait => {}
                },
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if Box::pin(tokio::time::timeout(WRITE_TIMEOUT, stream.write(b" "))).await.map_or(true, |r| r.is_err()) {
                        break End::Gone;
                    }
                }
            }
        }
    };

    if matches!(end, End::Gone) && sm.resumable() {
        // XEP-0198: the connection is gone but the client may resume.
        drop(stream);
        match Box::pin(crate::sm::table::hibernate(&core, &session, sm)).await {
            Hibernation::Resumed => return,
            Hibernation::End(sm) => Box::pin(end_session(&core, &session, sm, true)).await,
        }
        return;
    }
    Box::pin(end_session(&core, &session, sm, false)).await;
    Box::pin(finish(&core, &session, &mut stream, end)).await;
}

/// The session is over: unacked messages to the offline store (XEP-0198),
/// out of the session table, unavailable presence.
async fn end_session(core: &Arc<Core>, session: &Arc<SessionHandle>, sm: Sm, parked: bool) {
    Box::pin(crate::sm::table::terminate(core, session, sm, parked)).await;
    core.sessions.remove(session);
    session.close();
    Box::pin(core.session_event(SessionEvent::Ended, session)).await;
    tracing::info!(jid = %session.jid, "session ended");
}

async fn finish<T: Transport>(
    core: &Core,
    session: &SessionHandle,
    stream: &mut XmlStream<T>,
    end: End,
) {
    match end {
        End::Closed => stream.close().await,
        End::Error(e) => {
            tracing::info!(jid = %session.jid, condition = e.condition, "session closed with a stream error");
            stream.fail(&core.domain, &e).await
        }
        End::Gone => {}
    }
}

/// One top-level element from the client.
async fn incoming(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    el: Element,
) -> Result<(), StreamError> {
    if el.ns() != ns::CLIENT {
        if let Some(h) = core.registry.nonza_handler(&el.ns(), el.name()) {
            h(core, session, &el);
            return Ok(());
        }
    }
    if el.ns() != ns::CLIENT || Kind::of(&el).is_none() {
        return Err(StreamError::text(
            "unsupported-stanza-type",
            format!("<{}/> is not a stanza this server handles", el.name()),
        ));
    }
    crate::router::route_from_client(core, session, el).await;
    Ok(())
}
