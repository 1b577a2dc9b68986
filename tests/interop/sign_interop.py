#!/usr/bin/env python3
"""SIGN-side interoperability test for `kyso sign`.

Environment (see docs/TEST-LAYOUT.md):
  KYSO      path of the kyso binary
  KYSO_PKI  prepared PKI + SoftHSM token directory (certs/setup.sh)
  KYSO_TMP  scratch directory for this test

For many message shapes it signs with the org key on the SoftHSM token and
checks the result with three independent verifiers (OpenSSL, GnuPG gpgsm,
NSS cmsutil), checks the MIME structure, the decoded content and the CMS
attributes.  It also covers a `file:` key, co-signing of a message already
signed with `openssl cms -sign`, and --if-signed=skip / wrap.

Output: one `ok - name` / `not ok - name: reason` line per check, then
`N passed, M failed`.  Exit status 1 if any check failed.
"""

import base64
import email
import email.policy
import hashlib
import os
import quopri
import random
import re
import shutil
import subprocess
import sys
import tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import Fail, check, diag, excerpt, report, run, tail, tally  # noqa: E402

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_KEY = "pkcs11:token=kyso-org;object=org;type=private"

OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_SMIME_CAPS = "1.2.840.113549.1.9.15"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_SHA256_RSA = "1.2.840.113549.1.1.11"

PRESERVED_HEADERS = ["received", "from", "to", "cc", "subject", "date",
                     "message-id"]



def short(v, limit=160):
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "..."


def excerpt(b, limit=600):
    if isinstance(b, bytes):
        b = b.decode("utf-8", "replace")
    b = b.strip()
    if len(b) > limit:
        b = b[:limit] + "..."
    return b.replace("\n", " | ")


# --------------------------------------------------------------------------
# processes

ENV = dict(os.environ)


def run(cmd, stdin=None, env=None, timeout=180):
    try:
        return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env or ENV,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail("timed out after %ds: %s" % (timeout, " ".join(cmd)))


def must(cmd, what, **kw):
    p = run(cmd, **kw)
    if p.returncode != 0:
        raise Fail("%s failed (exit %d): %s" % (what, p.returncode,
                                                excerpt(p.stderr + p.stdout)))
    return p


# --------------------------------------------------------------------------
# certificates

def pem_certs(text):
    return re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                      text, re.S)


def cert_fp(pem):
    body = re.sub(rb"-----[A-Z ]+-----|\s", b"", pem)
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def file_fps(path):
    with open(path, "rb") as f:
        return [cert_fp(c) for c in pem_certs(f.read())]


# --------------------------------------------------------------------------
# raw MIME helpers (deliberately not trusting a library for byte positions)

def split_head_body(data):
    """Return (header bytes incl. final line end, body bytes)."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    m = re.search(rb"\r?\n\r?\n", data)
    if not m:
        return data, b""
    nl = data.index(b"\n", m.start()) + 1     # end of the last header line
    return data[:nl], data[m.end():]


def header_fields(head):
    """List of (lowercase name, raw value with folding, line ends -> LF)."""
    head = head.replace(b"\r\n", b"\n")
    fields = []
    for line in head.split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            n, v = fields[-1]
            fields[-1] = (n, v + b"\n" + line)
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            fields.append((b"<malformed>", line))
            continue
        fields.append((name.strip().lower(), value))
    return [(n.decode("ascii", "replace"), v) for n, v in fields]


def values(fields, name):
    return [v for n, v in fields if n == name]


def parse_header_only(head):
    return email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32)


def mime_parts(body, boundary):
    """Split a multipart body into raw parts (without the delimiter line
    ends, per RFC 2046) and report whether a close delimiter was seen."""
    delim = b"--" + boundary
    positions = []          # (start of delimiter incl. preceding CRLF, end of its line, is_close)
    pos = 0
    while True:
        i = body.find(delim, pos)
        if i < 0:
            break
        at_line_start = i == 0 or body[i - 1:i] == b"\n"
        if at_line_start:
            eol = body.find(b"\n", i)
            line_end = len(body) if eol < 0 else eol + 1
            rest = body[i + len(delim):line_end].rstrip(b"\r\n")
            is_close = rest.startswith(b"--")
            if rest.strip(b" \t") in (b"", b"--") or is_close:
                start = i
                if i >= 2 and body[i - 2:i] == b"\r\n":
                    start = i - 2
                elif i >= 1 and body[i - 1:i] == b"\n":
                    start = i - 1
                positions.append((start, line_end, is_close))
                if is_close:
                    break
        pos = i + len(delim)
    parts = []
    for (s, e, close), nxt in zip(positions, positions[1:]):
        if close:
            break
        parts.append(body[e:nxt[0]])
    closed = bool(positions) and positions[-1][2]
    return parts, closed


def crlf(data):
    return re.sub(rb"\r?\n", b"\r\n", data)


class Signed:
    """A multipart/signed message as written by kyso, taken apart."""

    def __init__(self, data, workdir, tag="out"):
        self.raw = data
        self.head, self.body = split_head_body(data)
        self.fields = header_fields(self.head)
        self.msg = parse_header_only(self.head)
        self.ctype = self.msg.get_content_type()
        self.boundary = self.msg.get_param("boundary")
        self.parts, self.closed = [], False
        self.part1 = self.sig = None
        if self.ctype != "multipart/signed" or not self.boundary:
            raise Fail("top-level Content-Type is %r (boundary %r), not "
                       "multipart/signed" % (self.msg.get("Content-Type"),
                                             self.boundary))
        self.parts, self.closed = mime_parts(self.body,
                                             self.boundary.encode("ascii"))
        if len(self.parts) != 2:
            raise Fail("multipart/signed has %d parts, expected 2"
                       % len(self.parts))
        # What was signed: the first part in canonical CRLF form.
        self.part1 = crlf(self.parts[0])
        sigpart = email.message_from_bytes(self.parts[1],
                                           policy=email.policy.compat32)
        self.sig_ctype = sigpart.get_content_type()
        self.sig = sigpart.get_payload(decode=True) or b""
        self.part1_path = os.path.join(workdir, tag + ".part1")
        self.sig_path = os.path.join(workdir, tag + ".sig.der")
        with open(self.part1_path, "wb") as f:
            f.write(self.part1)
        with open(self.sig_path, "wb") as f:
            f.write(self.sig)


# --------------------------------------------------------------------------
# verifiers

class Env:
    def __init__(self, kyso, pki, tmp):
        self.kyso, self.pki, self.tmp = kyso, pki, tmp
        self.root = os.path.join(pki, "root.pem")
        self.sub = os.path.join(pki, "sub.pem")
        self.chain = os.path.join(pki, "chain.pem")
        self.org_fp = file_fps(os.path.join(pki, "org.pem"))[0]
        self.leader_fp = file_fps(os.path.join(pki, "leader.pem"))[0]
        self.sub_fp = file_fps(self.sub)[0]
        self.gnupghome = None
        self.nssdb = None

    # ---- kyso
    def sign(self, inp, out, key=None, module=True, extra=()):
        cmd = [self.kyso, "sign", "--key", key or TOKEN_KEY]
        if module:
            cmd += ["--module", SOFTHSM_MODULE,
                    "--pin-file", os.path.join(self.pki, "token.pin")]
        cmd += ["--cert", os.path.join(self.pki, "org.pem"),
                "--chain", self.chain] + list(extra) + ["-o", out, inp]
        if os.path.exists(out):
            os.unlink(out)
        p = run(cmd)
        if p.returncode != 0:
            raise Fail("kyso sign exit %d: %s  [cmd: %s]"
                       % (p.returncode, excerpt(p.stderr + p.stdout),
                          " ".join(cmd)))
        if not os.path.exists(out):
            raise Fail("kyso sign exit 0 but wrote no %s" % out)
        with open(out, "rb") as f:
            return f.read()

    # ---- OpenSSL
    def openssl_verify_smime(self, path, certs_out, expect_fps):
        must(["openssl", "cms", "-verify", "-in", path, "-CAfile", self.root,
              "-purpose", "smimesign", "-signer", certs_out,
              "-out", os.devnull], "openssl cms -verify (S/MIME)")
        with open(certs_out, "rb") as f:
            got = [cert_fp(c) for c in pem_certs(f.read())]
        if sorted(got) != sorted(expect_fps):
            raise Fail("signer certificates %s, expected %s"
                       % (self.names(got), self.names(expect_fps)))

    def openssl_verify_detached(self, s, certs_out, expect_fps):
        must(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
              "-in", s.sig_path, "-content", s.part1_path,
              "-CAfile", self.root, "-purpose", "smimesign",
              "-signer", certs_out, "-out", os.devnull],
             "openssl cms -verify -content part1 -inform DER")
        with open(certs_out, "rb") as f:
            got = [cert_fp(c) for c in pem_certs(f.read())]
        if sorted(got) != sorted(expect_fps):
            raise Fail("signer certificates %s, expected %s"
                       % (self.names(got), self.names(expect_fps)))

    def names(self, fps):
        known = {self.org_fp: "org", self.leader_fp: "leader",
                 self.sub_fp: "sub"}
        return "[" + ", ".join(known.get(f, f[:12]) for f in fps) + "]"

    # ---- GnuPG
    def gpgsm_setup(self):
        if self.gnupghome:
            return
        base = self.tmp
        # gpg-agent's socket path must stay short.
        if len(os.path.abspath(base)) > 60:
            base = None
        home = tempfile.mkdtemp(prefix="gpgsm.", dir=base)
        os.chmod(home, 0o700)
        with open(os.path.join(home, "gpgsm.conf"), "w") as f:
            f.write("disable-crl-checks\ndisable-policy-checks\n")
        with open(os.path.join(home, "gpg-agent.conf"), "w") as f:
            f.write("")
        p = must(["openssl", "x509", "-in", self.root, "-noout",
                  "-fingerprint", "-sha1"], "openssl x509 -fingerprint")
        fp = p.stdout.decode().strip().split("=", 1)[1]
        with open(os.path.join(home, "trustlist.txt"), "w") as f:
            f.write("%s S\n" % fp)
        self.gnupghome = home
        must(["gpgsm", "--homedir", home, "--batch", "--import", self.root,
              self.sub], "gpgsm --import", env=self.gpg_env())

    def gpg_env(self):
        e = dict(ENV)
        e["GNUPGHOME"] = self.gnupghome
        return e

    def gpgsm_verify(self, s, nsig):
        self.gpgsm_setup()
        p = run(["gpgsm", "--homedir", self.gnupghome, "--batch",
                 "--status-fd", "1", "--verify", s.sig_path, s.part1_path],
                env=self.gpg_env())
        status = [l for l in p.stdout.decode("utf-8", "replace").splitlines()
                  if l.startswith("[GNUPG:] ")]
        good = [l for l in status if l.startswith("[GNUPG:] GOODSIG ")]
        valid = [l for l in status if l.startswith("[GNUPG:] VALIDSIG ")]
        bad = [l for l in status if re.match(r"\[GNUPG:\] (BADSIG|ERRSIG|EXPSIG"
                                             r"|EXPKEYSIG|REVKEYSIG)", l)]
        if p.returncode != 0 or bad or len(good) != nsig or len(valid) != nsig:
            raise Fail("gpgsm --verify exit %d, %d GOODSIG, %d VALIDSIG "
                       "(expected %d), status: %s; stderr: %s"
                       % (p.returncode, len(good), len(valid), nsig,
                          excerpt("\n".join(status)), excerpt(p.stderr)))
        return "%d good signature(s)" % len(good)

    def gpgsm_cleanup(self):
        if self.gnupghome:
            run(["gpgconf", "--kill", "gpg-agent"], env=self.gpg_env(),
                timeout=30)
            shutil.rmtree(self.gnupghome, ignore_errors=True)

    # ---- NSS
    def nss_setup(self):
        if self.nssdb:
            return
        db = os.path.join(self.tmp, "nssdb")
        shutil.rmtree(db, ignore_errors=True)
        os.makedirs(db)
        d = "sql:" + db
        must(["certutil", "-N", "-d", d, "--empty-password"], "certutil -N")
        must(["certutil", "-A", "-d", d, "-n", "Kyso Test Root", "-t", "C,C,C",
              "-a", "-i", self.root], "certutil -A root")
        must(["certutil", "-A", "-d", d, "-n", "Kyso Test Sub", "-t", ",,",
              "-a", "-i", self.sub], "certutil -A sub")
        self.nssdb = d

    def nss_verify(self, s, nsig):
        self.nss_setup()
        p = run(["cmsutil", "-D", "-c", s.part1_path, "-i", s.sig_path,
                 "-d", self.nssdb, "-n", "-v", "-h", "1"])
        out = p.stdout.decode("utf-8", "replace")
        m = re.search(r"nsigners=(\d+)", out)
        statuses = re.findall(r"signer\d+\.status=(\w+)", out)
        if (p.returncode != 0 or not m or int(m.group(1)) != nsig
                or len(statuses) != nsig
                or any(st != "GoodSignature" for st in statuses)):
            raise Fail("cmsutil -D exit %d, nsigners=%s statuses=%s "
                       "(expected %d GoodSignature); out: %s; err: %s"
                       % (p.returncode, m.group(1) if m else "?", statuses,
                          nsig, excerpt(out), excerpt(p.stderr)))
        return "nsigners=%d, all GoodSignature" % nsig

    # ---- CMS structure
    def cms_print(self, s):
        p = must(["openssl", "cms", "-cmsout", "-print", "-inform", "DER",
                  "-in", s.sig_path], "openssl cms -cmsout -print")
        return p.stdout.decode("utf-8", "replace")

    def cms_certs(self, s, workdir, tag):
        p = must(["openssl", "pkcs7", "-inform", "DER", "-in", s.sig_path,
                  "-print_certs"], "openssl pkcs7 -print_certs")
        return [cert_fp(c) for c in pem_certs(p.stdout)]


def signer_infos(printed):
    """Split `openssl cms -cmsout -print` output into signerInfo blocks."""
    lines = printed.splitlines()
    try:
        start = next(i for i, l in enumerate(lines)
                     if l.strip() == "signerInfos:")
    except StopIteration:
        return []
    # signerInfos is the last field printed; attribute values may carry
    # asn1parse dumps with their own indentation, so only the indentation
    # of the signerInfo "version:" lines delimits the blocks.
    blocks, cur, indent = [], None, None
    for l in lines[start + 1:]:
        ind = len(l) - len(l.lstrip())
        if indent is None and l.strip().startswith("version:"):
            indent = ind
        if indent is not None and ind == indent and \
                l.strip().startswith("version:"):
            cur = []
            blocks.append(cur)
        if cur is not None:
            cur.append(l)
    return ["\n".join(b) for b in blocks]


# --------------------------------------------------------------------------
# test messages

def qenc(s):
    return "=?UTF-8?B?%s?=" % base64.b64encode(s.encode()).decode()


SUBJECT = ("=?UTF-8?B?%s?=\r\n =?UTF-8?B?%s?=" % (
    base64.b64encode("Công văn số 123/UBND-VP về việc ".encode()).decode(),
    base64.b64encode("triển khai chữ ký số chuyên dùng".encode()).decode()))

VI_TEXT = ("Kính gửi: Sở Thông tin và Truyền thông tỉnh Bắc Kạn,\r\n"
           "\r\n"
           "Ủy ban nhân dân tỉnh đề nghị các cơ quan, đơn vị triển khai\r\n"
           "chữ ký số chuyên dùng Chính phủ trên thư điện tử công vụ.\r\n"
           "Đặc biệt lưu ý: ả, ẫ, ặ, ề, ổ, ự, ỹ, đ, Đ.\r\n"
           "\r\n"
           "Trân trọng./.\r\n")


def headers(n, sender="vanphong@backan.gov.vn", extra=""):
    return (
        "Received: from mail.backan.gov.vn (mail.backan.gov.vn [10.20.0.5])\r\n"
        "\tby gw.backan.gov.vn (Postfix) with ESMTPS id 4QX1Z2abc%d\r\n"
        "\tfor <sotttt@backan.gov.vn>; Fri, 4 Dec 2026 09:59:58 +0700 (+07)\r\n"
        "Received: from [10.20.1.44] by mail.backan.gov.vn; "
        "Fri, 4 Dec 2026 09:59:57 +0700\r\n"
        "From: %s <%s>\r\n"
        "To: %s <sotttt@backan.gov.vn>, sonv@backan.gov.vn\r\n"
        "Cc: %s <vanthu@backan.gov.vn>\r\n"
        "Subject: %s\r\n"
        "Date: Fri, 04 Dec 2026 10:00:0%d +0700\r\n"
        "Message-ID: <kyso-interop-%d.20261204@backan.gov.vn>\r\n"
        "%s" % (n, qenc("Văn phòng UBND tỉnh Bắc Kạn"), sender,
                qenc("Sở Thông tin và Truyền thông"), qenc("Văn thư"),
                SUBJECT, n % 10, n, extra)).encode()


def pdf_bytes():
    rnd = random.Random(20261204)
    blob = bytes(rnd.getrandbits(8) for _ in range(6000))
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n"
            b"endobj\nstream\n" + blob + b"\nendstream\n%%EOF\n")


def binary_bytes():
    rnd = random.Random(998)
    data = bytes(range(256)) + bytes(rnd.getrandbits(8) for _ in range(3000))
    # no line ending right before the delimiter: keeps the part boundary
    # unambiguous while lone CR / LF / CRLF / NUL bytes stay inside
    return data + b"\x00\xff\x80END"


def b64lines(data):
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def build_cases():
    cases = []
    mime = "MIME-Version: 1.0\r\n"

    # 1. UTF-8 text, 8bit
    cases.append(("utf8-8bit", headers(1, extra=mime +
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n") + b"\r\n"
                  + VI_TEXT.encode()))

    # 2. LF-only line endings throughout
    lf = (headers(2, extra=mime + "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n") + b"\r\n"
          + VI_TEXT.encode()).replace(b"\r\n", b"\n")
    cases.append(("lf-only", lf))

    # 3. a line of 3000+ octets
    longline = ("Dòng dài: " + "".join("ABCDEFGHIJ"[i % 10] if i % 7 else "ệ"
                                      for i in range(3000)))
    cases.append(("long-line", headers(3, extra=mime +
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n") + b"\r\n"
                  + ("Mở đầu\r\n" + longline + "\r\nKết thúc\r\n").encode()))

    # 4. multipart/mixed with text and a PDF-like attachment
    b = "----=_kyso_mixed_4"
    body = ("This is a multi-part message in MIME format.\r\n"
            "--%s\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n"
            "--%s\r\n"
            "Content-Type: application/pdf; name=\"cong-van-123.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"cong-van-123.pdf\"\r\n"
            "\r\n" % (b, VI_TEXT, b)).encode() + b64lines(pdf_bytes()) + \
        ("\r\n--%s--\r\n" % b).encode()
    cases.append(("multipart-mixed-pdf", headers(4, extra=mime +
                  "Content-Type: multipart/mixed; boundary=\"%s\"\r\n" % b)
                  + b"\r\n" + body))

    # 4b. an attachment whose name is raw UTF-8 in its header fields
    b = "----=_kyso_mixed_4b"
    fname = "Công văn số 123 về việc triển khai kế hoạch năm 2027.pdf"
    body = ("--%s\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n"
            "--%s\r\n"
            "Content-Type: application/pdf; name=\"%s\"\r\n"
            "Content-Description: Tài liệu đính kèm\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"%s\"\r\n"
            "\r\n" % (b, VI_TEXT, b, fname, fname)).encode() + b64lines(pdf_bytes()) + \
        ("\r\n--%s--\r\n" % b).encode()
    cases.append(("utf8-filename", headers(13, extra=mime +
                  "Content-Type: multipart/mixed; boundary=\"%s\"\r\n" % b)
                  + b"\r\n" + body))

    # 5. multipart/alternative text + HTML, both 8bit UTF-8
    b = "----=_kyso_alt_5"
    html = ("<html><head><meta charset=\"utf-8\"></head><body>\r\n"
            "<p>Kính gửi: <b>Sở Thông tin và Truyền thông</b></p>\r\n"
            "<p>Đề nghị triển khai chữ ký số.</p>\r\n</body></html>\r\n")
    body = ("--%s\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n"
            "--%s\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n"
            "--%s--\r\n" % (b, VI_TEXT, b, html, b)).encode()
    cases.append(("multipart-alternative", headers(5, extra=mime +
                  "Content-Type: multipart/alternative; boundary=\"%s\"\r\n" % b)
                  + b"\r\n" + body))

    # 6. a Content-Transfer-Encoding: binary part
    b = "----=_kyso_bin_6"
    body = ("--%s\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nTệp nhị phân đính kèm.\r\n"
            "\r\n--%s\r\n"
            "Content-Type: application/octet-stream; name=\"du-lieu.bin\"\r\n"
            "Content-Transfer-Encoding: binary\r\n"
            "Content-Disposition: attachment; filename=\"du-lieu.bin\"\r\n"
            "\r\n" % (b, b)).encode() + binary_bytes() + \
        ("\r\n--%s--\r\n" % b).encode()
    cases.append(("binary-part", headers(6, extra=mime +
                  "Content-Type: multipart/mixed; boundary=\"%s\"\r\n" % b)
                  + b"\r\n" + body))

    # 7. empty body
    cases.append(("empty-body", headers(7, extra=mime +
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 7bit\r\n") + b"\r\n"))

    # 8. no final newline
    cases.append(("no-final-newline", headers(8, extra=mime +
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n") + b"\r\n"
                  + "Dòng một\r\nDòng cuối không có xuống dòng".encode()))

    # 9. "From " lines, lone dots, trailing white space
    text = ("From the office of the chairman:\r\n"
            ".\r\n"
            "..\r\n"
            ". \r\n"
            "trailing spaces   \r\n"
            "trailing tab\t\r\n"
            "From here on, nothing special.\r\n"
            " From with leading space\r\n"
            "-- \r\n"
            "Van phong\r\n"
            ".\r\n")
    cases.append(("from-dot-trailing-ws", headers(9, extra=mime +
                  "Content-Type: text/plain; charset=us-ascii\r\n"
                  "Content-Transfer-Encoding: 7bit\r\n") + b"\r\n"
                  + text.encode()))

    # 10. plain RFC 5322, no MIME headers at all
    cases.append(("no-mime-headers", headers(10) + b"\r\n"
                  + b"Plain ASCII message without any MIME header.\r\n"
                    b"Second line.\r\n"))
    return cases


# --------------------------------------------------------------------------
# content comparison

def leaves(data):
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        fname = part.get_filename()
        if part.get_content_maintype() == "text":
            content = part.get_content()
        else:
            content = part.get_payload(decode=True) or b""
        out.append((ctype, fname, content))
    return out


def norm_text(s):
    return s.replace("\r\n", "\n")


def compare_content(orig, part1):
    a, b = leaves(orig), leaves(part1)
    if len(a) != len(b):
        raise Fail("original has %d leaf parts %s, signed part has %d %s"
                   % (len(a), [x[0] for x in a], len(b), [x[0] for x in b]))
    notes = []
    for i, ((ta, fa, ca), (tb, fb, cb)) in enumerate(zip(a, b)):
        if ta != tb:
            raise Fail("part %d: type %s became %s" % (i, ta, tb))
        if fa != fb:
            raise Fail("part %d: filename %r became %r" % (i, fa, fb))
        if isinstance(ca, str):
            na, nb = norm_text(ca), norm_text(cb)
            if na == nb:
                continue
            if not na.endswith("\n") and nb == na + "\n":
                notes.append("part %d gained a final newline" % i)
                continue
            for j, (x, y) in enumerate(zip(na, nb)):
                if x != y:
                    break
            else:
                j = min(len(na), len(nb))
            raise Fail("part %d (%s): text differs at char %d: %r vs %r "
                       "(lengths %d/%d)" % (i, ta, j, na[max(0, j - 20):j + 20],
                                            nb[max(0, j - 20):j + 20],
                                            len(na), len(nb)))
        if not isinstance(cb, bytes) or ca != cb:
            raise Fail("part %d (%s): decoded bytes differ (%d vs %d bytes)"
                       % (i, ta, len(ca), len(cb) if cb is not None else -1))
    return "; ".join(["%d leaf part(s) equal" % len(a)] + notes)


# --------------------------------------------------------------------------
# per-message checks

def check_structure(orig, s):
    problems = []
    ctv = s.msg.get("Content-Type")
    if s.msg.get_param("protocol") is None or \
            s.msg.get_param("protocol").lower() != "application/pkcs7-signature":
        problems.append("protocol=%r" % s.msg.get_param("protocol"))
    if (s.msg.get_param("micalg") or "").lower() != "sha-256":
        problems.append("micalg=%r" % s.msg.get_param("micalg"))
    if len(values(s.fields, "content-type")) != 1:
        problems.append("%d top-level Content-Type fields"
                        % len(values(s.fields, "content-type")))
    mv = values(s.fields, "mime-version")
    if [v.strip() for v in mv] != [b"1.0"]:
        problems.append("top-level MIME-Version %r" % mv)
    for cte in values(s.fields, "content-transfer-encoding"):
        if cte.strip().lower() != b"7bit":
            problems.append("top-level Content-Transfer-Encoding %r" % cte)
    ofields = header_fields(split_head_body(orig)[0])
    for name in PRESERVED_HEADERS:
        ov, nv = values(ofields, name), values(s.fields, name)
        if ov != nv:
            unf = lambda l: [re.sub(rb"\n[ \t]", b" ", x) for x in l]
            how = " (differs only in folding)" if unf(ov) == unf(nv) else ""
            problems.append("%s changed%s: %s -> %s"
                            % (name, how, short(ov), short(nv)))
    # any original Content-* header must not leak to the top level
    for n, v in ofields:
        if n.startswith("content-") and n != "content-type" and \
                v in values(s.fields, n) and not \
                (n == "content-transfer-encoding" and v.strip().lower() == b"7bit"):
            problems.append("original %s %r still at top level" % (n, v))
    high = [i for i, c in enumerate(s.raw) if c >= 0x80 or c == 0]
    if high:
        problems.append("%d non-7-bit/NUL bytes (first at offset %d: 0x%02x)"
                        % (len(high), high[0], s.raw[high[0]]))
    longest = max((len(l.rstrip(b"\r")) for l in s.raw.split(b"\n")), default=0)
    if longest > 998:
        problems.append("line of %d octets" % longest)
    if not s.closed:
        problems.append("no close delimiter --%s--" % s.boundary)
    first = s.part1.split(b"\r\n", 1)[0]
    if not first.lower().startswith(b"content-type:"):
        problems.append("signed part begins with %r, not a Content-Type line"
                        % first[:80])
    p1head, _ = split_head_body(s.part1)
    if not p1head:
        problems.append("signed part has no header")
    if s.sig_ctype not in ("application/pkcs7-signature",):
        problems.append("signature part type %s" % s.sig_ctype)
    if not s.sig:
        problems.append("empty signature part")
    if problems:
        raise Fail("; ".join(problems))
    eol = "CRLF" if b"\r\n" in s.raw else "LF"
    return "%s line ends, longest line %d" % (eol, longest)


def check_cms(env, s, expect_signers, workdir, tag):
    printed = env.cms_print(s)
    problems = []
    if "signedData" not in printed:
        problems.append("not SignedData")
    infos = signer_infos(printed)
    if len(infos) != expect_signers:
        problems.append("%d signerInfos, expected %d"
                        % (len(infos), expect_signers))
    for i, blk in enumerate(infos):
        for oid, nm in ((OID_CONTENT_TYPE, "contentType"),
                        (OID_MESSAGE_DIGEST, "messageDigest"),
                        (OID_SIGNING_TIME, "signingTime"),
                        (OID_SMIME_CAPS, "SMIMECapabilities"),
                        (OID_SIGNING_CERT_V2, "signingCertificateV2")):
            if "(%s)" % oid not in blk:
                problems.append("signer %d lacks %s" % (i, nm))
        m = re.search(r"digestAlgorithm:\s*\n\s*algorithm: \S+ \(([\d.]+)\)", blk)
        if not m or m.group(1) != OID_SHA256:
            problems.append("signer %d digest %s" % (i, m and m.group(1)))
        m = re.search(r"signatureAlgorithm:\s*\n\s*algorithm: \S+ \(([\d.]+)\)",
                      blk)
        if not m or m.group(1) not in (OID_RSA, OID_SHA256_RSA):
            problems.append("signer %d signature alg %s" % (i, m and m.group(1)))
        if "signedAttrs" not in blk:
            problems.append("signer %d has no signedAttrs" % i)
    m = re.search(r"eContentType: \S+ \(([\d.]+)\)", printed)
    if not m or m.group(1) != "1.2.840.113549.1.7.1":
        problems.append("eContentType %s" % (m and m.group(1)))
    if re.search(r"eContent: <ABSENT>", printed) is None:
        problems.append("eContent not absent (not detached)")
    certs = env.cms_certs(s, workdir, tag)
    for fp, nm in ((env.org_fp, "org"), (env.sub_fp, "sub (chain)")):
        if fp not in certs:
            problems.append("certificate %s not included" % nm)
    if problems:
        raise Fail("; ".join(problems))
    return "%d signer(s), certs %s" % (len(infos), env.names(certs))


def sign_case(env, name, orig):
    wd = os.path.join(env.tmp, name)
    os.makedirs(wd, exist_ok=True)
    inp, out = os.path.join(wd, "in.eml"), os.path.join(wd, "out.eml")
    with open(inp, "wb") as f:
        f.write(orig)
    state = {}

    def do_sign():
        data = env.sign(inp, out)
        state["s"] = Signed(data, wd)

    check("%s/sign" % name, do_sign)
    s = state.get("s")

    def need():
        if s is None:
            raise Fail("no usable multipart/signed output (see %s/sign)" % name)
        return s

    check("%s/openssl-verify-smime" % name, lambda: env.openssl_verify_smime(
        need() and out, os.path.join(wd, "signer1.pem"), [env.org_fp]))
    check("%s/openssl-verify-detached" % name,
          lambda: env.openssl_verify_detached(need(),
                                              os.path.join(wd, "signer2.pem"),
                                              [env.org_fp]))
    check("%s/gpgsm-verify" % name, lambda: env.gpgsm_verify(need(), 1))
    check("%s/nss-cmsutil-verify" % name, lambda: env.nss_verify(need(), 1))
    check("%s/structure" % name, lambda: check_structure(orig, need()))
    check("%s/content" % name, lambda: compare_content(orig, need().part1))
    check("%s/cms-attributes" % name,
          lambda: check_cms(env, need(), 1, wd, "out"))
    return s


# --------------------------------------------------------------------------
# file: key

def file_key_case(env):
    name = "file-key"
    wd = os.path.join(env.tmp, name)
    os.makedirs(wd, exist_ok=True)
    orig = headers(11, extra="MIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n") + b"\r\n" + \
        VI_TEXT.encode()
    inp, out = os.path.join(wd, "in.eml"), os.path.join(wd, "out.eml")
    with open(inp, "wb") as f:
        f.write(orig)
    state = {}

    def do_sign():
        data = env.sign(inp, out, key="file:" + os.path.join(env.pki, "org.key"),
                        module=False)
        state["s"] = Signed(data, wd)

    check("%s/sign" % name, do_sign)

    def need():
        if "s" not in state:
            raise Fail("no usable output (see %s/sign)" % name)
        return state["s"]

    check("%s/openssl-verify-smime" % name, lambda: env.openssl_verify_smime(
        need() and out, os.path.join(wd, "signer.pem"), [env.org_fp]))
    check("%s/gpgsm-verify" % name, lambda: env.gpgsm_verify(need(), 1))
    check("%s/nss-cmsutil-verify" % name, lambda: env.nss_verify(need(), 1))
    check("%s/content" % name, lambda: compare_content(orig, need().part1))


# --------------------------------------------------------------------------
# already-signed input: cosign / skip / wrap

def leader_signed(env, wd):
    """A message signed by the leader with plain `openssl cms -sign`."""
    text = ("Ý kiến chỉ đạo của Chủ tịch UBND tỉnh:\r\n"
            "Đồng ý chủ trương, giao Văn phòng thực hiện.\r\n")
    entity = (b"Content-Type: text/plain; charset=utf-8\r\n"
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
              + crlf(quopri.encodestring(text.replace("\r\n", "\n")
                                         .encode())))
    ent = os.path.join(wd, "leader-entity.txt")
    smime = os.path.join(wd, "leader-smime.eml")
    with open(ent, "wb") as f:
        f.write(entity)
    must(["openssl", "cms", "-sign", "-in", ent, "-signer",
          os.path.join(env.pki, "leader.pem"), "-inkey",
          os.path.join(env.pki, "leader.key"), "-certfile", env.chain,
          "-md", "sha256", "-crlfeol", "-out", smime], "openssl cms -sign (leader)")
    with open(smime, "rb") as f:
        signed = f.read()
    msg = headers(12, sender="chutich@backan.gov.vn") + signed
    return msg


def opaque_cosign_case(env):
    """An opaque (application/pkcs7-mime) leader signature gets our SignerInfo."""
    wd = os.path.join(env.tmp, "opaque-cosign")
    os.makedirs(wd, exist_ok=True)

    def run_case():
        ent = os.path.join(wd, "entity.txt")
        der = os.path.join(wd, "leader.p7m")
        with open(ent, "wb") as f:
            f.write(b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                    b"Opaque signed by the leader\r\n")
        must(["openssl", "cms", "-sign", "-nodetach", "-binary", "-in", ent,
              "-signer", os.path.join(env.pki, "leader.pem"),
              "-inkey", os.path.join(env.pki, "leader.key"),
              "-certfile", env.chain, "-md", "sha256", "-outform", "DER",
              "-out", der], "openssl cms -sign -nodetach (leader)")
        with open(der, "rb") as f:
            body = base64.encodebytes(f.read()).replace(b"\n", b"\r\n")
        msg = (headers(20, sender="chutich@backan.gov.vn")
               + b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
                 b"smime-type=signed-data; name=smime.p7m\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\n" + body)
        inp = os.path.join(wd, "in.eml")
        out = os.path.join(wd, "out.eml")
        with open(inp, "wb") as f:
            f.write(msg)
        env.sign(inp, out)
        env.openssl_verify_smime(out, os.path.join(wd, "signers.pem"),
                                 [env.leader_fp, env.org_fp])
        return "one SignedData, leader and org both verify in openssl"

    check("cosign-opaque/leader+org", run_case)


def cosign_cases(env):
    wd = os.path.join(env.tmp, "already-signed")
    os.makedirs(wd, exist_ok=True)
    state = {}

    def prep():
        state["orig"] = leader_signed(env, wd)
        p = os.path.join(wd, "leader.eml")
        with open(p, "wb") as f:
            f.write(state["orig"])
        state["in"] = p
        s = Signed(state["orig"], wd, "leader")
        state["in_signed"] = s
        env.openssl_verify_smime(p, os.path.join(wd, "leader-signer.pem"),
                                 [env.leader_fp])
        return "openssl cms -sign output verifies, leader is the signer"

    check("leader-signed-input/prepare", prep)

    def need(k):
        if k not in state:
            raise Fail("prerequisite missing (%s)" % k)
        return state[k]

    # ---- cosign (the default)
    out = os.path.join(wd, "cosign.eml")

    def do_cosign():
        data = env.sign(need("in"), out)
        state["co"] = Signed(data, wd, "cosign")

    check("cosign/sign", do_cosign)
    check("cosign/openssl-verify-all-signers",
          lambda: env.openssl_verify_smime(need("co") and out,
                                           os.path.join(wd, "cosign-certs.pem"),
                                           [env.leader_fp, env.org_fp])
          or "certs.out holds leader + org")
    check("cosign/openssl-verify-detached",
          lambda: env.openssl_verify_detached(need("co"),
                                              os.path.join(wd, "cosign-certs2.pem"),
                                              [env.leader_fp, env.org_fp]))

    def one_signeddata():
        co = need("co")
        infos = signer_infos(env.cms_print(co))
        if len(infos) != 2:
            raise Fail("%d signerInfos in the SignedData, expected 2"
                       % len(infos))
        return "one SignedData, 2 SignerInfos"

    check("cosign/one-signeddata-two-signerinfos", one_signeddata)

    def same_content():
        co, ls = need("co"), need("in_signed")
        if co.part1 != ls.part1:
            raise Fail("signed content changed (%d -> %d bytes)"
                       % (len(ls.part1), len(co.part1)))
        return "first part unchanged"

    check("cosign/content-unchanged", same_content)
    check("cosign/gpgsm-two-good-signatures",
          lambda: env.gpgsm_verify(need("co"), 2))
    check("cosign/nss-cmsutil-two-signers",
          lambda: env.nss_verify(need("co"), 2))

    def co_headers():
        co = need("co")
        ofields = header_fields(split_head_body(need("orig"))[0])
        bad = [n for n in PRESERVED_HEADERS
               if values(ofields, n) != values(co.fields, n)]
        if bad:
            raise Fail("headers changed: %s" % ", ".join(bad))
        high = [c for c in co.raw if c >= 0x80]
        if high:
            raise Fail("output not 7-bit")
        return "headers preserved, 7-bit"

    check("cosign/headers", co_headers)

    # ---- skip
    def do_skip():
        # feed LF line ends so "unchanged" and "CRLF-canonicalised" differ
        lf = need("orig").replace(b"\r\n", b"\n")
        p = os.path.join(wd, "leader-lf.eml")
        with open(p, "wb") as f:
            f.write(lf)
        o = os.path.join(wd, "skip.eml")
        data = env.sign(p, o, extra=["--if-signed=skip"])
        if data == lf:
            return "output byte-identical to input"
        if data == crlf(lf):
            return "output is the input CRLF-canonicalised"
        raise Fail("output differs from input (%d vs %d bytes, first "
                   "difference at %d)" % (len(data), len(lf), next(
                       (i for i, (x, y) in enumerate(zip(data, lf)) if x != y),
                       min(len(data), len(lf)))))

    check("skip/unchanged", do_skip)

    # ---- wrap
    wout = os.path.join(wd, "wrap.eml")

    def do_wrap():
        data = env.sign(need("in"), wout, extra=["--if-signed=wrap"])
        state["wrap"] = Signed(data, wd, "wrap")

    check("wrap/sign", do_wrap)
    check("wrap/openssl-verify",
          lambda: env.openssl_verify_smime(need("wrap") and wout,
                                           os.path.join(wd, "wrap-certs.pem"),
                                           [env.org_fp]))
    check("wrap/gpgsm-verify", lambda: env.gpgsm_verify(need("wrap"), 1))
    check("wrap/nss-cmsutil-verify", lambda: env.nss_verify(need("wrap"), 1))

    def inner():
        w = need("wrap")
        head, _ = split_head_body(w.part1)
        m = parse_header_only(head)
        if m.get_content_type() != "multipart/signed":
            raise Fail("first part is %s, not the original multipart/signed"
                       % m.get_content_type())
        p = os.path.join(wd, "wrap-inner.eml")
        with open(p, "wb") as f:
            f.write(w.part1)
        env.openssl_verify_smime(p, os.path.join(wd, "wrap-inner-signer.pem"),
                                 [env.leader_fp])
        inner_s = Signed(w.part1, wd, "wrap-inner")
        if inner_s.part1 != need("in_signed").part1 or \
                inner_s.sig != need("in_signed").sig:
            raise Fail("inner multipart/signed content or signature changed")
        return "inner multipart/signed intact and verifies (leader)"

    check("wrap/inner-original-intact", inner)
    check("wrap/structure", lambda: check_structure(need("orig"), need("wrap")))


# --------------------------------------------------------------------------

def main():
    missing = [v for v in ("KYSO", "KYSO_PKI", "KYSO_TMP") if not os.environ.get(v)]
    if missing:
        sys.stderr.write("sign_interop: environment %s not set\n"
                         % ", ".join(missing))
        return 2
    kyso = os.environ["KYSO"]
    pki = os.path.abspath(os.environ["KYSO_PKI"])
    tmp = os.path.abspath(os.environ["KYSO_TMP"])
    os.makedirs(tmp, exist_ok=True)
    ENV["SOFTHSM2_CONF"] = os.path.join(pki, "softhsm2.conf")
    for f in ("root.pem", "sub.pem", "chain.pem", "org.pem", "org.key",
              "leader.pem", "leader.key", "token.pin", "softhsm2.conf"):
        if not os.path.exists(os.path.join(pki, f)):
            sys.stderr.write("sign_interop: %s missing in KYSO_PKI\n" % f)
            return 2
    env = Env(kyso, pki, tmp)
    try:
        for name, msg in build_cases():
            sign_case(env, name, msg)
        file_key_case(env)
        cosign_cases(env)
        opaque_cosign_case(env)
    finally:
        env.gpgsm_cleanup()
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    if tally.failed:
        sys.stderr.write("sign_interop: %d check(s) failed\n" % tally.failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
