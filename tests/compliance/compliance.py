#!/usr/bin/env python3
"""XMPP Compliance Suites 2023 (XEP-0479) check for a running Kith server.

Logs in as real clients (slixmpp; a raw socket only for SASL2/Bind2/FAST, which slixmpp
has no plugin for) with three test accounts and, for every server-side item of the CS2023
Core, IM and Mobile categories at the *Advanced* level (plus the Web items and what issue 4
adds on top: SASL2, Bind2, FAST, stanza ids, ping), reports

- **advertised**: the disco feature / identity / stream feature a client looks for is there;
- **functional**: a real probe passed (carbons: the other device gets the copy; MAM: the
  message just sent is found by `with`; SM: a message sent while the socket was dead
  arrives once after `<resume/>`; push: an app-server component gets the notification …).

The web items (host-meta, then WebSocket and BOSH at the URLs it lists: login and a
message each way with a TCP user; HTTP upload: slot, PUT, GET) need `--https-port`; the
federation row needs a second server federated with this one (`--peer-domain`,
`--peer-port`, `--peer-account`): a mutual subscription, presence and a message each way
across. Group chat rows (issue 5) are reported `pending (issue 5)` unless the server
already advertises a MUC service, in which case they are probed like the rest.

Output: a table on stdout, and `--json FILE` with every row. Exit status 1 iff an in-scope
row is not both advertised and functional (2 on bad usage).

    .venv/bin/python tests/compliance/compliance.py --port 5222 --tls-port 5223 \\
        --ca ca.pem --account alice:PW --account bob:PW --account carol:PW \\
        --component push.localhost:SECRET@5347 --https-port 5443 --s2s-port 5269 \\
        --peer-domain peer.test --peer-port 6222 --peer-account dave:PW --json compliance.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from conftest import RawXmpp, StreamClosed  # noqa: E402  (the e2e suite's socket client)

STEP = 10.0  # every wait is bounded by this (seconds)
QUIET = 1.5  # how long "nothing arrives" is watched

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_DATA = "jabber:x:data"
NS_PUSH = "urn:xmpp:push:0"
NS_SID = "urn:xmpp:sid:0"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
NS_PROBE = "urn:xmpp:kith:compliance:0"  # the PEP node the probes publish to
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_WS = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"
PEER = "\0peer"  # the key of the peer server's account in Ctx.accounts

# --------------------------------------------------------------------------- rows


@dataclasses.dataclass
class Row:
    key: str  # e.g. "XEP-0280"
    feature: str  # CS2023's feature name
    levels: str  # where CS2023 requires it of a server ("IM Advanced", …)
    owner: str | None = None  # "5" when issue 5 owns it; None when in scope here
    advertised: bool | None = None  # None: the spec defines nothing to advertise
    functional: bool | None = None  # None: not probed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.advertised is not False and self.functional is True

    @property
    def status(self) -> str:
        if self.ok:
            return "pass"
        if self.owner:
            return f"pending (issue {self.owner})"
        return "FAIL"

    @property
    def in_scope(self) -> bool:
        return self.owner is None


PROBES: list = []


def probe(key: str, feature: str, levels: str, owner: str | None = None):
    """Register `fn(ctx, row)` as the probe of one row; rows print in registration order."""
    def wrap(fn):
        PROBES.append((key, feature, levels, owner, fn))
        return fn
    return wrap


# --------------------------------------------------------------------------- clients


class Device(slixmpp.ClientXMPP):
    """One logged-in resource: slixmpp with awaitable queues for what the probes watch."""

    def __init__(self, ctx: "Ctx", user: str, resource: str, *, interests=(),
                 plugins=(), direct_tls: bool = False, port: int | None = None):
        acct = ctx.accounts[user]
        super().__init__(f"{acct.jid}/{resource}", acct.password)
        self.ctx = ctx
        self.port = port or (ctx.args.tls_port if direct_tls else ctx.args.port)
        self.enable_plaintext = False
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.ca_certs = ctx.args.ca
        self.ssl_context.set_alpn_protocols(["xmpp-client"])
        self.whitespace_keepalive = False
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = True
        for p in ("xep_0030", "xep_0060", "xep_0092", "xep_0115", "xep_0163", "xep_0199",
                  "xep_0352",
                  *plugins):
            self.register_plugin(p)
        for ns in interests:
            self.plugin["xep_0163"].add_interest(ns)
        loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.events: asyncio.Queue = asyncio.Queue()
        self.carbons: asyncio.Queue = asyncio.Queue()
        self.session = loop.create_future()
        self.resumed = loop.create_future()
        self.gone = loop.create_future()
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("pubsub_publish", self.events.put_nowait)
        self.add_event_handler("carbon_received",
                               lambda m: self.carbons.put_nowait(("received", m)))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(("sent", m)))
        self.add_event_handler("session_start", lambda _: _settle(self.session, True))
        self.add_event_handler("session_resumed", lambda _: _settle(self.resumed, True))
        for ev in ("failed_all_auth", "connection_failed", "ssl_invalid_chain"):
            self.add_event_handler(ev, self._failer(ev))
        self.add_event_handler("disconnected", self._on_disconnected)

    def _on_message(self, msg):
        if msg["type"] == "error":
            self.errors.put_nowait(msg)
        elif msg["body"]:
            self.messages.put_nowait(msg)

    def _failer(self, what):
        def fail(arg):
            if not self.session.done():
                self.session.set_exception(ProbeError(f"login failed: {what} {arg}"))
        return fail

    def _on_disconnected(self, reason):
        if not self.session.done():
            self.session.set_exception(ProbeError(f"disconnected before login: {reason}"))
        _settle(self.gone, reason)

    async def login(self, presence: bool = True, priority: int = 0) -> "Device":
        self.connect(self.ctx.args.host, self.port)
        try:
            await asyncio.wait_for(asyncio.shield(self.session), STEP)
        except BaseException:
            self.abort()
            raise
        await self.get_roster(timeout=STEP)
        if presence:
            # Every device announces its caps (XEP-0115), as real clients do.
            await self.plugin["xep_0115"].update_caps(broadcast=False)
            self.send_presence(ppriority=priority)
            await self.plugin["xep_0199"].ping(self.boundjid.domain, timeout=STEP)
        return self

    async def next(self, queue: asyncio.Queue, match=lambda x: True, timeout: float = STEP,
                   what: str = "the expected stanza"):
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = await asyncio.wait_for(queue.get(),
                                              max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                raise ProbeError(f"{self.boundjid.resource}: no {what} within {timeout}s")
            if match(item):
                return item

    async def quiet(self, queue: asyncio.Queue, match=lambda x: True, within: float = QUIET):
        """None if nothing matching arrives within `within` seconds, else the stanza."""
        try:
            return await self.next(queue, match, within)
        except ProbeError:
            return None

    async def iq(self, to: str | None, itype: str, payload: ET.Element):
        """Send an IQ with a hand-built payload; returns the result, raises IqError."""
        iq = self.make_iq(ito=to, itype=itype)
        iq.append(payload)
        return await iq.send(timeout=STEP)

    def drop(self):
        """Cut the TCP connection abruptly (RST, no </stream:stream>): a phone losing signal."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        if self.transport is not None:
            self.transport.abort()

    async def close(self):
        if self.transport is not None:
            self.disconnect(wait=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone), 3.0)
        self.abort()


class AppServer(slixmpp.ComponentXMPP):
    """An XEP-0114 component acting as an XEP-0357 app server: records what it is sent."""

    def __init__(self, domain: str, secret: str, host: str, port: int):
        super().__init__(domain, secret, host, port)
        for p in ("xep_0030", "xep_0199"):
            self.register_plugin(p)
        loop = asyncio.get_running_loop()
        self.pushes: asyncio.Queue = asyncio.Queue()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.session = loop.create_future()
        self.gone = loop.create_future()
        self.register_handler(Callback(
            "push publish", MatchXPath(f"{{jabber:component:accept}}iq/{{{NS_PUBSUB}}}pubsub"),
            self._on_publish))
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("session_start", lambda _: _settle(self.session, True))
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", lambda e: _settle(
            self.session, ProbeError(f"stream error {e['condition']}")))

    def _on_disconnected(self, reason):
        _settle(self.session, ProbeError(f"component disconnected: {reason}"))
        _settle(self.gone, reason)

    def _on_publish(self, iq):
        self.pushes.put_nowait(ET.fromstring(str(iq)))
        iq.reply().send()

    async def start(self) -> "AppServer":
        self.connect()
        res = await asyncio.wait_for(asyncio.shield(self.session), STEP)
        if isinstance(res, Exception):
            raise res
        return self

    async def close(self):
        if self.transport is not None:
            self.disconnect(wait=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone), 3.0)
        self.abort()


def _settle(fut: asyncio.Future, value):
    if not fut.done():
        fut.set_result(value)


class ProbeError(Exception):
    pass


def check(cond, what: str):
    if not cond:
        raise ProbeError(what)


def el(tag: str, attrs: dict | None = None, text: str | None = None, *children) -> ET.Element:
    e = ET.Element(tag, {k: str(v) for k, v in (attrs or {}).items()})
    if text is not None:
        e.text = text
    e.extend(children)
    return e


def form(form_type: str, fields: dict, ftype: str = "submit") -> ET.Element:
    x = el(f"{{{NS_DATA}}}x", {"type": ftype})
    for var, value in {"FORM_TYPE": form_type, **fields}.items():
        f = el(f"{{{NS_DATA}}}field", {"var": var})
        f.append(el(f"{{{NS_DATA}}}value", None, str(value)))
        x.append(f)
    return x


def item_ids(iq) -> list[str]:
    """The item ids of a pubsub items result."""
    return [i.get("id") for i in iq.xml.iter(f"{{{NS_PUBSUB}}}item")]


def event_items(msg) -> list[tuple[str, str]]:
    """(node, item id) pairs of a pubsub event notification."""
    out = []
    for items in msg.xml.iter(f"{{{NS_PUBSUB_EVENT}}}items"):
        out += [(items.get("node"), i.get("id")) for i in items.iter(f"{{{NS_PUBSUB_EVENT}}}item")]
    return out


def iq_error(e: IqError) -> str:
    return f"{e.iq['error']['type']}/{e.iq['error']['condition']}"


# --------------------------------------------------------------------------- context


@dataclasses.dataclass
class Account:
    user: str
    password: str
    jid: str


class Ctx:
    """What the probes share: arguments, accounts, long-lived devices, disco answers."""

    def __init__(self, args):
        self.args = args
        self.domain = args.domain
        self.accounts: dict[str, Account] = {}
        for spec in args.account:
            user, _, password = spec.partition(":")
            self.accounts[user] = Account(user, password, f"{user}@{self.domain}")
        self.a, self.b, self.c = list(self.accounts)[:3]
        self.peer: Account | None = None  # the federation probe's user on --peer-domain
        if args.peer_account and args.peer_domain:
            user, _, password = args.peer_account.partition(":")
            self.peer = Account(user, password, f"{user}@{args.peer_domain}")
            self.accounts[PEER] = self.peer
        self.devices: list[Device] = []
        self.server_features: set[str] = set()
        self.server_items: list[str] = []
        self.account_features: set[str] = set()
        self.account_identities: set[tuple[str, str]] = set()
        self.pre_auth: ET.Element | None = None
        self.post_auth: ET.Element | None = None
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.tls_error: str | None = None
        self.component: AppServer | None = None
        self.component_error: str | None = None
        self.server_identities: set[tuple[str, str]] = set()
        self.item_infos: list[tuple[str, set, set]] = []  # (jid, identities, features)
        self.shared: dict = {}  # what one probe leaves for the next (devices, results)
        self.agent_id = str(uuid.uuid4())  # the SASL2 user-agent id of the raw probes

    def jid(self, who: str) -> str:
        return self.accounts[who].jid

    async def device(self, who: str, resource: str, priority: int = 0, **kw) -> Device:
        d = Device(self, who, resource, **kw)
        await d.login(priority=priority)
        self.devices.append(d)
        return d

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.args.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["xmpp-client"])
        return ctx

    def raw(self, direct: bool = False) -> RawXmpp:
        """A raw socket client (TLS names checked against --domain, not the e2e default)."""
        port = self.args.tls_port if direct else self.args.port
        raw = RawXmpp(port, host=self.args.host)
        if direct:
            raw.sock = self.tls_context().wrap_socket(raw.sock, server_hostname=self.domain)
        return raw

    def starttls(self, raw: RawXmpp):
        """STARTTLS on `raw`, then a fresh stream header to --domain."""
        raw.open_stream(to=self.domain)
        feats = raw.features()
        check(feats.find(f"{{{NS_TLS}}}starttls") is not None, "no <starttls/> offered")
        raw.send(f"<starttls xmlns='{NS_TLS}'/>")
        raw.expect(f"{{{NS_TLS}}}proceed")
        raw.sock = self.tls_context().wrap_socket(raw.sock, server_hostname=self.domain)
        raw.raw = b""
        raw.open_stream(to=self.domain)

    def stream_feature(self, tag: str, after_auth: bool = True) -> bool:
        feats = self.post_auth if after_auth else self.pre_auth
        return feats is not None and feats.find(tag) is not None


# --------------------------------------------------------------------------- set-up


def capture_stream_features(ctx: Ctx):
    """STARTTLS, SASL PLAIN on a raw socket: the stream features before and after auth."""
    raw = ctx.raw()
    try:
        ctx.starttls(raw)
        ctx.tls_version = raw.sock.version()
        ctx.tls_cipher = raw.sock.cipher()[0]
        ctx.pre_auth = raw.features()
        acct = ctx.accounts[ctx.a]
        res = raw.auth_plain(acct.user, acct.password)
        check(res.tag == f"{{{NS_SASL}}}success", f"PLAIN failed: {ET.tostring(res)!r}")
        raw.open_stream(to=ctx.domain)
        ctx.post_auth = raw.features()
    except (ProbeError, AssertionError, ssl.SSLError, OSError, TimeoutError, StreamClosed) as e:
        ctx.tls_error = f"{type(e).__name__}: {e}"
    finally:
        raw.close()


async def subscribe_both(x: Device, y: Device):
    """x and y subscribe to each other (both auto-approve); waits for `both` in x's roster."""
    x.send_presence_subscription(pto=y.boundjid.bare)
    y.send_presence_subscription(pto=x.boundjid.bare)
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        rx = x.client_roster[y.boundjid.bare]["subscription"]
        ry = y.client_roster[x.boundjid.bare]["subscription"]
        if rx == "both" and ry == "both":
            return
        await asyncio.sleep(0.05)
    raise ProbeError(f"subscription not mutual after {STEP}s: "
                     f"{x.client_roster[y.boundjid.bare]['subscription']}/"
                     f"{y.client_roster[x.boundjid.bare]['subscription']}")


# --------------------------------------------------------------------------- Core


@probe("RFC 6120", "Core features (client-to-server)", "Core")
async def p_rfc6120(ctx: Ctx, row: Row):
    row.advertised = (ctx.stream_feature(f"{{{NS_SASL}}}mechanisms", after_auth=False)
                      and ctx.stream_feature("{urn:ietf:params:xml:ns:xmpp-bind}bind"))
    a = await ctx.device(ctx.a, "core")
    b = ctx.shared["b_desk"]
    body = f"core {secrets.token_hex(4)}"
    a.send_message(mto=ctx.jid(ctx.b), mbody=body, mtype="chat")
    got = await b.next(b.messages, lambda m: m["body"] == body, what="message")
    check(got["from"] == a.boundjid, f"stamped from {got['from']} != {a.boundjid}")
    # RFC 6120 §8.3: an IQ nobody handles gets an error, not silence.
    try:
        await a.iq(ctx.domain, "get", el("{urn:xmpp:kith:no-such-thing}query"))
        raise ProbeError("unknown IQ payload answered with a result")
    except IqError as e:
        check(e.iq["error"]["condition"] == "service-unavailable"
              or e.iq["error"]["condition"] == "feature-not-implemented",
              f"unknown IQ → {iq_error(e)}")
    row.functional = True
    row.detail = "login, bind, message stamped with the full JID, unknown IQ → error"


@probe("RFC 7590", "TLS", "Core")
async def p_tls(ctx: Ctx, row: Row):
    check(ctx.tls_version is not None, f"STARTTLS failed: {ctx.tls_error}")
    # STARTTLS is mandatory: the first features carry <starttls><required/>.
    raw = ctx.raw()
    try:
        raw.open_stream(to=ctx.domain)
        feats = raw.features()
        tls = feats.find(f"{{{NS_TLS}}}starttls")
        row.advertised = tls is not None
        check(tls is not None and tls.find(f"{{{NS_TLS}}}required") is not None,
              "STARTTLS not offered as required")
        check(feats.find(f"{{{NS_SASL}}}mechanisms") is None, "SASL offered before TLS")
    finally:
        raw.close()
    check(ctx.tls_version in ("TLSv1.2", "TLSv1.3"), f"negotiated {ctx.tls_version}")
    check(ctx.tls_version == "TLSv1.3" or "ECDHE" in ctx.tls_cipher,
          f"no forward secrecy: {ctx.tls_cipher}")
    row.functional = True
    row.detail = f"{ctx.tls_version} {ctx.tls_cipher}, certificate verified, STARTTLS required"


@probe("XEP-0368", "Direct TLS", "Core Advanced")
async def p_direct_tls(ctx: Ctx, row: Row):
    check(ctx.args.tls_port, "no --tls-port given")
    raw = ctx.raw(direct=True)
    try:
        alpn = raw.sock.selected_alpn_protocol()
    finally:
        raw.close()
    row.advertised = True
    d = Device(ctx, ctx.a, "direct", direct_tls=True)
    await d.login()
    ctx.devices.append(d)
    row.functional = True
    row.detail = f"slixmpp logged in on the Direct TLS port (ALPN {alpn})"


@probe("XEP-0030", "Feature discovery", "Core")
async def p_disco(ctx: Ctx, row: Row):
    row.advertised = "http://jabber.org/protocol/disco#info" in ctx.server_features
    check(("server", "im") in ctx.server_identities, f"server identities {ctx.server_identities}")
    check(("account", "registered") in ctx.account_identities,
          f"account identities {ctx.account_identities}")
    row.functional = True
    row.detail = (f"server: {len(ctx.server_features)} features, items {ctx.server_items}; "
                  f"account: {len(ctx.account_features)} features")


@probe("XEP-0114", "Server extensibility (components)", "Core")
async def p_component(ctx: Ctx, row: Row):
    check(ctx.args.component, "no --component given (no component listener configured)")
    comp = ctx.component
    check(comp is not None, f"component could not connect: {ctx.component_error}")
    row.advertised = comp.boundjid.bare in ctx.server_items
    a = ctx.shared["a_phone"]
    body = f"to component {secrets.token_hex(4)}"
    a.send_message(mto=comp.boundjid.bare, mbody=body, mtype="chat")
    got = await next_component_message(ctx, lambda m: m["body"] == body)
    check(got["from"].bare == ctx.jid(ctx.a), f"component saw from={got['from']}")
    reply = f"from component {secrets.token_hex(4)}"
    comp.send_message(mto=a.boundjid, mfrom=comp.boundjid.bare, mbody=reply, mtype="chat")
    await a.next(a.messages, lambda m: m["body"] == reply, what="message from the component")
    row.functional = True
    row.detail = (f"{comp.boundjid.bare}: handshake, user → component and back"
                  + ("" if row.advertised else "; not in the server's disco#items"))


@probe("XEP-0163", "Event publishing (PEP)", "Core Advanced")
async def p_pep(ctx: Ctx, row: Row):
    row.advertised = ("pubsub", "pep") in ctx.account_identities
    a = ctx.shared["a_phone"]
    b_notify = ctx.shared["b_desk"]  # advertises NS_PROBE+notify
    b_plain = ctx.shared["b_plain"]  # does not
    item = f"i{secrets.token_hex(4)}"
    payload = el(f"{{{NS_PROBE}}}probe", None, item)
    await a.plugin["xep_0060"].publish(None, NS_PROBE, id=item, payload=payload, timeout=STEP)
    ev = await b_notify.next(b_notify.events, lambda m: (NS_PROBE, item) in event_items(m),
                             what="PEP notification")
    check(ev["from"].bare == ctx.jid(ctx.a), f"notification from {ev['from']}")
    other = await b_plain.quiet(b_plain.events, lambda m: (NS_PROBE, item) in event_items(m))
    ctx.shared["pep_result"] = (True, other)
    items = await b_notify.plugin["xep_0060"].get_items(ctx.jid(ctx.a), NS_PROBE, timeout=STEP)
    ids = item_ids(items)
    check(item in ids, f"items of the node: {ids}")
    row.functional = True
    row.detail = "publish → contact notified, items query by a contact"


@probe("XEP-0115", "Feature broadcasts (caps-filtered PEP notifications)", "Core Advanced")
async def p_caps(ctx: Ctx, row: Row):
    # A server "supports" caps by reading them: PEP notifications go only to resources
    # whose caps carry NODE+notify (XEP-0163 §4.3.3, the `filtered-notifications` feature).
    row.advertised = f"{NS_PUBSUB}#filtered-notifications" in ctx.account_features
    pep = ctx.shared.get("pep_result")
    check(pep is not None, "the PEP probe did not get as far as publishing")
    got, other = pep
    check(got, "the contact advertising +notify got no notification")
    check(other is None, "a resource without +notify got the notification anyway")
    row.functional = True
    row.detail = "notified: the +notify resource; not notified: the one without"


# --------------------------------------------------------------------------- IM


@probe("RFC 6121", "Core features (roster, presence, offline)", "IM")
async def p_rfc6121(ctx: Ctx, row: Row):
    row.advertised = (ctx.stream_feature("{urn:xmpp:features:rosterver}ver")
                      or ctx.stream_feature("{urn:xmpp:features:pre-approval}sub") or None)
    check(ctx.shared.get("subscribed"), f"subscription failed: {ctx.shared.get('sub_error')}")
    body = ctx.shared["offline_body"]
    c = ctx.shared["c_phone"]
    got = await c.next(c.messages, lambda m: m["body"] == body, what="offline message at login")
    check(got["delay"]["stamp"] is not None, "offline message without <delay/>")
    row.functional = True
    row.detail = "mutual subscription (both), offline delivery with <delay/>"


@probe("XEP-0054", "vcard-temp", "IM")
async def p_vcard(ctx: Ctx, row: Row):
    row.advertised = "vcard-temp" in ctx.server_features or "vcard-temp" in ctx.account_features
    a = ctx.shared["a_phone"]
    b = ctx.shared["b_desk"]
    vcard = a.plugin["xep_0054"].make_vcard()
    nick = f"Alice {secrets.token_hex(3)}"
    vcard["NICKNAME"] = nick
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = ctx.shared["photo"]
    await a.plugin["xep_0054"].publish_vcard(vcard, timeout=STEP)
    got = await b.plugin["xep_0054"].get_vcard(ctx.jid(ctx.a), cached=False, timeout=STEP)
    check(got.xml.findtext("{vcard-temp}vCard/{vcard-temp}NICKNAME") == nick,
          "a contact read back a different vCard")
    ctx.shared["vcard_set"] = time.monotonic()
    row.functional = True
    row.detail = "set by the owner, read by a contact"


@probe("XEP-0398", "User avatar compatibility (vCard ↔ PEP)", "IM Advanced")
async def p_vcard_conversion(ctx: Ctx, row: Row):
    feat = "urn:xmpp:pep-vcard-conversion:0"
    row.advertised = feat in ctx.account_features or feat in ctx.server_features
    check(ctx.shared.get("vcard_set"), "the vCard probe did not set a PHOTO")
    b = ctx.shared["b_desk"]
    sha1 = hashlib.sha1(ctx.shared["photo"]).hexdigest()
    items = await b.plugin["xep_0060"].get_items(ctx.jid(ctx.a), NS_AVATAR_META,
                                                 timeout=STEP)
    ids = item_ids(items)
    check(sha1 in ids, f"vCard PHOTO sha1 {sha1} not in {NS_AVATAR_META} items {ids}")
    row.functional = True
    row.detail = "vCard PHOTO appeared as the XEP-0084 metadata item"


@probe("XEP-0153", "vCard-based avatars (hash in presence)", "IM Advanced")
async def p_vcard_avatars(ctx: Ctx, row: Row):
    row.advertised = None  # XEP-0153 defines no disco feature; the presence carries it
    check(ctx.shared.get("vcard_set"), "the vCard probe did not set a PHOTO")
    a, b = ctx.shared["a_phone"], ctx.shared["b_desk"]
    sha1 = hashlib.sha1(ctx.shared["photo"]).hexdigest()
    a.send_presence(pstatus=f"avatar {secrets.token_hex(3)}", ppriority=10)

    def photo_of(p):
        x = p.xml.find("{vcard-temp:x:update}x")
        ph = x.find("{vcard-temp:x:update}photo") if x is not None else None
        return ph.text if ph is not None else None

    p = await b.next(b.presences, lambda p: p["from"] == a.boundjid and photo_of(p),
                     what="presence with the vCard photo hash")
    check(photo_of(p) == sha1, f"photo hash {photo_of(p)} != {sha1}")
    row.functional = True
    row.detail = "the server stamped the PHOTO hash into the owner's presence"


@probe("XEP-0280", "Outbound message synchronization (carbons)", "IM")
async def p_carbons(ctx: Ctx, row: Row):
    row.advertised = "urn:xmpp:carbons:2" in ctx.server_features
    phone, laptop = ctx.shared["a_phone"], ctx.shared["a_laptop"]
    b = ctx.shared["b_desk"]
    await phone.plugin["xep_0280"].enable(timeout=STEP)
    await laptop.plugin["xep_0280"].enable(timeout=STEP)
    body = f"sent {secrets.token_hex(4)}"
    phone.send_message(mto=ctx.jid(ctx.b), mbody=body, mtype="chat")
    await b.next(b.messages, lambda m: m["body"] == body, what="message")
    kind, m = await laptop.next(laptop.carbons, lambda c: c[1]["carbon_sent"]["body"] == body,
                                what="<sent/> carbon")
    check(m["from"] == ctx.jid(ctx.a), f"carbon from {m['from']}")
    body = f"received {secrets.token_hex(4)}"
    b.send_message(mto=ctx.jid(ctx.a), mbody=body, mtype="chat")
    await phone.next(phone.messages, lambda m: m["body"] == body, what="message to the bare JID")
    await laptop.next(laptop.carbons, lambda c: c[1]["carbon_received"]["body"] == body,
                      what="<received/> carbon")
    row.functional = True
    row.detail = "sent copy and received copy reach the other device"


@probe("XEP-0191", "User blocking", "IM Advanced")
async def p_blocking(ctx: Ctx, row: Row):
    row.advertised = "urn:xmpp:blocking" in ctx.account_features or \
        "urn:xmpp:blocking" in ctx.server_features
    a, c = ctx.shared["a_phone"], ctx.shared["c_phone"]
    a.register_plugin("xep_0191")
    c_jid = ctx.jid(ctx.c)
    await a.plugin["xep_0191"].block(c_jid, timeout=STEP)
    try:
        blocked = await a.plugin["xep_0191"].get_blocked_jids(timeout=STEP)
        check(c_jid in {str(j) for j in blocked}, f"blocklist {blocked}")
        body = f"blocked {secrets.token_hex(4)}"
        c.send_message(mto=ctx.jid(ctx.a), mbody=body, mtype="chat")
        check(await a.quiet(a.messages, lambda m: m["body"] == body) is None,
              "the blocked message was delivered")
        # XEP-0191 §3.5: the blocked sender SHOULD get <service-unavailable/>.
        err = await c.quiet(c.errors, within=0.1)
        check(err is not None, "the blocked sender got no error back")
        check(err["error"]["condition"] == "service-unavailable",
              f"blocked sender got {err['error']['condition']}")
    finally:
        await a.plugin["xep_0191"].unblock(c_jid, timeout=STEP)
    body = f"unblocked {secrets.token_hex(4)}"
    c.send_message(mto=ctx.jid(ctx.a), mbody=body, mtype="chat")
    await a.next(a.messages, lambda m: m["body"] == body, what="message after unblocking")
    row.functional = True
    row.detail = "block → listed, message refused with service-unavailable; unblock → delivered"


@probe("XEP-0045", "Group chat", "IM", owner="5")
async def p_muc(ctx: Ctx, row: Row):
    muc = find_service(ctx, "conference", "text")
    row.advertised = muc is not None
    check(muc, "no conference service in the server's disco#items")
    a = ctx.shared["a_phone"]
    a.register_plugin("xep_0045")
    room = f"compliance-{secrets.token_hex(3)}@{muc}"
    await a.plugin["xep_0045"].join_muc_wait(room, "alice", timeout=STEP)
    body = f"groupchat {secrets.token_hex(4)}"
    a.send_message(mto=room, mbody=body, mtype="groupchat")
    await a.next(a.messages, lambda m: m["body"] == body and m["type"] == "groupchat")
    ctx.shared["muc_room"] = room
    row.functional = True
    row.detail = f"joined {room}, message reflected"


@probe("XEP-0249", "Direct MUC invitations", "IM", owner="5")
async def p_invite(ctx: Ctx, row: Row):
    room = ctx.shared.get("muc_room")
    row.advertised = room is not None
    check(room, "no MUC room (XEP-0045 pending)")
    a, b = ctx.shared["a_phone"], ctx.shared["b_desk"]
    msg = a.make_message(mto=ctx.jid(ctx.b), mbody="join us")
    msg.append(el("{jabber:x:conference}x", {"jid": room}))
    msg.send()
    got = await b.next(b.messages, lambda m: m.xml.find("{jabber:x:conference}x") is not None)
    check(got.xml.find("{jabber:x:conference}x").get("jid") == room, "invite lost its room")
    row.functional = True


@probe("XEP-0313 (MUC)", "Group chat history (MUC archive)", "IM Advanced", owner="5")
async def p_muc_mam(ctx: Ctx, row: Row):
    room = ctx.shared.get("muc_room")
    check(room, "no MUC room (XEP-0045 pending)")
    # A room with an archive advertises it on the room itself (XEP-0313 §"Querying a MUC
    # archive"), as clients check it.
    info = await ctx.shared["a_phone"].plugin["xep_0030"].get_info(room, timeout=STEP)
    row.advertised = "urn:xmpp:mam:2" in info["disco_info"]["features"]
    a = ctx.shared["a_phone"]
    a.register_plugin("xep_0313")
    res = await a.plugin["xep_0313"].retrieve(jid=room, timeout=STEP)
    check(res["mam"]["results"], "the room's archive is empty")
    row.functional = True


@probe("XEP-0410", "MUC self-ping", "IM Advanced", owner="5")
async def p_muc_ping(ctx: Ctx, row: Row):
    room = ctx.shared.get("muc_room")
    check(room, "no MUC room (XEP-0045 pending)")
    a = ctx.shared["a_phone"]
    await a.plugin["xep_0199"].ping(f"{room}/alice", timeout=STEP)
    row.advertised = None
    row.functional = True


@probe("XEP-0223", "Persistent storage of private data via PubSub", "IM Advanced")
async def p_private_pubsub(ctx: Ctx, row: Row):
    row.advertised = f"{NS_PUBSUB}#publish-options" in ctx.account_features
    a, b = ctx.shared["a_phone"], ctx.shared["b_desk"]
    node = f"{NS_PROBE}:private"
    opts = form(f"{NS_PUBSUB}#publish-options",
                {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"})
    pubsub = el(f"{{{NS_PUBSUB}}}pubsub", None, None,
                el(f"{{{NS_PUBSUB}}}publish", {"node": node}, None,
                   el(f"{{{NS_PUBSUB}}}item", {"id": "current"}, None,
                      el(f"{{{NS_PROBE}}}secret", None, "only mine"))),
                el(f"{{{NS_PUBSUB}}}publish-options", None, None, opts))
    await a.iq(None, "set", pubsub)
    mine = await a.plugin["xep_0060"].get_items(ctx.jid(ctx.a), node, timeout=STEP)
    check(item_ids(mine) == ["current"], "owner can't read it")
    try:
        await b.plugin["xep_0060"].get_items(ctx.jid(ctx.a), node, timeout=STEP)
        raise ProbeError("a contact read a whitelist node")
    except IqError as e:
        # XEP-0060 §6.5.9.6: <not-allowed/> + <closed-node/>; some servers hide the node.
        check(e.iq["error"]["condition"] in ("not-allowed", "forbidden", "item-not-found"),
              f"contact reading a whitelist node → {iq_error(e)}")
    # Publish-options that contradict the node's configuration: precondition-not-met.
    conflicting = form(f"{NS_PUBSUB}#publish-options", {"pubsub#access_model": "open"})
    pubsub.find(f"{{{NS_PUBSUB}}}publish-options").clear()
    pubsub.find(f"{{{NS_PUBSUB}}}publish-options").append(conflicting)
    try:
        await a.iq(None, "set", pubsub)
        raise ProbeError("conflicting publish-options were accepted")
    except IqError as e:
        cond = e.iq.xml.find(f".//{{{NS_PUBSUB_ERRORS}}}precondition-not-met")
        check(e.iq["error"]["condition"] == "conflict" and cond is not None,
              f"conflicting publish-options → {iq_error(e)} (want conflict + "
              "precondition-not-met)")
    row.functional = True
    row.detail = "whitelist node: owner reads, contact refused; conflict → precondition-not-met"


@probe("XEP-0049", "Private XML storage", "IM Advanced")
async def p_private_xml(ctx: Ctx, row: Row):
    row.advertised = ("jabber:iq:private" in ctx.server_features
                      or "jabber:iq:private" in ctx.account_features or None)
    a = ctx.shared["a_phone"]
    value = secrets.token_hex(6)
    q = el("{jabber:iq:private}query", None, None, el(f"{{{NS_PROBE}:private-xml}}data",
                                                      None, value))
    await a.iq(None, "set", q)
    laptop = ctx.shared["a_laptop"]
    res = await laptop.iq(None, "get", el("{jabber:iq:private}query", None, None,
                                          el(f"{{{NS_PROBE}:private-xml}}data")))
    data = res.xml.find(f"{{jabber:iq:private}}query/{{{NS_PROBE}:private-xml}}data")
    check(data is not None and data.text == value, "stored value not read back")
    row.functional = True
    row.detail = "stored from one device, read from another"


@probe("XEP-0402", "Bookmarks 2 (PEP)", "IM Advanced")
async def p_bookmarks2(ctx: Ctx, row: Row):
    row.advertised = f"{NS_BOOKMARKS2}#compat" in ctx.account_features
    phone, laptop = ctx.shared["a_phone"], ctx.shared["a_laptop"]
    room = f"kitchen-{secrets.token_hex(3)}@conference.{ctx.domain}"
    conf = el(f"{{{NS_BOOKMARKS2}}}conference", {"name": "Kitchen", "autojoin": "true"}, None,
              el(f"{{{NS_BOOKMARKS2}}}nick", None, "alice"))
    opts = form(f"{NS_PUBSUB}#publish-options",
                {"pubsub#persist_items": "true", "pubsub#max_items": "max",
                 "pubsub#send_last_published_item": "never",
                 "pubsub#access_model": "whitelist"})
    await phone.plugin["xep_0060"].publish(None, NS_BOOKMARKS2, id=room, payload=conf,
                                           options=opts, timeout=STEP)
    await laptop.next(laptop.events, lambda m: (NS_BOOKMARKS2, room) in event_items(m),
                      what="bookmarks notification on the other device")
    items = await laptop.plugin["xep_0060"].get_items(ctx.jid(ctx.a), NS_BOOKMARKS2,
                                                      timeout=STEP)
    check(room in item_ids(items), "bookmark not in the node")
    ctx.shared["bookmark2"] = room
    row.functional = True
    row.detail = "published with publish-options, the other device notified and reads it"


@probe("XEP-0048", "Legacy bookmarks (private XML, #compat)", "IM Advanced")
async def p_bookmarks1(ctx: Ctx, row: Row):
    row.advertised = f"{NS_BOOKMARKS2}#compat" in ctx.account_features
    a = ctx.shared["a_phone"]
    # The bookmarks 2 item published above must show up in legacy storage (#compat) …
    room2 = ctx.shared.get("bookmark2")
    check(room2, "the XEP-0402 probe did not publish a bookmark")
    res = await a.iq(None, "get", el("{jabber:iq:private}query", None, None,
                                     el("{storage:bookmarks}storage")))
    rooms = [c.get("jid") for c in res.xml.iter("{storage:bookmarks}conference")]
    check(room2 in rooms, f"bookmarks 2 item {room2} not in legacy storage {rooms}")
    # … and a legacy write must show up in bookmarks 2.
    room1 = f"garden-{secrets.token_hex(3)}@conference.{ctx.domain}"
    storage = el("{storage:bookmarks}storage")
    for r in rooms + [room1]:
        storage.append(el("{storage:bookmarks}conference",
                          {"jid": r, "name": r.split("@")[0], "autojoin": "true"}, None,
                          el("{storage:bookmarks}nick", None, "alice")))
    await a.iq(None, "set", el("{jabber:iq:private}query", None, None, storage))
    items = await a.plugin["xep_0060"].get_items(ctx.jid(ctx.a), NS_BOOKMARKS2, timeout=STEP)
    check(room1 in item_ids(items),
          f"legacy bookmark {room1} not in {NS_BOOKMARKS2}")
    row.functional = True
    row.detail = "bookmarks 2 ↔ private XML storage:bookmarks, both directions"


@probe("XEP-0198", "Stream management", "IM Advanced, Mobile")
async def p_sm(ctx: Ctx, row: Row):
    row.advertised = ctx.stream_feature(f"{{{NS_SM}}}sm")
    d = Device(ctx, ctx.a, "sm", plugins=("xep_0198",))
    acked: asyncio.Queue = asyncio.Queue()
    d.add_event_handler("stanza_acked", acked.put_nowait)
    await d.login()
    ctx.devices.append(d)
    sm = d.plugin["xep_0198"]
    check(sm.enabled_in and sm.sm_id, "SM not enabled with resumption (no id)")
    b = ctx.shared["b_desk"]
    body = f"acked {secrets.token_hex(4)}"
    d.send_message(mto=ctx.jid(ctx.b), mbody=body, mtype="chat")
    # <r/> is written at once, stanzas go through slixmpp's send queue: a round trip
    # first, so that the request follows the message on the wire.
    await d.plugin["xep_0199"].ping(ctx.domain, timeout=STEP)
    sm.request_ack()
    await d.next(acked, lambda s: s["body"] == body, what="<a/> covering the message")
    await b.next(b.messages, lambda m: m["body"] == body, what="message")
    # The phone loses signal; bob writes to it in the gap; the phone resumes.
    d.drop()
    await asyncio.wait_for(asyncio.shield(d.gone), STEP)
    d.gone = asyncio.get_running_loop().create_future()
    gap = [f"gap {i} {secrets.token_hex(3)}" for i in range(3)]
    for text in gap:
        b.send_message(mto=d.boundjid.full, mbody=text, mtype="chat")
    await b.plugin["xep_0199"].ping(ctx.domain, timeout=STEP)
    d.connect(ctx.args.host, ctx.args.port)
    await asyncio.wait_for(asyncio.shield(d.resumed), STEP)
    got = [(await d.next(d.messages, lambda m: m["body"] in gap))["body"] for _ in gap]
    check(got == gap, f"after resume: {got} (want {gap})")
    extra = await d.quiet(d.messages, lambda m: m["body"] in gap, within=1.0)
    check(extra is None, f"duplicate after resume: {extra and extra['body']}")
    row.functional = True
    row.detail = "enable+resume, r/a round trip, dropped socket, 3 gap messages once each"


@probe("XEP-0363", "HTTP file upload", "IM")
async def p_upload(ctx: Ctx, row: Row):
    svc = find_service_feature(ctx, "urn:xmpp:http:upload:0")
    row.advertised = svc is not None
    check(svc, "no upload service in the server's disco#items")
    a = ctx.shared["a_phone"]
    data = b"kith compliance " + secrets.token_bytes(16)
    req = el("{urn:xmpp:http:upload:0}request",
             {"filename": "probe.bin", "size": len(data),
              "content-type": "application/octet-stream"})
    slot = (await a.iq(svc, "get", req)).xml
    put = slot.find(".//{urn:xmpp:http:upload:0}put")
    get = slot.find(".//{urn:xmpp:http:upload:0}get")
    check(put is not None and get is not None, "slot without put/get URLs")
    await asyncio.to_thread(http_put_get, ctx, put, get.get("url"), data)
    row.functional = True
    row.detail = "slot granted, PUT, GET returns the same bytes"


@probe("XEP-0313", "History storage / retrieval (MAM, stanza-id)", "IM Advanced")
async def p_mam(ctx: Ctx, row: Row):
    row.advertised = "urn:xmpp:mam:2" in ctx.account_features
    a, b = ctx.shared["a_phone"], ctx.shared["b_desk"]
    b.register_plugin("xep_0313")
    body = f"archived {secrets.token_hex(4)}"
    # `start` keeps the result to one page on a server with a long history (same clock:
    # the script runs on the box or next to it).
    since = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    a.send_message(mto=ctx.jid(ctx.b), mbody=body, mtype="chat")
    got = await b.next(b.messages, lambda m: m["body"] == body, what="message")
    sid = got.xml.find(f"{{{NS_SID}}}stanza-id")
    check(sid is not None and sid.get("by") == ctx.jid(ctx.b),
          "delivered message has no <stanza-id by=own bare JID>")
    res = await b.plugin["xep_0313"].retrieve(with_jid=slixmpp.JID(ctx.jid(ctx.a)),
                                              start=since, timeout=STEP)
    found = [r.xml.find("{urn:xmpp:mam:2}result") for r in res["mam"]["results"]
             if r.xml.findtext(".//{jabber:client}body") == body]
    check(found, f"not in the archive with={ctx.jid(ctx.a)}")
    check(found[0].get("id") == sid.get("id"),
          f"archive id {found[0].get('id')} != stanza-id {sid.get('id')}")
    ctx.shared["stanza_id_ok"] = True
    row.functional = True
    row.detail = "the message just received is found by `with`, archive id = stanza-id"


@probe("XEP-0359", "Unique and stable stanza ids", "issue 4")
async def p_sid(ctx: Ctx, row: Row):
    row.advertised = NS_SID in ctx.account_features or NS_SID in ctx.server_features
    check(ctx.shared.get("stanza_id_ok"), "checked by the XEP-0313 probe, which failed")
    row.functional = True


# --------------------------------------------------------------------------- Mobile


@probe("XEP-0352", "Client state indication", "Mobile")
async def p_csi(ctx: Ctx, row: Row):
    row.advertised = ctx.stream_feature(f"{{{NS_CSI}}}csi")
    a, b = ctx.shared["a_laptop"], ctx.shared["b_desk"]
    b.plugin["xep_0352"].send_inactive()
    await b.plugin["xep_0199"].ping(ctx.domain, timeout=STEP)
    status = f"away {secrets.token_hex(3)}"
    a.send_presence(pshow="away", pstatus=status)
    held = await b.quiet(b.presences, lambda p: p["status"] == status)
    body = f"urgent {secrets.token_hex(4)}"
    a.send_message(mto=ctx.jid(ctx.b), mbody=body, mtype="chat")
    await b.next(b.messages, lambda m: m["body"] == body, what="message while inactive")
    b.plugin["xep_0352"].send_active()
    if held is None:
        # Held while inactive: it must come now, on <active/> (or was flushed by the message).
        await b.next(b.presences, lambda p: p["status"] == status,
                     what="held presence after <active/>")
    a.send_presence()
    check(held is None, "presence was delivered at once to an inactive client")
    row.functional = True
    row.detail = "presence held while inactive, message delivered at once, flush on active"


@probe("XEP-0357", "Push notifications", "Mobile Advanced")
async def p_push(ctx: Ctx, row: Row):
    row.advertised = NS_PUSH in ctx.account_features
    comp = ctx.component
    check(comp is not None, f"no app-server component: {ctx.component_error}")
    c = Device(ctx, ctx.c, "pushphone")
    await c.login()
    node = f"n{secrets.token_hex(4)}"
    secret = secrets.token_hex(8)
    enable = el(f"{{{NS_PUSH}}}enable", {"jid": comp.boundjid.bare, "node": node}, None,
                form(f"{NS_PUBSUB}#publish-options", {"secret": secret}))
    await c.iq(None, "set", enable)
    await c.close()
    # Carol's other device is online too; take it off so the message reaches no resource.
    await ctx.shared["c_phone"].close()
    b = ctx.shared["b_desk"]
    body = f"push me {secrets.token_hex(4)}"
    b.send_message(mto=ctx.jid(ctx.c), mbody=body, mtype="chat")
    iq = await asyncio.wait_for(comp.pushes.get(), STEP)
    pub = iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish")
    check(pub is not None and pub.get("node") == node,
          f"publish to node {pub.get('node') if pub is not None else None}")

    def form_fields(x) -> dict:
        return {f.get("var"): (f.findtext(f"{{{NS_DATA}}}value") or "")
                for f in (x.iter(f"{{{NS_DATA}}}field") if x is not None else [])}

    summary = form_fields(iq.find(f".//{{{NS_PUSH}}}notification/{{{NS_DATA}}}x"))
    options = form_fields(iq.find(f".//{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x"))
    check(summary.get("FORM_TYPE") == "urn:xmpp:push:summary", f"no summary form: {summary}")
    check(summary.get("message-count", "0") not in ("", "0"),
          f"message-count {summary.get('message-count')!r}")
    check(options.get("secret") == secret, f"publish-options secret not sent back: {options}")
    row.functional = True
    row.detail = (f"offline message → app server got the summary form "
                  f"({summary['message-count']} message(s)) and the secret")


# --------------------------------------------------------------------------- Web (issue 6)


@probe("RFC 7395", "XMPP over WebSocket", "Web")
async def p_websocket(ctx: Ctx, row: Row):
    check(ctx.args.https_port, "no web listener given (--https-port)")
    links = await asyncio.to_thread(host_meta, ctx)
    url = links.get(REL_WS, "")
    row.advertised = url.startswith("wss://")
    check(row.advertised, f"host-meta has no wss:// WebSocket link: {links}")
    import websockets
    ws = await websockets.connect(url, ssl=web_tls_context(ctx), subprotocols=["xmpp"],
                                  open_timeout=STEP, **web_connect_args(ctx, url))
    try:
        check(ws.subprotocol == "xmpp", f"subprotocol {ws.subprotocol!r}, not xmpp")

        async def recv() -> ET.Element:
            return ET.fromstring(await asyncio.wait_for(ws.recv(), STEP))

        async def stanza(tag: str) -> ET.Element:
            deadline = time.monotonic() + STEP
            while time.monotonic() < deadline:
                el_ = await recv()
                if el_.tag == f"{{{NS_CLIENT}}}{tag}":
                    return el_
            raise ProbeError(f"no <{tag}/> over WebSocket within {STEP}s")

        async def open_() -> ET.Element:
            await ws.send(f"<open xmlns='{NS_FRAMING}' to='{ctx.domain}' version='1.0'/>")
            opened = await recv()
            check(opened.tag == f"{{{NS_FRAMING}}}open", f"no <open/>: {opened.tag}")
            return await recv()

        feats = await open_()
        acct = ctx.accounts[ctx.a]
        token = base64.b64encode(f"\0{acct.user}\0{acct.password}".encode()).decode()
        check(feats.find(f".//{{{NS_SASL}}}mechanism") is not None, "no SASL mechanisms")
        await ws.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        res = await recv()
        check(res.tag == f"{{{NS_SASL}}}success", f"PLAIN over WebSocket: {ET.tostring(res)!r}")
        feats = await open_()
        check(feats.find(f"{{{NS_BIND}}}bind") is not None, "no <bind/> after auth")
        await ws.send(f"<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind xmlns='{NS_BIND}'>"
                      "<resource>ws-probe</resource></bind></iq>")
        me = (await stanza("iq")).findtext(f".//{{{NS_BIND}}}jid")
        check(me, "bind over WebSocket returned no JID")
        await web_tcp_exchange(ctx, me, ws.send, lambda: stanza("message"))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), STEP)
    row.functional = True
    row.detail = "URL from host-meta, SASL PLAIN + bind, message to and from a TCP user"


@probe("XEP-0206", "BOSH", "Web")
async def p_bosh(ctx: Ctx, row: Row):
    check(ctx.args.https_port, "no web listener given (--https-port)")
    links = await asyncio.to_thread(host_meta, ctx)
    url = links.get(REL_BOSH, "")
    row.advertised = url.startswith("https://")
    check(row.advertised, f"host-meta has no https:// BOSH link: {links}")
    bosh = Bosh(ctx, url)
    me = await asyncio.to_thread(bosh.login, ctx.accounts[ctx.a])

    async def send(xml: str):
        await asyncio.to_thread(bosh.request, xml)

    async def next_message() -> ET.Element:
        return await asyncio.to_thread(bosh.until, "message", NS_CLIENT)

    try:
        await web_tcp_exchange(ctx, me, send, next_message)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(bosh.request, "", type="terminate")
    row.functional = True
    row.detail = "URL from host-meta, SASL PLAIN + restart + bind, message to and from TCP"


@probe("XEP-0156", "Connection mechanism discovery", "Web")
async def p_hostmeta(ctx: Ctx, row: Row):
    check(ctx.args.https_port, "no web listener given (--https-port)")
    links = await asyncio.to_thread(host_meta, ctx)
    row.advertised = bool(links)
    check(REL_WS in links and REL_BOSH in links, f"host-meta links: {links}")
    row.functional = True
    row.detail = "/.well-known/host-meta lists the WebSocket and BOSH URLs (both used above)"


async def web_tcp_exchange(ctx: Ctx, me: str, send, next_message):
    """`me` (a web session) and bob's TCP device message each other; each side checks."""
    b = ctx.shared["b_plain"]
    out = f"web to tcp {secrets.token_hex(4)}"
    await send(f"<message xmlns='{NS_CLIENT}' to='{b.boundjid.full}' type='chat'>"
               f"<body>{out}</body></message>")
    got = await b.next(b.messages, lambda m: m["body"] == out, what="the web user's message")
    check(str(got["from"]) == me, f"from {got['from']}, not {me}")
    back = f"tcp to web {secrets.token_hex(4)}"
    b.send_message(mto=me, mbody=back, mtype="chat")
    deadline = time.monotonic() + STEP
    while True:
        check(time.monotonic() < deadline, "the TCP user's reply did not arrive")
        m = await next_message()
        if m.findtext(f"{{{NS_CLIENT}}}body") == back:
            check(m.get("from") == b.boundjid.full, f"reply from {m.get('from')}")
            return


class Bosh:
    """A minimal BOSH (XEP-0124/0206) client over HTTPS; every request is bounded."""

    WAIT = 2  # the BOSH long-poll wait asked for (seconds): a request with nothing to
    # answer is held this long, so a short wait keeps the probe quick

    def __init__(self, ctx: Ctx, url: str):
        import urllib.parse
        self.ctx = ctx
        self.url = urllib.parse.urlsplit(url)
        self.rid = secrets.randbelow(1 << 40) + 1000
        self.sid: str | None = None

    def post(self, body: str) -> ET.Element:
        import http.client
        conn = http.client.HTTPSConnection(
            self.ctx.args.host, self.url.port or 443, timeout=self.WAIT + STEP,
            context=web_tls_context(self.ctx))
        sock = socket.create_connection((self.ctx.args.host, self.url.port or 443),
                                        self.WAIT + STEP)
        conn.sock = web_tls_context(self.ctx).wrap_socket(sock,
                                                          server_hostname=self.url.hostname)
        try:
            conn.request("POST", self.url.path, body=body.encode(),
                         headers={"Content-Type": "text/xml; charset=utf-8",
                                  "Host": self.url.netloc})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        check(resp.status == 200, f"BOSH POST → HTTP {resp.status}: {data[:200]!r}")
        return ET.fromstring(data)

    def request(self, children: str = "", **attrs) -> ET.Element:
        self.rid += 1
        a = " ".join(f"{k}='{v}'" for k, v in attrs.items())
        return self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' "
                         f"rid='{self.rid}' sid='{self.sid}' {a}>{children}</body>")

    def until(self, tag: str, ns: str, first: ET.Element | None = None) -> ET.Element:
        body = first if first is not None else self.request()
        deadline = time.monotonic() + STEP
        while True:
            for child in body:
                if child.tag == f"{{{ns}}}{tag}":
                    return child
            check(body.get("type") != "terminate", f"BOSH session ended: {ET.tostring(body)!r}")
            check(time.monotonic() < deadline, f"no <{tag}/> over BOSH within {STEP}s")
            body = self.request()

    def login(self, acct: Account) -> str:
        self.rid += 1
        created = self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' "
                            f"content='text/xml; charset=utf-8' hold='1' rid='{self.rid}' "
                            f"to='{self.ctx.domain}' ver='1.6' wait='{self.WAIT}' "
                            "xml:lang='en' xmpp:version='1.0'/>")
        self.sid = created.get("sid")
        check(self.sid, f"no sid in the session creation response: {ET.tostring(created)!r}")
        self.until("features", NS_STREAM, created)
        token = base64.b64encode(f"\0{acct.user}\0{acct.password}".encode()).decode()
        body = self.request(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        self.until("success", NS_SASL, body)
        body = self.request(**{"xmpp:restart": "true", "to": self.ctx.domain})
        feats = self.until("features", NS_STREAM, body)
        check(feats.find(f"{{{NS_BIND}}}bind") is not None, "no <bind/> after BOSH restart")
        body = self.request(f"<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind "
                            f"xmlns='{NS_BIND}'><resource>bosh-probe</resource></bind></iq>")
        me = self.until("iq", NS_CLIENT, body).findtext(f".//{{{NS_BIND}}}jid")
        check(me, "bind over BOSH returned no JID")
        return me


def web_tls_context(ctx: Ctx) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=ctx.args.ca)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.set_alpn_protocols(["http/1.1"])
    return tls


def web_connect_args(ctx: Ctx, url: str) -> dict:
    """Connect to --host, whatever the URL's name resolves to, checking the URL's name."""
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    return {"host": ctx.args.host, "port": u.port or 443, "server_hostname": u.hostname}


# --------------------------------------------------------------------------- federation (issue 8)


@probe("RFC 6120 s2s", "Server-to-server (STARTTLS, SASL EXTERNAL or dialback)", "Core")
async def p_s2s(ctx: Ctx, row: Row):
    check(ctx.args.s2s_port, "no s2s listener given (--s2s-port)")
    raw = RawXmpp(ctx.args.s2s_port, host=ctx.args.host)
    try:
        raw.send(f"<?xml version='1.0'?><stream:stream to='{ctx.domain}' "
                 "from='compliance.invalid' version='1.0' xmlns='jabber:server' "
                 f"xmlns:db='jabber:server:dialback' xmlns:stream='{NS_STREAM}'>")
        feats = raw.features()
        row.advertised = feats.find(f"{{{NS_TLS}}}starttls") is not None
    finally:
        raw.close()
    check(ctx.peer and ctx.args.peer_port,
          "no peer server given (--peer-domain, --peer-port, --peer-account)")
    a = ctx.shared["a_phone"]
    p = await ctx.device(PEER, "probe", port=ctx.args.peer_port)
    # Presence subscription across: both ways, both auto-approved, both rosters say `both`.
    await subscribe_both(a, p)
    avail = await p.next(p.presences, lambda pr: pr["from"].bare == a.boundjid.bare
                         and pr["type"] in ("available", ""), what="alice's presence")
    check(avail is not None, "no presence from alice across")
    out = f"to the peer {secrets.token_hex(4)}"
    a.send_message(mto=p.boundjid.bare, mbody=out, mtype="chat")
    got = await p.next(p.messages, lambda m: m["body"] == out, what="alice's message")
    check(got["from"].bare == a.boundjid.bare, f"from {got['from']}")
    back = f"from the peer {secrets.token_hex(4)}"
    p.send_message(mto=a.boundjid.full, mbody=back, mtype="chat")
    got = await a.next(a.messages, lambda m: m["body"] == back, what="the peer's reply")
    check(got["from"] == p.boundjid, f"reply from {got['from']}")
    row.functional = True
    row.detail = (f"{ctx.domain} ↔ {ctx.args.peer_domain}: mutual subscription, presence, "
                  "a message each way (certificates verified against --ca both ways)")


# --------------------------------------------------------------------------- beyond CS2023


@probe("XEP-0199", "Ping", "issue 4")
async def p_ping(ctx: Ctx, row: Row):
    row.advertised = "urn:xmpp:ping" in ctx.server_features
    a = ctx.shared["a_phone"]
    await a.plugin["xep_0199"].ping(ctx.domain, timeout=STEP)
    await a.plugin["xep_0199"].ping(ctx.jid(ctx.b), timeout=STEP)
    row.functional = True
    row.detail = "server and account answer"


@probe("XEP-0092", "Software version", "issue 4")
async def p_version(ctx: Ctx, row: Row):
    row.advertised = "jabber:iq:version" in ctx.server_features
    a = ctx.shared["a_phone"]
    v = await a.plugin["xep_0092"].get_version(ctx.domain, timeout=STEP)
    name = v["software_version"]["name"]
    check(name, "no software name")
    row.functional = True
    row.detail = f"{name} {v['software_version']['version']}"


@probe("XEP-0388", "SASL2 (extensible SASL profile)", "issue 4")
async def p_sasl2(ctx: Ctx, row: Row):
    auth = ctx.pre_auth.find(f"{{{NS_SASL2}}}authentication") if ctx.pre_auth is not None \
        else None
    row.advertised = auth is not None
    check(auth is not None, "no <authentication xmlns='urn:xmpp:sasl:2'> stream feature")
    res = await asyncio.to_thread(sasl2_login, ctx)
    ctx.shared["sasl2"] = res
    row.functional = True
    row.detail = f"PLAIN via SASL2 → {res['jid']}, no stream restart, ping answered"


@probe("XEP-0386", "Bind2", "issue 4")
async def p_bind2(ctx: Ctx, row: Row):
    auth = ctx.pre_auth.find(f"{{{NS_SASL2}}}authentication") if ctx.pre_auth is not None \
        else None
    row.advertised = auth is not None and auth.find(
        f"{{{NS_SASL2}}}inline/{{{NS_BIND2}}}bind") is not None
    res = ctx.shared.get("sasl2")
    check(res, "the SASL2 probe failed")
    check(res["bound"], "no <bound/> in <success/>")
    check("/" in res["jid"], f"authorization-identifier {res['jid']} is not a full JID")
    # (No new token: a new one would retire the first before the FAST probe uses it.)
    again = await asyncio.to_thread(sasl2_login, ctx, False)
    check(again["jid"] == res["jid"], f"same user-agent, new resource: {again['jid']}")
    row.functional = True
    row.detail = "bound inline; same user-agent id → same resource"


@probe("XEP-0386 inline", "Carbons and stream management inline (Bind2, SASL2 resume)",
       "issue 4")
async def p_bind2_inline(ctx: Ctx, row: Row):
    auth = ctx.pre_auth.find(f"{{{NS_SASL2}}}authentication") if ctx.pre_auth is not None \
        else None
    inline = auth.find(f"{{{NS_SASL2}}}inline/{{{NS_BIND2}}}bind/{{{NS_BIND2}}}inline") \
        if auth is not None else None
    offered = {f.get("var") for f in inline.iter(f"{{{NS_BIND2}}}feature")} \
        if inline is not None else set()
    row.advertised = {"urn:xmpp:carbons:2", NS_SM} <= offered
    check(row.advertised, f"Bind2 inline features offered: {sorted(offered)}")
    b = ctx.shared["b_desk"]
    body = f"inline {secrets.token_hex(4)}"
    loop = asyncio.get_running_loop()  # the raw client runs in a thread; slixmpp here

    def bob_writes():
        loop.call_soon_threadsafe(
            lambda: b.send_message(mto=ctx.jid(ctx.a), mbody=body, mtype="chat"))

    res = await asyncio.to_thread(sasl2_inline_resume, ctx, bob_writes, body)
    row.functional = True
    row.detail = (f"carbon copy on the inline-enabled session; SM enabled inline; "
                  f"resumed inside <authenticate/> ({res})")


@probe("XEP-0484", "FAST (token logins)", "issue 4")
async def p_fast(ctx: Ctx, row: Row):
    auth = ctx.pre_auth.find(f"{{{NS_SASL2}}}authentication") if ctx.pre_auth is not None \
        else None
    fast = auth.find(f"{{{NS_SASL2}}}inline/{{{NS_FAST}}}fast") if auth is not None else None
    row.advertised = fast is not None
    res = ctx.shared.get("sasl2")
    check(res, "the SASL2 probe failed")
    check(res["token"], "no <token/> in <success/> after <request-token/>")
    jid = await asyncio.to_thread(fast_login, ctx, res["token"], 1)
    try:
        await asyncio.to_thread(fast_login, ctx, "not" + res["token"], 2)
        refused = False
    except (ProbeError, StreamClosed):  # <failure/>, or the stream closed
        refused = True
    check(refused, "a wrong token logged in")
    row.functional = True
    row.detail = f"token from a password login → HT-SHA-256-NONE as {jid}; bad token refused"


# --------------------------------------------------------------------------- raw SASL2


def _sasl2_start(ctx: Ctx) -> RawXmpp:
    raw = ctx.raw()
    ctx.starttls(raw)
    raw.features()
    return raw


def _user_agent(ctx: Ctx) -> str:
    return (f"<user-agent id='{ctx.agent_id}'><software>kith-compliance</software>"
            "<device>probe</device></user-agent>")


def sasl2_login(ctx: Ctx, request_token: bool = True) -> dict:
    acct = ctx.accounts[ctx.a]
    raw = _sasl2_start(ctx)
    try:
        token = base64.b64encode(f"\0{acct.user}\0{acct.password}".encode()).decode()
        raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
                 f"<initial-response>{token}</initial-response>{_user_agent(ctx)}"
                 f"<bind xmlns='{NS_BIND2}'><tag>compliance</tag></bind>"
                 + (f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-NONE'/>"
                    if request_token else "")
                 + "</authenticate>")
        ok = raw.element()
        check(ok.tag == f"{{{NS_SASL2}}}success", f"SASL2 PLAIN: {ET.tostring(ok)!r}")
        jid = ok.findtext(f"{{{NS_SASL2}}}authorization-identifier") or ""
        tok = ok.find(f"{{{NS_FAST}}}token")
        # No stream restart: new <stream:features/> follow on the same stream, and the
        # session answers at once.
        raw.send(f"<iq type='get' id='p1' to='{ctx.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        iq = raw.element()
        while iq.tag == f"{{{NS_STREAM}}}features":
            iq = raw.element()
        check(iq.tag == f"{{{NS_CLIENT}}}iq" and iq.get("type") == "result",
              f"ping after SASL2: {ET.tostring(iq)!r}")
        return {"jid": jid, "bound": ok.find(f"{{{NS_BIND2}}}bound") is not None,
                "token": tok.get("token") if tok is not None else None}
    finally:
        raw.close()


def sasl2_inline_resume(ctx: Ctx, send_to_alice, body: str) -> str:
    """SASL2 + Bind2 with carbons and SM enabled inline: a message to alice's bare JID
    (her phone has the higher priority) arrives here as a carbon; then the socket drops
    and a new SASL2 login resumes the session inside <authenticate/>."""
    acct = ctx.accounts[ctx.a]
    token = base64.b64encode(f"\0{acct.user}\0{acct.password}".encode()).decode()
    raw = _sasl2_start(ctx)
    try:
        raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
                 f"<initial-response>{token}</initial-response>{_user_agent(ctx)}"
                 f"<bind xmlns='{NS_BIND2}'><tag>inline</tag>"
                 "<enable xmlns='urn:xmpp:carbons:2'/>"
                 f"<enable xmlns='{NS_SM}' resume='true'/></bind></authenticate>")
        ok = raw.element()
        check(ok.tag == f"{{{NS_SASL2}}}success", f"SASL2: {ET.tostring(ok)!r}")
        enabled = ok.find(f"{{{NS_BIND2}}}bound/{{{NS_SM}}}enabled")
        check(enabled is not None and enabled.get("id"),
              f"no <enabled id/> in <bound/>: {ET.tostring(ok)!r}")
        # Available (priority 0, below the phone's 10): an interested resource for carbons.
        raw.send("<presence><priority>0</priority></presence>")
        raw.send(f"<iq type='get' id='p2' to='{ctx.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        handled = 0  # XEP-0198 h: stanzas received on this stream
        got, ponged = None, False
        deadline = time.monotonic() + STEP
        while got is None and time.monotonic() < deadline:
            e = raw.element(timeout=max(deadline - time.monotonic(), 0.01))
            if e.tag in (f"{{{NS_CLIENT}}}{n}" for n in ("message", "presence", "iq")):
                handled += 1
            if e.tag == f"{{{NS_SM}}}r":
                raw.send(f"<a xmlns='{NS_SM}' h='{handled}'/>")
            if e.tag == f"{{{NS_CLIENT}}}iq" and e.get("id") == "p2" and not ponged:
                ponged = True  # the presence was handled: now bob writes
                send_to_alice()
            if e.tag == f"{{{NS_CLIENT}}}message" and \
                    e.find(".//{urn:xmpp:carbons:2}received") is not None and \
                    e.findtext(".//{jabber:client}body") == body:
                got = e
        check(got is not None, "no <received/> carbon on the session that enabled it inline")
        previd = enabled.get("id")
    finally:
        raw.close()
    raw = _sasl2_start(ctx)
    try:
        raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
                 f"<initial-response>{token}</initial-response>{_user_agent(ctx)}"
                 f"<resume xmlns='{NS_SM}' previd='{previd}' h='{handled}'/>"
                 "</authenticate>")
        ok = raw.element()
        check(ok.tag == f"{{{NS_SASL2}}}success", f"SASL2 resume: {ET.tostring(ok)!r}")
        resumed = ok.find(f"{{{NS_SM}}}resumed")
        check(resumed is not None, f"no <resumed/> in <success/>: {ET.tostring(ok)!r}")
        return f"h={resumed.get('h')}"
    finally:
        raw.close()


def fast_login(ctx: Ctx, token: str, count: int) -> str:
    acct = ctx.accounts[ctx.a]
    raw = _sasl2_start(ctx)
    try:
        mac = hmac.new(token.encode(), b"Initiator", hashlib.sha256).digest()
        resp = base64.b64encode(acct.user.encode() + b"\0" + mac).decode()
        raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='HT-SHA-256-NONE'>"
                 f"<initial-response>{resp}</initial-response>{_user_agent(ctx)}"
                 f"<bind xmlns='{NS_BIND2}'><tag>compliance</tag></bind>"
                 f"<fast xmlns='{NS_FAST}' count='{count}'/></authenticate>")
        ok = raw.element()
        check(ok.tag == f"{{{NS_SASL2}}}success", f"FAST login: {ET.tostring(ok)!r}")
        return ok.findtext(f"{{{NS_SASL2}}}authorization-identifier") or ""
    finally:
        raw.close()




# --------------------------------------------------------------------------- the run


def host_meta(ctx: Ctx) -> dict[str, str]:
    """The XEP-0156 links of /.well-known/host-meta: rel → href."""
    import http.client
    conn = http.client.HTTPSConnection(ctx.args.host, ctx.args.https_port, timeout=STEP,
                                       context=web_tls_context(ctx))
    sock = socket.create_connection((ctx.args.host, ctx.args.https_port), STEP)
    conn.sock = web_tls_context(ctx).wrap_socket(sock, server_hostname=ctx.domain)
    try:
        conn.request("GET", "/.well-known/host-meta",
                     headers={"Host": f"{ctx.domain}:{ctx.args.https_port}"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    check(resp.status == 200, f"host-meta → HTTP {resp.status}")
    doc = ET.fromstring(data)
    return {link.get("rel", ""): link.get("href", "") for link in doc.iter(f"{{{NS_XRD}}}Link")}


def http_put_get(ctx: Ctx, put: ET.Element, get_url: str, data: bytes):
    import urllib.request
    headers = {h.get("name"): (h.text or "") for h in put.iter("{urn:xmpp:http:upload:0}header")}
    req = urllib.request.Request(put.get("url"), data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=STEP, context=web_tls_context(ctx)) as r:
        check(r.status in (200, 201), f"PUT → {r.status}")
    with urllib.request.urlopen(get_url, timeout=STEP, context=web_tls_context(ctx)) as r:
        check(r.read() == data, "GET returned other bytes")




def find_service(ctx: Ctx, category: str, type_: str) -> str | None:
    for jid, identities, _ in ctx.item_infos:
        if (category, type_) in identities:
            return jid
    return None


def find_service_feature(ctx: Ctx, feature: str) -> str | None:
    for jid, _, features in ctx.item_infos:
        if feature in features:
            return jid
    return None


async def next_component_message(ctx: Ctx, match) -> slixmpp.Message:
    deadline = time.monotonic() + STEP
    while True:
        m = await asyncio.wait_for(ctx.component.messages.get(),
                                   max(deadline - time.monotonic(), 0.01))
        if match(m):
            return m




async def setup(ctx: Ctx):
    """The long-lived devices the probes share, subscriptions, an offline message, disco."""
    # A 1×1 PNG: the avatar the vCard probes set.
    ctx.shared["photo"] = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
        "RU5ErkJggg==")
    await asyncio.to_thread(capture_stream_features, ctx)
    # The phone has the highest priority: messages to alice's bare JID go there.
    phone = await ctx.device(ctx.a, "phone", priority=10, plugins=("xep_0054", "xep_0280"),
                             interests=(NS_BOOKMARKS2,))
    laptop = await ctx.device(ctx.a, "laptop", plugins=("xep_0280",),
                              interests=(NS_BOOKMARKS2,))
    b_desk = await ctx.device(ctx.b, "desk", priority=5, plugins=("xep_0054",),
                              interests=(NS_PROBE, NS_AVATAR_META))
    b_plain = await ctx.device(ctx.b, "plain")
    ctx.shared.update(a_phone=phone, a_laptop=laptop, b_desk=b_desk, b_plain=b_plain)
    try:
        await subscribe_both(phone, b_desk)
        ctx.shared["subscribed"] = True
    except ProbeError as e:
        ctx.shared["sub_error"] = str(e)
    # Carol is offline: a message for her waits in offline storage (RFC 6121 probe).
    ctx.shared["offline_body"] = f"while you were out {secrets.token_hex(4)}"
    phone.send_message(mto=ctx.jid(ctx.c), mbody=ctx.shared["offline_body"], mtype="chat")
    await phone.plugin["xep_0199"].ping(ctx.domain, timeout=STEP)
    ctx.shared["c_phone"] = await ctx.device(ctx.c, "phone")
    # The XEP-0114 component that is also the XEP-0357 app server (connected before the
    # server's disco#items are read: a connected component is listed there).
    if ctx.args.component:
        domain_secret, _, port = ctx.args.component.rpartition("@")
        domain, _, secret = domain_secret.partition(":")
        comp = AppServer(domain, secret, ctx.args.host, int(port))
        try:
            ctx.component = await comp.start()
        except (ProbeError, asyncio.TimeoutError, OSError) as e:
            ctx.component_error = f"{type(e).__name__}: {e}"
            comp.abort()
    else:
        ctx.component_error = "no --component given"
    # Disco of the server, its items, and alice's account.
    disco = phone.plugin["xep_0030"]
    info = await disco.get_info(ctx.domain, cached=False, timeout=STEP)
    ctx.server_features = set(info["disco_info"]["features"])
    ctx.server_identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    items = await disco.get_items(ctx.domain, timeout=STEP)
    ctx.server_items = [str(i[0]) for i in items["disco_items"]["items"]]
    for jid in ctx.server_items:
        with contextlib.suppress(IqError, IqTimeout):
            ii = await disco.get_info(jid, cached=False, timeout=STEP)
            ctx.item_infos.append((jid, {(i[0], i[1]) for i in ii["disco_info"]["identities"]},
                                   set(ii["disco_info"]["features"])))
    info = await disco.get_info(ctx.jid(ctx.a), cached=False, timeout=STEP)
    ctx.account_features = set(info["disco_info"]["features"])
    ctx.account_identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}


async def run_probes(args) -> list[Row]:
    ctx = Ctx(args)
    rows = [Row(k, f, lv, owner) for k, f, lv, owner, _ in PROBES]
    setup_error = None
    try:
        await setup(ctx)
    except Exception as e:  # noqa: BLE001 — every failure becomes a row, not a traceback
        setup_error = f"set-up failed: {type(e).__name__}: {e}"
    for row, (_, _, _, _, fn) in zip(rows, PROBES):
        if setup_error:
            row.functional = False
            row.detail = setup_error
            continue
        try:
            await asyncio.wait_for(fn(ctx, row), STEP * 4)
        except IqError as e:
            row.functional = False
            row.detail = f"IQ error {iq_error(e)} {e.iq['error']['text'] or ''}".strip()
        except IqTimeout:
            row.functional = False
            row.detail = "IQ timed out (no answer)"
        except asyncio.TimeoutError:
            row.functional = False
            row.detail = row.detail or "timed out waiting for the expected stanza"
        except Exception as e:  # noqa: BLE001
            row.functional = False
            # A ProbeError says what failed; anything else also says what kind of error.
            row.detail = str(e) if isinstance(e, ProbeError) else f"{type(e).__name__}: {e}"
        if row.owner and not row.ok and row.advertised is None:
            row.advertised = False
    for d in ctx.devices:
        with contextlib.suppress(Exception):
            await d.close()
    if ctx.component is not None:
        with contextlib.suppress(Exception):
            await ctx.component.close()
    return rows


def mark(v: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a"}[v]


def table(rows: list[Row]) -> str:
    head = ("spec", "feature", "CS2023 level", "advertised", "functional", "status", "detail")
    body = [(r.key, r.feature, r.levels, mark(r.advertised), mark(r.functional), r.status,
             r.detail) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(6)]
    lines = []
    for cells in [head, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[6])
        if cells is head:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--port", type=int, default=5222, help="c2s STARTTLS port")
    ap.add_argument("--tls-port", type=int, default=None, help="c2s Direct TLS port")
    ap.add_argument("--ca", default=None, help="CA file the server's certificate chains to")
    ap.add_argument("--account", action="append", required=True,
                    help="USER:PASSWORD, three times (existing accounts)")
    ap.add_argument("--component", default=None,
                    help="DOMAIN:SECRET@PORT of the component listener (XEP-0114/0357)")
    ap.add_argument("--s2s-port", type=int, default=None, help="s2s STARTTLS port")
    ap.add_argument("--https-port", type=int, default=None,
                    help="HTTPS port of the web pod (host-meta, WebSocket, BOSH, upload)")
    ap.add_argument("--peer-domain", default=None,
                    help="a second server federated with this one (the s2s probe)")
    ap.add_argument("--peer-port", type=int, default=None,
                    help="the peer's c2s STARTTLS port (its certificate chains to --ca)")
    ap.add_argument("--peer-account", default=None, help="USER:PASSWORD on the peer")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    if len(args.account) < 3:
        ap.error("three --account USER:PASSWORD are needed")
    started = datetime.now(timezone.utc)
    rows = asyncio.run(run_probes(args))
    print(table(rows))
    failed = [r for r in rows if r.in_scope and not r.ok]
    pending = [r for r in rows if not r.in_scope and not r.ok]
    print(f"\n{len(rows) - len(failed) - len(pending)} pass, {len(failed)} FAIL, "
          f"{len(pending)} pending (owned by other issues)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "suite": "XEP-0479 CS2023 (server, Core/IM/Mobile Advanced + Web)",
            "started": started.isoformat(),
            "seconds": round((datetime.now(timezone.utc) - started) / timedelta(seconds=1), 1),
            "rows": [{**dataclasses.asdict(r), "status": r.status, "in_scope": r.in_scope}
                     for r in rows],
        }, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
