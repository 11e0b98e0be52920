/* test-sync.c - the push/pull classifier (sync_classify) on built states:
 * our head, the remote's head and the tracking ref as commits of a real
 * repository, each collection's state, and what push and pull then do
 * with it (sync_push_verdict, sync_pull_verdict): what is sent, what is
 * taken, what is only reported, what goes to the conflict policy. */
#include "harness.h"
#include "fixture.h"
#include "sync/internal.h"
#include "error.h"

#include <git2.h>
#include <time.h>
#include <unistd.h>

static git_repository *repo;
/* base <- o1 <- o2 (ours), base <- t1 (theirs), lone (no common base) */
static git_oid base, o1, o2, t1, lone, absent;

/* A commit with message text on parent (NULL: a root). */
static git_oid commit_of(const char *text, const git_oid *parent)
{
	git_oid tree, c;
	git_treebuilder *tb = NULL;
	git_tree *t = NULL;
	git_commit *p = NULL;
	git_signature *sig = NULL;

	git_treebuilder_new(&tb, repo, NULL);
	git_treebuilder_write(&tree, tb);
	git_tree_lookup(&t, repo, &tree);
	git_signature_new(&sig, "t", "t@example.org", 1700000000, 0);
	if (parent)
		git_commit_lookup(&p, repo, parent);
	if (git_commit_create(&c, repo, NULL, sig, sig, NULL, text, t, parent ? 1 : 0, (const git_commit **)&p) < 0)
		printf("# cannot commit %s: %s\n", text, git_error_last()->message);
	git_commit_free(p);
	git_signature_free(sig);
	git_tree_free(t);
	git_treebuilder_free(tb);
	return c;
}

/* One built state: our head L, the remote's head T, its tracking ref
 * before the fetch (old); NULL: absent. */
struct row {
	const char *what;
	const git_oid *L, *T, *old;
	int skipped, dry_run, replica, optimistic;
	const char *policy;
	enum sync_state state;
	enum sync_step push;          /* what push does */
	const char *push_status;      /* and the status its record shows */
	enum sync_step pull;
	const char *pull_status;
};

static const char *step_name(enum sync_step s)
{
	static const char *const n[] = { "none", "report", "move", "reconcile", "repair", "refetch" };

	return n[s];
}

static int same_status(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Classify row and check the state and both verdicts. */
static void check_row(const struct row *w)
{
	struct coll c;
	struct head e;
	struct sync_verdict pv, lv;
	enum sync_state st = SYNC_SKIPPED;
	int rc;

	memset(&c, 0, sizeof(c));
	memset(&e, 0, sizeof(e));
	c.name = (char *)"c";
	e.name = (char *)"c";
	if ((c.has_L = w->L != NULL))
		c.L = *w->L;
	if ((c.has_T = e.has_new = w->T != NULL))
		c.T = e.new = *w->T;
	if ((e.has_old = w->old != NULL))
		e.old = *w->old;
	c.skipped = w->skipped;
	rc = sync_classify(&st, repo, &c, w->T ? &e : NULL, w->dry_run);
	if (rc < 0 || st != w->state) {
		printf("# %s: state %d (rc %d: %s), expected %d\n", w->what, (int)st, rc, rc < 0 ? opt_error_last() : "",
		       (int)w->state);
		h_failed_now = 1;
		return;
	}
	pv = sync_push_verdict(st, w->replica, w->optimistic, w->policy);
	lv = sync_pull_verdict(st, w->policy);
	if (pv.step != w->push || !same_status(pv.status, w->push_status)) {
		printf("# %s: push would %s (%s), expected %s (%s)\n", w->what, step_name(pv.step),
		       pv.status ? pv.status : "-", step_name(w->push), w->push_status ? w->push_status : "-");
		h_failed_now = 1;
	}
	if (lv.step != w->pull || !same_status(lv.status, w->pull_status)) {
		printf("# %s: pull would %s (%s), expected %s (%s)\n", w->what, step_name(lv.step),
		       lv.status ? lv.status : "-", step_name(w->pull), w->pull_status ? w->pull_status : "-");
		h_failed_now = 1;
	}
}

/* Both sides at one commit: nothing is sent or taken. */
TEST(in_sync)
{
	struct row w = { "in sync", &o1, &o1, &o1, 0, 0, 0, 0, NULL, SYNC_SAME,
			 STEP_REPORT, "up-to-date", STEP_REPORT, "up-to-date" };

	check_row(&w);
	w.what = "in sync, dry run";
	w.dry_run = 1;
	check_row(&w);
}

/* We have revisions the remote lacks: push sends them, pull takes
 * nothing and says we are ahead. */
TEST(ahead)
{
	struct row w = { "ahead", &o2, &base, &base, 0, 0, 0, 0, NULL, SYNC_AHEAD,
			 STEP_MOVE, "pushed", STEP_REPORT, "ahead" };

	check_row(&w);
	w.what = "ahead by one";
	w.T = w.old = &o1;
	check_row(&w);
}

/* The remote has revisions we lack: pull fast-forwards, push sends
 * nothing (up to date) unless the remote is a replica. */
TEST(behind)
{
	struct row w = { "behind", &base, &t1, &base, 0, 0, 0, 0, NULL, SYNC_BEHIND,
			 STEP_REPORT, "up-to-date", STEP_MOVE, "fast-forward" };

	check_row(&w);
	w.what = "behind a replica";
	w.replica = 1;
	w.push = STEP_REPAIR;
	w.push_status = NULL;
	check_row(&w);
	w.what = "behind a replica, as last seen";
	w.optimistic = 1;
	w.push = STEP_REFETCH;
	check_row(&w);
}

/* Both sides moved since a common base (or have none): neither sends
 * nor takes; the conflict policy decides. */
TEST(diverged)
{
	struct row w = { "diverged", &o2, &t1, &base, 0, 0, 0, 0, NULL, SYNC_DIVERGED,
			 STEP_RECONCILE, NULL, STEP_RECONCILE, NULL };

	check_row(&w);
	w.what = "diverged, keep-remote";
	w.policy = "keep-remote";
	check_row(&w);
	w.what = "no common base";
	w.L = &lone;
	w.old = NULL;
	check_row(&w);
	w.what = "diverged from a replica";
	w.replica = 1;
	w.push = STEP_REPAIR;
	check_row(&w);
}

/* Only the remote has it: pull takes it as new; push has nothing. */
TEST(new_there)
{
	struct row w = { "new at the remote", NULL, &t1, NULL, 0, 0, 0, 0, NULL, SYNC_ABSENT_HERE,
			 STEP_NONE, NULL, STEP_MOVE, "new" };

	check_row(&w);
	w.what = "deleted here";
	w.old = &t1;
	check_row(&w);
}

/* Only we have it (new here, or deleted at the remote): push sends it. */
TEST(new_here)
{
	struct row w = { "new here", &o1, NULL, NULL, 0, 0, 0, 0, NULL, SYNC_ABSENT_THERE,
			 STEP_MOVE, "pushed", STEP_NONE, NULL };

	check_row(&w);
}

/* A remote name we cannot take: nothing moves either way. */
TEST(skipped_name)
{
	struct row w = { "skipped", &o1, &t1, &base, 1, 0, 0, 0, NULL, SYNC_SKIPPED,
			 STEP_NONE, NULL, STEP_NONE, NULL };

	check_row(&w);
	w.what = "skipped, same head";
	w.T = &o1;
	check_row(&w);
}

/* A dry run whose remote head was not downloaded is judged by the
 * tracking ref: the remote only went on from ours (a fast-forward for
 * pull), or ours moved too (the policy's status). */
TEST(dry_run_unfetched)
{
	struct row w = { "unfetched, remote went on", &o1, &absent, &o1, 0, 1, 0, 0, NULL, SYNC_UNFETCHED_BEHIND,
			 STEP_REPORT, "up-to-date", STEP_REPORT, "fast-forward" };

	check_row(&w);
	w.what = "unfetched, tracking ref past ours";
	w.L = &base;
	w.old = &t1;
	check_row(&w);
	w.what = "unfetched, ours moved";
	w.L = &o2;
	w.old = &base;
	w.state = SYNC_UNFETCHED_DIVERGED;
	w.push_status = w.pull_status = "replayed";
	check_row(&w);
	w.what = "unfetched, never fetched, keep-remote";
	w.old = NULL;
	w.policy = "keep-remote";
	w.push_status = w.pull_status = "kept-remote";
	check_row(&w);
	w.what = "unfetched, fail";
	w.policy = "fail";
	w.push_status = w.pull_status = "conflict";
	check_row(&w);
	w.what = "unfetched replica";
	w.replica = 1;
	w.push_status = "repaired";
	check_row(&w);
}

/* Outside a dry run a remote head that is not here is refused: its
 * history cannot be compared. */
TEST(missing_head)
{
	struct coll c;
	struct head e;
	enum sync_state st;

	memset(&c, 0, sizeof(c));
	memset(&e, 0, sizeof(e));
	c.has_L = c.has_T = e.has_new = 1;
	c.L = o1;
	c.T = e.new = absent;
	CHECK(sync_classify(&st, repo, &c, &e, 0) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "cannot compare histories"));
}

/* A replica given its home's state and already past it is left as it
 * is; the other states keep their meaning. */
TEST(replica_past)
{
	struct sync_verdict v = sync_push_verdict(SYNC_REPLICA_PAST, 1, 0, NULL);

	CHECK(v.step == STEP_REPORT && strcmp(v.status, "up-to-date") == 0);
	v = sync_push_verdict(SYNC_AHEAD, 1, 1, NULL);
	CHECK(v.step == STEP_MOVE && strcmp(v.status, "pushed") == 0);
	v = sync_pull_verdict(SYNC_REPLICA_PAST, NULL);
	CHECK(v.step == STEP_NONE);
}

int main(void)
{
	if (fixture_start("sync") < 0)
		return 1;
	git_libgit2_init();
	if (git_repository_init(&repo, at("repo"), 1) < 0) {
		printf("Bail out! cannot make a repository: %s\n", git_error_last()->message);
		return 1;
	}
	base = commit_of("base", NULL);
	o1 = commit_of("o1", &base);
	o2 = commit_of("o2", &o1);
	t1 = commit_of("t1", &base);
	lone = commit_of("lone", NULL);
	git_oid_fromstr(&absent, "0123456789abcdef0123456789abcdef01234567");
	RUN(in_sync);
	RUN(ahead);
	RUN(behind);
	RUN(diverged);
	RUN(new_there);
	RUN(new_here);
	RUN(skipped_name);
	RUN(dry_run_unfetched);
	RUN(missing_head);
	RUN(replica_past);
	git_repository_free(repo);
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	git_libgit2_shutdown();
	return DONE();
}
