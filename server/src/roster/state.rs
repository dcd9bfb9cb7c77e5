//! The RFC 6121 subscription state machine (Appendix A), as pure functions.
//!
//! One [`Item`] is the user's view of one contact: the subscription (`none`,
//! `to`, `from`, `both`), a pending outbound request (`ask`), a pending inbound
//! request (`pending_in`, holding the request stanza for later delivery) and a
//! pre-approval (`approved`, RFC 6121 §3.4). The functions return what the
//! server must do; the presence module does it.

/// The subscription attribute of a roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => Subscription::None,
        }
    }
    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
    fn with(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One roster entry (or a state-only entry not shown in the roster).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    /// The contact's bare JID.
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Outbound subscription request pending.
    pub ask: bool,
    /// Pre-approved inbound subscription.
    pub approved: bool,
    /// Inbound subscription request awaiting the user (the serialised stanza).
    pub pending_in: Option<String>,
    /// Shown in roster results (false for state-only entries).
    pub in_roster: bool,
    pub groups: Vec<String>,
    pub version: u64,
}

impl Item {
    /// A new, empty item for `contact`.
    pub fn new(contact: &str) -> Self {
        Item {
            contact: contact.to_string(),
            ..Default::default()
        }
    }

    /// Nothing worth storing remains.
    pub fn is_empty(&self) -> bool {
        !self.in_roster
            && self.subscription == Subscription::None
            && !self.ask
            && !self.approved
            && self.pending_in.is_none()
    }
}

/// The four subscription presence types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubType {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subscribe" => Some(SubType::Subscribe),
            "subscribed" => Some(SubType::Subscribed),
            "unsubscribe" => Some(SubType::Unsubscribe),
            "unsubscribed" => Some(SubType::Unsubscribed),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SubType::Subscribe => "subscribe",
            SubType::Subscribed => "subscribed",
            SubType::Unsubscribe => "unsubscribe",
            SubType::Unsubscribed => "unsubscribed",
        }
    }
}

/// What the server does after an outbound subscription stanza from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// The item changed: store it and push it to interested resources.
    pub changed: bool,
    /// Route the stanza to the contact.
    pub route: bool,
    /// After `subscribed`/`unsubscribed` changed `from`, send the contact the
    /// user's current presence (available or unavailable).
    pub send_presence: bool,
}

/// Apply an outbound subscription stanza (RFC 6121 §3.1.2, §3.2, §3.3, §3.4).
pub fn outbound(item: &mut Item, t: SubType) -> Outbound {
    let before = item.clone();
    let (to, from) = (item.subscription.has_to(), item.subscription.has_from());
    let mut route = true;
    let mut send_presence = false;
    match t {
        SubType::Subscribe => {
            item.in_roster = true;
            if !to {
                item.ask = true;
            }
        }
        SubType::Subscribed => {
            if from {
                route = false;
            } else if item.pending_in.is_some() {
                // Approving adds the requester to the roster (RFC 6121 §3.1.5).
                item.in_roster = true;
                item.pending_in = None;
                item.subscription = Subscription::with(to, true);
                send_presence = true;
            } else {
                // Pre-approval: remembered and pushed, not routed (RFC 6121 §3.4.2).
                item.in_roster = true;
                item.approved = true;
                route = false;
            }
        }
        SubType::Unsubscribe => {
            item.ask = false;
            item.subscription = Subscription::with(false, from);
            route = to || before.ask;
        }
        SubType::Unsubscribed => {
            route = from || item.pending_in.is_some();
            item.pending_in = None;
            item.approved = false;
            item.subscription = Subscription::with(to, false);
            send_presence = from;
        }
    }
    Outbound {
        changed: *item != before,
        route,
        send_presence,
    }
}

/// What the server does after an inbound subscription stanza from the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    /// The item changed: store it and push it.
    pub changed: bool,
    /// Deliver the stanza to the user's resources.
    pub deliver: bool,
    /// Answer the contact on the user's behalf with this subscription type.
    pub auto_reply: Option<SubType>,
}

/// Apply an inbound subscription stanza (RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3).
/// `stanza` is the serialised request, kept while a `subscribe` awaits the user.
pub fn inbound(item: &mut Item, t: SubType, stanza: &str) -> Inbound {
    let before = item.clone();
    let (to, from) = (item.subscription.has_to(), item.subscription.has_from());
    let mut deliver = false;
    let mut auto_reply = None;
    match t {
        SubType::Subscribe => {
            if from {
                auto_reply = Some(SubType::Subscribed);
            } else if item.approved {
                item.approved = false;
                item.subscription = Subscription::with(to, true);
                auto_reply = Some(SubType::Subscribed);
            } else {
                item.pending_in = Some(stanza.to_string());
                deliver = true;
            }
        }
        SubType::Subscribed => {
            if item.ask {
                item.ask = false;
                item.subscription = Subscription::with(true, from);
                deliver = true;
            }
        }
        SubType::Unsubscribe => {
            if from || item.pending_in.is_some() {
                item.pending_in = None;
                item.subscription = Subscription::with(to, false);
                deliver = true;
            }
        }
        SubType::Unsubscribed => {
            if to || item.ask {
                item.ask = false;
                item.subscription = Subscription::with(false, from);
                deliver = true;
            }
        }
    }
    Inbound {
        changed: *item != before,
        deliver,
        auto_reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubType::*;

    #[test]
    fn full_handshake_reaches_both_on_both_sides() {
        // alice subscribes to bob; bob approves; bob subscribes back; alice approves.
        let (mut a, mut b) = (Item::new("bob@x"), Item::new("alice@x"));
        let o = outbound(&mut a, Subscribe);
        assert!(o.route && o.changed && a.ask && a.in_roster);
        let i = inbound(&mut b, Subscribe, "<presence type='subscribe'/>");
        assert!(i.deliver && b.pending_in.is_some() && !b.in_roster);
        let o = outbound(&mut b, Subscribed);
        assert!(o.route && o.send_presence && b.in_roster);
        assert_eq!(b.subscription, Subscription::From);
        let i = inbound(&mut a, Subscribed, "");
        assert!(i.deliver && !a.ask);
        assert_eq!(a.subscription, Subscription::To);

        outbound(&mut b, Subscribe);
        inbound(&mut a, Subscribe, "<presence type='subscribe'/>");
        outbound(&mut a, Subscribed);
        inbound(&mut b, Subscribed, "");
        assert_eq!(
            (a.subscription, b.subscription),
            (Subscription::Both, Subscription::Both)
        );
        assert!(!a.ask && !b.ask && a.pending_in.is_none() && b.pending_in.is_none());
    }

    #[test]
    fn pre_approval_is_not_routed_and_auto_answers() {
        let mut b = Item::new("alice@x");
        let o = outbound(&mut b, Subscribed);
        assert!(!o.route && o.changed && b.approved);
        let i = inbound(&mut b, Subscribe, "<presence/>");
        assert_eq!(i.auto_reply, Some(Subscribed));
        assert!(!i.deliver && !b.approved);
        assert_eq!(b.subscription, Subscription::From);
    }

    #[test]
    fn subscribe_from_existing_subscriber_is_auto_answered() {
        let mut b = Item {
            subscription: Subscription::From,
            ..Item::new("alice@x")
        };
        let i = inbound(&mut b, Subscribe, "");
        assert_eq!(i.auto_reply, Some(Subscribed));
        assert!(!i.deliver && !i.changed);
    }

    #[test]
    fn unsolicited_subscribed_is_ignored() {
        let mut a = Item::new("mallory@x");
        let i = inbound(&mut a, Subscribed, "");
        assert!(!i.deliver && !i.changed);
        assert_eq!(a.subscription, Subscription::None);
    }

    #[test]
    fn cancellation_and_unsubscribe() {
        let mut a = Item {
            subscription: Subscription::Both,
            in_roster: true,
            ..Item::new("bob@x")
        };
        // alice cancels bob's subscription to her presence.
        let o = outbound(&mut a, Unsubscribed);
        assert!(o.route && o.send_presence);
        assert_eq!(a.subscription, Subscription::To);
        // alice unsubscribes from bob's presence.
        let o = outbound(&mut a, Unsubscribe);
        assert!(o.route);
        assert_eq!(a.subscription, Subscription::None);
        // Repeating it changes nothing and is not routed.
        let o = outbound(&mut a, Unsubscribe);
        assert!(!o.route && !o.changed);

        let mut b = Item {
            subscription: Subscription::Both,
            ..Item::new("alice@x")
        };
        assert!(inbound(&mut b, Unsubscribed, "").deliver);
        assert_eq!(b.subscription, Subscription::From);
        assert!(inbound(&mut b, Unsubscribe, "").deliver);
        assert_eq!(b.subscription, Subscription::None);
    }

    #[test]
    fn denying_a_pending_request() {
        let mut b = Item::new("alice@x");
        inbound(&mut b, Subscribe, "<presence/>");
        let o = outbound(&mut b, Unsubscribed);
        assert!(o.route && !o.send_presence);
        assert!(b.pending_in.is_none() && b.is_empty());
        // The requester's pending ask is cleared by the denial.
        let mut a = Item {
            ask: true,
            in_roster: true,
            ..Item::new("bob@x")
        };
        assert!(inbound(&mut a, Unsubscribed, "").deliver);
        assert!(!a.ask);
    }

    #[test]
    fn withdrawn_request_clears_pending_in() {
        let mut b = Item::new("alice@x");
        inbound(&mut b, Subscribe, "<presence/>");
        let i = inbound(&mut b, Unsubscribe, "");
        assert!(i.deliver && b.pending_in.is_none());
    }

    #[test]
    fn subscribed_without_request_when_already_from_is_dropped() {
        let mut b = Item {
            subscription: Subscription::From,
            ..Item::new("alice@x")
        };
        let o = outbound(&mut b, Subscribed);
        assert!(!o.route && !o.changed);
    }
}
