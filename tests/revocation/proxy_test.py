#!/usr/bin/env python3
"""Revocation through an HTTP proxy and with a responder override.

`kyso verify --proxy URL` must send its OCSP POST and CRL GET to the proxy
(absolute URIs in the request line); `--ocsp-url` must replace the AIA
responder. Environment: KYSO, KYSO_PKI, KYSO_TMP. Ports: 8088 (the AIA
responder, kept down here), 8089 (CRLs), 8090 (proxy), 8091 (override
responder). Fails loudly when anything is missing; never skips.
"""
import http.client
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import report, summary  # noqa: E402

KYSO = os.environ.get("KYSO", "")
PKI = os.environ.get("KYSO_PKI", "")
TMP = os.environ.get("KYSO_TMP", "/tmp/kyso-proxy-test")


def p(name):
    return os.path.join(PKI, name)


class Quiet(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(port, handler):
    srv = Quiet(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


seen = []


class Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards absolute-URI requests, as an HTTP proxy does, and records them."""

    def log_message(self, *a):
        pass

    def forward(self, body=None):
        seen.append("%s %s" % (self.command, self.path))
        if not self.path.startswith("http://"):
            self.send_error(400, "proxy needs an absolute URI")
            return
        hostport, _, path = self.path[7:].partition("/")
        host, _, port = hostport.partition(":")
        c = http.client.HTTPConnection(host, int(port or 80), timeout=5)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        c.request(self.command, "/" + path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        self.send_header("Content-Type", r.getheader("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward(self.rfile.read(int(self.headers.get("Content-Length", "0"))))


class Crls(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=os.path.join(TMP, "crls"), **kw)

    def log_message(self, *a):
        pass


def main():
    for need, what in ((KYSO, "KYSO"), (PKI, "KYSO_PKI")):
        if not need:
            report("prerequisites", False, "%s is not set" % what)
            return
    if shutil.which("openssl") is None:
        report("prerequisites", False, "openssl missing")
        return
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(os.path.join(TMP, "crls"))
    shutil.copy(p("root.crl.der"), os.path.join(TMP, "crls", "root.crl"))
    shutil.copy(p("sub.crl.der"), os.path.join(TMP, "crls", "sub.crl"))
    msg = os.path.join(TMP, "m.eml")
    with open(os.path.join(TMP, "plain.eml"), "w") as f:
        f.write("From: vanphong@backan.gov.vn\nTo: a@b.vn\nSubject: proxy\n\nx\n")
    subprocess.run([KYSO, "sign", "--key", "file:" + p("org.key"), "--cert", p("org.pem"),
                    "--chain", p("chain.pem"), "-o", msg, os.path.join(TMP, "plain.eml")],
                   check=True)
    servers = [serve(8089, Crls), serve(8090, Proxy)]
    ocsp = subprocess.Popen(["openssl", "ocsp", "-index", p("ca/sub/index.txt"),
                             "-port", "8091", "-CA", p("sub.pem"),
                             "-rsigner", p("sub.pem"), "-rkey", p("sub.key"), "-ndays", "1"],
                            stdout=open(os.path.join(TMP, "ocsp.log"), "wb"),
                            stderr=subprocess.STDOUT)
    try:
        # Ready when it says so: a probe connection would occupy the
        # single-threaded responder.
        deadline = time.time() + 10
        while b"waiting for OCSP client" not in open(os.path.join(TMP, "ocsp.log"), "rb").read():
            if ocsp.poll() is not None or time.time() > deadline:
                raise RuntimeError("openssl ocsp did not start: %r"
                                   % open(os.path.join(TMP, "ocsp.log"), "rb").read()[-300:])
            time.sleep(0.05)

        def verify(*extra):
            r = subprocess.run([KYSO, "verify", "--trust", p("trust.pem"), "--untrusted",
                                p("chain.pem"), "--json"] + list(extra) + [msg],
                               capture_output=True, text=True, timeout=30)
            return json.loads(r.stdout), r.stderr

        v, err = verify("--ocsp-url", "http://127.0.0.1:8091/")
        s = v["signers"][0]
        report("--ocsp-url replaces the AIA responder (8088 is down)",
               v["result"] == "pass" and s["revocation"] == "good" and s["revocation_source"] == "ocsp",
               "%s %s by %s" % (v["result"], s["revocation"], s["revocation_source"]) + (
                   "" if v["result"] == "pass" else " " + err[-300:]))
        del seen[:]
        v, err = verify("--ocsp-url", "http://127.0.0.1:8091/", "--proxy", "http://127.0.0.1:8090")
        s = v["signers"][0]
        report("through the proxy: verdict unchanged",
               v["result"] == "pass" and s["revocation"] == "good" and s["revocation_source"] == "ocsp",
               "%s %s by %s; %s" % (v["result"], s["revocation"], s["revocation_source"], err[-200:]))
        report("OCSP POST went through the proxy with an absolute URI",
               any(x.startswith("POST http://127.0.0.1:8091/") for x in seen), repr(seen))
        report("CRL GET went through the proxy with an absolute URI",
               "GET http://127.0.0.1:8089/root.crl" in seen, repr(seen))
        v, err = verify("--ocsp-url", "http://127.0.0.1:8091/", "--proxy", "http://127.0.0.1:8099",
                        "--revocation=hard-fail")
        report("proxy down under hard-fail gives temperror", v["result"] == "temperror",
               v["result"])
    finally:
        ocsp.terminate()
        ocsp.wait(timeout=10)
        for srv in servers:
            srv.shutdown()
            srv.server_close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the harness is a failure, never a skip
        report("harness", False, "%s: %s" % (type(e).__name__, e))
    sys.exit(summary())
