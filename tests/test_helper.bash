# tests/test_helper.bash - shared set-up for the bats suites: the fresh
# build first on PATH, a fresh temporary store, HOME and LC_ALL=C.
bats_require_minimum_version 1.5.0
load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

TOP="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${OPT_BIN:=$TOP/build/bin}"
export PATH="$OPT_BIN:$PATH"
export LC_ALL=C
export OPT_BUSY_TIMEOUT=60000

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
	[ -n "${TMP:-}" ] && rm -rf "$TMP"
}

# fsck: the store must pass git fsck --strict
fsck_ok() {
	run git --git-dir="${1:-$OPT_STORE}" fsck --strict --no-progress
	assert_success
}
