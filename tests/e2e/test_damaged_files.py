"""A bad day on the card: Kith's files found damaged at start (empty, cut short, garbage —
what a power cut or a failing SD card leaves). What the box wrote itself is made again
(the self-signed certificate and key) or put back from its last good copy (the box's
settings), with a log line saying so; what a human wrote (the configuration file) is never
changed: kith refuses to start with one line naming the file and what to do."""

import socket
import ssl
import subprocess

import pytest

from conftest import DOMAIN, KITH_BIN, STEP


def started_saying(k) -> str:
    """Start `k`; what it logged during this start."""
    before = k.log_path.stat().st_size if k.log_path.exists() else 0
    k.start()
    with open(k.log_path, "rb") as f:
        f.seek(before)
        return f.read().decode(errors="replace")


def served_certificate(k) -> bytes:
    """The certificate kith presents on Direct TLS (DER); the handshake completes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", k.c2s_tls_port), timeout=STEP) as s:
        with ctx.wrap_socket(s, server_hostname=DOMAIN) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der, "no certificate presented"
    return der


@pytest.mark.parametrize("damage", ["empty cert", "truncated cert", "truncated key",
                                    "garbage key"])
def test_a_damaged_self_signed_pair_is_made_again(kith_factory, damage):
    k = kith_factory(tls_files=False)
    k.start()
    first = served_certificate(k)
    k.stop()
    tls = k.data_dir / "tls"
    cert, key = tls / "cert.pem", tls / "key.pem"
    if damage == "empty cert":
        cert.write_bytes(b"")
    elif damage == "truncated cert":
        cert.write_bytes(cert.read_bytes()[:100])
    elif damage == "truncated key":
        key.write_bytes(key.read_bytes()[:60])
    else:
        key.write_bytes(b"\0" * 200)

    said = started_saying(k)
    assert "the self-signed certificate or its key is damaged" in said, said
    assert "making a new pair" in said, said
    again = served_certificate(k)
    assert again != first, "a new certificate is served"
    assert (key.stat().st_mode & 0o777) == 0o600
    # The next start keeps the new pair.
    k.stop()
    said = started_saying(k)
    assert "damaged" not in said, said
    assert served_certificate(k) == again


@pytest.mark.parametrize("damage", [b"", b"[limits]\noffline_max = ", b"\xff\xfe\0\0",
                                    b"limits = 5\n"])
def test_damaged_box_settings_are_restored_from_their_last_good_copy(kith_factory, damage):
    k = kith_factory()
    k.start()
    k.cli("settings", "set", "limits.offline_max", "7")
    settings = k.data_dir / "settings.toml"
    whole = settings.read_bytes()
    k.stop()
    settings.write_bytes(damage)

    said = started_saying(k)
    assert "the box's settings file was damaged" in said, said
    assert "restored its last good copy" in said, said
    assert "settings.toml.damaged" in said, said
    assert settings.read_bytes() == whole
    assert (k.data_dir / "settings.toml.damaged").read_bytes() == damage, "kept for a human"
    got = k.cli("settings", "get", "limits.offline_max").stdout.strip()
    assert got.startswith("limits.offline_max = 7"), got


def test_damaged_box_settings_without_a_good_copy_still_start(kith_factory):
    k = kith_factory()
    k.data_dir.mkdir(parents=True)
    (k.data_dir / "settings.toml").write_bytes(b"\0" * 64)
    said = started_saying(k)
    assert "was damaged" in said and "there is no good copy" in said, said
    assert (k.data_dir / "settings.toml.damaged").exists()
    # The next change writes a whole file again.
    k.cli("settings", "set", "limits.offline_max", "9")
    assert "offline_max = 9" in (k.data_dir / "settings.toml").read_text()


@pytest.mark.parametrize("damage", ["domain = \"cut short", "[listen\nc2s = 1", "\0\0\0"])
def test_a_damaged_configuration_file_is_refused_with_one_clear_line(kith_factory, damage):
    k = kith_factory()
    k.config.write_text(damage)
    res = subprocess.run([str(KITH_BIN), "--config", str(k.config), "serve"],
                         capture_output=True, text=True, timeout=STEP * 2)
    assert res.returncode != 0, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("kith: "), lines
    assert str(k.config) in lines[0], lines
    assert "kith never changes this file" in lines[0], lines
    assert k.config.read_text() == damage, "the admin's file is left as it was"
