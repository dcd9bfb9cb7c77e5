//! XEP-0357 Push Notifications: a phone's app registers an app server
//! (`<enable jid node>`, with an optional publish-options form that usually
//! carries a secret), and when a message for the account reaches no online
//! device — it went to offline storage — or only devices that said they are
//! inactive (XEP-0352), the server tells each registered app server, which
//! wakes the phone through its vendor's push service.
//!
//! Registrations are stored (`storage/push.rs`), at most
//! `push.max_per_account` per account (a new one beyond that replaces the
//! oldest). An app server that answers a notification with an error (other
//! than "wait") loses its registration. Notifications are rate-limited per
//! registration (`state.rs`); their content is built in `summary.rs`.
//! [`notify`] is the entry point for other delivery paths (e.g. a stream
//! management session that is hibernated).

mod state;
mod summary;

use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::iq_out::{error_of, IqOutError};
use crate::registry::{BoxFuture, FeatureScope, IqCtx, IqResult, Module, Registry, SessionEvent};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::StanzaError;
use crate::storage::push::PushRegistration;
use crate::xml::{ns, serialize};

pub use state::PushState;
use state::{RegKey, Slot};
use summary::{notification, push_worthy, NS_DATA, NS_PUSH};

/// The push module.
pub const MODULE: Module = Module {
    name: "push",
    register,
};

/// How long an app server has to answer a notification.
const APP_SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest publish-options form kept (serialised), and longest node name.
const MAX_OPTIONS_BYTES: usize = 4096;
const MAX_NODE_BYTES: usize = 1024;
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

fn register(r: &mut Registry) {
    r.iq(true, Addr::SelfBare, NS_PUSH, "enable", enable);
    r.iq(true, Addr::SelfBare, NS_PUSH, "disable", disable);
    r.feature(FeatureScope::Account, NS_PUSH);
    r.migrations(&crate::storage::push::MIGRATOR);
    r.shared_message_hook(after_message);
    r.hook(SessionEvent::InitialPresence, came_online);
}

fn username(s: &SessionHandle) -> String {
    crate::deliver::username(&s.jid.to_bare()).to_string()
}

fn app_server(payload: &Element) -> Result<Jid, StanzaError> {
    payload
        .attr("jid")
        .and_then(|j| Jid::new(j).ok())
        .ok_or_else(|| StanzaError::bad_request().with_text("a valid 'jid' is required"))
}

/// The publish-options form of `<enable/>`, serialised, if there is one.
fn options(payload: &Element) -> Result<Option<String>, StanzaError> {
    let forms: Vec<&Element> = payload.children().filter(|c| c.is("x", NS_DATA)).collect();
    let form = match forms[..] {
        [] => return Ok(None),
        [form] => form,
        _ => return Err(StanzaError::bad_request().with_text("at most one form")),
    };
    if form.attr("type") != Some("submit") {
        return Err(StanzaError::bad_request().with_text("the form must be of type 'submit'"));
    }
    let form_type = form
        .children()
        .find(|f| f.attr("var") == Some("FORM_TYPE"))
        .map(|f| f.children().map(|v| v.text()).collect::<String>());
    if form_type.is_some_and(|t| t != PUBLISH_OPTIONS) {
        return Err(StanzaError::bad_request().with_text("the form must be publish-options"));
    }
    let mut buf = Vec::new();
    serialize(form, &mut buf);
    if buf.len() > MAX_OPTIONS_BYTES {
        return Err(
            StanzaError::new("modify", "not-acceptable").with_text(format!(
                "publish-options larger than {MAX_OPTIONS_BYTES} bytes"
            )),
        );
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn enable(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let jid = app_server(cx.payload)?;
        let node = cx
            .payload
            .attr("node")
            .filter(|n| !n.is_empty() && n.len() <= MAX_NODE_BYTES)
            .ok_or_else(|| StanzaError::bad_request().with_text("a 'node' is required"))?;
        let reg = PushRegistration {
            jid: jid.to_string(),
            node: node.to_string(),
            options: options(cx.payload)?,
        };
        let max = cx.core.config.push.max_per_account;
        cx.core
            .db
            .push_enable(&username(cx.session), &reg, max)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "storing a push registration failed");
                StanzaError::internal()
            })?;
        tracing::info!(jid = %cx.session.jid, app_server = %jid, "push enabled");
        Ok(None)
    })
}

fn disable(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let jid = app_server(cx.payload)?.to_string();
        let node = cx.payload.attr("node").filter(|n| !n.is_empty());
        let user = username(cx.session);
        cx.core
            .db
            .push_disable(&user, &jid, node)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "removing a push registration failed");
                StanzaError::internal()
            })?;
        match node {
            Some(node) => cx.core.push.forget(&(user, jid, node.to_string())),
            None => cx.core.push.forget_all(&user, &jid),
        }
        Ok(None)
    })
}

fn came_online<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(async move { core.push.reset(&username(session)) })
}

/// After a message was handled: notify when it reached no device, or only
/// inactive ones, or only ones whose connection dropped and that wait to be
/// resumed (XEP-0198 hibernation: the phone app may have been suspended).
fn after_message(core: &Arc<Core>, msg: &Element, delivered: &[Arc<SessionHandle>]) {
    if !delivered
        .iter()
        .all(|s| s.is_inactive() || s.detached.load(std::sync::atomic::Ordering::Relaxed))
    {
        return;
    }
    let Some(to) = msg.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    let user = to.to_bare();
    let own = msg
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .is_some_and(|f| f.to_bare() == user);
    if !own {
        notify(core, &user, msg);
    }
}

/// Tell the app servers registered by the local account `user` that `msg`
/// arrived for it while no active device could show it. Returns at once; the
/// work (storage lookup, rate limit, the IQ to each app server and its reply)
/// happens in a background task. Messages that do not deserve a notification
/// (chat states, receipts, …) and accounts without registrations cost nothing
/// but a check and one storage read.
pub fn notify(core: &Arc<Core>, user: &BareJid, msg: &Element) {
    if !push_worthy(msg) || user.domain().as_str() != core.domain {
        return;
    }
    let Some(name) = user.node().map(|n| n.as_str().to_string()) else {
        return;
    };
    let sender = msg.attr("from").unwrap_or("").to_string();
    let body = if core.config.push.include_body {
        msg.get_child("body", ns::CLIENT).map(|b| b.text())
    } else {
        None
    };
    let core = core.clone();
    tokio::spawn(async move {
        let regs = match core.db.push_list(&name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reading push registrations failed");
                return;
            }
        };
        if regs.is_empty() {
            return;
        }
        core.push.record(&name, &sender, body);
        for reg in regs {
            let key: RegKey = (name.clone(), reg.jid.clone(), reg.node.clone());
            match core.push.slot(&key, core.config.push.min_interval) {
                Slot::Now => {
                    tokio::spawn(send_one(core.clone(), key, reg));
                }
                Slot::Later(at) => {
                    let core = core.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        core.push.fire(&key);
                        send_one(core, key, reg).await;
                    });
                }
                Slot::Covered => {}
            }
        }
    });
}

/// Send one notification and act on the app server's answer.
async fn send_one(core: Arc<Core>, key: RegKey, reg: PushRegistration) {
    let (user, _, _) = &key;
    let summary = core.push.summary(user);
    if summary.count == 0 {
        return; // the account came online meanwhile
    }
    let from = format!("{user}@{}", core.domain);
    let options = reg
        .options
        .as_deref()
        .and_then(|o| o.parse::<Element>().ok());
    let iq = notification(&from, &reg.jid, &reg.node, &summary, options);
    let reply = core
        .iq_out
        .request(iq, APP_SERVER_TIMEOUT, |iq| {
            crate::component::send(&core, &iq)
        })
        .await;
    match reply {
        Ok(reply) => {
            if let Some((condition, ty)) = error_of(&reply) {
                if ty == "wait" {
                    tracing::info!(app_server = %reg.jid, %condition, "app server busy; registration kept");
                    return;
                }
                tracing::info!(app_server = %reg.jid, %condition, user = %user, "app server refused a notification; registration removed");
                if let Err(e) = core.db.push_disable(user, &reg.jid, Some(&reg.node)).await {
                    tracing::error!(error = %e, "removing a push registration failed");
                }
                core.push.forget(&key);
            }
        }
        // Remote app servers need federation; a component may be offline.
        Err(IqOutError::Unreachable) => {
            tracing::info!(app_server = %reg.jid, "app server not reachable; notification not sent")
        }
        Err(e) => tracing::info!(app_server = %reg.jid, error = %e, "notification not answered"),
    }
}
