/* fetch.c - quarantined fetch: download into the quarantine, object sizes
 * first, verify every changed collection, then move the tracking refs. */
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
#include <git2/sys/repository.h>
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

struct vprog {
	const struct opt_sync_opts *o;
	char what[OPT_NAME_MAX + 32];
};

static void verify_progress(long done, long total, void *arg)
{
	struct vprog *p = arg;

	sync_progress(p->o, p->what, (size_t)done, (size_t)total);
}

/* Copy file from to to (through a temporary name, synced when fsync is
 * on).  0, or -1 with errno. */
static int copy_file(const char *from, const char *to)
{
	char tmp[PATH_MAX], buf[1 << 16];
	ssize_t n = 0;
	int in, out, rc = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", to) >= (int)sizeof(tmp))
		return -1;
	if ((in = open(from, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return -1;
	{
		/* only a regular file (a FIFO would never end) */
		struct stat st;
		if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(in);
			errno = EINVAL;
			return -1;
		}
	}
	if ((out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0444)) < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (n == 0 && (!opt_pack_fsync_enabled() || fsync(out) == 0))
		rc = 0;
	close(in);
	if (close(out) < 0)
		rc = -1;
	if (rc == 0)
		rc = rename(tmp, to);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* ---- sizes of what a peer sends ---- */


struct sizewalk {
	struct opt_sync *y;
	struct remote *r;
	git_odb *podb;       /* the peer's */
	const struct head *e; /* the collection walked */
	struct oidset seen;
};

/* Object id at the peer: 1 when it is new to us (its size then checked:
 * at most OPT_BLOCK_MAX, and of type want unless GIT_OBJECT_ANY), 0 when
 * we have it or saw it already, <0 refused. */
static int size_ok(struct sizewalk *w, const git_oid *id, git_object_t want)
{
	size_t size;
	git_object_t type;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	if ((rc = sync_oidset_add(&w->seen, id)) <= 0)
		return rc;
	if (sync_have_object(w->y, id))
		return 0;
	sync_hex_of(hex, id);
	if (git_odb_read_header(&size, &type, w->podb, id) < 0) {
		const git_error *e = git_error_last();
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': cannot read object %s: %s (refused)",
				     w->r->name, w->e->name, hex, e && e->message ? e->message : "unknown libgit2 error");
	}
	if (want != GIT_OBJECT_ANY && type != want)
		return opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': %s %s is a %s, "
							  "not a %s (refused)", w->r->name, w->e->name,
							  git_oid_equal(id, &w->e->new) ? "its head" : "object", hex,
							  git_object_type2string(type), git_object_type2string(want)),
					    "malformed");
	if (size > OPT_BLOCK_MAX)
		return opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': object %s has %zu "
							  "bytes, more than an object may have (%zu bytes): refused "
							  "unread", w->r->name, w->e->name, hex, size, OPT_BLOCK_MAX),
					    "malformed");
	return 1;
}

static int tree_sizes(struct sizewalk *w, const git_oid *id, int depth)
{
	git_tree *t = NULL;
	size_t i, n;
	int rc;

	if ((rc = size_ok(w, id, GIT_OBJECT_TREE)) <= 0)
		return rc;
	if (depth > 16)
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': trees nested too deep (refused)",
				     w->r->name, w->e->name);
	if (git_tree_lookup(&t, w->r->peer_repo, id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read a tree of the remote");
	n = git_tree_entrycount(t);
	for (i = 0, rc = 0; i < n && rc >= 0; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(t, i);
		if (git_tree_entry_type(e) == GIT_OBJECT_TREE)
			rc = tree_sizes(w, git_tree_entry_id(e), depth + 1);
		else if (git_tree_entry_type(e) == GIT_OBJECT_BLOB)
			rc = size_ok(w, git_tree_entry_id(e), GIT_OBJECT_BLOB);
	}
	git_tree_free(t);
	return rc < 0 ? rc : 0;
}

/* Before libgit2's local transport reads them whole: every object a
 * fetch from the peer on this machine would bring (the changed heads'
 * commits, trees and blobs that we lack) has at most OPT_BLOCK_MAX bytes,
 * by its header.  0, or OPT_EINTEGRITY naming the object. */
static int peer_sizes(struct opt_sync *y, struct remote *r, const struct heads *h)
{
	struct sizewalk w;
	git_oid *stack = NULL;
	size_t i, n = 0, cap = 0;
	int rc = 0;

	memset(&w, 0, sizeof(w));
	w.y = y;
	w.r = r;
	if (git_repository_odb(&w.podb, r->peer_repo) < 0)
		return opt_git_fail(OPT_ENET, "cannot open the remote's objects");
	for (i = 0; i < h->n && rc >= 0; i++) {
		if (strcmp(h->v[i].status, "unchanged") == 0)
			continue;
		w.e = &h->v[i];
		n = 0;
		if (h->v[i].has_old && (rc = sync_oidset_add(&w.seen, &h->v[i].old)) < 0)
			break;
		/* the commits from the head down to what we have */
		if (n == cap) {
			git_oid *ns = realloc(stack, (cap = cap ? 2 * cap : 64) * sizeof(*ns));
			if (!ns) {
				rc = opt_error_set(OPT_EIO, "out of memory");
				break;
			}
			stack = ns;
		}
		stack[n++] = h->v[i].new;
		while (n > 0 && rc >= 0) {
			git_oid id = stack[--n];
			git_commit *c = NULL;
			unsigned k;
			if ((rc = size_ok(&w, &id, GIT_OBJECT_COMMIT)) <= 0)
				continue;
			if (git_commit_lookup(&c, r->peer_repo, &id) < 0) {
				rc = opt_git_fail(OPT_EINTEGRITY, "cannot read a commit of the remote");
				break;
			}
			rc = tree_sizes(&w, git_commit_tree_id(c), 0);
			for (k = 0; rc >= 0 && k < git_commit_parentcount(c); k++) {
				if (n == cap) {
					git_oid *ns = realloc(stack, (cap = 2 * cap) * sizeof(*ns));
					if (!ns) {
						rc = opt_error_set(OPT_EIO, "out of memory");
						break;
					}
					stack = ns;
				}
				stack[n++] = *git_commit_parent_id(c, k);
			}
			git_commit_free(c);
		}
	}
	free(stack);
	sync_oidset_clear(&w.seen);
	git_odb_free(w.podb);
	return rc < 0 ? rc : 0;
}

/* The names of the store's pack indexes: *out an array of strings. */
static int pack_names(struct opt_sync *y, json_t **out)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;
	size_t len;

	if (!(*out = json_array()))
		return opt_error_set(OPT_EIO, "out of memory");
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(y->repo));
	if (!(d = opendir(dir)))
		return 0;
	while ((de = readdir(d)))
		if ((len = strlen(de->d_name)) > 4 && strcmp(de->d_name + len - 4, ".idx") == 0)
			json_array_append_new(*out, json_string(de->d_name));
	closedir(d);
	return 0;
}

/* Each pack that a download added (not in before): no object larger than
 * a block (opt_pack_sizes_check).  0, or OPT_EINTEGRITY. */
static int new_packs_sizes(struct opt_sync *y, struct remote *r, const json_t *before)
{
	json_t *now = NULL;
	char idx[PATH_MAX + 300], pack[PATH_MAX + 300];
	size_t i, len;
	int rc;

	if ((rc = pack_names(y, &now)) < 0)
		return rc;
	for (i = 0; i < json_array_size(now) && rc == 0; i++) {
		const char *name = json_string_value(json_array_get(now, i));
		if (sync_has_string(before, name))
			continue;
		len = strlen(name);
		snprintf(idx, sizeof(idx), "%s/objects/pack/%s", git_repository_path(y->repo), name);
		snprintf(pack, sizeof(pack), "%s/objects/pack/%.*s.pack", git_repository_path(y->repo), (int)(len - 4), name);
		if ((rc = opt_pack_sizes_check(idx, pack)) < 0)
			rc = opt_error_wrap(rc, "remote '%s': refused", r->name);
	}
	json_decref(now);
	return rc;
}

/* Index the pack at path where it lies (libgit2's indexer: every object
 * inflated and hashed, a new index written): 0, or -1; OPT_EINTEGRITY
 * when an object of it is larger than a block may be (the pack is then
 * not kept). */
static int index_pack(struct opt_sync *y, const char *path)
{
	char dir[PATH_MAX + 320], buf[1 << 16];
	git_indexer *ix = NULL;
	git_indexer_options io;
	git_indexer_progress st;
	git_odb *odb = NULL;
	ssize_t n = 0;
	int fd, rc = -1;

	/* indexed where it lies (the quarantine's pack directory) */
	snprintf(dir, sizeof(dir), "%s", path);
	if (strrchr(dir, '/'))
		*strrchr(dir, '/') = '\0';
	git_indexer_options_init(&io, GIT_INDEXER_OPTIONS_VERSION);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if (git_repository_odb(&odb, y->repo) == 0 && git_indexer_new(&ix, dir, 0, odb, &io) == 0) {
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (git_indexer_append(ix, buf, (size_t)n, &st) < 0)
				break;
		if (n == 0 && git_indexer_commit(ix, &st) == 0) {
			char idx[PATH_MAX + 400], pack[PATH_MAX + 400];
			snprintf(idx, sizeof(idx), "%s/pack-%s.idx", dir, git_indexer_name(ix));
			snprintf(pack, sizeof(pack), "%s/pack-%s.pack", dir, git_indexer_name(ix));
			if ((rc = opt_pack_sizes_check(idx, pack)) < 0) {
				unlink(idx);
				unlink(pack);
			}
		}
	}
	git_indexer_free(ix);
	git_odb_free(odb);
	close(fd);
	git_error_clear();
	return rc < -1 ? rc : rc < 0 ? -1 : 0;
}

/* Copy the peer's pack from (and its index beside it) to to: the index
 * checked against the pack first (opt_pack_idx_check: a damaged index
 * copied as it is would serve wrong objects, and git fsck fails on it),
 * both copies checked so that what is checked is what stays; a pack whose
 * index fails the check is indexed here instead.  0; -1 (the fetch then
 * goes the usual way); OPT_EINTEGRITY for an object larger than a block
 * may be (refused: the usual way would read it whole). */
static int seed_pack(struct opt_sync *y, const char *from, const char *to)
{
	char fidx[PATH_MAX + 300], tidx[PATH_MAX + 300], tpack[PATH_MAX + 310], tmpidx[PATH_MAX + 310];
	int rc = -1;

	snprintf(fidx, sizeof(fidx), "%.*s.idx", (int)(strlen(from) - 5), from);
	snprintf(tidx, sizeof(tidx), "%.*s.idx", (int)(strlen(to) - 5), to);
	/* (copy_file puts them in place through NAME.tmp) */
	snprintf(tpack, sizeof(tpack), "%s.seed", to);
	snprintf(tmpidx, sizeof(tmpidx), "%s.seed", tidx);
	if (copy_file(from, tpack) < 0)
		goto done;
	if (copy_file(fidx, tmpidx) == 0 && opt_pack_idx_check(tmpidx, tpack) == 0) {
		/* no object larger than a block, none inflated to find out */
		if ((rc = opt_pack_sizes_check(tmpidx, tpack)) < 0)
			goto done;
		rc = rename(tpack, to) == 0 && rename(tmpidx, tidx) == 0 ? 0 : -1;
		goto done;
	}
	opt_error_clear();
	rc = index_pack(y, tpack);
done:
	unlink(tpack);
	unlink(tmpidx);
	return rc;
}

/* A first fetch from a store on this machine into a store without packs
 * (a clone): the peer's pack files are copied as they are, where
 * libgit2's local transport would build a new pack object by object
 * (delta search, recompression): 1 when every wanted head is then here
 * and its incoming ref written, 0 to fetch the usual way. */
static int seed_from_path(struct opt_sync *y, struct remote *r, struct heads *h, const char *inc_prefix)
{
	char ours[PATH_MAX], theirs[PATH_MAX], qpack[PATH_MAX], from[PATH_MAX + 300], to[PATH_MAX + 300], ref[REFLEN];
	struct dirent *de;
	DIR *d;
	git_odb *odb = NULL;
	size_t i, len;
	int any = 0, ok = 1, rc;

	snprintf(ours, sizeof(ours), "%s/objects/pack", git_repository_path(y->repo));
	snprintf(theirs, sizeof(theirs), "%s/objects/pack", git_repository_path(r->peer_repo));
	if (!(d = opendir(ours)))
		return 0;
	/* (copied into the quarantine, as a fetch would be) */
	snprintf(qpack, sizeof(qpack), "%s/pack", opt_store_quarantine_dir(y->s));
	while ((de = readdir(d)))
		if ((len = strlen(de->d_name)) > 5 && strcmp(de->d_name + len - 5, ".pack") == 0)
			any = 1;
	closedir(d);
	if (any || !(d = opendir(theirs)))
		return 0;
	/* each pack, then its index (which makes it visible) */
	while (ok && (de = readdir(d))) {
		if ((len = strlen(de->d_name)) <= 5 || strcmp(de->d_name + len - 5, ".pack") != 0)
			continue;
		snprintf(from, sizeof(from), "%s/%s", theirs, de->d_name);
		snprintf(to, sizeof(to), "%s/%s", qpack, de->d_name);
		if ((rc = seed_pack(y, from, to)) < -1) {
			closedir(d);
			return opt_error_wrap(rc, "remote '%s': refused", r->name);
		}
		ok = rc == 0;
	}
	closedir(d);
	if (git_repository_odb(&odb, y->repo) == 0)
		git_odb_refresh(odb);
	git_odb_free(odb);
	for (i = 0; ok && i < h->n; i++)
		if (strcmp(h->v[i].status, "unchanged") != 0 && !sync_have_object(y, &h->v[i].new))
			ok = 0;
	for (i = 0; ok && i < h->n; i++) {
		if (strcmp(h->v[i].status, "unchanged") == 0)
			continue;
		snprintf(ref, sizeof(ref), "%s%s", inc_prefix, h->v[i].name);
		if (opt_ref_cas(y->repo, ref, OPT_REF_ANY, &h->v[i].new, "opt-sync fetch", 0) < 0)
			return opt_git_fail(OPT_EIO, "cannot write incoming refs");
	}
	git_error_clear();
	return ok;
}

/* Open the store's quarantine of incoming objects (begin), or close it,
 * keeping what it holds or not: for the store's handle and ours. */
static int quarantine(struct opt_sync *y, int begin, int keep)
{
	int rc;

	if (begin) {
		if ((rc = opt_store_quarantine_begin(y->s)) < 0)
			return rc;
		if ((rc = opt_git_repo_reopen_odb(y->repo, opt_store_quarantine_dir(y->s))) < 0)
			opt_store_quarantine_end(y->s, 0);
		return rc;
	}
	if (!opt_store_quarantine_dir(y->s))
		return 0;
	rc = opt_store_quarantine_end(y->s, keep);
	if (opt_git_repo_reopen_odb(y->repo, NULL) < 0 && rc == 0)
		rc = OPT_EIO;
	return rc;
}

/* The remote head of e is a commit: 0, else OPT_EINTEGRITY naming the
 * remote and the collection. */
static int head_is_commit(struct opt_sync *y, struct remote *r, const struct head *e)
{
	git_odb *odb = NULL;
	git_object_t type = GIT_OBJECT_INVALID;
	size_t size;
	char hex[GIT_OID_HEXSZ + 1];
	int rc;

	if (git_repository_odb(&odb, y->repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot open the object database");
	rc = git_odb_read_header(&size, &type, odb, &e->new);
	git_odb_free(odb);
	sync_hex_of(hex, &e->new);
	if (rc < 0) {
		char msg[512];
		const git_error *ge = git_error_last();
		snprintf(msg, sizeof(msg), "%s", ge && ge->message ? ge->message : "unknown libgit2 error");
		return opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': cannot read its head %s: %s (refused)",
				     r->name, e->name, hex, msg);
	}
	if (type != GIT_OBJECT_COMMIT)
		return opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s': its head %s is a "
							  "%s, not a commit (refused)", r->name, e->name, hex,
							  git_object_type2string(type)), "malformed");
	return 0;
}

/* The plan: the remote's collections (colls, n; 0: all) that o->want
 * accepts, sorted by name, each with its tracking ref (e->old) and its
 * status (new, updated, unchanged); *gr stays connected. */
static int fetch_plan(struct opt_sync *y, struct remote *r, const char *const *colls, size_t n, git_remote **gr,
		      struct heads *h)
{
	const struct opt_sync_opts *o = r->o;
	char ref[REFLEN];
	size_t i, k;
	int rc;

	if ((rc = sync_ls_remote(y, r, gr, h)) < 0)
		return rc;
	/* keep the wanted ones */
	for (i = k = 0; i < h->n; i++) {
		if (opt_name_wanted(h->v[i].name, colls, n) && (!o || !o->want || o->want(h->v[i].name, o->want_arg)))
			h->v[k++] = h->v[i];
		else
			free(h->v[i].name);
	}
	h->n = k;
	sync_skip_keep_wanted(r, colls, n, o);
	if (h->n > 1)  /* h->v is NULL for a remote with no collections */
		qsort(h->v, h->n, sizeof(*h->v), sync_cmp_head);
	for (i = 0; i < h->n; i++) {
		struct head *e = &h->v[i];
		opt_ref_tracking(ref, sizeof(ref), r->name, e->name);
		if ((rc = opt_ref_read(y->repo, ref, &e->old)) < 0)
			return rc;
		e->has_old = rc;
		e->status = !e->has_old ? "new" : git_oid_equal(&e->old, &e->new) ? "unchanged" : "updated";
	}
	return 0;
}

/* The refspecs of what changed: remote head to inc_prefix+NAME. */
static int fetch_specs(const struct heads *h, const char *inc_prefix, git_strarray *specs)
{
	char ref[REFLEN];
	size_t i;

	OPT_CHECK_ALLOC(specs->strings = calloc(h->n ? h->n : 1, sizeof(char *)));
	for (i = 0; i < h->n; i++) {
		const struct head *e = &h->v[i];
		if (strcmp(e->status, "unchanged") == 0)
			continue;
		if (opt_ref_collection(ref, sizeof(ref), e->name) < 0)
			return opt_error_last_code();
		if (asprintf(&specs->strings[specs->count], "+%s:%s%s", ref, inc_prefix, e->name) < 0) {
			specs->strings[specs->count] = NULL;
			return opt_error_oom();
		}
		specs->count++;
	}
	return 0;
}

/* Download what changed into the quarantine, to the incoming refs: a
 * first fetch from a path remote copies its packs; otherwise the sizes
 * first (a path remote's objects by their headers), then libgit2's
 * download, each new pack's sizes checked before anything reads it.  0,
 * 1 when nothing changed, <0. */
static int fetch_download(struct opt_sync *y, struct remote *r, git_remote *gr, struct heads *h,
			  const char *inc_prefix)
{
	git_strarray specs = { 0 };
	git_fetch_options fo;
	json_t *packs_before = NULL;
	size_t i;
	int rc;

	if ((rc = fetch_specs(h, inc_prefix, &specs)) < 0 || specs.count == 0) {
		rc = rc < 0 ? rc : 1;
		goto done;
	}
	/* what comes is kept apart until it passed */
	if ((rc = quarantine(y, 1, 0)) < 0)
		goto done;
	if (r->path && (rc = seed_from_path(y, r, h, inc_prefix)) != 0) {
		rc = rc < 0 ? rc : 0;
		goto done;
	}
	/* libgit2's local transport reads every object it sends whole:
	 * their sizes first */
	if ((r->path && (rc = peer_sizes(y, r, h)) < 0) || (rc = pack_names(y, &packs_before)) < 0)
		goto done;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	sync_callbacks(&fo.callbacks, r);
	fo.update_fetchhead = 0;
	fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
	fo.prune = GIT_FETCH_NO_PRUNE;
	if (git_remote_download(gr, &specs, &fo) < 0) {
		rc = sync_net_fail(r, "cannot fetch");
		goto done;
	}
	/* nothing of what came is read before its size is known */
	if ((rc = new_packs_sizes(y, r, packs_before)) < 0)
		goto done;
	if (git_remote_update_tips(gr, &fo.callbacks, 0, GIT_REMOTE_DOWNLOAD_TAGS_NONE, NULL) < 0)
		rc = opt_git_fail(OPT_EIO, "cannot write incoming refs");
done:
	json_decref(packs_before);
	for (i = 0; i < specs.count; i++)
		free(specs.strings[i]);
	free(specs.strings);
	return rc;
}

/* Verify changed collection e as it came (its incoming ref): what was
 * listed, a commit, no rewind of what we fetched before, and the history
 * since then (opt_verify_collection_since). */
static int verify_one(struct opt_sync *y, struct remote *r, const struct head *e, const char *inc_prefix)
{
	char ref[REFLEN], hex[GIT_OID_HEXSZ + 1], base[GIT_OID_HEXSZ + 1], msg[1024];
	struct vprog vp;
	git_oid got;
	int rc;

	snprintf(ref, sizeof(ref), "%s%s", inc_prefix, e->name);
	if ((rc = opt_ref_read(y->repo, ref, &got)) < 0)
		return rc;
	if (rc == 0 || !git_oid_equal(&got, &e->new))
		return opt_error_set(OPT_ENET, "remote '%s': collection '%s' changed during the fetch; try again", r->name,
				     e->name);
	/* (before libgit2's history walk, which leaks on another type) */
	if ((rc = head_is_commit(y, r, e)) < 0)
		return rc;
	if (e->has_old && (rc = sync_descends(y->repo, &e->new, &e->old)) <= 0)
		return rc < 0 ? rc : opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "remote '%s': collection '%s' was "
									"rewound: its revision %ld does not descend from "
									"revision %ld that we fetched before (refused)",
									r->name, e->name, sync_rev_of(y, e->name, &e->new),
									sync_rev_of(y, e->name, &e->old)), "rewound");
	sync_hex_of(hex, &e->new);
	vp.o = r->o;
	snprintf(vp.what, sizeof(vp.what), "verifying '%s'", e->name);
	/* the old tracking ref was verified when it came: only what is new */
	sync_hex_of(base, &e->old);
	rc = opt_verify_collection_since(y->s, e->name, hex, e->has_old ? base : NULL,
					 r->o && r->o->progress ? verify_progress : NULL, &vp, NULL);
	if (rc >= 0)
		return 0;
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	return opt_error_set(rc != OPT_EIO ? OPT_EINTEGRITY : rc, "remote '%s': collection '%s' refused: %s", r->name,
			     e->name, msg);
}

/* Changed collection h->v[i] did not verify: it goes from h to the
 * remote's skipped ones (marked "refused"), its tracking ref stays. */
static int refuse(struct remote *r, struct heads *h, size_t i)
{
	char esc[4 * OPT_NAME_MAX + 8];
	int rc;

	if ((rc = sync_skip_add(r, h->v[i].name, OPT_EINTEGRITY)) < 0)
		return rc;
	snprintf(esc, sizeof(esc), "%s", opt_esc(h->v[i].name));
	json_object_set_new(json_object_get(r->skipped, esc), "refused", json_true());
	free(h->v[i].name);
	memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof(h->v[0]));
	h->n--;
	return 0;
}

int sync_refused(const struct remote *r, const char *name)
{
	return json_is_true(json_object_get(json_object_get(r->skipped, opt_esc(name)), "refused"));
}

void sync_skip_keep_refused(struct remote *r)
{
	const char *name;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(r->skipped, tmp, name, v) {
		if (!json_is_true(json_object_get(v, "refused")))
			json_object_del(r->skipped, name);
	}
}

/* All verified: the objects into the store, then the tracking refs. */
static int fetch_commit(struct opt_sync *y, struct remote *r, const struct heads *h, int64_t deadline)
{
	char ref[REFLEN];
	size_t i;
	int rc;

	if ((rc = quarantine(y, 0, 1)) < 0)
		return rc;
	for (i = 0; i < h->n; i++) {
		const struct head *e = &h->v[i];
		if (strcmp(e->status, "unchanged") == 0)
			continue;
		opt_ref_tracking(ref, sizeof(ref), r->name, e->name);
		if ((rc = opt_ref_cas(y->repo, ref, e->has_old ? &e->old : NULL, &e->new, "opt-sync", deadline)) < 0)
			return rc;
	}
	return 0;
}

int sync_fetch_verified(struct opt_sync *y, struct remote *r, const char *const *colls, size_t n, int dry_run,
			struct heads *h)
{
	git_remote *gr = NULL;
	char inc_prefix[REFLEN], msg[1024];
	int64_t deadline = opt_now_ms() + sync_busy_timeout(r->o);
	size_t i, passed = 0, refused = 0;
	int rc;

	memset(h, 0, sizeof(*h));
	opt_ref_incoming(inc_prefix, sizeof(inc_prefix), r->name, NULL);
	if ((rc = sync_delete_refs_under(y->repo, inc_prefix)) < 0)
		return rc;
	if ((rc = fetch_plan(y, r, colls, n, &gr, h)) == 0 && !dry_run &&
	    (rc = fetch_download(y, r, gr, h, inc_prefix)) == 0) {
		git_remote_disconnect(gr);
		/* verify every changed collection before any ref moves; one
		 * that does not verify is refused, the others go on */
		for (i = 0; i < h->n && rc == 0; i++) {
			if (strcmp(h->v[i].status, "unchanged") == 0)
				continue;
			if ((rc = verify_one(y, r, &h->v[i], inc_prefix)) == OPT_EINTEGRITY) {
				refused++;
				rc = refuse(r, h, i--);
			}
			else if (rc == 0)
				passed++;
		}
		/* (nothing passed: nothing that came is kept) */
		if (rc == 0 && (passed || !refused))
			rc = fetch_commit(y, r, h, deadline);
	}
	if (rc > 0)
		rc = 0;  /* nothing changed */
	if (gr) {
		git_remote_disconnect(gr);
		git_remote_free(gr);
	}
	/* the quarantine goes either way */
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if (quarantine(y, 0, 0) < 0 && rc == 0)
		return opt_error_last_code() ? opt_error_last_code() : OPT_EIO;
	if (sync_delete_refs_under(y->repo, inc_prefix) < 0 && rc == 0)
		return opt_error_last_code() ? opt_error_last_code() : OPT_EIO;
	if (rc < 0)
		opt_error_set(rc, "%s", msg);
	return rc;
}

int sync_check_named(struct heads *h, struct remote *r, const char *const *colls, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!sync_heads_find(h, colls[i]) && !json_object_get(r->skipped, colls[i]))
			return opt_error_set(OPT_ENOTFOUND, "remote '%s' has no collection '%s'", r->name, colls[i]);
	return 0;
}

int opt_sync_fetch(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		   const struct opt_sync_opts *o)
{
	struct remote r;
	struct heads h;
	size_t i;
	int rc;

	o = o ? o : &sync_no_opts;
	y->partial = 0;
	for (i = 0; i < n; i++)
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
	if ((rc = sync_remote_open(y, &r, remote, o)) < 0)
		return rc;
	rc = sync_fetch_verified(y, &r, colls, n, o->dry_run, &h);
	if (rc == 0)
		rc = sync_check_named(&h, &r, colls, n);
	for (i = 0; rc == 0 && i < h.n; i++) {
		struct head *e = &h.v[i];
		json_t *rec;
		char hex[GIT_OID_HEXSZ + 1];
		if (o->dry_run) {
			sync_hex_of(hex, &e->new);
			rec = json_pack("{s:s,s:s,s:s,s:s,s:b}", "remote", r.name, "collection", e->name, "commit", hex,
					"status", e->status, "dry_run", 1);
		} else {
			rec = json_pack("{s:s,s:s,s:I}", "remote", r.name, "collection", e->name, "rev",
					(json_int_t)sync_rev_of(y, e->name, &e->new));
			if (rec && e->has_old && strcmp(e->status, "updated") == 0)
				json_object_set_new(rec, "from", json_integer(sync_rev_of(y, e->name, &e->old)));
			if (rec)
				json_object_set_new(rec, "status", json_string(e->status));
		}
		rc = opt_sync_emit_rec(o, rec);
	}
	if (json_object_size(r.skipped)) {
		y->partial = rc == 0;
		rc = sync_skip_report(&r, o, rc);
	}
	sync_heads_clear(&h);
	sync_remote_close(&r);
	return rc;
}

int opt_sync_partial(const struct opt_sync *y)
{
	return y->partial;
}

int opt_git_repo_reopen_odb(git_repository *repo, const char *qdir)
{
	git_odb *odb = NULL;
	char objdir[PATH_MAX];
	int rc;

	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(repo));
	if (git_odb_open(&odb, objdir) < 0)
		return opt_git_fail(OPT_EIO, "cannot open object database");
	if (qdir && (rc = opt_git_odb_add_quarantine(odb, qdir)) < 0) {
		git_odb_free(odb);
		return rc;
	}
	rc = git_repository_set_odb(repo, odb);
	git_odb_free(odb);
	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot open object database") : 0;
}
