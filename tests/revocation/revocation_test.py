#!/usr/bin/env python3
"""Online revocation test: `kyso verify` and kyso-milter against live OCSP
responders and CRL distribution points on 127.0.0.1.

Environment (docs/TEST-LAYOUT.md):
  KYSO         the kyso CLI under test
  KYSO_MILTER  the kyso-milter binary under test
  KYSO_PKI     a prepared PKI (certs/setup.sh); copied, never modified.  When
               unset or not prepared, certs/mkpki.sh makes a fresh one.
  KYSO_TMP     scratch directory for this test
Optional:
  REV_SMTP_PORT / REV_SINK_PORT  private Postfix and sink ports (10125/10126)

Ports: the test certificates name the OCSP responder http://127.0.0.1:8088
and the CRL distribution points http://127.0.0.1:8089/{sub,root}.crl, so the
responders must listen there (CTest lock kyso_revocation_ports_8088_8089).
The milter scenarios run their own Postfix instance (tests/e2e/
postfix_instance.sh) and sink (tests/e2e/smtp_sink.py) on 10125/10126, so
they never collide with tests/e2e (lock kyso_revocation_ports_10125_10126).

The PKI copy (KYSO_TMP/pki) gets extra material made here with the PKI's own
CA configuration (ca/ca.cnf): an OCSP responder certificate delegated by
`sub` (id-kp-OCSPSigning), one wrongly delegated by `root`, a second
intermediate `sub2` (CRL DP .../root2.crl) with a leaf
sub2leaf@backan.gov.vn, a root CRL revoking sub2 (root2.crl), fresh CRLs and
a stale `sub` CRL (nextUpdate in the past).

Responders: `openssl ocsp -port 8088` (a fresh process per scenario: it reads
its index once; requests are counted from its "Received request" log lines),
and in-process Python servers: a CRL server (logs every GET), a replaying OCSP
responder (a captured answer with someone else's nonce) and a responder that
accepts and reads but never answers.

Output: `ok - name` / `not ok - name: reason`, `# ...` diagnostics, and
`N passed, M failed` last.  Exit status 1 on any failure; anything missing
is a failure, never a skip.  Needs root (Postfix instance).
"""

import email
import email.header
import email.policy
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import Fail, check, diag, excerpt, report, run, tail, tally  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
E2E = os.path.join(REPO, "tests", "e2e")
MKPKI = os.path.join(REPO, "certs", "mkpki.sh")

OCSP_PORT = 8088
CRL_PORT = 8089
SMTP_PORT = int(os.environ.get("REV_SMTP_PORT", "10125"))
SINK_PORT = int(os.environ.get("REV_SINK_PORT", "10126"))
OCSP_URL = "http://127.0.0.1:%d" % OCSP_PORT
CRL_BASE = "http://127.0.0.1:%d" % CRL_PORT
AUTHSERV_ID = "mail.backan.gov.vn"
TAG_PASS = "[Signed]"
TAG_FAIL = "[INVALID SIGNATURE]"
TAG_TEMP = "[UNCHECKED]"
DELIVERY_WAIT = 20.0
NO_DELIVERY_WAIT = 3.0




def expect(cond, what):
    if not cond:
        raise Fail(what)


def run(argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("timeout", 60)
    return subprocess.run(argv, **kw)


def must(argv, what, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise Fail("%s failed (exit %d): %s" % (what, r.returncode,
                                              excerpt(r.stderr + r.stdout)))
    return r


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace")
                             .splitlines()[-n:])
    except OSError as e:
        return "(%s)" % e


def utc(offset_seconds=0, digits=4):
    t = time.gmtime(time.time() + offset_seconds)
    fmt = "%Y%m%d%H%M%SZ" if digits == 4 else "%y%m%d%H%M%SZ"
    return time.strftime(fmt, t)


# --------------------------------------------------------------------------
# ports: who listens, without connecting (a probe connection would be a
# request to the responder and spoil the counts)

def listening(port):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if (cols[3] == "0A"
                            and int(cols[1].rsplit(":", 1)[1], 16) == port):
                        return True
        except OSError:
            continue
    return False


def wait_port(port, up, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port) == up:
            return True
        time.sleep(0.02)
    return False


def ensure_free(port, what):
    if listening(port) and not wait_port(port, False, 3.0):
        raise Fail("127.0.0.1:%d (%s) is already in use by another process"
                   % (port, what))


# --------------------------------------------------------------------------
# responders

LIVE = []  # everything that must be stopped at exit


class OcspResponder:
    """`openssl ocsp` as responder on OCSP_PORT, a fresh process each time."""

    def __init__(self, env, rsigner="sub.pem", rkey="sub.key", ca="sub",
                 name="ocsp"):
        self.env, self.rsigner, self.rkey, self.ca = env, rsigner, rkey, ca
        self.log = os.path.join(env.tmp, "%s-%d.log" % (name, env.seq()))
        self.proc = None

    def __enter__(self):
        ensure_free(OCSP_PORT, "OCSP")
        p = self.env.p
        cadir = os.path.join(self.env.pki, "ca", self.ca)
        self.logf = open(self.log, "wb")
        # stdbuf: -req_text goes to stdout, which must reach the log as it
        # happens (requests are counted per serial number from it).
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "openssl", "ocsp",
             "-index", os.path.join(cadir, "index.txt"),
             "-port", str(OCSP_PORT), "-CA", os.path.join(cadir, "ca.pem"),
             "-rsigner", p(self.rsigner), "-rkey", p(self.rkey),
             "-ndays", "1", "-req_text"],
            stdout=self.logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        LIVE.append(self)
        with open(self.env.ocsp_pidfile, "w") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("openssl ocsp exited with %d: %s"
                           % (self.proc.returncode, tail(self.log, 5)))
            if ("waiting for OCSP client" in self.text()
                    and listening(OCSP_PORT)):
                return self
            time.sleep(0.02)
        self.stop()
        raise Fail("openssl ocsp not listening on %d after 10 s: %s"
                   % (OCSP_PORT, tail(self.log, 5)))

    def text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def requests(self):
        return self.text().count("Received request")

    def serials(self):
        """Serial numbers asked for, in order (from -req_text)."""
        return re.findall(r"Serial Number: ([0-9A-F]+)", self.text())

    def asked(self, cert):
        """Requests about cert (a PKI file name): other processes on this
        host may ask the same responder about other certificates."""
        return self.serials().count(self.env.serial(cert))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self in LIVE:
            LIVE.remove(self)
        try:
            os.unlink(self.env.ocsp_pidfile)
        except FileNotFoundError:
            pass
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None
        wait_port(OCSP_PORT, False, 3.0)

    def __exit__(self, *a):
        self.stop()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass


class HttpServer:
    """An in-process HTTP server on 127.0.0.1:port; every request is logged
    in .log as (method, path)."""

    def __init__(self, port, name):
        self.port, self.name = port, name
        self.log = []
        self.lock = threading.Lock()

    def handler(self):
        raise NotImplementedError

    def __enter__(self):
        ensure_free(self.port, self.name)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                              self.handler())
        srv.daemon_threads = True
        self.srv = srv
        self.thread = threading.Thread(target=srv.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        LIVE.append(self)
        return self

    def record(self, method, path):
        with self.lock:
            self.log.append((method, path))

    def count(self, method=None, path=None):
        with self.lock:
            return sum(1 for m, p in self.log
                       if (method is None or m == method)
                       and (path is None or p == path))

    def stop(self):
        if getattr(self, "srv", None) is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None
        if self in LIVE:
            LIVE.remove(self)

    def __exit__(self, *a):
        self.stop()


class CrlServer(HttpServer):
    """Serves files {"/sub.crl": bytes, ...} on CRL_PORT."""

    def __init__(self, files):
        super().__init__(CRL_PORT, "CRL server")
        self.files = dict(files)

    def handler(self):
        outer = self

        class H(_Quiet):
            def do_GET(self):
                outer.record("GET", self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        return H


class ReplayOcsp(HttpServer):
    """Answers every OCSP POST with the same captured response."""

    def __init__(self, response):
        super().__init__(OCSP_PORT, "replaying OCSP responder")
        self.response = response

    def handler(self):
        outer = self

        class H(_Quiet):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.record("POST", self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(outer.response)))
                self.end_headers()
                self.wfile.write(outer.response)
        return H


class SilentServer:
    """Accepts connections on OCSP_PORT and reads, but never answers."""

    def __init__(self):
        self.conns = []
        self.accepted = 0
        self.stopping = threading.Event()

    def __enter__(self):
        ensure_free(OCSP_PORT, "silent responder")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", OCSP_PORT))
        s.listen(16)
        s.settimeout(0.05)
        self.sock = s
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        LIVE.append(self)
        return self

    def loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self.drain, args=(c,), daemon=True).start()

    def drain(self, c):
        c.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                if not c.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stopping.set()
        if getattr(self, "thread", None):
            self.thread.join(2)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        if getattr(self, "sock", None):
            self.sock.close()
            self.sock = None
        if self in LIVE:
            LIVE.remove(self)

    def __exit__(self, *a):
        self.stop()


def stop_everything():
    for thing in list(reversed(LIVE)):
        try:
            thing.stop()
        except Exception as e:
            diag("cleanup of %s: %s" % (type(thing).__name__, e))


# --------------------------------------------------------------------------
# the PKI copy and the extra material

OCSP_EXT = """\
[v3_ocsp]
basicConstraints        = critical, CA:FALSE
keyUsage                = critical, digitalSignature
extendedKeyUsage        = OCSPSigning
subjectKeyIdentifier    = hash
authorityKeyIdentifier  = keyid:always
"""


class Env:
    def __init__(self):
        self.kyso = os.environ.get("KYSO", "")
        self.milter_bin = os.environ.get("KYSO_MILTER", "")
        src_pki = os.environ.get("KYSO_PKI", "")
        tmp = os.environ.get("KYSO_TMP", "")
        self._seq = 0
        self._serials = {}
        problems = []
        if not self.kyso or not os.access(self.kyso, os.X_OK):
            problems.append("KYSO=%r is not an executable" % self.kyso)
        if not tmp:
            problems.append("KYSO_TMP is not set")
        os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        for tool in ("openssl", "stdbuf"):
            if not shutil.which(tool):
                problems.append("%s is not installed" % tool)
        if not os.path.isfile(MKPKI):
            problems.append("%s is missing" % MKPKI)
        if problems:
            raise Fail("; ".join(problems))
        self.tmp = os.path.abspath(tmp)
        os.makedirs(self.tmp, exist_ok=True)
        self.ocsp_pidfile = os.path.join(self.tmp, "ocsp.pid")
        self.stop_stale_responder()
        self.pki = os.path.join(self.tmp, "pki")
        self.msgs = os.path.join(self.tmp, "msg")
        shutil.rmtree(self.pki, ignore_errors=True)
        shutil.rmtree(self.msgs, ignore_errors=True)
        for name in os.listdir(self.tmp):
            if re.fullmatch(r"(cache-.*|.*\.log|.*\.der)", name):
                p = os.path.join(self.tmp, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
        os.makedirs(self.msgs)
        if src_pki and os.path.exists(os.path.join(src_pki, ".done")):
            # A copy: the CA databases change here (new certificates, a
            # revoked intermediate), never in the shared PKI.
            shutil.copytree(src_pki, self.pki, symlinks=True)
            self.pki_origin = "copy of %s" % src_pki
        else:
            must(["bash", MKPKI, self.pki], "certs/mkpki.sh", timeout=120)
            self.pki_origin = "made by certs/mkpki.sh (KYSO_PKI %s)" % (
                "unset" if not src_pki else "not prepared")
        self.p = lambda f: os.path.join(self.pki, f)
        self.cnf = self.p("ca/ca.cnf")
        for f in ("trust.pem", "chain.pem", "sub.pem", "sub.key", "org.pem",
                  "org.key", "revoked.pem", "revoked.key", "leader.pem",
                  "leader.key", "rogue.pem", "rogue.key", "ca/ca.cnf",
                  "ca/sub/index.txt", "ca/root/index.txt"):
            if not os.path.isfile(self.p(f)):
                raise Fail("PKI (%s) lacks %s" % (self.pki_origin, f))

    def stop_stale_responder(self):
        """The responder of a run that was killed (CTest's timeout) would
        still hold the port: end it, if it is ours (its index is here)."""
        try:
            pid = int(open(self.ocsp_pidfile).read())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if (b"ocsp" in argv and any(a.startswith(self.tmp.encode())
                                        for a in argv)):
                os.kill(pid, signal.SIGKILL)
                diag("ended the OCSP responder of an earlier run (pid %d)"
                     % pid)
                wait_port(OCSP_PORT, False, 3.0)
        except (OSError, ValueError):
            pass

    def seq(self):
        self._seq += 1
        return self._seq

    def serial(self, cert):
        if cert not in self._serials:
            r = must(["openssl", "x509", "-in", self.p(cert), "-noout",
                      "-serial"], "openssl x509 -serial")
            self._serials[cert] = r.stdout.decode().strip().split("=")[1]
        return self._serials[cert]

    # ---- openssl ca with the PKI's configuration
    def ca_env(self, ca, san="nobody@invalid", cdp=CRL_BASE + "/root.crl"):
        e = dict(os.environ)
        e.update(CADIR=self.p("ca/" + ca), SAN_EMAIL=san, CDP_URL=cdp,
                 OCSP_URL=OCSP_URL, OPENSSL_CONF=self.cnf, LC_ALL="C.UTF-8")
        return e

    def genkey(self, name):
        must(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
              "rsa_keygen_bits:2048", "-out", self.p(name + ".key")],
             "genpkey " + name)

    def issue(self, name, ca, profile, subj, san="nobody@invalid",
              cdp=CRL_BASE + "/root.crl", extfile=None):
        self.genkey(name)
        csr = self.p("ca/%s.csr" % name)
        env = self.ca_env(ca, san, cdp)
        must(["openssl", "req", "-new", "-utf8", "-config", self.cnf, "-key",
              self.p(name + ".key"), "-subj", subj, "-out", csr],
             "req " + name, env=env)
        argv = ["openssl", "ca", "-batch", "-utf8", "-config", self.cnf,
                "-notext", "-preserveDN", "-extensions", profile,
                "-startdate", utc(-86400), "-enddate", utc(2 * 365 * 86400),
                "-in", csr, "-out", self.p(name + ".pem")]
        if extfile:
            argv[argv.index("-extensions"):argv.index("-extensions")] = [
                "-extfile", extfile]
        must(argv, "ca " + name, env=env)
        os.unlink(csr)

    def gencrl(self, ca, out, *extra):
        must(["openssl", "ca", "-batch", "-config", self.cnf, "-gencrl",
              "-out", self.p(out)] + list(extra) + (
                  [] if any(x.startswith("-crl_") for x in extra)
                  else ["-crldays", "30"]),
             "gencrl %s" % out, env=self.ca_env(ca))

    def der(self, name):
        r = must(["openssl", "crl", "-in", self.p(name), "-outform", "DER"],
                 "crl -outform DER %s" % name)
        return r.stdout

    def pem(self, name):
        with open(self.p(name), "rb") as f:
            return f.read()

    def extra_material(self):
        ext = self.p("ca/ocsp-ext.cnf")
        with open(ext, "w") as f:
            f.write(OCSP_EXT)
        # Fresh CRLs (a shared PKI may be old) before anything is revoked.
        self.gencrl("sub", "sub-now.crl")
        self.gencrl("root", "root-now.crl")
        # A stale sub CRL: both dates in the past.
        self.gencrl("sub", "sub-stale.crl", "-crl_lastupdate",
                    utc(-40 * 86400), "-crl_nextupdate", utc(-10 * 86400))
        # Delegated OCSP responders: by sub (right), by root (wrong CA).
        self.issue("ocsp-sub", "sub", "v3_ocsp",
                   "/C=VN/O=Kyso Test/CN=Kyso Test OCSP Responder (sub)",
                   extfile=ext)
        self.issue("ocsp-root", "root", "v3_ocsp",
                   "/C=VN/O=Kyso Test/CN=Kyso Test OCSP Responder (root)",
                   extfile=ext)
        # A second intermediate under root, with a leaf, then revoked.
        ca2 = self.p("ca/sub2")
        os.makedirs(os.path.join(ca2, "newcerts"), exist_ok=True)
        open(os.path.join(ca2, "index.txt"), "w").close()
        with open(os.path.join(ca2, "crlnumber"), "w") as f:
            f.write("1000\n")
        self.issue("sub2", "root", "v3_sub",
                   "/C=VN/O=Kyso Test/CN=Kyso Test Second Signing CA",
                   cdp=CRL_BASE + "/root2.crl")
        shutil.copy(self.p("sub2.pem"), os.path.join(ca2, "ca.pem"))
        shutil.copy(self.p("sub2.key"), os.path.join(ca2, "ca.key"))
        self.issue("sub2leaf", "sub2", "v3_signer",
                   "/C=VN/ST=Bắc Kạn/O=UBND tỉnh Bắc Kạn/CN=Đinh Văn Hai",
                   san="sub2leaf@backan.gov.vn", cdp=CRL_BASE + "/sub2.crl")
        self.gencrl("sub2", "sub2.crl")
        must(["openssl", "ca", "-batch", "-config", self.cnf, "-revoke",
              self.p("sub2.pem"), "-crl_reason", "cACompromise"],
             "revoke sub2", env=self.ca_env("root"))
        self.gencrl("root", "root2.crl")
        with open(self.p("chain2.pem"), "wb") as f:
            f.write(self.pem("sub.pem") + self.pem("sub2.pem"))
        # A forger's "sub": sub's name, the rogue key, a huge cRLNumber and
        # no revocations (scenario 3d: CRL cache poisoning).
        fake = self.p("ca/fakesub")
        os.makedirs(os.path.join(fake, "newcerts"), exist_ok=True)
        open(os.path.join(fake, "index.txt"), "w").close()
        with open(os.path.join(fake, "crlnumber"), "w") as f:
            f.write("7FFFFFFF\n")
        sub_subject = must(["openssl", "x509", "-in", self.p("sub.pem"), "-noout", "-subject",
                            "-nameopt", "RFC2253"], "sub subject").stdout.decode().strip()
        sub_subject = sub_subject.split("=", 1)[1].strip()
        must(["openssl", "req", "-x509", "-new", "-key", self.p("rogue.key"), "-days", "30",
              "-subj", "/" + "/".join(reversed(sub_subject.split(","))),
              "-out", os.path.join(fake, "ca.pem")], "forged sub certificate")
        shutil.copy(self.p("rogue.key"), os.path.join(fake, "ca.key"))
        self.gencrl("fakesub", "sub-forged.crl")
        # What the CRL server serves: DER, as RFC 5280 4.2.1.13 wants
        # (scenario 3c serves PEM on purpose).
        self.crl = {
            "/sub.crl": self.der("sub-now.crl"),
            "/root.crl": self.der("root-now.crl"),
            "/sub-stale.crl": self.der("sub-stale.crl"),
            "/root2.crl": self.der("root2.crl"),
            "/sub2.crl": self.der("sub2.crl"),
            "/sub-forged.crl": self.der("sub-forged.crl"),
        }
        self.crl_pem = {"/sub.crl": self.pem("sub-now.crl"),
                        "/root.crl": self.pem("root-now.crl")}
        r = must(["openssl", "crl", "-in", self.p("sub-now.crl"), "-noout",
                  "-text"], "crl -text")
        expect(b"Serial Number" in r.stdout,
               "fresh sub CRL revokes nothing (revoked.pem missing?)")

    # ---- messages
    def sign(self, name, who, subject, chain="chain.pem"):
        addr = {"org": "vanphong@backan.gov.vn",
                "leader": "chutich@backan.gov.vn",
                "revoked": "revoked@backan.gov.vn",
                "sub2leaf": "sub2leaf@backan.gov.vn"}[who]
        msgid = "%s.%d.%s@rev.test" % (name, os.getpid(), self.seq())
        plain = os.path.join(self.msgs, name + ".plain.eml")
        out = os.path.join(self.msgs, name + ".eml")
        with open(plain, "wb") as f:
            f.write(("From: %s\r\nTo: nhan@example.vn\r\nSubject: %s\r\n"
                     "Date: Fri, 04 Dec 2026 10:00:00 +0700\r\n"
                     "Message-ID: <%s>\r\nMIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n\r\n"
                     "Kính gửi: %s\r\nrevocation test\r\n"
                     % (addr, subject, msgid, name)).encode("utf-8"))
        must([self.kyso, "sign", "--key", "file:" + self.p(who + ".key"),
              "--cert", self.p(who + ".pem"), "--chain", self.p(chain),
              "-o", out, plain], "kyso sign %s" % name)
        return out, msgid, addr

    def verify(self, msg, *opts, untrusted="chain.pem", timeout=60):
        argv = [self.kyso, "verify", "--trust", self.p("trust.pem"),
                "--untrusted", self.p(untrusted), "--json"] + list(opts) + [msg]
        t0 = time.monotonic()
        r = run(argv, timeout=timeout)
        elapsed = time.monotonic() - t0
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        try:
            v = json.loads(out)
            s = v["signers"][0]
        except (ValueError, KeyError, IndexError):
            raise Fail("kyso verify %s: exit %d, no usable JSON: %s | %s"
                       % (" ".join(opts), r.returncode, excerpt(out),
                          excerpt(err)))
        return Verdict(r.returncode, v, s, err, elapsed, argv)


class Verdict:
    def __init__(self, rc, v, s, err, elapsed, argv):
        self.rc, self.v, self.s, self.err = rc, v, s, err
        self.elapsed, self.argv = elapsed, argv

    def __str__(self):
        return ("result=%s reason=%r revocation=%s source=%s cached=%s "
                "this_update=%s rc=%d %.2fs stderr=%s"
                % (self.v.get("result"), self.v.get("reason"),
                   self.s.get("revocation"), self.s.get("revocation_source"),
                   self.s.get("revocation_cached"),
                   self.s.get("revocation_this_update"), self.rc,
                   self.elapsed, excerpt(self.err, 300) or "-"))

    def want(self, result=None, revocation=None, source=None, cached=None):
        bad = []
        if result is not None and self.v.get("result") != result:
            bad.append("result %r, expected %r" % (self.v.get("result"),
                                                   result))
        if revocation is not None and self.s.get("revocation") != revocation:
            bad.append("revocation %r, expected %r"
                       % (self.s.get("revocation"), revocation))
        if source is not None and self.s.get("revocation_source") != source:
            bad.append("revocation_source %r, expected %r"
                       % (self.s.get("revocation_source"), source))
        if cached is not None and self.s.get("revocation_cached") is not cached:
            bad.append("revocation_cached %r, expected %r"
                       % (self.s.get("revocation_cached"), cached))
        if bad:
            raise Fail("; ".join(bad) + " -- " + str(self))
        return self


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --------------------------------------------------------------------------
# kyso verify scenarios

def s1_good(env, m):
    with OcspResponder(env) as ocsp, CrlServer(env.crl) as crl:
        v = env.verify(m["org"]).want("pass", "good", "ocsp", False)
        expect(v.rc == 0, "exit %d for pass" % v.rc)
        for k in ("revocation_checked_at", "revocation_this_update"):
            expect(ISO.match(v.s.get(k, "")), "%s=%r is no time" %
                   (k, v.s.get(k)))
        expect(ocsp.asked("org.pem") == 1, "responder asked %d times about "
               "org.pem, expected 1" % ocsp.asked("org.pem"))
        # The intermediate (no AIA) is judged by root's CRL.
        expect(crl.count("GET", "/root.crl") == 1 and crl.count() == 1,
               "CRL server log %r, expected one GET /root.crl" % crl.log)
        # The default output: the A-R value carries the revocation comment.
        r = run([env.kyso, "verify", "--trust", env.p("trust.pem"),
                 "--untrusted", env.p("chain.pem"), m["org"]])
        out = r.stdout.decode("utf-8", "replace")
        first = out.splitlines()[0] if out else ""
        expect(r.returncode == 0 and re.search(
            r"smime=pass \(revocation good by ocsp at \d{4}-\d\d-\d\dT", first),
            "A-R without '(revocation good by ocsp at ...)': %r" % first)
    return "%s; A-R %s" % (v, re.search(r"\(revocation[^)]*\)", first).group(0))


def s1_intermediate_unknown(env, m):
    """OCSP good for the leaf, but nothing says anything about the
    intermediate (no CRL server): the worst link decides."""
    with OcspResponder(env):
        v = env.verify(m["org"]).want("pass", "unknown")
        env.verify(m["org"], "--revocation=hard-fail").want("temperror")
    return str(v)


def s1_delegated(env, m):
    with OcspResponder(env, "ocsp-sub.pem", "ocsp-sub.key",
                       name="ocsp-delegated") as ocsp, CrlServer(env.crl):
        v = env.verify(m["org"]).want("pass", "good", "ocsp")
        expect(ocsp.asked("org.pem") == 1, "%d requests"
               % ocsp.asked("org.pem"))
        r = env.verify(m["revoked"]).want("fail", "revoked", "ocsp")
    return "org: %s; revoked: %s" % (v.s["revocation"], r.s["revocation"])


def s1_wrong_delegation(env, m):
    """A responder certificate with id-kp-OCSPSigning, chaining to the
    trusted root, but not issued by the certificate's CA (sub)."""
    files = {"/root.crl": env.crl["/root.crl"]}  # no sub.crl: no fallback
    with OcspResponder(env, "ocsp-root.pem", "ocsp-root.key",
                       name="ocsp-rootdelegated") as ocsp, CrlServer(files):
        v = env.verify(m["org"]).want("pass", "unknown")
        expect(ocsp.asked("org.pem") >= 1, "responder saw no request")
        expect("response signature not trusted" in v.err,
               "stderr does not say why: %r" % excerpt(v.err))
        env.verify(m["revoked"]).want("pass", "unknown")
        env.verify(m["org"], "--revocation=hard-fail").want("temperror")
    return str(v)


def s2_revoked_ocsp(env, m):
    files = {"/root.crl": env.crl["/root.crl"]}  # the leaf: OCSP only
    with OcspResponder(env) as ocsp, CrlServer(files) as crl:
        v = env.verify(m["revoked"]).want("fail", "revoked", "ocsp")
        expect(v.rc == 1, "exit %d" % v.rc)
        expect(ISO.match(v.s.get("revoked_at", "")),
               "revoked_at %r" % v.s.get("revoked_at"))
        expect(v.s.get("revocation_reason") == 1,
               "revocation_reason %r, expected 1 (keyCompromise)"
               % v.s.get("revocation_reason"))
        expect("revoked" in (v.v.get("reason") or ""),
               "reason %r" % v.v.get("reason"))
        expect(ocsp.asked("revoked.pem") >= 1, "responder saw no request")
        expect(crl.count("GET", "/sub.crl") == 0, "sub.crl was asked for")
    return "%s revoked_at=%s" % (v, v.s["revoked_at"])


def s3_revoked_crl(env, m, state):
    cache = os.path.join(env.tmp, "cache-s3")
    with CrlServer(env.crl) as crl:
        ensure_free(OCSP_PORT, "OCSP")
        v = env.verify(m["revoked"], "--cache-dir", cache).want(
            "fail", "revoked", "crl")
        expect(ISO.match(v.s.get("revoked_at", "")), "revoked_at %r"
               % v.s.get("revoked_at"))
        expect(crl.count("GET", "/sub.crl") == 1,
               "GET /sub.crl %d times" % crl.count("GET", "/sub.crl"))
        g = env.verify(m["org"]).want("pass", "good", "crl")
        state["s3_cache"] = cache
    return "revoked: %s | org: good by %s" % (v, g.s["revocation_source"])


def s3_poisoned_cache(env, m):
    """A forged CRL (issuer name right, key wrong, huge cRLNumber) must never
    take the place of the real one: not through a refresh, not planted on
    disk; the revoked certificate stays revoked."""
    cache = os.path.join(env.tmp, "cache-s3d")
    files = dict(env.crl)
    with CrlServer(files) as crl:
        ensure_free(OCSP_PORT, "OCSP")
        env.verify(m["revoked"], "--cache-dir", cache).want("fail", "revoked", "crl")
        crl.files["/sub.crl"] = env.crl["/sub-forged.crl"]
        r = must([env.kyso, "revocation", "refresh", "--cache-dir", cache, "--trust",
                  env.p("trust.pem"), "--untrusted", env.p("chain.pem")], "refresh (forged)")
        st = must([env.kyso, "revocation", "status", "--cache-dir", cache],
                  "status").stdout.decode("utf-8", "replace")
        line = [l for l in st.splitlines() if "/sub.crl " in l + " "]
        expect(line and "entries=1" in line[0],
               "after refreshing with a forged CRL the cache holds %r" % line)
        crl.files["/sub.crl"] = env.crl["/sub.crl"]
        env.verify(m["revoked"], "--cache-dir", cache).want("fail", "revoked", "crl")
        # Planted on disk: the forged CRL in the cache file of sub.crl.
        planted = [f for f in os.listdir(cache) if f.endswith(".url") and
                   open(os.path.join(cache, f)).read().strip().endswith("/sub.crl")]
        expect(planted, "no cache file for sub.crl in %r" % os.listdir(cache))
        with open(os.path.join(cache, planted[0][:-4] + ".crl"), "wb") as f:
            f.write(env.crl["/sub-forged.crl"])
        # Forget the remembered answers, so the CRL itself must decide.
        for f in os.listdir(cache):
            if f.startswith("status-"):
                os.unlink(os.path.join(cache, f))
        v = env.verify(m["revoked"], "--cache-dir", cache).want("fail", "revoked", "crl")
    return "refresh kept the real CRL (%s); planted forgery ignored: %s" % (
        r.stdout.decode().splitlines()[0], v)


def s3_pem_crl(env, m):
    """CRLs served as PEM: revocation.c's crl_from_bio() tries DER, then
    rewinds and tries PEM, so PEM is meant to be accepted."""
    with CrlServer(env.crl_pem) as crl:
        ensure_free(OCSP_PORT, "OCSP")
        v = env.verify(m["revoked"]).want("fail", "revoked", "crl")
        g = env.verify(m["org"]).want("pass", "good", "crl")
        expect(crl.count("GET", "/sub.crl") == 2, "log %r" % crl.log)
    return "revoked.pem %s, org.pem %s" % (v.s["revocation"],
                                           g.s["revocation"])


def s3_status_refresh(env, m, state):
    cache = state.get("s3_cache")
    expect(cache and os.path.isdir(cache), "scenario 3 left no cache")
    r = must([env.kyso, "revocation", "status", "--cache-dir", cache],
             "kyso revocation status")
    st = r.stdout.decode("utf-8", "replace")
    line = [l for l in st.splitlines()
            if "url=%s/sub.crl " % CRL_BASE in l + " "]
    expect(line, "status does not list %s/sub.crl: %r" % (CRL_BASE, st))
    expect("entries=1" in line[0], "sub.crl entry %r, expected entries=1"
           % line[0])
    with CrlServer(env.crl) as crl:
        r = must([env.kyso, "revocation", "refresh", "--cache-dir", cache,
                  "--trust", env.p("trust.pem"), "--untrusted", env.p("chain.pem")],
                 "kyso revocation refresh")
        out = r.stdout.decode("utf-8", "replace")
        expect(crl.count("GET", "/sub.crl") == 1,
               "refresh: CRL server log %r, expected a new GET /sub.crl"
               % crl.log)
        expect(re.search(r"refreshed [1-9]\d* CRL", out),
               "refresh output %r" % out)
    # Refresh with the server gone: says so, keeps the cached CRL.
    r = must([env.kyso, "revocation", "refresh", "--cache-dir", cache,
              "--trust", env.p("trust.pem"), "--untrusted", env.p("chain.pem"),
              "--timeout-ms", "1000"], "kyso revocation refresh (server down)")
    out = r.stdout.decode("utf-8", "replace")
    expect("refreshed 0 CRL" in out and "%s/sub.crl" % CRL_BASE in out,
           "refresh with the server down: %r" % out)
    return "%s | %s" % (line[0].strip(), out.splitlines()[0])


def s4_all_down(env, m):
    ensure_free(OCSP_PORT, "OCSP")
    ensure_free(CRL_PORT, "CRL")
    soft = env.verify(m["org"]).want("pass", "unknown")
    hard = env.verify(m["org"], "--revocation=hard-fail").want("temperror")
    expect(hard.rc == 1, "hard-fail exit %d" % hard.rc)
    expect("revocation" in (hard.v.get("reason") or ""),
           "temperror reason %r" % hard.v.get("reason"))
    # Refused connections cost nothing near the 3000 ms deadline.
    slow = [x for x in (soft, hard) if x.elapsed > 1.0]
    expect(not slow, "refused connections took %.2f s (deadline 3 s)"
           % max(x.elapsed for x in slow) if slow else "")
    return "soft-fail %.3fs pass/unknown, hard-fail %.3fs temperror" % (
        soft.elapsed, hard.elapsed)


def s5_stale_crl(env, m):
    files = dict(env.crl)
    files["/sub.crl"] = env.crl["/sub-stale.crl"]
    with CrlServer(files) as crl:
        ensure_free(OCSP_PORT, "OCSP")
        soft = env.verify(m["org"]).want("pass", "unknown")
        hard = env.verify(m["org"], "--revocation=hard-fail").want(
            "temperror")
        rev = env.verify(m["revoked"]).want(revocation="unknown")
        expect(crl.count("GET", "/sub.crl") >= 3,
               "the stale CRL was not fetched (%r)" % crl.log)
        expect("stale" in soft.err, "stderr does not mention staleness: %r"
               % excerpt(soft.err))
    # A cache directory must not make a stale CRL good either.
    cache = os.path.join(env.tmp, "cache-s5")
    with CrlServer(files):
        env.verify(m["org"], "--cache-dir", cache).want("pass", "unknown")
        env.verify(m["org"], "--cache-dir", cache).want("pass", "unknown")
    return "soft %s | hard %s | revoked.pem %s" % (
        soft.s["revocation"], hard.v["result"], rev.v["result"])


def s6_rogue_signer(env, m):
    with OcspResponder(env, "rogue.pem", "rogue.key",
                       name="ocsp-rogue") as ocsp:
        ensure_free(CRL_PORT, "CRL")
        v = env.verify(m["org"]).want("pass", "unknown")
        expect(ocsp.asked("org.pem") >= 1, "responder saw no request")
        expect("response signature not trusted" in v.err,
               "stderr: %r" % excerpt(v.err))
        # Its word on revoked.pem ("revoked") does not count either...
        env.verify(m["revoked"]).want("pass", "unknown")
        # ...and with the CRL up, the fallback decides.
        with CrlServer(env.crl):
            r = env.verify(m["revoked"]).want("fail", "revoked", "crl")
    return "org: %s; revoked.pem with CRL: %s by %s" % (
        v.s["revocation"], r.v["result"], r.s["revocation_source"])


def s7_nonce(env, m):
    cap = os.path.join(env.tmp, "captured-org.der")
    with OcspResponder(env, name="ocsp-capture"):
        # openssl ocsp (the client) sends its own random nonce.
        must(["openssl", "ocsp", "-issuer", env.p("sub.pem"), "-cert",
              env.p("org.pem"), "-url", OCSP_URL, "-respout", cap,
              "-CAfile", env.p("trust.pem"), "-VAfile", env.p("sub.pem")],
             "capturing an OCSP response")
    with open(cap, "rb") as f:
        captured = f.read()
    r = must(["openssl", "ocsp", "-respin", cap, "-resp_text", "-noverify"],
             "openssl ocsp -respin")
    txt = r.stdout.decode("utf-8", "replace")
    expect("OCSP Nonce" in txt and "Cert Status: good" in txt,
           "captured response has no nonce or is not 'good': %s"
           % excerpt(txt, 300))
    with ReplayOcsp(captured) as rep:
        ensure_free(CRL_PORT, "CRL")
        v = env.verify(m["org"]).want("pass", "unknown")
        expect(rep.count("POST") >= 1, "replaying responder got no request")
        expect("nonce mismatch" in v.err, "stderr does not mention the "
               "nonce mismatch: %r" % excerpt(v.err))
    return str(v)


def s7_other_cert(env, m):
    """A nonce-less answer (which kyso accepts on freshness alone) about
    another certificate (leader.pem) is no answer about org.pem."""
    cap = os.path.join(env.tmp, "captured-leader-nononce.der")
    with OcspResponder(env, name="ocsp-capture2"):
        must(["openssl", "ocsp", "-issuer", env.p("sub.pem"), "-cert",
              env.p("leader.pem"), "-url", OCSP_URL, "-respout", cap,
              "-no_nonce", "-CAfile", env.p("trust.pem"), "-VAfile",
              env.p("sub.pem")], "capturing an OCSP response")
    with open(cap, "rb") as f:
        captured = f.read()
    with ReplayOcsp(captured) as rep:
        ensure_free(CRL_PORT, "CRL")
        v = env.verify(m["org"]).want("pass", "unknown")
        expect(rep.count("POST") >= 1, "replaying responder got no request")
        expect("certificate not in response" in v.err,
               "stderr: %r" % excerpt(v.err))
    return str(v)


def s8_deadline_precision(env, m):
    """--timeout-ms is milliseconds: a silent responder may not hold the
    verdict much past it (OpenSSL's HTTP timeout is whole seconds)."""
    out = []
    with SilentServer():
        ensure_free(CRL_PORT, "CRL")
        for tmo in (500, 1200):
            v = env.verify(m["org"], "--timeout-ms", str(tmo)).want(
                "pass", "unknown")
            out.append("%d ms -> %.2f s" % (tmo, v.elapsed))
            expect(v.elapsed < tmo / 1000.0 + 0.4,
                   "--timeout-ms %d: verdict after %.2f s (%s)"
                   % (tmo, v.elapsed, "; ".join(out)))
    return "; ".join(out)


def s8_silent(env, m):
    with SilentServer() as srv:
        ensure_free(CRL_PORT, "CRL")
        v = env.verify(m["org"], "--timeout-ms", "2000").want(
            "pass", "unknown")
        expect(srv.accepted >= 1, "the silent responder saw no connection")
        expect(v.elapsed < 4.0, "verdict after %.2f s with --timeout-ms 2000"
               % v.elapsed)
        h = env.verify(m["org"], "--timeout-ms", "2000",
                       "--revocation=hard-fail").want("temperror")
        expect(h.elapsed < 4.0, "hard-fail verdict after %.2f s" % h.elapsed)
        with CrlServer(env.crl) as crl:
            w = env.verify(m["org"], "--timeout-ms", "2000").want("pass")
            expect(w.elapsed < 4.0, "with CRL server: %.2f s" % w.elapsed)
            expect(w.s["revocation"] in ("unknown", "good"),
                   "revocation %r" % w.s["revocation"])
    return ("no CRL: %.2f s unknown; hard-fail %.2f s temperror; with CRL "
            "server: %.2f s %s by %s (%d CRL GETs)"
            % (v.elapsed, h.elapsed, w.elapsed, w.s["revocation"],
               w.s["revocation_source"], crl.count()))


def s9_intermediate_revoked(env, m):
    with CrlServer(env.crl) as crl:
        ensure_free(OCSP_PORT, "OCSP")
        v = env.verify(m["sub2leaf"], untrusted="chain2.pem").want(
            "fail", "revoked", "crl")
        expect(v.s.get("chain") == "ok", "chain %r" % v.s.get("chain"))
        expect(crl.count("GET", "/root2.crl") == 1,
               "root2.crl not fetched: %r" % crl.log)
        expect(v.s.get("revocation_reason") == 2,
               "revocation_reason %r, expected 2 (cACompromise)"
               % v.s.get("revocation_reason"))
    # Without root2.crl nothing vouches for sub2: unknown, not good.
    files = {k: val for k, val in env.crl.items() if k != "/root2.crl"}
    with CrlServer(files):
        with_ok = env.verify(m["sub2leaf"], untrusted="chain2.pem").want(
            "pass", "unknown")
    return "%s | without root2.crl: %s" % (v, with_ok.s["revocation"])


def s10_cache(env, m):
    cache = os.path.join(env.tmp, "cache-s10")
    with OcspResponder(env, name="ocsp-cache") as ocsp, \
            CrlServer(env.crl) as crl:
        a = env.verify(m["org"], "--cache-dir", cache).want(
            "pass", "good", "ocsp", False)
        b = env.verify(m["org2"], "--cache-dir", cache).want(
            "pass", "good", "ocsp", True)
        expect(ocsp.asked("org.pem") == 1, "responder asked %d times about "
               "org.pem, expected 1 (all: %s)" % (ocsp.asked("org.pem"),
                                                  ocsp.serials()))
        expect(crl.count() == 1, "CRL server saw %r, expected one GET"
               % crl.log)
        expect(b.s["revocation_this_update"] == a.s["revocation_this_update"],
               "cached thisUpdate %s != %s" % (b.s["revocation_this_update"],
                                               a.s["revocation_this_update"]))
        # Another certificate is not answered from the cache.
        env.verify(m["revoked"], "--cache-dir", cache).want(
            "fail", "revoked", "ocsp", False)
        expect(ocsp.asked("revoked.pem") == 1, "%d requests about "
               "revoked.pem" % ocsp.asked("revoked.pem"))
        # A cached "revoked" is still revoked.
        env.verify(m["revoked"], "--cache-dir", cache).want(
            "fail", "revoked", "ocsp", True)
        expect(ocsp.asked("revoked.pem") == 1 and ocsp.asked("org.pem") == 1,
               "requests after the cached ones: %s" % ocsp.serials())
        files = sorted(os.listdir(cache))
        expect(any(f.startswith("status-") for f in files),
               "no status files in %s: %r" % (cache, files))
    return "A %.3fs cached=%s, B %.3fs cached=%s, 1 OCSP request" % (
        a.elapsed, a.s["revocation_cached"], b.elapsed,
        b.s["revocation_cached"])


# --------------------------------------------------------------------------
# kyso-milter in a private Postfix

def fields(raw, name):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [re.sub(r"\s+", " ", str(v)).strip()
            for v in (msg.get_all(name) or [])]


def decoded(value):
    out = []
    for text, cs in email.header.decode_header(value):
        out.append(text.decode(cs or "ascii", "replace")
                   if isinstance(text, bytes) else text)
    return "".join(out)


class Milter:
    def __init__(self, env):
        self.env = env
        self.bin = env.milter_bin
        problems = []
        if os.geteuid() != 0:
            problems.append("must run as root (private Postfix instance)")
        if not self.bin or not os.access(self.bin, os.X_OK):
            problems.append("KYSO_MILTER=%r is not an executable" % self.bin)
        for tool in ("postfix", "postconf", "saslpasswd2", "runuser"):
            if not shutil.which(tool):
                problems.append("%s is not installed" % tool)
        for f in ("postfix_instance.sh", "smtp_sink.py"):
            if not os.path.isfile(os.path.join(E2E, f)):
                problems.append("%s/%s is missing" % (E2E, f))
        if problems:
            raise Fail("; ".join(problems))
        base = os.path.join(env.tmp, "w")
        if len(base) > 60 or run(["runuser", "-u", "postfix", "--", "test",
                                  "-x", env.tmp]).returncode != 0:
            base = "/tmp/kyso-rev-" + hashlib.sha1(
                env.tmp.encode()).hexdigest()[:8]
        self.work = base
        self.pf = os.path.join(base, "pf")
        self.sink_dir = os.path.join(base, "sink")
        self.sock = os.path.join(self.pf, "kyso.sock")
        self.log = os.path.join(base, "milter.log")
        self.proc = None
        self.sink = None
        if os.path.isdir(base):
            self.stop_stale()
        shutil.rmtree(self.sink_dir, ignore_errors=True)
        for d in (self.pf, self.sink_dir):
            os.makedirs(d, exist_ok=True)
        os.chmod(base, 0o755)
        open(self.log, "wb").close()
        diag("milter work directory %s" % base)

    def pe(self):
        e = dict(os.environ)
        e["E2E_SMTP_PORT"] = str(SMTP_PORT)
        e["E2E_SINK_PORT"] = str(SINK_PORT)
        return e

    def stop_stale(self):
        for pidf, needle in (("milter.pid", b"kyso-milter"),
                             ("sink.pid", b"smtp_sink.py")):
            try:
                pid = int(open(os.path.join(self.work, pidf)).read())
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if needle in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if os.path.isfile(os.path.join(self.pf, "etc", "main.cf")):
            run(["bash", os.path.join(E2E, "postfix_instance.sh"), "stop",
                 self.pf], env=self.pe())

    def start(self):
        ensure_free(SINK_PORT, "sink")
        ensure_free(SMTP_PORT, "smtpd")
        log = open(os.path.join(self.work, "sink.log"), "wb")
        self.sink = subprocess.Popen(
            [sys.executable, os.path.join(E2E, "smtp_sink.py"), self.sink_dir,
             str(SINK_PORT)], stdout=log, stderr=log)
        log.close()
        LIVE.append(self)
        with open(os.path.join(self.work, "sink.pid"), "w") as f:
            f.write("%d\n" % self.sink.pid)
        if not wait_port(SINK_PORT, True, 10):
            raise Fail("smtp_sink did not start: %s"
                       % tail(os.path.join(self.work, "sink.log"), 5))
        r = run(["bash", os.path.join(E2E, "postfix_instance.sh"), "start",
                 self.pf], env=self.pe(), timeout=120)
        if r.returncode != 0:
            raise Fail("postfix_instance.sh start failed (%d): %s"
                       % (r.returncode, excerpt(r.stderr + r.stdout)))

    def config(self, name, cache, revocation="soft-fail", on_temperror="tag",
               timeout_ms=3000):
        p = self.env.p
        text = """\
# kyso-milter configuration generated by tests/revocation/revocation_test.py
milter: {
  socket = "unix:%(sock)s";
  socket_mode = "0666";
  user = "";
  group = "";
  log_level = "debug";
  timeout = 60;
};
tokens = ( );
identities = ( );
outbound: {
  trust_auth = true;
  internal_networks = [ "127.0.0.2/32" ];
};
inbound: {
  trust_anchors = "%(trust)s";
  untrusted = "%(chain)s";
  crls = [ ];
  authserv_id = "%(authserv)s";
  subject_tag: {
    pass = "%(tpass)s";
    fail = "%(tfail)s";
    none = "";
    neutral = "";
    policy = "";
    temperror = "%(ttemp)s";
    permerror = "%(tfail)s";
  };
  signer_header = true;
  must_sign_domains = [ "*.gov.vn" ];
  on_unsigned = "tag";
  on_invalid = "tag";
  revocation = "%(rev)s";
  revocation_order = "ocsp,crl";
  revocation_timeout_ms = %(tmo)d;
  ocsp_responder = "";
  http_proxy = "";
  revocation_cache_dir = "%(cache)s";
  revocation_cache_entries = 10000;
  on_temperror = "%(ontemp)s";
};
""" % {"sock": self.sock, "trust": p("trust.pem"), "chain": p("chain.pem"),
       "authserv": AUTHSERV_ID, "tpass": TAG_PASS, "tfail": TAG_FAIL,
       "ttemp": TAG_TEMP, "rev": revocation, "tmo": timeout_ms,
       "cache": cache, "ontemp": on_temperror}
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_milter(self, conf):
        self.stop_milter()
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass
        log = open(self.log, "ab")
        log.write(("=== start %s -f -c %s\n" % (self.bin, conf)).encode())
        log.flush()
        self.proc = subprocess.Popen([self.bin, "-f", "-c", conf],
                                     stdout=log, stderr=log)
        log.close()
        with open(os.path.join(self.work, "milter.pid"), "w") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail("kyso-milter exited with %d: %s"
                           % (self.proc.returncode, tail(self.log, 8)))
            if os.path.exists(self.sock):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.sock)
                    return
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.05)
        raise Fail("kyso-milter socket not ready: %s" % tail(self.log, 8))

    def stop_milter(self):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def submit(self, path, mail_from):
        with open(path, "rb") as f:
            raw = f.read()
        s = smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=60)
        try:
            s.ehlo("client.rev.test")
            s.sendmail(mail_from, ["nhan@example.vn"], raw)
            return 250, ""
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode("utf-8", "replace")
        finally:
            try:
                s.quit()
            except Exception:
                s.close()

    def delivered(self, msgid, wait=DELIVERY_WAIT):
        needle = ("<%s>" % msgid).encode()
        deadline = time.monotonic() + wait
        while True:
            for name in sorted(os.listdir(self.sink_dir)):
                if name.endswith(".eml"):
                    with open(os.path.join(self.sink_dir, name), "rb") as f:
                        raw = f.read()
                    if any(needle in v.encode()
                           for v in fields(raw, "Message-ID")):
                        return raw
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def deliver(self, path, msgid, mail_from):
        code, text = self.submit(path, mail_from)
        expect(code == 250, "SMTP %d %s; milter: %s"
               % (code, text, excerpt(tail(self.log, 6))))
        raw = self.delivered(msgid)
        expect(raw is not None, "not delivered within %d s; maillog: %s"
               % (DELIVERY_WAIT, excerpt(tail(os.path.join(self.pf,
                                                           "maillog"), 6))))
        ars = [a for a in fields(raw, "Authentication-Results")
               if a.split(";")[0].strip().lower() == AUTHSERV_ID]
        expect(len(ars) == 1, "%d Authentication-Results of ours" % len(ars))
        subj = decoded(fields(raw, "Subject")[0])
        return ars[0], subj

    def stop(self):
        self.stop_milter()
        if os.path.isfile(os.path.join(self.pf, "etc", "main.cf")):
            run(["bash", os.path.join(E2E, "postfix_instance.sh"), "stop",
                 self.pf], env=self.pe())
        if self.sink is not None and self.sink.poll() is None:
            self.sink.terminate()
            try:
                self.sink.wait(5)
            except subprocess.TimeoutExpired:
                self.sink.kill()
        self.sink = None
        if self in LIVE:
            LIVE.remove(self)


def s11_milter_cache(env, m, mt):
    """Choice: the responder (and the CRL server) are DOWN after the
    restart, so the second verdict can only come from the disk cache."""
    cache = os.path.join(env.tmp, "cache-s11")
    conf = mt.config("kyso-s11.conf", cache)
    (p1, id1, a1), (p2, id2, a2) = m["leader1"], m["leader2"]
    with OcspResponder(env, name="ocsp-milter") as ocsp, CrlServer(env.crl):
        mt.start_milter(conf)
        ar1, subj1 = mt.deliver(p1, id1, a1)
        expect("smime=pass" in ar1 and
               re.search(r"\(revocation good by ocsp at \d{4}-", ar1),
               "first A-R %r" % ar1)
        expect(subj1.startswith(TAG_PASS), "first Subject %r" % subj1)
        n1 = ocsp.asked("leader.pem")
        expect(n1 == 1, "responder asked %d times about leader.pem" % n1)
    expect(not listening(OCSP_PORT) and not listening(CRL_PORT),
           "responders still listening after stop")
    mt.start_milter(conf)  # a new process: the memory cache is gone
    ar2, subj2 = mt.deliver(p2, id2, a2)
    expect("smime=pass" in ar2 and
           re.search(r"\(revocation good by ocsp \\?\(cached\\?\) at \d{4}-",
                     ar2),
           "after restart, responder down: A-R %r; milter log: %s"
           % (ar2, excerpt(tail(mt.log, 8))))
    expect(subj2.startswith(TAG_PASS), "second Subject %r" % subj2)
    return "before: %s | after restart: %s" % (
        re.search(r"\(revocation[^)]*\)", ar1).group(0),
        re.search(r"\(revocation.*?\)\s*at [^ )]*\)", ar2).group(0))


def s12_milter_revoked(env, m, mt):
    cache = os.path.join(env.tmp, "cache-s12")
    conf = mt.config("kyso-s12.conf", cache)
    path, msgid, addr = m["revoked-e2e"]
    with OcspResponder(env, name="ocsp-milter-revoked") as ocsp:
        ensure_free(CRL_PORT, "CRL")
        mt.start_milter(conf)
        ar, subj = mt.deliver(path, msgid, addr)
        expect(ocsp.asked("revoked.pem") >= 1, "the responder was not asked")
    expect("smime=fail" in ar and "revoked" in ar, "A-R %r" % ar)
    expect(subj.startswith(TAG_FAIL), "Subject %r lacks the fail tag" % subj)
    return "A-R %s | Subject %s" % (excerpt(ar, 120), subj)


def s13_milter_temperror(env, m, mt):
    """hard-fail, nothing reachable: on_temperror decides (tempfail → 4xx,
    tag → delivered with smime=temperror)."""
    ensure_free(OCSP_PORT, "OCSP")
    ensure_free(CRL_PORT, "CRL")
    path, msgid, addr = m["leader3"]
    cache = os.path.join(env.tmp, "cache-s13")
    mt.start_milter(mt.config("kyso-s13a.conf", cache, "hard-fail",
                              "tempfail", 1000))
    code, text = mt.submit(path, addr)
    expect(400 <= code < 500, "on_temperror=tempfail: SMTP %d %s, "
           "expected 4xx" % (code, text))
    expect(mt.delivered(msgid, NO_DELIVERY_WAIT) is None,
           "delivered despite tempfail")
    mt.start_milter(mt.config("kyso-s13b.conf", cache, "hard-fail", "tag",
                              1000))
    ar, subj = mt.deliver(path, msgid, addr)
    expect("smime=temperror" in ar, "A-R %r" % ar)
    expect(subj.startswith(TAG_TEMP), "Subject %r" % subj)
    return "tempfail: %d; tag: %s" % (code, excerpt(ar, 80))


# --------------------------------------------------------------------------

def main():
    t0 = time.monotonic()

    def on_signal(signum, frame):
        raise SystemExit(1)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    env = None
    try:
        try:
            env = Env()
            diag("PKI %s in %s" % (env.pki_origin, env.pki))
            env.extra_material()
            m = {}
            for name, who, chain in (("org", "org", "chain.pem"),
                                     ("org2", "org", "chain.pem"),
                                     ("revoked", "revoked", "chain.pem"),
                                     ("sub2leaf", "sub2leaf", "chain2.pem")):
                m[name] = env.sign(name, who, "Cong van " + name,
                                   chain=chain)[0]
            for name, who in (("leader1", "leader"), ("leader2", "leader"),
                              ("leader3", "leader"),
                              ("revoked-e2e", "revoked")):
                m[name] = env.sign(name, who, "Cong van " + name)
            report("setup: PKI, extra material, signed messages", True,
                   "%.1f s" % (time.monotonic() - t0))
        except Fail as e:
            report("setup", False, str(e))
            return 1
        except Exception as e:
            report("setup", False, "%s: %s" % (type(e).__name__, e))
            return 1

        state = {}
        check("1 good via OCSP (sub signs), intermediate by root CRL",
              s1_good, env, m)
        check("1b intermediate unchecked: worst link decides (unknown; "
              "hard-fail temperror)", s1_intermediate_unknown, env, m)
        check("1c delegated responder (id-kp-OCSPSigning, issued by sub)",
              s1_delegated, env, m)
        check("1d responder delegated by root, not by the issuer: refused",
              s1_wrong_delegation, env, m)
        check("2 revoked via OCSP", s2_revoked_ocsp, env, m)
        check("3 revoked via CRL, OCSP down", s3_revoked_crl, env, m, state)
        check("3c CRLs served as PEM over HTTP", s3_pem_crl, env, m)
        check("3b kyso revocation status / refresh", s3_status_refresh, env,
              m, state)
        check("3d forged CRL cannot poison the cache (refresh, planted file)",
              s3_poisoned_cache, env, m)
        check("4 everything down: soft pass/unknown, hard temperror, fast",
              s4_all_down, env, m)
        check("5 stale CRL, OCSP down: unknown, never good", s5_stale_crl,
              env, m)
        check("6 OCSP response signed by an unrelated key", s6_rogue_signer,
              env, m)
        check("7 replayed OCSP response (nonce mismatch)", s7_nonce, env, m)
        check("7b OCSP answer about another certificate", s7_other_cert, env,
              m)
        check("8 responder that never answers, --timeout-ms 2000", s8_silent,
              env, m)
        check("8b deadline kept to the millisecond option (500, 1200 ms)",
              s8_deadline_precision, env, m)
        check("9 intermediate revoked by the root CRL",
              s9_intermediate_revoked, env, m)
        check("10 status cache: second message answered from --cache-dir",
              s10_cache, env, m)

        mt = None
        up = False
        try:
            mt = Milter(env)
            mt.start()
            up = True
            report("milter: Postfix on %d, sink on %d" % (SMTP_PORT,
                                                          SINK_PORT), True)
        except Exception as e:
            report("milter: Postfix on %d, sink on %d" % (SMTP_PORT,
                                                          SINK_PORT), False,
                   "%s: %s" % (type(e).__name__, e))
        if up:
            check("11 milter: status cache survives a restart (responder down "
                  "after it)", s11_milter_cache, env, m, mt)
            check("12 milter: inbound signed by a certificate revoked via "
                  "OCSP", s12_milter_revoked, env, m, mt)
            check("13 milter: hard-fail with nothing reachable, on_temperror",
                  s13_milter_temperror, env, m, mt)
        else:
            for n in ("11", "12", "13"):
                report("%s milter scenario" % n, False,
                       "no Postfix instance (see above)")
    finally:
        stop_everything()
        diag("runtime %.1f s" % (time.monotonic() - t0))
        print("%d passed, %d failed" % (tally.passed, tally.failed))
        sys.stdout.flush()
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
