//! XEP-0198 resumption: the table of resumable sessions, hibernation when a
//! connection drops, `<resume/>` on a new connection, and the end of a
//! session that was not resumed.
//!
//! A resumable session has an entry here from `<enable resume='true'/>` on.
//! When its connection drops, the session loop *hibernates* it: the session
//! stays bound and available, it is marked detached (messages for it now go to
//! the offline store, durably, before their sender's ack), what it had sent
//! without an ack is *parked* in the offline store too, and its [`Sm`] state is
//! put in the entry. The loop then waits, at most `sm_resume_timeout`, for a
//! new connection to claim the entry. A claim takes the state and resends what
//! the client did not get; otherwise the session ends and the parked messages
//! simply stay in the offline store for the next login. Either way every
//! message reaches the account once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::BareJid;
use minidom::Element;
use tokio::sync::{oneshot, Notify};

use super::{failed, parse_h, Sm};
use crate::core::Core;
use crate::session::{Kick, SessionHandle};
use crate::stanza::{error_reply, StanzaError};
use crate::xml::{el, ns, serialize};

/// How long a `<resume/>` waits for a still-connected old session to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What the waiting (hibernated) session is told.
enum Verdict {
    /// A new connection took the session over.
    Claimed,
    /// End the session now (a resume with an impossible `h`).
    End(Box<Parked>),
}

/// The state of a hibernated session.
struct Parked {
    sm: Sm,
    /// Offline-store rows holding copies of unacked messages.
    rows: Vec<i64>,
    verdict: oneshot::Sender<Verdict>,
}

struct Entry {
    bare: BareJid,
    session: Arc<SessionHandle>,
    parked: Option<Parked>,
    hibernated: Arc<Notify>,
}

/// Resumable sessions by resumption id.
#[derive(Default)]
pub struct Table {
    map: Mutex<HashMap<String, Entry>>,
}

/// A session taken over by a new connection.
pub struct Resumed {
    pub session: Arc<SessionHandle>,
    pub sm: Sm,
    pub previd: String,
    /// Offline-store rows to forget: the new connection resends them from memory.
    pub rows: Vec<i64>,
}

/// How hibernation ended.
pub enum Hibernation {
    /// Another connection owns the session now; this task just leaves.
    Resumed,
    /// The session ends (window expired, shutdown, replaced, too many
    /// hibernated sessions, bad resume).
    End(Sm),
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make `session` resumable under the (fresh, random) id `id`.
    pub fn register(&self, id: String, session: &Arc<SessionHandle>) {
        self.lock().insert(
            id,
            Entry {
                bare: session.jid.to_bare(),
                session: session.clone(),
                parked: None,
                hibernated: Arc::new(Notify::new()),
            },
        );
    }

    /// Forget a resumption id (a `<resume/>` waiting for it gives up at once).
    pub fn remove(&self, id: &str) {
        let entry = self.lock().remove(id);
        if let Some(e) = entry {
            e.hibernated.notify_one();
        }
    }

    /// Sessions of `bare` waiting to be resumed.
    fn hibernated_of(&self, bare: &BareJid) -> usize {
        self.lock()
            .values()
            .filter(|e| e.parked.is_some() && e.bare == *bare)
            .count()
    }
}

/// Parked copies of unacked messages: stamped with a delay, like other
/// offline messages, because they are delivered late if at all.
fn parkable(core: &Core, stanza: &[u8]) -> Option<String> {
    let mut msg: Element = std::str::from_utf8(stanza).ok()?.parse().ok()?;
    if !crate::message::offline_worthy(&msg) {
        return None;
    }
    if !msg.has_child("delay", "urn:xmpp:delay") {
        msg.append_child(
            el("delay", "urn:xmpp:delay")
                .attr("from", core.domain.clone())
                .attr("stamp", crate::xep::time::now_rfc3339())
                .text("Offline storage")
                .build(),
        );
    }
    let mut out = Vec::new();
    serialize(&msg, &mut out);
    String::from_utf8(out).ok()
}

/// Mark the session detached (new messages go offline), take what was
/// queued for it but not written into `sm.unacked`, and park every unacked
/// message durably. Returns the parked rows.
async fn detach_and_park(core: &Arc<Core>, session: &Arc<SessionHandle>, sm: &mut Sm) -> Vec<i64> {
    // Holding the account's offline lock until the parked copies are stored
    // keeps them ahead of messages that arrive meanwhile.
    let _order = crate::message::detach(session).await;
    sm.keep_unsent(session.take_queued_items());
    let stanzas: Vec<String> = sm
        .unacked
        .iter()
        .filter_map(|s| parkable(core, s))
        .collect();
    let user = crate::deliver::username(&session.jid.to_bare()).to_string();
    match core.db.sm_park(&user, &stanzas).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "parking unacked messages failed");
            Vec::new()
        }
    }
}

/// The connection of a resumable session dropped: wait for a resume.
pub async fn hibernate(core: &Arc<Core>, session: &Arc<SessionHandle>, mut sm: Sm) -> Hibernation {
    let Some(id) = sm.id.clone() else {
        return Hibernation::End(sm);
    };
    let bare = session.jid.to_bare();
    if core.sm.hibernated_of(&bare) >= core.limits().sm_max_hibernated {
        tracing::info!(jid = %session.jid, "too many sessions waiting to be resumed; ending this one");
        return Hibernation::End(sm);
    }
    session.clear_kick();
    let rows = detach_and_park(core, session, &mut sm).await;
    // `<resumed h/>` and `<failed h/>` report `sm.inbound`: like `<a h/>`,
    // only once what those stanzas archived is on disk.
    super::durable(core, session).await;
    let (tx, rx) = oneshot::channel();
    {
        let mut map = core.sm.lock();
        let Some(entry) = map.get_mut(&id) else {
            return Hibernation::End(sm);
        };
        entry.parked = Some(Parked {
            sm,
            rows,
            verdict: tx,
        });
        // A <resume/> that came while the connection was being detached
        // kicked it (under this lock); that kick must not end the session
        // the resume is about to claim.
        entry.session.clear_resume_kick();
        entry.hibernated.notify_one();
    }
    tracing::info!(jid = %session.jid, "connection lost; session waits to be resumed");
    let mut shutdown = core.shutdown.clone();
    let mut rx = rx;
    tokio::select! {
        v = &mut rx => match v {
            Ok(Verdict::Claimed) => return Hibernation::Resumed,
            Ok(Verdict::End(p)) => return Hibernation::End(p.sm),
            Err(_) => {}
        },
        _ = tokio::time::sleep(core.limits().sm_resume_timeout) => {
            tracing::info!(jid = %session.jid, "resumption window expired");
        }
        _ = shutdown.changed() => {}
        _ = session.kicked() => {}
    }
    // Take the state back unless a claim got it first.
    let taken = core.sm.lock().remove(&id).and_then(|e| e.parked);
    match taken {
        Some(p) => Hibernation::End(p.sm),
        None => match rx.await {
            Ok(Verdict::End(p)) => Hibernation::End(p.sm),
            _ => Hibernation::Resumed,
        },
    }
}

/// `<resume previd h/>` from `bare` on a new connection: take the session
/// over, or say why not (the `<failed/>` to send).
pub async fn claim(core: &Arc<Core>, bare: &BareJid, req: &Element) -> Result<Resumed, Element> {
    let previd = req.attr("previd").unwrap_or("").to_string();
    let h = parse_h(req).map_err(|_| failed("bad-request", None))?;
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        let notify = {
            let mut map = core.sm.lock();
            let Some(entry) = map.get_mut(&previd).filter(|e| e.bare == *bare) else {
                return Err(failed("item-not-found", None));
            };
            if entry.parked.is_some() {
                let Some(entry) = map.remove(&previd) else {
                    return Err(failed("item-not-found", None));
                };
                let Some(mut parked) = entry.parked else {
                    return Err(failed("item-not-found", None));
                };
                if let Err(sent) = parked.sm.ack(h) {
                    // The client claims more than was sent: the session is
                    // unusable; end it (its messages stay offline).
                    let inbound = parked.sm.inbound;
                    tracing::info!(%bare, h, sent, "resume with an impossible h");
                    let tx = std::mem::replace(&mut parked.verdict, oneshot::channel().0);
                    let _ = tx.send(Verdict::End(Box::new(parked)));
                    return Err(failed("undefined-condition", Some(inbound)));
                }
                let Parked { sm, rows, verdict } = parked;
                let _ = verdict.send(Verdict::Claimed);
                let session = entry.session;
                session.clear_kick();
                return Ok(Resumed {
                    session,
                    sm,
                    previd,
                    rows,
                });
            }
            // Still connected (a half-open connection): drop it first.
            entry.session.kick(Kick::Resumed);
            entry.hibernated.clone()
        };
        if tokio::time::timeout_at(deadline, notify.notified())
            .await
            .is_err()
        {
            return Err(failed("item-not-found", None));
        }
    }
}

/// End a session with stream management: its unacked messages go to the
/// offline store (unless parked already), IQ requests the client never
/// acknowledged are answered with an error, other stanzas are dropped.
pub async fn terminate(core: &Arc<Core>, session: &Arc<SessionHandle>, mut sm: Sm, parked: bool) {
    if let Some(id) = &sm.id {
        core.sm.remove(id);
    }
    if !sm.enabled {
        return;
    }
    if !parked {
        detach_and_park(core, session, &mut sm).await;
    }
    let unacked: VecDeque<Vec<u8>> = std::mem::take(&mut sm.unacked);
    for bytes in unacked {
        let Some(stanza) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<Element>().ok())
        else {
            continue;
        };
        if stanza.is("iq", ns::CLIENT) && matches!(stanza.attr("type"), Some("get" | "set")) {
            bounce_iq(core, &stanza);
        }
    }
}

/// Answer an IQ request that will never reach its recipient.
fn bounce_iq(core: &Core, iq: &Element) {
    let Some(reply) = error_reply(iq, &StanzaError::service_unavailable()) else {
        return;
    };
    let target = reply
        .attr("to")
        .and_then(|t| jid::FullJid::new(t).ok())
        .and_then(|f| core.sessions.get(&f));
    if let Some(t) = target {
        t.send(reply);
    }
}
