#!/usr/bin/env bats
# --each streams print a record only for a transaction that is durable.
# Every --each program (opt-tree put, opt-block put, opt-diary append,
# opt-log commit) runs against a store that starts failing in the middle of
# the stream -- a held lock, a read-only file system, a full disk -- and
# against a bad document on a later line.  Each time the records printed
# are exactly the transactions in the store afterwards (one each, same
# revisions), the exit status is the documented one (6 busy, 7 I/O or out
# of space, 2 bad input), and nothing committed before is lost.
#
# The stream reads from a FIFO that the test feeds in batches, so that the
# failure comes between two group commits.  The read-only and full-disk
# cases put the store on a small tmpfs, which needs root (they are skipped,
# saying why, when mount is not permitted).

load test_helper

DISK=
PID=
FEED=

setup() {
	TMP="$(mktemp -d "${BATS_TMPDIR:-/tmp}/opt-test.XXXXXX")"
	export HOME="$TMP/home"
	mkdir -p "$HOME"
	export OPT_STORE="$TMP/store"
	cd "$TMP"
	opt-block init "$OPT_STORE" >/dev/null
}

teardown() {
	cd /
	[ -n "$FEED" ] && exec {FEED}>&- || true
	if [ -n "$PID" ]; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	if [ -n "$DISK" ]; then
		umount "$DISK" || umount -l "$DISK" || true
	fi
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# Move the store to a fresh 2 MB tmpfs (skip when mounting is not allowed).
use_tmpfs() {
	local why
	mkdir -p "$TMP/disk"
	if ! why=$(mount -t tmpfs -o size=2m tmpfs "$TMP/disk" 2>&1); then
		skip "cannot mount a 2 MB tmpfs (needs root): ${why:-mount failed}"
	fi
	DISK="$TMP/disk"
	export OPT_STORE="$DISK/store"
	opt-block init "$OPT_STORE" >/dev/null
}

# ---- the four programs: P is tree, block, diary or log ----

# The --each command of P, reading stdin.
each() {
	case $P in
	tree) opt-tree put t --each ;;
	block) opt-block put -c b --each ;;
	diary) opt-diary append d --each ;;
	log) opt-log commit --each ;;
	esac
}

# The collection P writes.
coll() {
	case $P in
	tree) echo t ;;
	block) echo b ;;
	diary) echo d ;;
	log) echo l ;;
	esac
}

# The revision in one of P's records (jq).
rev_of() {
	case $P in
	log) echo '.collections.l' ;;
	*) echo '.rev' ;;
	esac
}

# Documents $1..$2 of P's stream ($3: a payload string, default 0).
docs() {
	local i pad=${3:-0}
	for ((i = $1; i <= $2; i++)); do
		case $P in
		tree) printf '{"key":"k%d","value":{"i":%d,"pad":%s}}\n' "$i" "$i" "$pad" ;;
		block) printf '{"i":%d,"pad":%s}\n' "$i" "$pad" ;;
		diary) printf '{"i":%d,"pad":%s}\n' "$i" "$pad" ;;
		log) printf '{"collections":{"l":[{"type":"put","key":"k%d","value":{"i":%d,"pad":%s}}]}}\n' "$i" "$i" "$pad" ;;
		esac
	done
}

# A document P refuses although it is valid JSON.
bad_doc() {
	case $P in
	tree) echo '{"key":"nokey-value"}' ;;
	block) echo '[{"i":1},5]' ;;
	diary) printf '"%s"\n' "$(head -c 1100000 /dev/zero | tr '\0' a)" ;;
	log) echo '{"collections":5}' ;;
	esac
}

# The number of documents committed, read from the data itself.
data_count() {
	case $P in
	tree) opt-tree count t ;;
	block) opt-block ls -c b -t block | wc -l ;;
	diary) opt-diary count d ;;
	log) opt-tree count l ;;
	esac
}

# The revisions of P's collection after $1, one a line.
revs_after() {
	opt-log show --from "$(($1 + 1))" "$(coll)" | jq -r .rev
}

# A JSON string of about $1 bytes that does not compress.
bulk() { printf '"%s"' "$(head -c "$(($1 * 3 / 4))" /dev/urandom | base64 -w0)"; }

# ---- the stream ----

# Start P's --each command reading the FIFO $TMP/in; output in $TMP/out,
# messages in $TMP/err.
start_stream() {
	rm -f "$TMP/in" "$TMP/out" "$TMP/err"
	mkfifo "$TMP/in"
	each <"$TMP/in" >"$TMP/out" 2>"$TMP/err" &
	PID=$!
	exec {FEED}>"$TMP/in"
}

# Write documents to the stream (in a subshell: a writer whose reader has
# gone gets SIGPIPE, which must not end the test).
feed() {
	(cat >&"$FEED") 2>/dev/null || true
}

# Wait until the stream printed $1 records (or ended).
wait_records() {
	local i
	for ((i = 0; i < 400; i++)); do
		[ "$(wc -l <"$TMP/out")" -ge "$1" ] && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.05
	done
	[ "$(wc -l <"$TMP/out")" -ge "$1" ] ||
		fail "waited for $1 records: $(wc -l <"$TMP/out") ($(cat "$TMP/err"))"
}

# Close the stream's input and wait for it; STATUS gets its exit status.
end_stream() {
	exec {FEED}>&-
	FEED=
	STATUS=0
	wait "$PID" || STATUS=$?
	PID=
}

# The records printed are exactly the transactions durable after revision
# $1: one each, in order; and $2 documents in all are in the data.
check_durable() {
	local printed durable
	printed=$(jq -r "$(rev_of)" "$TMP/out" | tr '\n' ' ')
	durable=$(revs_after "$1" | tr '\n' ' ')
	[ "$printed" = "$durable" ] ||
		fail "records printed for revisions [$printed]; durable after revision $1: [$durable]"
	[ "$(data_count)" -eq "$2" ] || fail "$(data_count) documents in the store, not $2"
	run opt-log verify "$(coll)"
	assert_success
	fsck_ok
}

# The one message on stderr, from the program, containing $1.
check_message() {
	local prog=opt-$P
	[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "not one line of message: $(cat "$TMP/err")"
	[[ "$(cat "$TMP/err")" == "$prog: "*"$1"* ]] || fail "unclear message: $(cat "$TMP/err")"
}

# Seed the collection with document 1, then stream documents 2-4, make the
# store fail with $1 (a function), stream 5-7: the stream ends with exit
# status $2 having printed records for 2-4 and nothing else; after $3 (a
# function: the store works again) exactly documents 1-4 are there, and a
# new stream commits.
fail_midstream() {
	docs 1 1 | each >/dev/null
	start_stream
	docs 2 4 | feed
	wait_records 3
	"$1"
	docs 5 7 | feed
	end_stream
	[ "$STATUS" -eq "$2" ] || fail "exit $STATUS, not $2: $(cat "$TMP/err")"
	"$3"
	check_durable 1 4
	[ "$(wc -l <"$TMP/out")" -eq 3 ] || fail "$(cat "$TMP/out")"
	run each < <(docs 5 5)
	assert_success
	[ "$(data_count)" -eq 5 ]
}

# ---- a held lock: exit 6 ----

lock() { cp "$OPT_STORE/refs/opt/collections/$(coll)" "$OPT_STORE/refs/opt/collections/$(coll).lock"; }
unlock() { rm "$OPT_STORE/refs/opt/collections/$(coll).lock"; }

each_busy() {
	# below the age at which a lock counts as stale
	export OPT_BUSY_TIMEOUT=500 OPT_STALE_LOCK_MS=60000
	fail_midstream lock 6 unlock
	check_message "is busy (its ref is locked: "
}

@test "a held lock: opt-tree put --each prints records only for what is committed (exit 6)" {
	P=tree each_busy
}

@test "a held lock: opt-block put --each prints records only for what is committed (exit 6)" {
	P=block each_busy
}

@test "a held lock: opt-diary append --each prints records only for what is committed (exit 6)" {
	P=diary each_busy
}

@test "a held lock: opt-log commit --each prints records only for what is committed (exit 6)" {
	P=log each_busy
}

# ---- a read-only store: exit 7 ----

read_only() {
	mount -o remount,ro "$DISK" || skip "cannot remount the tmpfs read-only"
}
read_write() { mount -o remount,rw "$DISK"; }

each_read_only() {
	use_tmpfs
	fail_midstream read_only 7 read_write
	check_message "Read-only file system"
}

@test "a read-only store: opt-tree put --each prints records only for what is committed (exit 7)" {
	P=tree each_read_only
}

@test "a read-only store: opt-block put --each prints records only for what is committed (exit 7)" {
	P=block each_read_only
}

@test "a read-only store: opt-diary append --each prints records only for what is committed (exit 7)" {
	P=diary each_read_only
}

@test "a read-only store: opt-log commit --each prints records only for what is committed (exit 7)" {
	P=log each_read_only
}

# ---- a full disk: exit 7 ----

fill_disk() {
	dd if=/dev/zero of="$DISK/scratch" bs=4k 2>/dev/null || true
	[ "$(df -k --output=avail "$DISK" | tail -n 1 | tr -d ' ')" -eq 0 ]
}
free_disk() { rm -f "$DISK/scratch"; }

each_full() {
	use_tmpfs
	fail_midstream fill_disk 7 free_disk
	check_message "No space left on device"
}

@test "a full disk: opt-tree put --each prints records only for what is committed (exit 7)" {
	P=tree each_full
}

@test "a full disk: opt-block put --each prints records only for what is committed (exit 7)" {
	P=block each_full
}

@test "a full disk: opt-diary append --each prints records only for what is committed (exit 7)" {
	P=diary each_full
}

@test "a full disk: opt-log commit --each prints records only for what is committed (exit 7)" {
	P=log each_full
}

# The stream itself fills the disk: batches of 4 documents of 16 KB until
# one does not fit.
each_fills_disk() {
	local n=0
	use_tmpfs
	docs 1 1 | each >/dev/null
	start_stream
	while kill -0 "$PID" 2>/dev/null && [ "$n" -lt 400 ]; do
		for ((i = 0; i < 4; i++)); do
			docs $((n + 2 + i)) $((n + 2 + i)) "$(bulk 16000)"
		done | feed
		n=$((n + 4))
		wait_records "$n" 2>/dev/null || break
	done
	end_stream
	[ "$STATUS" -eq 7 ] || fail "exit $STATUS after $n documents: $(cat "$TMP/err")"
	check_message "No space left on device"
	n=$(wc -l <"$TMP/out")
	echo "# $n of the documents fit" >&3
	[ "$n" -ge 4 ] || fail "only $n records"
	check_durable 1 $((n + 1))
}

@test "a disk that a stream fills: opt-tree put --each prints records only for what is committed" {
	P=tree each_fills_disk
}

@test "a disk that a stream fills: opt-block put --each prints records only for what is committed" {
	P=block each_fills_disk
}

@test "a disk that a stream fills: opt-diary append --each prints records only for what is committed" {
	P=diary each_fills_disk
}

@test "a disk that a stream fills: opt-log commit --each prints records only for what is committed" {
	P=log each_fills_disk
}

# ---- a bad document on a later line: exit 2, the ones before printed ----

each_bad_later() {
	docs 1 1 | each >/dev/null
	# bad JSON on line 4
	{ docs 2 4; echo '{"key": bad'; docs 5 5; } >"$TMP/input"
	run --separate-stderr each <"$TMP/input"
	echo "$output" >"$TMP/out"
	echo "$stderr" >"$TMP/err"
	[ "$status" -eq 2 ] || fail "exit $status: $stderr"
	check_message "line 4"
	[ "${#lines[@]}" -eq 3 ] || fail "$output"
	check_durable 1 4
	# a refused document on line 4
	{ docs 5 7; bad_doc; docs 8 8; } >"$TMP/input"
	run --separate-stderr each <"$TMP/input"
	echo "$output" >"$TMP/out"
	echo "$stderr" >"$TMP/err"
	[ "$status" -eq 2 ] || fail "exit $status: $stderr"
	check_message "line 4"
	[ "${#lines[@]}" -eq 3 ] || fail "$output"
	check_durable 4 7
}

@test "bad input on a later line: opt-tree put --each prints the records committed before it" {
	P=tree each_bad_later
}

@test "bad input on a later line: opt-block put --each prints the records committed before it" {
	P=block each_bad_later
}

@test "bad input on a later line: opt-diary append --each prints the records committed before it" {
	P=diary each_bad_later
}

@test "bad input on a later line: opt-log commit --each prints the records committed before it" {
	P=log each_bad_later
}
