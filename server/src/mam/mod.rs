//! XEP-0313 Message Archive Management with XEP-0359 stanza ids.
//!
//! Every 1:1 message between local accounts that the archiving rules keep
//! (`rules.rs`) and the account's preferences allow (`prefs.rs`) is archived
//! twice when it is delivered: once for the sender (outgoing) and once for
//! the recipient (incoming, also when the recipient is offline). The
//! recipient's copy gets `<stanza-id by='recipient' id='archive id'/>`, so the
//! live message, its carbons, the offline copy and the archive all carry the
//! same id and clients can tell them apart from new messages. Queries and
//! metadata are in `query.rs`; retention and the pruner in `retention.rs`.

mod prefs;
pub(crate) mod query;
pub(crate) mod retention;
pub(crate) mod rules;

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::deliver::username;
use crate::registry::{BoxFuture, FeatureScope, Module, Registry};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::storage::archive::NewArchived;
use crate::xml::serialize;

pub const NS: &str = "urn:xmpp:mam:2";
const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";

pub const MODULE: Module = Module {
    name: "mam",
    register,
};

fn register(r: &mut Registry) {
    r.iq(true, Addr::SelfBare, NS, "query", query::run);
    r.iq(false, Addr::SelfBare, NS, "query", query::form);
    r.iq(false, Addr::SelfBare, NS, "metadata", query::metadata);
    r.iq(false, Addr::SelfBare, NS, "prefs", prefs::get);
    r.iq(true, Addr::SelfBare, NS, "prefs", prefs::set);
    r.feature(FeatureScope::Account, NS);
    r.feature(FeatureScope::Account, NS_EXTENDED);
    r.feature(FeatureScope::Account, rules::NS_SID);
    r.feature(FeatureScope::Host, rules::NS_SID);
    r.migrations(&crate::storage::archive::MIGRATOR);
    r.message_filter(archive);
    r.background(retention::pruner);
}

/// Archive a message about to be delivered from `sender` to `recipient` and
/// stamp the recipient's stanza id on it. Never stops a message: if storage
/// fails the message is still delivered, without a stanza id.
fn archive<'a>(
    core: &'a Arc<Core>,
    sender: &'a Arc<SessionHandle>,
    recipient: &'a BareJid,
    msg: &'a mut Element,
) -> BoxFuture<'a, bool> {
    Box::pin(async move {
        rules::strip_forged_stanza_ids(msg, &core.domain);
        if !rules::archivable(msg) {
            return true;
        }
        let own = sender.jid.to_bare();
        let recipient_exists = !core.sessions.of(recipient).is_empty()
            || core
                .db
                .account_exists(username(recipient))
                .await
                .unwrap_or(false);
        if !recipient_exists {
            return true; // the message module answers service-unavailable
        }
        let to_resource = msg
            .attr("to")
            .and_then(|t| Jid::new(t).ok())
            .and_then(|j| j.resource().map(|r| r.as_str().to_string()))
            .unwrap_or_default();
        let mut buf = Vec::new();
        serialize(msg, &mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let stamp = rules::now_micros();
        let keep_in = prefs::wants(core, recipient, &own).await;
        // A sender on another server (federation) has its archive there.
        let keep_out = own != *recipient
            && own.domain().as_str() == core.domain
            && prefs::wants(core, &own, recipient).await;
        let mut rows = Vec::with_capacity(2);
        if keep_in {
            rows.push(NewArchived {
                username: username(recipient),
                with_bare: own.as_str(),
                with_resource: sender.jid.resource().as_str(),
                stamp,
                stanza: &text,
            });
        }
        if keep_out {
            rows.push(NewArchived {
                username: username(&own),
                with_bare: recipient.as_str(),
                with_resource: &to_resource,
                stamp,
                stanza: &text,
            });
        }
        if rows.is_empty() {
            return true;
        }
        // Not waiting for the commit: a stream management ack waits for it
        // instead (`sm`), through the sender's highest archive id.
        match core.db.archive_enqueue(&rows).await {
            Ok(ids) => {
                if let Some(last) = ids.iter().max() {
                    sender.note_archived(*last);
                }
                if keep_in {
                    if let Some(id) = ids.first() {
                        msg.append_child(rules::stanza_id(recipient.as_str(), *id));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "archiving a message failed"),
        }
        true
    })
}
