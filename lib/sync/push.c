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
	snprintf(ref, sizeof(ref), REF_COLL "%s", name);
	rc = sync_ref_cas(r->peer_repo, ref, nw, expect, deadline);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_ECONFLICT, "remote '%s': collection '%s' moved", r->name, name);
	if (rc == 0 && opt_pack_consolidate(r->peer_repo, 0) < 0)
		opt_error_clear();
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* The index of ref (refs/opt/collections/NAME) in a batch push, or nb. */
static size_t batch_index(const struct remote *r, const char *ref)
{
	size_t i, pl = strlen(REF_COLL);

	if (strncmp(ref, REF_COLL, pl) != 0)
		return r->nb;
	for (i = 0; i < r->nb; i++)
		if (strcmp(r->bnames[i], ref + pl) == 0)
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
	char tmp[REFLEN], *spec = NULL;
	int rc, grc;

	snprintf(tmp, sizeof(tmp), REF_PUSH "%s", name);
	{
		git_reference *ref = NULL;
		if (git_reference_create(&ref, y->repo, tmp, nw, 1, "opt-sync push") < 0)
			return opt_git_fail(OPT_EIO, "cannot prepare the push");
		git_reference_free(ref);
	}
	if (asprintf(&spec, "%s%s:" REF_COLL "%s", r->force ? "+" : "", tmp, name) < 0) {
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
		if (sync_ref_cas(y->repo, tmp, NULL, NULL, opt_now_ms() + 1000) < 0)
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
	char **sp = calloc(n + 1, sizeof(*sp)), tmp[REFLEN];
	const char **names = calloc(n + 1, sizeof(*names));
	const git_oid **exp = calloc(n + 1, sizeof(*exp));
	size_t i, made = 0;
	int rc = 0, grc;

	if (!sp || !names || !exp) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++, made++) {
		git_reference *ref = NULL;
		res[i] = 0;
		names[i] = v[i]->name;
		exp[i] = v[i]->has_T ? &v[i]->T : NULL;
		snprintf(tmp, sizeof(tmp), REF_PUSH "%s", v[i]->name);
		if (git_reference_create(&ref, y->repo, tmp, &v[i]->L, 1, "opt-sync push") < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot prepare the push");
			goto done;
		}
		git_reference_free(ref);
		if (asprintf(&sp[i], "%s:" REF_COLL "%s", tmp, v[i]->name) < 0) {
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
			snprintf(tmp, sizeof(tmp), REF_PUSH "%s", v[i]->name);
			if (sync_ref_cas(y->repo, tmp, NULL, NULL, opt_now_ms() + 1000) < 0)
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
		snprintf(ref, sizeof(ref), REF_COLL "%s", v[i]->name);
		res[i] = sync_ref_cas(r->peer_repo, ref, &v[i]->L, v[i]->has_T ? &v[i]->T : NULL, deadline);
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
	snprintf(ref, sizeof(ref), REF_COLL "%s", c->name);
	snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, c->name);
	if (ahead) {
		/* verified by the fetch: take it as a pull would */
		if ((rc = sync_move_heads(y, &c, 1, 0, deadline)) < 0)
			return rc;
		return opt_sync_emit_rec(o, sync_rec_of(y, r->name, c->name, &c->T, "fast-forward", 0));
	}
	/* its transactions we lack, replayed here as a replay of ours would be */
	snprintf(tref, sizeof(tref), REF_BACKUP "%s", c->name);
	if ((rc = sync_ref_cas(y->repo, tref, &c->T, NULL, deadline)) < 0)
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
	if ((rc = opt_git_ref_get(y->repo, ref, &nl)) <= 0) {
		rc = rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", c->name);
		goto done;
	}
	/* then the replica follows: from what the fetch saw, to ours */
	r->force = 1;
	rc = r->path ? push_path_one(y, r, c->name, &c->T, &nl, deadline) : push_net_one(y, r, c->name, &c->T, &nl, deadline);
	r->force = 0;
	if (rc < 0)
		goto done;
	snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, c->name);
	if (sync_ref_cas(y->repo, tref, &nl, &c->T, deadline) < 0)
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
		if (strstr(git_commit_message(cm), "\nOpt-Primary: "))
			rc = 1;
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
		snprintf(ref, sizeof(ref), REF_COLL "%s", cn[i]);
		for (k = 0; k < nr && !at; k++)
			if (strcmp(refs[k]->name, ref) == 0)
				at = &refs[k]->oid;
		snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r->name, cn[i]);
		if ((rc = opt_git_ref_get(y->repo, tref, &id)) < 0)
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

static int push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	json_t *names = NULL, *done_set = json_object(), *replayed = json_object();
	struct coll *cs = NULL, **dv = NULL, **ff = NULL;
	const char **cn = NULL;
	int *bres = NULL;
	size_t i, nn, nd, nf;
	int64_t deadline;
	unsigned attempt = 0;
	int rc, optimistic, batch;

	o = o ? o : &sync_no_opts;
	deadline = opt_now_ms() + sync_busy_timeout(o);
	if (!done_set || !replayed) {
		json_decref(done_set);
		json_decref(replayed);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	if ((rc = sync_valid_names(colls, n)) < 0 || (rc = sync_check_policy(o)) < 0) {
		json_decref(done_set);
		json_decref(replayed);
		return rc;
	}
	if ((rc = sync_remote_open(y, &r, remote, o)) < 0) {
		json_decref(done_set);
		json_decref(replayed);
		return rc;
	}
	if ((rc = sync_resume(y, r.name, o, replayed)) < 0)
		goto done;
	/* what to push: the named collections, or all of ours */
	if (n) {
		names = json_array();
		for (i = 0; i < n; i++) {
			char ref[REFLEN];
			git_oid id;
			snprintf(ref, sizeof(ref), REF_COLL "%s", colls[i]);
			if ((rc = opt_git_ref_get(y->repo, ref, &id)) <= 0) {
				if (rc == 0)
					rc = opt_error_set(OPT_ENOTFOUND, "no collection '%s'", colls[i]);
				goto done;
			}
			json_array_append_new(names, json_string(colls[i]));
		}
		{
			char tp[REFLEN];
			snprintf(tp, sizeof(tp), REF_REMOTES "%s/", r.name);
			if ((rc = sync_close_over_transactions(y, REF_COLL, tp, names, NULL)) < 0)
				goto done;
		}
	} else if ((rc = opt_store_list(y->s, &names)) < 0) {
		goto done;
	}
	nn = json_array_size(names);
	cs = calloc(nn + 1, sizeof(*cs));
	dv = calloc(nn + 1, sizeof(*dv));
	ff = calloc(nn + 1, sizeof(*ff));
	cn = calloc(nn + 1, sizeof(*cn));
	if (!cs || !dv || !ff || !cn) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	for (i = 0; i < nn; i++)
		cn[i] = json_string_value(json_array_get(names, i));
	/* over the network, the first attempt trusts the tracking refs: when
	 * the remote has not moved since we last saw it, everything to push
	 * fast-forwards it, and one connection (receive-pack, which compares
	 * each ref with what we expect) does it all.  A remote that moved
	 * refuses, and then we fetch, verify and plan again as always. */
	optimistic = !o->dry_run && !r.path;
	for (;;) {
		int again = 0;
		sync_heads_clear(&h);
		git_remote_free(r.conn);
		r.conn = NULL;
		if (optimistic && (rc = tracking_holds(y, &r, cn, nn, &h)) <= 0) {
			if (rc < 0)
				goto done;
			optimistic = 0;  /* the remote moved since we last saw it */
		}
		if (!optimistic && (rc = sync_fetch_verified(y, &r, cn, nn, o->dry_run, &h)) < 0)
			goto done;
		nd = nf = 0;
		for (i = 0; i < nn; i++) {
			struct coll *c = &cs[i];
			struct head *e = sync_heads_find(&h, cn[i]);
			char ref[REFLEN];
			int d;

			json_t *src = o->replicas ? json_object_get(o->replicas, cn[i]) : NULL;
			int replica = o->replica || src;

			if (json_object_get(done_set, cn[i]))
				continue;
			sync_coll_clear(c);
			c->name = strdup(cn[i]);
			snprintf(ref, sizeof(ref), REF_COLL "%s", cn[i]);
			if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) < 0)
				goto done;
			c->has_L = rc;
			if (json_is_string(src) && git_oid_fromstr(&c->L, json_string_value(src)) == 0) {
				/* a replica takes what its home acknowledged, not our head */
				git_oid own = c->L;
				int on_ours = c->has_L;
				if (on_ours && (rc = opt_git_ref_get(y->repo, ref, &own)) < 0)
					goto done;
				on_ours = on_ours && git_oid_equal(&own, &c->L);
				c->has_L = 1;
				if (e && !git_oid_equal(&e->new, &c->L) && !on_ours && sync_have_object(y, &e->new)) {
					/* the replica has more than the home's state we give
					 * it, and our head is elsewhere: a replica past that
					 * state is left to its home; one that diverged is
					 * repaired from our head (below) */
					if ((d = sync_descends(y->repo, &e->new, &c->L)) < 0) {
						rc = d;
						goto done;
					}
					if (d) {
						json_object_set_new(done_set, cn[i], json_true());
						if ((rc = opt_sync_emit_rec(o, sync_rec_of(y, r.name, cn[i], &e->new, "up-to-date",
										      o->dry_run))) != 0)
							goto done;
						continue;
					}
				}
			}
			if (!c->has_L) {
				json_object_set_new(done_set, cn[i], json_true());
				continue;
			}
			if (e) {
				c->T = e->new;
				c->has_T = 1;
			}
			if (c->has_T && git_oid_equal(&c->L, &c->T)) {
				json_object_set_new(done_set, cn[i], json_true());
				json_t *rec = sync_rec_of(y, r.name, cn[i], &c->L,
						     json_object_get(replayed, cn[i]) ? "replayed" : "up-to-date", o->dry_run);
				if (rec && json_object_get(replayed, cn[i]))
					json_object_set(rec, "replayed", json_object_get(replayed, cn[i]));
				if ((rc = opt_sync_emit_rec(o, rec)) != 0)
					goto done;
				continue;
			}
			if (!c->has_T) {
				ff[nf++] = c;
				continue;
			}
			if (o->dry_run && !sync_have_object(y, &c->T)) {
				/* the remote moved to what we have not fetched */
				d = e->has_old ? (git_oid_equal(&c->L, &e->old) ? 1 : sync_descends(y->repo, &e->old, &c->L)) : 0;
				if (d < 0) {
					rc = d;
					goto done;
				}
				json_object_set_new(done_set, cn[i], json_true());
				if ((rc = opt_sync_emit_rec(o, sync_rec_of(y, r.name, cn[i], &c->L,
							 d ? "up-to-date" : replica ? "repaired" :
							 !o->conflict || strcmp(o->conflict, "replay") == 0 ?
							 "replayed" : strcmp(o->conflict, "keep-remote") == 0 ? "kept-remote" : "conflict",
							 1))) != 0)
					goto done;
				continue;
			}
			if ((d = sync_descends(y->repo, &c->L, &c->T)) < 0) {
				rc = d;
				goto done;
			}
			if (d) {
				ff[nf++] = c;
				continue;
			}
			if ((d = sync_descends(y->repo, &c->T, &c->L)) < 0) {
				rc = d;
				goto done;
			}
			if (replica && optimistic) {
				/* it has revisions we lack, as of what we last saw:
				 * fetch them first */
				again = 1;
				break;
			}
			if (replica) {
				/* a replica with revisions we lack: ahead of us (d) or
				 * diverged; repaired from our head */
				if (json_is_string(src)) {
					if ((rc = opt_git_ref_get(y->repo, ref, &c->L)) <= 0) {
						rc = rc < 0 ? rc : opt_error_set(OPT_ENOTFOUND, "no collection '%s'", cn[i]);
						goto done;
					}
					if ((d = sync_descends(y->repo, &c->T, &c->L)) < 0) {
						rc = d;
						goto done;
					}
				}
				if ((rc = repair_replica(y, &r, c, d, o, deadline)) == OPT_ECONFLICT || rc == OPT_EBUSY) {
					again = 1;
					break;
				}
				if (rc != 0)
					goto done;
				json_object_set_new(done_set, cn[i], json_true());
				continue;
			}
			if (d) {
				/* the remote is ahead and we have nothing new */
				json_object_set_new(done_set, cn[i], json_true());
				if ((rc = opt_sync_emit_rec(o, sync_rec_of(y, r.name, cn[i], &c->L, "up-to-date", o->dry_run))) != 0)
					goto done;
				continue;
			}
			dv[nd++] = c;
		}
		if (again && optimistic) {
			optimistic = 0;
			continue;
		}
		if (again)
			nd = nf = 0;  /* plan again after the backoff */
		if (optimistic && nd) {
			/* diverged from what we last saw: fetch first after all */
			optimistic = 0;
			continue;
		}
		if (nd) {
			const char *policy = o->conflict ? o->conflict : "replay";
			int keep = strcmp(policy, "keep-remote") == 0;
			if ((rc = sync_reconcile(y, r.name, dv, nd, o, deadline, replayed)) < 0)
				goto done;
			for (i = 0; i < nd; i++)
				if (keep || o->dry_run)
					json_object_set_new(done_set, dv[i]->name, json_true());
			if (!keep && !o->dry_run)
				continue;  /* now they fast-forward */
		}
		/* all of them at once: one pack, one connection (over the
		 * network only when no multi-collection transaction goes) */
		free(bres);
		bres = NULL;
		batch = !o->dry_run && nf > 1;
		for (i = 0; batch && !r.path && i < nf; i++) {
			int m = multi_to_push(y, ff[i]);
			if (m < 0) {
				rc = m;
				goto done;
			}
			batch = !m;
		}
		if (batch) {
			if (!(bres = calloc(nf, sizeof(*bres)))) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				goto done;
			}
			sync_progress(o, "pushing", 0, nf);
			if ((rc = r.path ? push_path_many(y, &r, ff, nf, deadline, bres)
					 : push_net_many(y, &r, ff, nf, bres)) < 0)
				goto done;
		}
		/* fast-forward the remote, in name order: pends before their
		 * primary; stop at the first that moved under us */
		for (i = 0; i < nf; i++) {
			struct coll *c = ff[i];
			char tref[REFLEN];
			if (o->dry_run) {
				json_object_set_new(done_set, c->name, json_true());
				if ((rc = opt_sync_emit_rec(o, sync_rec_of(y, r.name, c->name, &c->L, "pushed", 1))) != 0)
					goto done;
				continue;
			}
			sync_progress(o, c->name, i, nf);
			rc = bres ? bres[i]
			     : r.path ? push_path_one(y, &r, c->name, c->has_T ? &c->T : NULL, &c->L, deadline)
				      : push_net_one(y, &r, c->name, c->has_T ? &c->T : NULL, &c->L, deadline);
			if (rc == OPT_ECONFLICT || rc == OPT_EBUSY) {
				again = 1;
				if (bres)
					continue;  /* the rest went in the same push: record those that took */
				break;
			}
			if (rc < 0)
				goto done;
			snprintf(tref, sizeof(tref), REF_REMOTES "%s/%s", r.name, c->name);
			if (sync_ref_cas(y->repo, tref, &c->L, c->has_T ? &c->T : NULL, deadline) < 0)
				opt_error_clear();  /* the next fetch sets it */
			json_object_set_new(done_set, c->name, json_true());
			{
				json_t *rec = sync_rec_of(y, r.name, c->name, &c->L,
						     json_object_get(replayed, c->name) ? "replayed" : "pushed", 0);
				if (rec && json_object_get(replayed, c->name))
					json_object_set(rec, "replayed", json_object_get(replayed, c->name));
				if ((rc = opt_sync_emit_rec(o, rec)) != 0)
					goto done;
			}
		}
		if (!again)
			break;
		if (optimistic) {
			/* the remote moved since we last saw it: fetch now */
			optimistic = 0;
			continue;
		}
		if (opt_now_ms() >= deadline) {
			rc = opt_error_set(OPT_EBUSY, "remote '%s' kept moving: gave up after %u attempts (%s)", r.name,
					   attempt + 1, opt_error_last());
			goto done;
		}
		opt_sleep_ms(opt_backoff_ms(attempt < 8 ? attempt : 8, 5, 500));
		attempt++;
	}
	rc = 0;
done:
	for (i = 0; cs && i < json_array_size(names); i++)
		sync_coll_clear(&cs[i]);
	free(cs);
	free(dv);
	free(ff);
	free(cn);
	free(bres);
	json_decref(names);
	json_decref(done_set);
	json_decref(replayed);
	sync_heads_clear(&h);
	sync_remote_close(&r);
	return rc;
}
