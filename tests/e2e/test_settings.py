"""Settings the box changes itself: written through `kith settings`, kept across restarts and
power cuts, refused where the admin's file locks them, and the domain changed on a new box."""

import os
import signal
import socket
import ssl
import subprocess
import time

from conftest import (DOMAIN, NS_STREAM, START, STEP, RawXmpp, StreamClosed, free_port,
                      stream_error_condition)

NEW_DOMAIN = "family.test"


def setting(k, key: str) -> str:
    return k.cli("settings", "get", key).stdout.strip()


def test_a_setting_survives_a_restart_and_a_power_cut(kith_factory):
    k = kith_factory()
    k.start()
    out = k.cli("settings", "set", "limits.offline_max", "7").stdout
    assert "in force now" in out, out
    settings = k.data_dir / "settings.toml"
    assert "offline_max = 7" in settings.read_text()
    assert (settings.stat().st_mode & 0o777) == 0o600

    # A power cut: the process dies once the new settings are on disk in the temporary
    # file, before the rename.
    env = dict(os.environ, KITH_TEST_CRASH_BEFORE_RENAME="1")
    res = k.cli("settings", "set", "limits.offline_max", "8", check=False, env=env)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr)
    tmp = k.data_dir / ".settings.toml.tmp"
    assert tmp.exists() and "offline_max = 8" in tmp.read_text(), "did not stop before the rename"
    assert "offline_max = 7" in settings.read_text(), settings.read_text()

    # The box goes down hard and comes back: the old value, whole.
    k.stop(signal.SIGKILL)
    k.start()
    assert setting(k, "limits.offline_max").startswith("limits.offline_max = 7"), setting(
        k, "limits.offline_max")
    # The next write replaces the leftover temporary file and goes through.
    k.cli("settings", "set", "limits.offline_max", "9")
    k.stop(signal.SIGKILL)
    k.start()
    assert setting(k, "limits.offline_max").startswith("limits.offline_max = 9")
    assert not tmp.exists()


def test_broken_box_settings_never_keep_the_box_from_starting(kith_factory):
    k = kith_factory()
    k.data_dir.mkdir(parents=True, exist_ok=True)
    settings = k.data_dir / "settings.toml"
    # Whole, but not valid with the other layers: left out until fixed.
    # Damaged (not settings at all): set aside (test_damaged_files.py has the good copy).
    for text, said in [("[limits]\nsession_queue = 0\n", "ignoring the box's settings"),
                       ("limits = 5\n", "the box's settings file was damaged"),
                       ("not toml at all [", "the box's settings file was damaged")]:
        settings.write_text(text)
        k.start()
        assert said in k.log_tail(), k.log_tail()
        k.stop()
    # The next change replaces the file with a valid one.
    k.cli("settings", "set", "limits.session_queue", "10")
    assert "session_queue = 10" in settings.read_text()


def test_a_limit_changes_without_a_restart(kith_factory):
    k = kith_factory()
    k.start()
    first = RawXmpp(k.c2s_port)
    second = RawXmpp(k.c2s_port)
    for raw in (first, second):
        raw.open_stream()
        raw.features()
    second.close()
    k.cli("settings", "set", "limits.connections_per_ip", "1")
    deadline = time.monotonic() + START
    while True:
        # The running server reads the file within a second or two.
        third = RawXmpp(k.c2s_port)
        try:
            third.open_stream()
            third.features()
            refused = False
        except (StreamClosed, TimeoutError, AssertionError, OSError):
            refused = True
        finally:
            third.close()
        if refused:
            break
        assert time.monotonic() < deadline, "the new limit was not in force:\n" + k.log_tail()
        time.sleep(0.3)
    assert not first.poll_closed(), "the open connection was closed"
    first.close()
    assert k.alive()


def test_a_locked_setting_is_refused_naming_the_file(kith_factory):
    k = kith_factory(limits={"offline_max": 100})
    for key, value in [("limits.offline_max", "5"), ("domain", NEW_DOMAIN),
                       ("listen.c2s", "127.0.0.1:1")]:
        res = k.cli("settings", "set", key, value, check=False)
        assert res.returncode != 0, f"{key} changed although {k.config} sets it"
        assert "locked" in res.stderr and str(k.config) in res.stderr, res.stderr
    assert not (k.data_dir / "settings.toml").exists()
    assert f"set in {k.config}, locked" in setting(k, "limits.offline_max")
    # A key the file does not set is the box's to change.
    k.cli("settings", "set", "limits.session_queue", "50")
    assert "settings.toml" in setting(k, "limits.session_queue")
    listed = k.cli("settings", "list").stdout.splitlines()
    assert any(ln.startswith("limits.offline_max = 100") and ln.endswith(", locked")
               for ln in listed), listed
    assert any(ln.startswith("limits.session_queue = 50") and not ln.endswith("locked")
               for ln in listed), listed


def peer_certificate_names(port: int, domain: str) -> str:
    """The subjectAltName of the certificate kith shows to a client of `domain`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = RawXmpp(port)
    try:
        raw.open_stream(to=domain)
        raw.features()
        raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        raw.element()
        raw.sock = ctx.wrap_socket(raw.sock, server_hostname=domain)
        pem = ssl.DER_cert_to_PEM_cert(raw.sock.getpeercert(binary_form=True))
    finally:
        raw.close()
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"],
                         input=pem, capture_output=True, text=True, check=True)
    return out.stdout


def stream_answer(port: int, to: str) -> str:
    """'features' when a stream to `to` is served, else the stream error's condition."""
    raw = RawXmpp(port)
    try:
        raw.open_stream(to=to)
        el = raw.element(STEP)
        if el.tag == f"{{{NS_STREAM}}}features":
            return "features"
        return stream_error_condition(raw.raw) or el.tag
    except StreamClosed:
        return stream_error_condition(raw.raw) or "closed"
    finally:
        raw.close()


def test_the_domain_changes_on_a_box_without_accounts(kith_factory):
    # As on the image: the file is the shipped defaults, so the box may change the domain.
    k = kith_factory(as_defaults=True, tls_files=False)
    k.start()
    assert stream_answer(k.c2s_port, DOMAIN) == "features"
    assert f"DNS:{DOMAIN}" in peer_certificate_names(k.c2s_port, DOMAIN)
    out = k.cli("settings", "set", "domain", NEW_DOMAIN).stdout
    assert "reconnect" in out, out

    deadline = time.monotonic() + START
    while True:
        try:
            if stream_answer(k.c2s_port, NEW_DOMAIN) == "features":
                break
        except (OSError, TimeoutError):
            pass  # the service is starting again
        assert time.monotonic() < deadline, "no stream to the new domain:\n" + k.log_tail()
        time.sleep(0.2)
    assert stream_answer(k.c2s_port, DOMAIN) == "host-unknown"
    names = peer_certificate_names(k.c2s_port, NEW_DOMAIN)
    assert f"DNS:{NEW_DOMAIN}" in names and f"DNS:groups.{NEW_DOMAIN}" in names, names
    assert f"DNS:{DOMAIN}," not in names + ",", names
    assert setting(k, "domain").startswith(f'domain = "{NEW_DOMAIN}"')

    # It stays after a restart, and accounts now live under it.
    k.stop()
    k.start()
    assert stream_answer(k.c2s_port, NEW_DOMAIN) == "features"
    assert stream_answer(k.c2s_port, DOMAIN) == "host-unknown"
    k.cli("user", "add", f"alice@{NEW_DOMAIN}", stdin="pw 12345 secret\n")
    res = k.cli("settings", "set", "domain", "elsewhere.test", check=False)
    assert res.returncode != 0 and "account" in res.stderr, res.stderr
    assert stream_answer(k.c2s_port, NEW_DOMAIN) == "features"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what, check, k):
    deadline = time.monotonic() + START
    while not check():
        assert time.monotonic() < deadline, f"{what}:\n" + k.log_tail()
        time.sleep(0.2)


def test_a_listener_moves_without_restarting_the_process(kith_factory):
    k = kith_factory(as_defaults=True)
    k.start()
    pid = k.pid
    old = k.c2s_port
    new = free_port()
    tls = f"127.0.0.1:{k.c2s_tls_port}"
    out = k.cli("settings", "set", "listen.c2s", f"127.0.0.1:{new}").stdout
    assert "reconnect" in out, out
    wait_for("the new c2s port never served", lambda: stream_answer_or_none(new) == "features", k)
    wait_for("the old c2s port stayed open", lambda: not port_open(old), k)
    assert k.pid == pid and k.alive()
    # The other listeners of [listen] came along into the box's settings.
    assert setting(k, "listen.c2s_tls").startswith(f'listen.c2s_tls = "{tls}"')

    # A port already taken: the service goes back to the settings it had, still serving.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        k.cli("settings", "set", "listen.c2s", f"127.0.0.1:{taken}")
        wait_for("no word of going back", lambda: "back to the previous ones" in k.log_tail(), k)
        wait_for("the previous c2s port does not serve",
                 lambda: stream_answer_or_none(new) == "features", k)
        assert k.alive()
        # And a restart with the port still taken starts without the box's listeners.
        k.stop()
        k.c2s_port = free_port()  # the shipped defaults' ports, rewritten for this start
        k.c2s_tls_port = free_port()
        text = k.config.read_text().splitlines()
        text = [f'c2s = "127.0.0.1:{k.c2s_port}"' if ln.startswith("c2s =") else
                f'c2s_tls = "127.0.0.1:{k.c2s_tls_port}"' if ln.startswith("c2s_tls =") else ln
                for ln in text]
        k.config.write_text("\n".join(text) + "\n")
        k.start()
        assert "without the listeners" in k.log_tail(), k.log_tail()
        assert stream_answer(k.c2s_port, DOMAIN) == "features"


def stream_answer_or_none(port: int):
    try:
        return stream_answer(port, DOMAIN)
    except (OSError, TimeoutError):
        return None
