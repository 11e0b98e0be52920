#!/bin/sh
# bench/small.sh - small writes into a big collection, diaries end to end,
# and memory, each beside the sqlite3 command-line shell on the same data
# (durable: PRAGMA synchronous=FULL, the default rollback journal; a process
# per transaction, as a shell script or a cron job runs them).
#
#   N        transactions of 100 new records into the loaded tree (1000)
#   LOAD     records loaded first (100000)
#   BIG=1    also the bulk load of 1,000,000 records (takes a while)
#
# Usage: sh bench/small.sh [BINDIR]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/bin}
N=${N:-1000}
LOAD=${LOAD:-100000}
command -v sqlite3 >/dev/null || { echo "small.sh: sqlite3 is not installed" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/opt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 "$top/bench/gen.py" records $((LOAD + N * 100)) > "$work/recs"
exec python3 - "$bin" "$work" "$LOAD" "$N" "${BIG:-0}" "$top" <<'PY'
import json, os, subprocess, sys, time

bin, work, LOAD, N, BIG, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
env = dict(os.environ, OPT_STORE=work + "/store")
tree = os.path.join(bin, "opt-tree")
diary = os.path.join(bin, "opt-diary")
db = work + "/db.sqlite"
subprocess.run([os.path.join(bin, "opt-block"), "init", env["OPT_STORE"]], env=env, stdout=subprocess.DEVNULL, check=True)

TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
def run(cmd, data=None, out=subprocess.DEVNULL):
    """Run one process; return (seconds, peak RSS in KB).  The peak is taken
    by /usr/bin/time when there is one (a child forked from this interpreter
    inherits its high-water mark), else from wait4."""
    if TIME:
        cmd = [TIME, "-f", "%M", "-o", work + "/rss"] + cmd
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL, stdout=out)
    if data is not None:
        p.stdin.write(data); p.stdin.close()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit("small.sh: %s exited %d" % (cmd[0], p.returncode))
    if TIME:
        return dt, int(open(work + "/rss").read().split()[-1])
    return dt, ru.ru_maxrss

def sq(s):
    return "'" + s.replace("'", "''") + "'"

def sql_inserts(lines, table="t"):
    out = []
    for l in lines:
        r = json.loads(l)
        out.append("INSERT OR REPLACE INTO %s VALUES(%s,%s);" % (table, sq(r["key"]), sq(json.dumps(r["value"], separators=(",", ":")))))
    return "\n".join(out)

PRE = "PRAGMA synchronous=FULL;\n"
def sqlite(script):
    return run(["sqlite3", db], (PRE + script + "\n").encode())

def row(name, o, s, unit="s"):
    if unit == "s":
        print("%-52s %10.3f s %10.3f s %7.2f x" % (name, o, s, o / s if s else 0))
    elif unit == "ms":
        print("%-52s %9.1f ms %9.1f ms %7.2f x" % (name, o, s, o / s if s else 0))
    elif unit == "MB":
        print("%-52s %9.1f MB %9.1f MB" % (name, o / 1024, s / 1024))
    else:
        print("%-52s %10.0f /s %10.0f /s %7.2f x" % (name, o, s, s / o if o else 0))
    sys.stdout.flush()

print("%-52s %12s %12s %9s" % ("figure", "opt", "sqlite3", "opt/sqlite"))
lines = open(work + "/recs").read().splitlines(True)
load, new = lines[:LOAD], lines[LOAD:]

# bulk load of LOAD records, one transaction
o, orss = run([tree, "put", "big"], "".join(load).encode())
s, srss = sqlite("CREATE TABLE t(key TEXT PRIMARY KEY, value TEXT);\nBEGIN;\n" + sql_inserts(load) + "\nCOMMIT;")
row("load %d records, one transaction" % LOAD, o, s)

# N transactions of 100 new records, a process each
ot, st, orss, srss = [], [], [], []
for i in range(N):
    chunk = new[i * 100:(i + 1) * 100]
    d, m = run([tree, "put", "big"], "".join(chunk).encode()); ot.append(d); orss.append(m)
    d, m = sqlite("BEGIN;\n" + sql_inserts(chunk) + "\nCOMMIT;"); st.append(d); srss.append(m)
med = lambda a: sorted(a)[len(a) // 2]
row("%d puts of 100 records, a process each: total" % N, sum(ot), sum(st))
row("  median", med(ot) * 1000, med(st) * 1000, "ms")
row("  slowest", max(ot) * 1000, max(st) * 1000, "ms")
print("%-52s %10.1f x %10.1f x" % ("  slowest / median", max(ot) / med(ot), max(st) / med(st)))
row("  peak RSS (largest of the %d)" % N, max(orss), max(srss), "MB")

# 100 processes each appending 1,000 events to a diary, then a full read
ev = [json.dumps({"event": "click", "n": i, "page": "/p/%d" % (i % 97)}, separators=(",", ":")) + "\n" for i in range(100000)]
sqlite("CREATE TABLE events(id INTEGER PRIMARY KEY, body TEXT);")
o = s = 0.0
for i in range(100):
    chunk = ev[i * 1000:(i + 1) * 1000]
    o += run([diary, "append", "events"], "".join(chunk).encode())[0]
    s += sqlite("BEGIN;\n" + "\n".join("INSERT INTO events(body) VALUES(%s);" % sq(e.strip()) for e in chunk) + "\nCOMMIT;")[0]
row("diary: 100 processes appending 1,000 events each", o, s)
o, orss = run([diary, "read", "events"])
s, srss = run(["sqlite3", db, "SELECT body FROM events ORDER BY id;"])
row("diary: read all 100,000 events", o, s)
row("  peak RSS", orss, srss, "MB")

# a stream of 20,000 single-entry transactions through one process (sqlite3
# commits each with its own syncs: 2,000 of them give its rate)
st = [json.dumps({"key": "s%06d" % i, "value": {"n": i}}) + "\n" for i in range(20000)]
o = run([tree, "put", "stream", "--each"], "".join(st).encode())[0]
s = sqlite("CREATE TABLE s(key TEXT PRIMARY KEY, value TEXT);\n" +
           "\n".join("BEGIN; INSERT OR REPLACE INTO s VALUES('s%06d','{\"n\":%d}'); COMMIT;" % (i, i) for i in range(2000)))[0]
row("20,000 single-entry transactions streamed (--each)", 20000 / o, 2000 / s, "rate")

if BIG:
    subprocess.run([sys.executable, top + "/bench/gen.py", "records", "1000000"],
                   stdout=open(work + "/m", "w"), check=True)
    m = open(work + "/m").read()
    o, orss = run([tree, "put", "million"], m.encode())
    os.unlink(db)
    s, srss = sqlite("CREATE TABLE t(key TEXT PRIMARY KEY, value TEXT);\nBEGIN;\n" + sql_inserts(m.splitlines()) + "\nCOMMIT;")
    row("bulk load of 1,000,000 records", o, s)
    row("  peak RSS", orss, srss, "MB")
PY
