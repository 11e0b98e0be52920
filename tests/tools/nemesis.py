#!/usr/bin/env python3
"""Fault injection for quorum clusters (docs/quorum.md), in the spirit of
Jepsen: N git daemons on loopback serve bare repositories as the peers of
a quorum cluster (opt-sync ordering quorum, R = N); every connection to a
peer goes through a TCP relay of this script. W writer stores each run a
loop of unique writes (diary appends, tree puts, two-collection
transactions), each followed by `opt-sync push`, while a nemesis kills
and restarts a minority of the daemons (the whole process group, so the
receive-packs in flight die too), stops one (SIGSTOP), cuts every
connection to one at the relay, or stalls them (no byte forwarded for a
while). Every operation is recorded: invoked, then ok (a push that began
after the write exited 0: the write is chosen), failed (the local write
itself failed: nothing was written) or unknown (no push after it
succeeded). After the run the faults are healed, every writer pushes
until a push succeeds, and a fresh store reads each peer alone. The
checker then asserts:

  - every acknowledged write is on every peer, exactly once;
  - no write is on any peer twice, and no failed write is anywhere;
  - all peers hold one history per collection (the same entries, in the
    same order);
  - acknowledged appends that did not overlap in time are in real-time
    order (one acknowledged before the other was invoked comes first);
  - no two-collection transaction is half applied on any peer.

It prints the counts (operations, acknowledged, unknown, failed, faults
by kind, violations) and exits 1 if there was any violation, 2 on a usage
or set-up error. The history is written as JSON lines (--history).

    nemesis.py --bin build/bin --peers 3 --writers 4 --seconds 20 DIR
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time


def now():
    return time.monotonic()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=10.0):
    end = now() + secs
    while now() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Relay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target that can cut every
    connection it carries, or stall them (forward nothing until resumed)."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.socks = set()
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.accepted = 0          # connections, and bytes each way (bench/quorum.py)
        self.bytes_up = 0
        self.bytes_down = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        with self.lock:
            self.socks.update((c, u))
        threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
        self._pump(u, c, False)

    def _pump(self, src, dst, up):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
                with self.lock:
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            for s in (src, dst):
                if s in self.socks:
                    self.socks.discard(s)
                    s.close()

    def cut(self):
        with self.lock:
            for s in list(self.socks):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.resume()
        self.cut()
        self.lsock.close()


class Peer:
    """A git daemon serving DIR/p (a bare repository), in its own process
    group; reached through a relay."""

    def __init__(self, i, top):
        self.name = "p%d" % i
        self.dir = os.path.join(top, "srv%d" % i)
        os.makedirs(self.dir, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", os.path.join(self.dir, "p")], check=True)
        self.port = free_port()
        self.log = open(os.path.join(top, "daemon%d.log" % i), "ab")
        self.proc = None
        self.stopped = False
        self.start()
        self.relay = Relay(self.port)

    def start(self):
        exe = os.path.join(subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                          check=True).stdout.strip(), "git-daemon")
        for _ in range(50):
            self.proc = subprocess.Popen([exe, "--reuseaddr", "--listen=127.0.0.1", "--port=%d" % self.port,
                                          "--base-path=" + self.dir, "--export-all", "--enable=receive-pack",
                                          self.dir], stdout=self.log, stderr=self.log, start_new_session=True)
            if wait_port(self.port, 5):
                return
            self.proc.kill()
            self.proc.wait()
            time.sleep(0.2)
        raise RuntimeError("git daemon of %s did not start on port %d" % (self.name, self.port))

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        if self.stopped:
            os.killpg(self.proc.pid, signal.SIGCONT)
            self.stopped = False

    def url(self):
        return "git://127.0.0.1:%d/p" % self.relay.port

    def direct_url(self):
        return "git://127.0.0.1:%d/p" % self.port

    def close(self):
        self.relay.close()
        self.cont()
        self.kill()
        self.log.close()


class History:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.t0 = now()
        self.out = open(path, "w") if path else None
        self.ops = []

    def t(self):
        return round(now() - self.t0, 6)

    def record(self, ev):
        with self.lock:
            ev["time"] = self.t()
            if self.out:
                self.out.write(json.dumps(ev, sort_keys=True) + "\n")
                self.out.flush()


def run(args, timeout=None, env=None):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out, "timed out after %s s" % timeout


class Writer:
    def __init__(self, w, opts, hist, store):
        self.w = w
        self.o = opts
        self.h = hist
        self.store = store
        self.rng = random.Random(opts.seed * 1000 + w)
        self.pending = []
        self.n = 0
        self.pushes = {"ok": 0, "failed": 0, "timeout": 0}

    def bin(self, prog):
        return os.path.join(self.o.bin, prog)

    def write(self, kind, value):
        if kind == "append":
            cmd = [self.bin("opt-diary"), "-C", self.store, "append", "events", json.dumps(value)]
            inp = None
        elif kind == "put":
            cmd = [self.bin("opt-tree"), "-C", self.store, "put", "users", value, json.dumps(self.n)]
            inp = None
        else:
            doc = {"collections": {"ledger": [{"type": "put", "key": value, "value": self.n}],
                                   "journal": [{"type": "append", "entry": value}]}}
            cmd = [self.bin("opt-log"), "-C", self.store, "commit"]
            inp = json.dumps(doc)
        p = subprocess.run(cmd, input=inp, capture_output=True, text=True)
        return p.returncode, p.stderr.strip()

    def push(self):
        rc, out, err = run([self.bin("opt-sync"), "-C", self.store, "push"], timeout=self.o.push_timeout)
        if rc is None:
            self.pushes["timeout"] += 1
        elif rc == 0:
            self.pushes["ok"] += 1
        else:
            self.pushes["failed"] += 1
        return rc, err.strip()

    def ack_pending(self):
        t = self.h.t()
        for op in self.pending:
            op["type"] = "ok"
            op["ack"] = t
            self.h.record({"process": self.w, "type": "ok", "f": op["f"], "value": op["value"]})
        self.pending = []

    def loop(self, end):
        kinds = ["append", "put"] + (["txn"] if self.o.txn else [])
        while now() < end:
            self.n += 1
            kind = self.rng.choice(kinds)
            value = "w%d-%d" % (self.w, self.n)
            op = {"process": self.w, "f": kind, "value": value, "invoke": self.h.t(), "type": "invoke"}
            self.h.ops.append(op)
            self.h.record({"process": self.w, "type": "invoke", "f": kind, "value": value})
            rc, err = self.write(kind, value)
            if rc != 0:
                op["type"] = "fail"
                self.h.record({"process": self.w, "type": "fail", "f": kind, "value": value, "error": err})
                continue
            self.pending.append(op)
            op["type"] = "unknown"
            rc, err = self.push()
            if rc == 0:
                self.ack_pending()
            else:
                self.h.record({"process": self.w, "type": "info", "f": "push", "exit": rc, "error": err[-300:]})

    def settle(self, tries):
        """Push until a push succeeds (after healing)."""
        for _ in range(tries):
            rc, err = self.push()
            if rc == 0:
                self.ack_pending()
                return True
            time.sleep(0.5)
        return False


class Nemesis:
    def __init__(self, peers, opts, hist):
        self.peers = peers
        self.o = opts
        self.h = hist
        self.rng = random.Random(opts.seed)
        self.f = (len(peers) - 1) // 2
        self.faults = {"kill": 0, "stop": 0, "cut": 0, "stall": 0}

    def loop(self, end):
        while now() < end:
            time.sleep(self.rng.uniform(0.2, 1.0))
            if now() >= end:
                break
            kind = self.rng.choice(["kill", "kill", "stop", "cut", "stall"])
            k = self.rng.randint(1, self.f) if kind == "kill" else 1
            victims = self.rng.sample(self.peers, k)
            hold = self.rng.uniform(0.3, 2.5)
            names = [p.name for p in victims]
            self.faults[kind] += 1
            self.h.record({"process": "nemesis", "type": "info", "f": kind, "value": names})
            for p in victims:
                if kind == "kill":
                    p.kill()
                elif kind == "stop":
                    p.stop()
                elif kind == "cut":
                    p.relay.cut()
                else:
                    p.relay.stall()
            time.sleep(min(hold, max(0.0, end - now())))
            for p in victims:
                if kind == "kill":
                    p.start()
                elif kind == "stop":
                    p.cont()
                elif kind == "stall":
                    p.relay.resume()
            self.h.record({"process": "nemesis", "type": "info", "f": "heal", "value": names})


def setup_store(opts, path, peers, keys=None):
    b = lambda prog: os.path.join(opts.bin, prog)
    subprocess.run([b("opt-block"), "init", path], check=True, capture_output=True)
    for p in peers:
        subprocess.run([b("opt-sync"), "-C", path, "peer", "add", p.name, p.url()], check=True,
                       capture_output=True)
    subprocess.run([b("opt-sync"), "-C", path, "replicas", str(len(peers))], check=True, capture_output=True)
    subprocess.run([b("opt-sync"), "-C", path, "ordering", "quorum"], check=True, capture_output=True)


def key_of(opts, store):
    out = subprocess.run([os.path.join(opts.bin, "opt-log"), "-C", store, "identity"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["key"]


def trust(opts, store, keys):
    for name, k in keys.items():
        subprocess.run([os.path.join(opts.bin, "opt-log"), "-C", store, "trust", k, "--name", name],
                       check=True, capture_output=True)


def lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def read_peer(opts, top, peer, keys):
    """What a store that reads this peer alone sees: the entries of each
    collection, in order (None for a collection it does not have)."""
    b = lambda prog: os.path.join(opts.bin, prog)
    d = os.path.join(top, "read-" + peer.name)
    subprocess.run([b("opt-block"), "init", d], check=True, capture_output=True)
    trust(opts, d, keys)
    subprocess.run([b("opt-sync"), "-C", d, "remote", "add", "origin", peer.direct_url()], check=True,
                   capture_output=True)
    rc, out, err = run([b("opt-sync"), "-C", d, "pull", "origin"], timeout=120)
    if rc != 0:
        return None, "pull from %s exited %s: %s" % (peer.name, rc, err.strip()[-300:])
    seen = {}
    for coll, kind in (("events", "diary"), ("journal", "diary"), ("users", "tree"), ("ledger", "tree")):
        if kind == "diary":
            rc, out, err = run([b("opt-diary"), "-C", d, "read", coll])
            seen[coll] = lines(out) if rc == 0 else None
        else:
            rc, out, err = run([b("opt-tree"), "-C", d, "range", coll])
            seen[coll] = [r["key"] for r in lines(out)] if rc == 0 else None
    return seen, None


def check(ops, reads, violations):
    ok = [o for o in ops if o["type"] == "ok"]
    where = {"append": ["events"], "put": ["users"], "txn": ["ledger", "journal"]}
    for name, seen in reads.items():
        for coll in ("events", "journal"):
            vals = seen.get(coll) or []
            dup = sorted({v for v in vals if vals.count(v) > 1})
            if dup:
                violations.append("%s: %s holds %d entries twice (%s)" % (name, coll, len(dup), ", ".join(dup[:5])))
        for o in ops:
            for coll in where[o["f"]]:
                vals = seen.get(coll) or []
                if o["type"] == "ok" and o["value"] not in vals:
                    violations.append("%s: acknowledged %s %s missing from %s" % (name, o["f"], o["value"], coll))
                if o["type"] == "fail" and o["value"] in vals:
                    violations.append("%s: failed %s %s is in %s" % (name, o["f"], o["value"], coll))
        led, jou = set(seen.get("ledger") or []), set(seen.get("journal") or [])
        for v in sorted(led ^ jou):
            violations.append("%s: transaction %s half applied (%s only)" % (name, v, "ledger" if v in led else "journal"))
        # real-time order of acknowledged appends
        pos = {v: i for i, v in enumerate(seen.get("events") or [])}
        acked = sorted((o for o in ok if o["f"] == "append" and o["value"] in pos), key=lambda o: o["ack"])
        for a in acked:
            for b in ok:
                if b["f"] == "append" and b["value"] in pos and b["invoke"] > a["ack"] and pos[b["value"]] < pos[a["value"]]:
                    violations.append("%s: %s (acknowledged at %.3f) comes after %s (invoked at %.3f)" %
                                      (name, a["value"], a["ack"], b["value"], b["invoke"]))
    names = sorted(reads)
    for coll in ("events", "journal", "users", "ledger"):
        first = reads[names[0]].get(coll)
        for n in names[1:]:
            if reads[n].get(coll) != first:
                violations.append("%s and %s hold different histories of %s" % (names[0], n, coll))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="an empty working directory")
    ap.add_argument("--bin", required=True, help="the directory of the programs")
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--txn", action="store_true", help="also two-collection transactions")
    ap.add_argument("--no-faults", action="store_true", help="no nemesis (a control run)")
    ap.add_argument("--push-timeout", type=float, default=120)
    ap.add_argument("--history", default=None, help="write the history here (JSON lines)")
    o = ap.parse_args()
    if o.seed is None:
        o.seed = random.randrange(1 << 30)
    if o.peers < 3 or o.peers % 2 == 0:
        print("nemesis: --peers must be odd and at least 3", file=sys.stderr)
        return 2
    top = os.path.abspath(o.dir)
    os.makedirs(top, exist_ok=True)
    env_keep = dict(os.environ)
    os.environ.setdefault("OPT_CLUSTER_BACKOFF_MS", "20")
    print("# nemesis: seed %d (--seed %d repeats the choices), %d peers, %d writers, %.0f s%s" %
          (o.seed, o.seed, o.peers, o.writers, o.seconds, ", transactions" if o.txn else ""), flush=True)
    peers = []
    try:
        peers = [Peer(i + 1, top) for i in range(o.peers)]
        hist = History(o.history)
        stores = [os.path.join(top, "w%d" % (w + 1)) for w in range(o.writers)]
        for s in stores:
            setup_store(o, s, peers)
        keys = {"w%d" % (i + 1): key_of(o, s) for i, s in enumerate(stores)}
        for s in stores:
            trust(o, s, keys)
        writers = [Writer(w + 1, o, hist, s) for w, s in enumerate(stores)]
        nem = Nemesis(peers, o, hist)
        end = now() + o.seconds
        threads = [threading.Thread(target=w.loop, args=(end,)) for w in writers]
        if not o.no_faults:
            threads.append(threading.Thread(target=nem.loop, args=(end,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # heal: every daemon up, nothing stopped or stalled
        for p in peers:
            p.cont()
            p.relay.resume()
            if p.proc.poll() is not None:
                p.start()
        hist.record({"process": "nemesis", "type": "info", "f": "heal-all"})
        unsettled = [w.w for w in writers if not w.settle(20)]
        # a second round: what some peers still lack is sent by the next push
        for w in writers:
            w.push()
        reads, violations = {}, []
        for p in peers:
            seen, err = read_peer(o, top, p, keys)
            if err:
                violations.append(err)
            else:
                reads[p.name] = seen
        if unsettled:
            violations.append("writers %s could not push after healing" % unsettled)
        if reads:
            check(hist.ops, reads, violations)
        ops = hist.ops
        count = lambda t: sum(1 for x in ops if x["type"] == t)
        pushes = {k: sum(w.pushes[k] for w in writers) for k in ("ok", "failed", "timeout")}
        print("# operations %d: acknowledged %d, unknown %d, failed %d" %
              (len(ops), count("ok"), count("unknown"), count("fail")))
        print("# by kind: " + ", ".join("%s %d" % (k, sum(1 for x in ops if x["f"] == k))
                                        for k in ("append", "put", "txn")))
        print("# pushes: ok %d, failed %d, timed out %d" % (pushes["ok"], pushes["failed"], pushes["timeout"]))
        print("# faults %d: " % sum(nem.faults.values()) + ", ".join("%s %d" % kv for kv in nem.faults.items()))
        if reads:
            ev = next(iter(reads.values())).get("events") or []
            print("# peers read: %d, events on each: %d" % (len(reads), len(ev)))
        print("# violations: %d" % len(violations))
        for v in violations[:30]:
            print("violation: " + v)
        return 1 if violations else 0
    finally:
        for p in peers:
            p.close()
        os.environ.clear()
        os.environ.update(env_keep)


if __name__ == "__main__":
    sys.exit(main())
