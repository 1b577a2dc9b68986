#!/usr/bin/env python3
"""The mail part of the quick-start demo: submits an official mail as an
authenticated official through Postfix+kyso-milter, shows the delivered copy
signed, then delivers an incoming signed mail and shows its badge.

usage: demo_mail.py SINK_DIR SASL_PASSWORD_FILE INCOMING_SIGNED_EML
"""
import email
import email.header
import email.policy
import glob
import os
import smtplib
import subprocess
import sys
import time

sink, passfile, incoming = sys.argv[1:4]
SMTP = ("127.0.0.1", 10025)

OFFICIAL = """From: "Văn phòng UBND tỉnh Bắc Kạn" <vanphong@backan.gov.vn>
To: "Sở Tài chính" <sotaichinh@example.vn>
Subject: =?utf-8?b?VsSDbiBi4bqjbiBz4buRIDEyMy9VQk5ELVZQ?=
Date: Fri, 04 Dec 2026 09:00:00 +0700
Message-ID: <demo-milter-1@backan.gov.vn>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Kính gửi: Sở Tài chính

Ủy ban nhân dân tỉnh đề nghị Quý Sở báo cáo tình hình thực hiện dự toán
ngân sách năm 2026 trước ngày 15/12/2026.

Trân trọng.
""".replace("\n", "\r\n").encode()


def wait_delivery(before):
    for _ in range(200):
        now = sorted(glob.glob(os.path.join(sink, "*.eml")))
        if len(now) > len(before):
            time.sleep(0.2)
            return [f for f in now if f not in before][0]
        time.sleep(0.1)
    sys.exit("demo: nothing was delivered within 20 s (see the Postfix maillog)")


def show_headers(path, names):
    msg = email.message_from_binary_file(open(path, "rb"), policy=email.policy.default)
    for n in names:
        for v in msg.get_all(n, []):
            print("   %s: %s" % (n, v))


password = open(passfile).read().strip()
before = glob.glob(os.path.join(sink, "*.eml"))
with smtplib.SMTP(*SMTP) as s:
    s.login("official@backan.gov.vn", password)
    s.sendmail("vanphong@backan.gov.vn", ["sotaichinh@example.vn"], OFFICIAL,
               mail_options=["BODY=8BITMIME"])
out = wait_delivery(before)
print("== outgoing: submitted by an authenticated official, delivered as", out)
show_headers(out, ["From", "Subject", "Content-Type"])
pki = os.environ["KYSO_PKI"]
r = subprocess.run(["openssl", "cms", "-verify", "-in", out, "-CAfile",
                    os.path.join(pki, "trust.pem"), "-purpose", "smimesign",
                    "-out", "/dev/null"], capture_output=True, text=True)
print("   openssl cms -verify:", (r.stderr or r.stdout).strip())
if r.returncode != 0:
    sys.exit("demo: the delivered copy does not verify")

before = glob.glob(os.path.join(sink, "*.eml"))
with smtplib.SMTP(*SMTP) as s:  # an outside server: no AUTH
    s.sendmail("chutich@backan.gov.vn", ["vanphong@backan.gov.vn"],
               open(incoming, "rb").read())
out = wait_delivery(before)
print("== incoming: a signed mail from outside, delivered as", out)
show_headers(out, ["Authentication-Results", "Subject", "X-Kyso-Signer"])
msg = email.message_from_binary_file(open(out, "rb"), policy=email.policy.default)
if "smime=pass" not in str(msg["Authentication-Results"]):
    sys.exit("demo: expected smime=pass on the incoming mail")
