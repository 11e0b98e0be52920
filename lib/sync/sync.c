/* sync.c - the sync family's common ground: its handle and lock, heads,
 * refs, records held in name order (see sync.h, internal.h). */
#include "internal.h"
#include "chain.h"
#include "collection.h"
#include "error.h"
#include "identity.h"
#include "json.h"
#include "pack.h"
#include "txn.h"
#include "util.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const struct opt_sync_opts sync_no_opts;

/* ---- small helpers ---- */

long sync_busy_timeout(const struct opt_sync_opts *o)
{
	const char *e;

	if (o && o->busy_timeout_ms > 0)
		return o->busy_timeout_ms;
	e = getenv("OPT_BUSY_TIMEOUT");
	if (e && *e && atol(e) > 0)
		return atol(e);
	return 30000;
}

void sync_progress(const struct opt_sync_opts *o, const char *what, size_t done, size_t total)
{
	if (o && o->progress)
		o->progress(what, done, total, o->arg);
}

void sync_hex_of(char out[GIT_OID_HEXSZ + 1], const git_oid *id)
{
	git_oid_tostr(out, GIT_OID_HEXSZ + 1, id);
}

void sync_oidset_clear(struct oidset *o)
{
	free(o->v);
	free(o->used);
	memset(o, 0, sizeof(*o));
}

/* Add id: 1 if new, 0 if there already, <0 out of memory. */
int sync_oidset_add(struct oidset *o, const git_oid *id)
{
	size_t i;

	if (2 * (o->n + 1) > o->cap) {
		struct oidset g = { NULL, NULL, 0, o->cap ? 2 * o->cap : 1024 };
		if (!(g.v = malloc(g.cap * sizeof(*g.v))) || !(g.used = calloc(g.cap, 1))) {
			sync_oidset_clear(&g);
			return opt_error_oom();
		}
		for (i = 0; i < o->cap; i++)
			if (o->used[i])
				sync_oidset_add(&g, &o->v[i]);
		sync_oidset_clear(o);
		*o = g;
	}
	i = ((size_t)id->id[0] << 24 | (size_t)id->id[1] << 16 | (size_t)id->id[2] << 8 | id->id[3]) & (o->cap - 1);
	for (; o->used[i]; i = (i + 1) & (o->cap - 1))
		if (git_oid_equal(&o->v[i], id))
			return 0;
	o->used[i] = 1;
	o->v[i] = *id;
	o->n++;
	return 1;
}

void sync_heads_clear(struct heads *h)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		free(h->v[i].name);
	free(h->v);
	memset(h, 0, sizeof(*h));
}

struct head *sync_heads_add(struct heads *h, const char *name)
{
	struct head *e;

	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct head *nv = realloc(h->v, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		h->v = nv;
		h->cap = cap;
	}
	e = &h->v[h->n];
	memset(e, 0, sizeof(*e));
	if (!(e->name = strdup(name)))
		return NULL;
	h->n++;
	return e;
}

struct head *sync_heads_find(struct heads *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		if (strcmp(h->v[i].name, name) == 0)
			return &h->v[i];
	return NULL;
}

int sync_cmp_head(const void *a, const void *b)
{
	return strcmp(((const struct head *)a)->name, ((const struct head *)b)->name);
}

struct under {
	size_t pl;
	json_t *arr;
};

static int under_cb(const char *name, const git_oid *id, void *arg)
{
	struct under *u = arg;

	(void)id;
	if (name[u->pl])
		json_array_append_new(u->arr, json_string(name + u->pl));
	return 0;
}

int sync_refs_under(git_repository *repo, const char *prefix, json_t **out)
{
	struct under u = { strlen(prefix), json_array() };
	json_t *arr = u.arr;
	int rc;

	*out = NULL;
	if (!arr)
		return opt_error_set(OPT_EIO, "out of memory");
	if ((rc = opt_ref_foreach(repo, prefix, under_cb, &u, "cannot list refs")) < 0) {
		json_decref(arr);
		return rc;
	}
	{
		/* sort (few refs: insertion sort of the strings) */
		size_t i, j, n = json_array_size(arr);
		for (i = 1; i < n; i++)
			for (j = i; j > 0 && strcmp(json_string_value(json_array_get(arr, j - 1)),
						     json_string_value(json_array_get(arr, j))) > 0; j--) {
				json_t *a = json_incref(json_array_get(arr, j - 1));
				json_array_set(arr, j - 1, json_array_get(arr, j));
				json_array_set_new(arr, j, a);
			}
	}
	*out = arr;
	return 0;
}

long sync_rev_of(struct opt_sync *y, const char *name, const git_oid *id)
{
	struct opt_snap *snap = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	long rev = 0;

	sync_hex_of(hex, id);
	if (opt_snap_open_commit(&snap, y->s, name, hex) == 0)
		rev = opt_snap_rev(snap);
	else
		opt_error_clear();
	opt_snap_free(snap);
	return rev;
}

int sync_descends(git_repository *repo, const git_oid *a, const git_oid *b)
{
	int rc = git_graph_descendant_of(repo, a, b);

	if (rc < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot compare histories");
	return rc;
}

int sync_have_object(struct opt_sync *y, const git_oid *id)
{
	git_odb *odb = NULL;
	int rc = 0;

	if (git_repository_odb(&odb, y->repo) == 0)
		rc = git_odb_exists(odb, id);
	git_odb_free(odb);
	return rc;
}

int opt_sync_open(struct opt_sync **out, struct opt_store *s)
{
	struct opt_sync *y;
	int rc;

	*out = NULL;
	y = calloc(1, sizeof(*y));
	if (!y)
		return opt_error_set(OPT_EIO, "out of memory");
	y->s = s;
	y->lockfd = -1;
	/* a repository object of our own: a fetch's quarantine changes its
	 * object database, not the store's */
	if ((rc = opt_store__repo_open(s, &y->repo)) < 0) {
		free(y);
		return rc;
	}
	*out = y;
	return 0;
}

void opt_sync_free(struct opt_sync *y)
{
	if (!y)
		return;
	if (y->lockfd >= 0)
		close(y->lockfd);
	git_repository_free(y->repo);
	free(y);
}

int opt_sync_lock(struct opt_sync *y, long timeout_ms)
{
	char path[PATH_MAX];
	int64_t deadline;
	unsigned tries = 0;

	if (y->lockfd >= 0)
		return 0;
	snprintf(path, sizeof(path), "%s/opt-sync.lock", opt_store_path(y->s));
	y->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (y->lockfd < 0)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", path, strerror(errno));
	deadline = opt_now_ms() + (timeout_ms > 0 ? timeout_ms : sync_busy_timeout(NULL));
	while (flock(y->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			close(y->lockfd);
			y->lockfd = -1;
			return opt_error_set(OPT_EIO, "cannot lock '%s': %s", path, strerror(errno));
		}
		if (opt_now_ms() >= deadline) {
			close(y->lockfd);
			y->lockfd = -1;
			return opt_error_set(OPT_EBUSY, "another sync of store '%s' is running (it holds %s)",
					     opt_store_path(y->s), path);
		}
		opt_sleep_ms(opt_backoff_ms(tries < 6 ? tries : 6, 10, 500));
		tries++;
	}
	return 0;
}

int sync_delete_refs_under(git_repository *repo, const char *prefix)
{
	json_t *names = NULL;
	char ref[REFLEN];
	size_t i;
	int rc;

	if ((rc = sync_refs_under(repo, prefix, &names)) < 0)
		return rc;
	for (i = 0; i < json_array_size(names) && rc == 0; i++) {
		snprintf(ref, sizeof(ref), "%s%s", prefix, json_string_value(json_array_get(names, i)));
		rc = opt_ref_cas(repo, ref, OPT_REF_ANY, NULL, "opt-sync", opt_now_ms() + sync_busy_timeout(NULL));
	}
	json_decref(names);
	return rc;
}

static int cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

int sync_sort_strings(json_t *arr)
{
	size_t n = json_array_size(arr), i;
	json_t **v = malloc((n ? n : 1) * sizeof(*v));

	if (!v)
		return opt_error_set(OPT_EIO, "out of memory");
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), cmp_json_str);
	json_array_clear(arr);
	for (i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
	return 0;
}

void sync_coll_clear(struct coll *c)
{
	free(c->name);
	json_decref(c->ours);
	json_decref(c->theirs);
	memset(c, 0, sizeof(*c));
}

int sync_check_policy(const struct opt_sync_opts *o)
{
	const char *p = o ? o->conflict : NULL;

	if (!p || strcmp(p, "replay") == 0 || strcmp(p, "keep-remote") == 0 || strcmp(p, "fail") == 0)
		return 0;
	if (strncmp(p, "exec:", 5) == 0 && p[5])
		return 0;
	return opt_error_set(OPT_EINVAL, "unknown conflict policy '%s' (replay, keep-remote, fail, exec:PROG)", opt_esc(p));
}

static int hold_cb(const json_t *rec, void *arg)
{
	struct held *h = arg;
	const char *name = json_string_value(json_object_get(rec, "collection"));

	if (!name || !json_object_get(rec, "status"))
		return h->o->emit ? h->o->emit(rec, h->o->arg) : 0;
	return json_object_set(h->recs, name, (json_t *)rec) < 0 ? opt_error_set(OPT_EIO, "out of memory") : 0;
}

static void hold_progress(const char *what, size_t done, size_t total, void *arg)
{
	struct held *h = arg;

	sync_progress(h->o, what, done, total);
}

void sync_hold_init(struct held *h, struct opt_sync_opts *lo, const struct opt_sync_opts *o)
{
	h->o = o;
	h->recs = json_object();
	*lo = *o;
	lo->emit = hold_cb;
	lo->progress = o->progress ? hold_progress : NULL;
	lo->arg = h;
}

int sync_hold_flush(struct held *h, int rc)
{
	json_t *names = json_array();
	const char *name;
	json_t *v;
	size_t i, j, n;
	int erc = 0;
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	json_object_foreach(h->recs, name, v)
		json_array_append_new(names, json_string(name));
	n = json_array_size(names);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(json_string_value(json_array_get(names, j - 1)),
					     json_string_value(json_array_get(names, j))) > 0; j--) {
			json_t *t = json_incref(json_array_get(names, j - 1));
			json_array_set(names, j - 1, json_array_get(names, j));
			json_array_set_new(names, j, t);
		}
	for (i = 0; i < n && erc == 0; i++)
		if (h->o->emit)
			erc = h->o->emit(json_object_get(h->recs, json_string_value(json_array_get(names, i))), h->o->arg);
	json_decref(names);
	json_decref(h->recs);
	h->recs = NULL;
	if (rc < 0) {
		opt_error_set(rc, "%s", msg);
		return rc;
	}
	return erc ? erc : rc;
}

int sync_valid_names(const char *const *colls, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++)
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
	return 0;
}

json_t *sync_rec_of(struct opt_sync *y, const char *remote, const char *name, const git_oid *at, const char *status,
		    int dry_run)
{
	json_t *rec = json_pack("{s:s,s:s,s:I,s:s}", "remote", remote, "collection", name, "rev",
				(json_int_t)(at ? sync_rev_of(y, name, at) : 0), "status", status);
	if (rec && dry_run)
		json_object_set_new(rec, "dry_run", json_true());
	return rec;
}

int opt_sync_close_over(struct opt_sync *y, const char *remote, json_t *names, int *grew)
{
	char stop[REFLEN], from[REFLEN];

	if (remote && !opt_sync_remote_name_valid(remote))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(remote));
	/* without a remote: the whole history (no ref is kept there) */
	if (remote)
		opt_ref_tracking(stop, sizeof(stop), remote, NULL);
	else
		snprintf(stop, sizeof(stop), "%s", opt_ref_nowhere());
	opt_ref_collection(from, sizeof(from), NULL);
	return sync_close_over_transactions(y, from, stop, names, grew);
}

/* Add the valid names of the comma-separated list cols that names lacks. */
static void add_names(json_t *names, const char *cols, int *grew)
{
	char *dup = strdup(cols), *tok, *save = NULL;

	for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		if (!opt_store_name_valid(tok) || sync_has_string(names, tok))
			continue;
		json_array_append_new(names, json_string(tok));
		if (grew)
			*grew = 1;
	}
	free(dup);
}

/* The collections sharing a transaction with name, in its revisions from
 * from_prefix+name down to stop_prefix+name, into names. */
static int close_one(struct opt_sync *y, const char *name, const char *from_prefix, const char *stop_prefix,
		     json_t *names, int *grew)
{
	struct opt_snap *snap = NULL, *p = NULL;
	char ref[REFLEN], sref[REFLEN], hex[GIT_OID_HEXSZ + 1];
	git_oid from, stop, id;
	int has_stop, d, rc;

	snprintf(ref, sizeof(ref), "%s%s", from_prefix, name);
	snprintf(sref, sizeof(sref), "%s%s", stop_prefix, name);
	if ((rc = opt_ref_read(y->repo, ref, &from)) <= 0)
		return rc;
	if ((has_stop = opt_ref_read(y->repo, sref, &stop)) < 0)
		return has_stop;
	sync_hex_of(hex, &from);
	if ((rc = opt_snap_open_commit(&snap, y->s, name, hex)) < 0)
		return rc;
	while (snap) {
		const char *cols = opt_snap_trailer(snap, "Opt-Collections");
		git_oid_fromstr(&id, opt_snap_commit(snap));
		if (has_stop && git_oid_equal(&id, &stop))
			break;
		if (cols)
			add_names(names, cols, grew);
		/* below the common base nothing is missing on either side */
		if (has_stop && (d = sync_descends(y->repo, &stop, &id)) != 0) {
			rc = d < 0 ? d : 0;
			break;
		}
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		snap = p;
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
			break;
		}
		if (rc < 0)
			return rc;
	}
	opt_snap_free(snap);
	return rc;
}

int sync_close_over_transactions(struct opt_sync *y, const char *from_prefix, const char *stop_prefix,
				 json_t *names, int *grew)
{
	size_t i;
	int rc;

	if (grew)
		*grew = 0;
	for (i = 0; i < json_array_size(names); i++)
		if ((rc = close_one(y, json_string_value(json_array_get(names, i)), from_prefix, stop_prefix, names,
				    grew)) < 0)
			return rc;
	return sync_sort_strings(names);
}

/* ---- clone ---- */

int sync_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int sync_has_string(const json_t *a, const char *v)
{
	size_t i;

	for (i = 0; i < json_array_size(a); i++)
		if (strcmp(json_string_value(json_array_get(a, i)), v) == 0)
			return 1;
	return 0;
}

int opt_sync_emit_rec(const struct opt_sync_opts *o, json_t *rec)
{
	int rc = 0;

	if (!rec)
		return opt_error_set(OPT_EIO, "out of memory");
	if (o && o->emit)
		rc = o->emit(rec, o->arg);
	json_decref(rec);
	return rc;
}

int opt_name_wanted(const char *name, const char *const *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return 1;
	return n == 0;
}

/* ---- the classifier ---- */

/* 1 if object id is in repo. */
static int in_repo(git_repository *repo, const git_oid *id)
{
	git_odb *odb = NULL;
	int rc = 0;

	if (git_repository_odb(&odb, repo) == 0)
		rc = git_odb_exists(odb, id);
	git_odb_free(odb);
	return rc;
}

/* AHEAD, BEHIND or DIVERGED: where the histories of L and T meet. */
static int relation(enum sync_state *out, git_repository *repo, const git_oid *L, const git_oid *T)
{
	git_oid mb;
	int rc;

	/* (libgit2's merge base leaks on a missing commit: its error comes
	 * from the graph walk instead) */
	if (!in_repo(repo, L) || !in_repo(repo, T))
		return (rc = sync_descends(repo, L, T)) < 0 ? rc : opt_git_fail(OPT_EINTEGRITY, "cannot compare histories");
	rc = git_merge_base(&mb, repo, L, T);
	if (rc == GIT_ENOTFOUND) {
		git_error_clear();
		*out = SYNC_DIVERGED;
		return 0;
	}
	if (rc < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot compare histories");
	*out = git_oid_equal(&mb, T) ? SYNC_AHEAD : git_oid_equal(&mb, L) ? SYNC_BEHIND : SYNC_DIVERGED;
	return 0;
}

int sync_classify(enum sync_state *out, git_repository *repo, const struct coll *c, const struct head *e, int dry_run)
{
	int d;

	*out = c->skipped ? SYNC_SKIPPED : !c->has_L ? SYNC_ABSENT_HERE : !c->has_T ? SYNC_ABSENT_THERE
		: git_oid_equal(&c->L, &c->T) ? SYNC_SAME : SYNC_DIVERGED;
	if (*out != SYNC_DIVERGED)
		return 0;
	if (!dry_run || in_repo(repo, &c->T))
		return relation(out, repo, &c->L, &c->T);
	/* not downloaded: judge by what we fetched before */
	d = e && e->has_old ? (git_oid_equal(&c->L, &e->old) ? 1 : sync_descends(repo, &e->old, &c->L)) : 0;
	if (d < 0)
		return d;
	*out = d ? SYNC_UNFETCHED_BEHIND : SYNC_UNFETCHED_DIVERGED;
	return 0;
}

const char *sync_policy_status(const char *policy)
{
	if (!policy || strcmp(policy, "replay") == 0)
		return "replayed";
	return strcmp(policy, "keep-remote") == 0 ? "kept-remote" : "conflict";
}

struct sync_verdict sync_push_verdict(enum sync_state st, int replica, int optimistic, const char *policy)
{
	struct sync_verdict v = { STEP_NONE, NULL };

	switch (st) {
	case SYNC_SKIPPED:
	case SYNC_ABSENT_HERE:
		break;
	case SYNC_SAME:
	case SYNC_UNFETCHED_BEHIND:
	case SYNC_REPLICA_PAST:
		v.step = STEP_REPORT;
		v.status = "up-to-date";
		break;
	case SYNC_ABSENT_THERE:
	case SYNC_AHEAD:
		v.step = STEP_MOVE;
		v.status = "pushed";
		break;
	case SYNC_UNFETCHED_DIVERGED:
		v.step = STEP_REPORT;
		v.status = replica ? "repaired" : sync_policy_status(policy);
		break;
	case SYNC_BEHIND:
	case SYNC_DIVERGED:
		if (replica) {
			/* it has revisions we lack: as of what we last saw, fetch
			 * them first; else repaired from our head */
			v.step = optimistic ? STEP_REFETCH : STEP_REPAIR;
		} else if (st == SYNC_BEHIND) {
			/* the remote is ahead and we have nothing new */
			v.step = STEP_REPORT;
			v.status = "up-to-date";
		} else {
			v.step = STEP_RECONCILE;
		}
		break;
	}
	return v;
}

struct sync_verdict sync_pull_verdict(enum sync_state st, const char *policy)
{
	struct sync_verdict v = { STEP_NONE, NULL };

	switch (st) {
	case SYNC_SKIPPED:
	case SYNC_ABSENT_THERE:
	case SYNC_REPLICA_PAST:
		break;
	case SYNC_SAME:
		v.step = STEP_REPORT;
		v.status = "up-to-date";
		break;
	case SYNC_ABSENT_HERE:
		v.step = STEP_MOVE;
		v.status = "new";
		break;
	case SYNC_BEHIND:
		v.step = STEP_MOVE;
		v.status = "fast-forward";
		break;
	case SYNC_UNFETCHED_BEHIND:
		v.step = STEP_REPORT;
		v.status = "fast-forward";
		break;
	case SYNC_UNFETCHED_DIVERGED:
		v.step = STEP_REPORT;
		v.status = sync_policy_status(policy);
		break;
	case SYNC_AHEAD:
		v.step = STEP_REPORT;
		v.status = "ahead";
		break;
	case SYNC_DIVERGED:
		v.step = STEP_RECONCILE;
		break;
	}
	return v;
}
