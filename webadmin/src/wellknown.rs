//! Connection discovery for web clients (XEP-0156): `/.well-known/host-meta`
//! (XRD) and `/.well-known/host-meta.json` (JRD) name the WebSocket and BOSH endpoints
//! on the host the client used. CORS is open: any web client may read them.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use crate::routes::{request_host, AppState};

/// XEP-0156 link relation for RFC 7395 WebSocket.
const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
/// XEP-0156 link relation for BOSH (XEP-0206).
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

fn websocket_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = request_host(headers, state.xmpp.domain());
    format!("wss://{host}/xmpp-websocket")
}

fn bosh_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = request_host(headers, state.xmpp.domain());
    format!("https://{host}/http-bind")
}

/// `GET /.well-known/host-meta`
pub async fn host_meta(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n\
  <Link rel='{REL_WEBSOCKET}' href='{}'/>\n\
  <Link rel='{REL_BOSH}' href='{}'/>\n\
</XRD>\n",
        websocket_url(&state, &headers),
        bosh_url(&state, &headers)
    );
    (
        [
            (header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
}

/// `GET /.well-known/host-meta.json`
pub async fn host_meta_json(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    // The URL holds only host characters (see `request_host`): no escaping needed.
    let body = format!(
        "{{\"links\":[{{\"rel\":\"{REL_WEBSOCKET}\",\"href\":\"{}\"}},{{\"rel\":\"{REL_BOSH}\",\"href\":\"{}\"}}]}}\n",
        websocket_url(&state, &headers),
        bosh_url(&state, &headers)
    );
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
}
