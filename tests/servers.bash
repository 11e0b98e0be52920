# tests/servers.bash - shared by the suites that start real servers on
# loopback (tests/101-opt-sync-servers.bats, 102-opt-sync-cluster.bats,
# 104-opt-sync-http.bats):
# stopping them after each test, free ports, the served store.

export OPT_FSYNC=0

SERVER_PIDS=()

teardown() {
	local p
	for p in "${SERVER_PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${SERVER_PIDS[@]}"; do
		# sshd and git daemon are gone within a moment of the signal
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	cd /
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

key_of() { opt-log -C "$1" identity | jq -r .key; }

# Wait until something listens on 127.0.0.1:$1 (up to 5 s).
wait_port() {
	local i
	for ((i = 0; i < 50; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# A free port in the high range (a guess checked by connecting).
free_port() {
	local p i
	for ((i = 0; i < 20; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
	done
	return 1
}

# The store $TMP/srv/r with a diary and a tree, served by the servers.
seed_served() {
	mkdir -p "$TMP/srv"
	opt-block init "$TMP/srv/r" >/dev/null
	opt-diary -C "$TMP/srv/r" append log '"start"' >/dev/null
	opt-tree -C "$TMP/srv/r" put users alice 1 >/dev/null
}

# libgit2 1.5.1 leaks inside git_remote_connect_ext when a connection
# fails (a server that is down), and a few hundred bytes per ssh
# connection (and what libssh2 holds for it): a sanitizer build ignores
# those, with full stacks so that the suppression matches only them.
ignore_libgit2_leaks() {
	printf 'leak:git_remote_connect_ext\nleak:libssh2.so\n' >"$TMP/lsan.supp"
	case ${LSAN_OPTIONS:-} in
	*"$TMP/lsan.supp"*) ;;
	*) export LSAN_OPTIONS="suppressions=$TMP/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}" ;;
	esac
	case ${ASAN_OPTIONS:-} in
	*fast_unwind_on_malloc=0*) ;;
	*) export ASAN_OPTIONS="fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" ;;
	esac
}
