"""Certificates that take care of themselves (issue 19): kith asks a real ACME CA —
Debian's pebble, resolving names through pebble-challtestsrv — for its certificate with
each challenge, every listener presents it at once, renewals swap it under live sessions,
a failed renewal keeps the old one, and a restart uses the stored one without the CA.

Every test runs its own pebble (its validation ports are the test's kith's listeners)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import socket
import ssl
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import base64
import secrets

from acme_peers import AriDouble, Bind, ChallTestSrv, Pebble
from conftest import (NS_SASL, NS_TLS, PASSWORD, STEP, Client, Kith, RawXmpp, Scram,
                      exchange, free_port, run, scram_login, tls_server_end_point,
                      toml_value, wait_until)

HOME = "home.test"
NAMES = {HOME, f"groups.{HOME}"}
ISSUE = 60.0  # a certificate from pebble: account, order, validation, issuance


class AcmeKith(Kith):
    """kith for `home.test` with every listener on (c2s, Direct TLS, s2s Direct TLS, HTTP,
    HTTPS) and an `[acme]` section; no `[tls]` files: the self-signed certificate until the
    CA's arrives."""

    def __init__(self, directory: Path, ca, acme: dict):
        self.acme = acme
        self.http_port = self.https_port = self.s2s_tls_port = None
        super().__init__(directory, ca, tls_files=False)

    def pick_ports(self):
        # Chosen once: pebble validates on these ports.
        if self.http_port is None:
            self.c2s_port, self.c2s_tls_port = free_port(), free_port()
            self.s2s_tls_port, self.http_port, self.https_port = (free_port(), free_port(),
                                                                  free_port())
        lines = [f"domain = {toml_value(HOME)}", f"data_dir = {toml_value(self.data_dir)}",
                 "", "[listen]", f'c2s = "127.0.0.1:{self.c2s_port}"',
                 f'c2s_tls = "127.0.0.1:{self.c2s_tls_port}"',
                 f's2s_tls = "127.0.0.1:{self.s2s_tls_port}"',
                 f'http = "127.0.0.1:{self.http_port}"',
                 f'https = "127.0.0.1:{self.https_port}"',
                 "", "[limits]", "auth_timeout_secs = 10",
                 "", "[auth]", "scram_iterations = 4096",
                 "", "[acme]"] + [f"{k} = {toml_value(v)}" for k, v in self.acme.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def add_user(self, user: str, password: str = PASSWORD) -> str:
        jid = f"{user}@{HOME}"
        self.cli("user", "add", jid, stdin=password + "\n")
        return jid

    def _start_once(self, extra_env):
        super()._start_once(extra_env)
        # The web pod opens after the XMPP listeners.
        wait_until(lambda: self._port_open(self.https_port), 10, "the HTTPS listener")
        return self

    def status(self) -> str:
        return self.cli("cert", "status").stdout


@pytest.fixture
def dns(tmp_path):
    d = ChallTestSrv(tmp_path)
    yield d
    d.stop()


@pytest.fixture
def acme(tmp_path, test_ca, dns):
    """`acme(challenge=..., validity=..., **acme_keys)` -> (kith, pebble), kith not started."""
    made = []

    def make(challenge: str, validity: int = 3600, name: str = "kith", resolver=None,
             **keys):
        d = tmp_path / name
        d.mkdir()
        k = AcmeKith(d, test_ca, {})
        p = Pebble(d, test_ca, resolver or dns, http_port=k.http_port, tls_port=k.https_port,
                   validity_secs=validity)
        k.acme = {"enabled": True, "directory": p.directory, "ca_file": str(test_ca.ca_cert),
                  "challenge": challenge, "retry_min_secs": 1, **keys}
        k.pick_ports()
        # slixmpp clients trust pebble's root (conftest's Client reads `ca.ca_cert`).
        k.ca = types.SimpleNamespace(ca_cert=p.root)
        k.add_user("alice")
        k.add_user("bob")
        made.append((k, p))
        return k, p

    yield make
    for k, p in made:
        k.stop()
        p.stop()
        print(f"--- {k.dir.name} log (tail) ---\n{k.log_tail(60)}")
        print(f"--- pebble log (tail) ---\n{p.log.read_text()[-3000:]}")


# --------------------------------------------------------------------------- looking


def _peer_cert(sock: ssl.SSLSocket) -> dict:
    der = sock.getpeercert(binary_form=True)
    return {"der": der, **sock.getpeercert()}


def served_direct(port: int, ctx: ssl.SSLContext) -> dict:
    """The certificate a Direct TLS listener presents, verified by `ctx` for HOME."""
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as s:
        with ctx.wrap_socket(s, server_hostname=HOME) as t:
            return _peer_cert(t)


def served_starttls(port: int, ctx: ssl.SSLContext) -> dict:
    raw = RawXmpp(port)
    raw.open_stream(to=HOME)
    assert raw.features().find(f"{{{NS_TLS}}}starttls") is not None
    raw.send(f"<starttls xmlns='{NS_TLS}'/>")
    raw.expect(f"{{{NS_TLS}}}proceed")
    raw.sock = ctx.wrap_socket(raw.sock, server_hostname=HOME)
    cert = _peer_cert(raw.sock)
    raw.close()
    return cert


def issuer(cert: dict) -> str:
    return " ".join(v for rdn in cert["issuer"] for (_, v) in rdn)


def names(cert: dict) -> set[str]:
    return {v for (k, v) in cert.get("subjectAltName", ()) if k == "DNS"}


def wait_for_ca_certificate(k: AcmeKith, p: Pebble, timeout: float = ISSUE) -> dict:
    """Until HTTPS presents a certificate that pebble's root verifies for HOME."""
    ctx = p.client_context(["http/1.1"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            return served_direct(k.https_port, ctx)
        except (ssl.SSLError, OSError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"no certificate from pebble after {timeout}s ({e}):\n"
                                     f"{k.status()}\n{k.log_tail()}")
            time.sleep(0.2)


def assert_every_listener_presents_pebbles_chain(k: AcmeKith, p: Pebble) -> dict:
    https = served_direct(k.https_port, p.client_context(["h2", "http/1.1"]))
    c2s = served_starttls(k.c2s_port, p.client_context())
    c2s_direct = served_direct(k.c2s_tls_port, p.client_context(["xmpp-client"]))
    s2s_direct = served_direct(k.s2s_tls_port, p.client_context(["xmpp-server"]))
    for where, c in [("c2s", c2s), ("c2s_tls", c2s_direct), ("s2s_tls", s2s_direct)]:
        assert c["der"] == https["der"], f"{where} presents another certificate than HTTPS"
    assert "Pebble" in issuer(https), issuer(https)
    assert names(https) == NAMES, names(https)
    return https


def login_with_channel_binding(k: AcmeKith, p: Pebble, user: str = "alice"):
    """SCRAM-SHA-256-PLUS with tls-server-end-point of the certificate now presented."""
    raw = RawXmpp(k.c2s_port)
    raw.open_stream(to=HOME)
    raw.features()
    raw.send(f"<starttls xmlns='{NS_TLS}'/>")
    raw.expect(f"{{{NS_TLS}}}proceed")
    raw.sock = p.client_context().wrap_socket(raw.sock, server_hostname=HOME)
    raw.raw = b""
    raw.open_stream(to=HOME)
    raw.features()
    el = scram_login(raw, "SCRAM-SHA-256-PLUS",
                     Scram("sha256", user, PASSWORD, "tls-server-end-point",
                           tls_server_end_point(raw.sock)))
    raw.close()
    assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)


# --------------------------------------------------------------------------- scenarios


def test_first_certificate_with_http01(acme):
    """Port 80's HTTP-01: the box's first real certificate, on every listener."""
    k, p = acme("http-01")
    k.start()
    before = k.status()
    wait_for_ca_certificate(k, p)
    assert_every_listener_presents_pebbles_chain(k, p)
    login_with_channel_binding(k, p)
    status = k.status()
    print(f"kith cert status (after HTTP-01):\n{status}")
    assert "from the CA" in status and "Pebble" in status, status
    assert "challenge     http-01" in status and "last error    none" in status, status
    assert "self-signed" in before or "from the CA" in before
    # The key files are the household's secret: 0600 in a 0700 folder.
    acme_dir = k.data_dir / "acme"
    for f in ("key.pem", "account.key", "cert.pem"):
        assert (acme_dir / f).stat().st_mode & 0o077 == 0, f
    assert acme_dir.stat().st_mode & 0o077 == 0


def test_first_certificate_with_tls_alpn01(acme):
    """Only 443 needed: TLS-ALPN-01 answered by the HTTPS listener itself."""
    k, p = acme("tls-alpn-01")
    k.start()
    wait_for_ca_certificate(k, p)
    assert_every_listener_presents_pebbles_chain(k, p)
    assert "challenge     tls-alpn-01" in k.status()
    # An acme-tls/1 handshake with no open challenge gets no certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", k.https_port), timeout=STEP) as s:
            with ctx.wrap_socket(s, server_hostname=HOME):
                pass


def _hook(tmp: Path, dns: ChallTestSrv) -> Path:
    """A DNS-01 hook as an admin would write one: it sets the TXT record through a DNS
    provider's HTTP API (here pebble-challtestsrv's). A file `wrong` next to it makes it
    publish a wrong value (a broken provider)."""
    hook = tmp / "dns-hook"
    hook.write_text(f"""#!/bin/sh
set -eu
action="$1"; record="$2"; value="$3"
[ -e "{tmp}/wrong" ] && value="not-the-right-value"
echo "$action $record" >> "{tmp}/hook.log"
case "$action" in
  set) curl -sf -X POST -d "{{\\"host\\":\\"$record.\\",\\"value\\":\\"$value\\"}}" \\
         http://127.0.0.1:{dns.api_port}/set-txt ;;
  unset) curl -sf -X POST -d "{{\\"host\\":\\"$record.\\"}}" \\
         http://127.0.0.1:{dns.api_port}/clear-txt ;;
esac
""")
    hook.chmod(0o755)
    return hook


def test_first_certificate_with_dns01_hook(acme, dns, tmp_path):
    """No inbound port at all: DNS-01 through the admin's hook command."""
    k, p = acme("dns-01", dns_hook=str(_hook(tmp_path, dns)))
    k.start()
    wait_for_ca_certificate(k, p)
    assert_every_listener_presents_pebbles_chain(k, p)
    hook_log = (tmp_path / "hook.log").read_text().split("\n")
    assert f"set _acme-challenge.{HOME}" in hook_log, hook_log
    assert f"unset _acme-challenge.groups.{HOME}" in hook_log, hook_log


def test_first_certificate_with_dns01_rfc2136(acme, tmp_path):
    """DNS-01 through RFC 2136 updates signed with TSIG to a real BIND that pebble
    resolves through; a wrong key is said with its fix."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    bind = Bind(tmp_path, HOME, secret)
    try:
        update = {"dns_update_server": f"127.0.0.1:{bind.dns_port}",
                  "dns_update_zone": HOME, "dns_update_key_name": "kith-acme"}
        wrong = base64.b64encode(secrets.token_bytes(32)).decode()
        k, p = acme("dns-01", resolver=bind, dns_update_key_secret=wrong, **update)
        k.start()
        wait_until(lambda: "refused the TSIG key" in k.status(), 30, "the TSIG error")
        assert "fix: check the acme.dns_update_* settings" in k.status()
        k.stop()
        k.acme["dns_update_key_secret"] = secret
        k.pick_ports()
        k.start()
        wait_for_ca_certificate(k, p)
        assert_every_listener_presents_pebbles_chain(k, p)
        assert "challenge     dns-01" in k.status()
        # The challenge records were removed again (the journal holds the adds and deletes).
        k.stop()
    finally:
        bind.stop()
    log = bind.log.read_text()
    assert "updating zone" in log and "adding an RR at '_acme-challenge." in log, log[-2000:]
    assert "deleting an RR at _acme-challenge." in log, log[-2000:]
    assert "tsig verify failure" in log  # the wrong key, refused by BIND itself


def test_renewal_swaps_the_certificate_while_a_client_chats(acme):
    """A 30-second certificate is renewed at two thirds of its life; alice's and bob's
    sessions, opened on the first certificate, go on; new handshakes get the new one and
    channel binding follows it."""
    k, p = acme("http-01", validity=30)
    k.start()
    first = wait_for_ca_certificate(k, p)

    async def scenario():
        alice = Client(k, f"alice@{HOME}")
        bob = Client(k, f"bob@{HOME}")
        await alice.login()
        await bob.login()
        alice.send_presence()
        bob.send_presence()
        await exchange(alice, bob, "before the renewal")
        ctx = p.client_context(["http/1.1"])
        deadline = time.monotonic() + 45
        swapped = None
        while swapped is None:
            now = await asyncio.to_thread(served_direct, k.https_port, ctx)
            if now["der"] != first["der"]:
                swapped = now
            elif time.monotonic() > deadline:
                raise AssertionError("no renewal within 45 s:\n" + k.status())
            else:
                # Chatting all along.
                await exchange(alice, bob)
                await asyncio.sleep(0.5)
        await exchange(alice, bob, "after the renewal")
        await exchange(bob, alice, "still here")
        alice.disconnect()
        bob.disconnect()
        return swapped

    t0 = time.monotonic()
    swapped = run(scenario(), timeout=90)
    assert swapped["notAfter"] != first["notAfter"] or swapped["serialNumber"] != first["serialNumber"]
    assert_every_listener_presents_pebbles_chain(k, p)
    login_with_channel_binding(k, p)
    assert (k.data_dir / "acme/cert.pem").read_bytes().count(b"BEGIN CERTIFICATE") >= 1
    print(f"renewal observed {time.monotonic() - t0:.1f}s after the first certificate")


def test_renewal_follows_the_cas_renewal_information(acme, test_ca):
    """RFC 9773 through a test double (pebble 2.4 has no renewalInfo): the CA suggests
    renewing the first certificate now, long before two thirds of its hour; kith does,
    then follows the window suggested for the new one."""
    k, p = acme("http-01", validity=3600)
    ari = AriDouble(p, test_ca)
    try:
        k.acme["directory"] = ari.directory
        k.pick_ports()
        k.start()
        first = wait_for_ca_certificate(k, p)
        ctx = p.client_context(["http/1.1"])
        wait_until(lambda: served_direct(k.https_port, ctx)["der"] != first["der"], 30,
                   "the renewal the CA suggested")
        wait_until(lambda: len(ari.asked) >= 2, 10, "the new certificate's renewal info")
        wait_until(lambda: "renewal info" in k.status(), 10, "the window in the status")
        status = k.status()
        assert "the CA suggests renewing between" in status, status
        assert len(ari.asked) == 2, ari.asked  # one id per certificate, each asked once
    finally:
        k.stop()
        ari.stop()


def test_failed_renewal_keeps_the_certificate_and_says_why(acme, dns, tmp_path):
    """The DNS provider publishes a wrong value: `kith cert renew` fails with the one-line
    reason, the certificate in use and on disk stays, `kith cert status` shows the error."""
    k, p = acme("dns-01", dns_hook=str(_hook(tmp_path, dns)))
    k.start()
    first = wait_for_ca_certificate(k, p)
    stored = (k.data_dir / "acme/cert.pem").read_bytes()
    (tmp_path / "wrong").touch()
    res = k.cli("cert", "renew", "--wait", "60", check=False)
    assert res.returncode != 0, res.stdout
    assert "TXT record" in res.stderr and "fix:" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    now = served_direct(k.https_port, p.client_context(["http/1.1"]))
    assert now["der"] == first["der"]
    assert (k.data_dir / "acme/cert.pem").read_bytes() == stored
    status = k.status()
    assert "from the CA" in status and "TXT record" in status, status
    # Fixed: the next renewal works.
    (tmp_path / "wrong").unlink()
    res = k.cli("cert", "renew", "--wait", "60", check=False)
    assert res.returncode == 0, res.stderr
    assert "last error    none" in res.stdout
    assert served_direct(k.https_port, p.client_context(["http/1.1"]))["der"] != first["der"]


def test_restart_uses_the_stored_certificate_without_the_ca(acme):
    k, p = acme("http-01")
    k.start()
    first = wait_for_ca_certificate(k, p)
    k.stop()
    p.stop()  # the CA is gone: only the stored certificate can be presented now
    k.start()
    again = served_direct(k.https_port, p.client_context(["http/1.1"]))
    assert again["der"] == first["der"]
    assert_every_listener_presents_pebbles_chain(k, p)
    time.sleep(1.5)
    assert "last error    none" in k.status()


def test_ca_unreachable_is_said_with_the_fix(acme):
    k, p = acme("http-01")
    closed = free_port()
    k.acme["directory"] = f"https://127.0.0.1:{closed}/dir"
    k.pick_ports()
    k.start()
    wait_until(lambda: "cannot reach the CA" in k.status(), 30, "the error in the status")
    status = k.status()
    print(f"kith cert status (CA unreachable):\n{status}")
    assert "self-signed; reason: cannot reach the CA" in status, status
    assert "fix:" in status


def test_port_unreachable_is_said_with_the_fix(acme, dns):
    """The name points to an address where nothing listens on the HTTP-01 port (the
    router forwards nothing): the CA cannot connect."""
    k, p = acme("http-01")
    dns.api("/add-a", {"host": f"{HOME}.", "addresses": ["127.0.0.9"]})
    try:
        k.start()
        wait_until(lambda: "last error    " in k.status() and "none" not in
                   k.status().split("last error")[1], 40, "the error in the status")
        status = k.status()
        assert "could not reach this box on port 80" in status, status
        assert "fix: forward TCP port 80" in status
    finally:
        dns.api("/clear-a", {"host": f"{HOME}."})


@pytest.mark.parametrize("code,kind,detail,words", [
    (429, "rateLimited", "too many certificates (5) already issued for this exact set of "
     "identifiers in the last 168h0m0s", "the CA's rate limit is hit"),
    (403, "caa", "CAA record for home.test prevents issuance",
     "a CAA record in the DNS of home.test forbids this CA"),
])
def test_ca_refusals_are_said_with_the_fix(acme, test_ca, code, kind, detail, words):
    """What pebble never says (it checks neither rate limits nor CAA), said by the
    AriDouble front in its place: one line with the fix, the self-signed certificate kept,
    and after a rate limit no new order for at least an hour."""
    k, p = acme("http-01")
    front = AriDouble(p, test_ca, refuse_orders=(code, kind, detail))
    try:
        k.acme["directory"] = front.directory
        k.pick_ports()
        k.start()
        wait_until(lambda: words in k.status(), 30, f"the {kind} error in the status")
        status = k.status()
        line = [ln for ln in status.splitlines() if ln.startswith("last error")][0]
        assert "fix:" in line and detail in line, line
        assert status.startswith("certificate   self-signed; reason: "), status
        if kind == "rateLimited":
            time.sleep(3)  # retry_min_secs is 1: without the floor it would ask again
            assert front.refused == 1, front.refused
            nxt = [ln for ln in status.splitlines() if ln.startswith("next attempt")][0]
            when = datetime.strptime(nxt.split(None, 2)[2], "%Y-%m-%d %H:%M:%S UTC")
            wait = when.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)
            assert wait.total_seconds() > 3500, nxt
    finally:
        k.stop()
        front.stop()


def test_the_box_turns_certificates_on_itself(acme):
    """`[acme]` is one of the settings the box changes (the wizard, the admin pages,
    `kith settings set`): turned on while running, the service starts again inside the
    process and gets its certificate; a bad value is refused and changes nothing."""
    k, p = acme("http-01")
    del k.acme["enabled"]  # the admin's file leaves it to the box
    k.pick_ports()
    k.start()
    pid = k.pid
    assert "acme.enabled is off" in k.status()
    bad = k.cli("settings", "set", "acme.challenge", "dns-01", check=False)
    assert bad.returncode != 0, bad.stdout
    # The admin's file sets acme.challenge: locked.
    assert "locked" in bad.stderr, bad.stderr
    bad = k.cli("settings", "set", "acme.retry_min_secs", "0", check=False)
    assert bad.returncode != 0 and "acme.retry_min_secs" in bad.stderr, bad.stderr
    out = k.cli("settings", "set", "acme.enabled", "true").stdout
    assert "reconnect" in out, out
    wait_for_ca_certificate(k, p)
    assert k.pid == pid and k.alive()
    assert "from the CA" in k.status()


def test_acme_settings_are_checked(acme):
    k, p = acme("http-01")
    k.acme["challenge"] = "carrier-pigeon"
    k.pick_ports()
    res = k.cli("cert", "status", check=False)
    assert res.returncode != 0
    assert "acme.challenge" in res.stderr and "carrier-pigeon" in res.stderr, res.stderr
    k.acme["challenge"] = "http-01"
    k.acme["colour"] = "blue"
    k.pick_ports()
    res = k.cli("cert", "status", check=False)
    assert res.returncode != 0 and "colour" in res.stderr, res.stderr
