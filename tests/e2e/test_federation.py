"""Federation: Kith users talk to users of real Prosody and ejabberd servers, over
authenticated TLS only.

The set-up, started once for the module (`fed`):
- a throw-away CA (openssl) that signs a certificate per test domain: kith.fedtest
  (+ groups.kith.fedtest, its group chat service), prosody.fedtest (+ conference.prosody.fedtest), ejabberd.fedtest (+ conference.ejabberd.fedtest),
  raw.fedtest (the hand-driven peer of the refusal tests) and a certificate for
  `other.fedtest` that the impostor `evil.fedtest` presents;
- each server on its own loopback address (127.X.Y.Z, random per run);
- a Debian `dnsmasq` on that network (the test domains end in `.fedtest`: Prosody's
  resolver, libunbound, answers the special-use `.test` names itself and never asks) serving the SRV (`_xmpp-server._tcp`) and A records
  of every test domain. Prosody resolves through it (its `unbound` resolv.conf), ejabberd
  through its Erlang inetrc, and Kith through its normal system resolver (hickory reading
  /etc/resolv.conf): Kith runs in a private mount namespace where /etc/resolv.conf
  names the dnsmasq — no `[s2s.hosts]` shortcut;
- every server trusts the test CA by its own configuration (Kith: `[s2s] ca_file`).

Run: KITH_BIN=$PWD/target/debug/kith .venv/bin/python -m pytest tests/e2e/test_federation.py
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slixmpp import JID
from slixmpp.exceptions import IqError

from conftest import (KITH_BIN, NS_SASL, NS_STREAM, NS_TLS, PASSWORD, START, STEP, Client,
                      Kith, PortTaken, RawXmpp, StreamClosed, free_port, item_payloads,
                      missing_programs, pep_events, run, stanza_error, toml_value)

KITH = "kith.fedtest"
GROUPS = f"groups.{KITH}"  # Kith's group chat service, federating under its own name
PROSODY = "prosody.fedtest"
EJABBERD = "ejabberd.fedtest"
RAW = "raw.fedtest"  # the hand-driven peer (valid certificate)
EVIL = "evil.fedtest"  # presents a certificate for other.fedtest
NOTLS = "notls.fedtest"  # offers no TLS
DIALBACK = "db.fedtest"  # a hand-driven server that knows only dialback
NS_SERVER = "jabber:server"
NS_DB = "jabber:server:dialback"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"

FEDERATION_PROGRAMS = ("prosody", "ejabberdctl", "dnsmasq", "unshare")
pytestmark = pytest.mark.skipif(
    bool(missing_programs(*FEDERATION_PROGRAMS)),
    reason=f"federation tests need {', '.join(missing_programs(*FEDERATION_PROGRAMS))} on PATH "
           "(tests/setup.sh installs prosody, ejabberd, dnsmasq-base; unshare is util-linux)")


# --------------------------------------------------------------------------- certificates


class FedCA:
    """A CA and, per domain, a leaf valid for server and client authentication."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca_cert = directory / "ca.pem"
        key = directory / "ca.key"
        self._ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", key, "-out", self.ca_cert, "-days", "2",
                   "-subj", "/CN=Kith federation test CA",
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.ca_key = key

    @staticmethod
    def _ossl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    def leaf(self, name: str, *extra: str) -> tuple[Path, Path]:
        cert, key, csr, ext = (self.dir / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
        self._ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        sans = ",".join(f"DNS:{n}" for n in (name, *extra))
        ext.write_text(f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        self._ossl("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                   "-CAcreateserial", "-out", cert, "-days", "2", "-sha256", "-extfile", ext)
        os.chmod(key, 0o644)  # the peers read it after dropping privileges
        return cert, key


# --------------------------------------------------------------------------- network


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
              what: str = "server", log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} did not open {host}:{port} in {timeout}s\n{tail}")


class Net:
    """Addresses of this run: 127.A.B.x, one per server, and the DNS server at .53."""

    def __init__(self):
        a, b = random.randint(100, 250), random.randint(1, 250)
        self.base = f"127.{a}.{b}"
        self.dns = f"{self.base}.53"
        self.ip = {KITH: f"{self.base}.10", PROSODY: f"{self.base}.11",
                   EJABBERD: f"{self.base}.12", EVIL: f"{self.base}.13",
                   NOTLS: f"{self.base}.14", RAW: f"{self.base}.15",
                   DIALBACK: f"{self.base}.16"}
        self.s2s_port: dict[str, int] = {}

    def port(self, domain: str) -> int:
        if domain not in self.s2s_port:
            self.s2s_port[domain] = free_port(self.ip[domain])
        return self.s2s_port[domain]


class Dns:
    """dnsmasq serving SRV and A records for the test domains, and nothing else."""

    def __init__(self, directory: Path, ip: str, records: dict[str, tuple[str, int | None]],
                 name: str = "dns", direct: dict[str, int] | None = None):
        self.resolv = directory / f"{name}-resolv.conf"
        self.resolv.write_text(f"nameserver {ip}\noptions timeout:1 attempts:2\n")
        self.log = directory / f"{name}.log"
        args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", f"--pid-file={directory / (name + '.pid')}",
                f"--listen-address={ip}", "--bind-interfaces", "--port=53",
                "--log-facility=-", "--user=root", "--log-queries",
                # Authoritative for the test zone: unknown names (the `_xmpps-server`
                # records) are NXDOMAIN, not REFUSED — ejabberd gives up on REFUSED.
                "--local=/fedtest/"]
        for domain, (ip, port) in records.items():
            args.append(f"--host-record={domain},{ip}")
            if port:
                args.append(f"--srv-host=_xmpp-server._tcp.{domain},{domain},{port}")
        for domain, port in (direct or {}).items():
            args.append(f"--srv-host=_xmpps-server._tcp.{domain},{domain},{port}")
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START
        while "started" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                "dnsmasq did not start:\n" + self.log.read_text(errors="replace")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# --------------------------------------------------------------------------- Kith


class FedKith(Kith):
    """Kith serving kith.fedtest, s2s on its own address, resolving through the test DNS."""

    def __init__(self, directory: Path, ca: FedCA, net: Net, resolv: Path, *,
                 primary: bool = True, **s2s):
        self.primary = primary
        self.net = net
        self.resolv = resolv
        self.fed_ca = ca
        self.cert, self.key = ca.leaf(KITH, GROUPS)
        self.s2s_extra = s2s
        super().__init__(directory, None, direct_tls=False)
        self.ca = ca  # clients verify kith.fedtest against the test CA

    def pick_ports(self):
        self.c2s_port = free_port()
        self.c2s_tls_port = None
        ip = self.net.ip[KITH]
        # The primary Kith is kith.fedtest in DNS; others only take incoming streams.
        self.s2s_port = self.net.port(KITH) if self.primary else free_port(ip)
        self.s2s_tls_port = free_port(ip)
        s2s = {"ca_file": self.fed_ca.ca_cert, "connect_timeout_secs": 15,
               "idle_timeout_secs": 300, **self.s2s_extra}
        lines = [f"domain = {toml_value(KITH)}", f"data_dir = {toml_value(self.data_dir)}",
                 "", "[listen]", f'c2s = "127.0.0.1:{self.c2s_port}"',
                 f's2s = "{ip}:{self.s2s_port}"', f's2s_tls = "{ip}:{self.s2s_tls_port}"',
                 "", "[tls]", f"cert = {toml_value(self.cert)}", f"key = {toml_value(self.key)}",
                 "", "[limits]", "auth_timeout_secs = 10", "connections_per_ip = 0",
                 "", "[auth]", "scram_iterations = 4096", "", "[s2s]"]
        lines += [f"{k} = {toml_value(v) if not isinstance(v, list) else repr(v)}"
                  for k, v in s2s.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def add_user(self, user: str, password: str = PASSWORD) -> str:
        jid = f"{user}@{KITH}"
        self.cli("user", "add", jid, stdin=password + "\n")
        return jid

    def _start_once(self, extra_env: dict | None) -> "Kith":
        # /etc/resolv.conf of a private mount namespace names the test DNS server.
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG="info,kith::federation=debug")
        env.pop("NOTIFY_SOCKET", None)
        script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "sh", str(self.resolv), str(KITH_BIN),
             "--config", str(self.config), "serve"],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        wait_port("127.0.0.1", self.c2s_port, START, self.proc, "kith", self.log_path)
        wait_port(self.net.ip[KITH], self.s2s_port, START, self.proc, "kith s2s", self.log_path)
        return self

    def _start_c2s_only(self) -> "Kith":
        """Start with federation off: only the c2s port opens."""
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen([str(KITH_BIN), "--config", str(self.config), "serve"],
                                     stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        wait_port("127.0.0.1", self.c2s_port, START, self.proc, "kith", self.log_path)
        return self

    def log_text(self) -> str:
        """The log without terminal colour codes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))


# --------------------------------------------------------------------------- the peers


class Peer:
    """What the tests need of a running peer server (for `FedClient`)."""

    domain: str
    host: str
    c2s_port: int
    c2s_tls_port = None
    log: Path
    proc: subprocess.Popen

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Prosody(Peer):
    def __init__(self, directory: Path, ca: FedCA, net: Net, resolv: Path, direct_port: int):
        self.domain, self.dir, self.ca = PROSODY, directory, ca
        self.host = net.ip[PROSODY]
        self.c2s_port = free_port(self.host)
        self.s2s_port = net.port(PROSODY)
        cert, key = ca.leaf(PROSODY, f"conference.{PROSODY}")
        (directory / "data").mkdir()
        self.log = directory / "prosody.log"
        self.cfg = directory / "prosody.cfg.lua"
        self.cfg.write_text(f"""
run_as_root = true
pidfile = "{directory}/prosody.pid"
data_path = "{directory}/data"
admin_socket = "{directory}/prosody.sock"
interfaces = {{ "{self.host}" }}
local_interfaces = {{ "{self.host}" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {self.s2s_port} }}
s2s_direct_tls_ports = {{ {direct_port} }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = true
authentication = "internal_hashed"
storage = "internal"
unbound = {{ resolvconf = "{resolv}"; hoststxt = false }}
log = {{ debug = "{self.log}" }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "vcard";
  "offline"; "posix"; "admin_shell"; "pep" }}
modules_disabled = {{ "limits" }}
ssl = {{ certificate = "{cert}"; key = "{key}"; cafile = "{ca.ca_cert}" }}
VirtualHost "{PROSODY}"
Component "conference.{PROSODY}" "muc"
""")
        shutil.chown(directory, "prosody", "prosody")
        for p in directory.rglob("*"):
            shutil.chown(p, "prosody", "prosody")
        for user in ("pat", "quinn"):
            subprocess.run(["prosodyctl", "--config", str(self.cfg), "register", user,
                            PROSODY, PASSWORD], check=True, capture_output=True, timeout=30)
        self.proc = subprocess.Popen(["prosody", "--config", str(self.cfg), "-F"],
                                     stdout=open(directory / "stdout.log", "wb"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.host, self.c2s_port, START, self.proc, "prosody", self.log)
        wait_port(self.host, self.s2s_port, START, self.proc, "prosody s2s", self.log)
        wait_port(self.host, direct_port, START, self.proc, "prosody s2s direct", self.log)

    def stop(self):
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


class Ejabberd(Peer):
    """ejabberd as its own user (like the Debian service), node ejfed-<random>@localhost,
    files in a world-traversable scratch directory (pytest's is root-only)."""

    def __init__(self, ca: FedCA, net: Net, resolv: Path):
        self.domain, self.ca = EJABBERD, ca
        self.dir = Path(tempfile.mkdtemp(prefix="kith-fed-ejabberd-"))
        os.chmod(self.dir, 0o755)
        d = self.dir
        self.host = net.ip[EJABBERD]
        self.c2s_port = free_port(self.host)
        self.s2s_port = net.port(EJABBERD)
        cert, key = ca.leaf(EJABBERD, f"conference.{EJABBERD}")
        for src in (cert, key, ca.ca_cert):
            shutil.copy(src, d / src.name)
        (d / "spool").mkdir()
        (d / "logs").mkdir()
        self.log = d / "logs" / "ejabberd.log"
        # ejabberd looks SRV records up with Erlang's resolver (nameservers from this
        # resolv.conf, named in the inetrc) and addresses with the system's getaddrinfo
        # (/etc/resolv.conf: bind-mounted in a private mount namespace, as for Kith).
        shutil.copy(resolv, d / "resolv.conf")
        (d / "inetrc").write_text(
            f'{{lookup, [file, dns]}}.\n{{resolv_conf, "{d / "resolv.conf"}"}}.\n')
        self.node = f"ejfed{secrets.token_hex(3)}@localhost"
        (d / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.node}\nINET_DIST_INTERFACE=127.0.0.1\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n")
        (d / "ejabberd.yml").write_text(f"""
hosts:
  - "{EJABBERD}"
loglevel: {os.environ.get("KITH_FED_EJ_LOGLEVEL", "info")}
certfiles:
  - "{d / cert.name}"
  - "{d / key.name}"
ca_file: "{d / ca.ca_cert.name}"
listen:
  -
    port: {self.c2s_port}
    ip: "{self.host}"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: {self.s2s_port}
    ip: "{self.host}"
    module: ejabberd_s2s_in
s2s_use_starttls: required
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  muc_create:
    allow: local
shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
modules:
  mod_disco: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
  mod_ping: {{}}
  mod_vcard: {{}}
  mod_s2s_dialback: {{}}
  mod_caps: {{}}
  mod_pubsub:
    plugins: ["flat", "pep"]
  mod_muc:
    host: "conference.{EJABBERD}"
    access_create: muc_create
""")
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(d)], check=True)
        script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
        self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh",
                                      str(d / "resolv.conf"), *self.ctl("foreground")],
                                     stdout=open(d / "stdout.log", "wb"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.host, self.c2s_port, 90, self.proc, "ejabberd", d / "stdout.log")
        wait_port(self.host, self.s2s_port, START, self.proc, "ejabberd s2s", self.log)
        for user in ("pat", "quinn"):
            # The node may still be starting its modules when the ports open.
            deadline = time.monotonic() + 60
            while True:
                r = subprocess.run(self.ctl("register", user, EJABBERD, PASSWORD),
                                   capture_output=True, text=True, timeout=60)
                if r.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"ejabberdctl register: {r.stdout}{r.stderr}"
                time.sleep(0.5)

    def ctl(self, *args: str) -> list[str]:
        d = self.dir
        return ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--init-groups",
                "env", "HOME=/var/lib/ejabberd", "ejabberdctl", "--config-dir", str(d),
                "--config", str(d / "ejabberd.yml"), "--ctl-config", str(d / "ejabberdctl.cfg"),
                "--spool", str(d / "spool"), "--logs", str(d / "logs"), *args]

    def stop(self):
        with contextlib.suppress(Exception):
            subprocess.run(self.ctl("stop"), capture_output=True, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.kept_log = self.log_tail(80)
        if not os.environ.get("KITH_FED_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 60) -> str:
        if not self.dir.exists():
            return getattr(self, "kept_log", "(gone)")
        return super().log_tail(n)


# --------------------------------------------------------------------------- fixture


class Fed:
    def __init__(self, directory: Path):
        self.dir = directory
        self.net = Net()
        self.ca = FedCA(directory)
        self.raw_cert, self.raw_key = self.ca.leaf(RAW)
        self.other_cert, self.other_key = self.ca.leaf("other.fedtest")
        self.db_cert, self.db_key = self.ca.leaf(DIALBACK)
        records = {d: (self.net.ip[d], self.net.port(d))
                   for d in (KITH, PROSODY, EJABBERD, EVIL, NOTLS, DIALBACK)}
        for d in (PROSODY, EJABBERD):
            records[f"conference.{d}"] = (self.net.ip[d], self.net.port(d))
        # Kith's group chat service is reached at Kith's own address.
        records[GROUPS] = (self.net.ip[KITH], self.net.port(KITH))
        # Prosody also takes Direct TLS (XEP-0368): Kith prefers `_xmpps-server`.
        self.prosody_direct_port = free_port(self.net.ip[PROSODY])
        self.dns = Dns(directory, self.net.dns, records,
                       direct={PROSODY: self.prosody_direct_port})

        self.peers: dict[str, Peer] = {}

    def start_prosody(self):
        d = self.dir / "prosody"
        d.mkdir()
        self.peers[PROSODY] = Prosody(d, self.ca, self.net, self.dns.resolv,
                                      self.prosody_direct_port)

    def start_ejabberd(self):
        self.peers[EJABBERD] = Ejabberd(self.ca, self.net, self.dns.resolv)

    def stop(self):
        for p in self.peers.values():
            p.stop()
        self.dns.stop()


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = Fed(tmp_path_factory.mktemp("fed"))
    try:
        f.start_prosody()
        f.start_ejabberd()
        yield f
    finally:
        f.stop()
        for p in f.peers.values():
            print(f"--- {p.domain} log (tail) ---\n{p.log_tail()}")


@pytest.fixture(scope="module")
def fkith(fed, tmp_path_factory):
    """Kith for kith.fedtest with alice and bob, shared by the module's tests."""
    d = tmp_path_factory.mktemp("kith")
    k = FedKith(d, fed.ca, fed.net, fed.dns.resolv)
    for u in ("alice", "bob", "carol", "dave"):
        k.add_user(u)
    k.start()
    try:
        yield k
    finally:
        k.stop()
        print(f"--- kith log (tail) ---\n{k.log_tail(80)}")


# --------------------------------------------------------------------------- clients


class FedClient(Client):
    """A slixmpp client of any of the servers, verifying its certificate with the test CA."""

    async def login(self, timeout: float = STEP):
        host = getattr(self.kith, "host", "127.0.0.1")
        self.connect(host, self.kith.c2s_port)
        try:
            await asyncio.wait_for(asyncio.shield(self.session), timeout)
        except BaseException:
            self.abort()
            raise
        return self


@contextlib.asynccontextmanager
async def on(server, jid: str, *, presence: bool = True):
    c = FedClient(server, jid)
    c.register_plugin("xep_0045")
    try:
        await c.login()
        await c.get_roster(timeout=STEP)
        if presence:
            c.send_presence()
            # A round trip: once the ping is answered the presence was handled.
            await c.plugin["xep_0199"].ping(c.boundjid.domain, timeout=STEP)
        yield c
    finally:
        await c.close()


def peer(fed, name):
    return fed.peers[name]


PEERS = [PROSODY, EJABBERD]


async def expect_body(c: Client, body: str, sender: str):
    msg = await c.next_message(timeout=STEP * 2)
    assert msg["body"] == body, f"{msg}"
    assert msg["from"].bare == sender, f"from {msg['from']}"
    return msg


async def subscribe_both_ways(a: Client, b: Client):
    """a and b become mutual contacts, each approving the other's request."""
    a.send_presence(pto=b.boundjid.bare, ptype="subscribe")
    req = await b.next_presence(lambda p: p["type"] == "subscribe", timeout=STEP * 2)
    assert req["from"].bare == a.boundjid.bare
    b.send_presence(pto=a.boundjid.bare, ptype="subscribed")
    await a.next_presence(lambda p: p["type"] == "subscribed", timeout=STEP * 2)
    b.send_presence(pto=a.boundjid.bare, ptype="subscribe")
    req = await a.next_presence(lambda p: p["type"] == "subscribe", timeout=STEP * 2)
    a.send_presence(pto=b.boundjid.bare, ptype="subscribed")
    await b.next_presence(lambda p: p["type"] == "subscribed", timeout=STEP * 2)


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("name", PEERS)
def test_messages_cross_both_ways(fed, fkith, name):
    p = peer(fed, name)

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice, on(p, f"pat@{p.domain}") as pat:
            body = f"hello from kith {secrets.token_hex(3)}"
            alice.send_message(mto=f"pat@{p.domain}", mbody=body, mtype="chat")
            await expect_body(pat, body, f"alice@{KITH}")
            body = f"hello from {name} {secrets.token_hex(3)}"
            pat.send_message(mto=f"alice@{KITH}", mbody=body, mtype="chat")
            msg = await expect_body(alice, body, f"pat@{p.domain}")
            # Archived in alice's history (XEP-0313) before delivery: the archive id.
            sid = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
            assert sid is not None and sid.get("by") == f"alice@{KITH}", msg

    run(scenario(), 90)
    log = fkith.log_text()
    assert f"outgoing stream authenticated domain={p.domain}" in log
    assert re.search(f"incoming stream authenticated .*domain={p.domain}", log)
    if name == PROSODY:  # found by its _xmpps-server SRV record
        assert f'domain={PROSODY} direct_tls=true method="SASL EXTERNAL"' in log


@pytest.mark.parametrize("name", PEERS)
def test_subscription_and_presence_both_ways(fed, fkith, name):
    p = peer(fed, name)

    async def scenario():
        async with on(fkith, f"bob@{KITH}") as bob, on(p, f"quinn@{p.domain}") as quinn:
            await subscribe_both_ways(bob, quinn)
            status = f"at the lake {secrets.token_hex(2)}"
            bob.send_presence(pstatus=status)
            got = await quinn.next_presence(
                lambda x: x["from"].bare == bob.boundjid.bare and x["status"] == status,
                timeout=STEP * 2)
            assert got["type"] == "available"
            status = f"in the garden {secrets.token_hex(2)}"
            quinn.send_presence(pstatus=status)
            got = await bob.next_presence(
                lambda x: x["from"].bare == quinn.boundjid.bare and x["status"] == status,
                timeout=STEP * 2)
            assert bob.client_roster[quinn.boundjid.bare]["subscription"] == "both"
            assert quinn.client_roster[bob.boundjid.bare]["subscription"] == "both"

    run(scenario(), 120)


@pytest.mark.parametrize("name", PEERS)
def test_vcard_disco_ping_across(fed, fkith, name):
    p = peer(fed, name)

    async def scenario():
        async with on(fkith, f"carol@{KITH}") as carol, on(p, f"pat@{p.domain}") as pat:
            vc = carol.plugin["xep_0054"].make_vcard()
            vc["FN"] = "Carol of Kith"
            await carol.plugin["xep_0054"].publish_vcard(vc, timeout=STEP)
            got = await pat.plugin["xep_0054"].get_vcard(f"carol@{KITH}", cached=False,
                                                          timeout=STEP * 2)
            assert got["vcard_temp"]["FN"] == "Carol of Kith"
            info = await pat.plugin["xep_0030"].get_info(jid=KITH, timeout=STEP * 2)
            assert "urn:xmpp:ping" in info["disco_info"]["features"]
            await pat.plugin["xep_0199"].ping(KITH, timeout=STEP * 2)
            info = await carol.plugin["xep_0030"].get_info(jid=p.domain, timeout=STEP * 2)
            assert info["disco_info"]["features"], info
            await carol.plugin["xep_0199"].ping(p.domain, timeout=STEP * 2)

    run(scenario(), 90)


@pytest.mark.parametrize("name", PEERS)
def test_message_to_an_offline_kith_user_waits(fed, fkith, name):
    p = peer(fed, name)
    user = f"off{name.split('.')[0]}"
    fkith.add_user(user)

    async def scenario():
        body = f"while you were out {secrets.token_hex(3)}"
        async with on(p, f"pat@{p.domain}") as pat:
            pat.send_message(mto=f"{user}@{KITH}", mbody=body, mtype="chat")
            # A round trip over the same s2s link: the message is handled before the pong.
            await pat.plugin["xep_0199"].ping(KITH, timeout=STEP * 2)
        async with on(fkith, f"{user}@{KITH}") as me:
            msg = await expect_body(me, body, f"pat@{p.domain}")
            assert msg["delay"]["stamp"] is not None

    run(scenario(), 90)


@pytest.mark.parametrize("name", PEERS)
def test_kith_user_joins_a_room_on_the_peer(fed, fkith, name):
    p = peer(fed, name)
    room = f"garden{secrets.token_hex(2)}@conference.{p.domain}"

    async def scenario():
        async with on(p, f"pat@{p.domain}") as pat, on(fkith, f"alice@{KITH}") as alice:
            muc_p, muc_a = pat.plugin["xep_0045"], alice.plugin["xep_0045"]
            await muc_p.join_muc_wait(room, "pat", maxstanzas=0, timeout=STEP * 2)
            form = await muc_p.get_room_config(room)
            form["type"] = "submit"
            await muc_p.set_room_config(room, form)
            await muc_a.join_muc_wait(room, "alice", maxstanzas=0, timeout=STEP * 2)
            body = f"hello room {secrets.token_hex(3)}"
            pat.send_message(mto=room, mbody=body, mtype="groupchat")
            deadline = asyncio.get_running_loop().time() + STEP * 2
            while True:
                msg = await alice.next_message(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
                if msg["body"] == body:
                    assert msg["type"] == "groupchat" and msg["from"].resource == "pat"
                    break

    run(scenario(), 90)


# --------------------------------------------------------------------------- refusals


class FakePeer(threading.Thread):
    """A hand-written 'server' for one domain: offers STARTTLS and then presents
    `cert` (a certificate for another domain), or offers no TLS at all (`cert=None`).
    Records what it received."""

    def __init__(self, fed, domain: str, cert: tuple[Path, Path] | None):
        super().__init__(daemon=True)
        self.domain = domain
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*cert)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((fed.net.ip[domain], fed.net.port(domain)))
        self.sock.listen(4)
        self.sock.settimeout(STEP * 3)
        self.received = b""
        self.handshake_error: str | None = None
        self.start()

    def _read_until(self, conn, marker: bytes):
        while marker not in self.received:
            data = conn.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.received += data

    def run(self):
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            conn, _ = self.sock.accept()
            conn.settimeout(STEP)
            self._read_until(conn, b"<stream:stream")
            self._read_until(conn, b">")
            conn.sendall(f"<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' "
                         f"xmlns:stream='{NS_STREAM}' from='{self.domain}' id='fake1' "
                         f"version='1.0'>".encode())
            if self.ctx is None:
                conn.sendall(b"<stream:features/>")
                while conn.recv(4096):
                    pass
                return
            conn.sendall(f"<stream:features><starttls xmlns='{NS_TLS}'><required/></starttls>"
                         f"</stream:features>".encode())
            self._read_until(conn, b"starttls")
            conn.sendall(f"<proceed xmlns='{NS_TLS}'/>".encode())
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
                tls.recv(4096)
            except (ssl.SSLError, OSError) as e:
                self.handshake_error = str(e)

    def stop(self):
        self.sock.close()
        self.join(STEP)


def s2s_header(frm: str, to: str = KITH) -> str:
    return (f"<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' "
            f"xmlns:stream='{NS_STREAM}' xmlns:db='{NS_DB}' from='{frm}' to='{to}' "
            f"version='1.0'>")


def raw_peer(fed, fkith, frm: str, cert: tuple[Path, Path] | None = None, to: str = KITH):
    """A raw s2s connection to Kith's domain `to` claiming `frm`, after STARTTLS
    (presenting `cert`); returns it and the features of the encrypted stream."""
    r = RawXmpp(fkith.s2s_port, host=fed.net.ip[KITH])
    r.send(s2s_header(frm, to))
    feats = r.features()
    assert feats.find(f"{{{NS_TLS}}}starttls/{{{NS_TLS}}}required") is not None
    r.send(f"<starttls xmlns='{NS_TLS}'/>")
    r.expect(f"{{{NS_TLS}}}proceed")
    ctx = ssl.create_default_context(cafile=str(fed.ca.ca_cert))
    if cert:
        ctx.load_cert_chain(*cert)
    r.sock = ctx.wrap_socket(r.sock, server_hostname=to)
    r.raw = b""
    r._new_parser()
    r.send(s2s_header(frm, to))
    return r, r.features()


def stream_error(r: RawXmpp) -> str:
    el = r.element()
    assert el.tag == f"{{{NS_STREAM}}}error", ET.tostring(el)
    return el[0].tag.split("}")[1]


async def bounced(c: Client, to: str) -> str:
    """Send a chat message to `to`; return the error condition that comes back."""
    c.send_message(mto=to, mbody="are you there?", mtype="chat")
    while True:
        msg = await c.next_message(timeout=STEP * 2, body_only=False)
        if msg["type"] == "error":
            return msg["error"]["condition"]


def test_a_peer_presenting_a_certificate_for_another_domain_is_refused(fed, fkith):
    fake = FakePeer(fed, EVIL, (fed.other_cert, fed.other_key))

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            assert await bounced(alice, f"mallory@{EVIL}") == "remote-server-not-found"

    try:
        run(scenario(), 60)
    finally:
        fake.stop()
    assert b"<message" not in fake.received, "a stanza went to an unauthenticated peer"
    assert "REFUSED: TLS with the peer failed" in fkith.log_text()

    # Incoming: the same certificate cannot authenticate evil.fedtest either.
    r, feats = raw_peer(fed, fkith, EVIL, (fed.other_cert, fed.other_key))
    assert feats.find(f"{{{NS_SASL}}}mechanisms") is None, "EXTERNAL offered for a bad cert"
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert r.element().tag == f"{{{NS_SASL}}}failure"
    r.send(f"<db:result from='{EVIL}' to='{KITH}'>0123456789abcdef</db:result>")
    res = r.element()
    assert res.tag == f"{{{NS_DB}}}result" and res.get("type") != "valid", ET.tostring(res)
    r.send(f"<message xmlns='{NS_SERVER}' from='m@{EVIL}' to='alice@{KITH}'><body>x</body>"
           "</message>")
    assert stream_error(r) == "not-authorized"


def test_a_peer_offering_no_tls_is_refused(fed, fkith):
    fake = FakePeer(fed, NOTLS, None)

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            assert await bounced(alice, f"nobody@{NOTLS}") == "remote-server-not-found"

    try:
        run(scenario(), 60)
    finally:
        fake.stop()
    assert b"<message" not in fake.received
    assert "offers no TLS" in fkith.log_text()

    # Incoming: a peer that does not start TLS gets nothing but a stream error.
    r = RawXmpp(fkith.s2s_port, host=fed.net.ip[KITH])
    r.send(s2s_header(RAW))
    r.features()
    r.send(f"<message xmlns='{NS_SERVER}' from='x@{RAW}' to='alice@{KITH}'><body>x</body>"
           "</message>")
    assert stream_error(r) == "policy-violation"


def test_a_stanza_from_a_domain_the_stream_did_not_authenticate_closes_it(fed, fkith):
    r, feats = raw_peer(fed, fkith, RAW, (fed.raw_cert, fed.raw_key))
    mechs = [m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")]
    assert mechs == ["EXTERNAL"], ET.tostring(feats)
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>"
           f"{base64.b64encode(RAW.encode()).decode()}</auth>")
    assert r.element().tag == f"{{{NS_SASL}}}success"
    r._new_parser()
    r.send(s2s_header(RAW))
    r.features()

    async def scenario():
        async with on(fkith, f"bob@{KITH}") as bob:
            r.send(f"<message xmlns='{NS_SERVER}' type='chat' from='ray@{RAW}/x' "
                   f"to='bob@{KITH}'><body>legit</body></message>")
            await expect_body(bob, "legit", f"ray@{RAW}")
            r.send(f"<message xmlns='{NS_SERVER}' type='chat' from='pat@{PROSODY}/x' "
                   f"to='bob@{KITH}'><body>spoofed</body></message>")
            assert await asyncio.to_thread(stream_error, r) == "invalid-from"
            await bob.expect_no_message(1.0)

    run(scenario(), 60)


def test_dialback_verify_for_a_stream_kith_never_opened_is_refused(fed, fkith):
    r, _ = raw_peer(fed, fkith, RAW)
    r.send(f"<db:verify from='{RAW}' to='{KITH}' id='d3adb33f'>"
           f"{secrets.token_hex(32)}</db:verify>")
    v = r.element()
    assert v.tag == f"{{{NS_DB}}}verify", ET.tostring(v)
    assert v.get("type") == "invalid" and v.get("id") == "d3adb33f"
    assert "dialback verify refused" in fkith.log_text()


class DialbackPeer(threading.Thread):
    """db.fedtest: takes Kith's outgoing stream with TLS and dialback only (no SASL), and
    checks Kith's key the XEP-0220 way: a second connection to Kith asking
    `<db:verify/>` for the stream id it gave — and once more with a wrong key.
    `local`: the Kith domain the stream comes from (Kith's own, or its group chat
    service's); `until` ends what it reads, then it sends `reply` (if any) back."""

    STREAM_ID = "dbstream42"

    def __init__(self, fed, fkith, local: str = KITH, until: bytes = b"</message>",
                 reply: str | None = f"<message xmlns='{NS_SERVER}' type='chat' "
                 f"from='dora@{DIALBACK}/x' to='alice@{KITH}'><body>bidi reply</body>"
                 "</message>", linger: bytes | None = None):
        super().__init__(daemon=True)
        self.fed, self.fkith = fed, fkith
        self.local, self.until, self.reply, self.linger = local, until, reply, linger
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(fed.db_cert, fed.db_key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((fed.net.ip[DIALBACK], fed.net.port(DIALBACK)))
        self.sock.listen(4)
        self.sock.settimeout(STEP * 3)
        self.received = b""
        self.verdicts: dict[str, str | None] = {}
        self.error: BaseException | None = None
        self.start()

    def _until(self, conn, marker: bytes, start: int = 0) -> int:
        while self.received.find(marker, start) < 0:
            data = conn.recv(4096)
            if not data:
                raise ConnectionError(f"closed waiting for {marker!r}")
            self.received += data
        return self.received.find(marker, start) + len(marker)

    def _header(self) -> bytes:
        return (f"<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream="
                f"'{NS_STREAM}' xmlns:db='{NS_DB}' from='{DIALBACK}' id='{self.STREAM_ID}' "
                "version='1.0'>").encode()

    def _verify(self, key: str) -> str | None:
        r, _ = raw_peer(self.fed, self.fkith, DIALBACK, (self.fed.db_cert, self.fed.db_key),
                        to=self.local)
        r.send(f"<db:verify from='{DIALBACK}' to='{self.local}' id='{self.STREAM_ID}'>{key}"
               "</db:verify>")
        v = r.element()
        r.sock.close()
        return v.get("type")

    def run(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(STEP)
            at = self._until(conn, b">", self._until(conn, b"<stream:stream"))
            conn.sendall(self._header() + f"<stream:features><starttls xmlns='{NS_TLS}'>"
                         "<required/></starttls></stream:features>".encode())
            self._until(conn, b"starttls", at)
            conn.sendall(f"<proceed xmlns='{NS_TLS}'/>".encode())
            conn = self.ctx.wrap_socket(conn, server_side=True)
            self.received = b""
            self._until(conn, b">", self._until(conn, b"<stream:stream"))
            conn.sendall(self._header() + b"<stream:features><dialback xmlns="
                         b"'urn:xmpp:features:dialback'><errors/></dialback>"
                         b"<bidi xmlns='urn:xmpp:features:bidi'/></stream:features>")
            end = self._until(conn, b"</db:result>")
            m = re.search(rb"from='([^']+)'[^>]*>([0-9a-f]+)</db:result>", self.received[:end])
            self.originating, key = m.group(1).decode(), m.group(2).decode()
            self.verdicts["wrong key"] = self._verify("0" * len(key))
            self.verdicts["right key"] = self._verify(key)
            ok = self.verdicts["right key"] == "valid"
            conn.sendall(f"<db:result xmlns:db='{NS_DB}' from='{DIALBACK}' to='{self.local}' "
                         f"type='{'valid' if ok else 'invalid'}'/>".encode())
            at = self._until(conn, self.until, end)
            if self.reply:
                # XEP-0288: Kith asked for bidi, so the answer travels on the same stream.
                conn.sendall(self.reply.encode())
            if self.linger:
                # Stay connected until Kith has sent this too: closing earlier races
                # Kith's next writes against its reading of the reply.
                self._until(conn, self.linger, at)
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self):
        self.sock.close()
        self.join(STEP * 3)


def test_dialback_with_a_server_that_has_no_sasl_external(fed, fkith):
    """Kith authenticates with a dialback key that only it could have made; the key is
    confirmed for the stream Kith opened and refused when it is wrong. The peer offered
    bidi (XEP-0288): its answer comes back on Kith's own stream."""
    peer = DialbackPeer(fed, fkith)

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            alice.send_message(mto=f"dora@{DIALBACK}", mbody="dialback works", mtype="chat")
            await asyncio.to_thread(peer.join, STEP * 3)
            assert peer.error is None, f"{peer.error!r}; received {peer.received[-500:]!r}"
            await expect_body(alice, "bidi reply", f"dora@{DIALBACK}")

    try:
        run(scenario(), 60)
    finally:
        peer.stop()
    assert peer.error is None, f"{peer.error!r}; received {peer.received[-500:]!r}"
    assert peer.verdicts == {"wrong key": "invalid", "right key": "valid"}
    assert b"dialback works" in peer.received
    assert b"urn:xmpp:bidi" in peer.received, "Kith did not ask for a bidirectional stream"
    assert re.search(f'outgoing stream authenticated domain={DIALBACK} .*method="dialback"',
                     fkith.log_text())


def test_direct_tls_listener_takes_a_server(fed, fkith):
    """XEP-0368: TLS from the first byte with ALPN xmpp-server, then SASL EXTERNAL."""
    ctx = ssl.create_default_context(cafile=str(fed.ca.ca_cert))
    ctx.set_alpn_protocols(["xmpp-server"])
    ctx.load_cert_chain(fed.raw_cert, fed.raw_key)
    r = RawXmpp(fkith.s2s_tls_port, host=fed.net.ip[KITH])
    r.sock = ctx.wrap_socket(r.sock, server_hostname=KITH)
    assert r.sock.selected_alpn_protocol() == "xmpp-server"
    r.send(s2s_header(RAW))
    feats = r.features()
    assert [m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")] == ["EXTERNAL"]
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert r.element().tag == f"{{{NS_SASL}}}success"


def test_admin_policy_deny_list(fed, tmp_path):
    """A denied domain can neither be written to nor come in; both are logged."""
    (tmp_path / "strict").mkdir()
    k = FedKith(tmp_path / "strict", fed.ca, fed.net, fed.dns.resolv, primary=False,
                deny=[PROSODY, RAW])
    k.add_user("alice")
    k.start()
    try:
        async def scenario():
            async with on(k, f"alice@{KITH}") as alice:
                assert await bounced(alice, f"pat@{PROSODY}") == "not-allowed"

        run(scenario(), 60)
        r, feats = raw_peer(fed, k, RAW, (fed.raw_cert, fed.raw_key))
        r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
        assert r.element().tag == f"{{{NS_SASL}}}failure"
        log = k.log_text()
        assert f"outgoing stanza refused by policy domain={PROSODY}" in log
        assert f'domain={RAW} reason="the domain is on the deny list"' in log
    finally:
        k.stop()


def authenticated_raw_peer(fed, fkith) -> RawXmpp:
    """raw.fedtest, authenticated to Kith with SASL EXTERNAL, stream restarted."""
    r, _ = raw_peer(fed, fkith, RAW, (fed.raw_cert, fed.raw_key))
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert r.element().tag == f"{{{NS_SASL}}}success"
    r._new_parser()
    r.send(s2s_header(RAW))
    r.features()
    return r


def test_stanzas_from_servers_are_bounded_at_512_kib(fed, fkith):
    r = authenticated_raw_peer(fed, fkith)

    async def scenario():
        async with on(fkith, f"carol@{KITH}") as carol:
            big = "a" * (300 * 1024)  # above the 256 KiB client limit, below 512 KiB
            r.send(f"<message xmlns='{NS_SERVER}' type='chat' from='ray@{RAW}/x' "
                   f"to='carol@{KITH}'><body>{big}</body></message>")
            msg = await carol.next_message(timeout=STEP * 2)
            assert len(msg["body"]) == len(big)
            huge = "b" * (600 * 1024)
            await asyncio.to_thread(
                r.send, f"<message xmlns='{NS_SERVER}' type='chat' from='ray@{RAW}/x' "
                f"to='carol@{KITH}'><body>{huge}</body></message>")
            assert await asyncio.to_thread(stream_error, r) == "policy-violation"
            await carol.expect_no_message(1.0)

    run(scenario(), 60)
    assert fkith.alive()


def test_idle_server_connections_are_closed(fed, tmp_path):
    (tmp_path / "idle").mkdir()
    k = FedKith(tmp_path / "idle", fed.ca, fed.net, fed.dns.resolv, primary=False,
                idle_timeout_secs=1)
    k.start()
    try:
        r = authenticated_raw_peer(fed, k)
        r.read_until_closed(timeout=STEP)
        assert "idle incoming stream closed" in k.log_text()
    finally:
        k.stop()


def test_a_bidirectional_stream_carries_kiths_stanzas_back(fed, fkith):
    """XEP-0288: a server that asked for bidi gets Kith's stanzas on its own stream
    (raw.fedtest has no DNS record: without bidi Kith could not reach it at all)."""
    r, feats = raw_peer(fed, fkith, RAW, (fed.raw_cert, fed.raw_key))
    assert feats.find("{urn:xmpp:features:bidi}bidi") is not None, ET.tostring(feats)
    r.send("<bidi xmlns='urn:xmpp:bidi'/>")
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert r.element().tag == f"{{{NS_SASL}}}success"
    r._new_parser()
    r.send(s2s_header(RAW))
    r.features()

    async def scenario():
        async with on(fkith, f"carol@{KITH}") as carol:
            carol.send_message(mto=f"ray@{RAW}", mbody="over your own stream", mtype="chat")
            msg = await asyncio.to_thread(r.element)
            assert msg.tag == f"{{{NS_SERVER}}}message", ET.tostring(msg)
            assert msg.get("from").startswith(f"carol@{KITH}/")
            assert msg.findtext(f"{{{NS_SERVER}}}body") == "over your own stream"

    run(scenario(), 60)


def test_federation_off_and_per_domain_limit(fed, tmp_path):
    """`enabled = false`: no s2s listener, remote stanzas bounce. And a domain gets at
    most `connections_per_domain` authenticated incoming streams."""
    (tmp_path / "off").mkdir()
    off = FedKith(tmp_path / "off", fed.ca, fed.net, fed.dns.resolv, primary=False,
                  enabled=False)
    off.add_user("alice")
    off._start_once = lambda extra_env, k=off: FedKith._start_c2s_only(k)
    off.start()
    try:
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((fed.net.ip[KITH], off.s2s_port)) != 0, "s2s listening"

        async def scenario():
            async with on(off, f"alice@{KITH}") as alice:
                assert await bounced(alice, f"pat@{PROSODY}") == "remote-server-not-found"

        run(scenario(), 60)
        assert "federation is turned off" in off.log_text()
    finally:
        off.stop()

    (tmp_path / "one").mkdir()
    one = FedKith(tmp_path / "one", fed.ca, fed.net, fed.dns.resolv, primary=False,
                  connections_per_domain=1)
    one.start()
    try:
        first = authenticated_raw_peer(fed, one)
        r, _ = raw_peer(fed, one, RAW, (fed.raw_cert, fed.raw_key))
        r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
        assert r.element().tag == f"{{{NS_SASL}}}failure"
        assert "too many connections from this domain" in one.log_text()
        first.sock.close()
    finally:
        one.stop()


class AuthoritativeFake(threading.Thread):
    """evil.fedtest's 'authoritative server' for dialback: answers one `<db:verify/>`,
    valid only for `key`. Its certificate is for other.fedtest (the domain is insecure)."""

    def __init__(self, fed, key: str):
        super().__init__(daemon=True)
        self.key = key
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(fed.other_cert, fed.other_key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((fed.net.ip[EVIL], fed.net.port(EVIL)))
        self.sock.listen(4)
        self.sock.settimeout(STEP * 3)
        self.received = b""
        self.error: BaseException | None = None
        self.start()

    def _until(self, conn, marker: bytes, start: int = 0) -> int:
        while self.received.find(marker, start) < 0:
            data = conn.recv(4096)
            if not data:
                raise ConnectionError(f"closed waiting for {marker!r}")
            self.received += data
        return self.received.find(marker, start) + len(marker)

    def run(self):
        header = (f"<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream="
                  f"'{NS_STREAM}' xmlns:db='{NS_DB}' from='{EVIL}' id='auth1' "
                  "version='1.0'>").encode()
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(STEP)
            at = self._until(conn, b">", self._until(conn, b"<stream:stream"))
            conn.sendall(header + f"<stream:features><starttls xmlns='{NS_TLS}'><required/>"
                         "</starttls></stream:features>".encode())
            self._until(conn, b"starttls", at)
            conn.sendall(f"<proceed xmlns='{NS_TLS}'/>".encode())
            conn = self.ctx.wrap_socket(conn, server_side=True)
            self.received = b""
            self._until(conn, b">", self._until(conn, b"<stream:stream"))
            conn.sendall(header + b"<stream:features><dialback xmlns="
                         b"'urn:xmpp:features:dialback'/></stream:features>")
            end = self._until(conn, b"</db:verify>")
            m = re.search(rb"<db:verify[^>]* id='([^']+)'[^>]*>([^<]*)</db:verify>",
                          self.received[:end])
            sid, key = m.group(1).decode(), m.group(2).decode()
            ok = "valid" if key == self.key else "invalid"
            conn.sendall(f"<db:verify xmlns:db='{NS_DB}' from='{EVIL}' to='{KITH}' "
                         f"id='{sid}' type='{ok}'/>".encode())
            with contextlib.suppress(OSError):
                conn.recv(4096)
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self):
        self.sock.close()
        self.join(STEP)


def test_an_insecure_domain_is_accepted_by_dialback_alone_and_logged(fed, tmp_path):
    """`insecure_domains`: a certificate for the wrong name is tolerated, but only once
    the domain's own server (found in DNS) confirms the dialback key."""
    (tmp_path / "lax").mkdir()
    k = FedKith(tmp_path / "lax", fed.ca, fed.net, fed.dns.resolv, primary=False,
                insecure_domains=[EVIL])
    k.add_user("alice")
    k.start()
    key = secrets.token_hex(32)
    auth = AuthoritativeFake(fed, key)
    try:
        async def scenario():
            async with on(k, f"alice@{KITH}") as alice:
                r, feats = await asyncio.to_thread(
                    raw_peer, fed, k, EVIL, (fed.other_cert, fed.other_key))
                assert feats.find(f"{{{NS_SASL}}}mechanisms") is None
                r.send(f"<db:result from='{EVIL}' to='{KITH}'>{key}</db:result>")
                res = await asyncio.to_thread(r.element)
                assert res.get("type") == "valid", ET.tostring(res)
                r.send(f"<message xmlns='{NS_SERVER}' type='chat' from='eve@{EVIL}/x' "
                       f"to='alice@{KITH}'><body>tolerated</body></message>")
                await expect_body(alice, "tolerated", f"eve@{EVIL}")

        run(scenario(), 60)
        assert auth.error is None, repr(auth.error)
        assert b"</db:verify>" in auth.received
        log = k.log_text()
        assert "INSECURE: invalid certificate tolerated" in log
        assert re.search(f'incoming stream authenticated .*domain={EVIL} method="dialback '
                         r'\(INSECURE', log)
    finally:
        auth.stop()
        k.stop()


# --------------------------------------------------------------------------- PEP across servers

NICK = "http://jabber.org/protocol/nick"


async def pep_ready(c: Client):
    """Advertise `nick+notify` in the client's entity capabilities (XEP-0115) and go online."""
    for plugin in ("xep_0115", "xep_0163", "xep_0060", "xep_0172"):
        c.register_plugin(plugin)
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    c.send_presence()
    await c.plugin["xep_0199"].ping(c.boundjid.domain, timeout=STEP)


async def nick_from(events: asyncio.Queue, who: str, nick: str):
    """Wait for `who`'s nickname event carrying `nick` (a last item sent earlier may come
    first)."""
    async def wait():
        while True:
            kind, msg = await events.get()
            items = msg["pubsub_event"]["items"]
            if (kind == "publish" and msg["from"].bare == who and items["node"] == NICK
                    and items["item"]["nick"]["nick"] == nick):
                return msg
    return await asyncio.wait_for(wait(), STEP * 3)


@pytest.mark.parametrize("name", PEERS)
def test_pep_nicknames_cross_to_contacts_and_not_to_strangers(fed, fkith, name):
    """XEP-0163 across federation: dave (Kith) and quinn (the peer) share presence; each
    one's new nickname reaches the other's client, which asked for it with `nick+notify`;
    quinn may read dave's presence-model node, pat (no subscription) may not."""
    p = peer(fed, name)
    dave_jid, quinn_jid = f"dave@{KITH}", f"quinn@{p.domain}"

    async def scenario():
        async with on(fkith, dave_jid, presence=False) as dave, \
                on(p, quinn_jid, presence=False) as quinn, on(p, f"pat@{p.domain}") as pat:
            await pep_ready(dave)
            await pep_ready(quinn)
            ev_dave, ev_quinn = pep_events(dave), pep_events(quinn)
            await subscribe_both_ways(dave, quinn)

            nick = f"Dave {secrets.token_hex(2)}"
            await dave.plugin["xep_0172"].publish_nick(nick, timeout=STEP)
            await nick_from(ev_quinn, dave_jid, nick)

            theirs = f"Quinn {secrets.token_hex(2)}"
            await quinn.plugin["xep_0172"].publish_nick(theirs, timeout=STEP)
            await nick_from(ev_dave, quinn_jid, theirs)

            items = await quinn.plugin["xep_0060"].get_items(dave_jid, NICK, timeout=STEP * 2)
            assert [x.text for _, x in item_payloads(items)] == [nick]
            with pytest.raises(IqError) as e:
                await pat.plugin["xep_0060"].get_items(dave_jid, NICK, timeout=STEP * 2)
            assert stanza_error(e.value) == ("not-authorized", "presence-subscription-required")

    run(scenario(), 120)


# --------------------------------------------------------------------------- Kith's group chats

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_MUC_ADMIN = f"{NS_MUC}#admin"


def muc_codes(p) -> set[int]:
    x = p.xml.find(f"{{{NS_MUC_USER}}}x")
    return set() if x is None else {int(s.get("code")) for s in x.findall(f"{{{NS_MUC_USER}}}status")}


def muc_item(p):
    x = p.xml.find(f"{{{NS_MUC_USER}}}x")
    return None if x is None else x.find(f"{{{NS_MUC_USER}}}item")


async def enter_room(c: Client, room: str, nick: str, *, expect_error: str | None = None):
    """Send the entrance presence. Returns the self-presence (status 110) and the presences
    of the occupants already there, by nick, which come before it (XEP-0045 §7.2.3)."""
    p = c.make_presence(pto=f"{room}/{nick}")
    p.xml.append(p.xml.makeelement(f"{{{NS_MUC}}}x", {}))
    p.send()
    others = {}
    while True:
        q = await c.next_presence(lambda q: q["from"].bare == room, timeout=STEP * 2)
        if q["type"] == "error":
            assert expect_error, f"could not enter {room} as {nick}: {q}"
            assert q["error"]["condition"] == expect_error, q
            return q, others
        if q["from"].resource == nick and 110 in muc_codes(q):
            assert not expect_error, f"expected {expect_error}, entered: {q}"
            return q, others
        others[q["from"].resource] = q


async def create_room(owner: Client, name: str, nick: str, **fields) -> str:
    """The Kith user `owner` creates room `name` on Kith and submits its form (the
    household defaults plus `fields`)."""
    room = f"{name}@{GROUPS}"
    me, _ = await enter_room(owner, room, nick)
    assert 201 in muc_codes(me), muc_codes(me)
    form = await owner.plugin["xep_0045"].get_room_config(JID(room))
    form.set_values({**form.get_values(), **fields})
    form["type"] = "submit"
    await owner.plugin["xep_0045"].set_room_config(JID(room), form)
    return room


async def room_message(c: Client, room: str, body: str | None = None, *, private=False):
    """The next message from `room` (with `body`, if given); a groupchat one, or a private
    message through the room."""
    deadline = asyncio.get_running_loop().time() + STEP * 2
    while True:
        left = max(0.1, deadline - asyncio.get_running_loop().time())
        m = await c.next_message(timeout=left)
        if m["from"].bare != room or (body is not None and m["body"] != body):
            continue
        assert m["type"] == ("chat" if private else "groupchat"), m
        return m


async def left_room(c: Client, room: str, nick: str, code: int | None = None):
    """Wait until `c` sees `nick` leave `room` (with status `code`)."""
    return await c.next_presence(
        lambda q: q["from"] == JID(f"{room}/{nick}") and q["type"] == "unavailable"
        and (code is None or code in muc_codes(q)), timeout=STEP * 2)


@pytest.mark.parametrize("name", PEERS)
def test_people_on_other_servers_join_an_open_kith_room(fed, fkith, name):
    """A user of Prosody / ejabberd enters a room on groups.kith.fedtest: sees who is there
    with their roles, gets the history, talks with a Kith occupant both ways (room and
    private messages), is kicked by the owner and, back in, leaves in view of everyone."""
    p = peer(fed, name)
    room_name = f"porch{secrets.token_hex(3)}"

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice, on(fkith, f"bob@{KITH}") as bob, \
                on(p, f"pat@{p.domain}") as pat:
            room = await create_room(alice, room_name, "mum",
                                     **{"muc#roomconfig_membersonly": False})
            await enter_room(bob, room, "bob")
            for i in range(3):
                alice.send_message(mto=room, mbody=f"earlier {i}", mtype="groupchat")
                await room_message(alice, room, f"earlier {i}")

            me, others = await enter_room(pat, room, "pat")
            assert {110, 100} <= muc_codes(me), muc_codes(me)  # 100: the room is non-anonymous
            assert muc_item(me).get("affiliation") == "none"
            assert muc_item(me).get("role") == "participant"
            assert muc_item(me).get("jid") == str(pat.boundjid)
            assert set(others) == {"mum", "bob"}, others
            assert muc_item(others["mum"]).get("affiliation") == "owner"
            assert muc_item(others["mum"]).get("role") == "moderator"
            assert JID(muc_item(others["mum"]).get("jid")).bare == f"alice@{KITH}"
            for i in range(3):
                h = await room_message(pat, room)
                assert h["body"] == f"earlier {i}" and h["from"].resource == "mum", h
                assert h.xml.find("{urn:xmpp:delay}delay") is not None, h
            seen = await bob.next_presence(lambda q: q["from"] == JID(f"{room}/pat"),
                                           timeout=STEP * 2)
            assert muc_item(seen).get("jid") == str(pat.boundjid)

            body = f"hello from {name} {secrets.token_hex(2)}"
            pat.send_message(mto=room, mbody=body, mtype="groupchat")
            got = await room_message(bob, room, body)
            assert got["from"].resource == "pat"
            await room_message(pat, room, body)  # the room's echo
            body = f"hello from kith {secrets.token_hex(2)}"
            bob.send_message(mto=room, mbody=body, mtype="groupchat")
            got = await room_message(pat, room, body)
            assert got["from"].resource == "bob"

            pat.send_message(mto=f"{room}/bob", mbody="just you", mtype="chat")
            got = await room_message(bob, room, "just you", private=True)
            assert got["from"].resource == "pat"
            bob.send_message(mto=f"{room}/pat", mbody="just you too", mtype="chat")
            got = await room_message(pat, room, "just you too", private=True)
            assert got["from"].resource == "bob"

            await alice.plugin["xep_0045"].set_role(JID(room), "pat", "none", reason="time out")
            kicked = await left_room(pat, room, "pat", 307)
            assert 110 in muc_codes(kicked)
            assert 307 in muc_codes(await left_room(bob, room, "pat"))

            await enter_room(pat, room, "pat")
            pat.send_presence(pto=f"{room}/pat", ptype="unavailable", pstatus="see you")
            gone = await left_room(bob, room, "pat")
            assert gone["status"] == "see you"
            await left_room(alice, room, "pat")

    run(scenario(), 150)
    log = fkith.log_text()
    assert re.search(f"outgoing stream authenticated domain={p.domain} .*local={GROUPS}", log)
    assert re.search(f"incoming stream authenticated .*domain={p.domain} .*local={GROUPS}", log)


@pytest.mark.parametrize("name", PEERS)
def test_people_on_other_servers_become_members_of_a_kith_room(fed, fkith, name):
    """A members-only room (the household default) refuses a user of another server until
    the Kith owner makes them a member; then they are in, may read the member list (what
    OMEMO needs), talk, answer and send IQs through the room (ping, self-ping), get
    invitations, and their leaving — by closing their app — is seen by everyone."""
    p = peer(fed, name)
    room_name = f"family{secrets.token_hex(3)}"

    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice, on(p, f"quinn@{p.domain}") as quinn, \
                on(p, f"pat@{p.domain}") as pat:
            room = await create_room(alice, room_name, "mum")
            await enter_room(quinn, room, "quinn", expect_error="registration-required")
            iq = alice.make_iq_set(ito=room)
            q = iq.xml.makeelement(f"{{{NS_MUC_ADMIN}}}query", {})
            q.append(q.makeelement(f"{{{NS_MUC_ADMIN}}}item",
                                   {"jid": f"quinn@{p.domain}", "affiliation": "member"}))
            iq.xml.append(q)
            await iq.send(timeout=STEP)

            me, others = await enter_room(quinn, room, "quinn")
            assert muc_item(me).get("affiliation") == "member", me
            assert set(others) == {"mum"}, others
            seen = await alice.next_presence(lambda x: x["from"] == JID(f"{room}/quinn"),
                                             timeout=STEP * 2)
            assert muc_item(seen).get("affiliation") == "member"
            members = await quinn.plugin["xep_0045"].get_affiliation_list(
                JID(room), "member", timeout=STEP * 2)
            assert members == [f"quinn@{p.domain}"], members

            quinn.send_message(mto=room, mbody="hi family", mtype="groupchat")
            assert (await room_message(alice, room, "hi family"))["from"].resource == "quinn"
            alice.send_message(mto=room, mbody="welcome", mtype="groupchat")
            assert (await room_message(quinn, room, "welcome"))["from"].resource == "mum"

            # IQs through the room: alice pings quinn's occupant JID (forwarded to quinn's
            # app on the other server and answered back), quinn pings itself (XEP-0410:
            # the room answers that quinn is still in).
            await alice.plugin["xep_0199"].ping(f"{room}/quinn", timeout=STEP * 2)
            await quinn.plugin["xep_0199"].ping(f"{room}/quinn", timeout=STEP * 2)

            # An invitation to pat on the other server makes pat a member.
            alice.plugin["xep_0045"].invite(JID(room), f"pat@{p.domain}", reason="join us")
            inv = await pat.next_message(timeout=STEP * 2)
            assert inv["from"] == JID(room), inv
            x = inv.xml.find(f"{{{NS_MUC_USER}}}x")
            assert x.find(f"{{{NS_MUC_USER}}}invite").get("from") == f"alice@{KITH}"
            me, others = await enter_room(pat, room, "pat")
            assert muc_item(me).get("affiliation") == "member", me
            assert set(others) == {"mum", "quinn"}, others

            # Closing the app: quinn's server tells the room quinn is gone.
            await quinn.close()
            await left_room(alice, room, "quinn")
            await left_room(pat, room, "quinn")

    run(scenario(), 120)


def test_dialback_for_the_group_chat_service(fed, fkith):
    """A room's stanzas leave as groups.kith.fedtest: with a server that knows only
    dialback, the key is made for (db.fedtest, groups.kith.fedtest), and Kith confirms it
    when asked at groups.kith.fedtest. The user of that server entered over an incoming
    stream to groups.kith.fedtest; the server's answer comes back by bidi (XEP-0288)."""
    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            room = await create_room(alice, f"dbroom{secrets.token_hex(3)}", "mum",
                                     **{"muc#roomconfig_membersonly": False})
            reply = (f"<message xmlns='{NS_SERVER}' type='groupchat' from='dora@{DIALBACK}/x' "
                     f"to='{room}'><body>over bidi</body></message>")
            # It reads the first presence of the entrance, answers, and stays until the
            # subject (the entrance's last stanza) has come.
            dbpeer = DialbackPeer(fed, fkith, local=GROUPS, until=b"</presence>", reply=reply,
                                  linger=b"subject")
            try:
                r, feats = await enter_over_raw(fed, fkith, alice, room, DIALBACK,
                                                (fed.db_cert, fed.db_key), "dora")
                assert [m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")] == ["EXTERNAL"]
                await room_message(alice, room, "over bidi")
                await asyncio.to_thread(dbpeer.join, STEP * 3)
                assert dbpeer.error is None, f"{dbpeer.error!r}; {dbpeer.received[-500:]!r}"
                r.sock.close()
            finally:
                dbpeer.stop()
            assert dbpeer.originating == GROUPS
            assert dbpeer.verdicts == {"wrong key": "invalid", "right key": "valid"}

    run(scenario(), 90)
    assert re.search(f'outgoing stream authenticated domain={DIALBACK} .*method="dialback" '
                     f"local={GROUPS}", fkith.log_text())


def test_a_stream_for_one_kith_domain_carries_nothing_for_the_other(fed, fkith):
    """Each (remote, local) domain pair is authenticated on its own: a stream authenticated
    to kith.fedtest may not carry stanzas for the group chat service, and a domain Kith
    does not serve is unknown."""
    r = authenticated_raw_peer(fed, fkith)
    r.send(f"<presence xmlns='{NS_SERVER}' from='ray@{RAW}/x' to='room@{GROUPS}/ray'/>")
    assert stream_error(r) == "invalid-from"
    r = RawXmpp(fkith.s2s_port, host=fed.net.ip[KITH])
    r.send(s2s_header(RAW, f"nowhere.{KITH}"))
    assert stream_error(r) == "host-unknown"


async def enter_over_raw(fed, fkith, alice, room, domain, creds, nick):
    """nick@DOMAIN/x enters ROOM over a raw s2s stream authenticated (SASL EXTERNAL, with
    CREDS) for the group chat service; alice sees it come. Returns the stream and the
    features offered before authentication."""
    r, feats = await asyncio.to_thread(raw_peer, fed, fkith, domain, creds, GROUPS)
    r.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>")
    assert (await asyncio.to_thread(r.element)).tag == f"{{{NS_SASL}}}success"
    r._new_parser()
    r.send(s2s_header(domain, GROUPS))
    await asyncio.to_thread(r.features)
    r.send(f"<presence xmlns='{NS_SERVER}' from='{nick}@{domain}/x' "
           f"to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    await alice.next_presence(lambda q: q["from"] == JID(f"{room}/{nick}"), timeout=STEP * 2)
    return r, feats


async def raw_occupant(fed, fkith, alice, prefix):
    """An open room of alice's with ray@raw.fedtest in it; returns the room and ray's
    stream."""
    room = await create_room(alice, f"{prefix}{secrets.token_hex(3)}", "mum",
                             **{"muc#roomconfig_membersonly": False})
    r, _ = await enter_over_raw(fed, fkith, alice, room, RAW, (fed.raw_cert, fed.raw_key),
                                "ray")
    return room, r


def test_a_room_answer_that_cannot_be_delivered_stays_inside(fed, fkith):
    """raw.fedtest has no DNS record: a room's answers to its user cannot be delivered.
    The failure comes back to the room inside Kith — Kith never opens a federation
    stream to its own group chat service — and the room goes on working."""
    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            room, r = await raw_occupant(fed, fkith, alice, "lost")
            # The room still answers its local occupant.
            alice.send_message(mto=room, mbody="still here", mtype="groupchat")
            await room_message(alice, room, "still here")
            r.sock.close()

    run(scenario(), 60)
    failed = f"outgoing federation failed domain={RAW} .*local={GROUPS}"
    deadline = time.monotonic() + STEP
    while not re.search(failed, fkith.log_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = fkith.log_text()
    assert re.search(failed, log)
    assert f"domain={GROUPS}" not in log


def test_an_occupant_whose_server_says_it_is_gone_leaves_the_room(fed, fkith):
    """When a remote user's server bounces what the room sent with "that session is gone"
    (service-unavailable and the like), the user leaves the room with status 333 instead
    of lingering as a ghost; an error that only says the link failed changes nothing."""
    async def scenario():
        async with on(fkith, f"alice@{KITH}") as alice:
            room, r = await raw_occupant(fed, fkith, alice, "ghost")
            err = ("<message xmlns='{ns}' type='error' from='ray@{raw}/x' to='{room}'>"
                   "<error type='{ty}'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                   "</error></message>")
            # A link failure: ray stays.
            r.send(err.format(ns=NS_SERVER, raw=RAW, room=room, ty="wait",
                              cond="remote-server-timeout"))
            alice.send_message(mto=room, mbody="still with us", mtype="groupchat")
            await room_message(alice, room, "still with us")
            occupants = await alice.plugin["xep_0045"].get_roles_list(
                JID(room), "participant", timeout=STEP)
            assert "ray" in occupants, occupants
            # The session is gone: ray leaves with 333.
            r.send(err.format(ns=NS_SERVER, raw=RAW, room=room, ty="cancel",
                              cond="service-unavailable"))
            gone = await alice.next_presence(
                lambda q: q["from"] == JID(f"{room}/ray") and q["type"] == "unavailable",
                timeout=STEP * 2)
            x = gone.xml.find(f"{{{NS_MUC_USER}}}x")
            assert "333" in {s.get("code") for s in x.findall(f"{{{NS_MUC_USER}}}status")}
            r.sock.close()

    run(scenario(), 60)


# ------------------------------------------------------------------ other servers are guests

SWARM = "swarm.fedtest"  # a hostile server's domains: x000.swarm.fedtest … (one wildcard cert)
NS_PING = "urn:xmpp:ping"
PENDING_CAP = 50  # [limits] pending_subscriptions, the default


class SwarmPeer:
    """One domain of a hostile server: an asyncio s2s stream to Kith (STARTTLS, SASL
    EXTERNAL with the swarm's wildcard certificate, bidi so that Kith's answers come back
    on the same stream), counting what comes back. Asyncio rather than RawXmpp: reading
    and writing one TLS socket from two threads is not safe."""

    def __init__(self, fed, k: FedKith, domain: str, cert: tuple[Path, Path]):
        self.fed, self.k, self.domain, self.cert = fed, k, domain, cert
        self.errors: dict[str, int] = {}  # stanza error condition → count (any stanza)
        self.error_texts: set[str] = set()
        self.unsubscribed = 0
        self.stream_error: str | None = None
        self.closed = False
        self._waiting: dict[str, asyncio.Future] = {}
        self._pending: list[ET.Element] = []
        self._reader_task = None

    def _new_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    async def _element(self, timeout: float = STEP) -> ET.Element:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._pending:
            left = deadline - asyncio.get_running_loop().time()
            data = await asyncio.wait_for(self.reader.read(65536), max(left, 0.01))
            if not data:
                raise StreamClosed(f"{self.domain}: closed")
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        self._pending.append(el)
        return self._pending.pop(0)

    async def _expect(self, tag: str) -> ET.Element:
        el = await self._element()
        assert el.tag == tag, f"{self.domain}: expected {tag}, got {ET.tostring(el)[:300]!r}"
        return el

    async def _open(self):
        self._new_parser()
        self.writer.write(s2s_header(self.domain).encode())
        return await self._expect(f"{{{NS_STREAM}}}features")

    async def connect(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.fed.net.ip[KITH], self.k.s2s_port, limit=1 << 20),
            STEP)
        await self._open()
        self.writer.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
        await self._expect(f"{{{NS_TLS}}}proceed")
        ctx = ssl.create_default_context(cafile=str(self.fed.ca.ca_cert))
        ctx.load_cert_chain(*self.cert)
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=KITH), STEP)
        await self._open()
        self.writer.write(b"<bidi xmlns='urn:xmpp:bidi'/>"
                          + f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>=</auth>".encode())
        await self._expect(f"{{{NS_SASL}}}success")
        await self._open()
        self._reader_task = asyncio.create_task(self._read_all())
        return self

    async def _read_all(self):
        try:
            while True:
                el = await self._element(timeout=3600)
                kind = el.tag.split("}")[-1]
                if el.tag == f"{{{NS_STREAM}}}error":
                    self.stream_error = el[0].tag.split("}")[1]
                elif el.get("type") == "error":
                    err = el.find(f"{{{NS_SERVER}}}error")
                    err = [] if err is None else err
                    cond = next((c.tag.split("}")[1] for c in err
                                 if not c.tag.endswith("}text")), "?")
                    self.errors[cond] = self.errors.get(cond, 0) + 1
                    text = next((c.text for c in err if c.tag.endswith("}text")), None)
                    if text:
                        self.error_texts.add(text)
                elif kind == "presence" and el.get("type") == "unsubscribed":
                    self.unsubscribed += 1
                elif kind == "iq" and el.get("id") in self._waiting:
                    fut = self._waiting.pop(el.get("id"))
                    if not fut.done():
                        fut.set_result(el)
        except (StreamClosed, ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            pass
        finally:
            self.closed = True
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(StreamClosed(f"{self.domain}: closed"))

    async def send(self, data: str):
        self.writer.write(data.encode())
        await asyncio.wait_for(self.writer.drain(), STEP * 3)

    async def ping(self, timeout: float = STEP * 6) -> ET.Element:
        """An XMPP ping to Kith over this stream: once answered, Kith has handled
        everything sent before it."""
        pid = f"ping{secrets.token_hex(4)}"
        fut = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        await self.send(f"<iq type='get' id='{pid}' from='{self.domain}' to='{KITH}'>"
                        f"<ping xmlns='{NS_PING}'/></iq>")
        return await asyncio.wait_for(fut, timeout)

    async def close(self):
        with contextlib.suppress(Exception):
            self.writer.write(b"</stream:stream>")
            await asyncio.wait_for(self.writer.drain(), 1)
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._reader_task:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task


def subscribe(frm: str, to: str, n: int, ballast: int = 0) -> str:
    """A subscription request with a nickname and a status; `ballast` bytes of junk make
    it huge (in the status text for even n, in an unknown element for odd n)."""
    status, junk = f"hi, I am {n}", ""
    if ballast and n % 2 == 0:
        status = "s" * ballast
    elif ballast:
        junk = f"<x xmlns='urn:example:ballast'>{'b' * ballast}</x>"
    return (f"<presence type='subscribe' id='s{n}' from='{frm}' to='{to}'>"
            f"<nick xmlns='http://jabber.org/protocol/nick'>Swarm {n}</nick>"
            f"<status>{status}</status>{junk}</presence>")


def pending_rows(k: FedKith, user: str) -> tuple[int, int, int]:
    """(pending requests, all roster rows, longest stored request) of `user`, read from
    the database in the data dir."""
    import sqlite3
    con = sqlite3.connect(f"file:{k.data_dir / 'kith.db'}?mode=ro", uri=True, timeout=STEP)
    try:
        pending, longest = con.execute(
            "SELECT COUNT(*), COALESCE(MAX(LENGTH(pending_in)), 0) FROM roster_items "
            "WHERE username = ? AND pending_in IS NOT NULL", (user,)).fetchone()
        rows = con.execute("SELECT COUNT(*) FROM roster_items WHERE username = ?",
                           (user,)).fetchone()[0]
    finally:
        con.close()
    return pending, rows, longest


def stored_requests(k: FedKith, user: str, domain: str) -> list[str]:
    """The stored requests to `user` from JIDs at `domain`."""
    import sqlite3
    con = sqlite3.connect(f"file:{k.data_dir / 'kith.db'}?mode=ro", uri=True, timeout=STEP)
    try:
        return [r[0] for r in con.execute(
            "SELECT pending_in FROM roster_items WHERE username = ? AND contact LIKE ? "
            "AND pending_in IS NOT NULL", (user, f"%@{domain}"))]
    finally:
        con.close()


def db_bytes(k: FedKith) -> int:
    return sum(p.stat().st_size for p in k.data_dir.glob("kith.db*"))


def test_a_server_flooding_contact_requests_fills_neither_disk_nor_memory(fed, tmp_path):
    """The attack: a hostile server (100 domains under one wildcard certificate) sends
    10 000 contact requests from distinct JIDs to alice, 1 in 20 of them ~400 KiB, while
    alice — logged in before it started — chats with bob. Each domain gets its burst of 20
    requests accepted and the rest refused with a policy-violation error; alice keeps at
    most 50 waiting requests (each pushed out one is answered `unsubscribed`), each of
    them a few hundred bytes; Kith stays up, small, and alice's chat flows throughout."""
    (tmp_path / "guest").mkdir()
    k = FedKith(tmp_path / "guest", fed.ca, fed.net, fed.dns.resolv, primary=False)
    alice_jid, bob_jid = k.add_user("alice"), k.add_user("bob")
    k.start()
    cert = fed.ca.leaf(SWARM, f"*.{SWARM}")
    domains, per_domain, huge = 100, 100, 400 * 1024
    figures: dict = {}

    async def flood():
        peers: list[SwarmPeer] = []
        gate = asyncio.Semaphore(10)  # the hostile server's connections busy at once

        async def one(d: int):
            async with gate:
                p = await SwarmPeer(fed, k, f"x{d:03}.{SWARM}", cert).connect()
                peers.append(p)
                for n in range(per_domain):
                    ballast = huge if n % 20 == 0 else 0
                    await p.send(subscribe(f"u{n}@{p.domain}", alice_jid, n, ballast))
                await p.ping()

        start = time.monotonic()
        try:
            await asyncio.gather(*(one(d) for d in range(domains)))
            figures["flood_secs"] = time.monotonic() - start
            # The last two requests, both huge, are the newest: they are kept.
            last = await SwarmPeer(fed, k, f"late.{SWARM}", cert).connect()
            peers.append(last)
            for n in (0, 1):
                await last.send(subscribe(f"u{n}@{last.domain}", alice_jid, n, huge))
            await last.ping()
            # Requests pushed out late are answered on streams still open.
            accepted = 2 + sum(per_domain - sum(p.errors.values()) for p in peers[:-1])
            deadline = time.monotonic() + STEP * 3
            while time.monotonic() < deadline:
                told = sum(p.unsubscribed for p in peers)
                if told >= accepted - PENDING_CAP:
                    break
                await asyncio.sleep(0.2)
            figures["accepted"] = accepted
            refused: dict[str, int] = {}
            for p in peers:
                for c, n in p.errors.items():
                    refused[c] = refused.get(c, 0) + n
            figures["refused"] = refused
            figures["texts"] = sorted(set().union(*(p.error_texts for p in peers)))[:1]
            figures["unsubscribed"] = sum(p.unsubscribed for p in peers)
            figures["stream_errors"] = [p.stream_error for p in peers if p.stream_error]
            figures["closed"] = sum(p.closed for p in peers)
        finally:
            for p in peers:
                await p.close()

    async def scenario():
        async with on(k, alice_jid) as alice, on(k, bob_jid) as bob:
            flooder = threading.Thread(target=lambda: asyncio.run(flood()), daemon=True)
            flooder.start()
            rounds, slowest = 0, 0.0
            while flooder.is_alive() or rounds < 3:
                t0 = time.monotonic()
                body = f"still there? {rounds}"
                alice.send_message(mto=bob_jid, mbody=body, mtype="chat")
                await expect_body(bob, body, alice_jid)
                body = f"yes, {rounds}"
                bob.send_message(mto=alice_jid, mbody=body, mtype="chat")
                await expect_body(alice, body, bob_jid)
                slowest = max(slowest, time.monotonic() - t0)
                rounds += 1
                await asyncio.sleep(0.2)
            await asyncio.to_thread(flooder.join, STEP)
            figures["chat_rounds"], figures["chat_slowest_secs"] = rounds, slowest
            roster = await alice.get_roster(timeout=STEP)
            figures["alice_roster"] = len(roster["roster"]["items"])

    try:
        run(scenario(), 600)
        assert k.alive(), "kith died:\n" + k.log_tail()
        pending, rows, longest = pending_rows(k, "alice")
        late = stored_requests(k, "alice", f"late.{SWARM}")
        figures.update(pending=pending, rows=rows, longest_request=longest,
                       db_bytes=db_bytes(k), peak_rss_kib=k.peak_rss_kib())
        print(f"FLOOD FIGURES {figures}")
        assert figures.get("flood_secs") is not None, f"the flood did not finish: {figures}"
        assert figures["stream_errors"] == [], figures
        # Refused, and told why.
        refused = figures["refused"].get("policy-violation", 0)
        assert refused >= domains * (per_domain - 25), figures
        assert any("too many subscription requests" in t for t in figures["texts"]), figures
        # Stored: at most the cap, each a few hundred bytes, nothing in alice's roster.
        assert pending == PENDING_CAP and rows == PENDING_CAP, figures
        assert longest < 1024, figures
        # The huge ones kept their nickname and a cut status, and nothing else.
        assert len(late) == 2, late
        for text in late:
            stored = ET.fromstring(text)
            assert stored.findtext("{http://jabber.org/protocol/nick}nick").startswith("Swarm")
            assert len(stored) <= 2, text
        assert any(len(ET.fromstring(t).findtext("{jabber:client}status") or "") == 512
                   for t in late), late
        assert figures["alice_roster"] == 0, figures
        # Every accepted request pushed out of the 50 was answered `unsubscribed`.
        assert figures["unsubscribed"] == figures["accepted"] - PENDING_CAP, figures
        assert figures["db_bytes"] < 8 * 1024 * 1024, figures
        k.assert_memory_bounded()
        assert figures["chat_rounds"] >= 3 and figures["chat_slowest_secs"] < STEP, figures
    finally:
        k.stop()


def test_a_server_that_keeps_sending_requests_is_cut_off(fed, tmp_path):
    """One domain goes on sending contact requests after they are refused: past 100
    refusals in a minute its stream is closed with <policy-violation/>, and a new stream
    of it is closed again at its next refused request. Another domain is not affected."""
    (tmp_path / "cutoff").mkdir()
    k = FedKith(tmp_path / "cutoff", fed.ca, fed.net, fed.dns.resolv, primary=False)
    alice_jid, bob_jid = k.add_user("alice"), k.add_user("bob")
    k.start()
    cert = fed.ca.leaf(SWARM, f"*.{SWARM}")

    async def one_by_one(p: SwarmPeer, first: int, most: int):
        """Send requests one at a time, each once the previous one was answered (or the
        stream closed: sending on after that would make TCP reset the connection and
        lose the stream error), until the stream is closed."""
        for n in range(first, first + most):
            seen = sum(p.errors.values())
            await p.send(subscribe(f"u{n}@{p.domain}", alice_jid, n))
            deadline = time.monotonic() + STEP
            while not p.closed and sum(p.errors.values()) == seen:
                assert time.monotonic() < deadline, f"no answer to request {n}"
                await asyncio.sleep(0.01)
            if p.closed:
                return
        raise AssertionError(f"{p.domain}: still open after {most} requests; {p.errors}")

    async def scenario():
        spam = await SwarmPeer(fed, k, f"solo.{SWARM}", cert).connect()
        # The burst of 20 and 100 refusals at full speed, then one at a time.
        for n in range(120):
            await spam.send(subscribe(f"u{n}@{spam.domain}", alice_jid, n))
        await spam.ping()
        assert spam.errors == {"policy-violation": 100}, spam.errors
        await one_by_one(spam, 120, 20)
        assert spam.stream_error == "policy-violation", spam.stream_error
        await spam.close()

        again = await SwarmPeer(fed, k, f"solo.{SWARM}", cert).connect()
        await one_by_one(again, 200, 5)
        assert again.stream_error == "policy-violation", again.stream_error
        await again.close()

        friend = await SwarmPeer(fed, k, f"friend.{SWARM}", cert).connect()
        await friend.send(subscribe(f"ann@{friend.domain}", bob_jid, 1))
        await friend.ping()
        assert friend.errors == {} and not friend.closed
        await friend.close()

    try:
        run(scenario(), 120)
        assert k.alive()
        assert pending_rows(k, "alice")[0] == 20, "the burst of 20 was accepted"
        assert len(stored_requests(k, "bob", f"friend.{SWARM}")) == 1
        log = k.log_text()
        assert "subscription requests over the rate limit: refusing them" in log
        assert re.search(f"far too many subscription requests: stream closed .*domain=solo.{SWARM}",
                         log)
    finally:
        k.stop()


def test_a_server_sending_too_fast_is_read_more_slowly_and_loses_nothing(fed, tmp_path):
    """`stanzas_per_second = 20` with a burst of 20: 80 pings sent at once are all
    answered, the last one no sooner than the rate allows (60 × 1/20 s)."""
    (tmp_path / "slow").mkdir()
    k = FedKith(tmp_path / "slow", fed.ca, fed.net, fed.dns.resolv, primary=False,
                stanzas_per_second=20, stanza_burst=20)
    k.start()
    cert = fed.ca.leaf(SWARM, f"*.{SWARM}")

    async def scenario():
        p = await SwarmPeer(fed, k, f"busy.{SWARM}", cert).connect()
        start = time.monotonic()
        answers = await asyncio.gather(*(p.ping(timeout=STEP * 3) for _ in range(80)))
        took = time.monotonic() - start
        await p.close()
        assert all(a.get("type") == "result" for a in answers)
        return took

    try:
        took = run(scenario(), 120)
        assert 2.5 <= took < 10, f"80 pings took {took:.2f} s"
        assert k.alive()
    finally:
        k.stop()


def test_a_throttled_server_sending_huge_stanzas_does_not_pile_them_up(fed, tmp_path):
    """One domain's four streams each pipeline 70 stanzas of 400 KiB (to no one: each is
    refused). Beyond its burst the domain is read slowly; what Kith has read but not yet
    handled stays small — it parses a few hundred KiB ahead per stream, not 64 stanzas."""
    (tmp_path / "heavy").mkdir()
    k = FedKith(tmp_path / "heavy", fed.ca, fed.net, fed.dns.resolv, primary=False)
    k.start()
    cert = fed.ca.leaf(SWARM, f"*.{SWARM}")
    big = "h" * (400 * 1024)

    async def pour(p: SwarmPeer, sent: list):
        for n in range(70):
            await p.send(f"<message type='chat' id='m{n}' from='hulk@{p.domain}/x' "
                         f"to='nobody@{KITH}'><body>{big}</body></message>")
            sent.append(n)

    async def scenario():
        peers = [await SwarmPeer(fed, k, f"heavy.{SWARM}", cert).connect() for _ in range(4)]
        sent: list = []
        tasks = [asyncio.create_task(pour(p, sent)) for p in peers]
        await asyncio.sleep(8)
        refused = sum(sum(p.errors.values()) for p in peers)
        peak = k.peak_rss_kib()
        for t in tasks:
            t.cancel()
        for p in peers:
            await p.close()
        return len(sent), refused, peak

    try:
        sent, refused, peak = run(scenario(), 120)
        print(f"HEAVY FIGURES sent={sent} refused={refused} peak_rss_kib={peak}")
        assert refused < sent, "the domain was not slowed down"
        k.assert_memory_bounded()
    finally:
        k.stop()
