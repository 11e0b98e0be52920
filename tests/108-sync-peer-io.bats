#!/usr/bin/env bats
# opt-sync and what it reads at a peer on this machine: the peer's
# identity file (a FIFO, a symlink, another user's secret key), its pack
# indexes, objects that inflate to far more than a block may hold, missing
# and corrupt objects, refs that name no commit, a store of another user;
# exit statuses by the documented contract, and a failed clone that leaves
# the destination as it found it.

load test_helper
load sync_helper

# The pack of store $1 with the most objects (its name without extension).
biggest_pack() {
	local f best= n max=-1
	for f in "$1"/objects/pack/pack-*.idx; do
		n=$(git show-index <"$f" | wc -l)
		if [ "$n" -gt "$max" ]; then max=$n best=${f%.idx}; fi
	done
	echo "$best"
}

# Root, and a user nobody to run as (the tests of other users' stores).
as_nobody_ok() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (to run as another user)"
	id nobody >/dev/null 2>&1 || skip "no user nobody"
	command -v runuser >/dev/null || skip "no runuser"
	chmod 755 "$TMP"
	runuser -u nobody -- test -x "$OPT_BIN/opt-sync" || skip "user nobody cannot run $OPT_BIN/opt-sync"
}

# ---- the peer's identity ----

@test "clone: a peer whose opt-identity is a FIFO or a symlink is refused at once (exit 5), nothing left" {
	seed "$TMP/a"
	mv "$TMP/a/opt-identity" "$TMP/saved-identity"
	rm -f "$TMP/a/opt-identity.pub"
	mkfifo "$TMP/a/opt-identity"
	cd "$TMP"
	run --separate-stderr timeout 20 opt-sync clone "$TMP/a" c
	assert_failure 5
	[[ $stderr == "opt-sync: "*"identity"*"not a regular file"* ]]
	[ ! -e "$TMP/c" ]
	rm "$TMP/a/opt-identity"
	ln -s "$TMP/saved-identity" "$TMP/a/opt-identity"
	run --separate-stderr timeout 20 opt-sync clone "$TMP/a" c
	assert_failure 5
	[[ $stderr == "opt-sync: "*"identity"*"not a regular file"* ]]
	[ ! -e "$TMP/c" ]
	# a public key file that is a FIFO is refused the same way
	rm "$TMP/a/opt-identity"
	mv "$TMP/saved-identity" "$TMP/a/opt-identity"
	mkfifo "$TMP/a/opt-identity.pub"
	run --separate-stderr timeout 20 opt-sync clone "$TMP/a" c
	assert_failure 5
	[ ! -e "$TMP/c" ]
}

@test "the public key has a file of its own (mode 0644, no secret); a path clone reads it, an older store without it still clones" {
	seed "$TMP/a"
	[ -f "$TMP/a/opt-identity.pub" ]
	assert_equal "$(stat -c %a "$TMP/a/opt-identity.pub")" 644
	assert_equal "$(stat -c %a "$TMP/a/opt-identity")" 600
	assert_equal "$(tr -d '\n' <"$TMP/a/opt-identity.pub")" "$(key_of "$TMP/a")"
	# a store made before the file existed gets it on its next use
	rm "$TMP/a/opt-identity.pub"
	run opt-sync clone "$TMP/a" "$TMP/c"
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/c")" ]
	opt-log -C "$TMP/a" identity >/dev/null
	assert_equal "$(tr -d '\n' <"$TMP/a/opt-identity.pub")" "$(key_of "$TMP/a")"
	# the clone reads the public file, not the secret one (LeakSanitizer
	# cannot run under ptrace)
	command -v strace >/dev/null || skip "no strace"
	ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
		strace -f -e trace=open,openat -o "$TMP/trace" opt-sync clone "$TMP/a" "$TMP/d" >/dev/null
	grep -q "$TMP/a/opt-identity.pub\"" "$TMP/trace"
	! grep -q "$TMP/a/opt-identity\"" "$TMP/trace" || fail "the clone opened the peer's secret key file"
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/d")" ]
}

@test "another user can clone a store from its path: only the public key is read, the store's owner is no obstacle" {
	as_nobody_ok
	seed "$TMP/a"
	mkdir "$TMP/n"
	chown nobody "$TMP/n"
	run --separate-stderr runuser -u nobody -- env HOME="$TMP/n" opt-sync clone "$TMP/a" "$TMP/n/c"
	assert_success
	# (root reads nobody's clone)
	git config --global --add safe.directory "$TMP/n/c"
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/n/c")" ]
	run opt-log -C "$TMP/n/c" trusted
	[[ $output == *"$(key_of "$TMP/a")"* ]]
}

# ---- stores of another user ----

@test "a store owned by another user: our own message (exit 7); a peer of another user is read" {
	[ "$(id -u)" -eq 0 ] || skip "needs root (to give a store away)"
	id nobody >/dev/null 2>&1 || skip "no user nobody"
	seed "$TMP/a"
	chown -R nobody "$TMP/a"
	run --separate-stderr opt-tree -C "$TMP/a" get users alice
	assert_failure 7
	[[ $stderr == "opt-tree: cannot open store '$TMP/a': it belongs to another user"*"safe.directory"* ]]
	[[ $stderr != *"was not found"* ]]
	# as git, git's safe.directory lets it open
	git config --global --add safe.directory "$TMP/a"
	run opt-tree -C "$TMP/a" get users alice
	assert_success
	git config --global --unset-all safe.directory
	# reading it as a peer is fine
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c"
	assert_success
	[ "$(content_of "$TMP/c")" = "$(git config --global --add safe.directory "$TMP/a"; content_of "$TMP/a")" ]
	git config --global --unset-all safe.directory
	opt-tree -C "$TMP/c" put users zed 1 >/dev/null
	run --separate-stderr opt-sync -C "$TMP/c" pull
	assert_success
}

# ---- a failed clone ----

@test "a clone that fails into an existing empty store leaves it as it found it: the retry works" {
	seed "$TMP/a"
	opt-block init "$TMP/pre" >/dev/null
	opt-log -C "$TMP/pre" trust "$(printf 'e%.0s' {1..64})" --name other
	local refs trusted config
	refs=$(refs_of "$TMP/pre")
	trusted=$(opt-log -C "$TMP/pre" trusted)
	config=$(git --git-dir="$TMP/pre" config -l | sort)
	# a peer whose head of users is no commit
	local users
	users=$(git --git-dir="$TMP/a" rev-parse refs/opt/collections/users)
	git --git-dir="$TMP/a" update-ref refs/opt/collections/users "$(echo hi | git --git-dir="$TMP/a" hash-object -w --stdin)"
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/pre"
	assert_failure 4
	[ -d "$TMP/pre" ]
	assert_equal "$(refs_of "$TMP/pre")" "$refs"
	assert_equal "$(opt-log -C "$TMP/pre" trusted)" "$trusted"
	assert_equal "$(git --git-dir="$TMP/pre" config -l | sort)" "$config"
	# the peer mended, the same clone works
	git --git-dir="$TMP/a" update-ref refs/opt/collections/users "$users"
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/pre"
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/pre")" ]
	# a clone refused before it starts (it has a remote now) changes nothing either
	refs=$(refs_of "$TMP/pre")
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/pre"
	assert_failure 2
	assert_equal "$(refs_of "$TMP/pre")" "$refs"
	run git --git-dir="$TMP/pre" config remote.origin.url
	assert_output "$TMP/a"
}

# ---- exit statuses ----

@test "a ref at the peer that names no commit: exit 4 naming the remote and the collection (fetch, pull, clone)" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-tree -C "$TMP/a" put users carol 1 >/dev/null
	local before users
	users=$(git --git-dir="$TMP/a" rev-parse refs/opt/collections/users)
	git --git-dir="$TMP/a" update-ref refs/opt/collections/users "$(echo hi | git --git-dir="$TMP/a" hash-object -w --stdin)"
	before=$(refs_of "$TMP/b")
	for cmd in fetch pull; do
		run --separate-stderr opt-sync -C "$TMP/b" $cmd
		assert_failure 4
		[[ $stderr == "opt-sync: remote 'origin': collection 'users'"*"not a commit"* ]] || fail "$cmd: $stderr"
		assert_equal "$(refs_of "$TMP/b")" "$before"
	done
	# a tree, not a blob: the same
	git --git-dir="$TMP/a" update-ref refs/opt/collections/users "$(git --git-dir="$TMP/a" rev-parse "$users^{tree}")"
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == "opt-sync: remote 'origin': collection 'users'"*"not a commit"* ]]
	run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c"
	assert_failure 4
	[[ $stderr == "opt-sync: remote 'origin': collection 'users'"*"not a commit"* ]]
	[ ! -e "$TMP/c" ]
}

@test "a missing or corrupt object at the peer is exit 4, not 5" {
	seed "$TMP/a"
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-tree -C "$TMP/a" put users carol '{"age":50}' >/dev/null
	local p before
	p=$(ls -t "$TMP"/a/objects/pack/*.pack | head -n 1)
	before=$(refs_of "$TMP/b")
	mv "$p" "$TMP/saved.pack"
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	[[ $stderr == "opt-sync: remote 'origin'"* ]]
	assert_equal "$(refs_of "$TMP/b")" "$before"
	run --separate-stderr opt-sync -C "$TMP/b" fetch
	assert_failure 4
	# the pack back, but damaged in the middle of its objects
	cp "$TMP/saved.pack" "$p"
	chmod 644 "$p"
	printf '\377\377\377\377\377\377\377\377' | dd of="$p" bs=1 seek=40 conv=notrunc status=none
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_failure 4
	assert_equal "$(refs_of "$TMP/b")" "$before"
	# whole again: the pull works
	cp "$TMP/saved.pack" "$p"
	run --separate-stderr opt-sync -C "$TMP/b" pull
	assert_success
	[ "$(content_of "$TMP/a")" = "$(content_of "$TMP/b")" ]
}

@test "a full disk during a fetch is exit 7, not 5; the store stays as it was" {
	[ "$(id -u)" -eq 0 ] || skip "needs root (to mount a tmpfs)"
	mkdir "$TMP/disk"
	local why
	if ! why=$(mount -t tmpfs -o size=1m tmpfs "$TMP/disk" 2>&1); then
		skip "cannot mount a 1 MB tmpfs: ${why:-mount failed}"
	fi
	seed "$TMP/a"
	opt-block init "$TMP/disk/s" >/dev/null
	opt-sync -C "$TMP/disk/s" remote add origin "$TMP/a"
	trust_all "$TMP/disk/s" "$TMP/a"
	opt-sync -C "$TMP/disk/s" pull >/dev/null
	local k
	for k in k1 k2; do
		printf '{"key":"%s","value":"%s"}\n' $k "$(head -c 600000 /dev/urandom | base64 -w0)" | opt-tree -C "$TMP/a" put big >/dev/null
	done
	local before st err verify
	before=$(refs_of "$TMP/disk/s")
	run --separate-stderr opt-sync -C "$TMP/disk/s" pull
	st=$status err=$stderr
	verify=$(opt-log -C "$TMP/disk/s" verify >/dev/null 2>&1 && echo ok)
	[ "$before" = "$(refs_of "$TMP/disk/s")" ] || verify="refs moved"
	umount "$TMP/disk" || umount -l "$TMP/disk"
	[ "$st" -eq 7 ] || fail "exit $st: $err"
	[[ $err == "opt-sync: "*"No space left on device"* ]]
	assert_equal "$verify" ok
}

# ---- the peer's pack indexes ----

@test "clone from a path: a damaged .idx at the peer is not copied as it is (the clone passes git fsck --strict, or is refused)" {
	seed "$TMP/a"
	opt-block gc -C "$TMP/a" >/dev/null 2>&1 || opt-block -C "$TMP/a" gc >/dev/null
	local p idx size n seed=${OPT_TEST_SEED:-$RANDOM} i pos region ok=0
	p=$(biggest_pack "$TMP/a")
	idx=$p.idx
	size=$(stat -c %s "$idx")
	n=$(git show-index <"$idx" | wc -l)
	echo "# seed $seed ($n objects, $size bytes of index)" >&3
	RANDOM=$seed
	cp "$idx" "$TMP/good.idx"
	local want
	want=$(content_of "$TMP/a")
	# a byte in each part of the index (fan-out, a name, a CRC, an
	# offset, each trailer), then random ones
	local -a at=(9 $((8 + 4 * 200 + 3)) $((1032 + 20 * (n / 2) + 19)) $((1032 + 20 * n + 4 * (n / 2) + 1))
		$((1032 + 24 * n + 4 * (n / 2) + 3)) $((size - 30)) $((size - 5)))
	for i in $(seq 1 25); do at+=($(((RANDOM * 32768 + RANDOM) % size))); done
	for pos in "${at[@]}"; do
		rm -rf "$TMP/c"
		cp "$TMP/good.idx" "$idx"
		chmod 644 "$idx"
		printf "\\x$(printf %02x $(((0x$(xxd -s "$pos" -l 1 -p "$idx") ^ (1 + RANDOM % 255)) & 255)))" |
			dd of="$idx" bs=1 seek="$pos" conv=notrunc status=none
		run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c"
		if [ "$status" -eq 0 ]; then
			run git --git-dir="$TMP/c" fsck --strict --no-progress
			[ "$status" -eq 0 ] || fail "byte $pos of the index changed: the clone fails git fsck: $output"
			[ "$want" = "$(content_of "$TMP/c")" ] || fail "byte $pos: the clone differs"
			ok=$((ok + 1))
		else
			[ "$status" -eq 4 ] || [ "$status" -eq 5 ] || fail "byte $pos: exit $status: $stderr"
			[ ! -e "$TMP/c" ] || fail "byte $pos: a failed clone left $TMP/c"
		fi
	done
	echo "# $ok of ${#at[@]} damaged indexes cloned (indexed again), the others refused" >&3
}

# Damage at byte $2 of index $1, XORed with $3, then its own SHA-1
# trailer made right again: a hostile index, not a broken disk.
idx_forge() {
	python3 - "$1" "$2" "$3" <<'PY'
import hashlib, sys
path, pos, x = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = bytearray(open(path, "rb").read())
b[pos] ^= x
b[-20:] = hashlib.sha1(bytes(b[:-20])).digest()
open(path, "wb").write(bytes(b))
PY
}

@test "pull and clone from a path: a forged pack index (its checksum right) is refused (exit 4), never read" {
	seed "$TMP/a"
	opt-block gc -C "$TMP/a" >/dev/null 2>&1 || opt-block -C "$TMP/a" gc >/dev/null
	opt-sync clone "$TMP/a" "$TMP/b" >/dev/null
	opt-tree -C "$TMP/a" put users carol '{"age":50}' >/dev/null
	opt-block gc -C "$TMP/a" >/dev/null 2>&1 || opt-block -C "$TMP/a" gc >/dev/null
	local p idx n
	p=$(biggest_pack "$TMP/a")
	idx=$p.idx
	n=$(git show-index <"$idx" | wc -l)
	cp "$idx" "$TMP/good.idx"
	chmod 644 "$idx"
	# an offset far outside the pack; the fan-out's last count raised;
	# two names swapped out of order
	local -a how=("$((1032 + 24 * n + 4 * (n / 2)))" 127 "$((8 + 4 * 255 + 3))" 64 "$((1032 + 20 * (n / 2)))" 255)
	local at x before
	while [ "${#how[@]}" -gt 0 ]; do
		at=${how[0]} x=${how[1]}
		how=("${how[@]:2}")
		cp "$TMP/good.idx" "$idx"
		idx_forge "$idx" "$at" "$x"
		before=$(refs_of "$TMP/b")
		run --separate-stderr opt-sync -C "$TMP/b" pull
		[ "$status" -eq 4 ] || fail "byte $at: pull exit $status: $stderr"
		[[ $stderr == *"pack index"* ]] || fail "byte $at: $stderr"
		[ "$before" = "$(refs_of "$TMP/b")" ] || fail "byte $at: refs moved"
		rm -rf "$TMP/c"
		run --separate-stderr opt-sync clone "$TMP/a" "$TMP/c"
		[ "$status" -eq 4 ] || fail "byte $at: clone exit $status: $stderr"
		[ ! -e "$TMP/c" ] || fail "byte $at: a failed clone left $TMP/c"
	done
	cp "$TMP/good.idx" "$idx"
	run opt-sync -C "$TMP/b" pull
	assert_success
}

# ---- objects larger than a block may be ----

# A blob of $2 MiB of zeros, stored in a pack of its own in store $1
# (about 1 KB per MiB: the same deflate block, made once, repeated after
# full flushes); prints its ID.
zeros_blob() {
	python3 - "$1" "$2" <<'PY'
import hashlib, os, struct, sys, zlib
gd, mib = sys.argv[1], int(sys.argv[2])
n = mib << 20
hdr = b"blob %d\0" % n
h = hashlib.sha1(hdr)
chunk = bytes(1 << 20)
for _ in range(mib):
    h.update(chunk)
oid = h.digest()
c = zlib.compressobj(9, zlib.DEFLATED, -15)
blk = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
assert c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH) == blk
data = b"\x78\xda" + blk * mib + c.flush(zlib.Z_FINISH) + struct.pack(">I", ((n % 65521) << 16) | 1)
assert zlib.decompressobj().decompress(data[:1 << 16], 64) == bytes(64)
ent = bytearray()
size, b = n >> 4, 0x80 | (3 << 4) | (n & 15)
while size:
    ent.append(b)
    b, size = 0x80 | (size & 0x7f), size >> 7
ent.append(b & 0x7f)
ent += data
pack = b"PACK" + struct.pack(">II", 2, 1) + ent
pack += hashlib.sha1(pack).digest()
fan = b"".join(struct.pack(">I", 1 if i >= oid[0] else 0) for i in range(256))
idx = b"\377tOc" + struct.pack(">I", 2) + fan + oid + struct.pack(">II", zlib.crc32(ent), 12) + pack[-20:]
idx += hashlib.sha1(idx).digest()
name = os.path.join(gd, "objects", "pack", "pack-" + pack[-20:].hex())
with open(name + ".pack", "wb") as f:
    f.write(pack)
with open(name + ".idx", "wb") as f:
    f.write(idx)
print(oid.hex())
PY
}

@test "an object that inflates to 1 GiB where a block should be at a peer is refused at once (exit 4): pull and clone" {
	command -v python3 >/dev/null || skip "no python3"
	seed "$OPT_STORE"
	opt-sync clone "$OPT_STORE" "$TMP/b" >/dev/null
	echo "{\"header\":{\"id\":\"$C\",\"type\":\"t\"},\"v\":3}" | opt-block put -c things >/dev/null
	GD=$OPT_STORE
	local big before t0 t1
	big=$(zeros_blob "$OPT_STORE" 1024)
	[ "$(G cat-file -s "$big")" -eq $((1 << 30)) ]
	# the new revision 3 holds it in place of block A
	tamper things 3 G update-index --add --cacheinfo "100644,$big,$(bpath "$A")"
	before=$(refs_of "$TMP/b")
	t0=$(date +%s)
	run --separate-stderr /usr/bin/time -f '%M' opt-sync -C "$TMP/b" pull
	t1=$(date +%s)
	assert_failure 4
	[[ $stderr == *"remote 'origin'"*"$big"*"1073741824 bytes, more than"* ]] || fail "$stderr"
	[ $((t1 - t0)) -lt 20 ] || fail "took $((t1 - t0)) s"
	[ "$(tail -n 1 <<<"$stderr")" -lt 400000 ] || fail "max RSS $(tail -n 1 <<<"$stderr") KB"
	assert_equal "$(refs_of "$TMP/b")" "$before"
	# a clone copies the packs: the same
	t0=$(date +%s)
	run --separate-stderr /usr/bin/time -f '%M' opt-sync clone "$OPT_STORE" "$TMP/c"
	t1=$(date +%s)
	assert_failure 4
	[[ $stderr == *"1073741824 bytes, more than"* ]] || fail "$stderr"
	[ $((t1 - t0)) -lt 20 ] || fail "took $((t1 - t0)) s"
	[ "$(tail -n 1 <<<"$stderr")" -lt 400000 ] || fail "max RSS $(tail -n 1 <<<"$stderr") KB"
	[ ! -e "$TMP/c" ]
}
