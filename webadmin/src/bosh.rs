//! BOSH (XEP-0124) carrying XMPP (XEP-0206) at `/http-bind`.
//!
//! A BOSH session is a framed XMPP session (`kith_server::WebHandle::open_framed`,
//! the same engine as TCP and WebSocket) plus a bounded outbox: a pump task
//! moves what the engine writes into the outbox; each HTTP request delivers
//! its children to the engine and long-polls the outbox. Session creation
//! sends `<open/>`; `xmpp:restart='true'` sends it again after SASL;
//! `type='terminate'` closes the stream.
//!
//! Bounds: at most [`MAX_SESSIONS`] sessions, [`MAX_PER_IP`] per address (an
//! IPv6 /64 counts as one);
//! `wait` at most [`MAX_WAIT`]; `requests` = 2 and `hold` = 1 (a new request
//! answers the one held before it); a repeated `rid` gets its answer again
//! (the last two, up to [`MAX_RESEND`] bytes each); any other `rid` outside
//! the window terminates the session; a session without a request for [`INACTIVITY`] is closed; the
//! outbox holds at most [`MAX_OUTBOX`] bytes (the engine then waits, and its
//! own write timeout ends a session nobody polls); a request body must arrive
//! within [`BODY_TIMEOUT`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kith_server::{FramedReceiver, FramedSender, NS_FRAMING};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::headers::cors;
use crate::routes::AppState;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const NS_XBOSH: &str = "urn:xmpp:xbosh";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// Sessions at once.
pub const MAX_SESSIONS: usize = 256;
/// Sessions per client address.
pub const MAX_PER_IP: usize = 16;
/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A session with no request for this long is closed.
pub const INACTIVITY: Duration = Duration::from_secs(60);
/// Bytes waiting for the client per session.
pub const MAX_OUTBOX: usize = 1024 * 1024;
/// Time to receive a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer kept for a retried request; a retry of a larger one ends
/// the session (`item-not-found`) instead of holding its memory.
pub const MAX_RESEND: usize = 64 * 1024;
/// Requests the client may have open at once (XEP-0124 `requests`).
const REQUESTS: u64 = 2;

/// The table of BOSH sessions.
#[derive(Default)]
pub struct Bosh {
    sessions: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_sid: HashMap<String, Arc<Session>>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Session {
    sid: String,
    ip: IpAddr,
    wait: Duration,
    to_xmpp: tokio::sync::Mutex<FramedSender>,
    out: Mutex<Outbox>,
    /// The outbox got data or the stream closed; or a newer request arrived.
    ready: Notify,
    /// The outbox was emptied.
    space: Notify,
    generation: AtomicU64,
}

#[derive(Default)]
struct Outbox {
    items: VecDeque<String>,
    bytes: usize,
    closed: bool,
    rid: u64,
    polling: usize,
    last_seen: Option<Instant>,
    /// The last answers, by rid, for retries.
    answered: VecDeque<(u64, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Bosh {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).by_sid.get(sid).cloned()
    }

    fn remove(&self, s: &Session) {
        let mut t = lock(&self.sessions);
        if t.by_sid.remove(&s.sid).is_some() {
            if let Some(n) = t.per_ip.get_mut(&s.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.per_ip.remove(&s.ip);
                }
            }
        }
    }

    /// Close sessions nobody polled for [`INACTIVITY`]; runs until shutdown.
    pub async fn sweep(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
            let idle: Vec<Arc<Session>> = lock(&self.sessions)
                .by_sid
                .values()
                .filter(|s| {
                    let o = lock(&s.out);
                    o.polling == 0 && o.last_seen.is_some_and(|t| t.elapsed() > INACTIVITY)
                })
                .cloned()
                .collect();
            for s in idle {
                tracing::debug!(sid = %s.sid, "BOSH session inactive; closing");
                self.remove(&s);
                s.to_xmpp.lock().await.shutdown().await;
            }
        }
    }
}

/// `OPTIONS /http-bind`: CORS preflight.
pub async fn preflight() -> Response {
    crate::headers::preflight("POST, OPTIONS")
}

fn xml(body: String) -> Response {
    cors(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response())
}

/// `<body type='terminate' condition='…'/>` (XEP-0124 §17).
fn terminate(condition: Option<&str>, children: &str) -> Response {
    let cond = condition
        .map(|c| format!(" condition='{c}'"))
        .unwrap_or_default();
    xml(format!(
        "<body xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAM}' type='terminate'{cond}>{children}</body>"
    ))
}

/// `POST /http-bind`
pub async fn request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let limit = state.xmpp.stanza_size() + 4096;
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return cors((StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response())
        }
        Err(_) => return cors((StatusCode::REQUEST_TIMEOUT, "body too slow\n").into_response()),
    };
    let Ok((el, rid, children)) = parse_body(&bytes, state.xmpp.wrapper_limits(limit)) else {
        return terminate(Some("bad-request"), "");
    };
    match el.attr("sid") {
        None => create(state, peer, &el, rid, children).await,
        Some(sid) => {
            let Some(s) = state.bosh.get(sid) else {
                return terminate(Some("item-not-found"), "");
            };
            continue_session(state, s, &el, rid, children).await
        }
    }
}

/// Why a request body was refused (all answered `bad-request`).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not well-formed, restricted or over a limit (bytes, depth, attributes).
    Xml(String),
    /// Not `<body xmlns='http://jabber.org/protocol/httpbind'/>`.
    NotBody,
    /// No `rid`, or one that is not a number.
    Rid,
}

/// Parse a request body through the server's bounded parser (never a tree
/// deeper than the stream's limit): the `<body/>` element, its `rid` and its
/// children serialised for the XMPP session.
pub fn parse_body(
    bytes: &[u8],
    limits: kith_server::xml::ParserLimits,
) -> Result<(minidom::Element, u64, Vec<String>), BodyError> {
    let el = kith_server::xml::parse_element(bytes, limits)
        .map_err(|e| BodyError::Xml(e.to_string()))?;
    if !el.is("body", NS_HTTPBIND) {
        return Err(BodyError::NotBody);
    }
    let rid = el
        .attr("rid")
        .and_then(|r| r.parse::<u64>().ok())
        .ok_or(BodyError::Rid)?;
    let mut children = Vec::new();
    for c in el.children() {
        let mut out = Vec::new();
        kith_server::xml::serialize(c, &mut out);
        children.push(String::from_utf8_lossy(&out).into_owned());
    }
    Ok((el, rid, children))
}

async fn create(
    state: AppState,
    peer: SocketAddr,
    el: &minidom::Element,
    rid: u64,
    children: Vec<String>,
) -> Response {
    let domain = state.xmpp.domain().to_string();
    if el
        .attr("to")
        .is_some_and(|t| !t.eq_ignore_ascii_case(&domain))
    {
        return terminate(Some("host-unknown"), "");
    }
    let wait = el
        .attr("wait")
        .and_then(|w| w.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT);
    let (tx, rx) = match state.xmpp.open_framed(peer) {
        Ok(p) => p,
        Err(_) => return terminate(Some("internal-server-error"), ""),
    };
    let sid = random_sid();
    let s = Arc::new(Session {
        sid: sid.clone(),
        ip: kith_server::addr_key(peer.ip()),
        wait,
        to_xmpp: tokio::sync::Mutex::new(tx),
        out: Mutex::new(Outbox {
            rid,
            ..Default::default()
        }),
        ready: Notify::new(),
        space: Notify::new(),
        generation: AtomicU64::new(0),
    });
    {
        let mut t = lock(&state.bosh.sessions);
        let from_ip = t.per_ip.get(&s.ip).copied().unwrap_or(0);
        if t.by_sid.len() >= MAX_SESSIONS || from_ip >= MAX_PER_IP {
            tracing::warn!(%peer, "BOSH session refused: too many sessions");
            // Dropping the framed session ends it.
            return terminate(Some("policy-violation"), "");
        }
        *t.per_ip.entry(s.ip).or_default() += 1;
        t.by_sid.insert(sid.clone(), s.clone());
    }
    tokio::spawn(pump(rx, s.clone()));
    let open = format!("<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>");
    if deliver(&s, Some(&open), &children).await.is_err() {
        state.bosh.remove(&s);
        return terminate(Some("remote-connection-failed"), "");
    }
    let attrs = format!(
        " sid='{sid}' wait='{}' requests='{REQUESTS}' hold='1' inactivity='{}' polling='1' ver='1.11' from='{domain}' xmpp:version='1.0' xmpp:restartlogic='true'",
        wait.as_secs(),
        INACTIVITY.as_secs()
    );
    respond(&state, &s, rid, &attrs).await
}

async fn continue_session(
    state: AppState,
    s: Arc<Session>,
    el: &minidom::Element,
    rid: u64,
    children: Vec<String>,
) -> Response {
    {
        let mut o = lock(&s.out);
        // XEP-0124 §14.3: a repeated rid (a retry after a network error) gets
        // the same answer again.
        if let Some((_, body)) = o.answered.iter().find(|(r, _)| *r == rid) {
            return xml(body.clone());
        }
        if rid <= o.rid || rid > o.rid + REQUESTS {
            drop(o);
            state.bosh.remove(&s);
            tracing::debug!(sid = %s.sid, rid, "BOSH rid outside the window");
            return terminate(Some("item-not-found"), "");
        }
        o.rid = rid;
    }
    // hold = 1: a new request releases the one held before it.
    s.generation.fetch_add(1, Ordering::SeqCst);
    s.ready.notify_waiters();
    let restart = el.attr_ns(NS_XBOSH, "restart") == Some("true");
    if el.attr("type") == Some("terminate") {
        let close = format!("<close xmlns='{NS_FRAMING}'/>");
        let _ = deliver(&s, Some(&close), &children).await;
        state.bosh.remove(&s);
        s.to_xmpp.lock().await.shutdown().await;
        return terminate(None, "");
    }
    let open = restart.then(|| {
        format!(
            "<open xmlns='{NS_FRAMING}' to='{}' version='1.0'/>",
            state.xmpp.domain()
        )
    });
    if deliver(&s, open.as_deref(), &children).await.is_err() {
        state.bosh.remove(&s);
        return terminate(Some("remote-connection-failed"), "");
    }
    respond(&state, &s, rid, "").await
}

/// Hand the request's children (after the children, `<open/>` on restart, or
/// before a `<close/>`) to the XMPP session.
async fn deliver(s: &Session, extra: Option<&str>, children: &[String]) -> Result<(), ()> {
    let mut tx = s.to_xmpp.lock().await;
    let close_last = extra.is_some_and(|e| e.starts_with("<close"));
    if let (Some(e), false) = (extra, close_last) {
        tx.send(e).await.map_err(|_| ())?;
    }
    for c in children {
        tx.send(c).await.map_err(|_| ())?;
    }
    if let (Some(e), true) = (extra, close_last) {
        tx.send(e).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Long-poll the outbox and answer with what is there.
async fn respond(state: &AppState, s: &Arc<Session>, rid: u64, attrs: &str) -> Response {
    let gen = s.generation.load(Ordering::SeqCst);
    let deadline = Instant::now() + s.wait;
    lock(&s.out).polling += 1;
    let (items, closed) = loop {
        let notified = s.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut o = lock(&s.out);
            if !o.items.is_empty() || o.closed {
                let items: Vec<String> = o.items.drain(..).collect();
                o.bytes = 0;
                s.space.notify_waiters();
                break (items, o.closed);
            }
        }
        if s.generation.load(Ordering::SeqCst) != gen {
            break (Vec::new(), false);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => break (Vec::new(), false),
        }
    };
    {
        let mut o = lock(&s.out);
        o.polling -= 1;
        o.last_seen = Some(Instant::now());
    }
    let children = items.concat();
    if closed {
        state.bosh.remove(s);
        let cond = children
            .contains("<stream:error")
            .then_some("remote-stream-error");
        return terminate(cond, &children);
    }
    let body = format!(
        "<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{NS_STREAM}'{attrs}>{children}</body>"
    );
    if body.len() <= MAX_RESEND {
        let mut o = lock(&s.out);
        o.answered.push_back((rid, body.clone()));
        while o.answered.len() > REQUESTS as usize {
            o.answered.pop_front();
        }
    }
    xml(body)
}

/// Move the engine's messages into the outbox, waiting while it is full.
async fn pump(mut rx: FramedReceiver, s: Arc<Session>) {
    while let Some(m) = rx.recv().await {
        if m.starts_with("<open") {
            continue;
        }
        if m.starts_with("<close") {
            break;
        }
        loop {
            let space = s.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut o = lock(&s.out);
                if o.bytes < MAX_OUTBOX {
                    o.bytes += m.len();
                    o.items.push_back(m);
                    break;
                }
            }
            space.await;
        }
        s.ready.notify_waiters();
    }
    lock(&s.out).closed = true;
    s.ready.notify_waiters();
}

/// 128 random bits, hex: session ids are capabilities.
fn random_sid() -> String {
    use ring::rand::SecureRandom;
    use std::fmt::Write;
    let mut buf = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        tracing::error!("the system random generator failed");
    }
    buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_server::xml::ParserLimits;

    fn limits() -> ParserLimits {
        ParserLimits {
            stanza_bytes: 256 * 1024,
            depth: 33,
            attributes: 64,
        }
    }

    /// Found by the `bosh` fuzz target (with the old minidom parse): a child
    /// that binds a prefix its own child binds again to another namespace
    /// (valid XML) made minidom's writer panic. The bounded parser keeps no
    /// declared prefixes, so the writer picks its own.
    #[test]
    fn a_prefix_bound_again_further_down_is_fine() {
        let (_, _, children) = parse_body(
            b"<body rid='8' xmlns='http://jabber.org/protocol/httpbind'>\
              <body xmlns:xmpp='t'><iq xmlns:xmpp='e' xmpp:a='1'>x<y/></iq></body></body>",
            limits(),
        )
        .expect("valid body");
        let [child] = &children[..] else {
            panic!("one child: {children:?}")
        };
        let back: minidom::Element = child.parse().expect("the child parses back");
        let iq = back.get_child("iq", NS_HTTPBIND).expect("iq kept");
        assert_eq!(iq.attr_ns("e", "a"), Some("1"));
        assert_eq!(iq.text(), "x");
        assert!(iq.get_child("y", NS_HTTPBIND).is_some());
    }
    #[test]
    fn a_body_gives_its_rid_and_children() {
        let (el, rid, children) = parse_body(
            b"<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='s'>\
              <message xmlns='jabber:client' to='a@b'><body>hi</body></message><presence xmlns='jabber:client'/></body>",
            limits(),
        )
        .expect("valid");
        assert_eq!((el.attr("sid"), rid, children.len()), (Some("s"), 7, 2));
        assert!(children[0].starts_with("<message"), "{}", children[0]);
        assert!(children[0].contains("jabber:client"), "{}", children[0]);
    }

    #[test]
    fn twenty_thousand_nested_elements_are_refused_not_a_crash() {
        let depth = 20_000;
        let doc = format!(
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>{}{}</body>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        assert!(matches!(
            parse_body(doc.as_bytes(), limits()),
            Err(BodyError::Xml(_))
        ));
    }

    #[test]
    fn wrong_bodies_are_refused() {
        assert_eq!(
            parse_body(b"<body xmlns='urn:other' rid='1'/>", limits()),
            Err(BodyError::NotBody)
        );
        assert_eq!(
            parse_body(
                b"<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>",
                limits()
            ),
            Err(BodyError::Rid)
        );
        assert!(parse_body(
            b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",
            limits()
        )
        .is_err());
    }
}
