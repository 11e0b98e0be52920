#!/usr/bin/env bats
# opt-sync bundle: collections carried in one file between stores that
# never meet: full and incremental bundles, plain git reading them, offline
# divergence replayed on apply, --dry-run, and hostile bundles (tampered
# blocks, forged signatures, untrusted authors, rewound history, truncated
# files, garbage) refused with exit 4 and the receiving store unchanged.

load test_helper
load sync_helper

# No scratch repository is left in store $1.
no_scratch() { ! ls -d "$1"/opt-bundle.* 2>/dev/null; }

# Stores a (seeded) and b (empty), each trusting the other.
two_stores() {
	seed "$TMP/a"
	opt-block init "$TMP/b" >/dev/null
	trust_all "$TMP/a" "$TMP/b"
	trust_all "$TMP/b" "$TMP/a"
}

@test "a full bundle carries every collection: the receiver holds the same content, git reads the file" {
	two_stores
	cd "$TMP"
	run opt-sync -C a bundle create all.bundle
	assert_success
	assert_line --index 0 --regexp '^\{"collection":"events","rev":1,"commit":"[0-9a-f]{40}"\}$'
	assert_line --index 1 --regexp '^\{"collection":"things","rev":2,"commit":"[0-9a-f]{40}"\}$'
	assert_line --index 2 --regexp '^\{"collection":"users","rev":2,"commit":"[0-9a-f]{40}"\}$'
	assert_line --index 3 --regexp "^\\{\"file\":\"all.bundle\",\"bytes\":$(stat -c %s all.bundle),\"objects\":[0-9]+,\"collections\":3\\}\$"
	# plain git understands it
	run git --git-dir=a bundle verify all.bundle
	assert_success
	[ "$(git bundle list-heads all.bundle)" = "$(refs_of a | grep collections/ | awk '{print $2, $1}')" ]
	run opt-sync bundle ls all.bundle
	assert_success
	assert_output "$(refs_of a | grep collections/ | sed -E 's|refs/opt/collections/([^ ]*) (.*)|{"collection":"\1","commit":"\2"}|')"
	# verify changes nothing
	local before
	before=$(refs_of b)
	run opt-sync -C b bundle verify all.bundle
	assert_success
	assert_line --index 1 --regexp '^\{"collection":"things","rev":2,"commit":"[0-9a-f]{40}","status":"verified"\}$'
	[ "$before" = "$(refs_of b)" ]
	run opt-sync -C b bundle apply all.bundle
	assert_success
	assert_output '{"remote":"bundle","collection":"events","rev":1,"status":"new"}
{"remote":"bundle","collection":"things","rev":2,"status":"new"}
{"remote":"bundle","collection":"users","rev":2,"status":"new"}'
	[ "$(content_of a)" = "$(content_of b)" ]
	[ "$(refs_of a | grep collections/)" = "$(refs_of b | grep collections/)" ]
	# tracked as remote "bundle"; applying again changes nothing
	[ "$(refs_of b | grep remotes/bundle/ | sed 's|remotes/bundle|collections|')" = "$(refs_of a | grep collections/)" ]
	run opt-sync -C b bundle apply all.bundle
	assert_success
	assert_line '{"remote":"bundle","collection":"users","rev":2,"status":"up-to-date"}'
	run opt-log -C b verify
	assert_success
	fsck_ok b
	no_scratch b
	# a scratch repository left by a killed run goes after a day
	mkdir b/opt-bundle.old1 b/opt-bundle.new1
	touch -d '2 days ago' b/opt-bundle.old1
	opt-sync -C b bundle verify all.bundle >/dev/null
	[ ! -e b/opt-bundle.old1 ]
	[ -d b/opt-bundle.new1 ]
}

@test "incremental bundles: --since REMOTE, --base FILE, pipes; a missing prerequisite is named" {
	two_stores
	cd "$TMP"
	opt-sync -C a bundle create full.bundle >/dev/null
	opt-sync -C b bundle apply full.bundle >/dev/null
	opt-tree -C a put users carol '{"age":50}' >/dev/null
	# --base: what the earlier bundle carried is left out
	run opt-sync -C a bundle create inc.bundle --base full.bundle
	assert_success
	assert_output --regexp '^\{"collection":"users","rev":3,"commit":"[0-9a-f]{40}","since":2\}
\{"file":"inc.bundle","bytes":[0-9]+,"objects":[0-9]+,"collections":1\}$'
	[ "$(stat -c %s inc.bundle)" -lt "$(stat -c %s full.bundle)" ]
	run git bundle list-heads inc.bundle
	assert_output "$(git --git-dir=a rev-parse refs/opt/collections/users) refs/opt/collections/users"
	run opt-sync bundle ls inc.bundle
	assert_line --index 1 "{\"prerequisite\":\"$(git --git-dir=a rev-parse refs/opt/collections/users~1)\",\"comment\":\"users rev 2\"}"
	run git --git-dir=b bundle verify inc.bundle
	assert_success
	# a store without the prerequisite is told what it lacks (exit 1)
	opt-block init c >/dev/null
	run --separate-stderr opt-sync -C c bundle apply inc.bundle
	assert_failure 1
	[[ $stderr == *"needs commit "*"(users rev 2), which the store lacks: apply the bundle it follows first"* ]]
	[ -z "$(refs_of c)" ]
	no_scratch c
	# through a pipe
	run bash -c "opt-sync -C a bundle create - --base full.bundle | opt-sync -C b bundle apply -"
	assert_success
	assert_output '{"remote":"bundle","collection":"users","rev":3,"status":"fast-forward"}'
	[ "$(content_of a)" = "$(content_of b)" ]
	# --since REMOTE: what a's tracking refs of b say b has
	opt-sync -C a remote add b "$TMP/b"
	opt-sync -C a fetch b >/dev/null
	run --separate-stderr opt-sync -C a bundle create none.bundle --since b
	assert_failure 1
	[[ $stderr == *"nothing to bundle"* ]]
	[ ! -e none.bundle ]
	opt-diary -C a append events '{"n":3}' >/dev/null
	run opt-sync -C a bundle create since.bundle --since b
	assert_success
	assert_line --index 0 --regexp '^\{"collection":"events","rev":2,"commit":"[0-9a-f]{40}","since":1\}$'
	run opt-sync -C b bundle apply since.bundle
	assert_success
	assert_output '{"remote":"bundle","collection":"events","rev":2,"status":"fast-forward"}'
	[ "$(content_of a)" = "$(content_of b)" ]
	run --separate-stderr opt-sync -C a bundle create x.bundle --since nosuch
	assert_failure 1
	[[ $stderr == *"no remote 'nosuch'"* ]]
	# a bundle made by plain git (a thin pack) applies too
	local prev
	prev=$(git --git-dir=a rev-parse refs/opt/collections/users)
	opt-tree -C a put users dave '{"age":60}' >/dev/null
	git --git-dir=a bundle create git.bundle refs/opt/collections/users "^$prev" 2>/dev/null
	run opt-sync -C b bundle apply git.bundle
	assert_success
	assert_output '{"remote":"bundle","collection":"users","rev":4,"status":"fast-forward"}'
	[ "$(content_of a)" = "$(content_of b)" ]
}

@test "offline divergence: each side's changes replayed on apply, each exactly once; --dry-run shows the plan" {
	two_stores
	cd "$TMP"
	opt-sync -C a bundle create full.bundle >/dev/null
	opt-sync -C b bundle apply full.bundle --as a >/dev/null
	for i in 1 2 3; do
		opt-diary -C a append events "{\"a\":$i}" >/dev/null
		opt-diary -C b append events "{\"b\":$i}" >/dev/null
	done
	opt-tree -C a put users ann '{"from":"a"}' >/dev/null
	opt-tree -C b put users ben '{"from":"b"}' >/dev/null
	opt-tree -C b del users bob >/dev/null
	# b sends what a lacks: everything since what b got from a
	opt-sync -C b bundle create b.bundle --since a >/dev/null
	local before
	before=$(refs_of a)
	run opt-sync -C a bundle apply b.bundle --as b --dry-run
	assert_success
	assert_output '{"remote":"b","collection":"events","rev":4,"status":"replayed","dry_run":true,"replayed":3}
{"remote":"b","collection":"users","rev":3,"status":"replayed","dry_run":true,"replayed":1}'
	[ "$before" = "$(refs_of a)" ]
	no_scratch a
	# --conflict fail reports both sides as pull does; like a fetch, the
	# tracking refs take what was verified
	run --separate-stderr opt-sync -C a bundle apply b.bundle --as b --conflict fail
	assert_failure 3
	assert_line --partial '{"collection":"users","base":2,"ours":[{"key":"ann","type":"put","value":{"from":"a"}}],"theirs":['
	[ "$(echo "$before" | grep -v refs/opt/remotes/)" = "$(refs_of a | grep -v refs/opt/remotes/)" ]
	run opt-sync -C a bundle apply b.bundle --as b
	assert_success
	assert_output '{"remote":"b","collection":"events","rev":7,"status":"replayed","replayed":3}
{"remote":"b","collection":"users","rev":5,"status":"replayed","replayed":1}'
	# a sends its result back; b fast-forwards ("things" came in no
	# bundle from b, so a cannot know that b has it)
	opt-sync -C a bundle create a.bundle --since b >/dev/null
	run opt-sync -C b bundle apply a.bundle --as a --dry-run
	assert_output '{"remote":"a","collection":"events","rev":7,"status":"fast-forward","dry_run":true}
{"remote":"a","collection":"things","rev":2,"status":"up-to-date","dry_run":true}
{"remote":"a","collection":"users","rev":5,"status":"fast-forward","dry_run":true}'
	run opt-sync -C b bundle apply a.bundle --as a
	assert_success
	assert_output '{"remote":"a","collection":"events","rev":7,"status":"fast-forward"}
{"remote":"a","collection":"things","rev":2,"status":"up-to-date"}
{"remote":"a","collection":"users","rev":5,"status":"fast-forward"}'
	[ "$(content_of a)" = "$(content_of b)" ]
	[ "$(refs_of a | grep collections/)" = "$(refs_of b | grep collections/)" ]
	run opt-diary -C b read events --compact
	assert_output '{"n":1}
{"n":2}
{"b":1}
{"b":2}
{"b":3}
{"a":1}
{"a":2}
{"a":3}'
	run opt-tree -C b range users
	assert_output '{"key":"alice","value":{"age":30}}
{"key":"ann","value":{"from":"a"}}
{"key":"ben","value":{"from":"b"}}'
	run opt-log -C a verify
	assert_success
	run opt-log -C b verify
	assert_success
}

@test "a multi-collection transaction travels whole and stays all-or-nothing" {
	two_stores
	cd "$TMP"
	opt-sync -C a bundle create full.bundle >/dev/null
	opt-sync -C b bundle apply full.bundle >/dev/null
	local trx
	trx=$(echo '{"collections":{"events":[{"type":"append","entry":"multi"}],"users":[{"type":"put","key":"m","value":1}]}}' |
		opt-log -C a commit | jq -r .trx)
	# a bundle of one of them carries the other too
	run opt-sync -C a bundle create m.bundle users --base full.bundle
	assert_success
	assert_line --index 0 --partial '{"collection":"events","rev":2,'
	assert_line --index 1 --partial '{"collection":"users","rev":3,'
	# one of them tampered: neither moves
	cp -r a evil
	GD=$TMP/evil
	tamper users 3 edit_block "$(header_id users)" '.count = 7'
	opt-sync -C evil bundle create evil.bundle users --base full.bundle >/dev/null
	local before
	before=$(refs_of b)
	run --separate-stderr opt-sync -C b bundle apply evil.bundle
	assert_failure 4
	[[ $stderr == *"collection 'users' refused"* ]]
	[ "$before" = "$(refs_of b)" ]
	# applying one collection brings the transaction whole
	run opt-sync -C b bundle apply m.bundle users
	assert_success
	assert_output '{"remote":"bundle","collection":"events","rev":2,"status":"fast-forward"}
{"remote":"bundle","collection":"users","rev":3,"status":"fast-forward"}'
	run opt-log -C b status "$trx"
	assert_output --partial '"status":"committed"'
	[ "$(content_of a)" = "$(content_of b)" ]
}

@test "hostile bundles are refused with exit 4, the store unchanged: tampered block, forged signature, untrusted author" {
	two_stores
	cd "$TMP"
	opt-sync -C a bundle create full.bundle >/dev/null
	opt-sync -C b bundle apply full.bundle >/dev/null
	echo "{\"header\":{\"id\":\"$C\",\"type\":\"t\"},\"v\":3}" | opt-block -C a put -c things >/dev/null
	opt-diary -C a append events '{"n":3}' >/dev/null
	local before
	before=$(refs_of b)
	# a tampered block
	cp -r a t1
	GD=$TMP/t1
	tamper things 3 edit_block "$A" '.v = 99'
	opt-sync -C t1 bundle create t1.bundle things --base full.bundle >/dev/null
	for verb in verify apply; do
		run --separate-stderr opt-sync -C b bundle $verb t1.bundle
		assert_failure 4
		[[ $stderr == *"bundle 't1.bundle'"*"collection 'things' refused: "*"does not match the hash"* ]]
		[ "$before" = "$(refs_of b)" ]
	done
	run opt-sync -C b bundle apply t1.bundle --dry-run
	assert_failure 4
	# a forged log entry: its hash recomputed, its signature no longer fits
	cp -r a t2
	GD=$TMP/t2
	tamper events 2 edit_log_tail '.entries[-1].time += 1'
	opt-sync -C t2 bundle create t2.bundle events --base full.bundle >/dev/null
	run --separate-stderr opt-sync -C b bundle apply t2.bundle
	assert_failure 4
	[[ $stderr == *"collection 'events' refused: log entry rev 2"* ]]
	[ "$before" = "$(refs_of b)" ]
	# an author b does not trust
	opt-block init m >/dev/null
	trust_all m a
	opt-sync -C m bundle apply full.bundle >/dev/null
	opt-diary -C m append events '"by m"' >/dev/null
	opt-sync -C m bundle create m.bundle events --base full.bundle >/dev/null
	run --separate-stderr opt-sync -C b bundle apply m.bundle
	assert_failure 4
	[[ $stderr == *"which this store does not trust (opt-log trust KEY)"* ]]
	[ "$before" = "$(refs_of b)" ]
	opt-log -C b trust "$(key_of m)" --name m
	run opt-sync -C b bundle apply m.bundle
	assert_success
	run opt-diary -C b read events --reverse --limit 1
	assert_output '"by m"'
	no_scratch b
}

@test "hostile bundles: rewound history, truncated files, garbage and bad headers are refused (exit 4)" {
	two_stores
	cd "$TMP"
	opt-tree -C a put users x 1 >/dev/null
	opt-sync -C a bundle create full.bundle >/dev/null
	opt-sync -C b bundle apply full.bundle >/dev/null
	local before
	before=$(refs_of b)
	# a drops its last revision, then writes another one
	git --git-dir=a update-ref refs/opt/collections/users refs/opt/collections/users~1
	opt-tree -C a put users y 2 >/dev/null
	opt-sync -C a bundle create rewound.bundle users >/dev/null
	run --separate-stderr opt-sync -C b bundle apply rewound.bundle
	assert_failure 4
	[[ $stderr == *"collection 'users' was rewound"* ]]
	[ "$before" = "$(refs_of b)" ]
	run --separate-stderr opt-sync -C b bundle verify rewound.bundle
	assert_failure 4
	[[ $stderr == *"collection 'users' was rewound"* ]]
	# truncated: in the pack, and in the header
	local size
	size=$(stat -c %s full.bundle)
	head -c $((size - 30)) full.bundle >cut.bundle
	head -c 60 full.bundle >head.bundle
	printf '# v2 git bundle\n%s refs/opt/collections/users\n\n' "$(git --git-dir=a rev-parse refs/opt/collections/users)" >nopack.bundle
	head -c 200 /dev/urandom >garbage.bundle
	{ printf '# v2 git bundle\n%s refs/opt/collections/users\n\n' "$(git --git-dir=a rev-parse refs/opt/collections/users)"
	  printf 'PACK\0\0\0\2\0\0\0\5'; head -c 300 /dev/urandom; } >badpack.bundle
	printf '# v2 git bundle\nnot a ref line\n\n' >badref.bundle
	printf '# v2 git bundle\n%s refs/opt/collections/../x\n\n' "$(git --git-dir=a rev-parse refs/opt/collections/users)" >badname.bundle
	{ printf '# v2 git bundle\n'; head -c 5000 /dev/zero | tr '\0' a; printf '\n\n'; } >longline.bundle
	for f in cut head nopack garbage badpack badref badname longline; do
		run --separate-stderr opt-sync -C b bundle apply $f.bundle
		[ "$status" -eq 4 ] || fail "$f.bundle: exit $status: $stderr"
		[[ $stderr == "opt-sync: "*"bundle"* ]] || fail "$f.bundle: $stderr"
		[ "$before" = "$(refs_of b)" ] || fail "$f.bundle moved a ref"
		run opt-sync -C b bundle verify $f.bundle
		[ "$status" -eq 4 ] || fail "verify $f.bundle: exit $status"
	done
	# a pack that lacks an object its heads need (a revision b has not
	# seen: the objects of the refused transfer above did not stay, so
	# the history breaks off before the tree it lacks)
	local users
	opt-tree -C a put users z 3 >/dev/null
	users=$(git --git-dir=a rev-parse refs/opt/collections/users)
	{ printf '# v2 git bundle\n%s refs/opt/collections/users\n\n' "$users"
	  echo "$users" | git --git-dir=a pack-objects --stdout; } >incomplete.bundle
	run --separate-stderr opt-sync -C b bundle apply incomplete.bundle
	assert_failure 4
	[[ $stderr == *"bundle 'incomplete.bundle' is incomplete: its history breaks off: "* ]]
	[ "$before" = "$(refs_of b)" ]
	run --separate-stderr opt-sync -C b bundle apply nosuch.bundle
	assert_failure 1
	no_scratch b
	run opt-log -C b verify
	assert_success
}

@test "bundle: usage errors and --help" {
	run --separate-stderr opt-sync bundle
	assert_failure 2
	run --separate-stderr opt-sync bundle frob x
	assert_failure 2
	run --separate-stderr opt-sync bundle create
	assert_failure 2
	run --separate-stderr opt-sync bundle create x.bundle --since a --base y
	assert_failure 2
	[[ $stderr == *"--since and --base exclude each other"* ]]
	run --separate-stderr opt-sync bundle apply x.bundle --since a
	assert_failure 2
	run --separate-stderr opt-sync bundle create x.bundle --dry-run
	assert_failure 2
	run --separate-stderr opt-sync bundle apply x.bundle --as 'a/b'
	assert_failure 2
	run --separate-stderr opt-sync bundle ls x.bundle more
	assert_failure 2
	run opt-sync bundle --help
	assert_success
	# the usage, wrapped at 80 columns
	[[ $(tr '\n' ' ' <<<"$output" | sed 's/  */ /g') == *'apply FILE [COLL...] [--as NAME] [--dry-run] [--conflict POLICY]'* ]] ||
		fail "$output"
}

@test "completion: bundle's subcommands, remote names for --since and --as, files for --base (bash, zsh, fish)" {
	opt-sync remote add origin /x
	opt-sync remote add peer /y
	touch "$TMP/base1.bundle" "$TMP/base2.bundle"
	bc() {
		(
			# shellcheck disable=SC1091
			source "$TOP/completions/opt.bash"
			COMP_WORDS=("$@")
			COMP_CWORD=$(($# - 1))
			_opt_complete
			printf '%s\n' "${COMPREPLY[@]}"
		)
	}
	run bc opt-sync bundle ''
	assert_output $'create\nverify\nls\napply'
	run bc opt-sync bundle a
	assert_output 'apply'
	run bc opt-sync remote ''
	assert_output $'add\nrm\nls'
	run bc opt-sync bundle create x.bundle --since ''
	assert_output $'origin\npeer'
	run bc opt-sync bundle apply x.bundle --as=p
	assert_output '--as=peer'
	run bc opt-sync bundle create x.bundle --base "$TMP/base"
	assert_output "$TMP/base1.bundle"$'\n'"$TMP/base2.bundle"
	if command -v zsh >/dev/null; then
		cat >"$TMP/zt.zsh" <<ZSH
source '$TOP/completions/opt.zsh'
t() { words=("\$@"); CURRENT=\$#; _opt_analyse; print -r -- "\$_opt_kind:\$_opt_pre:\${(j: :)_opt_cands}"; }
t opt-sync bundle ''
t opt-sync bundle create x --since ''
t opt-sync bundle apply x --as=
t opt-sync bundle create x --base ''
t opt-sync bundle apply ''
ZSH
		run zsh -f "$TMP/zt.zsh"
		assert_success
		assert_output 'verbs::create verify ls apply
remote::origin peer
remote:--as=:origin peer
file::
operand::'
	fi
	if command -v fish >/dev/null; then
		sed 's/@PROG@/opt-sync/g' "$TOP/completions/opt.fish" >"$TMP/opt-sync.fish"
		run fish --no-config -c "source '$TMP/opt-sync.fish'; complete -C 'opt-sync bundle '"
		assert_equal "$(cut -f1 <<<"$output")" $'apply\ncreate\nls\nverify'
		run fish --no-config -c "source '$TMP/opt-sync.fish'; complete -C 'opt-sync bundle create x --since '"
		assert_equal "$(cut -f1 <<<"$output")" $'origin\npeer'
		run fish --no-config -c "source '$TMP/opt-sync.fish'; complete -C 'opt-sync bundle apply x --as=o'"
		assert_equal "$(cut -f1 <<<"$output")" '--as=origin'
		run fish --no-config -c "cd '$TMP'; source '$TMP/opt-sync.fish'; complete -C 'opt-sync bundle create x --base base'"
		assert_equal "$(cut -f1 <<<"$output")" $'base1.bundle\nbase2.bundle'
	fi
}
