#!/usr/bin/env python3
"""serial.py - check that the histories of a store's collections are a
valid serial order of its transactions.

Usage: serial.py --bin DIR --store DIR [--acks FILE...]

For every collection (refs/opt/collections/*), its log (`opt-log show`)
is replayed in revision order against a model (a tree: key -> value; a
diary: a list of entries):
  - put, del and append change the model; a pending revision's actions
    too, until a revert (an entry with "revert": REV) undoes them;
  - a pending revision followed by anything but its revert must belong to
    a transaction whose primary holds the decision "committed", and one
    that is reverted, to a transaction whose primary holds an abort record;
  - a pending revision at the head counts only when its transaction is
    committed (readers see it then, and only then).
Then:
  - the collection's content (`opt-tree range`, `opt-diary read`) must be
    the model's;
  - a transaction appears at most once in a collection (not counting the
    revert of its pending revision);
  - a transaction over several collections counts in all of them or in
    none, and in all of them when its primary holds the decision;
  - the order of the transactions is the same in every collection: the
    graph "T1 comes before T2 in some collection" has no cycle (and two
    transactions that share two collections are in the same order in both).
With --acks (JSON lines {"w", "i", "colls", "ack"} of tests/tools/racer.py;
ack: {"trx", "collections": {NAME: REV}} or {"collection", "rev"}), every
acknowledged transaction must count in exactly its collections, at the
revisions it was acknowledged with, and its marker (key "wW-i" in a tree,
entry {"w": W, "i": i} in a diary) be there exactly once.
Prints "# " summary lines; exit 0, or 1 listing what is wrong.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
from collections import defaultdict

errors = []


def err(msg):
    errors.append(msg)


def run(argv, env):
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit("serial.py: %s: exit %d: %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
    return p.stdout


def jsonl(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def canon(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--acks", nargs="*", default=[])
    a = ap.parse_args()
    env = dict(os.environ, OPT_STORE=a.store)
    prog = lambda n: os.path.join(a.bin, n)

    refs = run(["git", "--git-dir=" + a.store, "for-each-ref", "--format=%(refname)", "refs/opt/collections/"], env)
    names = sorted(r[len("refs/opt/collections/"):] for r in refs.split())
    kinds = {}
    for kind in ("tree", "diary"):
        for rec in jsonl(run([prog("opt-" + kind), "ls"], env)):
            kinds[rec["collection"]] = kind
    logs = {c: jsonl(run([prog("opt-log"), "show", c], env)) for c in names}

    # the decisions: on a primary, the entry of a transaction with status
    # committed (or none: a single-collection transaction) or aborted
    decided = {}
    for c, entries in logs.items():
        for e in entries:
            st = e.get("status")
            if "revert" in e or st == "pending":
                continue
            if e.get("primary", c) != c:
                err("%s rev %d: status %s of transaction %s whose primary is %s" % (c, e["rev"], st, e["trx"], e.get("primary")))
                continue
            d = "aborted" if st == "aborted" else "committed"
            if decided.get(e["trx"], d) != d:
                err("transaction %s is both committed and aborted (%s rev %d)" % (e["trx"], c, e["rev"]))
            decided[e["trx"]] = d

    effective = {}                   # collection -> [trx...] in order
    rev_of = defaultdict(dict)       # trx -> {collection: rev}
    colls_of = {}                    # trx -> the collections its entries name
    models = {}
    counts = defaultdict(int)
    figures = defaultdict(int)
    for c in names:
        kind = kinds.get(c, "other")
        model = {} if kind == "tree" else []
        seq = []
        pend = None                  # (entry, model before it)
        seen = defaultdict(int)
        replayable = True
        prev_rev = 0

        def apply(e):
            nonlocal replayable
            if "actions" not in e:
                replayable = False
                return
            for act in e["actions"]:
                t = act.get("type")
                if t == "put" and kind == "tree":
                    model[canon(act["key"])] = act["value"]
                elif t == "del" and kind == "tree":
                    model.pop(canon(act["key"]), None)
                elif t == "append" and kind == "diary":
                    model.append(act["entry"])
                elif t == "checkpoint":
                    pass
                else:
                    err("%s rev %d: action %s in a %s collection" % (c, e["rev"], canon(act), kind))

        def settle(p, committed):
            if committed:
                seq.append(p["trx"])
                rev_of[p["trx"]][c] = p["rev"]

        for e in logs[c]:
            figures["entries"] += 1
            if e["rev"] != prev_rev + 1:
                err("%s: revision %d after %d" % (c, e["rev"], prev_rev))
            prev_rev = e["rev"]
            trx, st = e["trx"], e.get("status")
            if len(e.get("collections") or []) > 1:
                colls_of[trx] = sorted(e["collections"])
                if c not in e["collections"]:
                    err("%s rev %d: transaction %s over %s" % (c, e["rev"], trx, e["collections"]))
            if "revert" in e:
                figures["reverts"] += 1
                if not pend or pend[0]["rev"] != e["revert"] or pend[0]["trx"] != trx:
                    err("%s rev %d: a revert of rev %s, which is not the pending revision before it" % (c, e["rev"], e["revert"]))
                else:
                    if decided.get(trx) != "aborted":
                        err("%s rev %d: pending revision %d of transaction %s reverted, but its primary says %s" %
                            (c, e["rev"], pend[0]["rev"], trx, decided.get(trx, "nothing")))
                    model = pend[1]
                pend = None
                continue
            if pend:
                # something was built on the pending revision: its
                # transaction must be committed
                if decided.get(pend[0]["trx"]) != "committed":
                    err("%s rev %d: built on pending revision %d of transaction %s, which is %s" %
                        (c, e["rev"], pend[0]["rev"], pend[0]["trx"], decided.get(pend[0]["trx"], "undecided")))
                settle(pend[0], True)
                pend = None
            if st == "aborted":
                figures["abort records"] += 1
                if e.get("actions"):
                    err("%s rev %d: an abort record with actions" % (c, e["rev"]))
                continue
            seen[trx] += 1
            if seen[trx] == 2:
                err("%s: transaction %s appears twice" % (c, trx))
            if st == "pending":
                figures["pending revisions"] += 1
                saved = copy.deepcopy(model)
                apply(e)
                pend = (e, saved)
                continue
            apply(e)
            settle(e, True)
        if pend:
            figures["pending heads (%s)" % decided.get(pend[0]["trx"], "undecided")] += 1
            if decided.get(pend[0]["trx"]) == "committed":
                settle(pend[0], True)
            else:
                model = pend[1]
        effective[c] = seq
        counts[c] = len(seq)
        models[c] = model if replayable else None
        if not replayable:
            figures["collections with pruned actions (not replayed)"] += 1

    # the content is the replay's
    for c in names:
        kind = kinds.get(c, "other")
        if models[c] is None or kind == "other":
            continue
        if kind == "tree":
            got = {canon(r["key"]): r["value"] for r in jsonl(run([prog("opt-tree"), "range", c], env))}
            want = models[c]
            if canon(got) != canon(want):
                missing = sorted(set(want) - set(got))[:5]
                extra = sorted(set(got) - set(want))[:5]
                differ = sorted(k for k in set(got) & set(want) if canon(got[k]) != canon(want[k]))[:5]
                err("tree %s: content is not the replay of its log: missing %s, extra %s, different %s" %
                    (c, missing, extra, [(k, got[k], want[k]) for k in differ]))
        else:
            got = jsonl(run([prog("opt-diary"), "read", c], env))
            if [canon(x) for x in got] != [canon(x) for x in models[c]]:
                err("diary %s: content (%d entries) is not the replay of its log (%d entries)" %
                    (c, len(got), len(models[c])))

    # all or none, for transactions over several collections
    for trx, cs in colls_of.items():
        have = sorted(rev_of.get(trx, {}))
        if have and have != cs:
            err("transaction %s over %s counts in %s only" % (trx, cs, have))
        if decided.get(trx) == "committed" and have != cs:
            err("transaction %s over %s is committed but counts in %s" % (trx, cs, have))
        if have:
            figures["transactions over several collections"] += 1

    # one order: no cycle in "comes before in some collection"
    pos = {c: {t: k for k, t in enumerate(seq)} for c, seq in effective.items()}
    pairs = 0
    cl = sorted(effective)
    for x in range(len(cl)):
        for y in range(x + 1, len(cl)):
            A, B = cl[x], cl[y]
            both = [t for t in effective[A] if t in pos[B]]
            pairs += max(0, len(both) - 1)
            for t1, t2 in zip(both, both[1:]):
                if pos[B][t1] > pos[B][t2]:
                    err("transactions %s and %s: %s before %s in %s, after in %s" % (t1, t2, t1, t2, A, B))
    succ = defaultdict(set)
    indeg = defaultdict(int)
    nodes = set()
    for seq in effective.values():
        nodes.update(seq)
        for t1, t2 in zip(seq, seq[1:]):
            if t2 not in succ[t1]:
                succ[t1].add(t2)
                indeg[t2] += 1
    ready = [t for t in nodes if indeg[t] == 0]
    done = 0
    while ready:
        t = ready.pop()
        done += 1
        for u in succ[t]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if done != len(nodes):
        err("the precedence graph across collections has a cycle (%d of %d transactions in it or after it)" %
            (len(nodes) - done, len(nodes)))

    # acknowledged transactions
    acked = 0
    for f in a.acks:
        for rec in jsonl(open(f).read()):
            acked += 1
            ack, cs, w, i = rec["ack"], sorted(rec["colls"]), rec["w"], rec["i"]
            if "trx" in ack:
                trx = ack["trx"]
                if sorted(ack["collections"]) != cs:
                    err("worker %d #%d: acknowledged for %s, not %s" % (w, i, sorted(ack["collections"]), cs))
                if rev_of.get(trx) != ack["collections"]:
                    err("worker %d #%d: transaction %s acknowledged at %s, counts at %s" %
                        (w, i, trx, canon(ack["collections"]), canon(rev_of.get(trx))))
            else:
                c, rev = ack["collection"], ack["rev"]
                es = [e for e in logs.get(c, []) if e["rev"] == rev]
                if [c] != cs or not es or rev_of.get(es[0]["trx"]) != {c: rev}:
                    err("worker %d #%d: acknowledged as %s, but revision %d of %s does not count as its transaction" %
                        (w, i, canon(ack), rev, c))
            for c in cs:
                if models.get(c) is None:
                    continue
                if kinds.get(c) == "tree":
                    v = models[c].get(canon("w%d-%d" % (w, i)))
                    if v != {"w": w, "i": i}:
                        err("worker %d #%d: key w%d-%d in %s is %s" % (w, i, w, i, c, canon(v)))
                else:
                    n = sum(1 for x in models[c] if x == {"w": w, "i": i})
                    if n != 1:
                        err("worker %d #%d: its entry is %d times in %s" % (w, i, n, c))

    print("# serial.py: %d collections, %d log entries, %d transactions counted (%s)" %
          (len(names), figures["entries"], len(nodes), ", ".join("%s %d" % (c, counts[c]) for c in names)))
    heads = ", ".join("%s %d" % (k, v) for k, v in sorted(figures.items()) if k.startswith("pending heads"))
    print("# serial.py: %d over several collections, %d pending revisions, %d reverts, %d abort records, "
          "%d acknowledged checked, %d ordered pairs compared%s" %
          (figures["transactions over several collections"], figures["pending revisions"], figures["reverts"],
           figures["abort records"], acked, pairs, "; " + heads if heads else ""))
    if figures["collections with pruned actions (not replayed)"]:
        print("# serial.py: %d collections with pruned actions were not replayed" %
              figures["collections with pruned actions (not replayed)"])
    for e in errors[:30]:
        print("# VIOLATION: " + e)
    if errors:
        print("# serial.py: %d violations" % len(errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
