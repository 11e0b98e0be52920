#!/usr/bin/env bats
# The model of the quorum protocol, docs/quorum.pml: tests/quorum.sh has
# spin check it exhaustively (safety in each configuration and fault
# budget) and find the violations in its mutants.  Its figures (states
# explored) are printed as TAP comments.
#
# build-independent: it runs no program of ours (tests/run.sh runs it
# with the first build only).

load test_helper

# no store needed here
setup() { :; }
teardown() { :; }

@test "spin: the quorum protocol model holds in every configuration, and its mutants fail" {
	run sh "$TOP/tests/quorum.sh"
	# its TAP lines as comments: this is one test for tests/run.sh
	printf '%s\n' "$output" | sed 's/^\(# \)\{0,1\}/#   /' >&3
	assert_success
	assert_output --partial '# states explored by the passing runs: '
	refute_output --partial 'not ok'
}
