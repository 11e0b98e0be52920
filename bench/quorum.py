#!/usr/bin/env python3
"""bench/quorum.py [BINDIR] - writes through a quorum cluster over git://
on loopback (docs/quorum.md), beside a plain `git push` of the same change
to one server, in one run.

For each configuration (3 peers, 5 peers, 3 peers with one killed, with
one stopped, and today's home-ordered cluster of 3 for comparison): K
writes (K=20 by default), each `opt-tree put` of one record then
`opt-sync push`, timed; after each, `git push` of the same new commit to
a bare repository behind another git daemon, timed. Every connection goes
through a relay (tests/tools/nemesis.py) that counts connections and
bytes. Then a stream of 10,000 single-entry transactions (`opt-tree put
--each`) chosen by one push (group commit). Prints medians; the targets
are those of docs/quorum.md's issue: a steady-state write to 3 peers
<= 1.5x the git push, to 5 peers <= 2x, one connection per peer; one
peer killed or stopped <= 2x, no time-out waited.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(top, "tests", "tools"))
from nemesis import Peer  # noqa: E402

BIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(top, "build", "bin")
K = int(os.environ.get("K", "20"))
STREAM = int(os.environ.get("STREAM", "10000"))


def opt(prog, *args, inp=None, check=True):
    p = subprocess.run([os.path.join(BIN, prog)] + list(args), input=inp, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError("%s %s exited %d: %s" % (prog, " ".join(args), p.returncode, p.stderr.strip()))
    return p


def line(label, value):
    print("%-62s %s" % (label, value), flush=True)


class Cluster:
    def __init__(self, work, n, ordering):
        self.dir = tempfile.mkdtemp(prefix="%s-%d-" % (ordering, n), dir=work)
        self.peers = [Peer(i + 1, self.dir) for i in range(n)]
        self.base = Peer(0, self.dir)  # the plain git server
        self.store = os.path.join(self.dir, "store")
        opt("opt-block", "init", self.store)
        for p in self.peers:
            opt("opt-sync", "-C", self.store, "peer", "add", p.name, p.url())
        opt("opt-sync", "-C", self.store, "replicas", str(n))
        opt("opt-sync", "-C", self.store, "ordering", ordering)
        self.i = 0

    def counters(self):
        return (sum(p.relay.accepted for p in self.peers),
                sum(p.relay.bytes_up + p.relay.bytes_down for p in self.peers))

    def write(self):
        self.i += 1
        opt("opt-tree", "-C", self.store, "put", "users", "k%06d" % self.i, '{"n": %d, "pad": "%s"}' % (self.i, "x" * 80))

    def push(self):
        c0, b0 = self.counters()
        t0 = time.monotonic()
        p = opt("opt-sync", "-C", self.store, "push", check=False)
        t1 = time.monotonic()
        c1, b1 = self.counters()
        return t1 - t0, c1 - c0, b1 - b0, p.returncode

    def git_push(self):
        b0 = self.base.relay.bytes_up + self.base.relay.bytes_down
        t0 = time.monotonic()
        subprocess.run(["git", "--git-dir=" + self.store, "push", "-q", "--no-verify", self.base.url(),
                        "+refs/opt/collections/users:refs/heads/users"], check=True, capture_output=True)
        t1 = time.monotonic()
        return t1 - t0, self.base.relay.bytes_up + self.base.relay.bytes_down - b0

    def close(self):
        for p in self.peers + [self.base]:
            p.close()


def run_writes(c, label, k):
    ts, cs, bs, gts, gbs, bad = [], [], [], [], [], 0
    for _ in range(k):
        c.write()
        t, n, b, rc = c.push()
        if rc != 0:
            bad += 1
        ts.append(t)
        cs.append(n)
        bs.append(b)
        gt, gb = c.git_push()
        gts.append(gt)
        gbs.append(gb)
    m, g = statistics.median(ts), statistics.median(gts)
    line("%s: write + push, median of %d" % (label, k), "%.1f ms (git push %.1f ms: %.2fx)" % (m * 1e3, g * 1e3, m / g))
    line("%s: slowest push" % label, "%.1f ms" % (max(ts) * 1e3))
    line("%s: connections per write (median, max)" % label, "%d, %d (peers %d)" % (statistics.median(cs), max(cs), len(c.peers)))
    line("%s: bytes moved per write (median)" % label, "%d (git push %d)" % (statistics.median(bs), statistics.median(gbs)))
    if bad:
        line("%s: pushes that failed" % label, "%d of %d" % (bad, k))


def main():
    work = tempfile.mkdtemp(prefix="opt-bench-quorum.")
    os.environ.setdefault("OPT_FSYNC", "1")
    print("# bench/quorum.py: %s, K=%d, load %s" % (BIN, K, open("/proc/loadavg").read().split()[0]), flush=True)
    try:
        for n, ordering in ((3, "quorum"), (5, "quorum"), (3, "home")):
            c = Cluster(work, n, ordering)
            try:
                c.write()
                c.push()  # the first push (a prepare round, the collection created)
                c.git_push()
                run_writes(c, "%s, %d peers" % (ordering, n), K)
                if ordering == "quorum" and n == 3:
                    c.peers[2].kill()
                    run_writes(c, "quorum, 3 peers, one killed", K)
                    c.peers[2].start()
                    c.push()
                    c.peers[2].stop()
                    run_writes(c, "quorum, 3 peers, one stopped", K)
                    c.peers[2].cont()
                    inp = "".join('{"key": "s%06d", "value": %d}\n' % (i, i) for i in range(STREAM))
                    t0 = time.monotonic()
                    opt("opt-tree", "-C", c.store, "put", "stream", "--each", inp=inp)
                    t1 = time.monotonic()
                    t, n2, b, rc = c.push()
                    line("quorum, 3 peers: %d single-entry transactions, one push" % STREAM,
                         "%.0f txn/s (local %.2f s, push %.2f s%s)" % (STREAM / (t1 - t0 + t), t1 - t0, t,
                                                                      "" if rc == 0 else ", push failed"))
            finally:
                c.close()
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
