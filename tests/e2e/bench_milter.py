#!/usr/bin/env python3
"""Benchmark (not a test): throughput of a private Postfix on 127.0.0.1 with
and without kyso-milter signing every message through the SoftHSM token,
measured in one run; prints messages per second and the ratio. It also
checks that every message sent with the milter arrived signed, which makes
it a concurrency check of the token session shared by libmilter's threads.

    bench_milter.py [MESSAGES] [CLIENTS]     (as root; defaults 200 and 8)

Uses build/bin/{kyso,kyso-milter}, a PKI in build/bench-pki, ports 10025/10026.
"""
import concurrent.futures
import glob
import os
import shutil
import smtplib
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
WORK = "/tmp/kyso-bench"
PKI = os.path.join(ROOT, "build", "bench-pki")
BODY = ("Kính gửi các đơn vị,\r\n" + "Nội dung văn bản hành chính. " * 300 + "\r\nTrân trọng.\r\n")


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def message(i):
    return ("From: vanphong@backan.gov.vn\r\nTo: x@example.vn\r\nSubject: bench %d\r\n"
            "Message-ID: <bench-%d@backan.gov.vn>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n%s" % (i, i, BODY)).encode()


def run_batch(mail_dir, password):
    before = len(glob.glob(os.path.join(mail_dir, "*.eml")))

    def send(i):
        with smtplib.SMTP("127.0.0.1", 10025, timeout=60) as s:
            s.login("official@backan.gov.vn", password)
            s.sendmail("vanphong@backan.gov.vn", ["x@example.vn"], message(i),
                       mail_options=["BODY=8BITMIME"])

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, range(N)))
    while len(glob.glob(os.path.join(mail_dir, "*.eml"))) < before + N:
        if time.monotonic() - t0 > 600:
            sys.exit("bench: deliveries missing after 600 s")
        time.sleep(0.02)
    return N / (time.monotonic() - t0)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    sh("bash", os.path.join(ROOT, "certs", "setup.sh"), PKI, stdout=subprocess.DEVNULL)
    mail = os.path.join(WORK, "mail")
    os.makedirs(mail)
    sink = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/e2e/smtp_sink.py"), mail,
                             "10026"], stdout=subprocess.DEVNULL)
    pf = os.path.join(WORK, "pf")
    inst = os.path.join(ROOT, "tests/e2e/postfix_instance.sh")
    milter = None
    try:
        sh("bash", inst, "start", pf, env=dict(os.environ, E2E_NO_MILTER="1"),
           stdout=subprocess.DEVNULL)
        password = open(os.path.join(pf, "sasl.pass")).read().strip()
        plain = run_batch(mail, password)
        sh("bash", inst, "stop", pf)
        sh("bash", inst, "start", pf, stdout=subprocess.DEVNULL)
        conf = os.path.join(WORK, "kyso.conf")
        with open(conf, "w") as f:
            f.write('milter: { socket = "unix:%s/kyso.sock"; socket_mode = "0666"; '
                    'user = ""; group = ""; log_level = "warning"; };\n'
                    'tokens = ( { name = "t"; module = "/usr/lib/softhsm/libsofthsm2.so"; '
                    'pin_file = "%s/token.pin"; } );\n'
                    'identities = ( { name = "vp"; key = "pkcs11:token=kyso-org;object=org;'
                    'type=private"; token = "t"; cert = "%s/org.pem"; chain = "%s/chain.pem"; '
                    'senders = [ "@backan.gov.vn" ]; } );\n'
                    'inbound: { authserv_id = "mail.backan.gov.vn"; revocation = "off"; };\n'
                    % (pf, PKI, PKI, PKI))
        env = dict(os.environ, SOFTHSM2_CONF=os.path.join(PKI, "softhsm2.conf"))
        milter = subprocess.Popen([os.path.join(ROOT, "build/bin/kyso-milter"), "-f", "-c", conf],
                                  env=env, stderr=open(os.path.join(WORK, "milter.log"), "wb"))
        while not os.path.exists(os.path.join(pf, "kyso.sock")):
            time.sleep(0.05)
        first = len(glob.glob(os.path.join(mail, "*.eml")))
        signed = run_batch(mail, password)
        files = sorted(glob.glob(os.path.join(mail, "*.eml")), key=lambda p: int(os.path.basename(p)[:-4]))[first:]
        unsigned = [p for p in files if b"multipart/signed" not in open(p, "rb").read(4096)]
        sample = files[:: max(1, len(files) // 10)]
        bad = [p for p in sample if subprocess.run(
            [os.path.join(ROOT, "build/bin/kyso"), "verify", "--offline", "--trust",
             os.path.join(PKI, "trust.pem"), p], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode != 0]
        print("messages: %d of %d KB, %d concurrent clients, SMTP AUTH" % (N, len(message(0)) // 1024, CLIENTS))
        print("without kyso-milter: %7.1f msg/s" % plain)
        print("with kyso-milter:    %7.1f msg/s (signing through SoftHSM)" % signed)
        print("ratio:               %7.2f" % (signed / plain))
        print("signed: %d of %d; sampled %d verified, %d failed" % (len(files) - len(unsigned), len(files), len(sample), len(bad)))
        if unsigned or bad:
            sys.exit(1)
    finally:
        if milter:
            milter.terminate()
            milter.wait()
        subprocess.run(["bash", inst, "stop", pf])
        sink.terminate()


if __name__ == "__main__":
    main()
