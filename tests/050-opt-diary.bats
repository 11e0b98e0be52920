#!/usr/bin/env bats
# opt-diary: append-only logs of JSON entries - append (one transaction per
# invocation, or --each), read (--reverse, --limit, --rev, --follow),
# count, ls; concurrent appenders; bad input changes nothing.

load test_helper

# revisions of collection $1
revs() {
	git --git-dir="$OPT_STORE" rev-list --count "refs/opt/collections/$1"
}

# wait_lines FILE N: wait (20 s at most) until FILE has at least N lines
wait_lines() {
	local i
	for ((i = 0; i < 400; i++)); do
		[ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
		sleep 0.05
	done
	echo "waited in vain for $2 lines in $1: $(wc -l < "$1" 2>/dev/null)" >&2
	return 1
}

# gen PREFIX N: N entries {"w":PREFIX,"i":0..N-1}, one a line, written one
# at a time (a stream, not one block of input)
gen() {
	local i
	for ((i = 0; i < $2; i++)); do
		printf '{"w":"%s","i":%d}\n' "$1" "$i"
	done
}

# --- append ---

@test "append: operands are the entries, all in one transaction" {
	run --separate-stderr opt-diary append d '{"a":1}' '"two"' 3 '[4,{"b":null}]'
	assert_success
	assert_output '{"collection":"d","rev":1,"appended":4,"count":4}'
	[ -z "$stderr" ]
	assert_equal "$(revs d)" 1
	run opt-diary read d
	assert_success
	assert_output $'{"a":1}\n"two"\n3\n[4,{"b":null}]'
	run opt-diary append d true
	assert_output '{"collection":"d","rev":2,"appended":1,"count":5}'
	assert_equal "$(revs d)" 2
	fsck_ok
}

@test "append: entries from stdin, JSON Lines or any white-space separated JSON, one transaction" {
	printf '{"n":1}\n{"n":2}  {"n":3}\n\n[\n 4\n]\n"five" 6\n' > "$TMP/in"
	run opt-diary append d < "$TMP/in"
	assert_success
	assert_output '{"collection":"d","rev":1,"appended":6,"count":6}'
	assert_equal "$(revs d)" 1
	run opt-diary read d
	assert_output $'{"n":1}\n{"n":2}\n{"n":3}\n[4]\n"five"\n6'
	# "-" reads stdin at its place among the operands
	run opt-diary append d 7 - 9 <<<'8'
	assert_output '{"collection":"d","rev":2,"appended":3,"count":9}'
	run opt-diary read d --reverse --limit 3
	assert_output $'9\n8\n7'
	# after --, an operand that looks like an option is an entry
	run opt-diary append d -- -10
	assert_success
	run opt-diary read d -r -n 1
	assert_output -- '-10'
}

@test "append: entries are printed as canonical JSON (keys sorted, shortest numbers)" {
	opt-diary append d '{"b":0.1,"a":[1.5e300,-0.0],"c":"\u00e9"}' >/dev/null
	run opt-diary read d
	assert_output '{"a":[1.5e+300,-0.0],"b":0.1,"c":"é"}'
	run opt-diary read d --pretty
	assert_success
	assert_line --index 0 '{'
}

@test "append: the log records one append action per entry" {
	opt-diary append d '{"x":1}' '{"x":2}' >/dev/null
	opt-block ls -c d --type LGD | jq .id | opt-block get -c d - > "$TMP/log"
	run jq -c '.entries[] | select(.rev == 1) | .actions' "$TMP/log"
	assert_output '[{"entry":{"x":1},"type":"append"},{"entry":{"x":2},"type":"append"}]'
}

@test "append with no entries creates an empty diary, or appends nothing" {
	run opt-diary append d < /dev/null
	assert_success
	assert_output '{"collection":"d","rev":1,"appended":0,"count":0}'
	run opt-diary read d
	assert_success
	assert_output ''
	run opt-diary count d
	assert_output 0
	opt-diary append d 1 >/dev/null
	run opt-diary append d < /dev/null
	assert_output '{"collection":"d","rev":2,"appended":0,"count":1}'
	assert_equal "$(revs d)" 2
}

@test "append --each: one transaction and one line per entry" {
	run --separate-stderr opt-diary append d --each <<<'{"a":1} {"a":2} {"a":3}'
	assert_success
	assert_output $'{"collection":"d","rev":1,"appended":1,"count":1}\n{"collection":"d","rev":2,"appended":1,"count":2}\n{"collection":"d","rev":3,"appended":1,"count":3}'
	[ -z "$stderr" ]
	assert_equal "$(revs d)" 3
	# operands too
	run opt-diary append d -e 4 5
	assert_output $'{"collection":"d","rev":4,"appended":1,"count":4}\n{"collection":"d","rev":5,"appended":1,"count":5}'
	# a slow stream: each entry is committed (and acknowledged) as it comes
	gen s 5 | opt-diary append d --each > "$TMP/ack"
	[ "$(wc -l < "$TMP/ack")" -eq 5 ]
	run opt-diary count d
	assert_output 10
	run opt-diary read d --rev 7 --reverse --limit 1
	assert_output '{"i":1,"w":"s"}'
	fsck_ok
}

@test "append --pretty prints indented records" {
	run opt-diary append d 1 --pretty
	assert_success
	assert_output $'{\n  "collection": "d",\n  "rev": 1,\n  "appended": 1,\n  "count": 1\n}'
}

@test "append without a store creates ./.opt and says so; -q keeps quiet" {
	unset OPT_STORE
	mkdir "$TMP/w" && cd "$TMP/w"
	run --separate-stderr opt-diary append d 1
	assert_success
	assert_equal "$stderr" "opt-diary: created store '.opt'"
	[ -d "$TMP/w/.opt" ]
	mkdir "$TMP/q" && cd "$TMP/q"
	run --separate-stderr opt-diary -q append d 1
	assert_success
	[ -z "$stderr" ]
	# a reading command does not create one
	mkdir "$TMP/r" && cd "$TMP/r"
	run --separate-stderr opt-diary count d
	assert_failure 7
	[ ! -e "$TMP/r/.opt" ]
}

# --- read ---

@test "read: oldest first; --reverse, --limit and their short forms" {
	opt-diary append d 1 2 3 4 5 >/dev/null
	run opt-diary read d
	assert_output $'1\n2\n3\n4\n5'
	run opt-diary read d --reverse
	assert_output $'5\n4\n3\n2\n1'
	run opt-diary read d --limit 2
	assert_output $'1\n2'
	run opt-diary read d --reverse --limit 2
	assert_output $'5\n4'
	run opt-diary read d -r -n2
	assert_output $'5\n4'
	run opt-diary read --limit=3 d
	assert_output $'1\n2\n3'
	run opt-diary read d --limit 0
	assert_success
	assert_output ''
	run opt-diary read d --limit 99
	assert_output $'1\n2\n3\n4\n5'
}

@test "read and count --rev N: the diary as it was at revision N" {
	opt-diary append d '"a"' >/dev/null
	opt-diary append d '"b"' '"c"' >/dev/null
	opt-diary append d '"d"' >/dev/null
	run opt-diary read d --rev 1
	assert_output '"a"'
	run opt-diary read d --rev 2
	assert_output $'"a"\n"b"\n"c"'
	run opt-diary read d --rev 2 --reverse --limit 1
	assert_output '"c"'
	run opt-diary count d --rev 2
	assert_output 3
	run opt-diary count d
	assert_output 4
	run --separate-stderr opt-diary read d --rev 9
	assert_failure 1
	assert_equal "$stderr" "opt-diary: collection 'd' has no revision 9 (latest is 3)"
	run --separate-stderr opt-diary count d --rev 0
	assert_failure 2
}

@test "more than 32 entries span several blocks; forward and reverse across them" {
	seq 1 100 | opt-diary append d >/dev/null
	assert_equal "$(revs d)" 1
	# 100 entries in blocks of 32: 4 data blocks
	run bash -c "opt-block ls -c d --type DID | wc -l"
	assert_output 4
	run opt-diary read d
	assert_output "$(seq 1 100)"
	run opt-diary read d --reverse
	assert_output "$(seq 100 -1 1)"
	run opt-diary read d --reverse --limit 40
	assert_output "$(seq 100 -1 61)"
	run opt-diary read d --limit 33
	assert_output "$(seq 1 33)"
	# appends that fill a block and go on in the next one
	seq 101 130 | opt-diary append d >/dev/null
	seq 131 131 | opt-diary append d >/dev/null
	seq 132 200 | opt-diary append d --each >/dev/null
	run opt-diary read d
	assert_output "$(seq 1 200)"
	run opt-diary read d -r
	assert_output "$(seq 200 -1 1)"
	run opt-diary count d
	assert_output 200
	run opt-diary read d --rev 2 --reverse --limit 2
	assert_output $'130\n129'
	fsck_ok
}

@test "read --follow prints what is there, then new entries as they are appended" {
	opt-diary append d '{"n":1}' '{"n":2}' >/dev/null
	opt-diary read d --follow > "$TMP/out" 2> "$TMP/err" 3>&- &
	pid=$!
	wait_lines "$TMP/out" 2
	# another process appends: one transaction of two entries, then a stream
	opt-diary append d '{"n":3}' '{"n":4}' >/dev/null
	wait_lines "$TMP/out" 4
	gen s 3 | opt-diary append d --each >/dev/null
	wait_lines "$TMP/out" 7
	# past the end of the first block (32 entries)
	seq 8 40 | opt-diary append d >/dev/null
	wait_lines "$TMP/out" 40
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ]
	[ ! -s "$TMP/err" ] || { cat "$TMP/err"; false; }
	run cat "$TMP/out"
	assert_output "$(printf '{"n":%d}\n' 1 2 3 4; printf '{"i":%d,"w":"s"}\n' 0 1 2; seq 8 40)"
}

@test "read --follow on an empty diary, and --follow --limit N ends after N entries" {
	opt-diary append d < /dev/null >/dev/null
	opt-diary read d --follow --limit 3 > "$TMP/out" 2> "$TMP/err" 3>&- &
	pid=$!
	sleep 0.2
	opt-diary append d 1 >/dev/null
	opt-diary append d 2 3 4 >/dev/null
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ]
	[ ! -s "$TMP/err" ]
	run cat "$TMP/out"
	assert_output $'1\n2\n3'
}

@test "read --follow ends quietly when the reader of its output goes away" {
	seq 1 5 | opt-diary append d >/dev/null
	# the pipe closes while it waits
	run --separate-stderr timeout 20 bash -c 'set -o pipefail; opt-diary read d --follow | head -n 2'
	assert_success
	assert_output $'1\n2'
	[ -z "$stderr" ]
	# the pipe closes while it writes (more output than a pipe holds)
	seq 1 20000 | opt-diary append d >/dev/null
	run --separate-stderr timeout 20 bash -c 'set -o pipefail; opt-diary read d --follow | head -n 1'
	assert_success
	assert_output 1
	[ -z "$stderr" ]
	# also with SIGPIPE ignored
	run --separate-stderr timeout 20 bash -c 'trap "" PIPE; set -o pipefail; opt-diary read d --follow | head -n 1'
	assert_success
	[ -z "$stderr" ]
}

@test "read --follow ends on SIGINT and SIGHUP too" {
	opt-diary append d 1 >/dev/null
	for sig in HUP INT; do
		cmd=(opt-diary read d --follow)
		if [ "$sig" = INT ]; then
			# a background job starts with SIGINT ignored (and the program
			# leaves it so): give it the default disposition
			env --default-signal=INT true 2>/dev/null || continue
			cmd=(env --default-signal=INT opt-diary read d --follow)
		fi
		"${cmd[@]}" > "$TMP/out.$sig" 3>&- &
		pid=$!
		wait_lines "$TMP/out.$sig" 1
		kill -s "$sig" "$pid"
		rc=0
		wait "$pid" || rc=$?
		[ "$rc" -eq 0 ] || fail "SIG$sig: exit $rc"
	done
}

# --- count, ls ---

@test "count prints a bare number" {
	opt-diary append d 1 2 3 >/dev/null
	run --separate-stderr opt-diary count d
	assert_success
	assert_output 3
	run opt-diary count d --pretty
	assert_output 3
}

@test "ls lists the diaries only, with their count and latest revision" {
	run opt-diary ls
	assert_success
	assert_output ''
	opt-diary append zeta 1 >/dev/null
	opt-diary append alpha 1 2 >/dev/null
	opt-diary append alpha 3 >/dev/null
	opt-diary append logs/app '{"msg":"hi"}' >/dev/null
	echo '{"x":1}' | opt-block put -c blocks >/dev/null
	run opt-diary ls
	assert_output $'{"collection":"alpha","count":3,"rev":2}\n{"collection":"logs/app","count":1,"rev":1}\n{"collection":"zeta","count":1,"rev":1}'
	run --separate-stderr opt-diary ls extra
	assert_failure 2
}

# --- concurrency ---

@test "4 processes x 50 appends with --each: 200 entries, each exactly once, in commit order" {
	for w in 1 2 3 4; do
		gen "w$w" 50 | opt-diary append race --each > "$TMP/ack.$w" 2> "$TMP/err.$w" 3>&- &
	done
	wait
	for w in 1 2 3 4; do
		[ ! -s "$TMP/err.$w" ] || { cat "$TMP/err.$w"; false; }
		[ "$(wc -l < "$TMP/ack.$w")" -eq 50 ]
	done
	assert_equal "$(revs race)" 200
	run opt-diary count race
	assert_output 200
	# every acknowledgement names its own revision, and each revision
	# added one entry: count == rev
	run bash -c "cat '$TMP'/ack.* | jq -r '.rev' | sort -n | uniq | wc -l"
	assert_output 200
	run bash -c "cat '$TMP'/ack.* | jq -c 'select(.count != .rev or .appended != 1)'"
	assert_output ''
	# each entry once; each writer's entries in the order it sent them
	opt-diary read race > "$TMP/all"
	[ "$(wc -l < "$TMP/all")" -eq 200 ]
	[ "$(sort "$TMP/all" | uniq | wc -l)" -eq 200 ]
	for w in 1 2 3 4; do
		[ "$(jq -r "select(.w == \"w$w\") | .i" "$TMP/all")" = "$(seq 0 49)" ]
	done
	# the entry of revision N is the N-th entry
	run opt-diary read race --rev 77 --reverse --limit 1
	assert_output "$(sed -n 77p "$TMP/all")"
	fsck_ok
}

@test "concurrent one-transaction appends: all land, and each transaction's entries stay together" {
	for w in 1 2 3 4; do
		(
			for b in 0 1 2 3 4 5 6 7 8 9; do
				opt-diary append batch \
					"{\"w\":$w,\"b\":$b,\"k\":0}" "{\"w\":$w,\"b\":$b,\"k\":1}" \
					"{\"w\":$w,\"b\":$b,\"k\":2}" "{\"w\":$w,\"b\":$b,\"k\":3}" \
					"{\"w\":$w,\"b\":$b,\"k\":4}" || exit 1
			done
		) > "$TMP/ack.$w" 2> "$TMP/err.$w" 3>&- &
	done
	wait
	for w in 1 2 3 4; do
		[ ! -s "$TMP/err.$w" ] || { cat "$TMP/err.$w"; false; }
	done
	assert_equal "$(revs batch)" 40
	run opt-diary count batch
	assert_output 200
	# 40 runs of 5 consecutive entries of one transaction, k = 0..4
	run bash -c "opt-diary read batch | jq -r '\"\(.w)-\(.b)\"' | uniq -c | awk '{ print \$1 }' | sort | uniq -c"
	assert_output '     40 5'
	run bash -c "opt-diary read batch | jq -r .k | paste -sd ' ' | tr -d ' ' | sed 's/01234//g'"
	assert_output ''
	fsck_ok
}

# --- bad input ---

@test "malformed JSON: exit 2 naming the line, nothing written" {
	opt-diary append d 1 >/dev/null
	run --separate-stderr opt-diary append d <<<$'2\n3\n{"oops"\n4'
	assert_failure 2
	assert_output ''
	[[ "$stderr" == "opt-diary: line 3: invalid JSON"* ]]
	[[ "$stderr" == *"(nothing written)" ]]
	run --separate-stderr opt-diary append d 2 'nope' 4
	assert_failure 2
	[[ "$stderr" == "opt-diary: argument 2: invalid JSON"* ]]
	run --separate-stderr opt-diary append d '{"a":1,"a":2}'
	assert_failure 2
	assert_equal "$(revs d)" 1
	run opt-diary read d
	assert_output 1
	# a new diary is not created either
	run opt-diary append e <<<'{'
	assert_failure 2
	run opt-diary count e
	assert_failure 1
	fsck_ok
}

@test "append --each: an invalid entry stops it; the entries before it stay" {
	run --separate-stderr opt-diary append d --each <<<$'1\n2\n[3\n'
	assert_failure 2
	[[ "$stderr" == "opt-diary: line 3: invalid JSON"* ]]
	assert_line --index 0 '{"collection":"d","rev":1,"appended":1,"count":1}'
	assert_line --index 1 '{"collection":"d","rev":2,"appended":1,"count":2}'
	run opt-diary read d
	assert_output $'1\n2'
}

@test "an entry over the size limit (1 MiB of canonical JSON) is refused; one at the limit is taken" {
	opt-diary append d 1 >/dev/null
	# a string of n bytes is n + 2 bytes of JSON
	head -c $((1024 * 1024 - 1)) /dev/zero | tr '\0' x | sed 's/.*/"&"/' > "$TMP/big"
	run --separate-stderr opt-diary append d 2 - < "$TMP/big"
	assert_failure 2
	assert_equal "$stderr" "opt-diary: line 1: entry is 1048577 bytes; the limit is 1048576 bytes of canonical JSON (nothing written)"
	run --separate-stderr opt-diary append d --each < "$TMP/big"
	assert_failure 2
	assert_equal "$(revs d)" 1
	head -c $((1024 * 1024 - 2)) /dev/zero | tr '\0' x | sed 's/.*/"&"/' > "$TMP/max"
	run opt-diary append d < "$TMP/max"
	assert_success
	assert_output '{"collection":"d","rev":2,"appended":1,"count":2}'
	run bash -c "opt-diary read d --reverse --limit 1 | wc -c"
	assert_output $((1024 * 1024 + 1))
}

@test "a collection of another kind is refused (exit 2), and left as it was" {
	echo '{"x":1}' | opt-block put -c blk >/dev/null
	run --separate-stderr opt-diary append blk 1
	assert_failure 2
	assert_equal "$stderr" "opt-diary: collection 'blk' is a block collection, not a diary collection"
	run --separate-stderr opt-diary append blk --each 1
	assert_failure 2
	assert_equal "$stderr" "opt-diary: collection 'blk' is a block collection, not a diary collection"
	for v in read count; do
		run --separate-stderr opt-diary "$v" blk
		assert_failure 2
		assert_equal "$stderr" "opt-diary: collection 'blk' is a block collection, not a diary collection"
	done
	assert_equal "$(revs blk)" 1
	if command -v opt-tree >/dev/null; then
		opt-tree put tr k 1 >/dev/null
		run --separate-stderr opt-diary append tr 1
		assert_failure 2
		assert_equal "$stderr" "opt-diary: collection 'tr' is a tree collection, not a diary collection"
		run --separate-stderr opt-diary read tr
		assert_failure 2
		assert_equal "$stderr" "opt-diary: collection 'tr' is a tree collection, not a diary collection"
	fi
	# a diary is not something the others write
	opt-diary append d 1 >/dev/null
	run --separate-stderr opt-block put -c d <<<'{"x":1}'
	assert_failure 2
	fsck_ok
}

@test "an unknown diary is not found (exit 1)" {
	run --separate-stderr opt-diary read nosuch
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "opt-diary: no collection 'nosuch'"
	run --separate-stderr opt-diary count nosuch
	assert_failure 1
	assert_equal "$stderr" "opt-diary: no collection 'nosuch'"
	run --separate-stderr opt-diary read nosuch --follow
	assert_failure 1
}

@test "usage errors exit 2 with one line that says where the usage is" {
	opt-diary append d 1 >/dev/null
	for bad in x -1 1.5 ''; do
		run --separate-stderr opt-diary read d --limit "$bad"
		assert_failure 2
		[[ "$stderr" == *"--limit needs a whole number >= 0"* ]]
		[[ "$stderr" == *"; try 'opt-diary read --help'" ]]
		[ "${#stderr_lines[@]}" -eq 1 ]
	done
	run --separate-stderr opt-diary read d --rev x
	assert_failure 2
	run --separate-stderr opt-diary read d --follow --reverse
	assert_failure 2
	[[ "$stderr" == "opt-diary: --follow cannot be used with --reverse"* ]]
	run --separate-stderr opt-diary read d --follow --rev 1
	assert_failure 2
	[[ "$stderr" == "opt-diary: --follow cannot be used with --rev"* ]]
	run --separate-stderr opt-diary read
	assert_failure 2
	[[ "$stderr" == "opt-diary: the diary name is required"* ]]
	run --separate-stderr opt-diary append
	assert_failure 2
	run --separate-stderr opt-diary read d e
	assert_failure 2
	run --separate-stderr opt-diary count d e
	assert_failure 2
	run --separate-stderr opt-diary read d --limit
	assert_failure 2
	for name in '../x' 'a..b' 'x.lock' '' 'sp ace' '/abs'; do
		run --separate-stderr opt-diary append "$name" 1
		assert_failure 2
		[[ "$stderr" == "opt-diary: invalid collection name"* ]] || fail "name '$name': $stderr"
		run --separate-stderr opt-diary read "$name"
		assert_failure 2
	done
	run --separate-stderr opt-diary frobnicate
	assert_failure 2
	run --separate-stderr opt-diary append d 1 --no-such
	assert_failure 2
	assert_equal "$stderr" "opt-diary: unknown option '--no-such'; try 'opt-diary append --help'"
	assert_equal "$(revs d)" 1
}

@test "store problems exit 7" {
	OPT_STORE="$TMP/nowhere" run --separate-stderr opt-diary read d
	assert_failure 7
	[[ "$stderr" == "opt-diary: "* ]]
	echo hi > "$TMP/file"
	OPT_STORE="$TMP/file" run --separate-stderr opt-diary count d
	assert_failure 7
	OPT_STORE="$TMP/file" run --separate-stderr opt-diary append d 1
	assert_failure 7
	run --separate-stderr opt-diary -C "$TMP/nowhere" ls
	assert_failure 7
}

@test "a write error on stdout is an error (exit 7)" {
	[ -w /dev/full ] || skip "no /dev/full"
	opt-diary append d 1 2 3 >/dev/null
	run --separate-stderr bash -c 'opt-diary read d > /dev/full'
	assert_failure 7
	[[ "$stderr" == "opt-diary: cannot write output"* ]]
	seq 1 20000 | opt-diary append d >/dev/null
	run --separate-stderr bash -c 'opt-diary read d > /dev/full'
	assert_failure 7
	[[ "$stderr" == "opt-diary: cannot write output"* ]]
	run --separate-stderr bash -c 'opt-diary count d > /dev/full'
	assert_failure 7
	run --separate-stderr bash -c 'opt-diary append d 4 > /dev/full'
	assert_failure 7
}

@test "--help, --version and --complete" {
	run --separate-stderr opt-diary --help
	assert_success
	assert_line --partial 'append NAME [--each] [JSON...]'
	assert_line --partial 'read NAME [--reverse] [--limit N] [--follow] [--rev N]'
	run opt-diary read --help
	assert_success
	assert_line --index 0 'usage: opt-diary read NAME [--reverse] [--limit N] [--follow] [--rev N]'
	assert_output --partial '-f, --follow'
	run opt-diary --version
	assert_output --regexp '^opt-diary [0-9]+\.[0-9]+\.[0-9]+( \([0-9a-f]+(-dirty)?\))?$'
	run opt-diary --complete
	assert_output --partial $'append\nread\ncount\nls\n'
	run opt-diary --complete read
	assert_line -- '--reverse'
	assert_line -- '--limit='
	assert_line -- '--follow'
	assert_line -- '--rev='
	run opt-diary --complete append
	assert_line -- '--each'
}
