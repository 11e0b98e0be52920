/* pull.c - pull: fetch, then fast-forward, or replay per policy. */
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

/* ---- pull ---- */

/* One pull: what it holds from start to end. */
struct pull_run {
	struct opt_sync *y;
	const struct opt_sync_opts *o;
	struct remote r;
	struct heads h;              /* the remote's heads, as fetched */
	struct coll *cs;             /* one per head */
	struct coll **dv;            /* the diverged ones, for the policy */
	size_t nd;
	int64_t deadline;
};

/* The [trx, collection] pairs (escaped) of the multi-collection
 * transactions of the revision at snap into pairs. */
static void add_pairs(json_t *pairs, struct opt_snap *snap)
{
	const char *cols = opt_snap_trailer(snap, "Opt-Collections");
	char *dup, *tok, *save = NULL, et[4 * OPT_NAME_MAX + 8], etrx[4 * OPT_ID_MAX + 8];

	if (!cols)
		return;
	dup = strdup(cols);
	snprintf(etrx, sizeof(etrx), "%s", opt_esc(opt_snap_trx(snap)));
	for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		snprintf(et, sizeof(et), "%s", opt_esc(tok));
		json_array_append_new(pairs, json_pack("[s,s]", etrx, et));
	}
	free(dup);
}

/* The pairs of the revisions of e we lack (from the remote's head down
 * to where ours meets it) into pairs. */
static int shared_pairs(struct opt_sync *y, const struct head *e, json_t *pairs)
{
	struct opt_snap *snap = NULL, *p = NULL;
	char ref[REFLEN], hex[GIT_OID_HEXSZ + 1];
	git_oid L, id;
	int hasL, rc;

	opt_ref_collection(ref, sizeof(ref), e->name);
	if ((hasL = opt_ref_read(y->repo, ref, &L)) < 0)
		return hasL;
	if (hasL && git_oid_equal(&L, &e->new))
		return 0;
	sync_hex_of(hex, &e->new);
	if ((rc = opt_snap_open_commit(&snap, y->s, e->name, hex)) < 0)
		return rc;
	while (snap) {
		git_oid_fromstr(&id, opt_snap_commit(snap));
		if (hasL) {
			int d = git_oid_equal(&id, &L) ? 1 : sync_descends(y->repo, &L, &id);
			if (d < 0)
				rc = d;
			if (d)
				break;
		}
		add_pairs(pairs, snap);
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		snap = p;
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
			break;
		}
		if (rc < 0)
			break;
	}
	opt_snap_free(snap);
	return rc;
}

/* Skip each collection of h that shares a transaction (its pairs in
 * shared) with a skipped one, and so on, until no more are. */
static int skip_spread(struct remote *r, const struct heads *h, const json_t *shared)
{
	size_t i, j;
	int rc = 0, grew;

	do {
		grew = 0;
		for (i = 0; i < h->n && rc == 0; i++) {
			json_t *pairs = json_array_get(shared, i), *pair, *why;
			if (json_object_get(r->skipped, h->v[i].name))
				continue;
			json_array_foreach(pairs, j, pair) {
				const char *tok = json_string_value(json_array_get(pair, 1));
				if (!tok || strcmp(tok, h->v[i].name) == 0 || !(why = json_object_get(r->skipped, tok)))
					continue;
				opt_error_set_reason(opt_error_set(OPT_ECONFLICT, "it shares transaction %s with '%s', "
								   "which was skipped",
								   json_string_value(json_array_get(pair, 0)), tok),
						     "linked");
				rc = sync_skip_add(r, h->v[i].name, (int)json_integer_value(json_object_get(why, "code")));
				grew = 1;
				break;
			}
		}
	} while (grew && rc == 0);
	return rc;
}

/* A transaction is taken whole or not at all: a collection of h whose
 * revisions we lack (from the remote's head down to where ours meets it)
 * hold a transaction over a skipped collection is skipped too (and so on,
 * until no more are), and its tracking ref goes back to where this fetch
 * found it. */
static int skip_sharing(struct opt_sync *y, struct remote *r, struct heads *h, int64_t deadline)
{
	json_t *shared = json_array();  /* per head: [[trx, collection], ...] */
	char ref[REFLEN];
	size_t i, k;
	int rc = 0;

	OPT_CHECK_ALLOC(shared);
	for (i = 0; i < h->n && rc == 0; i++) {
		json_t *pairs = json_array();
		if (!pairs || json_array_append_new(shared, pairs) < 0)
			rc = opt_error_oom();
		else
			rc = shared_pairs(y, &h->v[i], pairs);
	}
	if (rc == 0)
		rc = skip_spread(r, h, shared);
	json_decref(shared);
	if (rc < 0)
		return rc;
	/* drop them from h, their tracking refs where they were */
	for (i = k = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		if (!json_object_get(r->skipped, e->name)) {
			h->v[k++] = *e;
			continue;
		}
		opt_ref_tracking(ref, sizeof(ref), r->name, e->name);
		if (rc == 0 && strcmp(e->status, "unchanged") != 0)
			rc = opt_ref_cas(y->repo, ref, &e->new, e->has_old ? &e->old : NULL, "opt-sync", deadline);
		free(e->name);
	}
	h->n = k;
	return rc;
}

static int pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o);

int opt_sync_pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o)
{
	struct opt_sync_opts lo;
	struct held h;

	sync_hold_init(&h, &lo, o ? o : &sync_no_opts);
	return sync_hold_flush(&h, pull(y, remote, colls, n, &lo));
}

int opt_sync_pull_url(struct opt_sync *y, const char *name, const char *url, const char *const *colls, size_t n,
		      const struct opt_sync_opts *o)
{
	int rc;

	if (!opt_sync_remote_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(name));
	y->url = url;
	rc = opt_sync_pull(y, name, colls, n, o);
	y->url = NULL;
	return rc;
}

/* The other collections of the multi-collection transactions of colls
 * (n; 0: all the remote's) come too, also those o->want turned down: a
 * transaction is taken whole or not at all.  Fetched again when there
 * are such. */
static int fetch_whole(struct pull_run *p, const char *const *colls, size_t n)
{
	struct opt_sync_opts all = *p->o;
	json_t *more = json_array();
	const char **mc = NULL;
	char tp[REFLEN], cp[REFLEN];
	size_t i;
	int grew = 0, rc;

	OPT_CHECK_ALLOC(more);
	opt_ref_tracking(tp, sizeof(tp), p->r.name, NULL);
	for (i = 0; i < n; i++)
		json_array_append_new(more, json_string(colls[i]));
	for (i = 0; !n && i < p->h.n; i++)
		json_array_append_new(more, json_string(p->h.v[i].name));
	opt_ref_collection(cp, sizeof(cp), NULL);
	if ((rc = sync_close_over_transactions(p->y, tp, cp, more, &grew)) < 0 || !grew)
		goto done;
	if (!(mc = calloc(json_array_size(more) + 1, sizeof(*mc)))) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < json_array_size(more); i++)
		mc[i] = json_string_value(json_array_get(more, i));
	sync_heads_clear(&p->h);
	all.want = NULL;
	p->r.o = &all;
	rc = sync_fetch_verified(p->y, &p->r, mc, json_array_size(more), 0, &p->h);
	p->r.o = p->o;
done:
	free(mc);
	json_decref(more);
	return rc;
}

/* Fetch what the pull takes: colls (n; 0: all), whole transactions. */
static int pull_fetch(struct pull_run *p, const char *const *colls, size_t n)
{
	const struct opt_sync_opts *o = p->o;
	int rc;

	if ((rc = sync_fetch_verified(p->y, &p->r, colls, n, o->dry_run, &p->h)) < 0 ||
	    (rc = sync_check_named(&p->h, &p->r, colls, n)) < 0)
		return rc;
	if ((n || o->want) && !o->dry_run && (rc = fetch_whole(p, colls, n)) < 0)
		return rc;
	if (!o->dry_run && json_object_size(p->r.skipped))
		return skip_sharing(p->y, &p->r, &p->h, p->deadline);
	return 0;
}

/* Our ref of c could not be made: when a collection that clashes with
 * it came since the listing, c is skipped (its tracking ref back where
 * the fetch found it), else the error stands. */
static int pull_clash(struct pull_run *p, const struct head *e, const struct coll *c)
{
	char other[OPT_NAME_MAX + 1], tref[REFLEN], msg[1024];
	int rc;

	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if ((rc = opt_store_name_clash(p->y->s, c->name, other)) < 0)
		return rc;
	if (rc != 1)
		return opt_error_set(OPT_EIO, "%s", msg);
	opt_ref_tracking(tref, sizeof(tref), p->r.name, c->name);
	if (strcmp(e->status, "unchanged") != 0 &&
	    (rc = opt_ref_cas(p->y->repo, tref, &e->new, e->has_old ? &e->old : NULL, "opt-sync", p->deadline)) < 0)
		return rc;
	opt_error_set(OPT_ECONFLICT, "collection '%s' cannot be created: collection '%s' exists", c->name, other);
	return sync_skip_add(&p->r, c->name, OPT_ECONFLICT);
}

/* Take the remote's head e into c as its state says (sync_classify,
 * sync_pull_verdict): our ref moves to it, or a record says why not, or
 * c waits for the conflict policy.  Our ref moving meanwhile classifies
 * it again. */
static int pull_one(struct pull_run *p, const struct head *e, struct coll *c)
{
	const struct opt_sync_opts *o = p->o;
	struct sync_verdict v;
	char ref[REFLEN];
	unsigned tries = 0;
	int rc;

	OPT_CHECK_ALLOC(c->name = strdup(e->name));
	c->T = e->new;
	c->has_T = 1;
	c->skipped = json_object_get(p->r.skipped, e->name) != NULL;
	opt_ref_collection(ref, sizeof(ref), e->name);
	for (;;) {
		if ((rc = opt_ref_read(p->y->repo, ref, &c->L)) < 0)
			return rc;
		c->has_L = rc;
		if ((rc = sync_classify(&c->state, p->y->repo, c, e, o->dry_run)) < 0)
			return rc;
		v = sync_pull_verdict(c->state, o->conflict);
		if (v.step != STEP_MOVE || o->dry_run)
			break;
		if ((rc = opt_ref_cas(p->y->repo, ref, c->has_L ? &c->L : NULL, &c->T, "opt-sync", p->deadline)) == 0)
			break;
		if (rc == OPT_EIO && !c->has_L)
			return pull_clash(p, e, c);
		if (rc != OPT_ECONFLICT || opt_now_ms() >= p->deadline)
			return rc;
		opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 200));
		tries++;
	}
	if (v.step == STEP_RECONCILE)
		p->dv[p->nd++] = c;
	if (v.step != STEP_REPORT && v.step != STEP_MOVE)
		return 0;
	return opt_sync_emit_rec(o, sync_rec_of(p->y, p->r.name, c->name, c->state == SYNC_AHEAD ? &c->L : &c->T,
						v.status, o->dry_run));
}

static int pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct pull_run p;
	size_t i;
	int rc;

	memset(&p, 0, sizeof(p));
	p.y = y;
	p.o = o = o ? o : &sync_no_opts;
	y->partial = 0;
	p.deadline = opt_now_ms() + sync_busy_timeout(o);
	if ((rc = sync_valid_names(colls, n)) < 0 || (rc = sync_check_policy(o)) < 0)
		return rc;
	if ((rc = sync_remote_open(y, &p.r, remote, o)) < 0)
		return rc;
	if ((rc = sync_resume(y, p.r.name, o, NULL)) < 0 || (rc = pull_fetch(&p, colls, n)) < 0)
		goto done;
	p.cs = calloc(p.h.n + 1, sizeof(*p.cs));
	p.dv = calloc(p.h.n + 1, sizeof(*p.dv));
	if (!p.cs || !p.dv) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < p.h.n; i++)
		if ((rc = pull_one(&p, &p.h.v[i], &p.cs[i])) != 0)
			goto done;
	rc = sync_reconcile(y, p.r.name, p.dv, p.nd, o, p.deadline, NULL);
done:
	if (json_object_size(p.r.skipped)) {
		y->partial = rc == 0;
		rc = sync_skip_report(&p.r, o, rc);
	}
	for (i = 0; p.cs && i < p.h.n; i++)
		sync_coll_clear(&p.cs[i]);
	free(p.cs);
	free(p.dv);
	sync_heads_clear(&p.h);
	sync_remote_close(&p.r);
	return rc;
}
