#!/usr/bin/env python3
"""Benchmark (not a test; not registered in CTest): the time of one
`kyso verify` verdict with online revocation, cold cache against warm cache.

    KYSO=build/bin/kyso [KYSO_PKI=build/pki] KYSO_TMP=/tmp/kyso-bench \\
        tests/revocation/bench_revocation.py [RUNS]

Uses the responders of revocation_test.py: `openssl ocsp` on 127.0.0.1:8088
(signed by sub) and the CRL server on 127.0.0.1:8089 (root's CRL for the
intermediate), both up for the whole run; the ports must be free.

cold: a fresh, empty --cache-dir each run (one OCSP request for the leaf,
      one CRL fetch for the intermediate);
warm: the same message again with a --cache-dir that already holds both
      answers (no network).
Each figure is the median of RUNS (default 20) wall-clock times of the whole
`kyso verify` process, so both include process start-up; the difference is
the network and revocation work.  Prints the medians and their ratio.
"""

import os
import shutil
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import revocation_test as t  # noqa: E402


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    try:
        env = t.Env()
        env.extra_material()
        msg = env.sign("bench", "org", "Cong van bench")[0]
    except t.Fail as e:
        print("bench: setup failed: %s" % e, file=sys.stderr)
        return 1
    base = os.path.join(env.tmp, "cache-bench")
    cold, warm = [], []
    try:
        with t.OcspResponder(env, name="ocsp-bench") as ocsp, \
                t.CrlServer(env.crl) as crl:
            # One untimed run so that page cache and responder are warm too.
            env.verify(msg).want("pass", "good", "ocsp")
            for i in range(runs):
                d = "%s-%d" % (base, i)
                shutil.rmtree(d, ignore_errors=True)
                v = env.verify(msg, "--cache-dir", d).want(
                    "pass", "good", "ocsp", False)
                cold.append(v.elapsed)
                w = env.verify(msg, "--cache-dir", d).want(
                    "pass", "good", "ocsp", True)
                warm.append(w.elapsed)
                shutil.rmtree(d, ignore_errors=True)
            asked = ocsp.asked("org.pem")
            gets = crl.count("GET", "/root.crl")
    except t.Fail as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    finally:
        t.stop_everything()
    mc, mw = statistics.median(cold), statistics.median(warm)
    print("runs:        %d each (interleaved cold, warm)" % runs)
    print("cold cache:  median %.2f ms  (min %.2f, max %.2f)"
          % (mc * 1e3, min(cold) * 1e3, max(cold) * 1e3))
    print("warm cache:  median %.2f ms  (min %.2f, max %.2f)"
          % (mw * 1e3, min(warm) * 1e3, max(warm) * 1e3))
    print("ratio:       cold/warm = %.2f" % (mc / mw))
    print("network:     %d OCSP requests about org.pem, %d GET /root.crl "
          "(expected %d each)" % (asked, gets, runs + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
