/* test-acceptor.c - the quorum register's acceptor state
 * (lib/sync/acceptor.c; docs/quorum.md "The acceptor state"). */
#include "harness.h"
#include "error.h"
#include "util.h"
#include "sync/acceptor.h"

#include <git2.h>
#include <unistd.h>

#define KEY_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define KEY_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define V1 "1111111111111111111111111111111111111111"
#define V2 "2222222222222222222222222222222222222222"

static struct opt_ballot ballot(uint64_t n, const char *id)
{
	struct opt_ballot b;

	memset(&b, 0, sizeof(b));
	b.n = n;
	snprintf(b.id, sizeof(b.id), "%s", id);
	return b;
}

TEST(ballots)
{
	struct opt_ballot a = ballot(7, KEY_A), b = ballot(7, KEY_B), c = ballot(8, KEY_A), x, none;
	char t[OPT_BALLOT_TEXT];
	static const char *bad[] = {
		"0." KEY_A, "07." KEY_A, "." KEY_A, "7", "7.", "7.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"7.aaaa", "7." KEY_A "a", "18446744073709551616." KEY_A, "-1." KEY_A, "1x." KEY_A,
	};
	size_t i;

	memset(&none, 0, sizeof(none));
	CHECK(opt_ballot_cmp(&a, &b) < 0 && opt_ballot_cmp(&b, &c) < 0 && opt_ballot_cmp(&a, &a) == 0);
	CHECK(opt_ballot_cmp(&none, &a) < 0);
	opt_ballot_format(t, &a);
	CHECK(strcmp(t, "7." KEY_A) == 0);
	CHECK_RC(opt_ballot_parse(&x, t, strlen(t)));
	CHECK(opt_ballot_cmp(&x, &a) == 0);
	opt_ballot_format(t, &none);
	CHECK(strcmp(t, "0") == 0);
	CHECK_RC(opt_ballot_next(&x, &a));
	CHECK(opt_ballot_cmp(&x, &c) == 0);
	CHECK(opt_ballot_next(&x, &none) == OPT_EINVAL);
	x = ballot(UINT64_MAX, KEY_A);
	CHECK(opt_ballot_next(&x, &x) == OPT_EINVAL);
	opt_ballot_format(t, &x);
	CHECK(strcmp(t, "18446744073709551615." KEY_A) == 0);
	CHECK_RC(opt_ballot_parse(&x, t, strlen(t)));
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		int rc = opt_ballot_parse(&x, bad[i], strlen(bad[i]));
		if (rc != OPT_EINVAL)
			printf("# accepted: %s\n", bad[i]);
		CHECK(rc == OPT_EINVAL);
	}
}

/* prepare, accept, the one-round promise, and what each refuses */
TEST(transitions)
{
	struct opt_acceptor_state s0, s1, s2, s3, x;
	struct opt_ballot b1 = ballot(1, KEY_A), b2 = ballot(1, KEY_B), nb;
	char o1[OPT_HEX_OID + 1], o2[OPT_HEX_OID + 1];

	opt_acceptor_initial(&s0, "collections/t");
	CHECK(s0.promise.n == 0 && s0.accepted.n == 0 && !s0.value[0] && s0.epoch == 0);
	CHECK_RC(opt_acceptor_prepare(&s1, &s0, "", &b1, 3));
	CHECK(opt_ballot_cmp(&s1.promise, &b1) == 0 && s1.accepted.n == 0 && !s1.prev[0] && s1.epoch == 3);
	CHECK_RC(opt_acceptor_oid(o1, &s1));
	/* a ballot not above the promise is not prepared */
	CHECK(opt_acceptor_prepare(&x, &s1, o1, &b1, 3) == OPT_ECONFLICT);
	/* accept at the promised ballot: the promise becomes next(b1) */
	CHECK_RC(opt_acceptor_accept(&s2, &s1, o1, &b1, V1, 3));
	CHECK_RC(opt_ballot_next(&nb, &b1));
	CHECK(opt_ballot_cmp(&s2.promise, &nb) == 0 && opt_ballot_cmp(&s2.accepted, &b1) == 0);
	CHECK(strcmp(s2.value, V1) == 0 && strcmp(s2.prev, o1) == 0);
	CHECK_RC(opt_acceptor_oid(o2, &s2));
	CHECK(strcmp(o1, o2) != 0);
	/* steady state: the next accept at next(b1) needs no prepare */
	CHECK_RC(opt_acceptor_accept(&s3, &s2, o2, &nb, V2, 3));
	CHECK(s3.promise.n == 3 && strcmp(s3.value, V2) == 0);
	/* another proposer's ballot (1, B) is above (1, A) but below (2, A) */
	CHECK(opt_acceptor_accept(&x, &s2, o2, &b2, V2, 3) == OPT_ECONFLICT);
	CHECK(opt_acceptor_prepare(&x, &s2, o2, &b2, 3) == OPT_ECONFLICT);
	b2.n = 5;
	CHECK_RC(opt_acceptor_prepare(&x, &s2, o2, &b2, 3));
	CHECK(strcmp(x.value, V1) == 0 && opt_ballot_cmp(&x.accepted, &b1) == 0);
	/* an accept with no prepare at all, on the initial state */
	CHECK_RC(opt_acceptor_accept(&x, &s0, "", &b1, V1, 0));
	CHECK(!x.prev[0] && strcmp(x.value, V1) == 0);
	CHECK(opt_acceptor_accept(&x, &s0, "", &b1, "xyz", 0) == OPT_EINVAL);
}

/* The encoding is a git commit: libgit2 reads it back with the parents,
 * time and message the design gives, under the object ID we computed. */
TEST(encoding_is_a_commit)
{
	struct opt_acceptor_state s0, s1, s2;
	struct opt_ballot b1 = ballot(42, KEY_A);
	char dir[] = "/tmp/opt-test-acceptor-XXXXXX", o1[OPT_HEX_OID + 1], o2[OPT_HEX_OID + 1];
	char *buf = NULL, cmd[200];
	size_t len;
	git_repository *repo = NULL;
	git_odb *odb = NULL;
	git_oid id, want;
	git_commit *c = NULL;

	CHECK(mkdtemp(dir) != NULL);
	CHECK(git_repository_init(&repo, dir, 1) == 0);
	CHECK(repo && git_repository_odb(&odb, repo) == 0);
	if (!odb)
		goto done;
	opt_acceptor_initial(&s0, "collections/a/b");
	CHECK_RC(opt_acceptor_prepare(&s1, &s0, "", &b1, 1));
	CHECK_RC(opt_acceptor_oid(o1, &s1));
	CHECK_RC(opt_acceptor_accept(&s2, &s1, o1, &b1, V1, 1));
	CHECK_RC(opt_acceptor_oid(o2, &s2));
	CHECK_RC(opt_acceptor_encode(&buf, &len, &s2));
	CHECK(git_odb_write(&id, odb, buf, len, GIT_OBJECT_COMMIT) == 0);
	CHECK(git_oid_fromstr(&want, o2) == 0 && git_oid_equal(&id, &want));
	CHECK(git_commit_lookup(&c, repo, &id) == 0);
	if (c) {
		CHECK(git_commit_parentcount(c) == 2);
		CHECK(strcmp(git_oid_tostr_s(git_commit_parent_id(c, 0)), o1) == 0);
		CHECK(strcmp(git_oid_tostr_s(git_commit_parent_id(c, 1)), V1) == 0);
		CHECK(git_commit_time(c) == 43);
		CHECK(strcmp(git_oid_tostr_s(git_commit_tree_id(c)), "4b825dc642cb6eb9a060e54bf8d69288fbee4904") == 0);
		CHECK(strcmp(git_commit_message(c),
			     "acceptor collections/a/b\n\nOpt-Acceptor: collections/a/b\nOpt-Epoch: 1\n"
			     "Opt-Promise: 43." KEY_A "\nOpt-Accepted: 42." KEY_A "\nOpt-Value: " V1 "\n") == 0);
	}
done:
	git_commit_free(c);
	git_odb_free(odb);
	git_repository_free(repo);
	free(buf);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

/* Decoding gives back the fields; any commit the protocol would not
 * write is refused, naming the register. */
TEST(decode_refuses_what_the_protocol_does_not_write)
{
	struct opt_acceptor_state s0, s1, s2, d, t;
	struct opt_ballot b1 = ballot(9, KEY_B);
	char o1[OPT_HEX_OID + 1], *buf = NULL, *m = NULL, *p;
	size_t len, i;
	static const char *const edits[][2] = {
		{ " +0000\ncommitter", " +0100\ncommitter" }, /* another zone */
		{ "author optimystic", "author Optimystic" },
		{ "\n\nacceptor ", "\nencoding UTF-8\n\nacceptor " }, /* an extra header */
		{ "Opt-Epoch: 2\n", "Opt-Epoch: 02\n" },
		{ "Opt-Epoch: 2\n", "Opt-Epoch: 2\nOpt-Note: x\n" }, /* an extra trailer */
		{ "Opt-Value: ", "Opt-Value:  " },
		{ "acceptor collections/t\n", "acceptor collections/u\n" },
		{ "Opt-Accepted: 9.", "Opt-Accepted: 10." },          /* accepted == promise */
	};

	opt_acceptor_initial(&s0, "collections/t");
	CHECK_RC(opt_acceptor_prepare(&s1, &s0, "", &b1, 2));
	CHECK_RC(opt_acceptor_oid(o1, &s1));
	CHECK_RC(opt_acceptor_accept(&s2, &s1, o1, &b1, V2, 2));
	CHECK_RC(opt_acceptor_encode(&buf, &len, &s2));
	if (!buf)
		return;
	CHECK_RC(opt_acceptor_decode(&d, "collections/t", buf, len));
	CHECK(strcmp(d.prev, o1) == 0 && strcmp(d.value, V2) == 0 && d.epoch == 2);
	CHECK(opt_ballot_cmp(&d.accepted, &b1) == 0 && d.promise.n == 10 && !d.retired);
	/* read from another register's ref */
	CHECK(opt_acceptor_decode(&d, "collections/u", buf, len) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "collections/u") != NULL);
	/* cut short anywhere */
	for (i = 0; i < len; i++)
		if (opt_acceptor_decode(&d, "collections/t", buf, i) != OPT_EINTEGRITY) {
			printf("# a state cut to %zu bytes was accepted\n", i);
			CHECK(0);
			break;
		}
	for (i = 0; i < sizeof(edits) / sizeof(*edits); i++) {
		size_t ol = strlen(edits[i][0]), nl = strlen(edits[i][1]);
		CHECK((p = strstr(buf, edits[i][0])) != NULL);
		if (!p || !(m = malloc(len + nl + 1)))
			continue;
		memcpy(m, buf, (size_t)(p - buf));
		memcpy(m + (p - buf), edits[i][1], nl);
		memcpy(m + (p - buf) + nl, p + ol, len - (size_t)(p - buf) - ol);
		if (opt_acceptor_decode(&t, "collections/t", m, len - ol + nl) != OPT_EINTEGRITY) {
			printf("# edit %zu was accepted\n", i);
			CHECK(0);
		}
		free(m);
	}
	free(buf);
}

/* A tombstone: parentless, retired, and never moved on from. */
TEST(tombstone)
{
	struct opt_acceptor_state s, d, x;
	struct opt_ballot b1 = ballot(1, KEY_A);
	char *buf = NULL;
	size_t len;

	opt_acceptor_initial(&s, "collections/t");
	s.epoch = 7;
	s.retired = 1;
	CHECK_RC(opt_acceptor_encode(&buf, &len, &s));
	CHECK(buf && strstr(buf, "Opt-Retired: yes\n") && !strstr(buf, "parent "));
	CHECK_RC(opt_acceptor_decode(&d, "collections/t", buf, len));
	CHECK(d.retired && d.epoch == 7);
	CHECK(opt_acceptor_prepare(&x, &d, "", &b1, 7) == OPT_ECONFLICT);
	CHECK(opt_acceptor_accept(&x, &d, "", &b1, V1, 7) == OPT_ECONFLICT);
	free(buf);
	s.promise = b1;
	CHECK(opt_acceptor_encode(&buf, &len, &s) == OPT_EINVAL);
}

int main(void)
{
	git_libgit2_init();
	RUN(ballots);
	RUN(transitions);
	RUN(encoding_is_a_commit);
	RUN(decode_refuses_what_the_protocol_does_not_write);
	RUN(tombstone);
	git_libgit2_shutdown();
	return DONE();
}
