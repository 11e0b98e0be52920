#!/usr/bin/env bats
# opt-log commit, status, checkpoint, identity and trust: atomic
# transactions over several collections, what becomes of them, pruned
# logs that still verify, and the store's signing identity.

load test_helper

G() { git --git-dir="$OPT_STORE" "$@"; }

# Every ref of the store with its commit: "nothing committed anywhere"
# means this does not change.
refs() { G for-each-ref --format='%(objectname) %(refname)'; }

# The head revision of collection $1 (its commit's Opt-Rev trailer).
head_rev() { G cat-file commit "refs/opt/collections/$1" | sed -n 's/^Opt-Rev: //p'; }

# The transaction ID of the head commit of collection $1 (also when it is a
# pending revision readers do not see).
head_trx() { G cat-file commit "refs/opt/collections/$1" | sed -n 's/^Opt-Trx: //p'; }

TWO='{"collections": {"users": [{"type": "put", "key": "alice", "value": {"age": 3}}, {"type": "put", "key": "bob", "value": 7}], "events": [{"type": "append", "entry": {"who": "alice"}}]}}'

# ---- commit ----

@test "commit: one document over a tree and a diary, one transaction in both" {
	run --separate-stderr opt-log commit <<<"$TWO"
	assert_success
	[ "${#lines[@]}" -eq 1 ]
	trx=$(jq -r .trx <<<"$output")
	[[ $trx =~ ^[a-z2-7]{26}$ ]] || fail "trx: $output"
	assert_equal "$(jq -c .collections <<<"$output" | jq -cS .)" '{"events":1,"users":1}'
	assert_equal "$(jq -r 'keys_unsorted | join(",")' <<<"$output")" "trx,collections"
	# the values, and the same transaction in both logs, committed
	run opt-tree get users alice bob
	assert_success
	assert_output $'{"key":"alice","value":{"age":3}}\n{"key":"bob","value":7}'
	run opt-diary read events
	assert_output '{"who":"alice"}'
	assert_equal "$(opt-log show users | jq -r .trx)" "$trx"
	assert_equal "$(opt-log show events | jq -r .trx)" "$trx"
	assert_equal "$(opt-log show users | jq -c .collections)" '["events","users"]'
	assert_equal "$(opt-log show users | jq -r .primary)" users
	assert_equal "$(opt-log show events | jq -r .primary)" users
	assert_equal "$(opt-log show users | jq -r .status)" committed
	assert_equal "$(opt-log show users | jq -c .actions)" \
		'[{"key":"alice","type":"put","value":{"age":3}},{"key":"bob","type":"put","value":7}]'
	run opt-log verify
	assert_success
	assert_line '{"collection":"events","entries":1,"rev":1,"ok":true}'
	assert_line '{"collection":"users","entries":1,"rev":1,"ok":true}'
	fsck_ok
}

@test "commit: the document may span lines; the output is compact JSON Lines" {
	run opt-log commit <<'EOF'
{
  "collections": {
    "log": [
      {"type": "append", "entry": 1},
      {"type": "append", "entry": 2}
    ]
  }
}
EOF
	assert_success
	assert_output --regexp '^\{"trx":"[a-z2-7]{26}","collections":\{"log":1\}\}$'
	run opt-diary read log
	assert_output $'1\n2'
}

@test "commit --each: one transaction per document, each acknowledged in order" {
	{
		echo '{"collections": {"t": [{"type": "put", "key": "a", "value": 1}], "d": [{"type": "append", "entry": "a"}]}}'
		echo '{"collections": {"t": [{"type": "put", "key": "b", "value": 2}]}}'
		echo '{"collections": {"d": [{"type": "append", "entry": "c"}], "e": [{"type": "append", "entry": "c"}], "t": [{"type": "del", "key": "a"}]}}'
	} >"$TMP/docs"
	run --separate-stderr opt-log commit --each <"$TMP/docs"
	assert_success
	[ "${#lines[@]}" -eq 3 ]
	assert_equal "$(jq -cS .collections <<<"${lines[0]}")" '{"d":1,"t":1}'
	assert_equal "$(jq -cS .collections <<<"${lines[1]}")" '{"t":2}'
	assert_equal "$(jq -cS .collections <<<"${lines[2]}")" '{"d":2,"e":1,"t":3}'
	# three distinct transactions
	assert_equal "$(printf '%s\n' "${lines[@]}" | jq -r .trx | sort -u | wc -l)" 3
	# each line's trx is the one in the logs, at the revision it names
	for l in "${lines[@]}"; do
		trx=$(jq -r .trx <<<"$l")
		for c in $(jq -r '.collections | keys[]' <<<"$l"); do
			rev=$(jq -r ".collections[\"$c\"]" <<<"$l")
			assert_equal "$(opt-log show "$c" --from "$rev" --to "$rev" | jq -r .trx)" "$trx"
		done
	done
	run opt-tree range t
	assert_output '{"key":"b","value":2}'
	run opt-diary read d
	assert_output $'"a"\n"c"'
	# -e is --each
	run opt-log commit -e <<<'{"collections": {"t": [{"type": "put", "key": "z", "value": 0}]}}'
	assert_success
	assert_output --partial '"collections":{"t":4}'
	run opt-log verify
	assert_success
}

@test "commit --each: stops at the first refused document; the ones before stay" {
	{
		echo '{"collections": {"t": [{"type": "put", "key": "a", "value": 1}]}}'
		echo '{"collections": {"t": [{"type": "append", "entry": 2}]}}'
		echo '{"collections": {"t": [{"type": "put", "key": "c", "value": 3}]}}'
	} >"$TMP/docs"
	run --separate-stderr opt-log commit --each <"$TMP/docs"
	[ "$status" -eq 2 ]
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial '"collections":{"t":1}'
	[[ $stderr == *"not a diary"* ]] || fail "stderr: $stderr"
	run opt-tree range t
	assert_output '{"key":"a","value":1}'
	assert_equal "$(head_rev t)" 1
}

@test "commit: a new collection is created of the type its actions imply" {
	run opt-log commit <<<'{"collections": {"kv": [{"type": "put", "key": 1, "value": "one"}], "journal": [{"type": "append", "entry": {"n": 1}}], "gone": [{"type": "del", "key": "x"}]}}'
	assert_success
	run opt-tree stat kv
	assert_success
	run opt-tree count kv
	assert_output 1
	run opt-diary count journal
	assert_output 1
	# a collection of del actions only is a tree too
	run opt-tree count gone
	assert_success
	assert_output 0
	run opt-diary count kv
	[ "$status" -eq 2 ]
	run opt-tree count journal
	[ "$status" -eq 2 ]
	assert_equal "$(opt-block ls -c kv | jq -r 'select(.type == "TRE") | .type')" TRE
	assert_equal "$(opt-block ls -c journal | jq -r 'select(.type == "DIH") | .type' | sort -u)" DIH
	run opt-log verify
	assert_success
}

@test "commit: actions of the wrong type for an existing collection are refused, nothing committed anywhere" {
	opt-tree put tree k 1 >/dev/null
	opt-diary append diary 1 >/dev/null
	before=$(refs)
	# the wrong one is the first in name order, then the last (the primary),
	# then in the middle; a new collection besides
	for doc in \
		'{"collections": {"diary": [{"type": "put", "key": "x", "value": 1}], "tree": [{"type": "put", "key": "y", "value": 2}]}}' \
		'{"collections": {"new": [{"type": "append", "entry": 1}], "tree": [{"type": "append", "entry": 2}]}}' \
		'{"collections": {"a-new": [{"type": "put", "key": "x", "value": 1}], "diary": [{"type": "del", "key": "x"}], "tree": [{"type": "put", "key": "y", "value": 2}]}}' \
		'{"collections": {"diary": [{"type": "append", "entry": 1}], "tree": [{"type": "append", "entry": 2}]}}'; do
		run --separate-stderr opt-log commit <<<"$doc"
		[ "$status" -eq 2 ] || fail "exit $status for $doc: $stderr"
		[ -z "$output" ] || fail "output for $doc: $output"
		[[ $stderr == *"is a "*" collection, not a "*" collection"* ]] || fail "stderr for $doc: $stderr"
		after=$(refs)
		[ "$before" = "$after" ] || fail "refused transaction $doc changed the store:
$(diff <(echo "$before") <(echo "$after"))
collections: $(opt-tree ls 2>&1; opt-diary ls 2>&1)"
	done
	run opt-tree range tree
	assert_output '{"key":"k","value":1}'
	run opt-diary read diary
	assert_output 1
	run opt-log verify
	assert_success
	fsck_ok
}

@test "commit: tree and diary actions mixed in one collection are refused, nothing committed" {
	opt-tree put t k 1 >/dev/null
	before=$(refs)
	run --separate-stderr opt-log commit <<<'{"collections": {"t": [{"type": "put", "key": "a", "value": 1}], "z": [{"type": "put", "key": "a", "value": 1}, {"type": "append", "entry": 2}]}}'
	[ "$status" -eq 2 ]
	[[ $stderr == *"mixes tree actions"* ]] || fail "$stderr"
	run --separate-stderr opt-log commit <<<'{"collections": {"t": [{"type": "append", "entry": 2}, {"type": "del", "key": "k"}]}}'
	[ "$status" -eq 2 ]
	[[ $stderr == *"mixes tree actions"* ]] || fail "$stderr"
	[ "$before" = "$(refs)" ]
}

@test "commit: malformed documents exit 2 and commit nothing" {
	opt-tree put t k 1 >/dev/null
	before=$(refs)
	local -a docs=(
		'not json'
		'[]'
		'"collections"'
		'{}'
		'{"collections": {}}'
		'{"collections": []}'
		'{"collections": {"t": []}}'
		'{"collections": {"t": {}}}'
		'{"collections": {"t": [1]}}'
		'{"collections": {"t": [{"key": "a", "value": 1}]}}'
		'{"collections": {"t": [{"type": "nope"}]}}'
		'{"collections": {"t": [{"type": "put", "key": "a"}]}}'
		'{"collections": {"t": [{"type": "put", "value": 1}]}}'
		'{"collections": {"t": [{"type": "put", "key": {}, "value": 1}]}}'
		'{"collections": {"t": [{"type": "put", "key": true, "value": 1}]}}'
		'{"collections": {"t": [{"type": "del"}]}}'
		'{"collections": {"d": [{"type": "append"}]}}'
		'{"collections": {"bad name!": [{"type": "append", "entry": 1}]}}'
		'{"collections": {"t": [{"type": "put", "key": "a", "value": 1}]}, "extra": 1}'
		'{"collections": {"t": [{"type": "put", "key": "a", "value": 1}]}'
		'{"collections": {"new": [{"type": "append", "entry": 1}], "t": [{"type": "put", "key": "b", "value": 1}, {"type": "nope"}]}}'
		''
	)
	for doc in "${docs[@]}"; do
		run --separate-stderr opt-log commit <<<"$doc"
		[ "$status" -eq 2 ] || fail "exit $status for '$doc' ($stderr)"
		[ -z "$output" ] || fail "output for '$doc': $output"
		[[ $stderr == opt-log:* ]] || fail "stderr for '$doc': $stderr"
		[ "$before" = "$(refs)" ] || fail "malformed '$doc' changed the store"
	done
	# operands are a usage error too
	run opt-log commit t <<<'{"collections": {"t": [{"type": "put", "key": "a", "value": 1}]}}'
	[ "$status" -eq 2 ]
	[ "$before" = "$(refs)" ]
	run opt-tree range t
	assert_output '{"key":"k","value":1}'
}

@test "commit: two documents without --each are a usage error, and nothing is committed" {
	opt-tree put t k 1 >/dev/null
	before=$(refs)
	run --separate-stderr opt-log commit <<'EOF'
{"collections": {"t": [{"type": "put", "key": "a", "value": 1}]}}
{"collections": {"t": [{"type": "put", "key": "b", "value": 2}]}}
EOF
	[ "$status" -eq 2 ]
	[[ $stderr == *"--each"* ]] || fail "$stderr"
	# a usage error must not have committed the first document
	[ -z "$output" ] || fail "acknowledged before the usage error: $output"
	after=$(refs)
	[ "$before" = "$after" ] || fail "the usage error left a transaction committed: $(opt-tree range t)"
}

# ---- status ----

@test "status: committed transactions, over one collection and over several" {
	run opt-log commit <<<"$TWO"
	multi=$(jq -r .trx <<<"$output")
	run opt-log commit <<<'{"collections": {"solo": [{"type": "append", "entry": 1}]}}'
	solo=$(jq -r .trx <<<"$output")
	run opt-log status "$multi"
	assert_success
	assert_output "{\"trx\":\"$multi\",\"status\":\"committed\",\"collections\":[\"events\",\"users\"],\"primary\":\"users\"}"
	run opt-log status "$solo"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" committed
	assert_equal "$(jq -c .collections <<<"$output")" '["solo"]'
	# several at once, in the order given
	run opt-log status "$solo" "$multi"
	assert_success
	assert_equal "$(jq -r .trx <<<"$output" | tr '\n' ' ')" "$solo $multi "
	# the transaction of a plain opt-tree put is known too
	opt-tree put plain k 1 >/dev/null
	trx=$(opt-log show plain | jq -r .trx)
	run opt-log status "$trx"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" committed
}

@test "status: an unknown transaction exits 1; the known ones are still printed" {
	run opt-log commit <<<"$TWO"
	trx=$(jq -r .trx <<<"$output")
	run --separate-stderr opt-log status aaaaaaaaaaaaaaaaaaaaaaaaaa
	[ "$status" -eq 1 ]
	[ -z "$output" ]
	[[ $stderr == *"no transaction 'aaaaaaaaaaaaaaaaaaaaaaaaaa'"* ]] || fail "$stderr"
	run --separate-stderr opt-log status aaaaaaaaaaaaaaaaaaaaaaaaaa "$trx"
	[ "$status" -eq 1 ]
	assert_output --partial "\"trx\":\"$trx\",\"status\":\"committed\""
	run opt-log status
	[ "$status" -eq 2 ]
}

@test "status: pending (and expired) while undecided; aborted once a writer aborts it" {
	# killed right after its pend: the transaction is undecided
	run env OPT_TXN_TTL=100 OPT_TEST_CRASH=txn:pended opt-log commit <<<'{"collections": {"a": [{"type": "put", "key": "k", "value": 1}], "b": [{"type": "append", "entry": 1}]}}'
	[ "$status" -eq 137 ]
	[ -z "$output" ]
	trx=$(head_trx a)
	run opt-log status "$trx"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" pending
	assert_equal "$(jq -r .primary <<<"$output")" b
	# readers do not see it
	run opt-tree get a k
	[ "$status" -eq 1 ]
	sleep 0.2
	run opt-log status "$trx"
	assert_equal "$(jq -r .status <<<"$output")" pending
	assert_equal "$(jq -r .expired <<<"$output")" true
	# the next writer of a aborts it (abort record on b) and reverts a
	run opt-tree put a other 2
	assert_success
	run opt-log status "$trx"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" aborted
	assert_equal "$(jq -c .collections <<<"$output")" '["a","b"]'
	run opt-tree range a
	assert_output '{"key":"other","value":2}'
	assert_equal "$(opt-log show a | jq -c '[.rev, .status, .revert]' | tr '\n' ' ')" \
		'[1,"pending",null] [2,"aborted",1] [3,null,null] '
	# b got only the abort record: a diary append makes it a diary
	run opt-diary append b 5
	assert_success
	run opt-diary read b
	assert_output 5
	run opt-log verify
	assert_success
	fsck_ok
}

@test "status: killed after the decision: committed though never acknowledged" {
	run env OPT_TEST_CRASH=txn:decided opt-log commit <<<"$TWO"
	[ "$status" -eq 137 ]
	[ -z "$output" ]
	trx=$(head_trx users)
	assert_equal "$(head_trx events)" "$trx"
	run opt-log status "$trx"
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" committed
	run opt-tree get users alice
	assert_success
	run opt-diary read events
	assert_output '{"who":"alice"}'
}

# ---- checkpoint ----

@test "checkpoint: entries up to REV lose their actions, keep actionsHash; the log still verifies" {
	for i in 1 2 3 4; do
		opt-log commit <<<"{\"collections\": {\"t\": [{\"type\": \"put\", \"key\": \"k$i\", \"value\": $i}], \"d\": [{\"type\": \"append\", \"entry\": $i}]}}" >/dev/null
	done
	opt-log show t >"$TMP/before"
	run opt-log checkpoint t --upto 2
	assert_success
	assert_output '{"collection":"t","rev":5,"upto":2,"pruned":2}'
	run opt-log show t
	assert_success
	[ "${#lines[@]}" -eq 5 ]
	assert_equal "$(opt-log show t | jq -c '[.rev, has("actions"), (.actionsHash | length)]' | tr '\n' ' ')" \
		'[1,false,64] [2,false,64] [3,true,64] [4,true,64] [5,true,64] '
	# every other member of the entries is as it was
	diff <(jq -c 'del(.actions)' "$TMP/before") <(opt-log show t --to 4 | jq -c 'del(.actions)')
	diff <(sed -n 3,4p "$TMP/before") <(opt-log show t --from 3 --to 4)
	assert_equal "$(opt-log show t --from 5 | jq -c .actions)" '[{"pruned":2,"type":"checkpoint","upto":2}]'
	# history is not rewritten: revision 2 still has its log as it was
	assert_equal "$(opt-log show t --rev 2 --from 2 | jq -c .actions)" '[{"key":"k2","type":"put","value":2}]'
	run opt-log verify
	assert_success
	assert_line '{"collection":"t","entries":5,"rev":5,"ok":true}'
	# the data is untouched
	run opt-tree count t
	assert_output 4
	# the default: up to the latest revision
	run opt-log checkpoint t
	assert_success
	assert_output '{"collection":"t","rev":6,"upto":5,"pruned":3}'
	assert_equal "$(opt-log show t | jq -c 'has("actions")' | tr '\n' ' ')" 'false false false false false true '
	run opt-log checkpoint d
	assert_success
	assert_output '{"collection":"d","rev":5,"upto":4,"pruned":4}'
	run opt-log verify
	assert_success
	run opt-diary read d
	assert_output $'1\n2\n3\n4'
	# and the collections go on
	opt-log commit <<<'{"collections": {"t": [{"type": "put", "key": "k9", "value": 9}], "d": [{"type": "append", "entry": 9}]}}' >/dev/null
	run opt-log verify
	assert_success
	fsck_ok
}

@test "checkpoint: --upto beyond the head, a bad REV, a missing collection fail and change nothing" {
	opt-tree put t a 1 >/dev/null
	opt-tree put t b 2 >/dev/null
	before=$(refs)
	run --separate-stderr opt-log checkpoint t --upto 3
	assert_failure
	[ -z "$output" ]
	[[ $stderr == *"no revision 3"* ]] || fail "$stderr"
	run opt-log checkpoint t --upto 0
	[ "$status" -eq 2 ]
	run opt-log checkpoint t --upto x
	[ "$status" -eq 2 ]
	run opt-log checkpoint
	[ "$status" -eq 2 ]
	run opt-log checkpoint nosuch
	[ "$status" -eq 1 ]
	[ "$before" = "$(refs)" ]
	assert_equal "$(opt-log show t | jq -c 'has("actions")' | tr '\n' ' ')" 'true true '
}

# ---- identity and trust ----

@test "identity: one key pair, stable, in a 0600 file outside the git objects" {
	run --separate-stderr opt-log identity
	assert_success
	key=$(jq -r .key <<<"$output")
	[[ $key =~ ^[0-9a-f]{64}$ ]] || fail "key: $output"
	assert_equal "$(jq -r .store <<<"$output")" "$OPT_STORE"
	run opt-log identity
	assert_equal "$(jq -r .key <<<"$output")" "$key"
	[ -f "$OPT_STORE/opt-identity" ]
	assert_equal "$(stat -c %a "$OPT_STORE/opt-identity")" 600
	# write a few things: the entries are signed with it
	opt-log commit <<<"$TWO" >/dev/null
	opt-tree put t k 1 >/dev/null
	opt-diary append d 1 >/dev/null
	echo '{"a":1}' | opt-block put -c blocks >/dev/null
	opt-log checkpoint users >/dev/null
	run opt-log identity
	assert_equal "$(jq -r .key <<<"$output")" "$key"
	assert_equal "$(stat -c %a "$OPT_STORE/opt-identity")" 600
	for c in users events t d blocks; do
		assert_equal "$(opt-log show "$c" | jq -r .author | sort -u)" "$key"
		opt-log show "$c" | jq -e -r '.sig | test("^[0-9a-f]{128}$")' >/dev/null
	done
	# the secret is in none of the git objects, reachable or not
	secret=$(jq -r .secret "$OPT_STORE/opt-identity" 2>/dev/null || true)
	[ -n "$secret" ] || secret=$(tr -cd '0-9a-f\n' <"$OPT_STORE/opt-identity" | awk 'length >= 64' | head -n 1)
	[ -n "$secret" ] || fail "cannot find the secret in opt-identity"
	seed=${secret:0:64}
	G rev-list --objects --all | cut -d' ' -f1 >"$TMP/objects"
	[ "$(wc -l <"$TMP/objects")" -gt 10 ]
	G cat-file --batch <"$TMP/objects" >"$TMP/all-reachable"
	G cat-file --batch-all-objects --batch >"$TMP/all-objects"
	grep -q -- "$key" "$TMP/all-objects" # the public key is there, as author
	for f in "$TMP/all-reachable" "$TMP/all-objects"; do
		! grep -q -i -- "$seed" "$f" || fail "the secret key is in a git object"
		python3 - "$f" "$seed" <<'EOF' || fail "the secret key's bytes are in a git object"
import sys
data = open(sys.argv[1], 'rb').read()
sys.exit(1 if bytes.fromhex(sys.argv[2]) in data else 0)
EOF
	done
	# nor in the packs or loose objects as stored (zlib), nor in the refs
	if grep -r -q -i -- "$seed" "$OPT_STORE/refs" "$OPT_STORE/config"; then
		fail "the secret key is in the refs or the config"
	fi
	fsck_ok
}

@test "identity: a store made by it has one; another store has another key" {
	# no store named: identity makes ./.opt (a store named must exist)
	mkdir "$TMP/other" && cd "$TMP/other"
	OPT_STORE= run --separate-stderr opt-log identity
	assert_success
	[[ $stderr == *"created"* ]] || fail "$stderr"
	other=$(jq -r .key <<<"$output")
	mine=$(opt-log identity | jq -r .key)
	[ "$other" != "$mine" ]
	run opt-log identity extra
	[ "$status" -eq 2 ]
}

@test "trust, untrust, trusted: the own key is listed as self and cannot be untrusted" {
	mine=$(opt-log identity | jq -r .key)
	run opt-log trusted
	assert_success
	assert_output "{\"key\":\"$mine\",\"name\":\"this store\",\"self\":true}"
	k1=$(printf 'a%.0s' $(seq 64))
	k2=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
	run opt-log trust "$k1" --name alice
	assert_success
	assert_output ''
	run opt-log trust "$k2"
	assert_success
	run opt-log trusted
	assert_success
	[ "${#lines[@]}" -eq 3 ]
	assert_line --index 0 "{\"key\":\"$mine\",\"name\":\"this store\",\"self\":true}"
	assert_line "{\"key\":\"$k1\",\"name\":\"alice\"}"
	run bash -c "opt-log trusted | jq -r .key"
	assert_line "$k2"
	grep -q "^$k1 alice$" "$OPT_STORE/opt-trusted"
	# trusting again renames
	opt-log trust "$k1" --name alice2
	assert_equal "$(opt-log trusted | jq -r "select(.key == \"$k1\") | .name")" alice2
	# untrust
	run opt-log untrust "$k1"
	assert_success
	run bash -c "opt-log trusted | jq -r .key"
	refute_line "$k1"
	assert_line "$k2"
	run --separate-stderr opt-log untrust "$k1"
	[ "$status" -eq 1 ]
	# the store's own key cannot be untrusted
	run --separate-stderr opt-log untrust "$mine"
	[ "$status" -eq 2 ]
	[[ $stderr == *"own key"* ]] || fail "$stderr"
	run opt-log trusted
	assert_line --index 0 "{\"key\":\"$mine\",\"name\":\"this store\",\"self\":true}"
	# the log still verifies with the own key
	opt-tree put t k 1 >/dev/null
	run opt-log verify
	assert_success
}

@test "trust: bad keys and names exit 2 and change nothing" {
	opt-log identity >/dev/null
	before=$(opt-log trusted)
	for k in abc "$(printf 'A%.0s' $(seq 64))" "$(printf 'a%.0s' $(seq 63))" "$(printf 'a%.0s' $(seq 65))" \
		"$(printf 'g%.0s' $(seq 64))" ""; do
		run --separate-stderr opt-log trust "$k"
		[ "$status" -eq 2 ] || fail "trust '$k': exit $status"
		[[ $stderr == opt-log:* ]] || fail "$stderr"
	done
	run opt-log trust "$(printf 'b%.0s' $(seq 64))" --name $'two\nlines'
	[ "$status" -eq 2 ]
	run opt-log trust
	[ "$status" -eq 2 ]
	run opt-log untrust
	[ "$status" -eq 2 ]
	run opt-log trusted extra
	[ "$status" -eq 2 ]
	assert_equal "$(opt-log trusted)" "$before"
}

@test "untrust: a malformed key is a usage error (exit 2), as in trust" {
	opt-log identity >/dev/null
	for k in abc "$(printf 'A%.0s' $(seq 64))" "$(printf 'g%.0s' $(seq 64))" ""; do
		run --separate-stderr opt-log untrust "$k"
		[ "$status" -eq 2 ] || fail "untrust '$k': exit $status ($stderr)"
	done
}

@test "trust: trusting the store's own key changes nothing (it stays listed once, as self)" {
	mine=$(opt-log identity | jq -r .key)
	run opt-log trust "$mine" --name me
	assert_success
	run opt-log trusted
	assert_success
	assert_output "{\"key\":\"$mine\",\"name\":\"this store\",\"self\":true}"
}

@test "verify: an entry signed by a key the store does not trust is refused" {
	opt-tree put t k 1 >/dev/null
	# a second store writes a collection; its objects and ref are copied here
	opt-block init "$TMP/other" >/dev/null
	opt-tree put -C "$TMP/other" theirs k 1 >/dev/null 2>&1
	theirs=$(opt-log identity -C "$TMP/other" | jq -r .key)
	git --git-dir="$TMP/other" push -q "$OPT_STORE" refs/opt/collections/theirs:refs/opt/collections/theirs 2>/dev/null
	opt-log restrict >/dev/null
	run --separate-stderr opt-log verify theirs
	[ "$status" -eq 4 ]
	[[ $stderr == *"trust"* ]] || fail "$stderr"
	opt-log trust "$theirs" --name other
	run opt-log verify
	assert_success
	opt-log untrust "$theirs"
	run opt-log verify theirs
	[ "$status" -eq 4 ]
}

@test "plain git can push into a store: its git config parses (gc.auto)" {
	opt-tree put t k 1 >/dev/null
	opt-block init "$TMP/other" >/dev/null
	opt-tree put -C "$TMP/other" theirs k 1 >/dev/null 2>&1
	run --separate-stderr git --git-dir="$TMP/other" push "$OPT_STORE" refs/opt/collections/theirs:refs/opt/collections/theirs
	assert_success
	[[ $stderr != *fatal* ]] || fail "git push into the store: $stderr"
	run --separate-stderr git --git-dir="$OPT_STORE" gc --auto
	[ "$status" -eq 0 ] || fail "git gc --auto on the store: exit $status: $stderr"
}
