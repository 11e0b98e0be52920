#!/usr/bin/env bats
# Outputs that match what is stored and what the pages promise: stored
# bytes printed as they are, retries that leave no garbage, empty input,
# records that say what a command did, `-` and one-line errors everywhere,
# a closed pipe, and the follow of a log.

load test_helper

# --- a block is printed as it is stored ---

@test "get prints a block's stored bytes: 0.1 stays 0.1, and hashing the output gives history's hash" {
	echo '{"header":{"id":"aa"},"x":0.1,"y":2.675,"z":1e300,"s":"\u00e9\u0001"}' | opt-block put -c c >/dev/null
	stored=$(git --git-dir="$OPT_STORE" cat-file blob refs/opt/collections/c:blocks/a/a/aa)
	run --separate-stderr opt-block get -c c aa
	assert_success
	assert_output "$stored"
	[[ $output == *'"x":0.1,'* ]]
	[[ $output == *'"y":2.675'* ]]
	hash=$(opt-block history -c c aa | jq -r .hash)
	assert_equal "$(opt-block get -c c aa | head -c -1 | sha256sum | cut -d' ' -f1)" "$hash"
	# without -c too
	run opt-block get aa
	assert_output "$stored"
}

@test "get --pretty indents the stored text as jq does, numbers as stored" {
	echo '{"header":{"id":"aa"},"x":0.1,"e":{},"a":[],"n":[1,{"b":[2.675]}]}' | opt-block put -c c >/dev/null
	run opt-block get -c c aa --pretty
	assert_success
	assert_output "$(opt-block get -c c aa | jq --indent 2 .)"
	[[ $output == *'"x": 0.1'* ]]
	[[ $output == *'2.675'* ]]
	# what the other programs print with --pretty keeps the stored numbers too
	opt-tree put t k 0.1 >/dev/null
	run opt-tree get t k --pretty
	assert_output $'{\n  "key": "k",\n  "value": 0.1\n}'
	opt-diary append d '{"v":2.675}' >/dev/null
	run opt-diary read d --pretty
	assert_output $'{\n  "v": 2.675\n}'
	run bash -c 'opt-log show t --compact | jq -c .actions'
	assert_output '[{"key":"k","type":"put","value":0.1}]'
	run bash -c 'opt-log show t --pretty | grep value'
	assert_output '      "value": 0.1'
}

# --- empty input ---

@test "apply with no operations on stdin does nothing, as put and transform do" {
	echo '{"header":{"id":"aa"},"n":[]}' | opt-block put -c c >/dev/null
	revs() { git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/c; }
	run --separate-stderr opt-block apply -c c aa </dev/null
	assert_success
	assert_output ''
	[ -z "$stderr" ]
	[ "$(revs)" -eq 1 ]
	# nor does an empty array of operations
	run --separate-stderr opt-block apply -c c aa <<<'[]'
	assert_success
	assert_output ''
	[ "$(revs)" -eq 1 ]
	# the others, for comparison
	run opt-block put -c c </dev/null
	assert_success
	assert_output ''
	run opt-block transform -c c </dev/null
	assert_success
	assert_output ''
	[ "$(revs)" -eq 1 ]
	# an operation still commits
	run opt-block apply -c c aa <<<'["n",0,0,[1]]'
	assert_success
	assert_output '{"id":"aa","collection":"c","rev":2}'
}

# --- records that say what was done ---

@test "commit of a document that changes nothing still commits: status knows its ID" {
	opt-tree put users alice 1 >/dev/null
	run --separate-stderr opt-log commit <<<'{"collections":{"users":[{"type":"del","key":"nokey"}]}}'
	assert_success
	trx=$(jq -r .trx <<<"$output")
	assert_equal "$(jq -c .collections <<<"$output")" '{"users":2}'
	run --separate-stderr opt-log status "$trx"
	assert_success
	assert_output "{\"trx\":\"$trx\",\"status\":\"committed\",\"collections\":[\"users\"]}"
	# the revision is in the log, and the data did not change
	run bash -c "opt-log show users --from 2 | jq -r .trx"
	assert_output "$trx"
	run opt-tree get users alice
	assert_output '{"key":"alice","value":1}'
	run opt-log verify users
	assert_success
}

@test "tree del: a record per deleted key, a 'no key' line per absent one, exit 1" {
	opt-tree put users x 1 >/dev/null
	opt-tree put users y 2 >/dev/null
	run --separate-stderr opt-tree del users nokey x y x
	assert_failure 1
	assert_output - <<'EOF'
{"collection":"users","rev":3,"key":"x","deleted":true}
{"collection":"users","rev":3,"key":"y","deleted":true}
{"collection":"users","rev":3,"key":"x","deleted":true}
EOF
	assert_equal "$stderr" "opt-tree: no key \"nokey\" in tree 'users'"
	run opt-tree count users
	assert_output 0
	# nothing to delete: no revision, no record
	run --separate-stderr opt-tree del users --json-keys '"x"' 7
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "opt-tree: no key \"x\" in tree 'users'"$'\n'"opt-tree: no key 7 in tree 'users'"
	assert_equal "$(git --git-dir="$OPT_STORE" rev-list --count refs/opt/collections/users)" 3
}

# --- opt-sync: a dry run exits as the run would; option values are checked ---

@test "rebalance --dry-run with no reachable peer exits 5 as the run does, saying what would be short" {
	opt-tree put t a 1 >/dev/null
	for p in p1 p2 p3; do opt-sync peer add "$p" "$TMP/away-$p"; done
	export OPT_CLUSTER_BACKOFF_MS=1
	run --separate-stderr opt-sync rebalance --dry-run --retries 0
	assert_failure 5
	assert_line --partial '"collection":"t","status":"home-unreachable","reached":0,"required":2'
	assert_line --partial '"short":1,"dry_run":true}}'
	[[ $stderr == "opt-sync: 1 of 1 collection would reach fewer than 2 peers (unreachable: p1, p2, p3)" ]] || fail "$stderr"
	run --separate-stderr opt-sync rebalance --retries 0
	assert_failure 5
	# one peer back of the two that place t: still short, dry run or not
	home=$(opt-sync where t | jq -r .home)
	opt-block init "$TMP/away-$home" >/dev/null
	opt-log -C "$TMP/away-$home" trust "$(opt-log identity | jq -r .key)" --name s
	run --separate-stderr opt-sync rebalance --dry-run --retries 0
	assert_failure 5
	assert_line "{\"collection\":\"t\",\"from\":\"local\",\"to\":[\"$home\"],\"status\":\"planned\",\"dry_run\":true}"
	run --separate-stderr opt-sync rebalance --retries 0
	assert_failure 5
	# every placement peer back: the plan and the run succeed
	for p in p1 p2 p3; do
		[ -d "$TMP/away-$p" ] && continue
		opt-block init "$TMP/away-$p" >/dev/null
		opt-log -C "$TMP/away-$p" trust "$(opt-log identity | jq -r .key)" --name s
	done
	run opt-sync rebalance --dry-run
	assert_success
	run opt-sync rebalance
	assert_success
}

@test "pull and push check --retries and --min also when they are not over the cluster" {
	opt-tree put t a 1 >/dev/null
	opt-block init "$TMP/r" >/dev/null
	opt-sync remote add r "$TMP/r"
	for cmd in "pull r --retries x" "push r --retries -1" "push r --min 0" "pull --retries 1x"; do
		run --separate-stderr opt-sync $cmd
		[ "$status" -eq 2 ] || fail "opt-sync $cmd: exit $status: $stderr"
		[[ $stderr == *"needs a whole number"* ]] || fail "opt-sync $cmd: $stderr"
	done
	run opt-sync push r --retries 2
	assert_success
}

# --- "-" reads operands from stdin, by one rule everywhere ---

@test "- is one rule for every program: a JSON string line is that string, any other line is taken as it is" {
	opt-tree put T alice 1 >/dev/null
	opt-tree put T 'say "hi"' 2 >/dev/null
	# jq .key (JSON strings) and jq -r .key (raw lines) both feed get and del
	run --separate-stderr bash -c 'opt-tree range T | jq .key | opt-tree get T -'
	assert_success
	assert_output $'{"key":"alice","value":1}\n{"key":"say \\"hi\\"","value":2}'
	run --separate-stderr bash -c 'opt-tree range T | jq -r .key | opt-tree get T -'
	assert_success
	assert_output $'{"key":"alice","value":1}\n{"key":"say \\"hi\\"","value":2}'
	# white space around a JSON string; a line that is not one string stays as it is
	run --separate-stderr opt-tree get T - <<<$'  "alice"  \n"alice" "x"'
	assert_failure 1
	assert_output '{"key":"alice","value":1}'
	assert_equal "$stderr" "opt-tree: no key \"\\\"alice\\\" \\\"x\\\"\" in tree 'T'"
	# with --json-keys a line is a JSON value
	run opt-tree get T --json-keys - <<<'"alice"'
	assert_output '{"key":"alice","value":1}'
	run bash -c 'opt-tree range T | jq .key | opt-tree del T -'
	assert_success
	assert_equal "$(opt-tree count T)" 0
	# block IDs: the same rule for get (JSON strings before) and the others
	echo '{"header":{"id":"aa"}}{"header":{"id":"bb"}}' | opt-block put -c c >/dev/null
	run opt-block get -c c - <<<$'aa\n"bb"'
	assert_success
	assert_equal "$(jq -r .header.id <<<"$output" | tr '\n' ' ')" 'aa bb '
}

@test "- is accepted by rm, history, opt-log status, verify, trust, untrust and opt-sync where" {
	echo '{"header":{"id":"aa"}}{"header":{"id":"bb"}}{"header":{"id":"cc"}}' | opt-block put -c c >/dev/null
	run opt-block rm -c c - <<<$'"aa"\nbb'
	assert_success
	assert_output $'{"id":"aa","collection":"c","rev":2,"deleted":true}\n{"id":"bb","collection":"c","rev":2,"deleted":true}'
	run opt-block rm -c c cc - </dev/null
	assert_success
	assert_output '{"id":"cc","collection":"c","rev":3,"deleted":true}'
	run opt-block history -c c - <<<'"aa"'
	assert_success
	assert_equal "$(jq -c '[.rev, .hash == null]' <<<"$output" | tr '\n' ' ')" '[1,false] [2,true] '
	run --separate-stderr opt-block history -c c - <<<$'aa\nbb'
	assert_failure 2
	run --separate-stderr bash -c 'opt-log show c | jq .trx | opt-log status -'
	assert_success
	assert_equal "$(jq -r .status <<<"$output" | sort -u)" committed
	assert_equal "${#lines[@]}" 3
	opt-tree put t k 1 >/dev/null
	run --separate-stderr opt-log verify - <<<$'c\n"t"'
	assert_success
	assert_equal "$(jq -r .collection <<<"$output" | tr '\n' ' ')" 'c t '
	key=$(printf '%064d' 7 | tr 0 a)
	run opt-log trust - --name k <<<"\"$key\""
	assert_success
	run opt-log trusted
	assert_output --partial "$key"
	run opt-log untrust - <<<"$key"
	assert_success
	run opt-log trusted
	refute_output --partial "$key"
	opt-sync peer add p1 "$TMP/p1"
	run opt-sync where - <<<$'"c"\nt'
	assert_success
	assert_equal "$(jq -r .collection <<<"$output" | tr '\n' ' ')" 'c t '
}

# --- errors are one line ---

@test "usage errors are one line, with where the usage is on the same line" {
	local cmd n
	while IFS= read -r cmd; do
		[ -n "$cmd" ] || continue
		n=${cmd%% *}
		# shellcheck disable=SC2086
		run --separate-stderr $cmd
		[ "$status" -eq 2 ] || fail "$cmd: exit $status: $stderr"
		[ "${#stderr_lines[@]}" -eq 1 ] || fail "$cmd: ${#stderr_lines[@]} lines: $stderr"
		[[ $stderr == "$n: "*"; try '$n"*" --help'" ]] || fail "$cmd: $stderr"
		[ -z "$output" ] || fail "$cmd wrote to stdout: $output"
	done <<'EOF'
opt-block --bogus get x
opt-block bogus
opt-block
opt-block get
opt-block put
opt-block get -c
opt-tree range t --from b --to a
opt-tree --store
opt-diary read d --limit x
opt-log show
opt-log -x show c
opt-sync push --conflict nope
opt-sync remote frob
EOF
	run --separate-stderr opt-tree --bogus get t k
	assert_equal "$stderr" "opt-tree: unknown option '--bogus'; try 'opt-tree --help'"
	run --separate-stderr opt-tree get t
	assert_equal "$stderr" "opt-tree: no key given (use - to read keys from stdin); try 'opt-tree get --help'"
}

# --- a closed pipe ---

@test "a closed pipe on stdout ends a program with exit 7 and no message, as the pages say" {
	awk 'BEGIN { for (i = 0; i < 20000; i++) printf "{\"key\":%d,\"value\":\"xxxxxxxxxxxxxxxx\"}\n", i }' >"$TMP/recs"
	opt-tree put big <"$TMP/recs" >/dev/null
	jq -c .value <"$TMP/recs" | opt-diary append d >/dev/null
	seq 0 19999 >"$TMP/keys"
	local cmd
	for cmd in "opt-tree range big" "opt-log show big" "opt-diary read d" "opt-tree get big --json-keys -"; do
		run bash -c "$cmd <'$TMP/keys' 2>'$TMP/err' | head -c 10 >/dev/null; echo \${PIPESTATUS[0]}"
		assert_output 7
		[ ! -s "$TMP/err" ] || fail "$cmd: $(cat "$TMP/err")"
	done
	# another write error is said
	run --separate-stderr bash -c "opt-tree range big >/dev/full"
	assert_failure 7
	[[ $stderr == "opt-tree: cannot write output: "* ]] || fail "$stderr"
}

# --- opt-log show --follow ---

@test "opt-log show --follow prints new entries as they come, until --limit, a signal or a closed pipe" {
	opt-tree put t k0 0 >/dev/null
	timeout 30 opt-log show t --follow --limit 4 >"$TMP/out" 2>"$TMP/err" &
	local pid=$! i rc=0
	for i in 1 2 3; do
		sleep 0.3
		opt-tree put t "k$i" "$i" >/dev/null
	done
	# it ends by itself at the limit
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || fail "exit $rc: $(cat "$TMP/err")"
	[ ! -s "$TMP/err" ]
	assert_equal "$(jq -c '[.rev, .actions[0].key]' "$TMP/out" | tr '\n' ' ')" '[1,"k0"] [2,"k1"] [3,"k2"] [4,"k3"] '
	# a writer in the background; SIGTERM ends the follow cleanly
	opt-log show t --follow --from 3 >"$TMP/out2" 2>"$TMP/err2" &
	pid=$!
	(for i in 4 5; do sleep 0.2; opt-tree put t "k$i" "$i" >/dev/null; done) &
	wait $!
	sleep 0.5
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || fail "exit $rc after SIGTERM: $(cat "$TMP/err2")"
	assert_equal "$(jq -c .rev "$TMP/out2" | tr '\n' ' ')" '3 4 5 6 '
	# the reader goes away: the end of the follow, exit 0
	run timeout 20 bash -c 'opt-log show t --follow | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}'
	assert_output 0
	# --follow with a fixed end or an old revision is a usage error
	for o in --reverse "--rev 2" "--to 3"; do
		# shellcheck disable=SC2086
		run --separate-stderr opt-log show t --follow $o
		[ "$status" -eq 2 ] || fail "--follow $o: exit $status"
	done
}

# --- retries write no garbage ---

# The objects of the store that no ref reaches, one ID a line.
unreachable() {
	comm -23 <(git --git-dir="$OPT_STORE" cat-file --batch-all-objects --batch-check='%(objectname)' | sort -u) \
		<(git --git-dir="$OPT_STORE" rev-list --objects --all | cut -c1-40 | sort -u)
}

@test "a write that waits for a locked collection writes its objects once: no pack per attempt" {
	opt-tree put t a 1 >/dev/null
	[ -z "$(unreachable)" ]
	packs=$(ls "$OPT_STORE"/objects/pack/*.pack | wc -l)
	touch "$OPT_STORE/refs/opt/collections/t.lock"
	(sleep 1; rm -f "$OPT_STORE/refs/opt/collections/t.lock") &
	OPT_STALE_LOCK_MS=600000 run --separate-stderr opt-tree put t b 2
	wait
	assert_success
	assert_output '{"collection":"t","rev":2,"put":1}'
	assert_equal "$(unreachable | wc -l)" 0
	[ "$(ls "$OPT_STORE"/objects/pack/*.pack | wc -l)" -le $((packs + 1)) ]
	# a stream waits the same way
	touch "$OPT_STORE/refs/opt/collections/t.lock"
	(sleep 1; rm -f "$OPT_STORE/refs/opt/collections/t.lock") &
	OPT_STALE_LOCK_MS=600000 run --separate-stderr opt-tree put t --each <<<'{"key":"c","value":3}'
	wait
	assert_success
	assert_equal "$(unreachable | wc -l)" 0
	fsck_ok
}

@test "writers racing for one collection leave no unreachable objects" {
	local w
	for w in 1 2 3; do
		(for i in $(seq 1 20); do opt-tree put t "w$w-$i" "$i" >/dev/null || exit 1; done) &
	done
	wait
	assert_equal "$(opt-tree count t)" 60
	assert_equal "$(unreachable | wc -l)" 0
	run opt-log verify t
	assert_success
}

# --- make demo needs only the build's dependencies ---

@test "make demo installs or names only what the build needs (tools/deps.sh install-build)" {
	local t
	# the build's tools, and none that only the tests use (fish, zsh, sshd, lighttpd, ...)
	mkdir -p "$TMP/bin"
	for t in sh pkg-config cc make git cat; do ln -s "$(command -v "$t")" "$TMP/bin/$t"; done
	run env PATH="$TMP/bin" sh "$TOP/tools/deps.sh" install-build
	assert_success
	assert_output ''
	run env PATH="$TMP/bin" sh "$TOP/tools/deps.sh" install
	assert_failure
	assert_output --partial fish
	# as root it installs the build's packages and nothing else
	rm "$TMP/bin/make"
	printf '#!/bin/sh\necho 0\n' >"$TMP/bin/id"
	printf '#!/bin/sh\necho "$*" >>"%s/apt"\n' "$TMP" >"$TMP/bin/apt-get"
	chmod +x "$TMP/bin/id" "$TMP/bin/apt-get"
	run env PATH="$TMP/bin" sh "$TOP/tools/deps.sh" install-build
	assert_success
	assert_equal "$(grep install "$TMP/apt")" "install -y -qq make"
	run env PATH="$TMP/bin" sh "$TOP/tools/deps.sh" frob
	assert_failure 2
	# and that is what make demo runs
	run make -n -s -C "$TOP" demo
	assert_success
	assert_line 'sh tools/deps.sh install-build'
	refute_line 'sh tools/deps.sh install'
}
