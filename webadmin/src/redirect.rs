//! The plain-HTTP side when HTTPS is configured: every request is redirected
//! (`308`, method and body kept) to the same path on HTTPS, except
//! `/.well-known/acme-challenge/`, where the certificate manager's HTTP-01
//! answers are served (`404` for any other token).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use crate::routes::{request_host, AppState};

/// The router for the plain-HTTP listener.
pub fn app(state: AppState) -> Router {
    let r = Router::new()
        .route("/.well-known/acme-challenge/{*token}", any(acme_challenge))
        .fallback(redirect)
        .with_state(state);
    crate::headers::secure(r, false)
}

/// HTTP-01 (RFC 8555 §8.3): the key authorization for an open challenge's
/// token, as `application/octet-stream`.
pub async fn acme_challenge(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match state.acme.answer(&token) {
        Some(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            answer,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(State(state): State<AppState>, req: Request) -> Response {
    let host = request_host(req.headers(), state.xmpp.domain());
    // The host without its port; the HTTPS listener's port instead.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host.as_str(),
    };
    let authority = match state.https_port {
        Some(443) | None => name.to_string(),
        Some(p) => format!("{name}:{p}"),
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{authority}{path}");
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}
