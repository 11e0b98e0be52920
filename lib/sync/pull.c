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

/* A transaction is taken whole or not at all: a collection of h whose
 * revisions we lack (from the remote's head down to where ours meets it)
 * hold a transaction over a skipped collection is skipped too (and so on,
 * until no more are), and its tracking ref goes back to where this fetch
 * found it. */
static int skip_sharing(struct opt_sync *y, struct remote *r, struct heads *h, int64_t deadline)
{
	json_t *shared = json_array();  /* per head: [[trx, collection], ...] */
	char ref[REFLEN], hex[GIT_OID_HEXSZ + 1];
	size_t i, j, k;
	int rc = 0, grew;

	if (!shared)
		return opt_error_set(OPT_EIO, "out of memory");
	for (i = 0; i < h->n && rc == 0; i++) {
		struct head *e = &h->v[i];
		struct opt_snap *snap = NULL, *p = NULL;
		json_t *pairs = json_array();
		git_oid L, id;
		int hasL;

		if (!pairs || json_array_append_new(shared, pairs) < 0) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			break;
		}
		snprintf(ref, sizeof(ref), REF_COLL "%s", e->name);
		if ((hasL = opt_git_ref_get(y->repo, ref, &L)) < 0) {
			rc = hasL;
			break;
		}
		if (hasL && git_oid_equal(&L, &e->new))
			continue;
		sync_hex_of(hex, &e->new);
		if ((rc = opt_snap_open_commit(&snap, y->s, e->name, hex)) < 0)
			break;
		while (snap) {
			const char *cols = opt_snap_trailer(snap, "Opt-Collections");
			git_oid_fromstr(&id, opt_snap_commit(snap));
			if (hasL) {
				int d = git_oid_equal(&id, &L) ? 1 : sync_descends(y->repo, &L, &id);
				if (d < 0)
					rc = d;
				if (d)
					break;
			}
			if (cols) {
				char *dup = strdup(cols), *tok, *save = NULL, et[4 * OPT_NAME_MAX + 8], etrx[4 * OPT_ID_MAX + 8];
				snprintf(etrx, sizeof(etrx), "%s", opt_esc(opt_snap_trx(snap)));
				for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
					snprintf(et, sizeof(et), "%s", opt_esc(tok));
					json_array_append_new(pairs, json_pack("[s,s]", etrx, et));
				}
				free(dup);
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
				break;
		}
		opt_snap_free(snap);
	}
	if (rc < 0) {
		json_decref(shared);
		return rc;
	}
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
				opt_error_set(OPT_ECONFLICT, "it shares transaction %s with '%s', which was skipped",
					      json_string_value(json_array_get(pair, 0)), tok);
				rc = sync_skip_add(r, h->v[i].name, (int)json_integer_value(json_object_get(why, "code")));
				grew = 1;
				break;
			}
		}
	} while (grew && rc == 0);
	json_decref(shared);
	/* drop them from h, their tracking refs where they were */
	for (i = k = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		if (!json_object_get(r->skipped, e->name)) {
			h->v[k++] = *e;
			continue;
		}
		snprintf(ref, sizeof(ref), REF_REMOTES "%s/%s", r->name, e->name);
		if (rc == 0 && strcmp(e->status, "unchanged") != 0)
			rc = sync_ref_cas(y->repo, ref, e->has_old ? &e->old : NULL, &e->new, deadline);
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

static int pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	struct coll *cs = NULL, **dv = NULL;
	json_t *more = NULL;
	const char **mc = NULL;
	size_t i, nd = 0;
	int64_t deadline;
	int rc;

	o = o ? o : &sync_no_opts;
	y->partial = 0;
	deadline = opt_now_ms() + sync_busy_timeout(o);
	if ((rc = sync_valid_names(colls, n)) < 0 || (rc = sync_check_policy(o)) < 0)
		return rc;
	if ((rc = sync_remote_open(y, &r, remote, o)) < 0)
		return rc;
	if ((rc = sync_resume(y, r.name, o, NULL)) < 0)
		goto done;
	if ((rc = sync_fetch_verified(y, &r, colls, n, o->dry_run, &h)) < 0 || (rc = sync_check_named(&h, &r, colls, n)) < 0)
		goto done;
	if ((n || o->want) && !o->dry_run) {
		/* the other collections of multi-collection transactions come
		 * too (also those o->want turned down: a transaction is taken
		 * whole or not at all) */
		char tp[REFLEN];
		int grew = 0;
		snprintf(tp, sizeof(tp), REF_REMOTES "%s/", r.name);
		if (!(more = json_array())) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
		for (i = 0; i < n; i++)
			json_array_append_new(more, json_string(colls[i]));
		for (i = 0; !n && i < h.n; i++)
			json_array_append_new(more, json_string(h.v[i].name));
		if ((rc = sync_close_over_transactions(y, tp, REF_COLL, more, &grew)) < 0)
			goto done;
		if (grew) {
			struct opt_sync_opts all = *o;
			mc = calloc(json_array_size(more) + 1, sizeof(*mc));
			if (!mc) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				goto done;
			}
			for (i = 0; i < json_array_size(more); i++)
				mc[i] = json_string_value(json_array_get(more, i));
			sync_heads_clear(&h);
			all.want = NULL;
			r.o = &all;
			rc = sync_fetch_verified(y, &r, mc, json_array_size(more), 0, &h);
			r.o = o;
			if (rc < 0)
				goto done;
		}
	}
	if (!o->dry_run && json_object_size(r.skipped) && (rc = skip_sharing(y, &r, &h, deadline)) < 0)
		goto done;
	cs = calloc(h.n + 1, sizeof(*cs));
	dv = calloc(h.n + 1, sizeof(*dv));
	if (!cs || !dv) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < h.n; i++) {
		struct head *e = &h.v[i];
		struct coll *c = &cs[i];
		char ref[REFLEN];
		const char *status = NULL;
		unsigned tries = 0;

		c->name = strdup(e->name);
		c->T = e->new;
		c->has_T = 1;
		snprintf(ref, sizeof(ref), REF_COLL "%s", e->name);
		for (;;) {
			if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) < 0)
				goto done;
			c->has_L = rc;
			if (c->has_L && git_oid_equal(&c->L, &c->T)) {
				status = "up-to-date";
				break;
			}
			if (!c->has_L) {
				status = "new";
			} else if (o->dry_run && !sync_have_object(y, &c->T)) {
				/* not downloaded: judge by what we fetched before */
				int d = e->has_old ? (git_oid_equal(&c->L, &e->old) ? 1 : sync_descends(y->repo, &e->old, &c->L)) : 0;
				if (d < 0) {
					rc = d;
					goto done;
				}
				status = d ? "fast-forward" : !o->conflict || strcmp(o->conflict, "replay") == 0 ? "replayed" :
					 strcmp(o->conflict, "keep-remote") == 0 ? "kept-remote" : "conflict";
				break;
			} else {
				int d = sync_descends(y->repo, &c->T, &c->L);
				if (d < 0) {
					rc = d;
					goto done;
				}
				if (d) {
					status = "fast-forward";
				} else if ((d = sync_descends(y->repo, &c->L, &c->T)) != 0) {
					if (d < 0) {
						rc = d;
						goto done;
					}
					status = "ahead";
					break;
				} else {
					dv[nd++] = c;
					break;
				}
			}
			if (o->dry_run)
				break;
			rc = sync_ref_cas(y->repo, ref, &c->T, c->has_L ? &c->L : NULL, deadline);
			if (rc == 0)
				break;
			if (rc == OPT_EIO && !c->has_L) {
				/* a collection that clashes with it came since the listing */
				char other[OPT_NAME_MAX + 1], tref[REFLEN], msg[1024];
				snprintf(msg, sizeof(msg), "%s", opt_error_last());
				if ((rc = opt_store_name_clash(y->s, c->name, other)) < 0)
					goto done;
				if (rc == 1) {
					snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r.name, c->name);
					if (strcmp(e->status, "unchanged") != 0 &&
					    (rc = sync_ref_cas(y->repo, tref, e->has_old ? &e->old : NULL, &e->new, deadline)) < 0)
						goto done;
					opt_error_set(OPT_ECONFLICT, "collection '%s' cannot be created: collection '%s' exists",
						      c->name, other);
					if ((rc = sync_skip_add(&r, c->name, OPT_ECONFLICT)) < 0)
						goto done;
					status = NULL;
					break;
				}
				rc = opt_error_set(OPT_EIO, "%s", msg);
				goto done;
			}
			if (rc != OPT_ECONFLICT || opt_now_ms() >= deadline)
				goto done;
			opt_sleep_ms(opt_backoff_ms(tries < 8 ? tries : 8, 2, 200));
			tries++;
		}
		if (status && (rc = opt_sync_emit_rec(o, sync_rec_of(y, r.name, c->name,
						    strcmp(status, "ahead") == 0 ? &c->L : &c->T, status, o->dry_run))) != 0)
			goto done;
	}
	rc = sync_reconcile(y, r.name, dv, nd, o, deadline, NULL);
done:
	if (json_object_size(r.skipped)) {
		y->partial = rc == 0;
		rc = sync_skip_report(&r, o, rc);
	}
	for (i = 0; cs && i < h.n; i++)
		sync_coll_clear(&cs[i]);
	free(cs);
	free(dv);
	free(mc);
	json_decref(more);
	sync_heads_clear(&h);
	sync_remote_close(&r);
	return rc;
}
