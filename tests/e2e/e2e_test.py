#!/usr/bin/env python3
"""End-to-end test of kyso-milter in a real Postfix.

Environment (docs/TEST-LAYOUT.md):
  KYSO         the kyso CLI (signs the inbound test mail, judges deliveries)
  KYSO_MILTER  the kyso-milter binary under test
  KYSO_PKI     prepared PKI + SoftHSM token directory (certs/setup.sh)
  KYSO_TMP     scratch directory for this test
Optional:
  E2E_NO_MILTER=1  harness self-check: Postfix without the milter; only the
                   plumbing checks run (AUTH, relay to the sink, bytes intact)

Pieces (all in tests/e2e/): smtp_sink.py on 127.0.0.1:10026 stores what
arrives; postfix_instance.sh runs a private Postfix (smtpd on
127.0.0.1:10025, SASL user official@backan.gov.vn, milter unix:DIR/kyso.sock,
everything relayed to the sink); kyso-milter runs in the foreground with a
generated configuration.  The milter uses a private copy of the SoftHSM
token (KYSO_PKI/tokens is never touched), so the token-loss case cannot
disturb tests running in parallel.

Clients from 127.0.0.1 without AUTH are external; 127.0.0.2 is an internal
network; AUTH as official@backan.gov.vn makes a sender ours.

Output: `ok - name` / `not ok - name: reason` per check, `# ...` diagnostics,
and `N passed, M failed` last.  Exit status 1 on any failure; a missing
prerequisite is a failure, never a skip.  Needs root (Postfix instance).
"""

import base64
import email
import email.header
import email.policy
import email.utils
import hashlib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import Fail, check, diag, excerpt, report, run, tail, tally  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SMTP_PORT = 10025
SINK_PORT = 10026
AUTHSERV_ID = "mail.backan.gov.vn"
TAG_PASS = "[Đã ký số]"
TAG_FAIL = "[CHỮ KÝ KHÔNG HỢP LỆ]"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ORG_KEY_URI = "pkcs11:token=kyso-org;object=org;type=private"
DELIVERY_WAIT = 20.0      # seconds to wait for a delivery
NO_DELIVERY_WAIT = 3.0    # seconds to watch for an unwanted delivery

NO_MILTER = os.environ.get("E2E_NO_MILTER") == "1"



# --------------------------------------------------------------------------
# raw RFC 5322 / MIME helpers (bytes in, bytes out: a signature covers bytes)

def split_message(raw):
    """(header bytes, body bytes) split at the first empty line."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if not m:
        return raw, b""
    return raw[:m.start()], raw[m.end():]


def header_fields(raw):
    """[(name, raw unfolded value)] in order; value keeps its bytes."""
    head, _ = split_message(raw)
    fields = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
        elif b":" in line:
            name, value = line.split(b":", 1)
            fields.append((name.decode("ascii", "replace").strip(),
                           value.strip()))
    return fields


def fields_named(raw, name):
    return [v for n, v in header_fields(raw) if n.lower() == name.lower()]


def one_field(raw, name):
    v = fields_named(raw, name)
    if len(v) != 1:
        raise Fail("%d %s fields, expected 1" % (len(v), name))
    return v[0]


def decoded(value):
    """RFC 2047-decode a header value (bytes) to str."""
    parts = email.header.decode_header(value.decode("ascii", "replace"))
    out = []
    for text, charset in parts:
        if isinstance(text, bytes):
            text = text.decode(charset or "ascii", "replace")
        out.append(text)
    return "".join(out)


def our_ar(raw):
    """Authentication-Results values whose authserv-id is ours."""
    out = []
    for v in fields_named(raw, "Authentication-Results"):
        s = v.decode("utf-8", "replace").strip()
        m = re.match(r"([^\s;]+)", s)
        if m and m.group(1).lower() == AUTHSERV_ID:
            out.append(s)
    return out


def content_type(raw):
    v = fields_named(raw, "Content-Type")
    return v[0].decode("ascii", "replace") if v else ""


def ct_param(ct, name):
    m = re.search(r';\s*%s\s*=\s*("([^"]*)"|[^\s;]+)' % re.escape(name), ct,
                  re.I)
    if not m:
        return None
    return m.group(2) if m.group(2) is not None else m.group(1)


def is_multipart_signed(raw):
    ct = content_type(raw).lower()
    return (ct.startswith("multipart/signed")
            and "pkcs7-signature" in (ct_param(ct, "protocol") or ""))


def signed_parts(raw):
    """(signed part bytes, DER signature) of a multipart/signed message."""
    ct = content_type(raw)
    if not is_multipart_signed(raw):
        raise Fail("not multipart/signed: Content-Type %r" % ct[:120])
    boundary = ct_param(ct, "boundary")
    if not boundary:
        raise Fail("multipart/signed without boundary")
    _, body = split_message(raw)
    delim = b"--" + boundary.encode("ascii")
    # Delimiter lines: at the start of the body or after CRLF.
    pos = []
    for m in re.finditer(rb"(?:^|\r\n)" + re.escape(delim) + rb"(--)?[ \t]*\r\n",
                         body):
        pos.append(m)
    if len(pos) < 3:
        raise Fail("multipart/signed has %d delimiter lines, expected 3"
                   % len(pos))
    part1 = body[pos[0].end():pos[1].start()]
    part2 = body[pos[1].end():pos[2].start()]
    h2, b2 = split_message(part2)
    if b"base64" not in h2.lower():
        raise Fail("signature part is not base64")
    sig = base64.b64decode(re.sub(rb"\s+", b"", b2))
    return part1, sig


def is_7bit(raw):
    bad = [i for i, c in enumerate(raw) if c >= 0x80 or c == 0]
    if bad:
        i = bad[0]
        raise Fail("%d non-7-bit bytes, first at offset %d: %r"
                   % (len(bad), i, raw[max(0, i - 30):i + 10]))
    long_lines = [l for l in raw.split(b"\r\n") if len(l) > 998]
    if long_lines:
        raise Fail("%d lines longer than 998 octets" % len(long_lines))
    if re.search(rb"(?<!\r)\n|\r(?!\n)", raw):
        raise Fail("bare CR or LF in the delivered message")


# --------------------------------------------------------------------------
# the environment

class E2E:
    def __init__(self):
        self.kyso = os.environ.get("KYSO", "")
        self.milter_bin = os.environ.get("KYSO_MILTER", "")
        self.pki = os.environ.get("KYSO_PKI", "")
        tmp = os.environ.get("KYSO_TMP", "")
        self.procs = {}
        self.milter = None
        self.milter_starts = 0
        self.gnupghome = None
        self.token_moved = False
        self.password = None

        problems = []
        if os.geteuid() != 0:
            problems.append("must run as root (private Postfix instance)")
        if not self.kyso or not os.access(self.kyso, os.X_OK):
            problems.append("KYSO=%r is not an executable" % self.kyso)
        if not NO_MILTER and (not self.milter_bin
                              or not os.access(self.milter_bin, os.X_OK)):
            problems.append("KYSO_MILTER=%r is not an executable (kyso-milter "
                            "not built?)" % self.milter_bin)
        if not self.pki or not os.path.isfile(os.path.join(self.pki,
                                                           "org.pem")):
            problems.append("KYSO_PKI=%r is not a prepared PKI" % self.pki)
        if not tmp:
            problems.append("KYSO_TMP is not set")
        path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        os.environ["PATH"] = path
        for tool in ("postfix", "postconf", "saslpasswd2", "openssl", "gpgsm",
                     "runuser"):
            if not shutil.which(tool):
                problems.append("%s is not installed" % tool)
        if not os.path.exists(SOFTHSM_MODULE):
            problems.append("%s missing (softhsm2)" % SOFTHSM_MODULE)
        if problems:
            raise Fail("; ".join(problems))

        self.tmp = os.path.abspath(tmp)
        os.makedirs(self.tmp, exist_ok=True)
        # Unix socket paths are short (108 bytes) and smtpd (user postfix)
        # must reach the instance: else use a short fixed place under /tmp.
        base = os.path.join(self.tmp, "w")
        if len(base) > 60 or not self.postfix_can_reach(self.tmp):
            h = hashlib.sha1(self.tmp.encode()).hexdigest()[:8]
            base = "/tmp/kyso-e2e-" + h
        self.work = base
        if os.path.isdir(base):
            self.stop_stale(base)
        shutil.rmtree(os.path.join(base, "sink"), ignore_errors=True)
        shutil.rmtree(os.path.join(base, "msg"), ignore_errors=True)
        for d in ("pf", "sink", "msg", "milter"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        os.chmod(base, 0o755)
        self.pf = os.path.join(base, "pf")
        self.sink_dir = os.path.join(base, "sink")
        self.msg_dir = os.path.join(base, "msg")
        self.mdir = os.path.join(base, "milter")
        self.sock = os.path.join(self.pf, "kyso.sock")
        self.milter_log = os.path.join(self.mdir, "milter.log")
        self.maillog = os.path.join(self.pf, "maillog")
        open(self.milter_log, "wb").close()  # one run's log only
        self.p = lambda f: os.path.join(self.pki, f)
        diag("work directory %s" % base)

    @staticmethod
    def postfix_can_reach(d):
        r = run(["runuser", "-u", "postfix", "--", "test", "-x", d])
        return r.returncode == 0

    def stop_stale(self, base):
        """Leftovers of an interrupted run: milter, token copy, Postfix."""
        pidf = os.path.join(base, "milter", "milter.pid")
        try:
            pid = int(open(pidf).read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"kyso-milter" in f.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        pidf = os.path.join(base, "sink.pid")
        try:
            pid = int(open(pidf).read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"smtp_sink.py" in f.read():
                    os.kill(pid, signal.SIGTERM)
                    time.sleep(0.3)
        except (OSError, ValueError):
            pass
        tok = os.path.join(base, "milter", "token")
        if (os.path.isdir(tok + "/tokens.away")
                and not os.path.exists(tok + "/tokens")):
            os.rename(tok + "/tokens.away", tok + "/tokens")
        pf = os.path.join(base, "pf")
        if os.path.isfile(os.path.join(pf, "etc", "main.cf")):
            run(["bash", os.path.join(HERE, "postfix_instance.sh"), "stop",
                 pf])

    # ---- sink and Postfix
    def start_sink(self):
        log = open(os.path.join(self.work, "sink.log"), "wb")
        p = subprocess.Popen([sys.executable, os.path.join(HERE,
                                                           "smtp_sink.py"),
                              self.sink_dir, str(SINK_PORT)],
                             stdout=subprocess.PIPE, stderr=log)
        self.procs["sink"] = p
        with open(os.path.join(self.work, "sink.pid"), "w") as f:
            f.write("%d\n" % p.pid)
        line = b""
        deadline = time.time() + 10
        os.set_blocking(p.stdout.fileno(), False)
        while time.time() < deadline:
            chunk = p.stdout.read() or b""
            line += chunk
            if b"ready" in line:
                return
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise Fail("smtp_sink did not start: %s %s"
                   % (excerpt(line), tail(os.path.join(self.work,
                                                       "sink.log"), 5)))

    def start_postfix(self):
        env = dict(os.environ)
        r = run(["bash", os.path.join(HERE, "postfix_instance.sh"), "start",
                 self.pf], env=env, timeout=120)
        if r.returncode != 0:
            raise Fail("postfix_instance.sh start failed (%d): %s"
                       % (r.returncode, excerpt(r.stderr + r.stdout)))
        self.password = open(os.path.join(self.pf, "sasl.pass")).read().strip()
        return excerpt(r.stdout, 200)

    def stop_postfix(self):
        run(["bash", os.path.join(HERE, "postfix_instance.sh"), "stop",
             self.pf], timeout=60)

    # ---- the token copy and the milter
    def prepare_token(self):
        tok = os.path.join(self.mdir, "token")
        shutil.rmtree(tok, ignore_errors=True)
        os.makedirs(tok)
        shutil.copytree(self.p("tokens"), os.path.join(tok, "tokens"),
                        symlinks=True)
        self.softhsm_conf = os.path.join(tok, "softhsm2.conf")
        with open(self.softhsm_conf, "w") as f:
            f.write("directories.tokendir = %s/tokens\n"
                    "objectstore.backend = file\n"
                    "log.level = ERROR\n"
                    "slots.removable = false\n" % tok)
        self.token_dir = os.path.join(tok, "tokens")

    def move_token(self, away):
        if away:
            os.rename(self.token_dir, self.token_dir + ".away")
            self.token_moved = True
        else:
            os.rename(self.token_dir + ".away", self.token_dir)
            self.token_moved = False

    def config_text(self, on_invalid="tag", extra_inbound="", on_unsigned="tag", user=""):
        p = self.p
        return """\
# kyso-milter configuration generated by tests/e2e/e2e_test.py
milter: {
  socket = "unix:%(sock)s";
  socket_mode = "0666";
  user = "%(user)s";
  group = "";
  log_level = "debug";
  timeout = 60;
};

tokens = (
  {
    name = "org-token";
    module = "%(module)s";
    pin_file = "%(pin)s";
  }
);

identities = (
  {
    name = "vanphong";
    key = "%(key)s";
    token = "org-token";
    cert = "%(org)s";
    chain = "%(chain)s";
    senders = [ "@backan.gov.vn" ];
  }
);

outbound: {
  trust_auth = true;
  internal_networks = [ "127.0.0.2/32" ];
  on_no_identity = "accept";
  on_sign_error = "tempfail";
  if_signed = "cosign";
  recipient_domains = [ ];
};

inbound: {
%(extra)s  trust_anchors = "%(trust)s";
  untrusted = "%(chain)s";
  crls = [ "%(subcrl)s", "%(rootcrl)s" ];
  authserv_id = "%(authserv)s";
  subject_tag: {
    pass = "%(tpass)s";
    fail = "%(tfail)s";
    none = "";
    neutral = "";
    policy = "[UNVERIFIED SIGNER]";
    temperror = "";
    permerror = "%(tfail)s";
  };
  signer_header = true;
  must_sign_domains = [ "*.gov.vn" ];
  on_unsigned = "%(on_unsigned)s";
  on_invalid = "%(on_invalid)s";
  revocation_cache_dir = "%(revcache)s";
  max_message_size = 67108864;
  on_oversize = "accept";
};
""" % {"sock": self.sock, "module": SOFTHSM_MODULE, "pin": p("token.pin"),
       "key": ORG_KEY_URI, "org": p("org.pem"), "chain": p("chain.pem"),
       "trust": p("trust.pem"), "subcrl": p("sub.crl"),
       "rootcrl": p("root.crl"), "authserv": AUTHSERV_ID, "tpass": TAG_PASS,
       "tfail": TAG_FAIL, "on_invalid": on_invalid, "extra": extra_inbound,
       "on_unsigned": on_unsigned, "revcache": os.path.join(self.mdir, "revcache"),
       "user": user}

    def write_config(self, name, **kw):
        path = os.path.join(self.mdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.config_text(**kw))
        return path

    def milter_env(self):
        env = dict(os.environ)
        env["SOFTHSM2_CONF"] = self.softhsm_conf
        return env

    def start_milter(self, config, wait=True):
        """Start kyso-milter -f; True when its socket answers."""
        self.stop_milter()
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass
        self.milter_starts += 1
        log = open(self.milter_log, "ab")
        log.write(("=== e2e: start %d: %s -f -c %s\n"
                   % (self.milter_starts, self.milter_bin, config)).encode())
        log.flush()
        self.milter = subprocess.Popen([self.milter_bin, "-f", "-c", config],
                                       stdout=log, stderr=log,
                                       env=self.milter_env())
        log.close()
        with open(os.path.join(self.mdir, "milter.pid"), "w") as f:
            f.write("%d\n" % self.milter.pid)
        if not wait:
            return True
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.milter.poll() is not None:
                raise Fail("kyso-milter exited with %d at start; log: %s"
                           % (self.milter.returncode,
                              excerpt(tail(self.milter_log, 8), 800)))
            if os.path.exists(self.sock):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.sock)
                    return True
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.05)
        raise Fail("kyso-milter socket %s not ready after 15 s; log: %s"
                   % (self.sock, excerpt(tail(self.milter_log, 8), 800)))

    def stop_milter(self):
        if self.milter is None:
            return None
        p, self.milter = self.milter, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                diag("kyso-milter ignored SIGTERM for 10 s; killing pid %d"
                     % p.pid)
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    # ---- SMTP
    def submit(self, msg, mail_from, rcpts, auth=False, source=None):
        """Send one message; (code, text) of the outcome (250 on success).
        self.stage names the step that failed."""
        self.stage = "connect"
        try:
            s = smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=90,
                             source_address=(source, 0) if source else None)
        except smtplib.SMTPConnectError as e:
            return e.smtp_code, e.smtp_error.decode("utf-8", "replace")
        try:
            code, text = s.ehlo("client.e2e.test")
            if code != 250:
                self.stage = "EHLO"
                return code, text.decode("utf-8", "replace")
            if auth:
                s.login("official@backan.gov.vn", self.password)
            opts = ["BODY=8BITMIME"] if any(c >= 0x80 for c in msg) else []
            refused = s.sendmail(mail_from, rcpts, msg, mail_options=opts)
            if refused:
                return 550, "some recipients refused: %r" % refused
            return 250, ""
        except smtplib.SMTPRecipientsRefused as e:
            self.stage = "RCPT"
            code, text = list(e.recipients.values())[0]
            return code, text.decode("utf-8", "replace")
        except smtplib.SMTPResponseException as e:
            self.stage = {smtplib.SMTPDataError: "DATA",
                          smtplib.SMTPSenderRefused: "MAIL",
                          smtplib.SMTPAuthenticationError: "AUTH",
                          smtplib.SMTPHeloError: "EHLO"}.get(type(e),
                                                             type(e).__name__)
            return e.smtp_code, e.smtp_error.decode("utf-8", "replace")
        except smtplib.SMTPServerDisconnected as e:
            return 0, "disconnected: %s" % e
        finally:
            try:
                s.quit()
            except Exception:
                s.close()

    def delivered(self, msgid, wait=DELIVERY_WAIT):
        """Bytes of the sink copy whose Message-ID is msgid, or None."""
        needle = b"<" + msgid.encode() + b">"
        deadline = time.time() + wait
        while True:
            found = []
            for name in sorted(os.listdir(self.sink_dir)):
                if not name.endswith(".eml"):
                    continue
                with open(os.path.join(self.sink_dir, name), "rb") as f:
                    raw = f.read()
                if any(needle in v for v in fields_named(raw, "Message-ID")):
                    found.append(raw)
            if found:
                if len(found) > 1:
                    raise Fail("%d deliveries of <%s>" % (len(found), msgid))
                return found[0]
            if time.time() >= deadline:
                return None
            time.sleep(0.1)

    def must_deliver(self, msgid, what):
        raw = self.delivered(msgid)
        if raw is None:
            raise Fail("%s: not delivered within %d s; maillog: %s; milter: %s"
                       % (what, DELIVERY_WAIT,
                          excerpt(self.maillog_for(msgid), 700),
                          excerpt(tail(self.milter_log, 6), 700)))
        path = os.path.join(self.msg_dir, msgid.split("@")[0] + ".delivered.eml")
        with open(path, "wb") as f:
            f.write(raw)
        return raw

    def maillog_for(self, msgid):
        """Maillog lines of the queue id that carried msgid, else the tail."""
        try:
            text = open(self.maillog, encoding="utf-8", errors="replace").read()
        except OSError:
            return ""
        m = re.search(r"postfix-kyso-e2e/cleanup\[\d+\]: ([0-9A-F]+): "
                      r"message-id=<%s>" % re.escape(msgid), text)
        if m:
            return "\n".join(l for l in text.splitlines() if m.group(1) in l)
        return "\n".join(text.splitlines()[-6:])

    # ---- judges
    def kyso_verify(self, raw, name):
        path = os.path.join(self.msg_dir, name)
        with open(path, "wb") as f:
            f.write(raw)
        r = run([self.kyso, "verify", "--trust", self.p("trust.pem"),
                 "--untrusted", self.p("chain.pem"), "--crl", self.p("sub.crl"),
                 "--crl", self.p("root.crl"), path])
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def openssl_verify(self, raw, name):
        """openssl cms -verify; the signer certificates' SHA-256 fps."""
        path = os.path.join(self.msg_dir, name)
        signers = path + ".signers.pem"
        with open(path, "wb") as f:
            f.write(raw)
        r = run(["openssl", "cms", "-verify", "-in", path, "-CAfile",
                 self.p("trust.pem"), "-purpose", "smimesign", "-signer",
                 signers, "-out", os.devnull])
        if r.returncode != 0:
            raise Fail("openssl cms -verify exit %d: %s"
                       % (r.returncode, excerpt(r.stderr, 400)))
        with open(signers, "rb") as f:
            pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?"
                              rb"-----END CERTIFICATE-----", f.read(), re.S)
        return sorted(self.fp_pem(p) for p in pems)

    @staticmethod
    def fp_pem(pem):
        der = base64.b64decode(b"".join(pem.split(b"\n")[1:-1]))
        return hashlib.sha256(der).hexdigest()

    def fp_file(self, name):
        with open(self.p(name), "rb") as f:
            pem = re.search(rb"-----BEGIN CERTIFICATE-----.+?"
                            rb"-----END CERTIFICATE-----", f.read(), re.S)
        return self.fp_pem(pem.group(0))

    def count_signerinfos(self, raw, name):
        _, sig = signed_parts(raw)
        path = os.path.join(self.msg_dir, name + ".p7s")
        with open(path, "wb") as f:
            f.write(sig)
        r = run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER",
                 "-in", path])
        if r.returncode != 0:
            raise Fail("openssl cms -cmsout -print: %s" % excerpt(r.stderr))
        text = r.stdout.decode("utf-8", "replace")
        i = text.find("signerInfos:")
        if i < 0:
            raise Fail("no signerInfos in the SignedData")
        return len(re.findall(r"\n\s+d\.(issuerAndSerialNumber|"
                              r"subjectKeyIdentifier):", text[i:]))

    def gpgsm_setup(self):
        if self.gnupghome:
            return
        # Inside the work directory (short: gpg-agent's socket lives there),
        # so an interrupted run's leftovers go with the next run.
        home = os.path.join(self.work, "gnupg")
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(home, mode=0o700)
        with open(os.path.join(home, "gpgsm.conf"), "w") as f:
            f.write("disable-crl-checks\ndisable-policy-checks\n")
        r = run(["openssl", "x509", "-in", self.p("root.pem"), "-noout",
                 "-fingerprint", "-sha1"])
        fp = r.stdout.decode().strip().split("=", 1)[1]
        with open(os.path.join(home, "trustlist.txt"), "w") as f:
            f.write("%s S\n" % fp)
        self.gnupghome = home
        r = run(["gpgsm", "--homedir", home, "--batch", "--import",
                 self.p("root.pem"), self.p("sub.pem")], env=self.gpg_env())
        if r.returncode != 0:
            raise Fail("gpgsm --import: %s" % excerpt(r.stderr))

    def gpg_env(self):
        e = dict(os.environ)
        e["GNUPGHOME"] = self.gnupghome
        return e

    def gpgsm_verify(self, raw, name, nsig):
        self.gpgsm_setup()
        part1, sig = signed_parts(raw)
        base = os.path.join(self.msg_dir, name)
        with open(base + ".part1", "wb") as f:
            f.write(part1)
        with open(base + ".p7s", "wb") as f:
            f.write(sig)
        r = run(["gpgsm", "--homedir", self.gnupghome, "--batch",
                 "--status-fd", "1", "--verify", base + ".p7s",
                 base + ".part1"], env=self.gpg_env())
        status = [l for l in r.stdout.decode("utf-8", "replace").splitlines()
                  if l.startswith("[GNUPG:] ")]
        good = [l for l in status if l.startswith("[GNUPG:] GOODSIG ")]
        valid = [l for l in status if l.startswith("[GNUPG:] VALIDSIG ")]
        bad = [l for l in status if re.match(r"\[GNUPG:\] (BADSIG|ERRSIG|"
                                             r"EXPSIG|EXPKEYSIG|REVKEYSIG)", l)]
        if r.returncode != 0 or bad or len(good) != nsig or len(valid) != nsig:
            raise Fail("gpgsm --verify exit %d, %d GOODSIG, %d VALIDSIG "
                       "(expected %d): %s %s"
                       % (r.returncode, len(good), len(valid), nsig,
                          excerpt("\n".join(status), 300),
                          excerpt(r.stderr, 300)))

    def cleanup(self):
        try:
            rc = self.stop_milter()
            if rc not in (None, 0):
                diag("kyso-milter exited with status %s" % rc)
        except Exception as e:
            diag("stopping kyso-milter: %s" % e)
        if self.token_moved:
            try:
                self.move_token(False)
            except OSError as e:
                diag("restoring the token copy: %s" % e)
        try:
            self.stop_postfix()
        except Exception as e:
            diag("stopping Postfix: %s" % e)
        p = self.procs.get("sink")
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.gnupghome:
            run(["gpgconf", "--homedir", self.gnupghome, "--kill", "all"],
                env=self.gpg_env(), timeout=30)
            shutil.rmtree(self.gnupghome, ignore_errors=True)


# --------------------------------------------------------------------------
# messages

PDF = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>"
       b"\nendobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n")
BODY_TEXT = ("Kính gửi: Sở Nội vụ tỉnh Bắc Kạn,\n\n"
             "Thực hiện Công văn số 123/UBND-VP ngày 01/12/2026 của Ủy ban nhân "
             "dân tỉnh về việc triển khai chữ ký số trong văn bản điện tử, Văn "
             "phòng UBND tỉnh gửi kèm dự thảo kế hoạch để quý cơ quan góp ý.\n"
             "Đề nghị gửi ý kiến trước ngày 15/12/2026.\n\n"
             "Trân trọng./.\n"
             "Nơi nhận: như trên; lưu VT.\n")


def new_msgid(tag):
    return "e2e-%s-%s@backan.gov.vn" % (tag, uuid.uuid4().hex[:12])


def enc(text):
    """RFC 2047 (UTF-8, B) encoding of a header text."""
    return email.header.Header(text, "utf-8").encode()


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def make_message(msgid, frm, subject, to="Sở Nội vụ <vanthu@sonoivu.backan.gov.vn>",
                 extra_headers=(), attach=True):
    """A Vietnamese official mail: 8-bit UTF-8 text and a PDF attachment."""
    name, addr = email.utils.parseaddr(frm)
    tname, taddr = email.utils.parseaddr(to)
    hdr = [
        "From: %s <%s>" % (enc(name), addr) if name else "From: %s" % addr,
        "To: %s <%s>" % (enc(tname), taddr) if tname else "To: %s" % taddr,
        "Subject: %s" % enc(subject),
        "Date: %s" % email.utils.formatdate(localtime=True),
        "Message-ID: <%s>" % msgid,
    ] + list(extra_headers)
    text = crlf(BODY_TEXT).encode("utf-8")
    if attach:
        pdf64 = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
        hdr += ["MIME-Version: 1.0",
                'Content-Type: multipart/mixed; boundary="=_kyso_e2e_b1"']
        body = (b"This is a multi-part message in MIME format.\r\n"
                b"--=_kyso_e2e_b1\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text +
                b"--=_kyso_e2e_b1\r\n"
                b'Content-Type: application/pdf; name="ke-hoach.pdf"\r\n'
                b'Content-Disposition: attachment; filename="ke-hoach.pdf"\r\n'
                b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf64 +
                b"--=_kyso_e2e_b1--\r\n")
    else:
        hdr += ["MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit"]
        body = text
    return ("\r\n".join(hdr) + "\r\n\r\n").encode("utf-8") + body


def content_of(raw):
    """(text, pdf bytes) found in a message or its signed part."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text, pdf = None, None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "text/plain" and text is None:
            text = part.get_content()
        elif ctype == "application/pdf":
            pdf = part.get_payload(decode=True)
    return text, pdf


# --------------------------------------------------------------------------
# the cases

def main():
    try:
        t = E2E()
    except Fail as e:
        report("prerequisites", False, str(e))
        print("%d passed, %d failed" % (tally.passed, tally.failed))
        return 1

    def on_term(signum, frame):
        raise SystemExit("terminated by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    started = time.time()
    try:
        run_cases(t)
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        report("harness", False, "%s: %s" % (type(e).__name__, e))
    finally:
        t.cleanup()
        if tally.failed:
            diag("--- last lines of the milter log (%s)" % t.milter_log)
            diag(tail(t.milter_log, 30))
            diag("--- last lines of the Postfix log (%s)" % t.maillog)
            diag(tail(t.maillog, 30))
        diag("runtime %.1f s" % (time.time() - started))
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    return 1 if tally.failed else 0


def run_cases(t):
    if not check("setup/sink", t.start_sink):
        return
    if not check("setup/postfix", t.start_postfix):
        return
    if NO_MILTER:
        harness_only(t)
        return

    t.prepare_token()
    good_conf = t.write_config("kyso.conf")
    reject_conf = t.write_config("kyso-reject.conf", on_invalid="reject")
    if not check("setup/milter", t.start_milter, good_conf):
        # Every case below needs it; they run anyway, and fail with reasons.
        pass
    org_fp, leader_fp = t.fp_file("org.pem"), t.fp_file("leader.pem")

    # 1. authenticated sender: signed, verifiable by three judges
    def case1():
        msgid = new_msgid("auth")
        sent = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                            "Công văn số 123/UBND-VP về việc triển khai chữ ký số")
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "authenticated mail")
        problems = []

        def sub(what, fn):
            try:
                fn()
            except Fail as e:
                problems.append("%s: %s" % (what, e))

        def structure():
            if not is_multipart_signed(raw):
                raise Fail("Content-Type %r" % content_type(raw)[:100])
        sub("multipart/signed", structure)
        sub("7bit", lambda: is_7bit(raw))

        def headers_kept():
            for h in ("From", "To", "Subject", "Date", "Message-ID"):
                a, b = fields_named(sent, h), fields_named(raw, h)
                if a != b:
                    raise Fail("%s sent %r, delivered %r" % (h, a, b))
        sub("headers", headers_kept)

        def openssl():
            fps = t.openssl_verify(raw, "case1.eml")
            if fps != [org_fp]:
                raise Fail("signers %s, expected the org certificate" % fps)
        sub("openssl", openssl)
        sub("gpgsm", lambda: t.gpgsm_verify(raw, "case1", 1))

        def kyso():
            rc, out = t.kyso_verify(raw, "case1.kv.eml")
            if rc != 0 or "smime=pass" not in out:
                raise Fail("exit %d: %s" % (rc, excerpt(out, 300)))
        sub("kyso verify", kyso)

        def same_content():
            part1, _ = signed_parts(raw)
            text, pdf = content_of(part1)
            want_text, want_pdf = content_of(sent)
            norm = lambda s: (s or "").replace("\r\n", "\n")
            if text is None or norm(text) != norm(want_text):
                raise Fail("text part differs: %r" % (text or "")[-80:])
            if pdf != want_pdf or pdf != PDF:
                raise Fail("PDF attachment differs")
        sub("content", same_content)
        if problems:
            raise Fail("; ".join(problems))
        return "multipart/signed, 7-bit, headers kept, openssl+gpgsm+kyso pass"
    check("1 authenticated sender is signed", case1)

    # 1b. internal network, no AUTH
    def case1b():
        msgid = new_msgid("internal")
        sent = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                            "Giấy mời họp giao ban tuần")
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], source="127.0.0.2")
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "internal-network mail")
        if not is_multipart_signed(raw):
            raise Fail("not signed: Content-Type %r" % content_type(raw)[:100])
        rc, out = t.kyso_verify(raw, "case1b.eml")
        if rc != 0:
            raise Fail("kyso verify exit %d: %s" % (rc, excerpt(out, 300)))
        return "signed, kyso verify pass"
    check("1b internal-network sender is signed", case1b)

    # 1c. inbound mail re-injected from an internal address (a local
    #     redirect) still carries our badge: it is verified, not signed
    def case1c():
        msgid = new_msgid("reinjected")
        sent = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                            "Thư chuyển tiếp nội bộ", attach=False,
                            extra_headers=["Authentication-Results: %s; smime=none" % AUTHSERV_ID])
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], source="127.0.0.2")
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "re-injected mail")
        if is_multipart_signed(raw):
            raise Fail("re-injected inbound mail was signed with our key")
        ars = our_ar(raw)
        if len(ars) != 1 or "smime=none" not in ars[0]:
            raise Fail("expected our fresh A-R smime=none, got %r" % ars)
        return "not signed; verified: %s" % ars[0][:60]
    check("1c re-injected inbound mail (our A-R on arrival) is not signed", case1c)

    # 2. external client forging our From
    def case2():
        msgid = new_msgid("forged")
        sent = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                            "Thông báo khẩn", attach=False)
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"])
        if code != 250:
            raise Fail("refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "external forged mail")
        if is_multipart_signed(raw):
            raise Fail("an external client got its mail signed")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=none\b", ars[0]):
            raise Fail("our Authentication-Results: %r" % ars)
        subj = decoded(one_field(raw, "Subject"))
        if TAG_PASS in subj:
            raise Fail("pass tag on an unsigned message: %r" % subj)
        if fields_named(raw, "X-Kyso-Signer"):
            raise Fail("X-Kyso-Signer on an unsigned message")
        return ars[0]
    check("2 external client forging From is not signed, smime=none", case2)

    # inbound signed mail, signed beforehand with the kyso CLI
    def signed_inbound(tag, key, cert, frm, subject, extra_headers=()):
        msgid = new_msgid(tag)
        plain = make_message(msgid, frm, subject, to="vanthu@backan.gov.vn",
                             extra_headers=extra_headers)
        src = os.path.join(t.msg_dir, tag + ".plain.eml")
        out = os.path.join(t.msg_dir, tag + ".signed.eml")
        with open(src, "wb") as f:
            f.write(plain)
        r = run([t.kyso, "sign", "--key", "file:" + t.p(key), "--cert",
                 t.p(cert), "--chain", t.p("chain.pem"), "-o", out, src])
        if r.returncode != 0:
            raise Fail("kyso sign (test set-up) exit %d: %s"
                       % (r.returncode, excerpt(r.stderr)))
        with open(out, "rb") as f:
            return msgid, f.read()

    def send_inbound(msg, mail_from):
        return t.submit(msg, mail_from, ["vanthu@backan.gov.vn"])

    def case3a():
        msgid, msg = signed_inbound("inpass", "leader.key", "leader.pem",
                                    "Nguyễn Văn An <chutich@backan.gov.vn>",
                                    "Chỉ đạo về công tác chuyển đổi số")
        code, text = send_inbound(msg, "chutich@backan.gov.vn")
        if code != 250:
            raise Fail("refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "validly signed inbound mail")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=pass\b", ars[0]):
            raise Fail("our Authentication-Results: %r" % ars)
        rawsubj = one_field(raw, "Subject")
        subj = decoded(rawsubj)
        if any(c >= 0x80 for c in rawsubj) or b"=?" not in rawsubj:
            raise Fail("Subject not RFC 2047-encoded: %r" % rawsubj)
        if not subj.startswith(TAG_PASS):
            raise Fail("Subject %r does not start with %r" % (subj, TAG_PASS))
        if "Chỉ đạo về công tác chuyển đổi số" not in subj:
            raise Fail("original Subject text lost: %r" % subj)
        signer = fields_named(raw, "X-Kyso-Signer")
        if len(signer) != 1:
            raise Fail("%d X-Kyso-Signer fields" % len(signer))
        rc, out = t.kyso_verify(raw, "case3a.eml")
        if rc != 0:
            raise Fail("delivered copy no longer verifies: %s" % excerpt(out))
        return "%s; Subject %r; X-Kyso-Signer: %s" % (
            ars[0][:90], subj, decoded(signer[0]))
    check("3a inbound valid signature: smime=pass, pass tag, X-Kyso-Signer",
          case3a)

    def case3b():
        msgid, msg = signed_inbound("inrevoked", "revoked.key", "revoked.pem",
                                    "revoked@backan.gov.vn",
                                    "Quyết định bổ nhiệm")
        code, text = send_inbound(msg, "revoked@backan.gov.vn")
        if code != 250:
            raise Fail("refused with on_invalid=tag: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "revoked-signer inbound mail")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=fail\b", ars[0]):
            raise Fail("our Authentication-Results: %r" % ars)
        subj = decoded(one_field(raw, "Subject"))
        if not subj.startswith(TAG_FAIL) or TAG_PASS in subj:
            raise Fail("Subject %r does not start with %r" % (subj, TAG_FAIL))
        if fields_named(raw, "X-Kyso-Signer"):
            raise Fail("X-Kyso-Signer on a failed signature")
        return "%s; Subject %r" % (ars[0][:100], subj)
    check("3b inbound revoked signer: smime=fail, fail tag", case3b)

    # 4. forged results and tags
    forged_ar = "Authentication-Results: %s; smime=pass " \
                "body.smime-identifier=chutich@backan.gov.vn" % AUTHSERV_ID

    def case4a():
        msgid, msg = signed_inbound(
            "inforged", "leader.key", "leader.pem",
            "Nguyễn Văn An <chutich@backan.gov.vn>",
            TAG_PASS + " Giấy mời họp",
            extra_headers=["X-Kyso-Signer: Fake", forged_ar])
        # Put the forged A-R on top too, where a relay would have added it.
        msg = (forged_ar + "\r\n").encode() + msg
        code, text = send_inbound(msg, "chutich@backan.gov.vn")
        if code != 250:
            raise Fail("refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "signed mail with forged headers")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=pass\b", ars[0]):
            raise Fail("our Authentication-Results (expected exactly one, "
                       "pass): %r" % ars)
        signers = [decoded(v) for v in fields_named(raw, "X-Kyso-Signer")]
        if any(s.strip() == "Fake" for s in signers) or len(signers) != 1:
            raise Fail("X-Kyso-Signer fields %r" % signers)
        subj = decoded(one_field(raw, "Subject"))
        if subj.count(TAG_PASS) != 1 or not subj.startswith(TAG_PASS):
            raise Fail("Subject %r: expected exactly one pass tag" % subj)
        return "one A-R (pass), X-Kyso-Signer %r, Subject %r" % (signers, subj)
    check("4a forged A-R, X-Kyso-Signer and tag removed from signed mail",
          case4a)

    def case4b():
        msgid = new_msgid("unsforged")
        msg = make_message(msgid, "Nguyễn Văn An <chutich@backan.gov.vn>",
                           TAG_PASS + " Giấy mời họp", to="vanthu@backan.gov.vn",
                           extra_headers=["X-Kyso-Signer: Fake", forged_ar],
                           attach=False)
        code, text = send_inbound(msg, "chutich@backan.gov.vn")
        if code != 250:
            raise Fail("refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "unsigned mail with forged headers")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=none\b", ars[0]):
            raise Fail("our Authentication-Results (expected exactly one, "
                       "none): %r" % ars)
        if fields_named(raw, "X-Kyso-Signer"):
            raise Fail("X-Kyso-Signer kept: %r" % fields_named(raw, "X-Kyso-Signer"))
        subj = decoded(one_field(raw, "Subject"))
        if TAG_PASS in subj or "Giấy mời họp" not in subj:
            raise Fail("Subject %r: forged tag kept or text lost" % subj)
        return "%s; Subject %r" % (ars[0], subj)
    check("4b forged A-R and tag removed from unsigned mail", case4b)

    # 4d. two Subject fields, the first nothing but a forged tag: the one a
    #     client shows must not keep a forged tag
    def case4d():
        msgid = new_msgid("twosubjects")
        msg = make_message(msgid, "Nguyễn Văn An <chutich@backan.gov.vn>",
                           TAG_PASS, to="vanthu@backan.gov.vn", attach=False,
                           extra_headers=["Subject: =?UTF-8?B?%s?= Chuyển tiền ngay" %
                                          base64.b64encode(TAG_PASS.encode()).decode()])
        code, text = send_inbound(msg, "chutich@backan.gov.vn")
        if code != 250:
            raise Fail("refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "mail with two tagged Subject fields")
        subjects = [decoded(v) for v in fields_named(raw, "Subject")]
        if any(TAG_PASS in x for x in subjects):
            raise Fail("a forged tag survived: %r" % subjects)
        return "Subjects now %r" % subjects
    check("4d forged tags removed from every Subject field", case4d)

    # 6. outgoing mail already signed by the leader: co-signed
    def case6():
        msgid, msg = signed_inbound("cosign", "leader.key", "leader.pem",
                                    "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                                    "Văn bản có chữ ký của lãnh đạo")
        code, text = t.submit(msg, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "leader-signed outgoing mail")
        n = t.count_signerinfos(raw, "case6")
        if n != 2:
            raise Fail("%d SignerInfos, expected 2" % n)
        fps = t.openssl_verify(raw, "case6.eml")
        if fps != sorted([org_fp, leader_fp]):
            raise Fail("signer certificates %s, expected leader and org"
                       % ["org" if f == org_fp else "leader" if f == leader_fp
                          else f[:12] for f in fps])
        t.gpgsm_verify(raw, "case6", 2)
        return "2 SignerInfos, openssl and gpgsm verify both"
    check("6 leader-signed outgoing mail is co-signed", case6)

    # 3c. on_invalid = reject
    def case3c():
        t.start_milter(reject_conf)
        msgid, msg = signed_inbound("inreject", "revoked.key", "revoked.pem",
                                    "revoked@backan.gov.vn",
                                    "Quyết định bổ nhiệm (gửi lại)")
        code, text = send_inbound(msg, "revoked@backan.gov.vn")
        if code not in (550, 554) or "5.7" not in text or t.stage != "DATA":
            raise Fail("expected 550/554 5.7.x at end of DATA, got %d %s "
                       "at %s" % (code, text, t.stage))
        if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
            raise Fail("delivered although rejected")
        return "%d %s" % (code, text.replace("\n", " "))
    check("3c on_invalid=reject: revoked signer rejected 5.7.x", case3c)

    # 4c. an authenticated official forging the badge towards a colleague
    def case4c():
        msgid = new_msgid("authforged")
        msg = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                           TAG_PASS + " Thông báo nội bộ", to="vanthu@backan.gov.vn",
                           extra_headers=["X-Kyso-Signer: Fake"], attach=False)
        code, text = t.submit(msg, "vanphong@backan.gov.vn",
                              ["vanthu@backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "outgoing mail with forged badge")
        if our_ar(raw):
            raise Fail("an Authentication-Results of ours on outgoing mail: %r" % our_ar(raw))
        if fields_named(raw, "X-Kyso-Signer"):
            raise Fail("X-Kyso-Signer kept")
        subj = decoded(one_field(raw, "Subject"))
        if TAG_PASS in subj:
            raise Fail("forged tag kept in Subject %r" % subj)
        if not is_multipart_signed(raw):
            raise Fail("not signed")
        return "signed; no X-Kyso-Signer; Subject %r" % subj
    check("4c authenticated sender cannot forge the badge for a colleague", case4c)

    # 4e. an official "redirecting" inbound mail (it carries our A-R) that
    #     claims a colleague's From: verified again, never signed
    def case4e():
        msgid = new_msgid("redirected")
        msg = make_message(msgid, "Nguyễn Văn An <chutich@backan.gov.vn>",
                           TAG_PASS + " Chuyển khoản gấp", to="vanthu@backan.gov.vn",
                           extra_headers=["X-Kyso-Signer: Fake", forged_ar], attach=False)
        code, text = t.submit(msg, "chutich@backan.gov.vn",
                              ["vanthu@backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "redirected inbound mail")
        if is_multipart_signed(raw):
            raise Fail("signed as the colleague's identity")
        ars = our_ar(raw)
        if len(ars) != 1 or not re.search(r"\bsmime=none\b", ars[0]):
            raise Fail("expected exactly our true A-R (none), got %r" % ars)
        if [v for v in fields_named(raw, "X-Kyso-Signer") if "Fake" in v]:
            raise Fail("forged X-Kyso-Signer kept")
        subj = decoded(one_field(raw, "Subject"))
        if TAG_PASS in subj:
            raise Fail("forged tag kept in Subject %r" % subj)
        return "not signed; %s" % ars[0][:60]
    check("4e redirected inbound mail from an authenticated client is verified, not signed", case4e)

    # 8. SIGHUP reloads the config; a broken config is refused, the old stays
    def case8():
        conf = t.write_config("reload.conf", on_invalid="tag")
        t.start_milter(conf)
        msgid, msg = signed_inbound("reload1", "revoked.key", "revoked.pem",
                                    "revoked@backan.gov.vn", "Trước khi nạp lại")
        code, text = send_inbound(msg, "revoked@backan.gov.vn")
        if code != 250:
            raise Fail("before reload: expected 250, got %d %s" % (code, text))
        t.write_config("reload.conf", on_invalid="reject")
        t.milter.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "reloaded" not in open(t.milter_log, errors="replace").read().split("=== e2e: start")[-1]:
            time.sleep(0.1)
        msgid, msg = signed_inbound("reload2", "revoked.key", "revoked.pem",
                                    "revoked@backan.gov.vn", "Sau khi nạp lại")
        code, text = send_inbound(msg, "revoked@backan.gov.vn")
        if code not in (550, 554):
            raise Fail("after SIGHUP with on_invalid=reject: got %d %s" % (code, text))
        with open(conf, "w") as f:
            f.write("inbound: { bogus = 1; };\n")
        t.milter.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "reload-refused" not in open(t.milter_log, errors="replace").read():
            time.sleep(0.1)
        if "reload-refused" not in open(t.milter_log, errors="replace").read():
            raise Fail("no reload-refused line after a broken config")
        msgid, msg = signed_inbound("reload3", "revoked.key", "revoked.pem",
                                    "revoked@backan.gov.vn", "Cấu hình hỏng")
        code, text = send_inbound(msg, "revoked@backan.gov.vn")
        if code not in (550, 554):
            raise Fail("broken config replaced the good one: got %d %s" % (code, text))
        if t.milter.poll() is not None:
            raise Fail("milter exited after SIGHUP")
        return "tag -> reject after SIGHUP; broken config refused, reject kept"
    check("8 SIGHUP reloads the config, refuses a broken one", case8)

    # 9. quarantine: unsigned mail from a must-sign domain goes to the hold queue
    def case9():
        t.start_milter(t.write_config("quarantine.conf", on_unsigned="quarantine"))
        msgid = new_msgid("quarantine")
        msg = make_message(msgid, "Sở Tài chính <sotc@sotaichinh.backan.gov.vn>",
                           "Không ký", to="vanthu@backan.gov.vn", attach=False)
        code, text = send_inbound(msg, "sotc@sotaichinh.backan.gov.vn")
        if code != 250:
            raise Fail("expected 250 (accepted into hold), got %d %s" % (code, text))
        if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
            raise Fail("delivered although quarantined")
        q = subprocess.run(["postqueue", "-c", os.path.join(t.pf, "etc"), "-j"],
                           capture_output=True, text=True, timeout=30)
        held = [json.loads(l) for l in q.stdout.splitlines() if l.strip()]
        held = [e for e in held if e.get("queue_name") == "hold"]
        if not held:
            raise Fail("nothing in the hold queue: %r" % q.stdout[:300])
        subprocess.run(["postsuper", "-c", os.path.join(t.pf, "etc"), "-d", "ALL", "hold"],
                       capture_output=True, timeout=30)
        return "accepted, held (%d in hold queue), not delivered" % len(held)
    check("9 on_unsigned=quarantine: unsigned mail from a must-sign domain is held", case9)

    # 10. the worker drops root after opening the token and the socket
    def case10():
        # SoftHSM re-reads its token files on every operation, so a SoftHSM
        # token must belong to the user the milter runs as (a hardware token
        # needs nothing of the kind). The PIN file stays root's: it is read
        # before the privileges are dropped.
        import pwd
        nobody = pwd.getpwnam("nobody").pw_uid
        for d, dirs, files in os.walk(t.token_dir):
            for n in [d] + [os.path.join(d, f) for f in dirs + files]:
                os.chown(n, nobody, -1)
        os.chown(os.path.dirname(t.token_dir), nobody, -1)
        t.start_milter(t.write_config("nobody.conf", user="nobody"))
        kids = subprocess.run(["pgrep", "-P", str(t.milter.pid)], capture_output=True,
                              text=True).stdout.split()
        if len(kids) != 1:
            raise Fail("expected one worker under the supervisor, found %r" % kids)
        status = open("/proc/%s/status" % kids[0]).read()
        uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0]
        if any(int(x) != nobody for x in uid_line.split()[1:]):
            raise Fail("worker still has %s" % uid_line)
        msgid = new_msgid("nobody")
        msg = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                           "Ký sau khi bỏ quyền root", attach=False)
        code, text = t.submit(msg, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text))
        raw = t.must_deliver(msgid, "mail signed by the unprivileged worker")
        if not is_multipart_signed(raw):
            raise Fail("not signed")
        t.kyso_verify(raw, "case10")
        return "worker %s runs as nobody (%s); mail signed and verifies" % (kids[0], uid_line)
    check("10 worker drops to the configured user and still signs", case10)

    # 11. a message that cannot be signed as it is gets a clear 5.7.x at once,
    #     not days of 4xx retries, and never leaves unsigned
    def case11():
        t.start_milter(t.write_config("kyso11.conf"))
        msgid, msg = signed_inbound("brokencosign", "leader.key", "leader.pem",
                                    "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                                    "Chữ ký lãnh đạo bị sửa")
        # Alter the leader-signed text: co-signing it would vouch for a change.
        i = msg.index(b"Content-Transfer-Encoding", msg.index(b"--kyso-"))
        j = msg.index(b"\r\n\r\n", i) + 4
        tampered = msg[:j] + b"X" + msg[j:]
        code, text = t.submit(tampered, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 550 or "5.7" not in text:
            raise Fail("expected 550 5.7.x, got %d %s" % (code, text))
        if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
            raise Fail("delivered although it could not be signed")
        return "%d %s" % (code, text.replace("\n", " "))
    check("11 a leader signature that no longer matches is not co-signed: 5.7.x", case11)

    # 12. our own certificate revoked: -n says so, and mail waits (4xx)
    def case12():
        text = t.config_text()
        text = text.replace(ORG_KEY_URI, "file:" + t.p("revoked.key"))
        text = text.replace(t.p("org.pem"), t.p("revoked.pem"))
        text = text.replace('token = "org-token";', 'token = "";')
        conf = os.path.join(t.mdir, "revoked-identity.conf")
        with open(conf, "w") as f:
            f.write(text)
        r = subprocess.run([t.milter_bin, "-n", "-c", conf], capture_output=True, text=True,
                           env=t.milter_env(), timeout=60)
        out = r.stdout + r.stderr
        if r.returncode == 0 or "own-certificate-revoked" not in out:
            raise Fail("-n exit %d, output %r" % (r.returncode, out[-400:]))
        t.start_milter(conf)
        msgid = new_msgid("ownrevoked")
        msg = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                           "Chứng thư của cơ quan đã bị thu hồi", attach=False)
        code, text2 = t.submit(msg, "vanphong@backan.gov.vn",
                               ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code // 100 != 4:
            raise Fail("expected 4xx while our certificate is revoked, got %d %s" % (code, text2))
        if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
            raise Fail("delivered with a revoked signing certificate")
        return "-n: own-certificate-revoked (exit %d); submission %d %s" % (
            r.returncode, code, text2.replace("\n", " "))
    check("12 own certificate revoked: -n reports it, signing refused (4xx)", case12)

    # 13. an identity bound to other logins does not sign for this one
    def case13():
        text = t.config_text().replace('senders = [', 'logins = [ "chutich@backan.gov.vn" ];\n    senders = [', 1)
        conf = os.path.join(t.mdir, "logins.conf")
        with open(conf, "w") as f:
            f.write(text)
        t.start_milter(conf)
        msgid = new_msgid("loginmismatch")
        msg = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                           "Đăng nhập không khớp", attach=False)
        code, text2 = t.submit(msg, "vanphong@backan.gov.vn",
                               ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("submission refused: %d %s" % (code, text2))
        raw = t.must_deliver(msgid, "mail from a login not bound to the identity")
        if is_multipart_signed(raw):
            raise Fail("signed although the login (official@) is not in logins")
        log = open(t.milter_log, errors="replace").read()
        if "login not allowed for this identity" not in log:
            raise Fail("no log line explaining why it was not signed")
        return "delivered unsigned, logged"
    check("13 identity bound to other logins: not signed for this login", case13)

    # 5. token unavailable
    state = {}

    def case5a():
        t.stop_milter()
        t.move_token(True)
        try:
            up = t.start_milter(good_conf)
            state["up"] = up
        except Fail as e:
            # A milter that refuses to start also means a tempfail (Postfix
            # milter_default_action = tempfail); record it and go on.
            state["up"] = False
            diag("kyso-milter without its token: %s" % e)
        msgid = new_msgid("notoken")
        sent = make_message(msgid, "vanphong@backan.gov.vn", "Báo cáo tuần",
                            attach=False)
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if not 400 <= code < 500:
            raise Fail("expected 4xx, got %d %s" % (code, text))
        if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
            raise Fail("delivered although the token is missing")
        return "%d %s at %s; milter %s" % (code, text.replace("\n", " "),
                                           t.stage,
                                     "running" if state["up"] else
                                     "not running")
    check("5a token unavailable: authenticated mail tempfailed", case5a)

    def case5b():
        if t.token_moved:
            t.move_token(False)
        steps = []
        for how in ("no restart", "SIGHUP", "restart"):
            if how == "SIGHUP":
                if t.milter is None or t.milter.poll() is not None:
                    continue
                t.milter.send_signal(signal.SIGHUP)
                time.sleep(2)
                if t.milter.poll() is not None:
                    steps.append("SIGHUP: milter exited %d"
                                 % t.milter.returncode)
                    continue
            elif how == "restart":
                t.start_milter(good_conf)
            elif t.milter is None or t.milter.poll() is not None:
                steps.append("no restart: milter not running")
                continue
            msgid = new_msgid("tokenback")
            sent = make_message(msgid, "vanphong@backan.gov.vn",
                                "Báo cáo tuần (gửi lại)")
            code, text = t.submit(sent, "vanphong@backan.gov.vn",
                                  ["vanthu@sonoivu.backan.gov.vn"], auth=True)
            if code != 250:
                steps.append("%s: %d %s" % (how, code, text.replace("\n", " ")))
                continue
            raw = t.must_deliver(msgid, "mail after the token came back")
            if not is_multipart_signed(raw):
                raise Fail("%s: delivered unsigned (earlier: %s)"
                           % (how, steps))
            fps = t.openssl_verify(raw, "case5.eml")
            if fps != [org_fp]:
                raise Fail("signers %s" % fps)
            steps.append("%s: delivered signed, verifies" % how)
            return "; ".join(steps)
        raise Fail("; ".join(steps))
    check("5b token back: mail signed again", case5b)

    # 5c/5d (beyond the brief's list): the token goes away while the milter
    # runs, then comes back, with no restart at all.
    def case5c():
        if t.milter is None or t.milter.poll() is not None:
            raise Fail("kyso-milter is not running")
        t.move_token(True)
        msgid = new_msgid("tokengone")
        sent = make_message(msgid, "vanphong@backan.gov.vn", "Báo cáo tháng",
                            attach=False)
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if 400 <= code < 500:
            if t.delivered(msgid, NO_DELIVERY_WAIT) is not None:
                raise Fail("delivered after a %d" % code)
            return "%d %s at %s" % (code, text.replace("\n", " "), t.stage)
        if code != 250:
            raise Fail("expected 4xx (or signing from the loaded key), got "
                       "%d %s" % (code, text))
        raw = t.must_deliver(msgid, "mail while the token is gone")
        if not is_multipart_signed(raw):
            raise Fail("delivered UNSIGNED while the token was gone "
                       "(on_sign_error = tempfail)")
        return "still signed: the module kept the key loaded"
    check("5c token removed while running: tempfail or still signed, "
          "never unsigned", case5c)

    def case5d():
        if t.token_moved:
            t.move_token(False)
        if t.milter is None or t.milter.poll() is not None:
            raise Fail("kyso-milter is not running (exit %s)"
                       % (t.milter.returncode if t.milter else "?"))
        msgid = new_msgid("tokenback2")
        sent = make_message(msgid, "vanphong@backan.gov.vn",
                            "Báo cáo tháng (gửi lại)", attach=False)
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("%d %s" % (code, text))
        raw = t.must_deliver(msgid, "mail after the token came back")
        if not is_multipart_signed(raw):
            raise Fail("delivered unsigned")
        rc, out = t.kyso_verify(raw, "case5d.eml")
        if rc != 0:
            raise Fail("kyso verify exit %d: %s" % (rc, excerpt(out, 200)))
        return "signed and verifies, no restart"
    check("5d token back while running: signed again without restart", case5d)

    # 7. configuration check
    def case7():
        broken = os.path.join(t.mdir, "broken.conf")
        lines = t.config_text().splitlines(True)
        at = next(i for i, l in enumerate(lines) if l.startswith("inbound:"))
        lines.insert(at + 1, "  bogus_key = 1;\n")
        lineno = at + 2
        with open(broken, "w", encoding="utf-8") as f:
            f.writelines(lines)
        r = run([t.milter_bin, "-n", "-c", broken], env=t.milter_env())
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        problems = []
        if r.returncode == 0:
            problems.append("broken config: exit 0")
        if "broken.conf" not in out:
            problems.append("broken config: file not named")
        if not re.search(r"(?<!\d)%d(?!\d)" % lineno, out):
            problems.append("broken config: line %d not named" % lineno)
        if "bogus_key" not in out:
            problems.append("broken config: key not named")
        r2 = run([t.milter_bin, "-n", "-c", good_conf], env=t.milter_env())
        out2 = (r2.stdout + r2.stderr).decode("utf-8", "replace")
        if r2.returncode != 0 or "configuration ok" not in out2.lower():
            problems.append("good config: exit %d, output %r"
                            % (r2.returncode, excerpt(out2, 300)))
        if problems:
            raise Fail("; ".join(problems) + "; broken-config output: %r"
                       % excerpt(out, 300))
        return "%r / %r" % (excerpt(out, 150), excerpt(out2, 80))
    check("7 kyso-milter -n: unknown key reported with file and line; "
          "good config OK", case7)

    # Whatever the verdicts, no part of the milter may crash.
    def no_crash():
        with open(t.milter_log, encoding="utf-8", errors="replace") as f:
            log = f.read()
        died = re.findall(r".*worker-died status=\d+.*", log)
        crashed = [l for l in died
                   if not re.search(r"status=(0|15)\b", l)]
        if crashed:
            raise Fail("%d worker crash(es): %s" % (len(crashed),
                                                    " | ".join(crashed[:3])))
        return "no worker-died lines" if not died else "%d clean exits" % len(died)
    check("milter log: no worker crashed", no_crash)


def harness_only(t):
    """E2E_NO_MILTER=1: the plumbing alone (AUTH, relay, bytes intact)."""
    def auth():
        msgid = new_msgid("plumb")
        sent = make_message(msgid, "Văn phòng UBND tỉnh Bắc Kạn <vanphong@backan.gov.vn>",
                            "Kiểm tra đường truyền")
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["vanthu@sonoivu.backan.gov.vn"], auth=True)
        if code != 250:
            raise Fail("%d %s" % (code, text))
        raw = t.must_deliver(msgid, "plumbing")
        _, body_sent = split_message(sent)
        head, body = split_message(raw)
        if body != body_sent:
            raise Fail("body changed on the way")
        for h in ("From", "To", "Subject", "Date", "Message-ID"):
            if fields_named(sent, h) != fields_named(raw, h):
                raise Fail("%s changed" % h)
        if b"ESMTPA" not in head:
            raise Fail("no ESMTPA in Received: AUTH not used?")
        return "AUTH ok, bytes intact"
    check("plumbing/auth-relay-sink", auth)

    def bad_password():
        s = smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=30)
        try:
            s.login("official@backan.gov.vn", "wrong-" + t.password)
        except smtplib.SMTPAuthenticationError as e:
            return "%d" % e.smtp_code
        finally:
            s.close()
        raise Fail("a wrong password was accepted")
    check("plumbing/bad-password-refused", bad_password)

    def internal():
        msgid = new_msgid("plumb2")
        sent = make_message(msgid, "vanphong@backan.gov.vn", "x", attach=False)
        code, text = t.submit(sent, "vanphong@backan.gov.vn",
                              ["a@example.org"], source="127.0.0.2")
        if code != 250:
            raise Fail("%d %s" % (code, text))
        raw = t.must_deliver(msgid, "plumbing from 127.0.0.2")
        if b"127.0.0.2" not in split_message(raw)[0]:
            raise Fail("Received does not show 127.0.0.2")
    check("plumbing/source-127.0.0.2", internal)


if __name__ == "__main__":
    sys.exit(main())
