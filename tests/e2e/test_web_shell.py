"""The web shell at `/`: a household member signs in with their chat account's address
and password in Debian's chromium (playwright-core, by role and accessible name), stays
signed in when the browser is remembered, sees and signs out their browsers (live, over
the event stream), changes their password, reads the pages in German, and does it all
with the keyboard alone. Pages come over HTTP/2 with a strict CSP and no inline code;
forms without the page's CSRF token are refused. Screenshots (phone and desktop, light
and dark) land in tests/artifacts/web-shell/."""

import asyncio
import http.client
import json
import re
import shutil
import socket
import subprocess
import urllib.parse

import pytest

from conftest import DOMAIN, PASSWORD, REPO, STEP, RawXmpp, NS_SASL, run
from test_hardening import sasl_plain_from

WEB = REPO / "tests" / "web"
ARTIFACTS = REPO / "tests" / "artifacts" / "web-shell"


# --------------------------------------------------------------------------- helpers


def browser(scenario: str, server, tmp_path, **cfg) -> list[dict]:
    """Run one scenario of tests/web/shell.mjs in chromium; its steps."""
    if not (WEB / "node_modules" / "playwright-core").exists() or not shutil.which("chromium"):
        pytest.fail("browser tests need tests/setup.sh to have run (playwright-core, chromium)")
    cfg = {"url": server.https_url, "user": f"alice@{DOMAIN}", "password": PASSWORD,
           "profile": str(tmp_path / "profiles"), "shots": str(ARTIFACTS), **cfg}
    res = subprocess.run(["node", str(WEB / "shell.mjs"), scenario, json.dumps(cfg)],
                         cwd=str(WEB), capture_output=True, text=True, timeout=120)
    steps = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    print(f"{scenario}: {steps}")
    assert res.returncode == 0 and steps and steps[-1]["step"] == "done", (
        f"scenario {scenario} failed; steps {steps}\n{res.stderr[-4000:]}\n"
        f"--- kith ---\n{server.log_tail()}")
    return steps


def step(steps: list[dict], name: str) -> dict:
    return next(s for s in steps if s["step"] == name)


class Http:
    """A browser-like HTTPS client (HTTP/1.1, http.client): keeps cookies, reads the
    CSRF token off pages, and may come from another loopback address."""

    def __init__(self, server, source: str | None = None):
        self.server = server
        self.source = source
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None,
                headers: dict | None = None, body: bytes | None = None):
        conn = http.client.HTTPSConnection(DOMAIN, self.server.https_port, timeout=STEP,
                                           context=self.server.https_context())

        def connect():
            src = (self.source, 0) if self.source else None
            sock = socket.create_connection(("127.0.0.1", conn.port), conn.timeout,
                                            source_address=src)
            conn.sock = conn._context.wrap_socket(sock, server_hostname=DOMAIN)
        conn.connect = connect
        h = {"Host": f"{DOMAIN}:{self.server.https_port}"}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        conn.close()
        for c in resp.msg.get_all("Set-Cookie") or []:
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return resp, text

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    @staticmethod
    def csrf(page: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m, "no CSRF token on the page"
        return m.group(1)

    def sign_in(self, user: str = "alice", password: str = PASSWORD, remember=False):
        _, page = self.get("/")
        form = {"csrf": self.csrf(page), "address": f"{user}@{DOMAIN}", "password": password}
        if remember:
            form["remember"] = "on"
        return self.request("POST", "/sign-in", form=form)

    def signed_in(self) -> bool:
        resp, page = self.get("/")
        assert resp.status == 200, (resp.status, page[:300])
        return "/sign-out" in page


def title(page: str) -> str:
    m = re.search(r"<title>(.*?)</title>", page, re.S)
    return m.group(1).strip() if m else ""


# --------------------------------------------------------------------------- in chromium


def test_sign_in_and_sign_out_in_chromium_over_http2(web_kith, tmp_path):
    steps = browser("sign-in-out", web_kith, tmp_path)
    assert step(steps, "signed-in")["protocol"] == "h2"
    cookie = step(steps, "cookie")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax", cookie
    assert cookie["expires"] == -1, "a browser that is not remembered gets a session cookie"
    # Signed out on the server too: the account has no browser left.
    assert "Sign out everywhere" not in Http(web_kith).get("/browsers")[1]


def test_wrong_passwords_are_limited_like_xmpp_logins(web_kith, tmp_path, test_ca):
    """Five wrong passwords from the browser's address; then the right one is refused for
    a minute — and so are XMPP logins from that address, and password logins to alice
    from an address she never used: one limiter for both doors."""
    steps = browser("wrong-password", web_kith, tmp_path, attempts=5)
    assert step(steps, "wrong")["seen"] == ["Wrong address or password."] * 5
    assert "Too many sign-in attempts from your address" in step(
        steps, "right-after-limit")["text"]
    ctx = test_ca.client_context()
    assert sasl_plain_from(web_kith, ctx, "127.0.0.1", "bob", PASSWORD) == [
        "temporary-auth-failure"]
    assert sasl_plain_from(web_kith, ctx, "127.0.0.2", "alice", PASSWORD) == [
        "temporary-auth-failure"]
    assert sasl_plain_from(web_kith, ctx, "127.0.0.2", "bob", PASSWORD) == ["success"]
    # And the other way round: XMPP guesses count against the web form.
    for i in range(5):
        assert sasl_plain_from(web_kith, ctx, "127.0.0.3", "carol", f"guess {i}") == [
            "not-authorized"]
    resp, page = Http(web_kith, source="127.0.0.3").sign_in("carol")
    assert resp.status == 429 and "Too many sign-in attempts" in page


def test_remember_this_browser_survives_a_browser_restart(web_kith, tmp_path):
    steps = browser("remember", web_kith, tmp_path)
    assert step(steps, "restarted") == {"step": "restarted", "remembered": True,
                                       "forgotten": False}


def test_sign_out_everywhere_from_a_second_browser(web_kith, tmp_path):
    """Browser A lists its browsers; B signs in and A's list grows by itself (the event
    stream); B signs out everywhere and A is sent to the sign-in page by itself."""
    steps = browser("everywhere", web_kith, tmp_path)
    assert step(steps, "a-list")["rows"] == 1
    assert step(steps, "a-list-live")["rows"] == 2
    assert step(steps, "a-signed-out")


def test_pages_in_german(web_kith, tmp_path):
    steps = browser("language", web_kith, tmp_path)
    assert step(steps, "german")["lang"] == "de"
    assert step(steps, "accept-language")


def test_keyboard_only_sign_in(web_kith, tmp_path):
    steps = browser("keyboard", web_kith, tmp_path)
    order = step(steps, "signed-in")["order"]
    # The skip link comes first, then the form in reading order.
    assert order[0] == "Skip to content", order
    assert order.index("address") < order.index("password") < order.index("remember")


def test_screenshots_phone_and_desktop_light_and_dark(web_kith, tmp_path):
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    steps = browser("screenshots", web_kith, tmp_path)
    shots = [s["path"] for s in steps if s["step"] == "shot"]
    assert len(shots) == 12, shots
    for s in shots:
        data = open(s, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, s


# --------------------------------------------------------------------------- over HTTP


def test_http2_is_negotiated_by_curl_and_http1_still_works(web_kith):
    if not shutil.which("curl"):
        pytest.fail("curl is missing (Debian package curl)")
    url = f"{web_kith.https_url}/"
    resolve = f"{DOMAIN}:{web_kith.https_port}:127.0.0.1"
    common = ["curl", "-sS", "--cacert", str(web_kith.ca.ca_cert), "--resolve", resolve,
              "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--max-time", "10"]
    h2 = subprocess.run(common + ["--http2", url], capture_output=True, text=True)
    assert h2.stdout == "2 200", (h2.stdout, h2.stderr)
    h1 = subprocess.run(common + ["--http1.1", url], capture_output=True, text=True)
    assert h1.stdout == "1.1 200", (h1.stdout, h1.stderr)
    # Many requests on one HTTP/2 connection (a browser's tabs and their event streams).
    many = subprocess.run(common[:-2] + ["--http2", "--parallel", "--parallel-max", "20"]
                          + [url] * 40, capture_output=True, text=True)
    assert many.stdout.count("2 200") == 40, (many.stdout, many.stderr)


def test_http2_requests_get_the_same_limits(web_kith, tmp_path):
    """Over HTTP/2 too: headers over the request-head limit are refused (431), a form
    body over 16 KiB gets the 413 page, and the server stays small."""
    resolve = f"{DOMAIN}:{web_kith.https_port}:127.0.0.1"
    common = ["curl", "-sS", "--http2", "--cacert", str(web_kith.ca.ca_cert), "--resolve",
              resolve, "-w", "%{http_version} %{http_code}", "--max-time", "10"]
    url = f"{web_kith.https_url}/"
    big = subprocess.run(common + ["-o", "/dev/null", "-H", "X-Junk: " + "a" * 20000, url],
                         capture_output=True, text=True)
    assert big.stdout == "2 431", (big.stdout, big.stderr)
    body = tmp_path / "form.txt"
    body.write_bytes(b"password=" + b"a" * 65536)
    page = tmp_path / "page.html"
    post = subprocess.run(common + ["-o", str(page), "-X", "POST", "--data-binary", f"@{body}",
                                    "-H", "Content-Type: application/x-www-form-urlencoded",
                                    url + "sign-in"], capture_output=True, text=True)
    assert post.stdout == "2 413", (post.stdout, post.stderr)
    assert "<h1>Something went wrong</h1>" in page.read_text()
    web_kith.assert_memory_bounded()


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def check_page_headers(resp, page: str, path: str):
    csp = resp.getheader("Content-Security-Policy") or ""
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'",
                      "form-action 'self'"):
        assert directive in csp, (path, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
    for k, v in SECURITY_HEADERS.items():
        assert resp.getheader(k) == v, (path, k, resp.getheader(k))
    assert resp.getheader("Strict-Transport-Security", "").startswith("max-age="), path
    if (resp.getheader("Content-Type") or "").startswith("text/html"):
        assert resp.getheader("Cache-Control") == "no-store", path
        # No inline code anywhere: every script has a src, no style element or attribute,
        # no event-handler attribute, nothing from another origin.
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert "<style" not in page and " style=" not in page, path
        assert not re.search(r"\son[a-z]+=", page), path
        assert not re.search(r"(src|href)=\"(https?:)?//", page), path
        assert "panicked" not in page and "stack backtrace" not in page, path


def test_every_page_has_a_strict_csp_and_the_security_headers(web_kith):
    c = Http(web_kith)
    pages = {}
    for path in ("/", "/no/such/page", "/browsers", "/password"):
        pages[path] = c.get(path)
    resp, page = c.sign_in()
    assert resp.status == 303
    for path in ("/", "/browsers", "/password", "/?done=signed-out", "/no/such/page"):
        pages["in " + path] = c.get(path)
    pages["forged form"] = c.request("POST", "/sign-out", form={"csrf": "forged"})
    pages["bad form"] = c.request("POST", "/password", body=b"\xff\xfe",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    for name, (resp, page) in pages.items():
        check_page_headers(resp, page, name)
    assert pages["/no/such/page"][0].status == 404
    assert pages["forged form"][0].status == 403
    assert pages["bad form"][0].status == 400
    # The assets the pages name: hashed names, cached for a year, right types.
    home = pages["in /"][1]
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', home)
    assert len(assets) == 2, assets
    for a in assets:
        assert re.fullmatch(r"/assets/app\.[0-9a-f]{16}\.(js|css)", a), a
        resp, body = c.get(a)
        assert resp.status == 200 and body
        assert resp.getheader("Cache-Control") == "public, max-age=31536000, immutable"
        assert resp.getheader("Content-Type").startswith(
            "text/javascript" if a.endswith(".js") else "text/css")
        check_page_headers(resp, "", a)
    assert c.get("/assets/app.0000000000000000.js")[0].status == 404


def test_forms_without_the_pages_csrf_token_are_refused(web_kith):
    """A signed-in browser's forms need the token of its own page: missing, forged,
    another browser's, or sent from another site (Origin, Sec-Fetch-Site), each is
    refused with a page, and the session is untouched."""
    alice = Http(web_kith)
    assert alice.sign_in()[0].status == 303
    token = Http.csrf(alice.get("/browsers")[1])
    mallory = Http(web_kith)
    mallory.sign_in("bob")
    bobs = Http.csrf(mallory.get("/browsers")[1])
    for form, headers in (({}, {}),
                          ({"csrf": "forged"}, {}),
                          ({"csrf": bobs}, {}),
                          ({"csrf": token}, {"Origin": "https://evil.example"}),
                          ({"csrf": token}, {"Sec-Fetch-Site": "cross-site"})):
        resp, page = alice.request("POST", "/browsers/sign-out-everywhere", form=form,
                                   headers=headers)
        assert resp.status == 403, (form, headers, resp.status)
        assert "did not come from this box" in page
    assert alice.signed_in()
    # The sign-in form too: without its token nobody is signed in (login CSRF).
    fresh = Http(web_kith)
    resp, _ = fresh.request("POST", "/sign-in", form={"address": "alice", "password": PASSWORD})
    assert resp.status == 403 and "__Host-kith-session" not in fresh.cookies
    # With the right token, the same request works.
    resp, _ = alice.request("POST", "/browsers/sign-out-everywhere", form={"csrf": token},
                            headers={"Origin": web_kith.https_url, "Sec-Fetch-Site": "same-origin"})
    assert resp.status == 303 and not alice.signed_in()


def test_a_new_session_id_at_every_sign_in(web_kith):
    """Session fixation: a session cookie planted before sign-in is never adopted, and
    every sign-in gets a new id."""
    c = Http(web_kith)
    c.cookies["__Host-kith-session"] = "planted-by-an-attacker-0123456789abcdefABCDEF"
    assert c.sign_in()[0].status == 303
    first = c.cookies["__Host-kith-session"]
    assert first != "planted-by-an-attacker-0123456789abcdefABCDEF"
    assert c.sign_in()[0].status == 303
    second = c.cookies["__Host-kith-session"]
    assert second != first
    # The first id no longer works.
    old = Http(web_kith)
    old.cookies["__Host-kith-session"] = first
    assert not old.signed_in()
    assert c.signed_in()


def test_a_password_change_signs_out_the_other_browsers(web_kith, test_ca):
    laptop, phone = Http(web_kith), Http(web_kith)
    laptop.sign_in(remember=True)
    phone.sign_in()
    page = laptop.get("/password")[1]
    resp, page = laptop.request("POST", "/password", form={
        "csrf": Http.csrf(page), "current": "wrong", "new": "new secret", "repeat": "new secret"})
    assert resp.status == 401 and "Wrong address or password." in page
    resp, page = laptop.request("POST", "/password", form={
        "csrf": Http.csrf(page), "current": PASSWORD, "new": "new secret", "repeat": "other"})
    assert resp.status == 400 and "The two new passwords differ." in page
    resp, _ = laptop.request("POST", "/password", form={
        "csrf": Http.csrf(page), "current": PASSWORD, "new": "new secret",
        "repeat": "new secret"})
    assert resp.status == 303 and resp.getheader("Location") == "/?done=password-changed"
    assert laptop.signed_in(), "the browser that changed the password stays signed in"
    assert not phone.signed_in(), "the other browser is signed out"
    ctx = test_ca.client_context()
    assert sasl_plain_from(web_kith, ctx, "127.0.0.1", "alice", "new secret") == ["success"]
    assert sasl_plain_from(web_kith, ctx, "127.0.0.1", "alice", PASSWORD) == [
        "not-authorized"]
    # The CLI's password change signs out every browser.
    web_kith.cli("user", "passwd", f"alice@{DOMAIN}", stdin="third secret\n")
    assert not laptop.signed_in()


def test_roles_are_read_from_the_account(web_kith):
    web_kith.cli("user", "role", f"alice@{DOMAIN}", "admin")
    assert "is admin" in web_kith.cli("user", "role", f"alice@{DOMAIN}").stdout
    alice, bob = Http(web_kith), Http(web_kith)
    alice.sign_in()
    bob.sign_in("bob")
    assert '<span class="badge">admin</span>' in alice.get("/")[1]
    assert '<span class="badge">member</span>' in bob.get("/")[1]
    # A role change applies on the next page, without signing in again.
    web_kith.cli("user", "role", f"alice@{DOMAIN}", "member")
    assert '<span class="badge">member</span>' in alice.get("/")[1]
    # The admin signs out every browser of an account from the command line.
    out = web_kith.cli("user", "sign-out", f"alice@{DOMAIN}").stdout
    assert "signed out 1 browser(s)" in out, out
    assert not alice.signed_in() and bob.signed_in()
    # Deleting the account ends its browsers' sessions.
    web_kith.cli("user", "del", f"bob@{DOMAIN}")
    assert not bob.signed_in()


def test_kith_serve_prints_the_address_of_its_page(web_kith):
    log = web_kith.log_path.read_text(errors="replace")
    m = re.search(r"open (https://\S+/) in a browser", log)
    assert m, log[-2000:]
    assert m.group(1) == f"https://{DOMAIN}:{web_kith.https_port}/"
    resp, page = Http(web_kith).get("/")
    assert resp.status == 200 and "Sign in" in page
