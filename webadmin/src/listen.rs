//! The HTTP and HTTPS listeners: accept, TLS handshake under a deadline,
//! HTTP/1.1 with a bounded request head and a header deadline (slowloris),
//! HTTP/2 on HTTPS when the client offers it in ALPN (bounded streams per
//! connection, header list size, pending and erroring resets — the "rapid
//! reset" attack — and a keep-alive ping that drops dead peers),
//! upgrades for WebSocket, caps on open connections (in all and per address,
//! an IPv6 /64 counting as one), on TLS handshakes in progress per address,
//! and a pool of handshakes in progress in all where a new handshake evicts
//! the oldest (so peers that open handshakes and stall cannot keep a real
//! browser out: its handshake takes milliseconds, theirs must be renewed
//! faster than new clients arrive), graceful shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use kith_server::{ConnLimiter, ConnPermit};

use crate::{HttpLimits, WebError};

/// Bind a listener if configured.
pub async fn bind(
    name: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, WebError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|err| WebError::Bind {
                listener: name,
                addr,
                err,
            }),
    }
}

/// Who may hold a connection, shared by both listeners: the caps of
/// [`HttpLimits`] on connections and on TLS handshakes in progress.
pub struct Gate {
    conns: Arc<Semaphore>,
    conns_per_addr: Arc<ConnLimiter>,
    handshakes: Mutex<Handshakes>,
    handshakes_per_addr: Arc<ConnLimiter>,
}

/// TLS handshakes in progress, oldest first; dropping an entry's sender
/// cancels that handshake.
struct Handshakes {
    max: usize,
    next_id: u64,
    live: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Gate {
    pub fn new(limits: &HttpLimits) -> Arc<Self> {
        Arc::new(Gate {
            conns: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            conns_per_addr: ConnLimiter::new(limits.connections_per_address),
            handshakes: Mutex::new(Handshakes {
                max: limits.max_handshakes.max(1),
                next_id: 0,
                live: VecDeque::new(),
            }),
            handshakes_per_addr: ConnLimiter::new(limits.handshakes_per_address),
        })
    }

    /// Register a handshake; the oldest one is cancelled when the pool is full.
    /// The receiver resolves when this handshake is evicted.
    fn handshake_begins(&self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut h = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        let id = h.next_id;
        h.next_id += 1;
        if h.live.len() >= h.max {
            // Dropping the sender wakes the oldest handshake, which gives up.
            h.live.pop_front();
        }
        h.live.push_back((id, tx));
        (id, rx)
    }

    fn handshake_ends(&self, id: u64) {
        let mut h = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = h.live.iter().position(|(x, _)| *x == id) {
            h.live.remove(i);
        }
    }
}

/// Held for a connection's life.
type ConnSlot = (OwnedSemaphorePermit, ConnPermit);

/// Accept connections on `listener` until shutdown.
pub fn spawn(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Arc<HttpLimits>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, peer)) => {
                        let Some(addr_permit) = gate.conns_per_addr.acquire(peer.ip()) else {
                            tracing::debug!(%peer, "too many HTTP connections from this address; closing a new one");
                            continue;
                        };
                        let Ok(permit) = gate.conns.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, "too many HTTP connections; closing a new one");
                            continue;
                        };
                        tokio::spawn(serve(tcp, peer, app.clone(), tls.clone(), limits.clone(), gate.clone(), (permit, addr_permit), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Arc<HttpLimits>,
    gate: Arc<Gate>,
    _slot: ConnSlot,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => http(tcp, peer, app, &limits, shutdown).await,
        Some(acceptor) => {
            // Handshakes in progress are capped apart from connections: a
            // flood of half-open handshakes cannot hold every slot.
            let Some(by_addr) = gate.handshakes_per_addr.acquire(peer.ip()) else {
                tracing::debug!(%peer, "too many TLS handshakes from this address");
                return;
            };
            let (id, evicted) = gate.handshake_begins();
            let done = tokio::select! {
                r = tokio::time::timeout(limits.tls_timeout, acceptor.accept(tcp)) => Some(r),
                _ = evicted => None,
            };
            gate.handshake_ends(id);
            drop(by_addr);
            let Some(done) = done else {
                tracing::debug!(%peer, "TLS handshake evicted by newer ones");
                return;
            };
            match done {
                Ok(Ok(stream)) => {
                    // HTTP/2 only when the client chose it in ALPN: no
                    // sniffing of the connection preface.
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(kith_server::tls::ALPN_H2);
                    if h2 {
                        http2(stream, peer, app, &limits, shutdown).await
                    } else {
                        http(stream, peer, app, &limits, shutdown).await
                    }
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Concurrent requests on one HTTP/2 connection (each open tab holds one
/// for its event stream; a browser opens one connection per origin).
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before the server has answered them, and resets
/// the server may send for a client's errors, before the connection is closed
/// ("rapid reset", CVE-2023-44487, and its relatives).
const H2_MAX_PENDING_RESETS: usize = 20;
const H2_MAX_ERROR_RESETS: usize = 100;
/// Bytes buffered for sending per stream.
const H2_SEND_BUFFER: usize = 256 * 1024;

/// Serve one HTTP/2 connection (the client chose `h2` in ALPN) under the
/// same limits as HTTP/1.1: the request head's size bounds the header list,
/// bodies and request times are bounded by the routes' layers.
async fn http2<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.header_bytes.max(8192)).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .max_send_buf_size(H2_SEND_BUFFER)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
