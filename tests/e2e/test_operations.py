"""Running the box: the `kith` command, its config file, restarts and shutdown."""

import asyncio
import os
import signal
import socket
import subprocess

import pytest

from conftest import (DOMAIN, KITH_BIN, NS_SASL, PASSWORD, START, STEP, RawXmpp, exchange,
                      online, run)


def plain_login_works(k, ctx, user, password) -> bool:
    raw = RawXmpp(k.c2s_port)
    try:
        raw.starttls(ctx)
        raw.mechanisms()
        return raw.auth_plain(user, password).tag == f"{{{NS_SASL}}}success"
    finally:
        raw.close()


def test_unknown_config_key_is_refused_by_name(kith_factory):
    k = kith_factory()
    k.config.write_text(k.config.read_text().replace("[limits]", "[limits]\nstanza_sise = 5"))
    try:
        res = subprocess.run([str(KITH_BIN), "--config", str(k.config), "serve"],
                             capture_output=True, text=True, timeout=START)
    except subprocess.TimeoutExpired:
        pytest.fail("kith served with an unknown config key")
    assert res.returncode != 0
    assert "stanza_sise" in res.stderr + res.stdout, res.stderr


@pytest.mark.parametrize("key,line", [("c2s", 'c2s = "not an address"'),
                                      ("domainn", 'domainn = "typo.example"')])
def test_bad_config_values_are_refused_by_name(kith_factory, key, line):
    k = kith_factory()
    text = k.config.read_text()
    if key == "c2s":
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("c2s ="))
        text = text.replace("[listen]", "[listen]\n" + line)
    else:
        text = line + "\n" + text
    k.config.write_text(text)
    try:
        res = subprocess.run([str(KITH_BIN), "--config", str(k.config), "serve"],
                             capture_output=True, text=True, timeout=START)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kith served with a bad {key}")
    assert res.returncode != 0
    assert key in res.stderr + res.stdout, res.stderr


def test_user_add_for_another_domain_is_refused(kith_factory):
    k = kith_factory()
    res = k.cli("user", "add", "mallory@elsewhere.example", stdin="pw\n", check=False)
    assert res.returncode != 0, "created an account for a domain this server does not serve"
    assert "mallory@elsewhere.example" not in k.cli("user", "list").stdout


def test_port_in_use_is_one_clear_error(kith_factory):
    k = kith_factory()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", k.c2s_port))
        squatter.listen()
        try:
            res = subprocess.run([str(KITH_BIN), "--config", str(k.config), "serve"],
                                 capture_output=True, text=True, timeout=START)
        except subprocess.TimeoutExpired:
            pytest.fail("kith kept running without its c2s port")
    assert res.returncode != 0
    assert str(k.c2s_port) in res.stderr + res.stdout, res.stderr


def test_user_add_list_passwd_del(kith_factory, test_ca):
    k = kith_factory()
    k.add_user("alice")
    k.add_user("bob")
    dup = k.cli("user", "add", f"alice@{DOMAIN}", stdin="other\n", check=False)
    assert dup.returncode != 0, "adding an existing user twice must fail"
    listed = k.cli("user", "list").stdout.split()
    assert f"alice@{DOMAIN}" in listed and f"bob@{DOMAIN}" in listed, listed
    k.start()
    ctx = test_ca.client_context()
    assert plain_login_works(k, ctx, "alice", PASSWORD)

    k.cli("user", "passwd", f"alice@{DOMAIN}", stdin="new secret\n")
    assert plain_login_works(k, ctx, "alice", "new secret")
    assert not plain_login_works(k, ctx, "alice", PASSWORD)

    k.cli("user", "del", f"bob@{DOMAIN}")
    assert f"bob@{DOMAIN}" not in k.cli("user", "list").stdout.split()
    assert not plain_login_works(k, ctx, "bob", PASSWORD)


def test_passwords_are_not_stored_in_clear(kith_factory):
    k = kith_factory()
    secret = "a very memorable secret 12345"
    k.add_user("alice", secret)
    for f in k.data_dir.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"password in clear in {f}"


def test_sigterm_closes_every_stream_and_exits_cleanly(kith):
    async def scenario():
        async with online(kith, "alice") as alice, online(kith, "bob") as bob:
            await exchange(alice, bob)
            kith.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.shield(alice.gone), STEP)
            await asyncio.wait_for(asyncio.shield(bob.gone), STEP)
            if not alice.stream_errors.empty():
                err = alice.stream_errors.get_nowait()
                assert err["condition"] == "system-shutdown", err
    run(scenario())
    assert kith.proc.wait(STEP) == 0, kith.log_tail()


def test_offline_messages_and_vcards_survive_a_restart(kith):
    async def before():
        async with online(kith, "alice") as alice:
            card = alice.plugin["xep_0054"].make_vcard()
            card["FN"] = "Alice"
            await alice.plugin["xep_0054"].publish_vcard(card, timeout=STEP)
            alice.send_message(mto=f"bob@{DOMAIN}", mbody="see you after the reboot")
            await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
    run(before())
    assert kith.stop() == 0
    kith.start()

    async def after():
        from slixmpp import JID
        async with online(kith, "bob") as bob:
            assert (await bob.next_message())["body"] == "see you after the reboot"
            card = await bob.plugin["xep_0054"].get_vcard(JID(f"alice@{DOMAIN}"), local=False,
                                                          timeout=STEP)
            assert card["vcard_temp"]["FN"] == "Alice"
    run(after())


def test_ready_is_notified_to_systemd(kith_factory, tmp_path):
    """With NOTIFY_SOCKET set (Type=notify units), kith sends READY=1 once it serves."""
    k = kith_factory()
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(START)
        k.start(extra_env={"NOTIFY_SOCKET": path})
        seen = b""
        while b"READY=1" not in seen:
            try:
                seen += notify.recv(4096) + b"\n"
            except socket.timeout:
                pytest.fail(f"no READY=1 on NOTIFY_SOCKET; got {seen!r}")


def test_kith_config_env_names_the_config_file(kith_factory):
    k = kith_factory()
    k.add_user("alice")
    env = dict(os.environ, KITH_CONFIG=str(k.config))
    res = subprocess.run([str(KITH_BIN), "user", "list"], env=env, capture_output=True,
                         text=True, timeout=START)
    assert res.returncode == 0, res.stderr
    assert f"alice@{DOMAIN}" in res.stdout.split()
