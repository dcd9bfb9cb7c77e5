//! One component connection (XEP-0114): the stream header names the domain,
//! the component proves the shared secret with `<handshake/>` =
//! hex(SHA-1(stream id ‖ secret)), compared in constant time; then stanzas
//! flow both ways until either side closes. A wrong secret gets
//! `<not-authorized/>`, an unknown domain `<host-unknown/>`, a domain that
//! already has a connection `<conflict/>`. The same parser limits as client
//! sessions apply, and the outbound queue is bounded the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use jid::FullJid;
use minidom::Element;
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use super::{renamespace, NS_COMPONENT};
use crate::core::{random_hex, Core};
use crate::session::{Kick, SessionHandle};
use crate::stream::idle_ping::{ping_iq, IdlePing, PingAction};
use crate::stream::{error_for, StreamError, StreamFail, XmlStream};
use crate::xml::{ns, Frame, ParserLimits};

/// A write that cannot complete in this time means a stuck component.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serve one accepted connection on the component listener.
pub async fn serve(core: Arc<Core>, tcp: TcpStream, peer: SocketAddr) {
    let _alive = core.alive.clone();
    let _ = tcp.set_nodelay(true);
    let l = &core.limits();
    let Some(_permit) = core.conn_limiter.acquire(peer.ip()) else {
        tracing::warn!(%peer, "too many connections from this address");
        return;
    };
    let mut stream = XmlStream::new(
        tcp,
        ParserLimits {
            stanza_bytes: l.pre_auth_stanza_size,
            depth: l.max_depth,
            attributes: l.max_attributes,
        },
    )
    .charge_to(&core.pre_auth_budget);
    let deadline = tokio::time::Instant::now() + l.auth_timeout;
    let domain = match timeout_at(deadline, handshake(&core, &mut stream)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::info!(%peer, condition = e.condition, "component refused");
            stream.fail(&core.domain, &e).await;
            return;
        }
        Err(_) => {
            let e = StreamError::text("connection-timeout", "no handshake in time");
            stream.fail(&core.domain, &e).await;
            return;
        }
    };
    let Ok(jid) = FullJid::new(&format!("{domain}/component")) else {
        stream
            .fail(&core.domain, &StreamError::new("host-unknown"))
            .await;
        return;
    };
    let handle = Arc::new(SessionHandle::new(
        jid,
        core.next_id(),
        l.session_queue.max(1),
        (l.stanza_size * 8).max(1024 * 1024),
        None,
    ));
    handle.set_rewrite(|el| renamespace(el, ns::CLIENT, NS_COMPONENT));
    if !core.components.claim(&domain, handle.clone()) {
        tracing::warn!(%peer, %domain, "a second connection for a component domain");
        let e = StreamError::text("conflict", "this component is already connected");
        stream.fail(&core.domain, &e).await;
        return;
    }
    if stream.write(b"<handshake/>").await.is_err() {
        core.components.release(&domain, handle.id);
        return;
    }
    tracing::info!(%peer, %domain, "component connected");
    stream.set_limits(crate::stream::c2s::limits_session(&core));
    stream.release_buffers();
    let end = Box::pin(run(&core, &mut stream, &handle, &domain)).await;
    core.components.release(&domain, handle.id);
    handle.close();
    match end {
        Some(e) => {
            tracing::info!(%domain, condition = e.condition, "component closed with a stream error");
            stream.fail(&core.domain, &e).await;
        }
        None => stream.close().await,
    }
    tracing::info!(%domain, "component disconnected");
}

/// Header and handshake; returns the authenticated domain.
async fn handshake(core: &Core, stream: &mut XmlStream<TcpStream>) -> Result<String, StreamError> {
    let header = match stream.next().await {
        Ok(Frame::Open(h)) => h,
        Ok(_) => return Err(StreamError::new("not-well-formed")),
        Err(f) => return Err(fail_error(&f)),
    };
    let domain = header.to.unwrap_or_default().to_ascii_lowercase();
    let id = random_hex(16);
    let from = if domain.is_empty() {
        core.domain.as_str()
    } else {
        domain.as_str()
    };
    if stream.send_header(from, &id, NS_COMPONENT).await.is_err() {
        return Err(StreamError::new("connection-timeout"));
    }
    let Some(secret) = core.config.components.get(&domain) else {
        return Err(StreamError::text(
            "host-unknown",
            "no component is configured for that domain",
        ));
    };
    let el = match stream.next().await {
        Ok(Frame::Stanza(el)) => el,
        Ok(_) => return Err(StreamError::new("not-well-formed")),
        Err(f) => return Err(fail_error(&f)),
    };
    if el.name() != "handshake" || el.ns() != NS_COMPONENT {
        return Err(StreamError::text("not-authorized", "handshake first"));
    }
    let expected = handshake_digest(&id, &secret.0);
    let given = el.text().trim().to_ascii_lowercase();
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(domain)
    } else {
        Err(StreamError::text("not-authorized", "wrong handshake"))
    }
}

fn fail_error(f: &StreamFail) -> StreamError {
    error_for(f).unwrap_or_else(|| StreamError::new("connection-timeout"))
}

/// Lowercase hex SHA-1 of the stream id followed by the secret (XEP-0114 §3).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut input = Vec::with_capacity(stream_id.len() + secret.len());
    input.extend_from_slice(stream_id.as_bytes());
    input.extend_from_slice(secret.as_bytes());
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The established component stream. Returns the stream error to send, or
/// `None` for a clean close (or a lost connection).
async fn run(
    core: &Arc<Core>,
    stream: &mut XmlStream<TcpStream>,
    handle: &Arc<SessionHandle>,
    domain: &str,
) -> Option<StreamError> {
    let mut shutdown = core.shutdown.clone();
    let mut pinger = IdlePing::new(&core.config.ping);
    loop {
        while let Some(frame) = stream.take_ready() {
            match frame {
                Frame::Stanza(el) => {
                    let el = renamespace(&el, NS_COMPONENT, ns::CLIENT);
                    if let Err(e) = Box::pin(super::route::from_component(core, handle, el)).await {
                        return Some(e);
                    }
                }
                Frame::Close => return None,
                Frame::Open(_) => {
                    return Some(StreamError::text("not-well-formed", "stream opened twice"))
                }
            }
        }
        tokio::select! {
            r = stream.readable() => {
                let r = match r {
                    Ok(()) => Box::pin(stream.read_some()).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => pinger.heard(),
                    Err(StreamFail::Eof) => return None,
                    Err(f) => return error_for(&f),
                }
            },
            _ = handle.queued() => {
                let out = handle.take_queued();
                if out.is_empty() {
                    continue;
                }
                match tokio::time::timeout(WRITE_TIMEOUT, stream.write(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(StreamError::text("connection-timeout", "the component stopped reading")),
                }
            }
            kick = handle.kicked() => return Some(match kick {
                // Components do not use stream management; never resumed.
                Kick::Conflict | Kick::Resumed => StreamError::new("conflict"),
                Kick::TooSlow => StreamError::text("policy-violation", "too many stanzas waiting: the component is not reading"),
            }),
            _ = shutdown.changed() => return Some(StreamError::text("system-shutdown", "the server is shutting down")),
            _ = tokio::time::sleep_until(pinger.deadline()) => match pinger.check() {
                PingAction::Ping => {
                    let ping: Element = ping_iq(&core.domain, domain);
                    super::send(core, &ping);
                }
                PingAction::Dead => return Some(StreamError::text("connection-timeout", "no answer to a ping")),
                PingAction::Wait => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_is_hex_sha1_of_id_and_secret() {
        assert_eq!(
            handshake_digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
    }
}
