"""A full disk: Kith keeps serving, and every message is either stored or bounced with an
error to its sender — none disappears. The data dir is a small tmpfs made for the test."""

import asyncio
import contextlib
import os
import subprocess

import pytest

from conftest import DOMAIN, STEP, online, run

BOB = f"bob@{DOMAIN}"


@contextlib.contextmanager
def small_disk(path, size="3m"):
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}): the full-disk test "
                    "needs root (tests/run.sh as root, or under sudo)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory) -> str:
    """Write a file until the disk is full; return its path."""
    filler = os.path.join(directory, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(100_000):  # bounded: 100 000 × 4 KiB far exceeds the tmpfs
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: the disk is full
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_bounces_offline_messages_and_loses_none(kith_factory):
    k = kith_factory()
    with small_disk(k.data_dir):
        k.add_user("alice")
        k.add_user("bob")
        k.start()

        async def scenario():
            async with online(k, "alice") as alice:
                filler = fill(str(k.data_dir))
                sent = {}
                for i in range(60):  # bob is offline: each one goes to offline storage
                    msg = alice.make_message(mto=BOB, mbody=f"note {i} " + "x" * 1000,
                                             mtype="chat")
                    msg["id"] = f"m{i}"
                    msg.send()
                    sent[f"m{i}"] = i
                # A ping round-trip: every message above has been handled.
                await alice.plugin["xep_0199"].ping(DOMAIN, timeout=STEP)
                bounced = set()
                while True:
                    try:
                        m = await alice.next_message(timeout=1.0, body_only=False)
                    except asyncio.TimeoutError:
                        break
                    if m["type"] == "error":
                        bounced.add(m["id"])
                assert bounced, "with the disk full, some messages must bounce with an error"
                assert k.alive(), "kith must keep running on a full disk"

                # Room again: what was not bounced was stored and reaches bob, in order.
                os.remove(filler)
                async with online(k, "bob") as bob:
                    got = []
                    while True:
                        try:
                            m = await bob.next_message(timeout=2.0)
                        except asyncio.TimeoutError:
                            break
                        got.append(m["body"].split(" ")[1])
                expected = [str(i) for mid, i in sorted(sent.items(), key=lambda kv: kv[1])
                            if mid not in bounced]
                assert got == expected, (f"stored {len(expected)}, bounced {len(bounced)}, "
                                         f"bob got {len(got)}")
        run(scenario(), timeout=90)
        k.stop()
