#!/usr/bin/env python3
"""crashloop.py - kill transactions at random points and check that the
store stays whole and every transaction is all or nothing.

Usage: crashloop.py --bin DIR --store DIR [--iterations N] [--seed S]
                    [--check-every K] [--ttl MS]

Each iteration runs one random workload against the store with one random
way to die armed:
  - a fault point of lib/ ($OPT_TEST_CRASH=POINT@N: the process kills
    itself with SIGKILL at the N-th passage of POINT), or
  - a plain SIGKILL from outside after a random delay (0-30 ms, --kill-ms).
The workloads: a transaction over 2 or 3 collections (opt-log commit), a
transaction over one collection (opt-log commit), or a plain opt-tree put /
opt-diary append.  Transaction n writes a unique marker into each of its
collections: key "m-<n>" = {"n": n} in a tree, entry {"m": n} in a diary
(besides some noise: other keys put and deleted, other entries).
A transaction is acknowledged when its program printed its record (a whole
JSON line: {"trx", "collections"} or {"collection", "rev"}).

Every K iterations and at the end, with no fault armed:
  1. git fsck --strict passes;
  2. after the TTL, a fresh write to every collection succeeds (it resolves
     what the killed processes left pending), and no head is pending then;
  3. opt-log verify passes;
  4. every acknowledged transaction is visible in all its collections; every
     transaction is visible in all of its collections or in none; no marker
     is visible twice; each marker's log entries name one transaction, the
     acknowledged one;
  5. opt-log status says committed for visible transactions and aborted for
     those whose pending revisions were reverted (for every new transaction
     since the last check, and a sample of older ones).
Prints "# " lines: the seed, the figures, and what failed.  Exit 0 when
every check passed, 1 otherwise.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

POINTS = ["txn:before-commit", "txn:after-commit", "txn:pended", "txn:decided",
          "txn:aborted-on-primary", "txn:reverted"]
# names in this order are also name order: the primary (the last of a
# transaction's collections) is a tree or a diary
COLLS = {"a-tree": "tree", "b-diary": "diary", "c-tree": "tree", "d-diary": "diary", "e-tree": "tree"}


class Failed(Exception):
    pass


class Loop:
    def __init__(self, a):
        self.a = a
        self.bin = a.bin
        self.store = a.store
        self.rng = random.Random(a.seed)
        self.env = dict(os.environ)
        self.env.update({"OPT_STORE": a.store, "OPT_TXN_TTL": str(a.ttl),
                         "OPT_STALE_LOCK_MS": str(a.stale_lock_ms),
                         "OPT_BUSY_TIMEOUT": str(a.busy_timeout)})
        self.env.pop("OPT_TEST_CRASH", None)
        self.tx = {}          # n -> {"colls", "kind", "acked", "trx", "rc", "how"}
        self.checked_status = set()
        self.fresh = 0
        self.fired = {}
        self.armed = {}
        self.unexpected = []
        self.fresh_ms_max = 0
        self.checks = 0
        self.t_work = 0.0
        self.t_check = 0.0
        self.status_checked = 0
        self.left_pending = False

    def prog(self, name):
        return os.path.join(self.bin, name)

    def run(self, argv, stdin=None, extra=None, timeout=120):
        env = self.env
        if extra:
            env = dict(env)
            env.update(extra)
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    # ---- workloads ----

    def actions(self, c, n):
        if COLLS[c] == "tree":
            acts = [{"type": "put", "key": "m-%d" % n, "value": {"n": n}}]
            if self.rng.random() < 0.3:
                acts.append({"type": "put", "key": "noise-%d" % self.rng.randrange(20), "value": n})
            if self.rng.random() < 0.2:
                acts.append({"type": "del", "key": "noise-%d" % self.rng.randrange(20)})
        else:
            acts = [{"type": "append", "entry": {"m": n}}]
            if self.rng.random() < 0.2:
                acts.append({"type": "append", "entry": {"noise": n}})
        self.rng.shuffle(acts)
        return acts

    def workload(self, n):
        r = self.rng.random()
        names = sorted(COLLS)
        if r < 0.6:
            colls = sorted(self.rng.sample(names, self.rng.choice([2, 2, 3])))
            kind = "multi"
        else:
            colls = [self.rng.choice(names)]
            kind = "single-commit" if r < 0.75 else "single"
        if kind == "single":
            c = colls[0]
            if COLLS[c] == "tree":
                argv = [self.prog("opt-tree"), "put", c, "m-%d" % n, json.dumps({"n": n})]
            else:
                argv = [self.prog("opt-diary"), "append", c, json.dumps({"m": n})]
            return kind, colls, argv, None
        doc = {"collections": {c: self.actions(c, n) for c in colls}}
        return kind, colls, [self.prog("opt-log"), "commit"], json.dumps(doc) + "\n"

    def iteration(self, n):
        kind, colls, argv, stdin = self.workload(n)
        if self.rng.random() < 0.25:
            how = "kill"
            delay = self.rng.uniform(0, self.a.kill_ms / 1000.0)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=self.env)
            if stdin:
                p.stdin.write(stdin)
            p.stdin.close()
            p.stdin = None
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            rc = p.returncode
        else:
            point = self.rng.choice(POINTS)
            if self.left_pending and self.rng.random() < 0.5:
                # the last one was killed inside a transaction over several
                # collections: the points of its resolution are near
                point = self.rng.choice(["txn:aborted-on-primary", "txn:reverted"])
            nth = self.rng.choice([1, 1, 1, 2, 2, 3, 4])
            how = "%s@%d" % (point, nth)
            try:
                rc, out, err = self.run(argv, stdin, {"OPT_TEST_CRASH": how})
            except subprocess.TimeoutExpired:
                rc, out, err = "timeout", "", ""
        key = how if how == "kill" else how.split("@")[0]
        self.armed[key] = self.armed.get(key, 0) + 1
        if rc == -signal.SIGKILL or rc == 137:
            self.fired[key] = self.fired.get(key, 0) + 1
        elif rc != 0:
            self.unexpected.append("transaction %d (%s, %s, %s): exit %s: %s" %
                                   (n, kind, ",".join(colls), how, rc, err.strip()[:300]))
        self.left_pending = kind == "multi" and rc != 0
        acked, trx = False, None
        for line in out.split("\n"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            if "trx" in rec and "collections" in rec:
                if sorted(rec["collections"]) != colls:
                    raise Failed("transaction %d acknowledged for %s, not %s: %s" % (n, sorted(rec["collections"]), colls, line))
                acked, trx = True, rec["trx"]
            elif "rev" in rec and rec.get("collection") == colls[0]:
                acked = True
        if rc == 0 and not acked:
            raise Failed("transaction %d (%s) exited 0 without its record: %r %r" % (n, how, out, err))
        self.tx[n] = {"colls": colls, "kind": kind, "acked": acked, "trx": trx, "rc": rc, "how": how}

    # ---- checks ----

    def check(self, upto):
        self.checks += 1
        time.sleep(2 * self.a.ttl / 1000.0 + 0.01)
        rc, out, err = self.run(["git", "--git-dir=" + self.store, "fsck", "--strict", "--no-progress"])
        if rc != 0:
            raise Failed("git fsck --strict: exit %d: %s %s" % (rc, out[-2000:], err[-2000:]))
        # a fresh write to every collection: resolves what was left pending
        for c in sorted(COLLS):
            self.fresh += 1
            t0 = time.time()
            if COLLS[c] == "tree":
                argv = [self.prog("opt-tree"), "put", c, "fresh-%d" % self.fresh, str(self.fresh)]
            else:
                argv = [self.prog("opt-diary"), "append", c, json.dumps({"fresh": self.fresh})]
            rc, out, err = self.run(argv)
            ms = (time.time() - t0) * 1000
            self.fresh_ms_max = max(self.fresh_ms_max, ms)
            if rc != 0:
                raise Failed("fresh write %s: exit %d: %s" % (" ".join(argv[1:]), rc, err.strip()))
            rc, out, err = self.run(["git", "--git-dir=" + self.store, "cat-file", "commit",
                                     "refs/opt/collections/" + c])
            if "Opt-Status: pending" in out:
                raise Failed("collection %s: head still pending after a fresh write:\n%s" % (c, out))
        rc, out, err = self.run([self.prog("opt-log"), "verify"])
        if rc != 0:
            raise Failed("opt-log verify: exit %d: %s %s" % (rc, out.strip()[-3000:], err.strip()[-2000:]))
        for line in out.splitlines():
            if not json.loads(line).get("ok"):
                raise Failed("opt-log verify: %s" % line)
        # what is visible, marker by marker
        visible = {}      # n -> set of collections
        for c in sorted(COLLS):
            if COLLS[c] == "tree":
                rc, out, err = self.run([self.prog("opt-tree"), "range", c])
                if rc != 0:
                    raise Failed("opt-tree range %s: exit %d: %s" % (c, rc, err))
                seen = set()
                for line in out.splitlines():
                    rec = json.loads(line)
                    k = rec["key"]
                    if isinstance(k, str) and k.startswith("m-"):
                        n = int(k[2:])
                        if rec["value"] != {"n": n}:
                            raise Failed("%s: key %s has value %s" % (c, k, rec["value"]))
                        seen.add(n)
                        visible.setdefault(n, set()).add(c)
            else:
                rc, out, err = self.run([self.prog("opt-diary"), "read", c])
                if rc != 0:
                    raise Failed("opt-diary read %s: exit %d: %s" % (c, rc, err))
                seen = set()
                for line in out.splitlines():
                    e = json.loads(line)
                    if isinstance(e, dict) and "m" in e:
                        n = e["m"]
                        if n in seen:
                            raise Failed("%s: marker %d appended twice" % (c, n))
                        seen.add(n)
                        visible.setdefault(n, set()).add(c)
        # which transaction wrote each marker, from the logs
        logtrx = {}       # n -> set of trx
        for c in sorted(COLLS):
            rc, out, err = self.run([self.prog("opt-log"), "show", c])
            if rc != 0:
                raise Failed("opt-log show %s: exit %d: %s" % (c, rc, err))
            for line in out.splitlines():
                e = json.loads(line)
                for act in e.get("actions") or []:
                    n = None
                    if act.get("type") == "put" and isinstance(act.get("key"), str) and act["key"].startswith("m-"):
                        n = int(act["key"][2:])
                    elif act.get("type") == "append" and isinstance(act.get("entry"), dict) and "m" in act["entry"]:
                        n = act["entry"]["m"]
                    if n is not None:
                        logtrx.setdefault(n, set()).add(e["trx"])
        for n in visible:
            if n not in self.tx:
                raise Failed("marker %d is visible but was never written" % n)
        want_status = {}
        for n, t in self.tx.items():
            if n > upto:
                continue
            v = visible.get(n, set())
            if v and v != set(t["colls"]):
                raise Failed("transaction %d (%s, %s, exit %s) is visible in %s but not in %s" %
                             (n, t["kind"], t["how"], t["rc"], sorted(v), sorted(set(t["colls"]) - v)))
            if t["acked"] and not v:
                raise Failed("acknowledged transaction %d (%s, %s) is not visible in %s" %
                             (n, t["kind"], t["how"], t["colls"]))
            trxs = logtrx.get(n, set())
            if len(trxs) > 1:
                raise Failed("marker %d is in the logs of transactions %s" % (n, sorted(trxs)))
            if v and not trxs:
                raise Failed("marker %d is visible but in no log entry" % n)
            if t["trx"] and trxs and t["trx"] not in trxs:
                raise Failed("transaction %d acknowledged as %s, logged as %s" % (n, t["trx"], sorted(trxs)))
            t["visible"] = bool(v)
            if trxs:
                t["logtrx"] = next(iter(trxs))
                if n not in self.checked_status:
                    want_status[n] = "committed" if v else "aborted"
        # status: every new transaction; a sample of older ones again
        older = [n for n in self.checked_status if n <= upto and self.tx[n].get("logtrx")]
        for n in self.rng.sample(older, min(len(older), 5)):
            want_status[n] = "committed" if self.tx[n]["visible"] else "aborted"
        if want_status:
            ids = {self.tx[n]["logtrx"]: n for n in want_status}
            rc, out, err = self.run([self.prog("opt-log"), "status"] + sorted(ids))
            if rc != 0:
                raise Failed("opt-log status: exit %d: %s" % (rc, err.strip()))
            got = {}
            for line in out.splitlines():
                rec = json.loads(line)
                got[rec["trx"]] = rec["status"]
            for trx, n in ids.items():
                if got.get(trx) != want_status[n]:
                    t = self.tx[n]
                    raise Failed("transaction %d (%s, %s, %s, acked %s): status %s, but it is %s" %
                                 (n, trx, t["kind"], t["how"], t["acked"], got.get(trx),
                                  "visible" if t["visible"] else "not visible"))
                self.checked_status.add(n)
            self.status_checked += len(ids)

    def figures(self):
        acked = sum(1 for t in self.tx.values() if t["acked"])
        vis = sum(1 for t in self.tx.values() if t.get("visible"))
        unacked = sum(1 for t in self.tx.values() if t.get("visible") and not t["acked"])
        aborted = sum(1 for t in self.tx.values() if "visible" in t and not t["visible"])
        multi = sum(1 for t in self.tx.values() if t["kind"] == "multi")
        fired = sum(self.fired.values())
        return [
            "seed %d, %d iterations (%d over several collections), %d checks, TTL %d ms" %
            (self.a.seed, len(self.tx), multi, self.checks, self.a.ttl),
            "killed %d (%s)" % (fired, ", ".join("%s %d/%d" % (k, self.fired.get(k, 0), self.armed[k])
                                                   for k in sorted(self.armed))),
            "acknowledged %d, committed %d, committed but unacknowledged %d, aborted or never written (in no collection) %d" %
            (acked, vis, unacked, aborted),
            "status looked up %d times; slowest fresh write %.0f ms; work %.1f s, checks %.1f s" %
            (self.status_checked, self.fresh_ms_max, self.t_work, self.t_check),
        ]

    def main(self):
        n = 0
        try:
            while n < self.a.iterations:
                t0 = time.time()
                n += 1
                self.iteration(n)
                self.t_work += time.time() - t0
                if n % self.a.check_every == 0 or n == self.a.iterations:
                    t0 = time.time()
                    self.check(n)
                    self.t_check += time.time() - t0
        except (Failed, subprocess.TimeoutExpired) as e:
            for line in self.figures():
                print("# " + line)
            print("# FAILED after iteration %d: %s" % (n, e))
            if n in self.tx:
                print("# the last transaction: %s" % json.dumps(self.tx[n]))
            return 1
        for line in self.figures():
            print("# " + line)
        if self.unexpected:
            for u in self.unexpected[:20]:
                print("# unexpected exit: " + u)
            print("# FAILED: %d workloads exited with an unexpected status" % len(self.unexpected))
            return 1
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--check-every", type=int, default=50)
    ap.add_argument("--ttl", type=int, default=50)
    ap.add_argument("--stale-lock-ms", type=int, default=100)
    ap.add_argument("--busy-timeout", type=int, default=20000)
    ap.add_argument("--kill-ms", type=int, default=30, help="the plain kills come after 0 to this many ms")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    sys.stdout.reconfigure(line_buffering=True)
    return Loop(a).main()


if __name__ == "__main__":
    sys.exit(main())
