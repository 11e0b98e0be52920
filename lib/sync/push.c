/* push.c - push: classify each collection, send, record; path and network
 * transports. */
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

/* ---- push ---- */

/* Write what pb holds into the path remote r as one pack. */
static int pack_to_peer(struct remote *r, git_packbuilder *pb)
{
	git_odb *odb = NULL;
	char dir[PATH_MAX];

	if (git_packbuilder_object_count(pb) == 0)
		return 0;
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (git_packbuilder_write(pb, dir, 0, NULL, NULL) < 0)
		return sync_net_fail(r, "cannot write objects");
	if (git_repository_odb(&odb, r->peer_repo) == 0)
		git_odb_refresh(odb);
	git_odb_free(odb);
	return 0;
}

/* Copy what the remote lacks of nw (it has expect, may be NULL) into the
 * path remote as one pack, then compare-and-swap its ref. */
static int push_path_one(struct opt_sync *y, struct remote *r, const char *name, const git_oid *expect,
			 const git_oid *nw, int64_t deadline)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	char ref[REFLEN];
	int rc = 0;

	if (git_packbuilder_new(&pb, y->repo) < 0 || git_revwalk_new(&w, y->repo) < 0 ||
	    git_revwalk_push(w, nw) < 0 || (expect && git_revwalk_hide(w, expect) < 0) ||
	    git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	if ((rc = pack_to_peer(r, pb)) < 0)
		goto done;
	opt_ref_collection(ref, sizeof(ref), name);
	rc = opt_ref_cas(r->peer_repo, ref, expect, nw, "opt-sync", deadline);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s': collection '%s' moved", r->name, name);
	if (rc == 0 && opt_pack_consolidate(r->peer_repo, 0) < 0)
		opt_error_clear();
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* The index of ref (collection NAME's) in a batch push, or nb. */
static size_t batch_index(const struct remote *r, const char *ref)
{
	const char *name = opt_ref_collection_name(ref);
	size_t i;

	if (!name)
		return r->nb;
	for (i = 0; i < r->nb; i++)
		if (strcmp(r->bnames[i], name) == 0)
			break;
	return i;
}

static int nego_cb(const git_push_update **u, size_t len, void *payload)
{
	struct remote *r = payload;
	git_oid zero;
	size_t i;

	memset(&zero, 0, sizeof(zero));
	for (i = 0; i < len; i++) {
		size_t b = r->nb ? batch_index(r, u[i]->dst_refname) : 0;
		const git_oid *want = r->nb ? (b < r->nb && r->bexpect[b] ? r->bexpect[b] : &zero)
					    : r->expect ? r->expect : &zero;
		if (!git_oid_equal(&u[i]->src, want)) {
			r->conflict = 1;
			snprintf(r->push_msg, sizeof(r->push_msg), "%s moved", u[i]->dst_refname);
			git_error_set_str(GIT_ERROR_NET, "the remote moved since it was fetched");
			return GIT_EUSER;
		}
	}
	return 0;
}

static int update_ref_cb(const char *refname, const char *status, void *data)
{
	struct remote *r = data;

	if (status) {
		size_t b = r->nb ? batch_index(r, refname) : 0;
		if (r->nb && b < r->nb)
			r->bres[b] = OPT_ECONFLICT;
		else
			r->conflict = 1;
		snprintf(r->push_msg, sizeof(r->push_msg), "%s: %s", refname, status);
	}
	return 0;
}

int sync_push_specs(struct opt_sync *y, struct remote *r, git_remote **gr, git_strarray *specs, int *grc)
{
	git_push_options po;

	if (r->conn) {
		/* connected by tracking_holds: the advertisement it checked */
		*gr = r->conn;
		r->conn = NULL;
	} else if (sync_anon_remote(gr, y->repo, r->url) < 0) {
		return sync_net_fail(r, "invalid URL");
	}
	git_push_options_init(&po, GIT_PUSH_OPTIONS_VERSION);
	sync_callbacks(&po.callbacks, r);
	po.callbacks.push_negotiation = nego_cb;
	po.callbacks.push_update_reference = update_ref_cb;
	r->conflict = 0;
	r->push_msg[0] = '\0';
	r->cred_tries = 0;
	git_error_clear();
	*grc = git_remote_push(*gr, specs, &po);
	return 0;
}

/* Push over a transport that runs git receive-pack at the far end, which
 * compares the old value. */
static int push_net_one(struct opt_sync *y, struct remote *r, const char *name, const git_oid *expect,
			const git_oid *nw, int64_t deadline)
{
	git_remote *gr = NULL;
	git_strarray specs = { 0 };
	char tmp[REFLEN], cref[REFLEN], *spec = NULL;
	int rc, grc;

	opt_ref_push(tmp, sizeof(tmp), name);
	if (opt_ref_cas(y->repo, tmp, OPT_REF_ANY, nw, "opt-sync push", 0) < 0)
		return opt_git_fail(OPT_EIO, "cannot prepare the push");
	opt_ref_collection(cref, sizeof(cref), name);
	if (asprintf(&spec, "%s%s:%s", r->force ? "+" : "", tmp, cref) < 0) {
		spec = NULL;
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	specs.strings = &spec;
	specs.count = 1;
	r->expect = expect;
	if ((rc = sync_push_specs(y, r, &gr, &specs, &grc)) < 0)
		goto done;
	if (r->conflict || grc == GIT_ENONFASTFORWARD)
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s': collection '%s' moved%s%s", r->name, name,
				   r->push_msg[0] ? ": " : "", r->push_msg);
	else if (grc < 0)
		rc = sync_net_fail(r, "cannot push");
	else
		rc = 0;
done:
	(void)deadline;
	git_remote_free(gr);
	free(spec);
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (opt_ref_cas(y->repo, tmp, OPT_REF_ANY, NULL, "opt-sync", opt_now_ms() + 1000) < 0)
			opt_error_clear();
		if (rc < 0)
			opt_error_set(rc, "%s", msg);
	}
	return rc;
}

/* Push the n collections v (local heads L, remote heads T) over one
 * connection: git receive-pack compares each old value.  res[i]: 0 when
 * v[i] was pushed, OPT_ECONFLICT when its remote ref moved (all of them
 * when the remote moved before the push began).  A transport failure is
 * returned. */
static int push_net_many(struct opt_sync *y, struct remote *r, struct coll **v, size_t n, int *res)
{
	git_remote *gr = NULL;
	git_strarray specs = { 0 };
	char **sp = calloc(n + 1, sizeof(*sp)), tmp[REFLEN], cref[REFLEN];
	const char **names = calloc(n + 1, sizeof(*names));
	const git_oid **exp = calloc(n + 1, sizeof(*exp));
	size_t i, made = 0;
	int rc = 0, grc;

	if (!sp || !names || !exp) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++, made++) {
		res[i] = 0;
		names[i] = v[i]->name;
		exp[i] = v[i]->has_T ? &v[i]->T : NULL;
		opt_ref_push(tmp, sizeof(tmp), v[i]->name);
		if (opt_ref_cas(y->repo, tmp, OPT_REF_ANY, &v[i]->L, "opt-sync push", 0) < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot prepare the push");
			goto done;
		}
		opt_ref_collection(cref, sizeof(cref), v[i]->name);
		if (asprintf(&sp[i], "%s:%s", tmp, cref) < 0) {
			sp[i] = NULL;
			made++;
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto done;
		}
	}
	specs.strings = sp;
	specs.count = n;
	r->nb = n;
	r->bnames = names;
	r->bexpect = exp;
	r->bres = res;
	if ((rc = sync_push_specs(y, r, &gr, &specs, &grc)) < 0)
		goto done;
	if (r->conflict || grc == GIT_ENONFASTFORWARD) {
		for (i = 0; i < n; i++)
			res[i] = OPT_ECONFLICT;
		opt_error_set(OPT_ECONFLICT, "remote '%s' moved%s%s", r->name, r->push_msg[0] ? ": " : "", r->push_msg);
	} else if (grc < 0) {
		rc = sync_net_fail(r, "cannot push");
	}
done:
	r->nb = 0;
	r->bnames = NULL;
	r->bexpect = NULL;
	r->bres = NULL;
	git_remote_free(gr);
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		for (i = 0; i < made; i++) {
			opt_ref_push(tmp, sizeof(tmp), v[i]->name);
			if (opt_ref_cas(y->repo, tmp, OPT_REF_ANY, NULL, "opt-sync", opt_now_ms() + 1000) < 0)
				opt_error_clear();
		}
		if (rc < 0)
			opt_error_set(rc, "%s", msg);
	}
	for (i = 0; sp && i < n; i++)
		free(sp[i]);
	free(sp);
	free(names);
	free(exp);
	return rc;
}

/* Push the n collections v to the path remote with one pack, then
 * compare-and-swap their refs in order, stopping at the first that moved:
 * res[i] 0 pushed, OPT_ECONFLICT moved, OPT_EBUSY not tried. */
static int push_path_many(struct opt_sync *y, struct remote *r, struct coll **v, size_t n, int64_t deadline,
			  int *res)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	char ref[REFLEN];
	size_t i;
	int rc = 0, moved = 0;

	if (git_packbuilder_new(&pb, y->repo) < 0 || git_revwalk_new(&w, y->repo) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	for (i = 0; i < n; i++)
		if (git_revwalk_push(w, &v[i]->L) < 0 || (v[i]->has_T && git_revwalk_hide(w, &v[i]->T) < 0)) {
			rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
			goto done;
		}
	if (git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the objects to push");
		goto done;
	}
	if ((rc = pack_to_peer(r, pb)) < 0)
		goto done;
	for (i = 0; i < n; i++) {
		if (moved) {
			res[i] = OPT_EBUSY;
			continue;
		}
		opt_ref_collection(ref, sizeof(ref), v[i]->name);
		res[i] = opt_ref_cas(r->peer_repo, ref, v[i]->has_T ? &v[i]->T : NULL, &v[i]->L, "opt-sync", deadline);
		if (res[i] == OPT_ECONFLICT || res[i] == OPT_EBUSY) {
			opt_error_set(res[i], "remote '%s': collection '%s' moved", r->name, v[i]->name);
			moved = 1;
		} else if (res[i] < 0) {
			rc = res[i];
			goto done;
		}
	}
	if (opt_pack_consolidate(r->peer_repo, 0) < 0)
		opt_error_clear();
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

static int push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o);

/* Repair collection c at replica r (see opt_sync_push, o->replica):
 * ahead: the replica's head descends from ours.  OPT_ECONFLICT or
 * OPT_EBUSY when something moved meanwhile (fetch and plan again). */
static int repair_replica(struct opt_sync *y, struct remote *r, struct coll *c, int ahead,
			  const struct opt_sync_opts *o, int64_t deadline)
{
	char ref[REFLEN], tref[REFLEN];
	json_t *names = NULL, *counts = NULL, *rec;
	git_oid nl;
	long replayed = 0;
	int rc;

	if (o->dry_run)
		return opt_sync_emit_rec(o, sync_rec_of(y, r->name, c->name, &c->T, ahead ? "fast-forward" : "repaired", 1));
	opt_ref_collection(ref, sizeof(ref), c->name);
	opt_ref_tracking(tref, sizeof(tref), r->name, c->name);
	if (ahead) {
		/* verified by the fetch: take it as a pull would */
		if ((rc = sync_move_heads(y, &c, 1, 0, deadline)) < 0)
			return rc;
		return opt_sync_emit_rec(o, sync_rec_of(y, r->name, c->name, &c->T, "fast-forward", 0));
	}
	/* its transactions we lack, replayed here as a replay of ours would be */
	opt_ref_backup(tref, sizeof(tref), c->name);
	if ((rc = opt_ref_cas(y->repo, tref, NULL, &c->T, "opt-sync", deadline)) < 0)
		return rc == OPT_ECONFLICT ? opt_error_set(OPT_EBUSY, "collection '%s' has a replay in progress", c->name)
					   : rc;
	names = json_pack("[s]", c->name);
	counts = json_object();
	if (!names || !counts) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	if ((rc = sync_replay_backups(y, r->name, names, "replay", o, counts, NULL)) < 0)
		goto done;
	replayed = (long)json_integer_value(json_object_get(counts, c->name));
	if ((rc = opt_ref_read(y->repo, ref, &nl)) <= 0) {
		rc = rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", c->name);
		goto done;
	}
	/* then the replica follows: from what the fetch saw, to ours */
	r->force = 1;
	rc = r->path ? push_path_one(y, r, c->name, &c->T, &nl, deadline) : push_net_one(y, r, c->name, &c->T, &nl, deadline);
	r->force = 0;
	if (rc < 0)
		goto done;
	opt_ref_tracking(tref, sizeof(tref), r->name, c->name);
	if (opt_ref_cas(y->repo, tref, &c->T, &nl, "opt-sync", deadline) < 0)
		opt_error_clear();  /* the next fetch sets it */
	rec = sync_rec_of(y, r->name, c->name, &nl, "repaired", 0);
	if (rec)
		json_object_set_new(rec, "replayed", json_integer(replayed));
	rc = opt_sync_emit_rec(o, rec);
done:
	json_decref(names);
	json_decref(counts);
	return rc;
}

int opt_sync_push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o)
{
	struct opt_sync_opts lo;
	struct held h;

	sync_hold_init(&h, &lo, o ? o : &sync_no_opts);
	return sync_hold_flush(&h, push(y, remote, colls, n, &lo));
}

/* 1 if a commit of collection c to be pushed (after what the remote has)
 * belongs to a multi-collection transaction (Opt-Primary), 0 if none does,
 * <0 on failure.  git receive-pack applies the refs of one push one by one,
 * not atomically: such a push goes ref by ref, in name order, so that a
 * primary's decision never lands while a pending revision of its
 * transaction was refused. */
static int multi_to_push(struct opt_sync *y, const struct coll *c)
{
	git_revwalk *w = NULL;
	git_oid id;
	int rc = 0, n = 0;

	if (git_revwalk_new(&w, y->repo) < 0 || git_revwalk_push(w, &c->L) < 0 ||
	    (c->has_T && git_revwalk_hide(w, &c->T) < 0)) {
		git_revwalk_free(w);
		return opt_git_fail(OPT_EIO, "cannot walk the history to push");
	}
	while (rc == 0 && git_revwalk_next(&id, w) == 0) {
		git_commit *cm = NULL;
		if (git_commit_lookup(&cm, y->repo, &id) < 0) {
			rc = opt_git_fail(OPT_EINTEGRITY, "cannot read a commit to push");
			break;
		}
		char *primary = opt_trailer_value(git_commit_message(cm), "Opt-Primary");
		if (primary)
			rc = 1;
		free(primary);
		git_commit_free(cm);
		if (++n > 100000)
			rc = 1;  /* a long history: go ref by ref to be safe */
	}
	git_revwalk_free(w);
	return rc;
}

/* Does the remote hold, for each of the n collections cn, what its
 * tracking ref says (both absent counts)?  Asked of receive-pack, whose
 * connection stays in r->conn for the push that follows: 1 and *h gets
 * the tracking refs as heads; 0 when one differs (r->conn closed). */
static int tracking_holds(struct opt_sync *y, struct remote *r, const char **cn, size_t n, struct heads *h)
{
	git_remote_callbacks cb;
	const git_remote_head **refs = NULL;
	size_t nr = 0, i, k;
	int rc;

	sync_callbacks(&cb, r);
	if (sync_anon_remote(&r->conn, y->repo, r->url) < 0)
		return sync_net_fail(r, "invalid URL");
	r->cred_tries = 0;
	if (git_remote_connect(r->conn, GIT_DIRECTION_PUSH, &cb, NULL, NULL) < 0 ||
	    git_remote_ls(&refs, &nr, r->conn) < 0) {
		rc = sync_net_fail(r, "cannot connect");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		char tref[REFLEN], ref[REFLEN];
		const git_oid *at = NULL;
		git_oid id;
		struct head *e;
		opt_ref_collection(ref, sizeof(ref), cn[i]);
		for (k = 0; k < nr && !at; k++)
			if (strcmp(refs[k]->name, ref) == 0)
				at = &refs[k]->oid;
		opt_ref_tracking(tref, sizeof(tref), r->name, cn[i]);
		if ((rc = opt_ref_read(y->repo, tref, &id)) < 0)
			goto fail;
		if (!rc != !at || (at && !git_oid_equal(at, &id))) {
			rc = 0;  /* it moved since we last saw it */
			goto fail;
		}
		if (!at)
			continue;
		if (!(e = sync_heads_add(h, cn[i]))) {
			rc = opt_error_set(OPT_EIO, "out of memory");
			goto fail;
		}
		e->old = e->new = id;
		e->has_old = e->has_new = 1;
		e->status = "unchanged";
	}
	return 1;
fail:
	sync_heads_clear(h);
	git_remote_free(r->conn);
	r->conn = NULL;
	return rc;
}

/* One push: what it holds from start to end. */
struct push_run {
	struct opt_sync *y;
	const struct opt_sync_opts *o;
	struct remote r;
	struct heads h;              /* the remote's heads this round */
	json_t *names;               /* the collections to push */
	const char **cn;             /* their names */
	size_t nn;
	struct coll *cs;             /* one per name: its state this round */
	struct coll **dv, **ff;      /* this round: diverged; to send */
	size_t nd, nf;
	int *bres;                   /* a batch push: the result per ff */
	json_t *done_set;            /* names settled in an earlier round */
	json_t *replayed;            /* name -> transactions replayed before */
	int64_t deadline;
	int optimistic;              /* the heads are the tracking refs, not a fetch */
	int again;                   /* something moved: another round */
};

/* What to push: the named collections (each must be here), closed over
 * their multi-collection transactions, or all of ours. */
static int push_names(struct push_run *p, const char *const *colls, size_t n)
{
	char ref[REFLEN], tp[REFLEN];
	git_oid id;
	size_t i;
	int rc;

	if (!n)
		return opt_store_list(p->y->s, &p->names);
	p->names = json_array();
	for (i = 0; i < n; i++) {
		opt_ref_collection(ref, sizeof(ref), colls[i]);
		if ((rc = opt_ref_read(p->y->repo, ref, &id)) <= 0)
			return rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", colls[i]);
		json_array_append_new(p->names, json_string(colls[i]));
	}
	opt_ref_tracking(tp, sizeof(tp), p->r.name, NULL);
	opt_ref_collection(ref, sizeof(ref), NULL);
	return sync_close_over_transactions(p->y, ref, tp, p->names, NULL);
}

static int push_begin(struct push_run *p, struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		      const struct opt_sync_opts *o)
{
	size_t i;
	int rc;

	memset(p, 0, sizeof(*p));
	p->y = y;
	p->o = o;
	p->deadline = opt_now_ms() + sync_busy_timeout(o);
	OPT_CHECK_ALLOC(p->done_set = json_object());
	OPT_CHECK_ALLOC(p->replayed = json_object());
	if ((rc = sync_valid_names(colls, n)) < 0 || (rc = sync_check_policy(o)) < 0 ||
	    (rc = sync_remote_open(y, &p->r, remote, o)) < 0 || (rc = sync_resume(y, p->r.name, o, p->replayed)) < 0 ||
	    (rc = push_names(p, colls, n)) < 0)
		return rc;
	p->nn = json_array_size(p->names);
	OPT_CHECK_ALLOC(p->cs = calloc(p->nn + 1, sizeof(*p->cs)));
	OPT_CHECK_ALLOC(p->dv = calloc(p->nn + 1, sizeof(*p->dv)));
	OPT_CHECK_ALLOC(p->ff = calloc(p->nn + 1, sizeof(*p->ff)));
	OPT_CHECK_ALLOC(p->cn = calloc(p->nn + 1, sizeof(*p->cn)));
	for (i = 0; i < p->nn; i++)
		p->cn[i] = json_string_value(json_array_get(p->names, i));
	/* over the network, the first attempt trusts the tracking refs: when
	 * the remote has not moved since we last saw it, everything to push
	 * fast-forwards it, and one connection (receive-pack, which compares
	 * each ref with what we expect) does it all.  A remote that moved
	 * refuses, and then we fetch, verify and plan again as always. */
	p->optimistic = !o->dry_run && !p->r.path;
	return 0;
}

static void push_end(struct push_run *p)
{
	size_t i;

	for (i = 0; p->cs && i < p->nn; i++)
		sync_coll_clear(&p->cs[i]);
	free(p->cs);
	free(p->dv);
	free(p->ff);
	free(p->cn);
	free(p->bres);
	json_decref(p->names);
	json_decref(p->done_set);
	json_decref(p->replayed);
	sync_heads_clear(&p->h);
	sync_remote_close(&p->r);
}

/* The remote's heads this round: its tracking refs when receive-pack
 * says they hold (optimistic), else a fetch. */
static int push_heads(struct push_run *p)
{
	int rc;

	sync_heads_clear(&p->h);
	git_remote_free(p->r.conn);
	p->r.conn = NULL;
	if (p->optimistic && (rc = tracking_holds(p->y, &p->r, p->cn, p->nn, &p->h)) <= 0) {
		if (rc < 0)
			return rc;
		p->optimistic = 0;  /* the remote moved since we last saw it */
	}
	return p->optimistic ? 0 : sync_fetch_verified(p->y, &p->r, p->cn, p->nn, p->o->dry_run, &p->h);
}

/* A replica given its home's state (o->replicas): that state is c->L.
 * 1 when the replica's head e is past it and our head is elsewhere: a
 * replica past that state is left to its home (one that diverged is
 * repaired from our head). */
static int pinned_past(struct push_run *p, struct coll *c, const struct head *e, const char *ref)
{
	git_oid own = c->L;
	int on_ours = c->has_L, d, rc;

	if (on_ours && (rc = opt_ref_read(p->y->repo, ref, &own)) < 0)
		return rc;
	on_ours = on_ours && git_oid_equal(&own, &c->L);
	c->has_L = 1;
	if (!e || git_oid_equal(&e->new, &c->L) || on_ours || !sync_have_object(p->y, &e->new))
		return 0;
	if ((d = sync_descends(p->y->repo, &e->new, &c->L)) <= 0)
		return d;
	c->state = SYNC_REPLICA_PAST;
	return 1;
}

/* The state of collection i as push sees it (sync_classify). */
static int push_state(struct push_run *p, size_t i)
{
	struct coll *c = &p->cs[i];
	const struct head *e = sync_heads_find(&p->h, p->cn[i]);
	json_t *src = p->o->replicas ? json_object_get(p->o->replicas, p->cn[i]) : NULL;
	char ref[REFLEN];
	int rc;

	sync_coll_clear(c);
	OPT_CHECK_ALLOC(c->name = strdup(p->cn[i]));
	c->replica = p->o->replica || src;
	c->pinned = json_is_string(src);
	opt_ref_collection(ref, sizeof(ref), p->cn[i]);
	if ((rc = opt_ref_read(p->y->repo, ref, &c->L)) < 0)
		return rc;
	c->has_L = rc;
	if (c->pinned && git_oid_fromstr(&c->L, json_string_value(src)) == 0 && (rc = pinned_past(p, c, e, ref)) != 0)
		return rc < 0 ? rc : 0;
	if (e) {
		c->T = e->new;
		c->has_T = 1;
	}
	return sync_classify(&c->state, p->y->repo, c, e, p->o->dry_run);
}

/* Every collection not settled yet gets its state, before anything is
 * sent. */
static int push_classify(struct push_run *p)
{
	size_t i;
	int rc;

	for (i = 0; i < p->nn; i++) {
		if (json_object_get(p->done_set, p->cn[i]))
			continue;
		/* the remote's did not verify: left alone, reported at the end */
		if (sync_refused(&p->r, p->cn[i])) {
			json_object_set_new(p->done_set, p->cn[i], json_true());
			continue;
		}
		if ((rc = push_state(p, i)) < 0)
			return rc;
	}
	return 0;
}

/* The record of c with status, at our head (a replica left to its home:
 * at the replica's); what a replay did before shows as "replayed". */
static int push_record(struct push_run *p, const struct coll *c, const char *status)
{
	const json_t *replayed = json_object_get(p->replayed, c->name);
	const git_oid *at = &c->L;
	json_t *rec;

	if (c->state == SYNC_REPLICA_PAST)
		at = &sync_heads_find(&p->h, c->name)->new;
	if (c->state != SYNC_SAME && strcmp(status, "pushed") != 0)
		replayed = NULL;
	rec = sync_rec_of(p->y, p->r.name, c->name, at, replayed ? "replayed" : status, p->o->dry_run);
	if (rec && replayed)
		json_object_set(rec, "replayed", (json_t *)replayed);
	return opt_sync_emit_rec(p->o, rec);
}

/* Repair replica collection c from our head (repair_replica). */
static int push_repair(struct push_run *p, struct coll *c)
{
	char ref[REFLEN];
	int ahead = c->state == SYNC_BEHIND, rc;

	if (c->pinned) {
		/* from our head, not the home's state */
		opt_ref_collection(ref, sizeof(ref), c->name);
		if ((rc = opt_ref_read(p->y->repo, ref, &c->L)) <= 0)
			return rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", c->name);
		if ((ahead = sync_descends(p->y->repo, &c->T, &c->L)) < 0)
			return ahead;
	}
	return repair_replica(p->y, &p->r, c, ahead, p->o, p->deadline);
}

/* Act on each state (sync_push_verdict): records of what needs nothing,
 * repairs; the rest into ff (to send) and dv (diverged).  p->again when
 * something moved. */
static int push_sort(struct push_run *p)
{
	struct sync_verdict v;
	size_t i;
	int rc;

	p->nd = p->nf = 0;
	for (i = 0; i < p->nn && !p->again; i++) {
		struct coll *c = &p->cs[i];
		if (json_object_get(p->done_set, p->cn[i]))
			continue;
		v = sync_push_verdict(c->state, c->replica, p->optimistic, p->o->conflict);
		if (v.step == STEP_MOVE) {
			p->ff[p->nf++] = c;
		} else if (v.step == STEP_RECONCILE) {
			p->dv[p->nd++] = c;
		} else if (v.step == STEP_REFETCH) {
			p->again = 1;
		} else if (v.step == STEP_REPAIR && ((rc = push_repair(p, c)) == OPT_ECONFLICT || rc == OPT_EBUSY)) {
			p->again = 1;
		} else if (v.step == STEP_REPAIR && rc != 0) {
			return rc;
		} else {
			json_object_set_new(p->done_set, c->name, json_true());
			if (v.step == STEP_REPORT && (rc = push_record(p, c, v.status)) != 0)
				return rc;
		}
	}
	return 0;
}

/* The diverged collections go the conflict policy's way: <0, or 1 when
 * they were replayed (plan again: now they fast-forward), else 0. */
static int push_reconcile(struct push_run *p)
{
	int keep = p->o->conflict && strcmp(p->o->conflict, "keep-remote") == 0;
	size_t i;
	int rc;

	if ((rc = sync_reconcile(p->y, p->r.name, p->dv, p->nd, p->o, p->deadline, p->replayed)) < 0)
		return rc;
	for (i = 0; i < p->nd; i++)
		if (keep || p->o->dry_run)
			json_object_set_new(p->done_set, p->dv[i]->name, json_true());
	return !keep && !p->o->dry_run;
}

/* All of ff at once: one pack, one connection (over the network only
 * when no multi-collection transaction goes); p->bres gets the result
 * per collection.  Else (one to send, a dry run) p->bres stays NULL. */
static int push_batch(struct push_run *p)
{
	size_t i;
	int batch = !p->o->dry_run && p->nf > 1, m;

	free(p->bres);
	p->bres = NULL;
	for (i = 0; batch && !p->r.path && i < p->nf; i++) {
		if ((m = multi_to_push(p->y, p->ff[i])) < 0)
			return m;
		batch = !m;
	}
	if (!batch)
		return 0;
	OPT_CHECK_ALLOC(p->bres = calloc(p->nf, sizeof(*p->bres)));
	sync_progress(p->o, "pushing", 0, p->nf);
	return p->r.path ? push_path_many(p->y, &p->r, p->ff, p->nf, p->deadline, p->bres)
			 : push_net_many(p->y, &p->r, p->ff, p->nf, p->bres);
}

/* Send ff (the remote fast-forwards), in name order: pends before their
 * primary; stop at the first that moved under us.  Each that took gets
 * its tracking ref and its record. */
static int push_send(struct push_run *p)
{
	char tref[REFLEN];
	size_t i;
	int rc;

	if ((rc = push_batch(p)) < 0)
		return rc;
	for (i = 0; i < p->nf; i++) {
		struct coll *c = p->ff[i];
		const git_oid *expect = c->has_T ? &c->T : NULL;
		if (!p->o->dry_run) {
			sync_progress(p->o, c->name, i, p->nf);
			rc = p->bres ? p->bres[i]
			     : p->r.path ? push_path_one(p->y, &p->r, c->name, expect, &c->L, p->deadline)
					 : push_net_one(p->y, &p->r, c->name, expect, &c->L, p->deadline);
			if (rc == OPT_ECONFLICT || rc == OPT_EBUSY) {
				p->again = 1;
				if (p->bres)
					continue;  /* the rest went in the same push: record those that took */
				break;
			}
			if (rc < 0)
				return rc;
			opt_ref_tracking(tref, sizeof(tref), p->r.name, c->name);
			if (opt_ref_cas(p->y->repo, tref, expect, &c->L, "opt-sync", p->deadline) < 0)
				opt_error_clear();  /* the next fetch sets it */
		}
		json_object_set_new(p->done_set, c->name, json_true());
		if ((rc = push_record(p, c, "pushed")) != 0)
			return rc;
	}
	return 0;
}

/* Rounds until every collection is settled: the remote's heads, each
 * collection's state, then what the states ask for (records, repairs,
 * the conflict policy, sending).  A remote that moved meanwhile makes
 * another round (at once after an optimistic one, else after a backoff,
 * until the busy timeout). */
static int push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct push_run p;
	unsigned attempt = 0;
	int rc;

	if ((rc = push_begin(&p, y, remote, colls, n, o ? o : &sync_no_opts)) < 0)
		goto done;
	for (;;) {
		p.again = 0;
		if ((rc = push_heads(&p)) < 0 || (rc = push_classify(&p)) < 0 || (rc = push_sort(&p)) != 0)
			goto done;
		if (p.again && p.optimistic) {
			p.optimistic = 0;
			continue;
		}
		if (p.again)
			p.nd = p.nf = 0;  /* plan again after the backoff */
		if (p.optimistic && p.nd) {
			/* diverged from what we last saw: fetch first after all */
			p.optimistic = 0;
			continue;
		}
		if (p.nd && (rc = push_reconcile(&p)) != 0) {
			if (rc < 0)
				goto done;
			continue;  /* now they fast-forward */
		}
		if ((rc = push_send(&p)) != 0)
			goto done;
		if (!p.again)
			break;
		if (p.optimistic) {
			/* the remote moved since we last saw it: fetch now */
			p.optimistic = 0;
			continue;
		}
		if (opt_now_ms() >= p.deadline) {
			rc = opt_error_set(OPT_EBUSY, "remote '%s' kept moving: gave up after %u attempts (%s)", p.r.name,
					   attempt + 1, opt_error_last());
			goto done;
		}
		opt_sleep_ms(opt_backoff_ms(attempt < 8 ? attempt : 8, 5, 500));
		attempt++;
	}
	rc = 0;
done:
	/* the collections the remote holds that did not verify: a record
	 * each, and exit 4 when nothing else failed */
	sync_skip_keep_refused(&p.r);
	if (json_object_size(p.r.skipped))
		rc = sync_skip_report(&p.r, p.o, rc);
	push_end(&p);
	return rc;
}
