//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`, subprotocol `xmpp`.
//!
//! Each text message is one element; the XMPP session behind it is the same
//! one TCP clients get (`kith_server::WebHandle::open_framed`): negotiation,
//! SASL, limits, session loop. This file only relays messages both ways.
//! Messages larger than the stanza limit (plus 4 KiB) close the WebSocket;
//! binary messages are refused (RFC 7395 §3.2). An idle connection gets a
//! WebSocket ping every 60 s instead of whitespace keepalives.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use crate::routes::AppState;

/// Idle time before the server sends a WebSocket ping.
const PING_EVERY: Duration = Duration::from_secs(60);
/// RFC 6455 close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// `GET /xmpp-websocket`: the upgrade. A client that does not ask for the
/// `xmpp` subprotocol gets `400` (RFC 7395 §3.1).
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = ws.protocols(["xmpp"]);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "the 'xmpp' subprotocol is required\n",
        )
            .into_response();
    }
    let max = state.xmpp.stanza_size() + 4096;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| relay(socket, state, peer))
}

/// Relay messages between the WebSocket and the XMPP session until either ends.
async fn relay(socket: WebSocket, state: AppState, peer: SocketAddr) {
    let (mut to_session, mut from_session) = match state.xmpp.open_framed(peer) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open an XMPP session for a WebSocket");
            return;
        }
    };
    let (mut sink, mut source) = socket.split();
    let mut close = None;
    loop {
        tokio::select! {
            m = source.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if to_session.send(t.as_str()).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    close = Some((CLOSE_UNSUPPORTED, "binary messages are not XMPP"));
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "WebSocket read failed");
                    // A message over the size limit gets what an oversize
                    // stanza gets on TCP: a stream error, then the close
                    // (RFC 7395 §3.6), and close code 1009.
                    let text = e.to_string();
                    if text.contains("Space limit exceeded") || text.contains("too long") {
                        let error = format!(
                            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
                             <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>message larger than {} bytes</text>\
                             </stream:error>",
                            state.xmpp.stanza_size() + 4096
                        );
                        let _ = sink.send(Message::Text(error.into())).await;
                        let _ = sink
                            .send(Message::Text(
                                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".into(),
                            ))
                            .await;
                        close = Some((CLOSE_TOO_BIG, "message too big"));
                    }
                    break;
                }
            },
            out = from_session.recv() => match out {
                Some(m) => {
                    if sink.send(Message::Text(m.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    close = Some((CLOSE_NORMAL, ""));
                    break;
                }
            },
            _ = tokio::time::sleep(PING_EVERY) => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    to_session.shutdown().await;
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
