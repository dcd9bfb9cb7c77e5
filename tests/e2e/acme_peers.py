"""The real ACME peers for test_certificates.py: Debian's `pebble` (the CA) and
`pebble-challtestsrv` (the DNS pebble resolves through, and its HTTP API that the DNS-01
hook uses), started on free loopback ports, each stopped at teardown.

Pebble's own HTTPS listener needs a certificate: the session's throw-away TestCA signs
one for 127.0.0.1, and kith trusts it through `acme.ca_file`. The root that pebble issues
from is read from its management port (`/roots/0`)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import START, free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path):
    import socket
    deadline = time.monotonic() + START
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not open port {port} in {START}s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen | None):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ChallTestSrv:
    """pebble-challtestsrv: DNS on `dns_port` (every A query answers 127.0.0.1 unless
    told otherwise), management API on `api_port`. Its own HTTP-01/TLS-ALPN-01 answerers
    are off: kith answers those itself."""

    def __init__(self, directory: Path):
        self.dns_port = free_port()
        self.api_port = free_port()
        self.log = directory / "challtestsrv.log"
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns_port}",
             "-management", f"127.0.0.1:{self.api_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.api_port, self.proc, "pebble-challtestsrv", self.log)

    def api(self, path: str, body: dict):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read()

    def stop(self):
        _stop(self.proc)
        self._log.close()


class Pebble:
    """One pebble CA whose validation authority checks HTTP-01 on `http_port` and
    TLS-ALPN-01 on `tls_port` (kith's listeners) and resolves names through `dns`."""

    def __init__(self, directory: Path, test_ca, dns: ChallTestSrv, *, http_port: int,
                 tls_port: int, validity_secs: int = 3600):
        self.dir = directory
        self.port = free_port()
        self.mgmt_port = free_port()
        self.log = directory / "pebble.log"
        cert, key = directory / "pebble-cert.pem", directory / "pebble-key.pem"
        ext = directory / "pebble.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "extendedKeyUsage=serverAuth\n")
        csr = directory / "pebble.csr"
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", "/CN=pebble"], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", test_ca.ca_cert,
                        "-CAkey", test_ca.ca_key, "-CAcreateserial", "-out", cert, "-days",
                        "2", "-sha256", "-extfile", ext], check=True, capture_output=True)
        config = directory / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity_secs,
        }}))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns.dns_port}",
             "-strict=false"], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=directory)
        _wait_port(self.port, self.proc, "pebble", self.log)
        _wait_port(self.mgmt_port, self.proc, "pebble (management)", self.log)
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        ctx = ssl.create_default_context(cafile=str(test_ca.ca_cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/roots/0",
                                    context=ctx, timeout=5) as r:
            self.root_pem = r.read()
        self.root = directory / "pebble-root.pem"
        self.root.write_bytes(self.root_pem)

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """Trusts only pebble's issuing root: a handshake passes only with its chain."""
        ctx = ssl.create_default_context(cafile=str(self.root))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def stop(self):
        _stop(self.proc)
        self._log.close()


class Bind:
    """Debian's BIND (`named`) as the authoritative server of `zone`, answering A
    127.0.0.1 for the zone and `groups.` and taking RFC 2136 updates signed with the TSIG
    key `kith-acme` (hmac-sha256, `secret`). Pebble resolves through it (`dns_port`)."""

    def __init__(self, directory: Path, zone: str, secret: str):
        self.dir = directory / "bind"
        self.dir.mkdir()
        self.dns_port = free_port()
        self.log = self.dir / "named.log"
        (self.dir / "zone.db").write_text(
            f"$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n"
            f"@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n"
            "groups IN A 127.0.0.1\n")
        conf = self.dir / "named.conf"
        conf.write_text(f"""
options {{
    directory "{self.dir}";
    listen-on port {self.dns_port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file none;
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
key "kith-acme" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
    type primary;
    file "{self.dir}/zone.db";
    update-policy {{ grant kith-acme wildcard *.{zone}. TXT; }};
}};
""")
        named = shutil.which("named") or "/usr/sbin/named"
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen([named, "-g", "-n", "1", "-c", str(conf)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.dns_port, self.proc, "named", self.log)

    def stop(self):
        _stop(self.proc)
        self._log.close()


class AriDouble:
    """Test double for what pebble 2.4 does not do, as an HTTPS front for pebble's
    directory; every other ACME request goes to pebble directly (its URLs are absolute).

    - ACME Renewal Information (RFC 9773): the directory gets `renewalInfo` pointing at
      the front, which answers `GET /renewal-info/<certificate id>` with a suggested
      window — for the first certificate id it sees, `first_window` seconds from now
      (renew now-ish); for any other, 30 minutes from now — and `Retry-After: 3600`.
      `asked` lists the certificate ids queried.
    - `refuse_orders=(status, problem type, detail)`: the directory's `newOrder` points at
      the front, which refuses every order with that problem document, as a CA does for
      a rate limit (429 `rateLimited`) or a CAA record that forbids it (403 `caa`)."""

    def __init__(self, pebble: "Pebble", test_ca, first_window: int = 2,
                 refuse_orders: tuple[int, str, str] | None = None):
        import http.server
        import threading
        from datetime import datetime, timedelta, timezone

        self.asked: list[str] = []
        double = self
        upstream = ssl.create_default_context(cafile=str(test_ca.ca_cert))

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, body: bytes, headers: dict):
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/dir":
                    with urllib.request.urlopen(pebble.directory, context=upstream,
                                                timeout=5) as r:
                        d = json.loads(r.read())
                    d["renewalInfo"] = f"https://127.0.0.1:{double.port}/renewal-info"
                    if refuse_orders:
                        d["newOrder"] = f"https://127.0.0.1:{double.port}/new-order"
                    return self._send(200, json.dumps(d).encode(),
                                      {"Content-Type": "application/json"})
                if self.path.startswith("/renewal-info/"):
                    cert_id = self.path.rsplit("/", 1)[1]
                    if cert_id not in double.asked:
                        double.asked.append(cert_id)
                    first = double.asked[0] == cert_id
                    now = datetime.now(timezone.utc)
                    start = now + (timedelta(seconds=first_window) if first
                                   else timedelta(minutes=30))
                    end = start + timedelta(seconds=1)
                    fmt = "%Y-%m-%dT%H:%M:%SZ"
                    body = {"suggestedWindow": {"start": start.strftime(fmt),
                                                "end": end.strftime(fmt)}}
                    return self._send(200, json.dumps(body).encode(),
                                      {"Content-Type": "application/json",
                                       "Retry-After": "3600"})
                self._send(404, b"", {})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/new-order" and refuse_orders:
                    code, kind, detail = refuse_orders
                    double.refused += 1
                    body = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail,
                            "status": code}
                    return self._send(code, json.dumps(body).encode(),
                                      {"Content-Type": "application/problem+json",
                                       "Retry-After": "3600"})
                self._send(404, b"", {})

        self.refused = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pebble.dir / "pebble-cert.pem", pebble.dir / "pebble-key.pem")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
