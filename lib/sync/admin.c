/* admin.c - remove, status and clone. */
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

/* ---- remove ---- */

/* Remove e at r when its head there is ours or an ancestor of ours: its
 * record ("removed", or "kept" and why). */
static int remove_one(struct opt_sync *y, struct remote *r, const struct head *e, const struct opt_sync_opts *o,
		      int64_t deadline)
{
	char ref[REFLEN], tref[REFLEN];
	const char *why = NULL;
	git_oid L;
	int has, d = 0, rc;

	opt_ref_collection(ref, sizeof(ref), e->name);
	opt_ref_tracking(tref, sizeof(tref), r->name, e->name);
	if ((has = opt_ref_read(y->repo, ref, &L)) < 0)
		return has;
	if (!has)
		why = "this store does not hold it";
	else if (git_oid_equal(&L, &e->new))
		d = 1;
	else if (!sync_have_object(y, &e->new))
		why = "it holds revisions this store has not fetched";
	else if ((d = sync_descends(y->repo, &L, &e->new)) < 0) {
		return d;
	} else if (!d)
		why = "it holds revisions this store lacks";
	if (why)
		return opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r->name, "collection", e->name, "status",
						      "kept", "reason", why));
	if (o->dry_run)
		return opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:b}", "remote", r->name, "collection", e->name, "status",
						      "removed", "dry_run", 1));
	if (r->path) {
		rc = opt_ref_cas(r->peer_repo, ref, &e->new, NULL, "opt-sync", deadline);
	} else {
		git_remote *gr = NULL;
		git_strarray specs = { 0 };
		char *spec = ref;
		int grc = 0;
		specs.strings = &spec;
		specs.count = 1;
		memmove(ref + 1, ref, strlen(ref) + 1);
		ref[0] = ':';
		r->expect = &e->new;
		if ((rc = sync_push_specs(y, r, &gr, &specs, &grc)) == 0) {
			if (r->conflict || grc == GIT_ENONFASTFORWARD)
				rc = OPT_ECONFLICT;
			else if (grc < 0)
				rc = sync_net_fail(r, "cannot remove");
		}
		git_remote_free(gr);
	}
	if (rc == OPT_ECONFLICT || rc == OPT_EBUSY) {
		/* it moved meanwhile: keep it */
		opt_error_clear();
		return opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s,s:s}", "remote", r->name, "collection", e->name, "status",
						      "kept", "reason", "it moved meanwhile"));
	}
	if (rc < 0)
		return rc;
	if (opt_ref_cas(y->repo, tref, OPT_REF_ANY, NULL, "opt-sync", deadline) < 0)
		opt_error_clear();
	return opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:s}", "remote", r->name, "collection", e->name, "status", "removed"));
}

int opt_sync_remove(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		    const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h = { 0 };
	int64_t deadline;
	size_t i;
	int rc;

	o = o ? o : &sync_no_opts;
	deadline = opt_now_ms() + sync_busy_timeout(o);
	if ((rc = sync_valid_names(colls, n)) < 0)
		return rc;
	if ((rc = sync_remote_open(y, &r, remote, o)) < 0)
		return rc;
	if ((rc = sync_fetch_verified(y, &r, colls, n, o->dry_run, &h)) < 0 || (rc = sync_check_named(&h, &r, colls, n)) < 0)
		goto done;
	for (i = 0; rc == 0 && i < h.n; i++)
		rc = remove_one(y, &r, &h.v[i], o, deadline);
	/* the remote's that did not verify stay: a record each, exit 4 */
	sync_skip_keep_refused(&r);
	if (json_object_size(r.skipped))
		rc = sync_skip_report(&r, o, rc);
done:
	sync_heads_clear(&h);
	sync_remote_close(&r);
	return rc;
}

/* ---- status ---- */

static int status_one(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o)
{
	json_t *local = NULL, *tracked = NULL, *all = json_object();
	char prefix[REFLEN], ref[REFLEN];
	const char *name;
	json_t *v;
	size_t i;
	int rc;

	opt_ref_tracking(prefix, sizeof(prefix), remote, NULL);
	if ((rc = opt_store_list(y->s, &local)) < 0 || (rc = sync_refs_under(y->repo, prefix, &tracked)) < 0)
		goto done;
	for (i = 0; i < json_array_size(local); i++)
		json_object_set_new(all, json_string_value(json_array_get(local, i)), json_true());
	for (i = 0; i < json_array_size(tracked); i++)
		json_object_set_new(all, json_string_value(json_array_get(tracked, i)), json_true());
	{
		/* in name order */
		json_t *keys = json_array();
		json_object_foreach(all, name, v)
			json_array_append_new(keys, json_string(name));
		json_decref(all);
		all = keys;
		{
			size_t n = json_array_size(all), a, b;
			for (a = 1; a < n; a++)
				for (b = a; b > 0 && strcmp(json_string_value(json_array_get(all, b - 1)),
							     json_string_value(json_array_get(all, b))) > 0; b--) {
					json_t *t = json_incref(json_array_get(all, b - 1));
					json_array_set(all, b - 1, json_array_get(all, b));
					json_array_set_new(all, b, t);
				}
		}
	}
	for (i = 0; i < json_array_size(all); i++) {
		git_oid L, T;
		int hasL, hasT;
		long lr = 0, tr = 0, br = 0;

		name = json_string_value(json_array_get(all, i));
		if (!opt_store_name_valid(name))
			continue;
		opt_ref_collection(ref, sizeof(ref), name);
		if ((hasL = opt_ref_read(y->repo, ref, &L)) < 0) {
			rc = hasL;
			goto done;
		}
		snprintf(ref, sizeof(ref), "%s%s", prefix, name);
		if ((hasT = opt_ref_read(y->repo, ref, &T)) < 0) {
			rc = hasT;
			goto done;
		}
		if (hasL)
			lr = sync_rev_of(y, name, &L);
		if (hasT)
			tr = sync_rev_of(y, name, &T);
		if (hasL && hasT && (rc = sync_base_of(y, name, &L, &T, &br)) < 0)
			goto done;
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s,s:I,s:I}", "collection", name, "remote", remote, "ahead",
				       (json_int_t)(lr - br), "behind", (json_int_t)(tr - br)));
		if (rc)
			goto done;
	}
	rc = 0;
done:
	json_decref(local);
	json_decref(tracked);
	json_decref(all);
	return rc;
}

int opt_sync_status(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o)
{
	json_t *list = NULL;
	size_t i;
	int rc;

	o = o ? o : &sync_no_opts;
	if (remote) {
		char *url = NULL;
		if ((rc = sync_remote_url(y, remote, &url)) < 0)
			return rc;
		free(url);
		return status_one(y, remote, o);
	}
	if ((rc = opt_sync_remote_list(y, &list)) < 0)
		return rc;
	for (i = 0; i < json_array_size(list) && rc == 0; i++)
		rc = status_one(y, json_string_value(json_object_get(json_array_get(list, i), "name")), o);
	json_decref(list);
	return rc;
}

/* The public key of the store at path, if it has one: *key (65 bytes). */
static int peer_key(const char *path, char key[OPT_KEY_HEX + 1])
{
	int rc = opt_identity_public_at(path, key);

	if (rc < 0) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		return opt_error_set(OPT_ENET, "cannot read the remote store's %s",
				     strncmp(msg, "cannot read the store's ", 24) == 0 ? msg + 24 : msg);
	}
	return 0;
}

/* A clone into a store made beforehand failed: put back what it changed
 * (the remote, refs it made, keys it trusted or renamed), from refs (all
 * ref names before) and trusted (opt_trust_list before).  The objects it
 * brought stay, unreferenced.  Best effort: the clone's error stands. */
static void clone_undo(struct opt_sync *y, struct opt_store *s, const json_t *refs, const json_t *trusted)
{
	json_t *now = NULL;
	char ref[REFLEN];
	size_t i, j;

	opt_sync_remote_rm(y, "origin");
	if (refs && sync_refs_under(y->repo, "refs/", &now) == 0)
		for (i = 0; i < json_array_size(now); i++) {
			const char *name = json_string_value(json_array_get(now, i));
			if (sync_has_string(refs, name))
				continue;
			snprintf(ref, sizeof(ref), "refs/%s", name);
			opt_ref_cas(y->repo, ref, OPT_REF_ANY, NULL, "opt-sync", opt_now_ms() + sync_busy_timeout(NULL));
		}
	json_decref(now);
	now = NULL;
	if (trusted && opt_trust_list(s, &now) == 0)
		for (i = 0; i < json_array_size(now); i++) {
			const json_t *e = json_array_get(now, i);
			const char *key = json_string_value(json_object_get(e, "key"));
			const char *name = json_string_value(json_object_get(e, "name"));
			if (json_is_true(json_object_get(e, "self")))
				continue;
			for (j = 0; j < json_array_size(trusted); j++)
				if (strcmp(json_string_value(json_object_get(json_array_get(trusted, j), "key")), key) == 0)
					break;
			if (j == json_array_size(trusted)) {
				opt_trust_remove(s, key);
			} else {
				const char *was = json_string_value(json_object_get(json_array_get(trusted, j), "name"));
				if (was && name && strcmp(was, name) != 0)
					opt_trust_add(s, key, was);
			}
		}
	json_decref(now);
	opt_error_clear();
}

/* 1 if store s holds a collection (a clone that skipped all it found
 * is removed as a failed one), else 0. */
static int clone_holds_some(struct opt_store *s)
{
	json_t *list = NULL;
	char msg[1024];
	int code = opt_error_last_code(), some;

	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	some = opt_store_list(s, &list) == 0 && json_array_size(list) > 0;
	json_decref(list);
	opt_error_set(code, "%s", msg);
	return some;
}

/* One key to trust as given to clone: "KEY" or "NAME=KEY" into key and
 * name (without a name, one derived from the key: "key-" and its first 8
 * hex characters). */
static int trust_arg(const char *arg, char key[OPT_KEY_HEX + 1], char name[OPT_TRUST_NAME_MAX + 1])
{
	const char *eq = strrchr(arg, '=');
	const char *k = eq ? eq + 1 : arg;
	size_t nlen = eq ? (size_t)(eq - arg) : 0;

	if (!opt_key_hex_valid(k))
		return opt_error_set(OPT_EINVAL, "invalid key '%s' (64 lowercase hex characters)", opt_esc(k));
	if (eq && (nlen == 0 || nlen > OPT_TRUST_NAME_MAX || memchr(arg, '\n', nlen)))
		return opt_error_set(OPT_EINVAL, "invalid name for key %s (one line of 1 to %d characters)", k,
				     OPT_TRUST_NAME_MAX);
	snprintf(key, OPT_KEY_HEX + 1, "%s", k);
	if (eq)
		snprintf(name, OPT_TRUST_NAME_MAX + 1, "%.*s", (int)nlen, arg);
	else
		snprintf(name, OPT_TRUST_NAME_MAX + 1, "key-%.8s", k);
	return 0;
}

/* A store made beforehand must be empty (no collections, no remotes);
 * what a failed clone must put back is recorded (all ref names, the
 * trusted keys). */
static int clone_target_empty(struct opt_sync *y, struct opt_store *s, const char *dir, json_t **refs_before,
			      json_t **trust_before)
{
	json_t *list = NULL;
	int rc;

	if ((rc = opt_store_list(s, &list)) < 0)
		return rc;
	if (json_array_size(list) > 0)
		rc = opt_error_set(OPT_EINVAL, "cannot clone into store '%s': it has collections", dir);
	json_decref(list);
	list = NULL;
	if (rc < 0 || (rc = opt_sync_remote_list(y, &list)) < 0)
		return rc;
	if (json_array_size(list) > 0)
		rc = opt_error_set(OPT_EINVAL, "cannot clone into store '%s': it has remotes", dir);
	json_decref(list);
	if (rc < 0 || (rc = sync_refs_under(y->repo, "refs/", refs_before)) < 0)
		return rc;
	return opt_trust_list(s, trust_before);
}

/* The keys a clone trusts: an open store stays open (the origin's key,
 * found at a path, only named), unless keys are given (--trust), which
 * restrict it. */
static int clone_trust(struct opt_store *s, const char *url, const char *const *trust, size_t ntrust)
{
	char *path = NULL, key[OPT_KEY_HEX + 1], tname[OPT_TRUST_NAME_MAX + 1];
	int was_restricted, rc = 0;
	size_t i;

	if ((was_restricted = opt_trust_restricted(s)) < 0)
		return was_restricted;
	if (opt_sync_url_is_local(url, &path)) {
		struct stat ps;
		if (stat(path, &ps) < 0)
			rc = opt_error_set(OPT_ENET, "cannot reach '%s': %s", url, strerror(errno));
		else if ((rc = peer_key(path, key)) == 0 && key[0])
			rc = opt_trust_add(s, key, "origin");
	}
	free(path);
	for (i = 0; rc == 0 && i < ntrust; i++)
		if ((rc = trust_arg(trust[i], key, tname)) == 0)
			rc = opt_trust_add(s, key, tname);
	if (rc < 0)
		return rc;
	return opt_trust_restrict(s, was_restricted || ntrust > 0);
}

/* The pull of a clone; *partial: some collections were skipped, the
 * others are kept. */
static int clone_pull(struct opt_sync *y, struct opt_store *s, const struct opt_sync_opts *o, int *partial)
{
	int rc = opt_sync_pull(y, "origin", NULL, 0, o);

	*partial = rc < 0 && opt_sync_partial(y) && clone_holds_some(s);
	if (rc == OPT_EINTEGRITY && strstr(opt_error_last(), "does not trust")) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		opt_error_set(rc, "%s; to clone from a peer whose entries are signed by other keys, trust them first "
			      "(opt-sync clone --trust KEY, or opt-block init DIR and opt-log trust KEY before the clone)",
			      msg);
	}
	return rc;
}

int opt_sync_clone(struct opt_store **out, const char *url, const char *dir, const char *const *trust,
		   size_t ntrust, const struct opt_sync_opts *o)
{
	struct opt_store *s = NULL;
	struct opt_sync *y = NULL;
	json_t *refs_before = NULL, *trust_before = NULL;
	char key[OPT_KEY_HEX + 1], tname[OPT_TRUST_NAME_MAX + 1], msg[1024];
	struct stat st;
	int created = 0, partial = 0, rc;
	size_t i;

	if (out)
		*out = NULL;
	o = o ? o : &sync_no_opts;
	for (i = 0; i < ntrust; i++)
		if ((rc = trust_arg(trust[i], key, tname)) < 0)
			return rc;
	if ((rc = sync_check_policy(o)) < 0)
		return rc;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return opt_error_set(OPT_EINVAL, "cannot clone into '%s': not a directory", dir);
	if ((rc = opt_store_create(&s, dir, &created)) < 0)
		return rc;
	if ((rc = opt_sync_open(&y, s)) == 0 && (rc = opt_sync_lock(y, 0)) == 0 &&
	    (created || (rc = clone_target_empty(y, s, dir, &refs_before, &trust_before)) == 0) &&
	    (rc = opt_sync_remote_add(y, "origin", url)) == 0 && (rc = clone_trust(s, url, trust, ntrust)) == 0)
		rc = clone_pull(y, s, o, &partial);
	snprintf(msg, sizeof(msg), "%s", rc < 0 ? opt_error_last() : "");
	if (rc < 0 && trust_before)
		clone_undo(y, s, refs_before, trust_before);
	json_decref(refs_before);
	json_decref(trust_before);
	opt_sync_free(y);
	if (rc < 0 && !partial) {
		opt_store_free(s);
		s = NULL;
		if (created)
			nftw(dir, sync_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	}
	if (rc < 0)
		opt_error_set(rc, "%s", msg);
	if (out)
		*out = s;
	else
		opt_store_free(s);
	return rc;
}
