//! The module registry: what each protocol module declares at start-up.
//!
//! A module registers stanza handlers keyed by (kind, addressing) — and for
//! IQs by (get/set, addressing, payload namespace and name) —, the disco
//! features and identities it implements, the stream features it offers after
//! authentication, its storage migrations and its session hooks. Disco answers
//! and stream features are built from here, never from a hand-kept list.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use sqlx::migrate::Migrator;

use crate::core::Core;
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::{Kind, StanzaError};

/// A boxed future borrowing from the context.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an IQ handler sees.
pub struct IqCtx<'a> {
    pub core: &'a Arc<Core>,
    pub session: &'a Arc<SessionHandle>,
    pub to: Option<&'a Jid>,
    pub addr: Addr,
    pub payload: &'a Element,
}

/// The payload of the result (or none), or the error to return.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// An IQ handler.
pub type IqHandler = for<'a> fn(IqCtx<'a>) -> BoxFuture<'a, IqResult>;

/// What a message or presence handler sees.
pub struct StanzaCtx<'a> {
    pub core: &'a Arc<Core>,
    pub session: &'a Arc<SessionHandle>,
    pub to: Option<&'a Jid>,
}

/// A message or presence handler; it owns the stanza.
pub type StanzaHandler = for<'a> fn(StanzaCtx<'a>, Element) -> BoxFuture<'a, ()>;

/// Session lifecycle events modules can hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// The session sent its first available presence.
    InitialPresence,
    /// The session went away (stream closed, connection lost, kicked).
    Ended,
}

/// A session hook.
pub type SessionHook = for<'a> fn(&'a Arc<Core>, &'a Arc<SessionHandle>) -> BoxFuture<'a, ()>;

/// Handles a top-level element that is not a stanza (a "nonza", e.g. CSI's
/// `<active/>`), keyed by namespace and name.
pub type NonzaHandler = fn(&Core, &SessionHandle, &Element);

/// Decides whether a stanza for a session that said it is inactive may wait
/// (true) or must go out now, with everything held before it (false).
pub type HoldFilter = fn(&Element) -> bool;

/// Runs after the message module handled a message from a local client:
/// `sender` sent `msg` (from stamped, to normalised) and it was delivered live
/// to `delivered` (empty when it went to offline storage or elsewhere).
pub type MessageHook = fn(&Core, &SessionHandle, &Element, &[Arc<SessionHandle>]);

/// Runs after an available presence from a local client was handled (PEP
/// reads entity capabilities from it).
pub type PresenceHook =
    for<'a> fn(&'a Arc<Core>, &'a Arc<SessionHandle>, &'a Element) -> BoxFuture<'a, ()>;

/// May add to a client's available presence before it is broadcast (the
/// XEP-0153 avatar hash).
pub type PresenceFilter =
    for<'a> fn(&'a Arc<Core>, &'a Arc<SessionHandle>, &'a mut Element) -> BoxFuture<'a, ()>;

/// Contributes `<item/>`s to an account's disco#items: the core, who asks,
/// and the account's username.
pub type DiscoItemsHook =
    for<'a> fn(&'a Arc<Core>, &'a jid::BareJid, &'a str) -> BoxFuture<'a, Vec<Element>>;

/// Answers disco#info for a node of an account (`Some(identities and
/// features)`, or `None` when the node is not this module's or not visible
/// to the asker): the core, who asks, the account's username and the node.
pub type DiscoNodeInfoHook = for<'a> fn(
    &'a Arc<Core>,
    &'a jid::BareJid,
    &'a str,
    &'a str,
) -> BoxFuture<'a, Option<Vec<Element>>>;

/// Runs before the message module delivers a message from a local client to
/// the local account `recipient` (live, offline, or to a full JID): it may
/// rewrite the message (XEP-0359 stanza ids) or stop it (XEP-0191 blocking),
/// answering the sender itself. Returns `false` to stop delivery. Filters run
/// in module registration order.
pub type MessageFilter = for<'a> fn(
    &'a Arc<Core>,
    &'a Arc<SessionHandle>,
    &'a BareJid,
    &'a mut Element,
) -> BoxFuture<'a, bool>;

/// A task that runs for the life of the server (e.g. a pruner); it must
/// return once `core.shutdown` flips.
pub type BackgroundTask = fn(Arc<Core>) -> BoxFuture<'static, ()>;

/// Something to do to a session as soon as it exists (before it is routable),
/// e.g. what a Bind2 inline request enabled.
pub type SessionEffect = Box<dyn FnOnce(&Arc<Core>, &Arc<SessionHandle>) + Send>;

/// What a Bind2 inline feature (XEP-0386) did with its request element: a
/// child for the `<bound/>` answer and/or an effect on the new session.
#[derive(Default)]
pub struct Bind2Outcome {
    pub bound: Option<Element>,
    pub effect: Option<SessionEffect>,
}

/// Handles the child of a Bind2 `<bind/>` request in the module's namespace,
/// for the account `jid` (before the session exists).
pub type Bind2Handler = fn(&Core, &jid::BareJid, &Element) -> Bind2Outcome;
/// Like [`MessageHook`], but with the shared core, so the hook can start
/// background work (push notifications): `msg` (to normalised) was handled
/// and delivered live to `delivered` (empty: stored offline or refused).
pub type SharedMessageHook = fn(&Arc<Core>, &Element, &[Arc<SessionHandle>]);

/// Lists JIDs for the server's disco#items (connected components, services).
pub type HostItems = fn(&Core) -> Vec<String>;

/// Who a disco feature describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureScope {
    /// The server (`to` = the domain).
    Host,
    /// Every account (`to` = a bare JID).
    Account,
}

/// Everything the modules declared.
#[derive(Default)]
pub struct Registry {
    iq: HashMap<(bool, Addr, String, String), IqHandler>,
    stanza: HashMap<(Kind, Addr), StanzaHandler>,
    hooks: HashMap<SessionEvent, Vec<SessionHook>>,
    message_hooks: Vec<MessageHook>,
    message_filters: Vec<MessageFilter>,
    background: Vec<BackgroundTask>,
    shared_message_hooks: Vec<SharedMessageHook>,
    host_items: Vec<HostItems>,
    nonzas: HashMap<(String, String), NonzaHandler>,
    hold_filter: Option<HoldFilter>,
    host_features: BTreeSet<&'static str>,
    account_features: BTreeSet<&'static str>,
    identities: Vec<(FeatureScope, &'static str, &'static str, &'static str)>,
    stream_features: Vec<fn() -> Element>,
    migrators: Vec<&'static Migrator>,
    presence_hooks: Vec<PresenceHook>,
    presence_filters: Vec<PresenceFilter>,
    disco_items: Vec<DiscoItemsHook>,
    disco_node_info: Vec<DiscoNodeInfoHook>,
    bind2_inline: std::collections::BTreeMap<&'static str, Bind2Handler>,
}

/// A protocol module: a name and a function that registers it.
pub struct Module {
    pub name: &'static str,
    pub register: fn(&mut Registry),
}

impl Registry {
    /// Build a registry from modules.
    pub fn new(modules: &[Module]) -> Self {
        let mut r = Registry::default();
        for m in modules {
            (m.register)(&mut r);
            tracing::debug!(module = m.name, "module registered");
        }
        r
    }

    /// Handle IQs of type get (`set == false`) or set to `addr` with payload `ns`/`name`.
    pub fn iq(&mut self, set: bool, addr: Addr, ns: &str, name: &str, h: IqHandler) {
        let prev = self
            .iq
            .insert((set, addr, ns.to_string(), name.to_string()), h);
        debug_assert!(prev.is_none(), "two handlers for iq {ns} {name}");
    }

    /// Handle messages or presences to `addr`.
    pub fn stanza(&mut self, kind: Kind, addr: Addr, h: StanzaHandler) {
        let prev = self.stanza.insert((kind, addr), h);
        debug_assert!(prev.is_none(), "two handlers for {kind:?} {addr:?}");
    }

    /// Run `h` on a session event.
    pub fn hook(&mut self, ev: SessionEvent, h: SessionHook) {
        self.hooks.entry(ev).or_default().push(h);
    }

    /// Run `h` after every message from a local client was handled.
    pub fn message_hook(&mut self, h: MessageHook) {
        self.message_hooks.push(h);
    }

    /// Run `f` before a message from a local client is delivered to a local account.
    pub fn message_filter(&mut self, f: MessageFilter) {
        self.message_filters.push(f);
    }

    /// Run `t` in the background once the server started.
    pub fn background(&mut self, t: BackgroundTask) {
        self.background.push(t);
    }

    /// Run `h` (with the shared core) after every message handled.
    pub fn shared_message_hook(&mut self, h: SharedMessageHook) {
        self.shared_message_hooks.push(h);
    }

    /// Add JIDs to the server's disco#items.
    pub fn host_items(&mut self, f: HostItems) {
        self.host_items.push(f);
    }

    /// Handle the top-level element `ns`/`name` sent by a bound client.
    pub fn nonza(&mut self, ns: &str, name: &str, h: NonzaHandler) {
        self.nonzas.insert((ns.to_string(), name.to_string()), h);
    }

    /// Set the filter deciding what may wait for an inactive session.
    pub fn hold_filter(&mut self, f: HoldFilter) {
        self.hold_filter = Some(f);
    }

    /// Advertise a disco feature.
    pub fn feature(&mut self, scope: FeatureScope, var: &'static str) {
        match scope {
            FeatureScope::Host => self.host_features.insert(var),
            FeatureScope::Account => self.account_features.insert(var),
        };
    }

    /// Advertise a disco identity (category, type, name).
    pub fn identity(
        &mut self,
        scope: FeatureScope,
        category: &'static str,
        ty: &'static str,
        name: &'static str,
    ) {
        self.identities.push((scope, category, ty, name));
    }

    /// Offer a stream feature after authentication.
    pub fn stream_feature(&mut self, f: fn() -> Element) {
        self.stream_features.push(f);
    }

    /// Offer `ns` as a Bind2 inline feature (XEP-0386): listed in the
    /// `<inline/>` of the Bind2 stream feature, and `h` handles a child in that
    /// namespace of a client's `<bind/>` request.
    pub fn bind2_inline(&mut self, ns: &'static str, h: Bind2Handler) {
        self.bind2_inline.insert(ns, h);
    }

    /// Storage migrations this module needs.
    pub fn migrations(&mut self, m: &'static Migrator) {
        self.migrators.push(m);
    }

    /// Run `h` after every available presence from a local client.
    pub fn presence_hook(&mut self, h: PresenceHook) {
        self.presence_hooks.push(h);
    }

    /// Let `f` add to available presences before they are broadcast.
    pub fn presence_filter(&mut self, f: PresenceFilter) {
        self.presence_filters.push(f);
    }

    /// Add items to accounts' disco#items answers.
    pub fn disco_items(&mut self, h: DiscoItemsHook) {
        self.disco_items.push(h);
    }

    /// Answer disco#info for nodes of accounts.
    pub fn disco_node_info(&mut self, h: DiscoNodeInfoHook) {
        self.disco_node_info.push(h);
    }

    pub(crate) fn disco_node_info_hooks(&self) -> &[DiscoNodeInfoHook] {
        &self.disco_node_info
    }

    pub(crate) fn presence_hooks(&self) -> &[PresenceHook] {
        &self.presence_hooks
    }

    pub(crate) fn presence_filters(&self) -> &[PresenceFilter] {
        &self.presence_filters
    }

    pub(crate) fn disco_items_hooks(&self) -> &[DiscoItemsHook] {
        &self.disco_items
    }

    pub(crate) fn iq_handler(
        &self,
        set: bool,
        addr: Addr,
        ns: &str,
        name: &str,
    ) -> Option<IqHandler> {
        self.iq
            .get(&(set, addr, ns.to_string(), name.to_string()))
            .copied()
    }

    pub(crate) fn stanza_handler(&self, kind: Kind, addr: Addr) -> Option<StanzaHandler> {
        self.stanza.get(&(kind, addr)).copied()
    }

    pub(crate) fn nonza_handler(&self, ns: &str, name: &str) -> Option<NonzaHandler> {
        self.nonzas
            .get(&(ns.to_string(), name.to_string()))
            .copied()
    }

    pub(crate) fn hold(&self) -> Option<HoldFilter> {
        self.hold_filter
    }

    pub(crate) fn message_hooks(&self) -> &[MessageHook] {
        &self.message_hooks
    }

    pub(crate) fn message_filters(&self) -> &[MessageFilter] {
        &self.message_filters
    }

    pub(crate) fn background_tasks(&self) -> &[BackgroundTask] {
        &self.background
    }

    pub(crate) fn shared_message_hooks(&self) -> &[SharedMessageHook] {
        &self.shared_message_hooks
    }

    /// Every JID modules list in the server's disco#items.
    pub(crate) fn host_item_jids(&self, core: &Core) -> Vec<String> {
        self.host_items.iter().flat_map(|f| f(core)).collect()
    }

    pub(crate) fn hooks(&self, ev: SessionEvent) -> &[SessionHook] {
        self.hooks.get(&ev).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Features advertised for a scope, sorted.
    pub fn features(&self, scope: FeatureScope) -> Vec<&'static str> {
        match scope {
            FeatureScope::Host => self.host_features.iter().copied().collect(),
            FeatureScope::Account => self.account_features.iter().copied().collect(),
        }
    }

    /// Identities advertised for a scope.
    pub fn identities(
        &self,
        scope: FeatureScope,
    ) -> Vec<(&'static str, &'static str, &'static str)> {
        self.identities
            .iter()
            .filter(|i| i.0 == scope)
            .map(|i| (i.1, i.2, i.3))
            .collect()
    }

    /// Post-authentication stream features from modules.
    pub fn stream_features(&self) -> Vec<Element> {
        self.stream_features.iter().map(|f| f()).collect()
    }

    /// The Bind2 inline feature namespaces, sorted.
    pub fn bind2_features(&self) -> Vec<&'static str> {
        self.bind2_inline.keys().copied().collect()
    }

    pub(crate) fn bind2_handler(&self, ns: &str) -> Option<Bind2Handler> {
        self.bind2_inline.get(ns).copied()
    }

    /// All registered migrators.
    pub fn migrators(&self) -> &[&'static Migrator] {
        &self.migrators
    }
}
