#!/usr/bin/env python3
"""VERIFY-side interop tests for `kyso verify`.

Every message is built at test time and signed by tools independent of Kyso
(OpenSSL `cms`, GnuPG `gpgsm`, NSS `cmsutil`), then fed to

    $KYSO verify --trust trust.pem --untrusted chain.pem [--crl ...] --json FILE

PASS cases must give exit 0 and result "pass"; NEVER cases must give a
non-zero exit and a result other than "pass" (and the specific verdict where
it is obvious). Every PASS input is also cross-checked with
`openssl cms -verify`, so a failure points at Kyso and not at the input.

Environment: KYSO (kyso binary), KYSO_PKI (prepared by certs/setup.sh),
KYSO_TMP (scratch directory). Output: one `ok - name` / `not ok - name (...)`
line per case, then `N passed, M failed`; exit 1 if anything failed.
"""

import base64
import json
import os
import quopri
import re
import shutil
import subprocess
import sys
import tempfile

KYSO = os.environ.get("KYSO", "")
PKI = os.environ.get("KYSO_PKI", "")
TMP = os.environ.get("KYSO_TMP", "")

AUTHSERV_ID = "mx.kyso.test"

results = {"passed": 0, "failed": 0}


def die(msg):
    sys.stderr.write("verify_interop: %s\n" % msg)
    sys.exit(1)


def pki(name):
    return os.path.join(PKI, name)


def tmp(name):
    return os.path.join(TMP, name)


def run(cmd, data=None, env=None, check=True):
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (
            " ".join(cmd), p.returncode,
            p.stderr.decode("utf-8", "replace").strip()))
    return p


def write(name, data):
    path = tmp(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def crlf(b):
    """Normalise any line endings to CRLF."""
    return re.sub(rb"\r?\n", b"\r\n", b.replace(b"\r\n", b"\n"))


def b64lines(der, width=76):
    s = base64.b64encode(der)
    return b"\r\n".join(s[i:i + width] for i in range(0, len(s), width)) + b"\r\n"


def ew(text):
    """RFC 2047 encoded word for UTF-8 display names / subjects."""
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode() + "?="


# --------------------------------------------------------------------------
# message building

BODY = ("Kính gửi: Sở Thông tin và Truyền thông tỉnh Bắc Kạn\n"
        "\n"
        "Văn phòng UBND tỉnh đề nghị thanh toán.\n"
        "So tien: 1.000.000 VND\n"
        "Trân trọng.\n")


def entity(body=BODY, charset="utf-8"):
    """The to-be-signed MIME entity, canonical (CRLF, quoted-printable)."""
    qp = quopri.encodestring(body.encode("utf-8"))
    return crlf(("Content-Type: text/plain; charset=\"%s\"\r\n"
                 "Content-Transfer-Encoding: quoted-printable\r\n"
                 "\r\n" % charset).encode() + qp)


_msgno = [0]


def headers(from_addr="vanphong@backan.gov.vn",
            from_name="Văn phòng UBND tỉnh Bắc Kạn", extra=b""):
    _msgno[0] += 1
    h = ("From: %s <%s>\r\n"
         "To: sotttt@backan.gov.vn\r\n"
         "Subject: %s\r\n"
         "Date: Thu, 04 Dec 2025 09:00:00 +0700\r\n"
         "Message-ID: <interop-%d@kyso.test>\r\n"
         "MIME-Version: 1.0\r\n" % (
             ew(from_name), from_addr,
             ew("Công văn số %d/UBND-VP" % _msgno[0]), _msgno[0])).encode()
    return h + extra


def multipart_signed(hdrs, ent, sig_der, proto="application/pkcs7-signature",
                     sig_b64=None, boundary="----=_kyso_signed_b0undary"):
    sig = b64lines(sig_der) if sig_b64 is None else sig_b64
    return (hdrs +
            ('Content-Type: multipart/signed; protocol="%s"; micalg=sha-256;\r\n'
             ' boundary="%s"\r\n\r\n' % (proto, boundary)).encode() +
            b"This is an S/MIME signed message\r\n\r\n" +
            ("--%s\r\n" % boundary).encode() + ent +
            ("\r\n--%s\r\n" % boundary).encode() +
            ('Content-Type: %s; name="smime.p7s"\r\n'
             "Content-Transfer-Encoding: base64\r\n"
             'Content-Disposition: attachment; filename="smime.p7s"\r\n'
             "\r\n" % proto).encode() + sig +
            ("\r\n--%s--\r\n" % boundary).encode())


def opaque_signed(hdrs, der, ctype="application/pkcs7-mime"):
    return (hdrs +
            ('Content-Type: %s; smime-type=signed-data; name="smime.p7m"\r\n'
             "Content-Transfer-Encoding: base64\r\n"
             'Content-Disposition: attachment; filename="smime.p7m"\r\n'
             "\r\n" % ctype).encode() + b64lines(der))


# --------------------------------------------------------------------------
# signers

def openssl_sign(ent, signers, detached=True, extra=(), certfile=True):
    """openssl cms -sign over the canonical entity; returns DER SignedData.
    signers: list of (cert, key) file-name pairs relative to KYSO_PKI, or
    absolute paths."""
    inp = write("tbs.bin", ent)
    cmd = ["openssl", "cms", "-sign", "-binary", "-in", inp, "-md", "sha256",
           "-outform", "DER"]
    for cert, key in signers:
        cmd += ["-signer", pki(cert), "-inkey", pki(key)]
    if certfile:
        cmd += ["-certfile", pki("chain.pem")]
    if not detached:
        cmd.append("-nodetach")
    cmd += list(extra)
    return run(cmd).stdout


def reference_verify(sig_der, ent=None):
    """Cross-check a PASS input with openssl cms -verify."""
    sig = write("ref.p7s", sig_der)
    cmd = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig,
           "-CAfile", pki("trust.pem"), "-certfile", pki("chain.pem"),
           "-purpose", "smimesign", "-out", os.devnull]
    if ent is not None:
        cmd += ["-content", write("ref.content", ent)]
    p = run(cmd, check=False)
    if p.returncode != 0:
        raise RuntimeError("reference openssl cms -verify rejects the input: "
                           + p.stderr.decode("utf-8", "replace").strip())


# --- gpgsm -----------------------------------------------------------------

class Gpgsm:
    def __init__(self):
        # gpg-agent's socket path must stay short; KYSO_TMP may be deep.
        home = tmp("gnupg")
        if len(home) > 70:
            home = tempfile.mkdtemp(prefix="kyso-gpgsm-")
            self.own_tmp = True
        else:
            os.makedirs(home, mode=0o700, exist_ok=True)
            self.own_tmp = False
        os.chmod(home, 0o700)
        self.home = home
        self.env = dict(os.environ, GNUPGHOME=home)
        with open(os.path.join(home, "gpg-agent.conf"), "w") as f:
            f.write("allow-loopback-pinentry\n")
        with open(os.path.join(home, "gpgsm.conf"), "w") as f:
            f.write("disable-crl-checks\ndisable-policy-checks\n"
                    "disable-dirmngr\n")
        fpr = run(["openssl", "x509", "-in", pki("root.pem"), "-noout",
                   "-fingerprint", "-sha1"]).stdout.decode().strip()
        fpr = fpr.split("=", 1)[1]
        with open(os.path.join(home, "trustlist.txt"), "w") as f:
            f.write("%s S\n" % fpr)

    def gpgsm(self, args, data=None):
        return run(["gpgsm", "--batch", "--pinentry-mode", "loopback"] + args,
                   data=data, env=self.env)

    def import_p12(self, p12):
        # gpgsm 2.2 ignores --passphrase for the PKCS#12 prompt; use the fd.
        self.gpgsm(["--passphrase-fd", "0", "--import", pki(p12)],
                   data=b"kyso\n")

    def sign(self, ent, user):
        inp = write("gpgsm-tbs.bin", ent)
        out = tmp("gpgsm.p7s")
        if os.path.exists(out):
            os.unlink(out)
        self.gpgsm(["--passphrase-fd", "0", "--digest-algo", "SHA256",
                    "--include-certs", "-1", "-u", user,
                    "--detach-sign", "-o", out, inp], data=b"kyso\n")
        return read(out)

    def close(self):
        run(["gpgconf", "--kill", "all"], env=self.env, check=False)
        if self.own_tmp:
            shutil.rmtree(self.home, ignore_errors=True)


# --- NSS -------------------------------------------------------------------

def nss_sign(ent, p12, nick):
    db = tmp("nssdb")
    shutil.rmtree(db, ignore_errors=True)
    os.makedirs(db)
    d = "sql:" + db
    run(["certutil", "-N", "--empty-password", "-d", d])
    run(["certutil", "-A", "-n", "kyso-root", "-t", "C,C,C",
         "-i", pki("root.pem"), "-d", d])
    run(["pk12util", "-i", pki(p12), "-W", "kyso", "-K", "", "-d", d])
    inp = write("nss-tbs.bin", ent)
    out = tmp("nss.p7s")
    run(["cmsutil", "-S", "-T", "-G", "-P", "-Y", "NONE", "-H", "SHA256",
         "-N", nick,
         "-d", d, "-i", inp, "-o", out])
    return read(out)


# --------------------------------------------------------------------------
# minimal DER walker (for breaking one signer's signature on purpose)

def tlv(buf, off):
    """Returns (tag, header_len, value_len) of the TLV at off."""
    tag = buf[off]
    l = buf[off + 1]
    if l < 0x80:
        return tag, 2, l
    n = l & 0x7F
    if n == 0:
        raise ValueError("indefinite length not supported")
    return tag, 2 + n, int.from_bytes(buf[off + 2:off + 2 + n], "big")


def children(buf, off):
    tag, hl, vl = tlv(buf, off)
    pos, end = off + hl, off + hl + vl
    out = []
    while pos < end:
        t, h, v = tlv(buf, pos)
        out.append(pos)
        pos += h + v
    return out


def signer_infos(der):
    """[(signerinfo_offset)] of a ContentInfo(SignedData) in DER."""
    ci = children(der, 0)                 # contentType, [0]
    sd = children(der, ci[1])[0]          # SignedData SEQUENCE
    last = children(der, sd)[-1]          # signerInfos SET
    return children(der, last)


def serial_of_cert(pem):
    out = run(["openssl", "x509", "-in", pem, "-noout", "-serial"]).stdout
    return int(out.decode().strip().split("=", 1)[1], 16)


def break_signer(der, serial):
    """Flip one bit in the signature value of the SignerInfo whose
    IssuerAndSerialNumber carries serial."""
    der = bytearray(der)
    for si in signer_infos(der):
        f = children(der, si)
        sid = f[1]
        if der[sid] != 0x30:
            continue
        ser = children(der, sid)[1]
        t, h, v = tlv(der, ser)
        if int.from_bytes(der[ser + h:ser + h + v], "big") != serial:
            continue
        for pos in f[2:]:
            if der[pos] == 0x04:          # signature OCTET STRING
                t, h, v = tlv(der, pos)
                der[pos + h + v // 2] ^= 0x01
                return bytes(der)
    raise ValueError("signer with serial %x not found" % serial)


# --------------------------------------------------------------------------
# running kyso

def kyso_verify(msg, name, crls=False, untrusted=True, json_out=True,
                extra=()):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    path = write(slug + ".eml", msg)
    cmd = [KYSO, "verify", "--trust", pki("trust.pem")]
    if untrusted:
        cmd += ["--untrusted", pki("chain.pem")]
    if crls:
        cmd += ["--crl", pki("sub.crl"), "--crl", pki("root.crl")]
    cmd += list(extra)
    if json_out:
        cmd.append("--json")
    cmd.append(path)
    p = run(cmd, check=False)
    return p


def report(name, ok, why=""):
    if ok:
        results["passed"] += 1
        print("ok - %s" % name)
    else:
        results["failed"] += 1
        print("not ok - %s (%s)" % (name, why))
    sys.stdout.flush()


def describe(p, j):
    err = p.stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
    if j is None:
        return "got exit %d, no JSON; stdout=%r stderr=%r" % (
            p.returncode, p.stdout[:200], err[:200])
    return "got exit %d, result %r, reason %r" % (
        p.returncode, j.get("result"), j.get("reason"))


def parse_json(p):
    try:
        j = json.loads(p.stdout.decode("utf-8"))
        return j if isinstance(j, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None


def case(name, build, expect, crls=False, untrusted=True, result=None,
         exit_code=None, check=None):
    """expect "pass": exit 0 + result pass. expect "never": exit != 0 and
    result != pass (and == result / exit == exit_code when given). check(j)
    may return an error string for extra assertions."""
    try:
        msg = build()
    except Exception as e:  # input generation failure is a test failure too
        report(name, False, "could not build input: %s" % e)
        return
    try:
        p = kyso_verify(msg, name, crls=crls, untrusted=untrusted)
    except OSError as e:
        report(name, False, "could not run kyso: %s" % e)
        return
    j = parse_json(p)
    if expect == "pass":
        ok = p.returncode == 0 and j is not None and j.get("result") == "pass"
    else:
        ok = p.returncode != 0 and (j is None or j.get("result") != "pass")
        if result is not None:
            ok = ok and j is not None and j.get("result") == result
        if exit_code is not None:
            ok = ok and p.returncode == exit_code
    why = describe(p, j)
    if ok and check is not None and j is not None:
        err = check(j)
        if err:
            ok, why = False, why + "; " + err
    report(name, ok, why)


# --------------------------------------------------------------------------
# the cases

def main():
    for var, val in (("KYSO", KYSO), ("KYSO_PKI", PKI), ("KYSO_TMP", TMP)):
        if not val:
            die("%s is not set" % var)
    if not os.access(KYSO, os.X_OK):
        die("KYSO=%s is not executable" % KYSO)
    if not os.path.exists(pki("trust.pem")):
        die("KYSO_PKI=%s is not prepared (run certs/setup.sh)" % PKI)
    os.makedirs(TMP, exist_ok=True)

    ent = entity()

    def signed_by(cert, key, from_addr, from_name="Người ký", ref=True,
                  **kw):
        def build():
            sig = openssl_sign(ent, [(cert, key)], **kw)
            if ref:
                reference_verify(sig, ent)
            return multipart_signed(headers(from_addr, from_name), ent, sig)
        return build

    def first_signer(field, want):
        def check(j):
            s = j.get("signers") or []
            if not s:
                return "no signers in JSON"
            if s[0].get(field) != want:
                return "signers[0].%s = %r, want %r" % (
                    field, s[0].get(field), want)
            return None
        return check

    # ---------------- PASS ----------------
    case("openssl cms RSA-2048 (org)",
         signed_by("org.pem", "org.key", "vanphong@backan.gov.vn",
                   "Văn phòng UBND tỉnh Bắc Kạn"), "pass",
         check=first_signer("from_match", True))
    case("openssl cms RSA-3072",
         signed_by("rsa3072.pem", "rsa3072.key", "sotttt@backan.gov.vn"), "pass")
    case("openssl cms ECDSA P-256",
         signed_by("ec.pem", "ec.key", "ecuser@backan.gov.vn"), "pass")

    g = None
    try:
        g = Gpgsm()
        g.import_p12("leader.p12")

        def build_gpgsm():
            sig = g.sign(ent, "chutich@backan.gov.vn")
            reference_verify(sig, ent)
            return multipart_signed(headers("chutich@backan.gov.vn",
                                            "Nguyễn Văn An"), ent, sig)
        case("gpgsm detached RSA (leader)", build_gpgsm, "pass")
    except Exception as e:
        report("gpgsm detached RSA (leader)", False, "gpgsm setup: %s" % e)
    finally:
        if g is not None:
            g.close()

    def build_nss():
        sig = nss_sign(ent, "org.p12", "org")
        reference_verify(sig, ent)
        return multipart_signed(headers(), ent, sig)
    case("NSS cmsutil detached (org)", build_nss, "pass")

    two = [("org.pem", "org.key"), ("leader.pem", "leader.key")]

    def build_two():
        sig = openssl_sign(ent, two)
        reference_verify(sig, ent)
        return multipart_signed(headers("chutich@backan.gov.vn",
                                        "Nguyễn Văn An"), ent, sig)
    case("two signers, From = second signer", build_two, "pass")

    def build_opaque(ctype="application/pkcs7-mime"):
        def build():
            sig = openssl_sign(ent, [("org.pem", "org.key")], detached=False)
            reference_verify(sig)
            return opaque_signed(headers(), sig, ctype)
        return build
    case("opaque application/pkcs7-mime signed-data", build_opaque(), "pass")
    case("opaque application/x-pkcs7-mime signed-data",
         build_opaque("application/x-pkcs7-mime"), "pass")

    def build_xsig():
        sig = openssl_sign(ent, [("org.pem", "org.key")])
        reference_verify(sig, ent)
        return multipart_signed(headers(), ent, sig,
                                proto="application/x-pkcs7-signature")
    case("multipart/signed application/x-pkcs7-signature", build_xsig, "pass")

    def build_lf():
        return signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")() \
            .replace(b"\r\n", b"\n")
    case("LF-only line endings", build_lf, "pass")

    case("signer e-mail only in subject DN (subjemail)",
         signed_by("subjemail.pem", "subjemail.key", "subjemail@backan.gov.vn",
                   "Hoàng Thị Thư"), "pass",
         check=first_signer("from_match", True))

    case("with CRLs (org)",
         signed_by("org.pem", "org.key", "vanphong@backan.gov.vn"), "pass",
         crls=True, check=first_signer("revocation", "good"))
    # No responder listens here: the admin's CRL files decide, and the
    # report must say so rather than "none".
    case("with CRLs, network silent: decided by crl-file",
         signed_by("org.pem", "org.key", "vanphong@backan.gov.vn"), "pass",
         crls=True, check=first_signer("revocation_source", "crl-file"))

    # ---------------- NEVER ----------------
    def build_unsigned():
        return headers() + ent
    case("unsigned plain mail", build_unsigned, "never", result="none",
         exit_code=2)

    def build_tampered_body():
        m = signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")()
        assert b"1.000.000" in m
        return m.replace(b"1.000.000", b"9.000.000", 1)
    case("tampered body", build_tampered_body, "never", result="fail")

    def build_tampered_header():
        m = signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")()
        assert b'charset="utf-8"' in m
        return m.replace(b'charset="utf-8"', b'charset="iso-8859-1"', 1)
    case("tampered signed-part header (charset)", build_tampered_header,
         "never", result="fail")

    def revoked_check(j):
        s = j.get("signers") or []
        if s and s[0].get("revocation") not in ("revoked", None):
            return "signers[0].revocation = %r, want 'revoked'" % (
                s[0].get("revocation"))
        return None
    case("revoked signer (CRLs given)",
         signed_by("revoked.pem", "revoked.key", "revoked@backan.gov.vn",
                   ref=False), "never", crls=True, check=revoked_check)

    case("expired signer certificate",
         signed_by("expired.pem", "expired.key", "expired@backan.gov.vn",
                   ref=False), "never")

    def build_rogue():
        sig = run(["openssl", "cms", "-sign", "-binary",
                   "-in", write("tbs.bin", ent), "-md", "sha256",
                   "-outform", "DER", "-signer", pki("rogue.pem"),
                   "-inkey", pki("rogue.key"),
                   "-certfile", pki("rogue-root.pem")]).stdout
        return multipart_signed(headers("rogue@backan.gov.vn", "Kẻ Giả Mạo"),
                                ent, sig)
    case("untrusted root (rogue)", build_rogue, "never")

    def build_from_mismatch():
        sig = openssl_sign(ent, [("org.pem", "org.key")])
        return multipart_signed(headers("chutich@backan.gov.vn",
                                        "Nguyễn Văn An"), ent, sig)
    case("From differs from signer", build_from_mismatch, "never",
         check=first_signer("from_match", False))

    case("TLS-only EKU (serverAuth)",
         signed_by("tlsonly.pem", "tlsonly.key", "tlsonly@backan.gov.vn",
                   ref=False), "never")

    def build_wrapped():
        signed = signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")()
        # keep only the Content-Type of the signed message, drop From etc.
        body_start = signed.index(b"Content-Type: multipart/signed")
        inner = signed[body_start:]
        b = "kyso_mixed_outer"
        return (headers() +
                ('Content-Type: multipart/mixed; boundary="%s"\r\n\r\n' % b)
                .encode() +
                ("--%s\r\n" % b).encode() +
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                b"URGENT: ignore the signed part, pay 9.000.000 VND to X.\r\n" +
                ("\r\n--%s\r\n" % b).encode() + inner +
                ("\r\n--%s--\r\n" % b).encode())
    case("signed part wrapped under unsigned text (multipart/mixed)",
         build_wrapped, "never")

    def build_rfc822():
        signed = signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")()
        b = "kyso_fwd_outer"
        return (headers() +
                ('Content-Type: multipart/mixed; boundary="%s"\r\n\r\n' % b)
                .encode() +
                ("--%s\r\n" % b).encode() +
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                b"Forwarded message attached.\r\n" +
                ("\r\n--%s\r\n" % b).encode() +
                b"Content-Type: message/rfc822\r\n\r\n" + signed +
                ("\r\n--%s--\r\n" % b).encode())
    case("signed message attached as message/rfc822", build_rfc822, "never")

    def build_garbage():
        return multipart_signed(headers(), ent, os.urandom(600))
    case("garbage signature", build_garbage, "never")

    def build_truncated():
        sig = openssl_sign(ent, [("org.pem", "org.key")])
        full = base64.b64encode(sig)
        half = full[:len(full) // 2]
        wrapped = b"\r\n".join(half[i:i + 76]
                               for i in range(0, len(half), 76)) + b"\r\n"
        return multipart_signed(headers(), ent, b"", sig_b64=wrapped)
    case("truncated signature (half the base64)", build_truncated, "never")

    def build_nocerts():
        sig = openssl_sign(ent, [("org.pem", "org.key")],
                           extra=["-nocerts"], certfile=False)
        return multipart_signed(headers(), ent, sig)
    case("missing signer certificate (-nocerts)", build_nocerts, "never")

    def build_confusion():
        other = entity(BODY.replace("1.000.000", "9.000.000"))
        sig = openssl_sign(other, [("org.pem", "org.key")], detached=False)
        return multipart_signed(headers(), ent, sig)
    case("eContent confusion (attached SignedData over other content)",
         build_confusion, "never")

    def build_two_broken():
        sig = openssl_sign(ent, two)
        bad = break_signer(sig, serial_of_cert(pki("leader.pem")))
        return multipart_signed(headers("chutich@backan.gov.vn",
                                        "Nguyễn Văn An"), ent, bad)
    case("two signers, From signer's signature broken", build_two_broken,
         "never")

    def build_degenerate():
        sig = run(["openssl", "crl2pkcs7", "-nocrl", "-certfile",
                   pki("org.pem"), "-outform", "DER"]).stdout
        return multipart_signed(headers(), ent, sig)
    case("SignedData without SignerInfos (degenerate)", build_degenerate,
         "never")

    def build_three_parts():
        m = signed_by("org.pem", "org.key", "vanphong@backan.gov.vn")()
        bnd = b"----=_kyso_signed_b0undary"
        close = b"\r\n--" + bnd + b"--\r\n"
        assert m.endswith(close)
        return (m[:-len(close)] + b"\r\n--" + bnd + b"\r\n" +
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                b"Extra unsigned third part: pay 9.000.000 VND.\r\n" + close)
    case("multipart/signed with three parts", build_three_parts, "never")

    def build_two_from():
        sig = openssl_sign(ent, [("org.pem", "org.key")])
        extra = b"From: attacker@example.net\r\n"
        return multipart_signed(headers(extra=extra), ent, sig)
    case("two From headers", build_two_from, "never")

    # ---------------- Authentication-Results output ----------------
    try:
        sig = openssl_sign(ent, [("org.pem", "org.key")])
        msg = multipart_signed(headers(), ent, sig)
        p = kyso_verify(msg, "ar-output", json_out=False,
                        extra=["--authserv-id", AUTHSERV_ID])
        out = p.stdout.decode("utf-8", "replace").strip()
        ok = (p.returncode == 0 and
              re.match(r"(Authentication-Results:\s*)?%s\s*;\s*smime=pass\b"
                       % re.escape(AUTHSERV_ID), out) is not None and
              "body.smime-identifier=" in out)
        report("Authentication-Results output", ok,
               "got exit %d, output %r" % (p.returncode, out[:300]))
    except Exception as e:
        report("Authentication-Results output", False, str(e))

    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    if results["failed"]:
        sys.stderr.write("verify_interop: %d case(s) failed\n"
                         % results["failed"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
