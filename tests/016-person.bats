#!/usr/bin/env bats
# What a new user meets: a store named explicitly must exist, block ID
# rules in messages, listing only user blocks, human forms of the log,
# quiet runs, help text, versions, and plain git on a store.

load test_helper

# ---- a store named explicitly must exist ----

@test "a store named with --store, -C or OPT_STORE that does not exist is an error, and nothing is created" {
	run -7 --separate-stderr opt-tree -C "$TMP/typo/x" put users alice 1
	assert_equal "$stderr" "opt-tree: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	assert_equal "$output" ""
	[ ! -e "$TMP/typo" ]
	run -7 --separate-stderr opt-block --store "$TMP/typo/x" put -c c <<<'{"v":1}'
	assert_equal "$stderr" "opt-block: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	[ ! -e "$TMP/typo" ]
	OPT_STORE="$TMP/nonexistent/x" run -7 --separate-stderr opt-diary append events 1
	assert_equal "$stderr" "opt-diary: no store at '$TMP/nonexistent/x' (opt-block init $TMP/nonexistent/x creates one)"
	[ ! -e "$TMP/nonexistent" ]
	OPT_STORE="$TMP/nonexistent/x" run -7 --separate-stderr opt-log commit <<<'{"collections":{"t":[{"type":"put","key":"k","value":1}]}}'
	[ ! -e "$TMP/nonexistent" ]
	# readers say the same
	run -7 --separate-stderr opt-tree -C "$TMP/typo/x" get users alice
	assert_equal "$stderr" "opt-tree: no store at '$TMP/typo/x' (opt-block init $TMP/typo/x creates one)"
	# an empty directory named explicitly is not a store either
	mkdir "$TMP/empty"
	run -7 --separate-stderr opt-tree -C "$TMP/empty" put users alice 1
	assert_equal "$stderr" "opt-tree: '$TMP/empty' is not an optimystic store"
	run ls -A "$TMP/empty"
	assert_output ""
}

@test "opt-block init and opt-sync clone create the store they are given; ./.opt is created on first write" {
	run opt-block init "$TMP/a/b/s"
	assert_success
	run opt-block -C "$TMP/c/s" init
	assert_success
	run opt-tree -C "$TMP/c/s" put users alice 1
	assert_success
	run opt-sync clone "$TMP/c/s" "$TMP/d/s"
	assert_success
	run opt-tree -C "$TMP/d/s" get users alice
	assert_output '{"key":"alice","value":1}'
	# no store named: ./.opt is made on the first write, and said so
	unset OPT_STORE
	mkdir "$TMP/w" && cd "$TMP/w"
	run --separate-stderr opt-tree put users alice 1
	assert_success
	assert_equal "$stderr" "opt-tree: created store '.opt'"
	[ -d "$TMP/w/.opt" ]
}

# ---- block IDs ----

@test "an invalid block ID is refused with the rule: base32, a-z and 2-7, 2 to 64 characters" {
	rule='block IDs are base32: a-z and 2-7, 2 to 64 characters'
	echo '{"header":{"id":"alice","type":"user"}}' | opt-block put -c users >/dev/null
	run -2 --separate-stderr opt-block get -c users user1
	assert_equal "$stderr" "opt-block: invalid block ID 'user1' ($rule)"
	run -2 --separate-stderr opt-block history -c users user1
	assert_equal "$stderr" "opt-block: invalid block ID 'user1' ($rule)"
	run -2 --separate-stderr opt-block rm -c users Alice
	assert_equal "$stderr" "opt-block: invalid block ID 'Alice' ($rule)"
	run -2 --separate-stderr opt-block apply -c users x <<<'["v",0,0,1]'
	assert_equal "$stderr" "opt-block: invalid block ID 'x' ($rule)"
	run -2 --separate-stderr opt-block put -c users <<<'{"header":{"id":"user1","type":"user"}}'
	assert_equal "$stderr" "opt-block: line 1: invalid block ID 'user1' ($rule) (nothing written)"
	# the README's and opt-block(1)'s first pages say it
	grep -q 'a-z.*2-7' "$TOP/README.md"
	grep -q 'user1' "$TOP/README.md"
	grep -q 'user1' "$TOP/man/opt-block.1"
}

# ---- opt-log show: resolved status, human forms ----

TWO='{"collections": {"a": [{"type": "put", "key": "k", "value": 1}], "b": [{"type": "append", "entry": 1}]}}'

@test "show: the non-primary part of a committed transaction says it is committed (\"resolved\"), its stored status kept" {
	run opt-log commit <<<"$TWO"
	assert_success
	trx=$(jq -r .trx <<<"$output")
	# a is not the primary (b, the last name, is): its entry is stored pending
	run opt-log show a
	assert_success
	assert_equal "$(jq -c '[.trx, .status, .resolved]' <<<"$output")" "[\"$trx\",\"pending\",\"committed\"]"
	# the hash still covers the entry as stored (without "resolved")
	h=$(jq -cS 'del(.hash, .sig, .actions, .resolved)' <<<"$output" | tr -d '\n' | sha256sum | cut -d' ' -f1)
	assert_equal "$h" "$(jq -r .hash <<<"$output")"
	# the primary's entry is stored committed: nothing added
	run opt-log show b
	assert_equal "$(jq -c '[.status, .resolved]' <<<"$output")" '["committed",null]'
	run opt-log show a --oneline
	assert_output --regexp "^1 $trx [0-9T:+-]+ committed 1 put\$"
	run opt-log verify
	assert_success
}

@test "show: the non-primary part of an aborted transaction says it is aborted" {
	run env OPT_TXN_TTL=100 OPT_TEST_CRASH=txn:pended opt-log commit <<<"$TWO"
	[ "$status" -eq 137 ]
	sleep 0.2
	# the next writer of a aborts it and reverts a
	opt-tree put a other 2 >/dev/null
	run opt-log show a
	assert_success
	assert_equal "$(jq -c '[.rev, .status, .resolved]' <<<"$output" | tr '\n' ' ')" \
		'[1,"pending","aborted"] [2,"aborted",null] [3,null,null] '
	run opt-log show a --format '%r %s'
	assert_output "$(printf '1 aborted\n2 aborted\n3 committed')"
}

@test "show --oneline and --format: revision, transaction, a date, the status and the actions, one line an entry" {
	export TZ=UTC
	opt-tree put t k 1 >/dev/null
	printf '%s\n' '{"key":"a","value":1}' '{"key":"b","value":2}' | opt-tree put t >/dev/null
	opt-tree del t k >/dev/null
	opt-log show t >"$TMP/json"
	run opt-log show t --oneline
	assert_success
	assert_equal "${#lines[@]}" 3
	i=0
	for want in '1 put' '2 put' '1 del'; do
		e=$(sed -n "$((i + 1))p" "$TMP/json")
		trx=$(jq -r .trx <<<"$e")
		t=$(jq -r '.time / 1000 | floor' <<<"$e")
		d=$(date -u -d "@$t" +%Y-%m-%dT%H:%M:%S+00:00)
		assert_equal "${lines[$i]}" "$((i + 1)) $trx $d committed $want"
		i=$((i + 1))
	done
	# every placeholder
	e=$(sed -n 2p "$TMP/json")
	run opt-log show t --from 2 --to 2 --format '%r|%x|%t|%T|%s|%A|%N|%c|%p|%H|%h|%a|%%|%n.'
	assert_success
	assert_equal "${lines[0]}" "$(jq -r '[.rev, .trx, (.time / 1000 | floor), .time, "committed", "2 put", 2, "t", "",
		.hash, .hash[:12], .author, "%"] | map(tostring) | join("|")' <<<"$e")|"
	assert_equal "${lines[1]}" "."
	# a checkpoint prunes actions
	opt-log checkpoint t --upto 1 >/dev/null
	run opt-log show t --to 1 --format '%A|%N'
	assert_output 'pruned|'
	# JSON stays the default, on a terminal too (--pretty)
	run opt-log show t --limit 1
	assert_equal "$(jq -r .rev <<<"$output")" 1
	# errors
	run -2 --separate-stderr opt-log show t --format '%q'
	assert_equal "${stderr_lines[0]}" "opt-log: --format: unknown placeholder '%q' (see opt-log(1)); try 'opt-log show --help'"
	run -2 --separate-stderr opt-log show t --format 'x%'
	assert_equal "${stderr_lines[0]}" "opt-log: --format: unknown placeholder '%' (see opt-log(1)); try 'opt-log show --help'"
	run -2 --separate-stderr opt-log show t --oneline --format '%r'
	assert_equal "${stderr_lines[0]}" "opt-log: --oneline and --format are exclusive (--oneline is --format='%r %x %d %s %A'); try 'opt-log show --help'"
}

# ---- opt-block ls --no-internal ----

@test "ls --no-internal lists only the blocks put, apply and transform write, not headers, logs or tree and diary nodes" {
	printf '%s\n' '{"header":{"id":"alice","type":"user"}}' '{"header":{"id":"bob","type":"TL"}}' |
		opt-block put -c users >/dev/null
	opt-tree put t k 1 >/dev/null
	opt-diary append d 1 >/dev/null
	# the default stays: every block
	run opt-block ls
	assert_success
	assert_equal "$(jq -r .type <<<"$output" | sort | tr '\n' ' ')" 'COL DIC DID DIH LGD LGD LGD TL TL TRE user '
	run opt-block ls --no-internal
	assert_success
	assert_output "$(printf '%s\n' '{"id":"alice","type":"user","collection":"users"}' '{"id":"bob","type":"TL","collection":"users"}')"
	run opt-block ls -c users --no-internal --type user
	assert_output '{"id":"alice","type":"user","collection":"users"}'
	run opt-block ls -c t --no-internal
	assert_success
	assert_output ''
	run opt-block ls -c users --rev 1 --no-internal
	assert_equal "${#lines[@]}" 2
}

# ---- -q: only what changed or failed ----

@test "-q: opt-sync pull, push and fetch print no record for a collection with nothing to do" {
	export OPT_FSYNC=0
	opt-tree put users alice 1 >/dev/null
	opt-diary append events 1 >/dev/null
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	# nothing to do: without -q a record each, with -q nothing
	run opt-sync -C "$TMP/b" pull
	assert_equal "${#lines[@]}" 2
	run --separate-stderr opt-sync -C "$TMP/b" pull -q
	assert_success
	assert_output ''
	assert_equal "$stderr" ''
	run opt-sync -C "$TMP/b" push -q
	assert_success
	assert_output ''
	run opt-sync -C "$TMP/b" fetch -q
	assert_success
	assert_output ''
	run opt-sync -C "$TMP/b" pull -q --dry-run
	assert_success
	assert_output ''
	# what changed is still printed
	opt-tree put users bob 2 >/dev/null
	run opt-sync -C "$TMP/b" pull -q
	assert_success
	assert_output '{"remote":"origin","collection":"users","rev":2,"status":"fast-forward"}'
	opt-tree -C "$TMP/b" put users carol 3 >/dev/null
	run opt-sync -C "$TMP/b" push -q
	assert_output '{"remote":"origin","collection":"users","rev":3,"status":"pushed"}'
	# and what failed
	opt-sync -C "$TMP/b" remote add gone "$TMP/gone"
	run -5 --separate-stderr opt-sync -C "$TMP/b" pull -q gone
	[[ $stderr == "opt-sync: "* ]] || fail "$stderr"
}

@test "-q: opt-block init of an existing store prints nothing; a new one is still reported" {
	run opt-block init -q "$OPT_STORE"
	assert_success
	assert_output ''
	run opt-block init -q "$TMP/new"
	assert_output "{\"store\":\"$TMP/new\",\"created\":true}"
}

# ---- plain git on a store ----

@test "git count-objects finds no garbage after a repack (the repack lock is not in objects/pack); an old store's lock there goes" {
	opt-tree put t k 1 >/dev/null
	opt-tree put t k 2 >/dev/null
	opt-block gc >/dev/null
	run --separate-stderr git --git-dir="$OPT_STORE" count-objects -v
	assert_success
	assert_line 'garbage: 0'
	assert_equal "$stderr" ''
	[ ! -e "$OPT_STORE/objects/pack/opt-repack.lock" ]
	# a store written by an earlier version has its lock in objects/pack
	: >"$OPT_STORE/objects/pack/opt-repack.lock"
	opt-tree put t k 3 >/dev/null
	opt-block gc >/dev/null
	[ ! -e "$OPT_STORE/objects/pack/opt-repack.lock" ]
	run --separate-stderr git --git-dir="$OPT_STORE" count-objects -v
	assert_line 'garbage: 0'
	assert_equal "$stderr" ''
	run opt-tree get t k
	assert_output '{"key":"k","value":3}'
	fsck_ok
}

@test "git log in a new store says what the store is and how to see its collections; fsck --strict passes" {
	s="$TMP/fresh"
	opt-block init "$s" >/dev/null
	run --separate-stderr git --git-dir="$s" log
	assert_success
	assert_output --partial 'optimystic store'
	assert_output --partial 'git log --all'
	assert_output --partial 'refs/opt/collections/NAME'
	opt-tree -C "$s" put users alice 1 >/dev/null
	run git --git-dir="$s" log --all --format=%s
	assert_success
	assert_line 'opt-tree put'
	# the store's collections and refs are only its collections
	run git --git-dir="$s" for-each-ref --format='%(refname)'
	assert_output 'refs/opt/collections/users'
	fsck_ok "$s"
	# a clone has one too
	opt-sync clone "$s" "$TMP/clone" >/dev/null
	run git --git-dir="$TMP/clone" log --format=%s
	assert_success
	assert_output 'optimystic store'
	fsck_ok "$TMP/clone"
}

# ---- help, version, mistyped commands ----

@test "--version: the release number of VERSION, and the commit when built from git; a tarball gives the release" {
	rel=$(cat "$TOP/VERSION")
	[[ $rel =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "VERSION holds '$rel'"
	for n in opt-block opt-tree opt-diary opt-log opt-sync; do
		run --separate-stderr "$n" --version
		assert_success
		[[ $output =~ ^$n\ $rel(\ \([0-9a-f]{12}(-dirty)?\))?$ ]] || fail "$n --version: '$output'"
	done
	command -v git >/dev/null && git -C "$TOP" rev-parse HEAD >/dev/null 2>&1 || skip "not a git checkout"
	run make -s -C "$TOP" version
	assert_output --regexp "^$rel \\([0-9a-f]{12}(-dirty)?\\)\$"
	# outside a git checkout (what make dist packs): the release alone
	mkdir "$TMP/dist"
	cp "$TOP/Makefile" "$TOP/VERSION" "$TMP/dist/"
	run make -s -C "$TMP/dist" version
	assert_output "$rel"
}

@test "a mistyped command is answered with the nearest one: did you mean" {
	run -2 --separate-stderr opt-tree rnage users
	assert_equal "${stderr_lines[0]}" "opt-tree: unknown command 'rnage' (did you mean 'range'?); try 'opt-tree --help'"
	run -2 --separate-stderr opt-block gte -c x aa
	assert_equal "${stderr_lines[0]}" "opt-block: unknown command 'gte' (did you mean 'get'?); try 'opt-block --help'"
	run -2 --separate-stderr opt-log verfy
	assert_equal "${stderr_lines[0]}" "opt-log: unknown command 'verfy' (did you mean 'verify'?); try 'opt-log --help'"
	run -2 --separate-stderr opt-sync pul
	assert_equal "${stderr_lines[0]}" "opt-sync: unknown command 'pul' (did you mean 'pull'?); try 'opt-sync --help'"
	run -2 --separate-stderr opt-diary apend d 1
	assert_equal "${stderr_lines[0]}" "opt-diary: unknown command 'apend' (did you mean 'append'?); try 'opt-diary --help'"
	# nothing near: no guess
	run -2 --separate-stderr opt-tree frobnicate
	assert_equal "${stderr_lines[0]}" "opt-tree: unknown command 'frobnicate'; try 'opt-tree --help'"
}

@test "--help fits in 80 columns, every program and command; history reads its collection" {
	local n v long=
	for n in opt-block opt-tree opt-diary opt-log opt-sync; do
		for v in "" $("$n" --complete | grep -v -- '^-'); do
			# shellcheck disable=SC2086
			long+=$("$n" $v --help | awk -v w="$n $v" 'length($0) > 80 { print w ": " $0 }')
		done
	done
	[ -z "$long" ] || fail "lines over 80 columns:
$long"
	# a wrapped usage goes on under the first operand
	run opt-sync push --help
	assert_line --index 0 'usage: opt-sync push [REMOTE] [COLL...] [--dry-run] [--conflict POLICY]'
	assert_line --index 1 '                     [--cluster] [--min N] [--retries N] [--promote]'
	run opt-block history --help
	assert_line --regexp '^  -c, --collection COLL +the collection to read$'
}

@test "-n keeps its meaning per program (--limit; --dry-run in opt-sync), and opt(7) says so" {
	opt-tree put t a 1 >/dev/null
	opt-tree put t b 2 >/dev/null
	run opt-tree range t -n 1
	assert_output '{"key":"a","value":1}'
	run opt-log show t -n 1 --format '%r'
	assert_output 1
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	opt-tree put t c 3 >/dev/null
	run opt-sync -C "$TMP/b" pull -n
	assert_success
	assert_output --partial '"dry_run":true'
	run opt-tree -C "$TMP/b" count t
	assert_output 2
	# documented where the common options are
	run sh -c "mandoc -T ascii '$TOP/man/opt.7' | col -b | tr -s ' \\n' '  '"
	assert_output --partial '-n N is --limit N in opt-tree(1), opt-diary(1) and opt-log(1), and -n is --dry-run in opt-sync(1)'
}

@test "the documents the docs name are in the repository (the design is docs/design.md)" {
	local f r missing=
	cd "$TOP"
	[ -f docs/design.md ] || fail "docs/design.md is missing"
	# docs/design.md is the starting design as it was written (it names
	# files of its own time, which its preface lists)
	for f in README.md bench/README.md docs/*.md man/*.1 man/*.7; do
		[ "$f" = docs/design.md ] && continue
		for r in $(grep -ohE '[A-Za-z0-9_./-]*[A-Za-z0-9_-]+\.(md|pml)\b' "$f" | sort -u); do
			[ -e "$r" ] || [ -e "$(dirname "$f")/$r" ] || missing+=" $f:$r"
		done
	done
	[ -z "$missing" ] || fail "named but not in the repository:$missing"
}

# ---- completions ----

# What bash completion offers for the words "$@" (the last is completed).
bash_offers() {
	(
		# shellcheck disable=SC1091
		source "$TOP/completions/opt.bash"
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		_opt_complete
		printf '%s\n' "${COMPREPLY[@]}"
	)
}

@test "completions: peer's subcommands, collection names of tree, diary and log commands, remote names of sync commands, --conflict's policies (bash, zsh, fish)" {
	export OPT_FSYNC=0
	opt-tree put users k 1 >/dev/null
	opt-diary append events 1 >/dev/null
	opt-sync remote add origin "$TMP/o"
	opt-sync remote add backup "$TMP/b"
	colls=$'events\nusers'
	# bash
	run bash_offers opt-sync peer ''
	assert_output $'add\nrm\nls'
	run bash_offers opt-sync peer rm ''
	assert_output $'origin\nbackup'
	run bash_offers opt-tree get ''
	assert_output "$colls"
	run bash_offers opt-tree range u
	assert_output 'users'
	run bash_offers opt-tree range --limit 3 u
	assert_output 'users'
	run bash_offers opt-diary read ''
	assert_output "$colls"
	run bash_offers opt-log show ''
	assert_output "$colls"
	run bash_offers opt-log verify events ''
	assert_output "$colls"
	run bash_offers opt-sync pull ''
	assert_output $'origin\nbackup'
	run bash_offers opt-sync push -n o
	assert_output 'origin'
	run bash_offers opt-sync push origin ''
	assert_output "$colls"
	run bash_offers opt-sync pull --cluster ''
	assert_output "$colls"
	run bash_offers opt-sync push --conflict ''
	assert_output $'replay\nkeep-remote\nfail\nexec:'
	run bash_offers opt-sync pull --conflict = k
	assert_output 'keep-remote'
	run bash_offers opt-sync pull --conflict=f
	assert_output '--conflict=fail'
	if command -v zsh >/dev/null; then
		cat >"$TMP/zt.zsh" <<EOF
source '$TOP/completions/opt.zsh'
t() { words=("\$@"); CURRENT=\$#; _opt_analyse; print -r -- "\$_opt_kind:\$_opt_pre:\${(j: :)_opt_cands}"; }
t opt-sync peer ''
t opt-sync peer rm ''
t opt-tree get ''
t opt-tree range --limit 3 u
t opt-diary read ''
t opt-log show ''
t opt-log verify events ''
t opt-sync pull ''
t opt-sync push origin ''
t opt-sync push --conflict ''
t opt-sync push --conflict=k
t opt-tree get users ''
EOF
		run zsh -f "$TMP/zt.zsh"
		assert_success
		assert_output "verbs::add rm ls
remote::origin backup
collection::events users
collection::events users
collection::events users
collection::events users
collection::events users
remote::origin backup
collection::events users
conflict::replay keep-remote fail exec:
conflict:--conflict=:replay keep-remote fail exec:
operand::"
	fi
	if command -v fish >/dev/null; then
		local n
		for n in opt-sync opt-tree opt-diary opt-log; do
			sed "s/@PROG@/$n/g" "$TOP/completions/opt.fish" >"$TMP/$n.fish"
		done
		fc() { fish --no-config -c "source '$TMP/${1%% *}.fish'; complete -C '$1'" | cut -f1 | sort; }
		run fc 'opt-sync peer '
		assert_output $'add\nls\nrm'
		run fc 'opt-sync peer rm '
		assert_output $'backup\norigin'
		run fc 'opt-tree get '
		assert_output "$colls"
		run fc 'opt-tree range --limit 3 u'
		assert_output 'users'
		run fc 'opt-diary read '
		assert_output "$colls"
		run fc 'opt-log show '
		assert_output "$colls"
		run fc 'opt-log verify events '
		assert_output "$colls"
		run fc 'opt-sync pull '
		assert_output $'backup\norigin'
		run fc 'opt-sync push origin '
		assert_output "$colls"
		run fc 'opt-sync push --conflict '
		assert_output $'exec:\nfail\nkeep-remote\nreplay'
		run fc 'opt-sync push --conflict=k'
		assert_output '--conflict=keep-remote'
	fi
}
