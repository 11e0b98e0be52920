#!/usr/bin/env bats
# opt-sync against real git servers on loopback: git daemon with
# receive-pack (git://) and sshd on a high port with its own config and
# ed25519 keys.  The servers are started by each test and stopped after
# it; a test is skipped, with the reason, when its server cannot start.
# Over these transports a push is compare-and-swap through git
# receive-pack: a lost race shows in the push_update_reference status.

load test_helper
load servers

# Serve the stores under $TMP/srv with git daemon (push enabled); sets
# GITURL to the base URL.
start_git_daemon() {
	local port tries
	command -v git >/dev/null || skip "git is not installed"
	[ -x "$(git --exec-path)/git-daemon" ] || skip "git daemon is not available (apt-get install git-daemon-run or git)"
	mkdir -p "$TMP/srv"
	for tries in 1 2 3; do
		port=$(free_port) || skip "no free port"
		git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$TMP/srv" --export-all \
			--enable=receive-pack --informative-errors "$TMP/srv" >"$TMP/daemon.log" 2>&1 &
		SERVER_PIDS+=($!)
		if wait_port "$port"; then
			GITURL="git://127.0.0.1:$port"
			ignore_libgit2_leaks
			return 0
		fi
	done
	skip "git daemon did not start: $(cat "$TMP/daemon.log")"
}

# sshd on a high port, accepting our own ed25519 key for the current user;
# $HOME/.ssh/known_hosts knows its host key; OPT_SSH_KEY is the key.  Sets
# SSHURL to the base URL (append an absolute path).
start_sshd() {
	local sshd port user
	sshd=$(command -v sshd || echo /usr/sbin/sshd)
	[ -x "$sshd" ] || skip "sshd is not installed (apt-get install openssh-server)"
	command -v ssh-keygen >/dev/null || skip "ssh-keygen is not installed"
	user=$(id -un)
	mkdir -p "$TMP/ssh" "$HOME/.ssh"
	ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/host_key" || skip "cannot make a host key"
	ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/user_key" || skip "cannot make a user key"
	cp "$TMP/ssh/user_key.pub" "$TMP/ssh/authorized_keys"
	chmod 600 "$TMP/ssh/authorized_keys"
	# sshd wants its privilege separation directory
	[ -d /run/sshd ] || mkdir -p /run/sshd 2>/dev/null || true
	port=$(free_port) || skip "no free port"
	cat >"$TMP/ssh/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $TMP/ssh/host_key
PidFile $TMP/ssh/sshd.pid
AuthorizedKeysFile $TMP/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $user
SetEnv PATH=$PATH
LogLevel ERROR
EOF
	"$sshd" -f "$TMP/ssh/sshd_config" -D -E "$TMP/ssh/log" &
	SERVER_PIDS+=($!)
	wait_port "$port" || skip "sshd did not start: $(cat "$TMP/ssh/log" 2>/dev/null)"
	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$TMP/ssh/host_key.pub")" >"$HOME/.ssh/known_hosts"
	export OPT_SSH_KEY="$TMP/ssh/user_key"
	SSHURL="ssh://$user@127.0.0.1:$port"
	ignore_libgit2_leaks
}

# ---- git daemon ----

@test "git://: clone, pull and push round trips; a diverged push is replayed" {
	seed_served
	start_git_daemon
	cd "$TMP"
	# trust is local: for a network clone the origin's key is given
	run --separate-stderr opt-sync clone "$GITURL/r" c --trust "$(key_of "$TMP/srv/r")"
	assert_success
	assert_output '{"remote":"origin","collection":"log","rev":1,"status":"new"}
{"remote":"origin","collection":"users","rev":1,"status":"new"}'
	run opt-log -C c verify
	assert_success
	opt-log -C "$TMP/srv/r" trust "$(key_of c)" --name c
	opt-diary -C c append log '"from c"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":2,"status":"pushed"}'
	# both move on: the push replays c's entry on the server's head
	opt-diary -C "$TMP/srv/r" append log '"on the server"' >/dev/null
	opt-diary -C c append log '"c again"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":4,"status":"replayed","replayed":1}'
	run opt-diary -C "$TMP/srv/r" read log --compact
	assert_output '"start"
"from c"
"on the server"
"c again"'
	run opt-sync -C c pull
	assert_success
	[ "$(opt-diary -C c read log)" = "$(opt-diary -C "$TMP/srv/r" read log)" ]
	run opt-log -C "$TMP/srv/r" verify
	assert_success
	fsck_ok "$TMP/srv/r"
	fsck_ok c
}

@test "git://: a clone needs no trust command; one restricted to other keys is refused (exit 4) and says how to trust" {
	seed_served
	start_git_daemon
	cd "$TMP"
	run --separate-stderr opt-sync clone "$GITURL/r" open
	assert_success
	opt-block init other >/dev/null
	opt-log -C other identity >/dev/null
	run --separate-stderr opt-sync clone "$GITURL/r" c --trust "$(key_of other)"
	assert_failure 4
	[[ $stderr == *"does not trust"* ]]
	[ ! -e c ]
}

@test "git://: racing pushers lose nothing (receive-pack compares the old value)" {
	local i n
	seed_served
	start_git_daemon
	for i in 1 2 3; do
		opt-sync clone "$GITURL/r" "$TMP/c$i" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	done
	for i in 1 2 3; do
		for n in srv/r c1 c2 c3; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
	done
	local -a pids=()
	for i in 1 2 3; do
		(
			for n in $(seq 1 8); do
				opt-diary -C "$TMP/c$i" append log "\"c$i-$n\"" >/dev/null || exit 1
				opt-sync -C "$TMP/c$i" push -q >/dev/null || { echo "c$i push $n: exit $?" >&2; exit 1; }
			done
		) &
		pids+=($!)
	done
	local failed=0
	for i in "${pids[@]}"; do wait "$i" || failed=1; done
	[ "$failed" -eq 0 ] || fail "a pusher failed"
	run opt-diary -C "$TMP/srv/r" count log
	assert_output 25
	[ -z "$(opt-diary -C "$TMP/srv/r" read log | sort | uniq -d)" ]
	run opt-log -C "$TMP/srv/r" verify
	assert_success
	fsck_ok "$TMP/srv/r"
}

@test "git://: a push that loses the race at receive-pack (ng: failed to update ref) is replayed" {
	seed_served
	# the server holds every push a second after it received the pack, so
	# both pushes pass the negotiation with the same old value
	printf '#!/bin/sh\ncat >/dev/null\nsleep 1\n' >"$TMP/srv/r/hooks/pre-receive"
	chmod +x "$TMP/srv/r/hooks/pre-receive"
	export GIT_TRACE_PACKET="$TMP/trace"
	start_git_daemon
	unset GIT_TRACE_PACKET
	local i n
	for i in 1 2; do
		opt-sync clone "$GITURL/r" "$TMP/c$i" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	done
	for i in 1 2; do
		for n in srv/r c1 c2; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
		opt-diary -C "$TMP/c$i" append log "\"c$i\"" >/dev/null
	done
	opt-sync -C "$TMP/c1" push >"$TMP/out1" &
	i=$!
	opt-sync -C "$TMP/c2" push >"$TMP/out2" &
	n=$!
	wait "$i" "$n"
	cat "$TMP/out1" "$TMP/out2" >"$TMP/out"
	run grep -c '"collection":"log","rev":2,"status":"pushed"' "$TMP/out"
	assert_output 1
	run grep -c '"collection":"log","rev":3,"status":"replayed","replayed":1' "$TMP/out"
	assert_output 1
	# the server refused the loser's update, and the loser tried again
	grep -q 'ng refs/opt/collections/log failed to update ref' "$TMP/trace"
	run opt-diary -C "$TMP/srv/r" count log
	assert_output 3
}

@test "git://: a rewound server is refused; an unreachable one exits 5" {
	seed_served
	start_git_daemon
	opt-sync clone "$GITURL/r" "$TMP/c" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	opt-diary -C "$TMP/srv/r" append log '"two"' >/dev/null
	opt-sync -C "$TMP/c" pull >/dev/null
	git --git-dir="$TMP/srv/r" update-ref refs/opt/collections/log refs/opt/collections/log~1
	opt-diary -C "$TMP/srv/r" append log '"other"' >/dev/null
	local before
	before=$(git --git-dir="$TMP/c" for-each-ref)
	run --separate-stderr opt-sync -C "$TMP/c" pull
	assert_failure 4
	[[ $stderr == *"was rewound"* ]]
	[ "$before" = "$(git --git-dir="$TMP/c" for-each-ref)" ]
	opt-sync -C "$TMP/c" remote add down "git://127.0.0.1:1/r"
	run --separate-stderr opt-sync -C "$TMP/c" fetch down
	assert_failure 5
	run --separate-stderr opt-sync -C "$TMP/c" push down
	assert_failure 5
}

# ---- sshd ----

@test "ssh://: clone, push and pull with an ed25519 key; a diverged push is replayed" {
	seed_served
	start_sshd
	cd "$TMP"
	run --separate-stderr opt-sync clone "$SSHURL$TMP/srv/r" c --trust "$(key_of "$TMP/srv/r")"
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":1,"status":"new"}'
	opt-log -C "$TMP/srv/r" trust "$(key_of c)" --name c
	opt-diary -C c append log '"from c"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":2,"status":"pushed"}'
	opt-diary -C "$TMP/srv/r" append log '"on the server"' >/dev/null
	opt-tree -C c put users bob 2 >/dev/null
	opt-diary -C c append log '"c again"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":4,"status":"replayed","replayed":1}'
	assert_line '{"remote":"origin","collection":"users","rev":2,"status":"pushed"}'
	run opt-diary -C "$TMP/srv/r" read log --reverse --limit 2 --compact
	assert_output '"c again"
"on the server"'
	run opt-log -C "$TMP/srv/r" verify
	assert_success
	fsck_ok "$TMP/srv/r"
}

@test "ssh://: two racing pushers lose nothing" {
	local i n
	seed_served
	start_sshd
	for i in 1 2; do
		opt-sync clone "$SSHURL$TMP/srv/r" "$TMP/c$i" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	done
	for i in 1 2; do
		for n in srv/r c1 c2; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
	done
	local -a pids=()
	for i in 1 2; do
		(
			for n in 1 2 3 4; do
				opt-diary -C "$TMP/c$i" append log "\"c$i-$n\"" >/dev/null || exit 1
				opt-sync -C "$TMP/c$i" push -q >/dev/null || { echo "c$i push $n: exit $?" >&2; exit 1; }
			done
		) &
		pids+=($!)
	done
	local failed=0
	for i in "${pids[@]}"; do wait "$i" || failed=1; done
	[ "$failed" -eq 0 ] || fail "a pusher failed"
	run opt-diary -C "$TMP/srv/r" count log
	assert_output 9
	[ -z "$(opt-diary -C "$TMP/srv/r" read log | sort | uniq -d)" ]
}

@test "ssh://: an unknown host key or a refused user key exits 5" {
	seed_served
	start_sshd
	opt-block init "$TMP/c" >/dev/null
	opt-sync -C "$TMP/c" remote add origin "$SSHURL$TMP/srv/r"
	mv "$HOME/.ssh/known_hosts" "$HOME/.ssh/known_hosts.off"
	run --separate-stderr opt-sync -C "$TMP/c" fetch
	assert_failure 5
	[[ $stderr == "opt-sync: remote 'origin' ("*"): "* ]]
	mv "$HOME/.ssh/known_hosts.off" "$HOME/.ssh/known_hosts"
	ssh-keygen -q -t ed25519 -N '' -f "$TMP/other_key"
	run --separate-stderr env OPT_SSH_KEY="$TMP/other_key" opt-sync -C "$TMP/c" fetch
	assert_failure 5
	[[ $stderr == *"authentication failed"* ]]
	opt-log -C "$TMP/c" trust "$(key_of "$TMP/srv/r")"
	run --separate-stderr opt-sync -C "$TMP/c" fetch
	assert_success
	assert_output '{"remote":"origin","collection":"log","rev":1,"status":"new"}
{"remote":"origin","collection":"users","rev":1,"status":"new"}'
}
