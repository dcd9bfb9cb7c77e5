"""Converse.js, the npm package (pinned in tests/web/package.json), in Debian's chromium
driven by playwright-core: alice logs in from the browser (WebSocket found through
host-meta, or BOSH), chats with bob on slixmpp, and shares a file bob downloads. A
screenshot of the conversation is kept in tests/artifacts/."""

import asyncio
import base64
import functools
import http.server
import json
import os
import secrets
import shutil
import threading
import urllib.parse

import aiohttp
import pytest

from conftest import DOMAIN, PASSWORD, REPO, STEP, online, run

WEB = REPO / "tests" / "web"
ARTIFACTS = REPO / "tests" / "artifacts"
NS_MAM = "urn:xmpp:mam:2"


@pytest.fixture
def test_page():
    """tests/web served over plain HTTP on a free loopback port (a secure context)."""
    missing = [p for p in (WEB / "node_modules" / "converse.js", WEB / "node_modules" /
                           "playwright-core") if not p.exists()]
    if missing or not shutil.which("chromium") or not shutil.which("node"):
        pytest.fail(f"browser tests need tests/setup.sh to have run (missing: "
                    f"{[str(m) for m in missing] or 'chromium/node'})")
    handler = functools.partial(QuietHandler, directory=str(WEB))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/converse.html"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Browser:
    """The node/Playwright driver as a subprocess: steps come as JSON lines."""

    def __init__(self, proc):
        self.proc = proc
        self.seen: list[dict] = []

    @classmethod
    async def start(cls, cfg: dict) -> "Browser":
        proc = await asyncio.create_subprocess_exec(
            "node", str(WEB / "converse_chat.mjs"), json.dumps(cfg), cwd=str(WEB),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def step(self, name: str, timeout: float = STEP * 3) -> dict:
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            except asyncio.TimeoutError:
                raise AssertionError(f"no '{name}' from the browser in {timeout}s; "
                                     f"steps {self.seen}") from None
            if not line:
                err = (await self.proc.stderr.read()).decode(errors="replace")
                raise AssertionError(f"the browser driver ended before '{name}'; "
                                     f"steps {self.seen}:\n{err[-3000:]}")
            ev = json.loads(line)
            self.seen.append(ev)
            if ev["step"] == name:
                return ev

    async def tell(self, word: str):
        self.proc.stdin.write(word.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self):
        rc = await asyncio.wait_for(self.proc.wait(), STEP * 3)
        err = (await self.proc.stderr.read()).decode(errors="replace")
        assert rc == 0, f"browser driver exited {rc}:\n{err[-3000:]}"

    def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()


async def befriend(server, a: str, b: str):
    """Mutual presence subscription between two accounts (they are contacts)."""
    async with online(server, a) as x, online(server, b) as y:
        for one, other in ((x, y), (y, x)):
            one.send_presence_subscription(pto=other.boundjid.bare)
            await other.next_presence(lambda p: p["type"] == "subscribe")
            other.send_presence(pto=one.boundjid.bare, ptype="subscribed")
            await one.next_presence(lambda p: p["type"] == "subscribed")


def page_url(base: str, **params) -> str:
    return base + "?" + urllib.parse.urlencode(params)


async def converse_session(server, base_url: str, transport: str, *, upload: bool):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"converse-{transport}.png"
    params = {"jid": f"alice@{DOMAIN}", "password": PASSWORD}
    if os.environ.get("KITH_BROWSER_LOG"):
        params["loglevel"] = "debug"
    if transport == "bosh":
        params["bosh_service_url"] = f"https://{DOMAIN}:{server.https_port}/http-bind"
    data = secrets.token_bytes(20_000)
    cfg = {
        "page": page_url(base_url, **params), "httpsPort": server.https_port,
        "domain": DOMAIN, "peer": f"bob@{DOMAIN}", "send": f"hi bob, from Converse over "
        f"{transport}", "expect": "hi alice, from slixmpp", "screenshot": str(shot),
    }
    if upload:
        cfg["upload"] = {"name": "notes.bin", "type": "application/octet-stream",
                         "base64": base64.b64encode(data).decode()}
    await befriend(server, "alice", "bob")
    async with online(server, "bob") as bob:
        browser = await Browser.start(cfg)
        try:
            if transport == "websocket":
                hm = await browser.step("host-meta")
                assert hm["status"] == 200
            await browser.step("connected")
            await browser.step("sent")
            msg = await bob.next_message(timeout=STEP * 2)
            assert msg["body"] == cfg["send"]
            assert str(msg["from"]).startswith(f"alice@{DOMAIN}/")
            bob.send_message(mto=msg["from"], mbody=cfg["expect"], mtype="chat")
            await browser.step("received")
            if upload:
                await browser.step("uploading")
                shared = await bob.next_message(timeout=STEP * 3)
                url = shared["body"]  # Converse sends the GET URL as the body (and OOB)
                assert url.startswith(f"https://{DOMAIN}:{server.https_port}/upload/"), url
                async with aiohttp.ClientSession() as s:
                    async with s.get(url, ssl=server.ca.client_context()) as r:
                        assert r.status == 200
                        assert await r.read() == data
                await browser.tell("downloaded")
            await browser.step("screenshot")
            await browser.finish()
        finally:
            browser.kill()
    assert shot.stat().st_size > 10_000
    return shot


def test_converse_over_websocket_found_by_host_meta_chats_and_shares_a_file(web_kith,
                                                                             test_page):
    run(converse_session(web_kith, test_page, "websocket", upload=True), timeout=180)


def test_converse_loads_history_from_mam(web_kith, test_page):
    """Converse shows a conversation that happened before this login (MAM, XEP-0313)."""
    async def scenario():
        async with online(web_kith, "alice") as alice, online(web_kith, "bob") as bob:
            info = await alice.plugin["xep_0030"].get_info(jid=f"alice@{DOMAIN}",
                                                           timeout=STEP)
            assert NS_MAM in info["disco_info"]["features"], "Kith advertises MAM"
            await befriend(web_kith, "alice", "bob")
            bob.send_message(mto=f"alice@{DOMAIN}", mbody="remember the milk", mtype="chat")
            await alice.next_message()
        cfg = {
            "page": page_url(test_page, jid=f"alice@{DOMAIN}", password=PASSWORD),
            "httpsPort": web_kith.https_port, "domain": DOMAIN, "peer": f"bob@{DOMAIN}",
            "history": "remember the milk", "send": "milk: bought",
            "expect": "milk: bought", "screenshot": str(ARTIFACTS / "converse-mam.png"),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        browser = await Browser.start(cfg)
        try:
            await browser.step("history")
            await browser.step("screenshot")
            await browser.finish()
        finally:
            browser.kill()
    run(scenario(), timeout=120)


def test_converse_over_bosh_chats(web_kith, test_page):
    run(converse_session(web_kith, test_page, "bosh", upload=False), timeout=180)


def test_converse_in_a_group_chat(web_kith, test_page):
    """Converse.js enters a members-only room it was made a member of, shows what was
    said before it came (history on entering), and talks with a slixmpp occupant."""
    async def scenario():
        from test_muc import create, groupchat, say, set_aff
        async with online(web_kith, "alice") as alice:
            room = await create(alice, "family", "mum", {"muc#roomconfig_roomname": "Family"})
            await set_aff(alice, room, f"bob@{DOMAIN}", "member")
            await say(alice, room, "welcome to the family room")
            assert (await groupchat(alice, room))["body"] == "welcome to the family room"
            cfg = {
                "page": page_url(test_page, jid=f"bob@{DOMAIN}", password=PASSWORD,
                                 room=room, nick="bob"),
                "httpsPort": web_kith.https_port, "domain": DOMAIN, "peer": room,
                "room": room, "history": "welcome to the family room",
                "send": "hello from Converse", "expect": "hi bob, from slixmpp",
                "screenshot": str(ARTIFACTS / "converse-muc.png"),
            }
            ARTIFACTS.mkdir(exist_ok=True)
            browser = await Browser.start(cfg)
            try:
                await browser.step("connected")
                await browser.step("room-open")
                await browser.step("history")
                await browser.step("sent")
                while True:
                    m = await groupchat(alice, room)
                    if m["from"].resource == "bob":
                        break
                assert m["body"] == "hello from Converse"
                await say(alice, room, "hi bob, from slixmpp")
                await browser.step("received")
                await browser.step("screenshot")
                await browser.finish()
            finally:
                browser.kill()
    run(scenario(), timeout=120)
