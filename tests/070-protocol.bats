#!/usr/bin/env bats
# The model of the multi-collection commit protocol, docs/protocol.pml:
# tests/protocol.sh has spin check it exhaustively (safety in three
# configurations, progress under weak fairness) and find the violations in
# its mutants.  Its figures (states explored) are printed as TAP comments.
#
# build-independent: it runs no program of ours (tests/run.sh runs it
# with the first build only).

load test_helper

# no store needed here
setup() { :; }
teardown() { :; }

@test "spin: the protocol model holds in every configuration, and its mutants fail" {
	run sh "$TOP/tests/protocol.sh"
	# its TAP lines as comments: this is one test for tests/run.sh
	printf '%s\n' "$output" | sed 's/^\(# \)\{0,1\}/#   /' >&3
	assert_success
	assert_output --partial '# states explored by the passing runs: '
	refute_output --partial 'not ok'
}
