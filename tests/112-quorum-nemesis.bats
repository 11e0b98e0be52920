#!/usr/bin/env bats
# Fault injection on loopback (tests/tools/nemesis.py): git daemons serve
# bare repositories as the peers of a quorum cluster, each reached through
# a TCP relay; writer stores append, put and commit two-collection
# transactions, each write followed by a push, while a nemesis kills and
# restarts a minority of the daemons, stops one, and cuts or stalls the
# connections to one mid-push. Every operation is recorded (invoked, ok,
# failed, unknown); after healing, a store reading each peer alone must
# find every acknowledged write exactly once, one history per collection
# on every peer, acknowledged appends in real-time order, and no
# transaction half applied. The counts are printed as TAP comments. A
# short run here; `make soak` runs long ones with 3 and 5 peers.

load test_helper

nemesis() {
	command -v python3 >/dev/null || skip "python3 is not installed"
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available"
	run python3 "$TOP/tests/tools/nemesis.py" --bin "$OPT_BIN" --history "$TMP/history.jsonl" "$@" "$TMP/run"
	printf '%s\n' "$output" | grep '^#' >&3 || true
	[ "$status" -eq 0 ] || { printf '%s\n' "$output" | tail -n 40; false; }
}

# Two-collection transactions (--txn) wait for multi-collection
# transactions across clusters (docs/quorum.md, Status): a writer whose
# transaction must be replayed onto another writer's value is refused
# (exit 3) and never settles, so the runs below write appends and puts.

# The run's length: shorter under the sanitizers (each program runs
# several times slower there); the checker is the same.
nemesis_seconds() {
	case "$OPT_BIN" in
	*build-san*) echo $(($1 / 2)) ;;
	*) echo "$1" ;;
	esac
}

@test "a control run with no faults: every write acknowledged, on every peer once" {
	nemesis --peers 3 --writers 2 --seconds 6 --no-faults
	assert_output --partial "# violations: 0"
	refute_output --partial "acknowledged 0,"
	refute_output --regexp "unknown [1-9]"
}

@test "three peers, four writers, a minority killed, stopped, cut or stalled: nothing acknowledged lost or doubled" {
	nemesis --peers 3 --writers 4 --seconds "$(nemesis_seconds 20)"
	assert_output --partial "# violations: 0"
	refute_output --partial "acknowledged 0,"
	refute_output --regexp "faults 0:"
}

@test "two-collection transactions among the writes, with faults: none half applied, nothing lost or doubled" {
	skip "multi-collection transactions across clusters are not built yet (docs/quorum.md, Status)"
	nemesis --peers 3 --writers 4 --seconds "$(nemesis_seconds 20)" --txn
	assert_output --partial "# violations: 0"
	refute_output --partial "acknowledged 0,"
}

@test "the checker finds a write doubled on a peer (the checker can fail)" {
	command -v python3 >/dev/null || skip "python3 is not installed"
	run python3 - "$TOP/tests/tools" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import nemesis
ops = [{"f": "append", "value": "w1-1", "type": "ok", "invoke": 0.0, "ack": 1.0},
       {"f": "append", "value": "w2-1", "type": "ok", "invoke": 2.0, "ack": 3.0},
       {"f": "txn", "value": "w1-2", "type": "unknown", "invoke": 4.0}]
good = {"events": ["w1-1", "w2-1"], "journal": [], "users": [], "ledger": []}
cases = {
    "doubled": {"events": ["w1-1", "w2-1", "w1-1"], "journal": [], "users": [], "ledger": []},
    "lost": {"events": ["w2-1"], "journal": [], "users": [], "ledger": []},
    "order": {"events": ["w2-1", "w1-1"], "journal": [], "users": [], "ledger": []},
    "half": {"events": ["w1-1", "w2-1"], "journal": [], "users": [], "ledger": ["w1-2"]},
}
v = []
nemesis.check(ops, {"p1": good, "p2": good}, v)
assert v == [], v
for name, bad in cases.items():
    v = []
    nemesis.check(ops, {"p1": good, "p2": bad}, v)
    assert v, name
    print(name, v[0])
EOF
	assert_success
	assert_line --partial "doubled p2: events holds 1 entries twice"
	assert_line --partial "lost p2: acknowledged append w1-1 missing"
	assert_line --partial "order p2: w1-1"
	assert_line --partial "half p2: transaction w1-2 half applied"
}
