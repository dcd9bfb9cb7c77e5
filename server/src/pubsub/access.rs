//! Who may see a PEP node (XEP-0060 §4.5 access models as XEP-0163 uses
//! them), and the errors XEP-0060 §6.5.9 prescribes for those who may not.

use std::sync::Arc;

use jid::BareJid;

use super::config::{Access, NodeConfig};
use super::NS_ERRORS;
use crate::core::Core;
use crate::deliver::username;
use crate::stanza::StanzaError;

/// May `requester` read `owner`'s node? The owner always may.
pub async fn check(
    core: &Arc<Core>,
    owner: &BareJid,
    cfg: &NodeConfig,
    requester: &BareJid,
) -> Result<(), StanzaError> {
    if owner == requester {
        return Ok(());
    }
    match cfg.access {
        Access::Open => Ok(()),
        Access::Whitelist => Err(StanzaError::not_allowed().with_app("closed-node", NS_ERRORS)),
        Access::Presence | Access::Roster => {
            let item = core
                .db
                .roster_item(username(owner), requester.as_str())
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "roster lookup for PEP access failed");
                    StanzaError::internal()
                })?;
            let ok = match (&item, cfg.access) {
                (Some(i), Access::Presence) => i.subscription.has_from(),
                (Some(i), _) => {
                    i.in_roster
                        && (cfg.roster_groups.is_empty()
                            || i.groups.iter().any(|g| cfg.roster_groups.contains(g)))
                }
                (None, _) => false,
            };
            match (ok, cfg.access) {
                (true, _) => Ok(()),
                (false, Access::Presence) => Err(StanzaError::new("auth", "not-authorized")
                    .with_app("presence-subscription-required", NS_ERRORS)),
                (false, _) => Err(StanzaError::new("auth", "not-authorized")
                    .with_app("not-in-roster-group", NS_ERRORS)),
            }
        }
    }
}
