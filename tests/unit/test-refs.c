/* test-refs.c - the store's refs (lib/store/git.h): the namespace
 * builders, the compare-and-swap (one ref and several), the trailers'
 * writer and reader, and the decision lookup. */
#include "harness.h"
#include "fixture.h"
#include "error.h"
#include "store.h"
#include "store/git.h"
#include "util.h"

#include <fcntl.h>
#include <unistd.h>

TEST(namespace)
{
	char b[OPT_REF_MAX], small[24];

	CHECK_RC(opt_ref_collection(b, sizeof(b), "a/b"));
	CHECK(strcmp(b, "refs/opt/collections/a/b") == 0);
	CHECK(strcmp(opt_ref_collection_name(b), "a/b") == 0);
	CHECK_RC(opt_ref_collection(b, sizeof(b), NULL));
	CHECK(strcmp(b, "refs/opt/collections/") == 0);
	CHECK_RC(opt_ref_tracking(b, sizeof(b), "r", "c"));
	CHECK(strcmp(b, "refs/opt/remotes/r/c") == 0);
	CHECK(opt_ref_collection_name(b) == NULL);
	CHECK_RC(opt_ref_tracking(b, sizeof(b), "r", NULL));
	CHECK(strcmp(b, "refs/opt/remotes/r/") == 0);
	CHECK_RC(opt_ref_tracking(b, sizeof(b), NULL, NULL));
	CHECK(strcmp(b, "refs/opt/remotes/") == 0);
	CHECK_RC(opt_ref_incoming(b, sizeof(b), "r", "c"));
	CHECK(strcmp(b, "refs/opt/incoming/r/c") == 0);
	CHECK_RC(opt_ref_backup(b, sizeof(b), "c"));
	CHECK(strcmp(b, "refs/opt/sync/backup/c") == 0);
	CHECK_RC(opt_ref_push(b, sizeof(b), "c"));
	CHECK(strcmp(b, "refs/opt/sync/push/c") == 0);
	CHECK(strcmp(opt_ref_under("refs/opt/sync/push/c", "refs/opt/sync/"), "push/c") == 0);
	/* the quorum protocol's (docs/quorum.md, "Ref names") */
	CHECK_RC(opt_ref_acceptor(b, sizeof(b), "collections/a/b"));
	CHECK(strcmp(b, "refs/opt/acceptors/collections/a/b") == 0);
	CHECK(opt_ref_collection_name(b) == NULL);
	CHECK_RC(opt_ref_chosen(b, sizeof(b), "c"));
	CHECK(strcmp(b, "refs/opt/chosen/c") == 0);
	CHECK_RC(opt_ref_proposal(b, sizeof(b), "c"));
	CHECK(strcmp(b, "refs/opt/proposals/c") == 0);
	CHECK_RC(opt_ref_peer_acceptor(b, sizeof(b), "p", "collections/c"));
	CHECK(strcmp(b, "refs/opt/peers/p/acceptors/collections/c") == 0);
	CHECK_RC(opt_ref_peer_acceptor(b, sizeof(b), NULL, NULL));
	CHECK(strcmp(b, "refs/opt/peers/") == 0);
	CHECK_RC(opt_ref_quorum_stage(b, sizeof(b), "p", "collections/c"));
	CHECK(strcmp(b, "refs/opt/sync/quorum/p/collections/c") == 0);
	CHECK(opt_ref_peer_acceptor(small, sizeof(small), "p", "collections/a-long-name") == OPT_EINVAL);
	CHECK(strncmp(opt_ref_nowhere(), "refs/opt/", 9) == 0);
	CHECK(opt_ref_collection(small, sizeof(small), "a-long-name") == OPT_EINVAL);
}

/* An ID that is not in the repository (refs take any value). */
static void oid_of(git_oid *id, int k)
{
	char hex[GIT_OID_HEXSZ + 1];

	snprintf(hex, sizeof(hex), "%040d", k);
	git_oid_fromstr(id, hex);
}

TEST(cas_one)
{
	struct opt_store *s = NULL;
	git_repository *repo;
	git_oid a, b, c, got;
	char lock[PATH_MAX + 64];
	int fd;

	CHECK_RC(opt_store_create(&s, at("one"), NULL));
	if (!s)
		return;
	repo = opt_store__repo(s);
	oid_of(&a, 1);
	oid_of(&b, 2);
	oid_of(&c, 3);
	CHECK(opt_ref_read(repo, "refs/opt/collections/x", &got) == 0);
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/x", NULL, &a, "t", 0));
	CHECK(opt_ref_read(repo, "refs/opt/collections/x", &got) == 1 && git_oid_equal(&got, &a));
	/* must not exist, but does; holds another value */
	CHECK(opt_ref_cas(repo, "refs/opt/collections/x", NULL, &b, "t", 0) == OPT_ECONFLICT);
	CHECK(opt_ref_cas(repo, "refs/opt/collections/x", &c, &b, "t", 0) == OPT_ECONFLICT);
	CHECK(strcmp(opt_error_last(), "ref 'refs/opt/collections/x' changed meanwhile") == 0);
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/x", &a, &b, "t", 0));
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/x", OPT_REF_ANY, &c, "t", 0));
	CHECK(opt_ref_read(repo, "refs/opt/collections/x", &got) == 1 && git_oid_equal(&got, &c));
	/* a held lock: busy, with the collection's message, after retrying */
	snprintf(lock, sizeof(lock), "%s/refs/opt/collections/x.lock", git_repository_path(repo));
	fd = open(lock, O_WRONLY | O_CREAT | O_EXCL, 0666);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(opt_ref_cas(repo, "refs/opt/collections/x", &c, &a, "t", opt_now_ms() + 50) == OPT_EBUSY);
	CHECK(strcmp(opt_error_last(),
		     "collection 'x' is busy (its ref is locked: refs/opt/collections/x.lock)") == 0);
	unlink(lock);
	/* deletes: expected value, any value, gone */
	CHECK(opt_ref_cas(repo, "refs/opt/collections/x", &a, NULL, "t", 0) == OPT_ECONFLICT);
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/x", &c, NULL, "t", 0));
	CHECK(opt_ref_read(repo, "refs/opt/collections/x", &got) == 0);
	CHECK(opt_ref_cas(repo, "refs/opt/collections/x", &c, NULL, "t", 0) == OPT_ECONFLICT);
	CHECK(strcmp(opt_error_last(), "ref 'refs/opt/collections/x' is gone") == 0);
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/x", OPT_REF_ANY, NULL, "t", 0));
	CHECK_RC(opt_ref_cas(repo, "refs/opt/sync/push/x", NULL, &a, "t", 0));
	CHECK_RC(opt_ref_cas(repo, "refs/opt/sync/push/x", OPT_REF_ANY, NULL, "t", 0));
	CHECK(opt_ref_read(repo, "refs/opt/sync/push/x", &got) == 0);
	opt_store_free(s);
}

TEST(cas_many)
{
	struct opt_store *s = NULL;
	git_repository *repo;
	git_oid a, b, got;
	size_t failed = 99;

	CHECK_RC(opt_store_create(&s, at("many"), NULL));
	if (!s)
		return;
	repo = opt_store__repo(s);
	oid_of(&a, 1);
	oid_of(&b, 2);
	CHECK_RC(opt_ref_cas(repo, "refs/opt/collections/p", NULL, &a, "t", 0));
	{
		/* p from a to b, its backup made; q must stay absent */
		struct opt_ref_update u[] = {
			{ "refs/opt/collections/p", &a, &b, "move" },
			{ "refs/opt/sync/backup/p", NULL, &a, "backup" },
			{ "refs/opt/sync/backup/q", NULL, NULL, NULL },
		};
		CHECK_RC(opt_ref_cas_many(repo, u, 3, 0, &failed));
	}
	CHECK(opt_ref_read(repo, "refs/opt/collections/p", &got) == 1 && git_oid_equal(&got, &b));
	CHECK(opt_ref_read(repo, "refs/opt/sync/backup/p", &got) == 1 && git_oid_equal(&got, &a));
	CHECK(opt_ref_read(repo, "refs/opt/sync/backup/q", &got) == 0);
	{
		/* the second differs: nothing moves */
		struct opt_ref_update u[] = {
			{ "refs/opt/collections/p", &b, &a, "move" },
			{ "refs/opt/sync/backup/p", NULL, &b, "backup" },
		};
		CHECK(opt_ref_cas_many(repo, u, 2, 0, &failed) == OPT_ECONFLICT);
		CHECK(failed == 1);
	}
	CHECK(opt_ref_read(repo, "refs/opt/collections/p", &got) == 1 && git_oid_equal(&got, &b));
	{
		struct opt_ref_update u[] = { { "refs/opt/sync/backup/p", &a, NULL, NULL } };
		CHECK_RC(opt_ref_cas_many(repo, u, 1, 0, NULL));
	}
	CHECK(opt_ref_read(repo, "refs/opt/sync/backup/p", &got) == 0);
	opt_store_free(s);
}

TEST(trailers)
{
	char buf[512] = "summary\n\n", small[20] = "";
	struct opt_trailers t = { 0 }, r;

	t.rev = 7;
	t.trx = "abc";
	t.status = "pending";
	t.primary = "p";
	t.collections = "p,q";
	t.has_expires = 1;
	t.expires = 1234567890;
	t.primary_base = "none";
	CHECK_RC(opt_trailers_format(buf, sizeof(buf), &t));
	CHECK(strcmp(buf, "summary\n\nOpt-Rev: 7\nOpt-Trx: abc\nOpt-Status: pending\nOpt-Primary: p\n"
			  "Opt-Collections: p,q\nOpt-Expires: 1234567890\nOpt-Primary-Base: none\n") == 0);
	CHECK_RC(opt_trailers_parse(&r, buf));
	CHECK(r.rev == 7 && r.has_expires && r.expires == 1234567890);
	CHECK(r.trx && strcmp(r.trx, "abc") == 0);
	CHECK(r.status && strcmp(r.status, "pending") == 0);
	CHECK(r.primary && strcmp(r.primary, "p") == 0);
	CHECK(r.collections && strcmp(r.collections, "p,q") == 0);
	CHECK(r.primary_base && strcmp(r.primary_base, "none") == 0);
	opt_trailers_release(&r);
	CHECK_RC(opt_trailers_parse(&r, "plain\n\nOpt-Rev: 1\n"));
	CHECK(r.rev == 1 && !r.trx && !r.status && !r.primary && !r.has_expires && !r.primary_base);
	opt_trailers_release(&r);
	CHECK(opt_trailers_format(small, sizeof(small), &t) == OPT_EINVAL);
	{
		char *v = opt_trailer_value(buf, "Opt-Primary-Base");
		CHECK(v && strcmp(v, "none") == 0);
		free(v);
		CHECK(opt_trailer_value(buf, "Nope") == NULL);
	}
}

TEST(decisions)
{
	struct opt_store *s = NULL;
	int d = 9;

	CHECK_RC(opt_store_create(&s, at("dec"), NULL));
	if (!s)
		return;
	/* no such primary (nothing clashes): undecided */
	CHECK_RC(opt_store__decision_from(s, "p", NULL, "trx", NULL, 0, &d));
	CHECK(d == 0);
	CHECK_RC(opt_store__decision_of(s, "p", "trx", 0, &d));
	CHECK(d == 0);
	CHECK(opt_store__decision_of(s, "../x", "trx", 0, &d) == OPT_EINTEGRITY);
	opt_store_free(s);
}

int main(void)
{
	int rc;

	if (fixture_start("refs") < 0)
		return 1;
	RUN(namespace);
	RUN(cas_one);
	RUN(cas_many);
	RUN(trailers);
	RUN(decisions);
	rc = DONE();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
