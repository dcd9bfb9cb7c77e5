"""Time before trust: a box just back from a power-off serves the household at once, says
that its time is not confirmed, and says when it becomes so (here the "synchronised" flag
is a file the test creates, as systemd-timesyncd does in /run/systemd/timesync/)."""

import sqlite3
import time

from conftest import DOMAIN, STEP, age_archive, online, run


def wait_for_log(k, text: str, timeout: float = STEP) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = k.log_path.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged within {timeout}s:\n{k.log_tail()}")


def test_unconfirmed_time_serves_and_says_when_it_is_confirmed(kith_factory, tmp_path):
    flag = tmp_path / "synchronized"
    k = kith_factory(time_sync_flag=str(flag))
    k.add_user("alice")
    k.add_user("bob")
    k.start()
    wait_for_log(k, "time not confirmed")

    async def chat():
        async with online(k, "alice") as alice, online(k, "bob") as bob:
            alice.send_message(mto=f"bob@{DOMAIN}", mbody="the clock is late", mtype="chat")
            got = await bob.next_message(STEP)
            assert got["body"] == "the clock is late"
    run(chat())  # the household is served while time is unconfirmed
    assert "time confirmed" not in k.log_path.read_text(errors="replace")

    flag.write_text("")
    log = wait_for_log(k, "time confirmed: the clock is synchronised")
    assert "moved_secs" in log, log


def test_history_is_not_pruned_by_an_unconfirmed_clock(kith_factory, tmp_path):
    """Archive retention deletes nothing until time is confirmed; then it does."""
    flag = tmp_path / "synchronized"
    k = kith_factory(time_sync_flag=str(flag))
    k.add_user("alice")
    k.add_user("bob")
    k.start()

    async def chat():
        async with online(k, "alice") as alice, online(k, "bob") as bob:
            alice.send_message(mto=f"bob@{DOMAIN}", mbody="old", mtype="chat")
            await bob.next_message(STEP)
    run(chat())
    k.stop()
    age_archive(k.data_dir / "kith.db", 30 * 86400 * 1_000_000)

    def archived() -> int:
        con = sqlite3.connect(k.data_dir / "kith.db", timeout=STEP)
        try:
            return con.execute("SELECT COUNT(*) FROM archive").fetchone()[0]
        finally:
            con.close()

    before = archived()
    assert before > 0
    k.config.write_text(k.config.read_text()
                        + "\n[archive]\nretention_days = 7\nprune_interval_secs = 1\n")
    k.start()
    wait_for_log(k, "time not confirmed")
    time.sleep(3)  # three pruner rounds
    assert archived() == before, "pruned by a clock that is not confirmed"

    flag.write_text("")
    deadline = time.monotonic() + STEP
    while archived() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert archived() == 0, "history past its retention is pruned once time is confirmed"
