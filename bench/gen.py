#!/usr/bin/env python3
"""bench/gen.py - generate benchmark input.

  gen.py blocks N [SIZE]       N blocks of about SIZE bytes (default 200), one a line
  gen.py txns N K [SIZE]       N documents, each an array of K blocks (one transaction each)
  gen.py records N [SEED]      N tree records {"key": "user%08d", "value": {~80 bytes}} in random key order
"""
import json, random, sys

def block(i, size):
    pad = max(0, size - 60)
    return {"header": {"type": "rec"}, "n": i, "data": ("%08x" % (i * 2654435761 % 2**32)) * (pad // 8 + 1)}

def main():
    kind = sys.argv[1]
    out = sys.stdout
    if kind == "blocks":
        n = int(sys.argv[2]); size = int(sys.argv[3]) if len(sys.argv) > 3 else 200
        for i in range(n):
            b = block(i, size); b["data"] = b["data"][: max(0, size - 60)]
            out.write(json.dumps(b, separators=(",", ":")) + "\n")
    elif kind == "txns":
        n = int(sys.argv[2]); k = int(sys.argv[3]); size = int(sys.argv[4]) if len(sys.argv) > 4 else 200
        for t in range(n):
            docs = []
            for j in range(k):
                b = block(t * k + j, size); b["data"] = b["data"][: max(0, size - 60)]
                docs.append(b)
            out.write(json.dumps(docs, separators=(",", ":")) + "\n")
    elif kind == "records":
        n = int(sys.argv[2]); seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        rnd = random.Random(seed)
        keys = list(range(n)); rnd.shuffle(keys)
        for k in keys:
            v = {"name": "User %d" % k, "email": "user%d@example.org" % k, "age": k % 90, "tags": ["a", "b"]}
            out.write(json.dumps({"key": "user%08d" % k, "value": v}, separators=(",", ":")) + "\n")
    else:
        sys.exit(__doc__)

main()
