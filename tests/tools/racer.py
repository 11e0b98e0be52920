#!/usr/bin/env python3
"""racer.py - one of several concurrent writers of tests/047-races.bats.

Usage: racer.py --bin DIR --worker W --count N --seed S --acks FILE

Runs N transactions, each over one collection or over 2-3 of the
collections in COLLS (trees and diaries), in runs of 1-8 transactions:
most runs are one `opt-log commit --each` process; a run of one
single-collection transaction is sometimes a plain `opt-tree put` or
`opt-diary append`.  Transaction i of worker W:
  - in a tree: puts the key "wW-i" = {"w": W, "i": i}; often also puts a
    shared key "s-K" (K < 10) = {"w": W, "i": i}, sometimes deletes one,
    so that the order of transactions shows in the final content;
  - in a diary: appends {"w": W, "i": i}.
Every record a program prints is an acknowledgement; each is written to
FILE as a JSON line {"w", "i", "colls", "ack"} (ack: the record).
When a program fails, its stderr is printed and the worker goes on with
its next run; it exits 1 at the end.
"""
import argparse
import json
import os
import random
import subprocess
import sys

COLLS = {"a-tree": "tree", "b-diary": "diary", "c-tree": "tree", "d-diary": "diary", "e-tree": "tree"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--acks", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed * 1000 + a.worker)
    w = a.worker
    names = sorted(COLLS)
    out = open(a.acks, "w")

    def actions(c, i):
        if COLLS[c] == "diary":
            return [{"type": "append", "entry": {"w": w, "i": i}}]
        acts = [{"type": "put", "key": "w%d-%d" % (w, i), "value": {"w": w, "i": i}}]
        if rng.random() < 0.5:
            acts.append({"type": "put", "key": "s-%d" % rng.randrange(10), "value": {"w": w, "i": i}})
        if rng.random() < 0.15:
            acts.append({"type": "del", "key": "s-%d" % rng.randrange(10)})
        rng.shuffle(acts)
        return acts

    i = 0
    failures = 0
    while i < a.count:
        run = min(rng.randint(1, 8), a.count - i)
        txs = []
        for k in range(run):
            if rng.random() < 0.4:
                colls = [rng.choice(names)]
            else:
                colls = sorted(rng.sample(names, rng.choice([2, 2, 3])))
            txs.append((i + k, colls))
        if run == 1 and len(txs[0][1]) == 1 and rng.random() < 0.5:
            n, colls = txs[0]
            c = colls[0]
            if COLLS[c] == "tree":
                argv = [os.path.join(a.bin, "opt-tree"), "put", c, "w%d-%d" % (w, n), json.dumps({"w": w, "i": n})]
            else:
                argv = [os.path.join(a.bin, "opt-diary"), "append", c, json.dumps({"w": w, "i": n})]
            stdin = None
        else:
            argv = [os.path.join(a.bin, "opt-log"), "commit", "--each"]
            stdin = "".join(json.dumps({"collections": {c: actions(c, n) for c in colls}}) + "\n"
                            for n, colls in txs)
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        acks = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        for (n, colls), ack in zip(txs, acks):
            out.write(json.dumps({"w": w, "i": n, "colls": colls, "ack": ack}) + "\n")
        out.flush()
        if p.returncode != 0 or len(acks) != len(txs):
            # go on: the checks that follow show what the failure left
            failures += 1
            sys.stderr.write("worker %d: %s: exit %d, %d of %d acknowledged: %s\n" %
                             (w, " ".join(argv[1:]), p.returncode, len(acks), len(txs), p.stderr.strip()))
        i += run
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
