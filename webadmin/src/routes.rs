//! The web pod's routes and the state they share, with the limits every
//! route gets: body size (`413`), request time (`408`), security headers.

use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use kith_server::WebHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::HttpLimits;

/// What handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The XMPP server.
    pub xmpp: WebHandle,
    /// The HTTPS listener's port, for redirects and discovery.
    pub https_port: Option<u16>,
    /// BOSH sessions.
    pub bosh: std::sync::Arc<crate::bosh::Bosh>,
    /// The pages' shared state (CSRF key, live updates).
    pub shell: std::sync::Arc<crate::pages::Shell>,
    /// The certificate manager's HTTP-01 answers.
    pub acme: kith_provisioning::Http01Answers,
}

impl AppState {
    pub fn new(
        xmpp: WebHandle,
        https_port: Option<u16>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        acme: kith_provisioning::Http01Answers,
    ) -> Self {
        AppState {
            xmpp,
            https_port,
            bosh: Default::default(),
            shell: crate::pages::Shell::new(shutdown),
            acme,
        }
    }
}

/// The full web pod; `https` says whether it is served over TLS (HSTS).
pub fn app(state: AppState, limits: &HttpLimits, https: bool) -> Router {
    let limited = Router::new()
        .route("/.well-known/host-meta", get(crate::wellknown::host_meta))
        .route(
            "/.well-known/host-meta.json",
            get(crate::wellknown::host_meta_json),
        )
        .route("/xmpp-websocket", get(crate::websocket::upgrade))
        .route(
            "/.well-known/acme-challenge/{*token}",
            get(crate::redirect::acme_challenge),
        )
        .route("/assets/{name}", get(crate::assets::get))
        .merge(crate::pages::shell::routes())
        .fallback(crate::pages::not_found)
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    // Uploads stream large bodies: bounded by their slot's size and a
    // per-chunk timeout (upload.rs) instead of the limits above.
    let uploads = Router::new().route(
        "/upload/{id}/{filename}",
        get(crate::upload::get)
            .put(crate::upload::put)
            .options(crate::upload::preflight),
    );
    // BOSH long-polls (up to its `wait`) and reads bodies under its own timeout.
    let bosh = Router::new().route(
        "/http-bind",
        axum::routing::post(crate::bosh::request).options(crate::bosh::preflight),
    );
    // The live-update stream stays open (no request timeout); pages' errors
    // without a body of their own become pages.
    let pages = crate::pages::shell::live_routes()
        .merge(limited)
        .layer(axum::middleware::from_fn(crate::pages::error_pages));
    let r = uploads.merge(bosh).merge(pages).with_state(state);
    crate::headers::secure(r, https)
}

/// The `Host` the client used, if it is a plain host name or address (with
/// an optional port); otherwise the XMPP domain. Reflected into URLs, so
/// anything else is never echoed.
pub fn request_host(headers: &HeaderMap, domain: &str) -> String {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| valid(h))
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_are_reflected() {
        let mut h = HeaderMap::new();
        assert_eq!(request_host(&h, "kith.example"), "kith.example");
        h.insert(header::HOST, "Kith.Example:8443".parse().expect("value"));
        assert_eq!(request_host(&h, "x"), "kith.example:8443");
        h.insert(header::HOST, "evil.example/\"><x".parse().expect("value"));
        assert_eq!(request_host(&h, "kith.example"), "kith.example");
    }
}
