#!/bin/sh
# bench/sync.sh - opt-sync against plain git on the same data, in the same
# run.  Prints one line per figure.  N (default 1000000) tree records.
# Usage: sh bench/sync.sh [BINDIR]
#
# clone: `opt-sync clone` (which verifies everything it receives) against
# `git clone --mirror --no-local` of the same store (every ref, all
# objects sent as a pack, no hardlinks), over a path and over ssh to an
# sshd started here on loopback (skipped, with a message, when it cannot
# start).  Incremental: one entry changed, then `opt-sync pull` against
# `git fetch` into a mirror (the transfer and ref update of a pull; git has
# no work tree to merge here), and one entry changed on our side, then
# `opt-sync push` against `git push` of the same new commit from a git
# client to a git copy of the store.  Bytes moved are counted over ssh by
# a TCP relay in front of sshd: every byte of the connections, both ways
# (key exchange, ref advertisement, negotiation and pack).  Times are
# medians of R (default 3) rounds.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/build/bin}
N=${N:-1000000}
R=${R:-3}
PATH="$bin:$PATH"
export PATH
work=$(mktemp -d "${TMPDIR:-/tmp}/opt-bench-sync.XXXXXX")
sshd_pid=
relay_pid=
cleanup() {
	[ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null
	[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
# our own HOME: the ssh keys and known_hosts made here stay here
export HOME="$work/home"
mkdir -p "$HOME/.ssh"
git config --global fetch.unpackLimit 1
git config --global receive.unpackLimit 1
git config --global transfer.unpackLimit 1
git config --global user.name bench
git config --global user.email bench@localhost

now() { date +%s%N; }
secs() { python3 -c "print('%.3f' % (($2 - $1) / 1e9))"; }
median() { python3 -c "import sys; v=sorted(float(x) for x in sys.argv[1:]); print(v[len(v)//2])" "$@"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
line() { printf '%-58s %s\n' "$1" "$2"; }
# total size of the pack files under git dir $1
mark() { python3 -c "print('✓' if $1 else '✗')"; }

# ---- the data ----
S="$work/srv/store"
mkdir -p "$work/srv"
opt-block init "$S" >/dev/null
python3 "$top/bench/gen.py" records "$N" >"$work/recs"
opt-tree -C "$S" put big <"$work/recs" >/dev/null
git --git-dir="$S" gc -q
git --git-dir="$S" config receive.unpackLimit 1
KEY=$(head -1 "$work/recs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
line "data: $N records in one tree" "$(du -sb "$S/objects" | cut -f1) bytes of objects"

# ---- sshd on loopback ----
ssh_ok=0
start_sshd() {
	sshd=$(command -v sshd || echo /usr/sbin/sshd)
	[ -x "$sshd" ] || { echo "ssh: sshd is not installed, skipped"; return 1; }
	ssh-keygen -q -t ed25519 -N '' -f "$work/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$work/user_key" || return 1
	cp "$work/user_key.pub" "$work/authorized_keys"
	[ -d /run/sshd ] || mkdir -p /run/sshd 2>/dev/null || true
	port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
	cat >"$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $(id -un)
SetEnv PATH=$PATH HOME=$HOME
LogLevel ERROR
EOF
	"$sshd" -f "$work/sshd_config" -D -E "$work/sshd.log" &
	sshd_pid=$!
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
			echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" >"$HOME/.ssh/known_hosts"
			export OPT_SSH_KEY="$work/user_key"
			export GIT_SSH_COMMAND="ssh -i $work/user_key -o UserKnownHostsFile=$HOME/.ssh/known_hosts -o BatchMode=yes"
			SSHURL="ssh://$(id -un)@127.0.0.1:$port"
			return 0
		fi
		sleep 0.25
	done
	echo "ssh: sshd did not start ($(cat "$work/sshd.log" 2>/dev/null)), skipped"
	return 1
}
start_sshd && ssh_ok=1

# a TCP relay to sshd that counts the bytes of each connection (both
# directions, ssh framing and the ref advertisement included): the bytes
# moved over ssh
start_relay() {
	rport=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
	python3 - "$rport" "$port" "$work/relay.log" <<'PY' &
import socket, sys, threading
lp, tp, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", lp)); srv.listen(16)
lock = threading.Lock()
def pipe(a, b, n):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            n[0] += len(d); b.sendall(d)
    except OSError: pass
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
def serve(c):
    t = socket.create_connection(("127.0.0.1", tp)); up, down = [0], [0]
    th = [threading.Thread(target=pipe, args=(c, t, up)), threading.Thread(target=pipe, args=(t, c, down))]
    for x in th: x.start()
    for x in th: x.join()
    c.close(); t.close()
    with lock, open(log, "a") as f: f.write("%d\n" % (up[0] + down[0]))
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
	relay_pid=$!
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		python3 -c "import socket; socket.create_connection(('127.0.0.1', $rport), 1)" 2>/dev/null && break
		sleep 0.25
	done
	: >"$work/relay.log"
	echo "[127.0.0.1]:$rport $(cut -d' ' -f1,2 "$work/host_key.pub")" >>"$HOME/.ssh/known_hosts"
	RELAYURL="ssh://$(id -un)@127.0.0.1:$rport"
}
# bytes through the relay since the last call
relay_bytes() {
	sleep 0.2  # the relay notes a connection once both sides closed
	b=$(python3 -c "import sys; print(sum(int(l) for l in open(sys.argv[1]) if l.strip()))" "$work/relay.log")
	: >"$work/relay.log"
	echo "$b"
}
[ "$ssh_ok" = 1 ] && start_relay

keys="$(opt-log -C "$S" identity | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# ---- clone ----
# clone_pair LABEL OPT_URL GIT_URL: median times of both, and the ratio
clone_pair() {
	to=; tg=
	for i in $(seq 1 "$R"); do
		rm -rf "$work/oc" "$work/gc"
		t0=$(now); opt-sync clone "$2" "$work/oc" --trust "$keys" >/dev/null; t1=$(now)
		git clone -q --mirror --no-local "$3" "$work/gc"; t2=$(now)
		to="$to $(secs "$t0" "$t1")"; tg="$tg $(secs "$t1" "$t2")"
	done
	mo=$(median $to); mg=$(median $tg); r=$(ratio "$mo" "$mg")
	line "clone over $1: opt-sync / git clone --mirror" "$mo s / $mg s = ${r}x (target <= 1.2x $(mark "$r <= 1.2"))"
}
clone_pair path "$S" "$S"
[ "$ssh_ok" = 1 ] && clone_pair ssh "$SSHURL$S" "$SSHURL$S"

# ---- incremental pull and push ----
# incr LABEL URL_OF_S URL_OF_GIT_SERVER BYTES(1: count through the relay)
incr() {
	rm -rf "$work/oc" "$work/gc" "$work/gsrv.git"
	# a clone that trusts every writer of the store so far
	opt-block init "$work/oc" >/dev/null
	for k in $keys; do opt-log -C "$work/oc" trust "$k" >/dev/null; done
	opt-sync -C "$work/oc" remote add origin "$2"
	opt-sync -C "$work/oc" pull >/dev/null
	k=$(opt-log -C "$work/oc" identity | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
	opt-log -C "$S" trust "$k" >/dev/null
	keys="$keys $k"
	git init -q --bare "$work/gsrv.git"
	git --git-dir="$work/gsrv.git" fetch -q "file://$S" "+refs/*:refs/*"
	git clone -q --mirror "$3" "$work/gc"
	# a plain remote (fetch +refs/*:refs/*) so that it can fetch from others too
	git --git-dir="$work/gc" config --unset remote.origin.mirror
	[ "$4" = 1 ] && relay_bytes >/dev/null
	po=; pg=; bo=; bg=; uo=; ug=; ubo=; ubg=
	ref=refs/opt/collections/big
	for i in $(seq 1 "$R"); do
		# pull: one entry changed at the server; the git server gets the
		# same new commit
		opt-tree -C "$S" put big "$KEY" "\"pull $i\"" >/dev/null
		git --git-dir="$work/gsrv.git" fetch -q "$S" "+refs/opt/*:refs/opt/*"
		t0=$(now); opt-sync -C "$work/oc" pull >/dev/null; t1=$(now)
		[ "$4" = 1 ] && bo="$bo $(relay_bytes)"
		t2=$(now); git --git-dir="$work/gc" fetch -q origin; t3=$(now)
		[ "$4" = 1 ] && bg="$bg $(relay_bytes)"
		po="$po $(secs "$t0" "$t1")"; pg="$pg $(secs "$t2" "$t3")"
		# push: one entry changed here; git pushes the same new commit
		# (its objects fetched into the git client first)
		opt-tree -C "$work/oc" put big "$KEY" "\"push $i\"" >/dev/null
		t0=$(now); opt-sync -C "$work/oc" push >/dev/null; t1=$(now)
		[ "$4" = 1 ] && ubo="$ubo $(relay_bytes)"
		commit=$(git --git-dir="$S" rev-parse "$ref")
		git --git-dir="$work/gc" fetch -q "$S" "$ref:refs/bench/next"
		t2=$(now); git --git-dir="$work/gc" push -q origin "refs/bench/next:$ref"; t3=$(now)
		[ "$4" = 1 ] && ubg="$ubg $(relay_bytes)"
		git --git-dir="$work/gc" update-ref "$ref" "$commit"
		git --git-dir="$work/gc" update-ref -d refs/bench/next
		uo="$uo $(secs "$t0" "$t1")"; ug="$ug $(secs "$t2" "$t3")"
	done
	mo=$(median $po); mg=$(median $pg); r=$(ratio "$mo" "$mg")
	line "pull of one changed entry over $1: opt-sync / git fetch" "$mo s / $mg s = ${r}x (target <= 1.0x $(mark "$r <= 1.0"))"
	if [ "$4" = 1 ]; then
		b=$(median $bo); bgm=$(median $bg)
		line "  bytes through ssh: opt-sync / git" "${b%.*} / ${bgm%.*} (target <= 16384 $(mark "$b <= 16384"))"
	fi
	mo=$(median $uo); mg=$(median $ug); r=$(ratio "$mo" "$mg")
	line "push of one changed entry over $1: opt-sync / git push" "$mo s / $mg s = ${r}x (target <= 1.0x $(mark "$r <= 1.0"))"
	if [ "$4" = 1 ]; then
		b=$(median $ubo); bgm=$(median $ubg)
		line "  bytes through ssh: opt-sync / git" "${b%.*} / ${bgm%.*} (target <= 16384 $(mark "$b <= 16384"))"
	fi
}
incr path "$S" "file://$work/gsrv.git" 0
[ "$ssh_ok" = 1 ] && incr ssh "$RELAYURL$S" "$RELAYURL$work/gsrv.git" 1
exit 0
