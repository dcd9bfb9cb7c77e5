//! Kith's web pod: the HTTP and HTTPS listeners inside the `kith` process.
//!
//! This crate owns everything that speaks HTTP: the listeners and their limits
//! (`listen.rs`, HTTP/1.1 and HTTP/2), the pages (`pages/`: sign-in, browser
//! sessions, CSRF, bounded forms, error pages; askama templates in
//! `templates/`, words in `i18n.rs`), the browser code embedded from
//! `client/dist/` (`assets.rs`), the live-update hub (`live.rs`), the
//! security headers on every response (`headers.rs`), the
//! plain-HTTP redirect (`redirect.rs`), `/.well-known/host-meta` discovery
//! (`wellknown.rs`), XMPP over WebSocket (`websocket.rs`), BOSH (`bosh.rs`) and the HTTP half
//! of file upload (`upload.rs`). It reaches XMPP
//! only through [`kith_server::WebHandle`]; the XMPP session logic stays in
//! `kith-server`.

mod assets;
pub mod bosh;
mod headers;
mod i18n;
mod listen;
mod live;
mod pages;
mod redirect;
mod routes;
mod upload;
mod websocket;
mod wellknown;

/// Entry points for the fuzz targets in `fuzz/` only (cargo feature `fuzzing`):
/// the parsers of an upload PUT's query and headers and of a GET's `Range`.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::upload::{check_put_headers, parse_range, put_query, HeaderMismatch};
}

/// The `[web]` section of the configuration file.
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kith_server::WebHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where and how the web pod listens.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// Plain HTTP: redirects to HTTPS (except ACME challenges); serves the
    /// pages itself only when no HTTPS listener is configured.
    pub http: Option<SocketAddr>,
    /// HTTPS: the web pod, WebSocket.
    pub https: Option<SocketAddr>,
    /// Bounds on what one HTTP client may cost.
    pub limits: HttpLimits,
    /// The certificate manager's HTTP-01 answers (`/.well-known/acme-challenge/`).
    pub acme: kith_provisioning::Http01Answers,
}

/// Bounds on HTTP clients. Each protects the box from one peer.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request head (request line and headers), in bytes (≥ 8 KiB);
    /// larger gets `431`.
    pub header_bytes: usize,
    /// Time to send a complete request head (slowloris); also the idle time
    /// of a kept-alive connection.
    pub header_timeout: Duration,
    /// Time to complete a TLS handshake.
    pub tls_timeout: Duration,
    /// TLS handshakes in progress at once (both listeners); a new one beyond
    /// this evicts the oldest.
    pub max_handshakes: usize,
    /// TLS handshakes in progress from one address (an IPv6 /64 is one).
    pub handshakes_per_address: usize,
    /// Open connections from one address (an IPv6 /64 is one). A household
    /// behind one NAT shares it: browsers open up to six per origin each.
    pub connections_per_address: usize,
    /// Time to read a request body and answer it (not WebSocket sessions).
    pub request_timeout: Duration,
    /// Largest request body, in bytes; larger gets `413`.
    pub body_bytes: usize,
    /// Open HTTP connections (both listeners together); more are closed at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            tls_timeout: Duration::from_secs(5),
            max_handshakes: 128,
            handshakes_per_address: 16,
            connections_per_address: 64,
            request_timeout: Duration::from_secs(30),
            body_bytes: 1024 * 1024,
            max_connections: 512,
        }
    }
}

/// Why the web pod could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr} ({listener}): {err}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// The addresses the web listeners bound (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct WebAddrs {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// The running web pod.
pub struct Web {
    addrs: WebAddrs,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Web {
    /// Bind the listeners and start serving.
    pub async fn start(xmpp: WebHandle, config: WebConfig) -> Result<Web, WebError> {
        let http = listen::bind("http", config.http).await?;
        let https = listen::bind("https", config.https).await?;
        let addrs = WebAddrs {
            http: http.as_ref().and_then(|l| l.local_addr().ok()),
            https: https.as_ref().and_then(|l| l.local_addr().ok()),
        };
        let limits = Arc::new(config.limits);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = routes::AppState::new(
            xmpp.clone(),
            addrs.https.map(|a| a.port()),
            shutdown_rx.clone(),
            config.acme.clone(),
        );
        let gate = listen::Gate::new(&limits);
        let mut tasks = Vec::new();
        if let Some(l) = https {
            tracing::info!(addr = ?addrs.https, "listening for HTTPS");
            let app = routes::app(state.clone(), &limits, true);
            let tls = tokio_rustls::TlsAcceptor::from(xmpp.https_tls());
            tasks.push(listen::spawn(
                l,
                app,
                Some(tls),
                limits.clone(),
                gate.clone(),
                shutdown_rx.clone(),
            ));
        }
        if let Some(l) = http {
            tracing::info!(addr = ?addrs.http, "listening for HTTP");
            let app = match addrs.https {
                Some(_) => redirect::app(state.clone()),
                None => routes::app(state.clone(), &limits, false),
            };
            tasks.push(listen::spawn(
                l,
                app,
                None,
                limits.clone(),
                gate.clone(),
                shutdown_rx.clone(),
            ));
        }
        tasks.push(tokio::spawn(sweep_uploads(
            xmpp.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(state.bosh.clone().sweep(shutdown_rx.clone())));
        tasks.push(tokio::spawn(sweep_web_sessions(
            xmpp.clone(),
            shutdown_rx.clone(),
        )));
        Ok(Web {
            addrs,
            shutdown,
            tasks,
        })
    }

    /// Where the listeners are.
    pub fn addrs(&self) -> &WebAddrs {
        &self.addrs
    }

    /// Stop accepting and close open connections (WebSocket sessions end
    /// with the XMPP server's own shutdown).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Forget expired browser sessions at start and then every hour, once the
/// box's time is confirmed (a clock that is not may be far off).
async fn sweep_web_sessions(xmpp: WebHandle, mut shutdown: watch::Receiver<bool>) {
    loop {
        let swept = if xmpp.time_confirmed() {
            xmpp.web_sessions_sweep(pages::now()).await
        } else {
            Ok(0)
        };
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "forgot expired browser sessions"),
            Err(e) => tracing::warn!(error = %e, "sweeping browser sessions failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Delete expired uploads at start and then every hour.
async fn sweep_uploads(xmpp: WebHandle, mut shutdown: watch::Receiver<bool>) {
    loop {
        let n = xmpp.uploads().sweep().await;
        if n > 0 {
            tracing::info!(files = n, "deleted expired uploads");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
