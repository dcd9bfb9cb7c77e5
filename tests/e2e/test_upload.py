"""HTTP File Upload (XEP-0363): alice shares a file from slixmpp, bob downloads the
same bytes; sizes, quotas and slot URLs are enforced."""

import asyncio
import io
import secrets
import ssl
import time
import urllib.parse

import aiohttp
import aiohttp.connector
import pytest
from slixmpp.exceptions import IqError
from slixmpp.jid import JID

from conftest import DOMAIN, NS_STANZAS, STEP, online, run

NS_UPLOAD = "urn:xmpp:http:upload:0"
UPLOAD = f"upload.{DOMAIN}"


@pytest.fixture(autouse=True)
def trust_test_ca(test_ca):
    """slixmpp's upload uses aiohttp's default verified TLS context; let it trust the
    test CA, as a phone would trust the household's certificate."""
    aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cafile=str(test_ca.ca_cert))


def tls(server) -> ssl.SSLContext:
    return server.ca.client_context()


async def http(server, method: str, url: str, **kw):
    """One request; returns (status, headers, body)."""
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, ssl=tls(server),
                             timeout=aiohttp.ClientTimeout(total=STEP * 3), **kw) as r:
            return r.status, r.headers, await r.read()


async def slot(client, filename: str, size: int, ctype: str = "application/octet-stream"):
    iq = await client.plugin["xep_0363"].request_slot(JID(UPLOAD), filename, size, ctype,
                                                      timeout=STEP)
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


def with_upload(client):
    client.register_plugin("xep_0363")
    return client


def test_alice_shares_a_photo_and_bob_downloads_the_same_bytes(web_kith):
    photo = secrets.token_bytes(300_000)

    async def scenario():
        async with online(web_kith, "alice") as alice, online(web_kith, "bob") as bob:
            with_upload(alice)
            url = await alice.plugin["xep_0363"].upload_file(
                "cat photo.jpg", size=len(photo), content_type="image/jpeg",
                input_file=io.BytesIO(photo), timeout=STEP)
            assert url.startswith(f"https://{DOMAIN}:{web_kith.https_port}/upload/")
            assert url.endswith("/cat%20photo.jpg")
            alice.send_message(mto=f"bob@{DOMAIN}", mbody=url, mtype="chat")
            msg = await bob.next_message()
            status, headers, body = await http(web_kith, "GET", msg["body"])
            assert status == 200
            assert body == photo
            assert headers["Content-Type"] == "image/jpeg"
            assert headers["Content-Disposition"] == "inline; filename*=UTF-8''cat%20photo.jpg"
            assert headers["Access-Control-Allow-Origin"] == "*"
            assert "sandbox" in headers["Content-Security-Policy"]
            # A range, as a video player or a resumed download asks for.
            status, headers, body = await http(web_kith, "GET", url,
                                               headers={"Range": "bytes=1000-1999"})
            assert status == 206
            assert body == photo[1000:2000]
            assert headers["Content-Range"] == f"bytes 1000-1999/{len(photo)}"
            status, _, _ = await http(web_kith, "GET", url,
                                      headers={"Range": f"bytes={len(photo)}-"})
            assert status == 416
    run(scenario())


def test_the_service_is_discoverable_with_its_size_limit(web_kith_factory):
    server = web_kith_factory(upload={"max_file_size": 5000})

    async def scenario():
        async with online(server, "alice") as alice:
            items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=STEP)
            assert UPLOAD in [i[0] for i in items["disco_items"]["items"]]
            info = await alice.plugin["xep_0030"].get_info(jid=UPLOAD, timeout=STEP)
            assert NS_UPLOAD in info["disco_info"]["features"]
            assert any(i[:2] == ("store", "file") for i in info["disco_info"]["identities"])
            form = info["disco_info"]["form"].get_values()
            assert form["max-file-size"] == "5000"
    run(scenario())


def test_a_file_over_the_size_limit_gets_file_too_large(web_kith_factory):
    server = web_kith_factory(upload={"max_file_size": 5000})

    async def scenario():
        async with online(server, "alice") as alice:
            with_upload(alice)
            with pytest.raises(IqError) as e:
                await slot(alice, "big.bin", 5001)
            err = e.value.iq["error"]
            assert err["condition"] == "not-acceptable" and err["type"] == "modify"
            too_large = e.value.iq.xml.find(f".//{{{NS_UPLOAD}}}file-too-large")
            assert too_large is not None
            assert too_large.find(f"{{{NS_UPLOAD}}}max-file-size").text == "5000"
            # Exactly at the limit is fine.
            put, _ = await slot(alice, "ok.bin", 5000)
            status, _, _ = await http(server, "PUT", put, data=b"x" * 5000,
                                      headers={"Content-Type": "application/octet-stream"})
            assert status == 201
    run(scenario())


def test_the_quota_is_enforced_per_account(web_kith_factory):
    server = web_kith_factory(upload={"quota": 10_000})

    async def scenario():
        async with online(server, "alice") as alice, online(server, "bob") as bob:
            with_upload(alice)
            with_upload(bob)
            put, _ = await slot(alice, "a.bin", 8000)
            status, _, _ = await http(server, "PUT", put, data=b"a" * 8000)
            assert status == 201
            with pytest.raises(IqError) as e:
                await slot(alice, "b.bin", 3000)
            assert e.value.iq["error"]["condition"] == "resource-constraint"
            assert e.value.iq["error"]["type"] == "wait"
            # Two slots granted before either upload: the second PUT is refused.
            p1, _ = await slot(alice, "c.bin", 1500)
            p2, _ = await slot(alice, "d.bin", 1500)
            assert (await http(server, "PUT", p1, data=b"c" * 1500))[0] == 201
            assert (await http(server, "PUT", p2, data=b"d" * 1500))[0] == 413
            # bob's quota is his own.
            put, _ = await slot(bob, "b.bin", 3000)
            assert (await http(server, "PUT", put, data=b"b" * 3000))[0] == 201
    run(scenario())


def tamper(url: str, **changes) -> str:
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    q.update(changes)
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def test_tampered_reused_and_mismatched_slots_are_refused(web_kith):
    async def scenario():
        async with online(web_kith, "alice") as alice:
            with_upload(alice)
            data = b"z" * 1000
            put, get = await slot(alice, "z.bin", 1000)
            for bad in (tamper(put, size="2000"), tamper(put, owner="bob"),
                        tamper(put, sig="00" * 32), tamper(put, expires=str(2**40)),
                        put.replace("/z.bin", "/y.bin"), put.split("?")[0]):
                status, _, _ = await http(web_kith, "PUT", bad, data=data)
                assert status == 403, bad
            assert (await http(web_kith, "GET", get))[0] == 404  # nothing stored
            assert (await http(web_kith, "PUT", put, data=data[:999]))[0] == 400
            assert (await http(web_kith, "PUT", put, data=data + b"!"))[0] == 413
            assert (await http(web_kith, "PUT", put, data=data,
                               headers={"Content-Type": "text/html"}))[0] in (201, 400)
            put2, get2 = await slot(alice, "page.html", 10, "text/plain")
            assert (await http(web_kith, "PUT", put2, data=b"<b>hi</b>!",
                               headers={"Content-Type": "text/html"}))[0] == 400
            assert (await http(web_kith, "PUT", put2, data=b"<b>hi</b>!",
                               headers={"Content-Type": "text/plain"}))[0] == 201
            assert (await http(web_kith, "PUT", put2, data=b"<b>hi</b>!",
                               headers={"Content-Type": "text/plain"}))[0] == 409
            status, headers, body = await http(web_kith, "GET", get2)
            assert status == 200 and body == b"<b>hi</b>!"
            assert headers["Content-Disposition"].startswith("attachment;")
    run(scenario())


def test_an_expired_slot_is_refused(web_kith_factory):
    server = web_kith_factory(upload={"slot_lifetime_secs": 1})

    async def scenario():
        async with online(server, "alice") as alice:
            with_upload(alice)
            put, _ = await slot(alice, "late.bin", 10)
            expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(put).query))
                          ["expires"])
            # Wall-clock expiry: wait until the slot's second has passed (bounded).
            while time.time() <= expires + 1:
                await asyncio.sleep(0.2)
            status, _, body = await http(server, "PUT", put, data=b"0123456789")
            assert status == 403 and b"expired" in body
    run(scenario())


def test_a_browser_on_another_origin_gets_cors(web_kith):
    async def scenario():
        status, headers, _ = await http(
            web_kith, "OPTIONS", f"{web_kith.https_url}/upload/{'0' * 32}/x.bin",
            headers={"Origin": "https://elsewhere.example",
                     "Access-Control-Request-Method": "PUT"})
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "PUT" in headers["Access-Control-Allow-Methods"]
    run(scenario())


def test_a_1gb_upload_is_streamed_to_disk_not_memory(web_kith_factory):
    """A 1 GiB PUT: the server's peak RSS grows by far less than the file (the body is
    streamed to disk), and the bytes on disk are the bytes sent."""
    size = 1024 * 1024 * 1024
    server = web_kith_factory(upload={"max_file_size": size, "quota": size})
    chunk = secrets.token_bytes(1024 * 1024)

    async def body():
        for _ in range(size // len(chunk)):
            yield chunk

    async def scenario():
        async with online(server, "alice") as alice:
            with_upload(alice)
            put, get = await slot(alice, "film.mkv", size, "video/x-matroska")
            before = server.peak_rss_kib()
            async with aiohttp.ClientSession() as s:
                async with s.put(put, data=body(), ssl=tls(server),
                                 headers={"Content-Length": str(size),
                                          "Content-Type": "video/x-matroska"},
                                 timeout=aiohttp.ClientTimeout(total=600)) as r:
                    assert r.status == 201, await r.text()
            grown = server.peak_rss_kib() - before
            assert grown < 32 * 1024, f"peak RSS grew by {grown} KiB during a 1 GiB upload"
            status, headers, tail = await http(server, "GET", get,
                                               headers={"Range": "bytes=-1048576"})
            assert status == 206 and tail == chunk
            assert headers["Content-Range"] == f"bytes {size - len(chunk)}-{size - 1}/{size}"
        files = list((server.data_dir / "uploads" / "files").iterdir())
        assert [f.stat().st_size for f in files] == [size]
        assert not list((server.data_dir / "uploads" / "tmp").iterdir())
        for f in files:  # do not leave a gigabyte in the test's temporary directory
            f.unlink()
    run(scenario(), timeout=900)


def test_files_older_than_the_retention_are_deleted(web_kith_factory):
    """A file uploaded (by the database's clock) 31 days ago is gone once the server has
    swept (at start, then hourly); a fresh one stays."""
    import sqlite3
    server = web_kith_factory(upload={"retention_days": 30})

    async def upload_two():
        async with online(server, "alice") as alice:
            with_upload(alice)
            urls = []
            for name in ("old.txt", "new.txt"):
                put, get = await slot(alice, name, 3, "text/plain")
                assert (await http(server, "PUT", put, data=b"abc",
                                   headers={"Content-Type": "text/plain"}))[0] == 201
                urls.append(get)
            return urls
    old, new = run(upload_two())
    server.stop()
    db = sqlite3.connect(server.data_dir / "kith.db")
    with db:
        db.execute("UPDATE uploads SET created = created - 31 * 86400 "
                   "WHERE filename = 'old.txt'")
    db.close()
    server.start()

    async def check():
        deadline = time.monotonic() + STEP
        while (await http(server, "GET", old))[0] != 404:
            assert time.monotonic() < deadline, "the expired file is still served"
            await asyncio.sleep(0.2)
        status, _, body = await http(server, "GET", new)
        assert status == 200 and body == b"abc"
    run(check())
    assert len(list((server.data_dir / "uploads" / "files").iterdir())) == 1
