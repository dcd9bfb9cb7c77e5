"""Helpers for the end-to-end tests: every one of them lives here.

Each test gets its own `kith` process (the real binary), its own temporary data dir and
its own free loopback ports. Clients are real: slixmpp (`Client`) for the household's
phones and laptops, and `RawXmpp`, a deliberately dumb socket client, for the hostile
peers and for protocol details slixmpp hides.

The kith binary is `$KITH_BIN`, else `<repo>/target/ci/kith`
(`cargo build --profile ci -p kith`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import slixmpp

REPO = Path(__file__).resolve().parents[2]

# Strict mode (KITH_STRICT=1, set by tests/run.sh, so by `.ci/run`): a test that would be
# skipped — a missing program, a missing privilege — fails instead, with the skip's reason
# (which names what is missing). A green run then means every test ran.
STRICT = os.environ.get("KITH_STRICT") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"KITH_STRICT=1: this test would have been skipped, and strict "
                           f"runs skip nothing: {reason}")


def missing_programs(*names: str) -> list[str]:
    """Which of these programs are not on PATH."""
    return [n for n in names if shutil.which(n) is None]
KITH_BIN = Path(os.environ.get("KITH_BIN", REPO / "target" / "ci" / "kith"))
DOMAIN = "localhost"
PASSWORD = "correct horse battery staple"

# Namespaces.
NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"

# Every wait in these tests is bounded by one of these (seconds).
STEP = 10.0  # one protocol step: a reply, a delivery, a login
START = 20.0  # the server starting and opening its port

# Memory bound for the kith process, asserted on VmHWM (peak RSS) after hostile input.
# Why 64 MiB: the appliance is a Raspberry Pi shared by a household; an idle kith is a few
# MiB of code plus SQLite's page cache, and every bound the server promises is small —
# 256 KiB per stanza, 8 KiB before auth, a bounded queue per session. A server that honours
# them stays far below 64 MiB under every attack here; one that buffers the 10 MB stanza,
# the flood aimed at a reader that never reads (40 MB), or per-connection state for 500
# idle sockets, goes over it.
RSS_LIMIT_KIB = 64 * 1024

log = logging.getLogger("kith-e2e")


# --------------------------------------------------------------------------- basics


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(coro, timeout: float = 60.0):
    """Run one async scenario to its end, or fail after `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def proc_status_kib(pid: int, field: str) -> int:
    """A `kB` field (VmRSS, VmHWM) of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# --------------------------------------------------------------------------- TLS


class TestCA:
    """A throw-away certificate authority and a leaf for DOMAIN signed by it (openssl CLI)."""

    __test__ = False

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca_cert = directory / "ca.pem"
        self.ca_key = directory / "ca.key"
        self.cert = directory / "leaf.pem"
        self.key = directory / "leaf.key"
        ossl = ["openssl"]
        subprocess.run(
            ossl + ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "2",
                    "-subj", "/CN=Kith test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            check=True, capture_output=True)
        csr = directory / "leaf.csr"
        subprocess.run(
            ossl + ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", self.key, "-out", csr, "-subj", f"/CN={DOMAIN}"],
            check=True, capture_output=True)
        ext = directory / "leaf.ext"
        ext.write_text(
            f"subjectAltName=DNS:{DOMAIN}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n")
        subprocess.run(
            ossl + ["x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                    "-CAcreateserial", "-out", self.cert, "-days", "2", "-sha256",
                    "-extfile", ext],
            check=True, capture_output=True)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


# --------------------------------------------------------------------------- the server


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class PortTaken(Exception):
    pass


class Kith:
    """One real `kith serve` process with its own data dir, config and ports."""

    def __init__(self, directory: Path, ca: TestCA | None, *, limits=None, auth=None,
                 tls_files: bool = True, direct_tls: bool = True, as_defaults: bool = False,
                 time_sync_flag: str = ""):
        self.dir = directory
        self.data_dir = directory / "data"
        self.config = directory / "kith.toml"
        self.log_path = directory / "kith.log"
        self.ca = ca
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._direct_tls = direct_tls
        self._tls_files = tls_files
        # The file is the admin's (`--config`: it wins and locks its keys) or, with
        # `as_defaults`, the shipped defaults (`--defaults`), as on the image.
        self.config_flag = "--defaults" if as_defaults else "--config"
        self._limits = {"auth_timeout_secs": 10, **(limits or {})}
        self._auth = {"scram_iterations": 4096, **(auth or {})}
        # `[time] sync_flag`: "" trusts the clock (tests do not depend on the machine's
        # time daemon); a path: time is confirmed once that file exists.
        self._time_sync_flag = time_sync_flag
        self.pick_ports()

    def pick_ports(self):
        """Choose free ports and (re)write the config file with them."""
        self.c2s_port = free_port()
        self.c2s_tls_port = free_port() if self._direct_tls else None
        lines = [f"domain = {toml_value(DOMAIN)}", f"data_dir = {toml_value(self.data_dir)}",
                 "", "[listen]", f'c2s = "127.0.0.1:{self.c2s_port}"']
        if self.c2s_tls_port:
            lines.append(f'c2s_tls = "127.0.0.1:{self.c2s_tls_port}"')
        if self._tls_files and self.ca is not None:
            lines += ["", "[tls]", f"cert = {toml_value(self.ca.cert)}",
                      f"key = {toml_value(self.ca.key)}"]
        lines += ["", "[limits]"] + [f"{k} = {toml_value(v)}" for k, v in self._limits.items()]
        lines += ["", "[auth]"] + [f"{k} = {toml_value(v)}" for k, v in self._auth.items()]
        lines += ["", "[time]", f"sync_flag = {toml_value(self._time_sync_flag)}"]
        self.config.write_text("\n".join(lines) + "\n")

    # -- CLI
    def cli(self, *args: str, stdin: str | None = None, check: bool = True,
            env: dict | None = None):
        res = subprocess.run([str(KITH_BIN), self.config_flag, str(self.config), *args],
                             input=stdin, capture_output=True, text=True, timeout=STEP * 3,
                             env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"kith {' '.join(args)} exited {res.returncode}: "
                                 f"{res.stderr.strip()}")
        return res

    def add_user(self, user: str, password: str = PASSWORD) -> str:
        jid = f"{user}@{DOMAIN}"
        self.cli("user", "add", jid, stdin=password + "\n")
        return jid

    # -- process
    def start(self, extra_env: dict | None = None) -> "Kith":
        """Start `kith serve` and wait for its ports. A port taken between picking and
        binding (another process's ephemeral port) is retried with fresh ports."""
        for attempt in range(3):
            try:
                return self._start_once(extra_env)
            except PortTaken:
                self.pick_ports()
        raise AssertionError("kith could not bind fresh ports three times:\n" + self.log_tail())

    def _start_once(self, extra_env: dict | None) -> "Kith":
        self._log_file = open(self.log_path, "ab")
        log_start = self.log_path.stat().st_size
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.pop("NOTIFY_SOCKET", None)
        env.update(extra_env or {})
        self.proc = subprocess.Popen([str(KITH_BIN), self.config_flag, str(self.config), "serve"],
                                     stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START
        ports = [self.c2s_port] + ([self.c2s_tls_port] if self.c2s_tls_port else [])
        while True:
            if self.proc.poll() is not None:
                self._log_file.close()
                self._log_file = None
                with open(self.log_path, "rb") as f:
                    f.seek(log_start)
                    said = f.read().decode(errors="replace").lower()
                if "in use" in said and any(str(p) in said for p in ports):
                    raise PortTaken()
                raise AssertionError(f"kith serve exited {self.proc.returncode} at start:\n"
                                     + self.log_tail())
            if all(self._port_open(p) for p in ports):
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"kith serve did not open {ports} in {START}s:\n"
                                     + self.log_tail())
            time.sleep(0.05)

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def assert_memory_bounded(self, limit_kib: int = RSS_LIMIT_KIB):
        assert self.alive(), "kith died:\n" + self.log_tail()
        peak = self.peak_rss_kib()
        assert peak < limit_kib, (f"kith peak RSS {peak} KiB >= bound {limit_kib} KiB "
                                  f"(now {self.rss_kib()} KiB)")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture
def kith_factory(tmp_path, test_ca):
    """Make (not start) servers: `kith_factory(limits={...})`. All are stopped at teardown."""
    made: list[Kith] = []

    def make(name: str = "kith", **kw) -> Kith:
        d = tmp_path / name
        d.mkdir()
        k = Kith(d, test_ca, **kw)
        made.append(k)
        return k

    yield make
    for k in made:
        k.stop()
        print(f"--- {k.dir.name} log (tail) ---\n{k.log_tail()}")


@pytest.fixture
def kith(kith_factory) -> Kith:
    """The household's server, running, with alice, bob and carol as users."""
    k = kith_factory()
    for user in ("alice", "bob", "carol"):
        k.add_user(user)
    return k.start()


# --------------------------------------------------------------------------- slixmpp


class Client(slixmpp.ClientXMPP):
    """A slixmpp client whose events land in queues a scenario can await, with timeouts."""

    def __init__(self, server: Kith, jid: str, password: str = PASSWORD, *,
                 mech: str | None = None, direct_tls: bool = False):
        super().__init__(jid, password, sasl_mech=mech)
        self.kith = server
        self.direct_tls = direct_tls
        self.enable_plaintext = False
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.ca_certs = server.ca.ca_cert if server.ca else None
        # XEP-0368: a Direct TLS client offers ALPN xmpp-client.
        self.ssl_context.set_alpn_protocols(["xmpp-client"])
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.whitespace_keepalive = False
        # The tests answer subscription requests themselves.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        for plugin in ("xep_0030", "xep_0054", "xep_0092", "xep_0199", "xep_0202", "xep_0352"):
            self.register_plugin(plugin)
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.roster_pushes: asyncio.Queue = asyncio.Queue()
        self.stream_errors: asyncio.Queue = asyncio.Queue()
        self.session = asyncio.get_running_loop().create_future()
        self.gone = asyncio.get_running_loop().create_future()
        self.mech_used: str | None = None
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("roster_update", self._on_roster)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("session_start", self._on_session)
        self.add_event_handler("auth_success", self._on_auth)
        self.add_event_handler("failed_auth", self._on_fail("failed_auth"))
        self.add_event_handler("failed_all_auth", self._on_fail("failed_all_auth"))
        self.add_event_handler("connection_failed", self._on_fail("connection_failed"))
        self.add_event_handler("ssl_invalid_chain", self._on_fail("ssl_invalid_chain"))
        self.add_event_handler("disconnected", self._on_disconnected)

    def _on_roster(self, iq):
        if iq["type"] == "set":
            self.roster_pushes.put_nowait(iq)

    def _on_session(self, _event):
        if not self.session.done():
            self.session.set_result(True)

    def _on_auth(self, _stanza):
        self.mech_used = self.plugin["feature_mechanisms"].mech.name

    def _on_fail(self, what):
        def handler(arg):
            if not self.session.done():
                try:
                    cond = arg["condition"]
                except Exception:
                    cond = arg
                self.session.set_exception(LoginFailed(what, cond))
        return handler

    def _on_disconnected(self, reason):
        if not self.session.done():
            self.session.set_exception(LoginFailed("disconnected", reason))
        if not self.gone.done():
            self.gone.set_result(reason)

    async def login(self, timeout: float = STEP):
        port = self.kith.c2s_tls_port if self.direct_tls else self.kith.c2s_port
        self.connect("127.0.0.1", port)
        try:
            await asyncio.wait_for(asyncio.shield(self.session), timeout)
        except BaseException as e:
            self.abort()
            if not self.kith.alive():  # say so plainly: the server is gone, not the login
                raise AssertionError(f"kith is not running (exit code "
                                     f"{self.kith.proc.returncode}, signal if < 0) when "
                                     f"{self.boundjid} logged in:\n{self.kith.log_tail()}") from e
            raise
        return self

    async def next_message(self, timeout: float = STEP, *, body_only: bool = True):
        """The next message with a body (chat states, receipts … skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            msg = await asyncio.wait_for(self.messages.get(), max(left, 0.01))
            if not body_only or msg["body"]:
                return msg

    async def next_presence(self, match=lambda p: True, timeout: float = STEP):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            p = await asyncio.wait_for(self.presences.get(), max(left, 0.01))
            if match(p):
                return p

    async def next_roster_push(self, match=lambda iq: True, timeout: float = STEP):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            iq = await asyncio.wait_for(self.roster_pushes.get(), max(left, 0.01))
            if match(iq):
                return iq

    async def expect_no_message(self, within: float = 1.0):
        try:
            msg = await self.next_message(within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"{self.boundjid} got an unexpected message: {msg}")

    async def close(self):
        if self.transport is not None:
            self.disconnect(wait=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone), 3.0)
        self.abort()


class LoginFailed(Exception):
    def __init__(self, what, condition):
        super().__init__(f"{what}: {condition}")
        self.what = what
        self.condition = condition


@contextlib.asynccontextmanager
async def online(server: Kith, user: str, resource: str | None = None, *, priority: int = 0,
                 presence: bool = True, roster: bool = True, **kw):
    """A logged-in slixmpp client for `user` (optionally /resource), disconnected on exit."""
    jid = f"{user}@{DOMAIN}" + (f"/{resource}" if resource else "")
    c = Client(server, jid, **kw)
    try:
        await c.login()
        if roster:
            await c.get_roster(timeout=STEP)
        if presence:
            c.send_presence(ppriority=priority)
            # A round-trip: the server handles one session's stanzas in order, so once the
            # ping is answered the presence has been processed (tests then don't race it;
            # test_a_message_racing_the_initial_presence_is_not_lost does so on purpose).
            await c.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        yield c
    finally:
        await c.close()


async def exchange(sender: Client, receiver: Client, body: str | None = None):
    """`sender` writes to `receiver`'s bare JID; assert it arrives, stamped with the sender."""
    body = body or f"hello {secrets.token_hex(4)}"
    sender.send_message(mto=receiver.boundjid.bare, mbody=body, mtype="chat")
    msg = await receiver.next_message()
    assert msg["body"] == body
    assert msg["from"] == sender.boundjid, f"from {msg['from']} != {sender.boundjid}"
    return msg


# --------------------------------------------------------------------------- raw sockets


class StreamClosed(Exception):
    pass


class RawXmpp:
    """A socket speaking XMPP by hand, blocking, every read bounded by a timeout.

    `elements()` yields the top-level children of the server's stream as ElementTree
    elements; `raw` keeps every byte received, for assertions on hostile-input replies.
    """

    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None,
                 direct_tls: ssl.SSLContext | None = None, rcvbuf: int | None = None,
                 timeout: float = STEP):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.raw = b""
        self.closed = False
        self._pending: list[ET.Element] = []
        self._new_parser()
        if direct_tls is not None:
            self.sock = direct_tls.wrap_socket(self.sock, server_hostname=DOMAIN)

    def _new_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.stream_attrs: dict | None = None

    # -- writing
    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def open_stream(self, to: str = DOMAIN, extra: str = ""):
        """Send a stream header; the server's header is read lazily by `elements()`."""
        self._new_parser()
        self.send(f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' "
                  f"xmlns='jabber:client' xmlns:stream='{NS_STREAM}'{extra}>")

    # -- reading
    def recv_some(self, timeout: float | None = None) -> bytes:
        """One read; b'' when the server closed; raises TimeoutError after `timeout`."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            data = b""
        except ssl.SSLError as e:  # a TLS alert or a cut connection
            if "timed out" in str(e):
                raise TimeoutError from e
            data = b""
        except socket.timeout as e:
            raise TimeoutError from e
        if not data:
            self.closed = True
        self.raw += data
        return data

    def element(self, timeout: float | None = None) -> ET.Element:
        """The next top-level element of the server's stream."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no element; received so far: {self.raw[-500:]!r}")
            data = self.recv_some(left)
            if not data:
                raise StreamClosed(f"closed; received: {self.raw[-500:]!r}")
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                    if self._depth == 1:
                        self.stream_attrs = dict(el.attrib)
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        self._pending.append(el)
        return self._pending.pop(0)

    def expect(self, tag: str, timeout: float | None = None) -> ET.Element:
        el = self.element(timeout)
        if el.tag == f"{{{NS_STREAM}}}error":
            raise AssertionError(f"stream error {stream_error_condition(self.raw)} "
                                 f"while waiting for {tag}")
        assert el.tag == tag, f"expected {tag}, got {el.tag}: {ET.tostring(el)!r}"
        return el

    def read_until_closed(self, timeout: float = STEP, limit: int = 64 << 20) -> bytes:
        """Read (and keep) everything until the server closes; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        total = 0
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"server kept the connection open {timeout}s; "
                                   f"tail: {self.raw[-300:]!r}")
            total += len(self.recv_some(left))
            assert total <= limit, "server sent far more than expected"
        return self.raw

    # -- negotiation
    def features(self) -> ET.Element:
        return self.expect(f"{{{NS_STREAM}}}features")

    def starttls(self, ctx: ssl.SSLContext):
        self.open_stream()
        feats = self.features()
        assert feats.find(f"{{{NS_TLS}}}starttls") is not None, "no <starttls/> offered"
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        self.expect(f"{{{NS_TLS}}}proceed")
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.raw = b""

    def mechanisms(self) -> tuple[list[str], ET.Element]:
        self.open_stream()
        feats = self.features()
        mechs = feats.find(f"{{{NS_SASL}}}mechanisms")
        assert mechs is not None, f"no SASL mechanisms offered: {ET.tostring(feats)!r}"
        return [m.text for m in mechs.findall(f"{{{NS_SASL}}}mechanism")], feats

    def auth_plain(self, user: str, password: str = PASSWORD) -> ET.Element:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        return self.element()

    def bind(self, resource: str | None = None) -> str:
        self.open_stream()
        feats = self.features()
        assert feats.find(f"{{{NS_BIND}}}bind") is not None, "no <bind/> after auth"
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        iq = self.expect(f"{{{NS_CLIENT}}}iq")
        assert iq.get("type") == "result", ET.tostring(iq)
        return iq.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text

    def login(self, ctx: ssl.SSLContext, user: str, resource: str | None = None,
              password: str = PASSWORD, *, direct: bool = False) -> str:
        """STARTTLS (unless already Direct TLS), PLAIN, bind; returns the full JID."""
        if not direct:
            self.starttls(ctx)
        self.mechanisms()
        res = self.auth_plain(user, password)
        assert res.tag == f"{{{NS_SASL}}}success", ET.tostring(res)
        return self.bind(resource)

    def poll_closed(self) -> bool:
        """Without blocking: read what has arrived (kept in `raw`); True once closed."""
        while not self.closed:
            pending = getattr(self.sock, "pending", lambda: 0)()
            if not pending and not select.select([self.sock], [], [], 0)[0]:
                return False
            try:
                self.recv_some(0.5)
            except TimeoutError:  # half a TLS record so far
                return False
        return True

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def stream_error_condition(raw: bytes) -> str | None:
    """The defined condition of the first stream error in `raw` (any prefix), or None."""
    text = raw.decode("utf-8", errors="replace")
    m = re.search(r"<(?:[\w.-]+:)?error\b[^>]*>(.*?)</(?:[\w.-]+:)?error>", text, re.S)
    body = m.group(1) if m else text
    m = re.search(r"<([a-z-]+)\s+xmlns=['\"]" + re.escape(NS_STREAMS_ERR) + r"['\"]", body)
    return m.group(1) if m else None


def plain_context_unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------- SCRAM by hand


class Scram:
    """RFC 5802 client side, to drive -PLUS with channel-binding data slixmpp can't make."""

    def __init__(self, hash_name: str, user: str, password: str, cb_type: str | None,
                 cb_data: bytes = b""):
        self.h = hash_name
        self.user = user
        self.password = password
        self.gs2 = (f"p={cb_type},," if cb_type else "n,,").encode()
        self.cb_data = cb_data
        self.cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n={user},r={self.cnonce}".encode()

    def first(self) -> bytes:
        return self.gs2 + self.first_bare

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split(b"=", 1) for kv in server_first.split(b","))
        nonce = attrs[b"r"]
        assert nonce.startswith(self.cnonce.encode()), "server nonce must extend ours"
        salt = base64.b64decode(attrs[b"s"])
        iterations = int(attrs[b"i"])
        self.iterations = iterations
        salted = hashlib.pbkdf2_hmac(self.h, self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.h).digest()
        stored_key = hashlib.new(self.h, client_key).digest()
        cbind = base64.b64encode(self.gs2 + self.cb_data).decode()
        without_proof = f"c={cbind},r={nonce.decode()}".encode()
        auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, auth_message, self.h).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.h).digest()
        self.expected_server_sig = hmac.new(server_key, auth_message, self.h).digest()
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify(self, server_final: bytes):
        attrs = dict(kv.split(b"=", 1) for kv in server_final.split(b","))
        assert base64.b64decode(attrs[b"v"]) == self.expected_server_sig, "bad server signature"


def scram_login(raw: RawXmpp, mech: str, scram: Scram) -> ET.Element:
    """Run a SCRAM exchange on `raw`; returns the final <success/> or <failure/>."""
    data = base64.b64encode(scram.first()).decode()
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{data}</auth>")
    el = raw.element()
    if el.tag != f"{{{NS_SASL}}}challenge":
        return el
    reply = scram.final(base64.b64decode(el.text or ""))
    raw.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(reply).decode()}</response>")
    el = raw.element()
    if el.tag == f"{{{NS_SASL}}}success" and el.text:
        scram.verify(base64.b64decode(el.text))
    return el


def tls_server_end_point(sslsock: ssl.SSLSocket) -> bytes:
    """RFC 5929 §4.1 channel binding: hash of the server certificate (SHA-256 for
    certificates signed with SHA-1 or SHA-256, else the signature's own hash)."""
    der = sslsock.getpeercert(binary_form=True)
    return hashlib.sha256(der).digest()


def age_archive(db_path: Path, micros: int, stanza_like: str = "%") -> None:
    """Make archived messages older (the server stopped): their stamps move back by
    `micros`, and the archive's time marks (the first id and smallest stamp of each
    committed group) are made again from the rows, one per row, as the writer would
    have written them had the messages been sent that long ago."""
    import sqlite3
    db = sqlite3.connect(db_path)
    try:
        with db:
            db.execute("UPDATE archive SET stamp = stamp - ? WHERE stanza LIKE ?",
                       (micros, stanza_like))
            db.execute("DELETE FROM archive_marks")
            db.execute("INSERT INTO archive_marks (id, stamp) SELECT id, stamp FROM archive")
    finally:
        db.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- components, push


NS_COMPONENT = "jabber:component:accept"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
NS_PUSH = "urn:xmpp:push:0"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"


class KithExtra(Kith):
    """A `Kith` with more configuration: a component listener (`component=True`, port in
    `component_port`) and extra TOML sections, e.g. `{"components": {"push.localhost":
    "s3cret"}, "ping": {"idle_secs": 1}}`."""

    def __init__(self, directory: Path, ca: TestCA | None, *, component: bool = False,
                 sections: dict | None = None, **kw):
        self._component = component
        self._sections = sections or {}
        self.component_port: int | None = None
        super().__init__(directory, ca, **kw)

    def pick_ports(self):
        super().pick_ports()
        text = self.config.read_text()
        if self._component:
            self.component_port = free_port()
            text = text.replace("[listen]\n",
                                f'[listen]\ncomponent = "127.0.0.1:{self.component_port}"\n', 1)
        for section, values in self._sections.items():
            text += f"\n[{section}]\n" + "".join(
                f"{toml_value(k)} = {toml_value(v)}\n" for k, v in values.items())
        self.config.write_text(text)

    def _start_once(self, extra_env: dict | None) -> "Kith":
        try:
            return super()._start_once(extra_env)
        except AssertionError as e:
            said = str(e).lower()
            if self.component_port and "in use" in said and str(self.component_port) in said:
                raise PortTaken() from e
            raise


@pytest.fixture
def kith_extra(tmp_path, test_ca):
    """Start servers with extra configuration: `kith_extra(component=True, sections=…)`;
    alice, bob and carol exist. All are stopped at teardown."""
    made: list[Kith] = []

    def make(name: str = "kith", users=("alice", "bob", "carol"), **kw) -> KithExtra:
        d = tmp_path / name
        d.mkdir()
        k = KithExtra(d, test_ca, **kw)
        made.append(k)
        for user in users:
            k.add_user(user)
        return k.start()

    yield make
    for k in made:
        k.stop()
        print(f"--- {k.dir.name} log (tail) ---\n{k.log_tail()}")


class Notification:
    """One XEP-0357 notification as an app server received it."""

    def __init__(self, iq):
        self.account = iq["from"].bare
        pubsub = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub")
        publish = pubsub.find(f"{{{NS_PUBSUB}}}publish")
        self.node = publish.get("node")
        note = publish.find(f"{{{NS_PUBSUB}}}item/{{{NS_PUSH}}}notification")
        self.fields = form_values(note.find(f"{{{NS_DATA}}}x"))
        opts = pubsub.find(f"{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x")
        self.options = form_values(opts) if opts is not None else None

    def __repr__(self):
        return f"Notification({self.account}, {self.node}, {self.fields}, {self.options})"


def form_values(x) -> dict:
    return {f.get("var"): f.findtext(f"{{{NS_DATA}}}value") for f in x.iter(f"{{{NS_DATA}}}field")}


class AppServer(slixmpp.ComponentXMPP):
    """A push app server as a real XEP-0114 component (slixmpp's ComponentXMPP).

    Notifications land in `notifications`; with `refuse` set to a condition
    (e.g. "item-not-found") it answers them with that error; `pings` counts the
    server's pings; messages land in `messages`."""

    def __init__(self, server: KithExtra, domain: str, secret: str):
        super().__init__(domain, secret, "127.0.0.1", server.component_port)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.notifications: asyncio.Queue = asyncio.Queue()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.stream_errors: asyncio.Queue = asyncio.Queue()
        self.refuse: str | None = None
        self.pings = 0
        self.session = asyncio.get_running_loop().create_future()
        self.gone = asyncio.get_running_loop().create_future()
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        self.register_handler(Callback(
            "push notification",
            MatchXPath(f"{{{self.default_ns}}}iq/{{{NS_PUBSUB}}}pubsub"), self._on_publish))
        self.register_handler(Callback(
            "count pings",
            MatchXPath(f"{{{self.default_ns}}}iq/{{urn:xmpp:ping}}ping"), self._on_ping))
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("session_start", self._on_session)
        self.add_event_handler("disconnected", self._on_disconnected)

    def _on_session(self, _event):
        if not self.session.done():
            self.session.set_result(True)

    def _on_disconnected(self, reason):
        if not self.session.done():
            self.session.set_exception(LoginFailed("disconnected", reason))
        if not self.gone.done():
            self.gone.set_result(reason)

    def _on_ping(self, _iq):
        self.pings += 1

    def _on_publish(self, iq):
        if iq["type"] != "set":
            return
        self.notifications.put_nowait(Notification(iq))
        if self.refuse:
            self.send_raw(f"<iq type='error' id='{iq['id']}' from='{iq['to']}' "
                          f"to='{iq['from']}'><error type='cancel'><{self.refuse} "
                          f"xmlns='{NS_STANZAS}'/></error></iq>")
        else:
            iq.reply().send()

    async def start(self, timeout: float = STEP) -> "AppServer":
        self.connect()
        await asyncio.wait_for(asyncio.shield(self.session), timeout)
        return self

    async def next_notification(self, timeout: float = STEP) -> Notification:
        return await asyncio.wait_for(self.notifications.get(), timeout)

    async def expect_no_notification(self, within: float = 1.0):
        try:
            n = await asyncio.wait_for(self.notifications.get(), within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected notification {n}")

    async def close(self):
        if self.transport is not None:
            self.disconnect(wait=1.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone), 3.0)
        self.abort()


async def enable_push(client, app_server: str, node: str, secret: str | None = None):
    """XEP-0357 <enable/> from `client` (slixmpp 1.17 has no xep_0357 plugin), with a
    publish-options form carrying `secret` when given."""
    iq = client.make_iq_set()
    enable = ET.Element(f"{{{NS_PUSH}}}enable", {"jid": app_server, "node": node})
    if secret is not None:
        x = ET.SubElement(enable, f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", PUBLISH_OPTIONS), ("secret", secret)):
            f = ET.SubElement(x, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(f, f"{{{NS_DATA}}}value").text = value
    iq.append(enable)
    return await iq.send(timeout=STEP)


async def disable_push(client, app_server: str, node: str | None = None):
    iq = client.make_iq_set()
    attrs = {"jid": app_server} | ({"node": node} if node else {})
    iq.append(ET.Element(f"{{{NS_PUSH}}}disable", attrs))
    return await iq.send(timeout=STEP)
# ------------------------------------------------------------------ SASL2, Bind2, FAST by hand
# No client available here speaks these: slixmpp 1.17 (in .venv) and tokio-xmpp 6.0 implement
# neither XEP-0388 SASL2, XEP-0386 Bind2 nor XEP-0484 FAST. So the tests drive them with
# RawXmpp, following the XEPs' examples byte for byte, and check every proof the server sends.

NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"


def sasl2_connect(server: Kith, ctx: ssl.SSLContext) -> tuple[RawXmpp, ET.Element]:
    """STARTTLS, then the authentication features (SASL1 and SASL2)."""
    raw = RawXmpp(server.c2s_port)
    raw.starttls(ctx)
    raw.open_stream()
    return raw, raw.features()


def user_agent_xml(agent: tuple[str, str, str] | None) -> str:
    """`<user-agent id=…><software/><device/></user-agent>` for (id, software, device)."""
    if agent is None:
        return ""
    uid, software, device = agent
    return (f"<user-agent id='{uid}'><software>{software}</software>"
            f"<device>{device}</device></user-agent>")


def bind2_xml(tag: str | None, inline: str = "") -> str:
    t = f"<tag>{tag}</tag>" if tag else ""
    return f"<bind xmlns='{NS_BIND2}'>{t}{inline}</bind>"


def sasl2_send(raw: RawXmpp, mech: str, initial: bytes | None, extra: str = ""):
    ir = "" if initial is None else \
        f"<initial-response>{base64.b64encode(initial).decode() or '='}</initial-response>"
    raw.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mech}'>{ir}{extra}</authenticate>")


def sasl2_scram(raw: RawXmpp, mech: str, scram: Scram, extra: str = "") -> ET.Element:
    """A SCRAM exchange over SASL2; returns <success/> (server signature checked) or
    <failure/>."""
    sasl2_send(raw, mech, scram.first(), extra)
    el = raw.element()
    if el.tag != f"{{{NS_SASL2}}}challenge":
        return el
    reply = scram.final(base64.b64decode(el.text or ""))
    raw.send(f"<response xmlns='{NS_SASL2}'>{base64.b64encode(reply).decode()}</response>")
    el = raw.element()
    if el.tag == f"{{{NS_SASL2}}}success":
        data = el.find(f"{{{NS_SASL2}}}additional-data")
        assert data is not None, "SCRAM success carries the server signature"
        scram.verify(base64.b64decode(data.text))
    return el


def ht_initial(user: str, token: str, cb: bytes = b"") -> bytes:
    """HT-SHA-256 initial response: authcid NUL HMAC-SHA-256(token, "Initiator" || cb)."""
    return user.encode() + b"\0" + hmac.new(token.encode(), b"Initiator" + cb, "sha256").digest()


def ht_responder(token: str, cb: bytes = b"") -> bytes:
    return hmac.new(token.encode(), b"Responder" + cb, "sha256").digest()


def fast_login(raw: RawXmpp, user: str, token: str, agent, *, mech: str = "HT-SHA-256-NONE",
               cb: bytes = b"", fast_attrs: str = "", extra: str = "") -> ET.Element:
    """Log in with a FAST token; checks the server's HT proof on success."""
    sasl2_send(raw, mech, ht_initial(user, token, cb),
               user_agent_xml(agent) + f"<fast xmlns='{NS_FAST}' {fast_attrs}/>" + extra)
    el = raw.element()
    if el.tag == f"{{{NS_SASL2}}}success":
        data = el.find(f"{{{NS_SASL2}}}additional-data")
        assert data is not None and base64.b64decode(data.text) == ht_responder(token, cb), \
            "the server proves it knows the token"
    return el


def sasl2_failure(el: ET.Element) -> str:
    """The SASL condition of a SASL2 <failure/>."""
    assert el.tag == f"{{{NS_SASL2}}}failure", ET.tostring(el)
    conds = [c.tag.split("}")[1] for c in el if c.tag.startswith(f"{{{NS_SASL}}}")]
    assert len(conds) == 1, ET.tostring(el)
    return conds[0]


def authz_id(success: ET.Element) -> str:
    assert success.tag == f"{{{NS_SASL2}}}success", ET.tostring(success)
    return success.find(f"{{{NS_SASL2}}}authorization-identifier").text


def sasl2_password_login(server: Kith, ctx: ssl.SSLContext, user: str, *, agent=None,
                         extra: str = "", password: str = PASSWORD) -> tuple[RawXmpp, ET.Element]:
    """SCRAM-SHA-256 over SASL2; returns the stream and the <success/> (its features read)."""
    raw, _ = sasl2_connect(server, ctx)
    el = sasl2_scram(raw, "SCRAM-SHA-256", Scram("sha256", user, password, None),
                     user_agent_xml(agent) + extra)
    assert el.tag == f"{{{NS_SASL2}}}success", ET.tostring(el)
    raw.features()
    return raw, el




# --------------------------------------------------------------------------- PEP (XEP-0163)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


async def announce_caps(client: Client, *plugins: str):
    """Register `plugins` (each PEP plugin adds its `<node>+notify` interest), send available
    presence carrying XEP-0115 entity capabilities, and return once the server knows them.

    The server asks the client for the disco#info behind an unknown hash and handles the
    answer in the session's stanza order, so a ping sent after the answer went out comes
    back only after the server has learned the features (and sent any last items)."""
    for p in ("xep_0115", "xep_0163", *plugins):
        client.register_plugin(p)
    asked, answered = asyncio.Event(), asyncio.Event()

    def is_disco(st):
        return st.name == "iq" and st.xml.find(f"{{{NS_DISCO_INFO}}}query") is not None

    def inbound(st):
        if is_disco(st) and st["type"] == "get" and str(st["from"]) == DOMAIN:
            asked.set()
        return st

    def outbound(st):
        if is_disco(st) and st["type"] == "result" and str(st["to"]) == DOMAIN:
            answered.set()
        return st

    client.add_filter("in", inbound)
    client.add_filter("out", outbound)
    try:
        await client.plugin["xep_0115"].update_caps(broadcast=False)
        client.send_presence()
        await client.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
        if asked.is_set():
            await asyncio.wait_for(answered.wait(), STEP)
            await client.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
    finally:
        client.del_filter("in", inbound)
        client.del_filter("out", outbound)


def pep_events(client: Client) -> asyncio.Queue:
    """A queue of ("publish" | "retract" | "purge" | "delete", message) for every PEP event
    `client` gets."""
    q: asyncio.Queue = asyncio.Queue()
    for kind in ("publish", "retract", "purge", "delete"):
        client.add_event_handler(f"pubsub_{kind}", lambda m, k=kind: q.put_nowait((k, m)))
    return q


async def no_more_events(client: Client, events: asyncio.Queue):
    """Assert `client` got no PEP event: a ping round-trip first flushes anything the
    server queued for it before the ping."""
    await client.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
    assert events.empty(), f"{client.boundjid} got {events.get_nowait()}"


async def befriend(alice: Client, bob: Client):
    """Mutual presence subscription between two online clients."""
    a, b = alice.boundjid.bare, bob.boundjid.bare
    alice.send_presence_subscription(pto=b, ptype="subscribe")
    await bob.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == a)
    bob.send_presence_subscription(pto=a, ptype="subscribed")
    bob.send_presence_subscription(pto=a, ptype="subscribe")
    await alice.next_presence(lambda p: p["type"] == "subscribe" and p["from"].bare == b)
    alice.send_presence_subscription(pto=b, ptype="subscribed")
    def both_with(other):
        def match(iq):
            items = {str(j): item for j, item in iq["roster"]["items"].items()}
            return other in items and items[other]["subscription"] == "both"
        return match

    await alice.next_roster_push(both_with(b))
    await bob.next_roster_push(both_with(a))


def publish_options(**fields) -> "slixmpp.plugins.xep_0004.stanza.Form":
    """A XEP-0223 publish-options form: publish_options(access_model="open", max_items="max")."""
    from slixmpp.plugins.xep_0004.stanza import Form
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for k, v in fields.items():
        form.add_field(var=f"pubsub#{k}", value=v)
    return form


def stanza_error(exc) -> tuple[str, str | None]:
    """(condition, application condition) of a slixmpp IqError."""
    err = exc.iq["error"]
    app = None
    for child in err.xml:
        if child.tag.startswith("{http://jabber.org/protocol/pubsub#errors}"):
            app = child.tag.split("}", 1)[1]
    return err["condition"], app


def item_payloads(iq) -> list:
    """(id, payload element) of each item in a pubsub items result, in order."""
    return [(item["id"], item["payload"]) for item in iq["pubsub"]["items"]]


# --------------------------------------------------------------------------- the web pod

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


class WebKith(Kith):
    """A Kith with the web pod's HTTP and HTTPS listeners on free loopback ports;
    `upload={...}` fills the config's [upload] section."""

    def __init__(self, directory: Path, ca: TestCA | None, *, upload=None, **kw):
        self._upload = upload or {}
        super().__init__(directory, ca, **kw)

    def pick_ports(self):
        super().pick_ports()
        self.http_port = free_port()
        self.https_port = free_port()
        text = self.config.read_text().replace(
            "[listen]\n",
            f'[listen]\nhttp = "127.0.0.1:{self.http_port}"\n'
            f'https = "127.0.0.1:{self.https_port}"\n', 1)
        if self._upload:
            text += "\n[upload]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                             for k, v in self._upload.items())
        self.config.write_text(text)

    def start(self, extra_env: dict | None = None) -> "WebKith":
        super().start(extra_env)
        deadline = time.monotonic() + START
        while not (self._port_open(self.https_port) and self._port_open(self.http_port)):
            if time.monotonic() > deadline:
                raise AssertionError("kith did not open its web ports:\n" + self.log_tail())
            time.sleep(0.05)
        return self

    @property
    def https_url(self) -> str:
        return f"https://{DOMAIN}:{self.https_port}"

    def https_context(self) -> ssl.SSLContext:
        ctx = self.ca.client_context()
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def https_raw(self, request: bytes, *, timeout: float = STEP) -> bytes:
        """Send raw bytes over HTTPS, return everything until the server closes (or the
        timeout): for hostile-input tests that http.client would refuse to send."""
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=timeout) as s:
            with self.https_context().wrap_socket(s, server_hostname=DOMAIN) as t:
                # The server may answer (431, 400) and close before all was sent.
                with contextlib.suppress(ssl.SSLError, ConnectionError):
                    t.sendall(request)
                out = b""
                with contextlib.suppress(TimeoutError, ssl.SSLError, ConnectionError):
                    while chunk := t.recv(65536):
                        out += chunk
                return out


@pytest.fixture
def web_kith_factory(tmp_path, test_ca):
    """Start servers with the web pod: `web_kith_factory(upload={...})`; alice, bob and
    carol are users. All are stopped at teardown."""
    made: list[WebKith] = []

    def make(name: str = "web", **kw) -> WebKith:
        d = tmp_path / name
        d.mkdir()
        k = WebKith(d, test_ca, **kw)
        made.append(k)
        for user in ("alice", "bob", "carol"):
            k.add_user(user)
        return k.start()

    yield make
    for k in made:
        k.stop()
        print(f"--- {k.dir.name} log (tail) ---\n{k.log_tail()}")


@pytest.fixture
def web_kith(web_kith_factory) -> WebKith:
    """The household's server with its web pod; alice, bob and carol are users."""
    return web_kith_factory()


class WsXmpp:
    """XMPP over WebSocket (RFC 7395) by hand, with the `websockets` library: one
    element per message, every receive bounded by STEP."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def connect(cls, server: WebKith, *, subprotocols=("xmpp",), **kw) -> "WsXmpp":
        import websockets
        ws = await websockets.connect(
            f"wss://{DOMAIN}:{server.https_port}/xmpp-websocket",
            ssl=server.https_context(), subprotocols=list(subprotocols),
            open_timeout=STEP, **kw)
        return cls(ws)

    async def send(self, xml: str):
        await self.ws.send(xml)

    async def recv(self, timeout: float = STEP) -> ET.Element:
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        return ET.fromstring(msg)

    async def open(self) -> ET.Element:
        """Send <open/>; return the <stream:features/> that follows the server's <open/>."""
        await self.send(f"<open xmlns='{NS_FRAMING}' to='{DOMAIN}' version='1.0'/>")
        opened = await self.recv()
        assert opened.tag == f"{{{NS_FRAMING}}}open", opened.tag
        features = await self.recv()
        assert features.tag == f"{{{NS_STREAM}}}features", features.tag
        return features

    async def login(self, user: str, password: str = PASSWORD, resource: str = "web") -> str:
        """SASL PLAIN, stream restart, bind; returns the bound full JID."""
        features = await self.open()
        mechs = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        assert "PLAIN" in mechs, mechs
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        ok = await self.recv()
        assert ok.tag == f"{{{NS_SASL}}}success", ET.tostring(ok)
        features = await self.open()
        assert features.find(f"{{{NS_BIND}}}bind") is not None
        await self.send(f"<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind xmlns='{NS_BIND}'>"
                        f"<resource>{resource}</resource></bind></iq>")
        res = await self.recv()
        assert res.get("type") == "result", ET.tostring(res)
        return res.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text

    async def next_stanza(self, tag: str, timeout: float = STEP) -> ET.Element:
        """The next `tag` (message, presence, iq) in jabber:client, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            el = await self.recv(max(0.01, deadline - time.monotonic()))
            if el.tag == f"{{{NS_CLIENT}}}{tag}":
                return el

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), STEP)
