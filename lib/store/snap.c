/* snap.c - snapshots: a collection at a revision, its blocks read
 * (through the caches), the decisions on multi-collection transactions,
 * and the differences between two revisions. */
#include "store.h"
#include "error.h"
#include "json.h"
#include "pack.h"
#include "store/git.h"
#include "store/internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <errno.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/repository.h>
#include <git2/sys/odb_backend.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_SLOTS 64      /* default: streaming reads stay small */

#define OCACHE 256

static json_t *ocache_get(struct opt_store *s, const git_oid *oid)
{
	char hex[GIT_OID_HEXSZ + 1];

	if (!s->ocache)
		return NULL;
	git_oid_tostr(hex, sizeof(hex), oid);
	return json_object_get(s->ocache, hex);
}

void opt_store__ocache_put(struct opt_store *s, const git_oid *oid, const json_t *b)
{
	char *slot;

	if (!s->ocache) {
		s->ocache = json_object();
		s->oring = calloc(OCACHE, sizeof(*s->oring));
		if (!s->ocache || !s->oring) {
			json_decref(s->ocache);
			free(s->oring);
			s->ocache = NULL;
			s->oring = NULL;
			return;
		}
	}
	slot = s->oring[s->opos++ % OCACHE];
	if (slot[0])
		json_object_del(s->ocache, slot);
	git_oid_tostr(slot, GIT_OID_HEXSZ + 1, oid);
	json_object_set(s->ocache, slot, (json_t *)b);
}

static size_t id_hash(const char *id)
{
	size_t n = strlen(id), i;
	uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;

	/* eight bytes at a time, mixed as splitmix64 does */
	for (i = 0; i < n; i += 8) {
		w = 0;
		memcpy(&w, id + i, n - i < 8 ? n - i : 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9u;
		h ^= h >> 31;
	}
	h = (h ^ (h >> 30)) * 0x94d049bb133111ebu;
	return (size_t)(h ^ (h >> 31));
}

static void *idmap_get(const struct idmap *m, const char *id)
{
	size_t h, i;

	if (!m->n)
		return NULL;
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		if (m->t[i].h == h && strcmp(m->t[i].id, id) == 0)
			return m->t[i].v;
	return NULL;
}

/* Add v under id (not present; id must live as long as the entry). */
static int idmap_put(struct idmap *m, const char *id, void *v)
{
	size_t h, i;

	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64, k;
		struct idmap_ent *t = calloc(cap, sizeof(*t));
		if (!t)
			return -1;
		for (k = 0; k < m->cap; k++) {
			if (!m->t[k].id)
				continue;
			for (i = m->t[k].h & (cap - 1); t[i].id; i = (i + 1) & (cap - 1))
				;
			t[i] = m->t[k];
		}
		free(m->t);
		m->t = t;
		m->cap = cap;
	}
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		;
	m->t[i].h = h;
	m->t[i].id = id;
	m->t[i].v = v;
	m->n++;
	return 0;
}

/* Remove id (backward-shift deletion: no tombstones). */
static void idmap_del(struct idmap *m, const char *id)
{
	size_t h, i, j;

	if (!m->n)
		return;
	h = id_hash(id);
	for (i = h & (m->cap - 1); m->t[i].id; i = (i + 1) & (m->cap - 1))
		if (m->t[i].h == h && strcmp(m->t[i].id, id) == 0)
			break;
	if (!m->t[i].id)
		return;
	m->n--;
	for (j = (i + 1) & (m->cap - 1); m->t[j].id; j = (j + 1) & (m->cap - 1)) {
		size_t home = m->t[j].h & (m->cap - 1);
		/* move j back to i unless its home lies in (i, j] */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			m->t[i] = m->t[j];
			i = j;
		}
	}
	m->t[i].id = NULL;
}

static void idmap_clear(struct idmap *m)
{
	free(m->t);
	memset(m, 0, sizeof(*m));
}

/* A block kept for the snapshot's life (inner tree nodes, headers), with
 * a slot for what readers derive from it (see opt_source.get_raw). */
struct pin {
	json_t *block;
	struct opt_memo memo;
	char id[];
};

/* A block's stored bytes, shared by the cache and the readers it hands
 * them to. */
struct sbuf {
	size_t refs, len;
	unsigned char *data;
};

struct raw_slot {
	struct sbuf *buf;
	struct opt_memo memo;
	char id[];
};

/* ---- snapshots ---- */

int opt_store__ref_name(char *buf, size_t n, const char *name)
{
	int rc;

	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	return opt_ref_collection(buf, n, name);
}

/* The head of the collection whose ref is ref: 1 and *id, 0 when absent,
 * or OPT_EIO "cannot read collection ref: WHY". */
static int head_read(struct opt_store *s, const char *ref, git_oid *id)
{
	int rc = opt_ref_read(s->repo, ref, id);

	return rc < 0 ? opt_git_fail(OPT_EIO, "cannot read collection ref") : rc;
}

static int clash_cb(const char *name, const git_oid *id, void *arg)
{
	(void)id;
	snprintf(arg, OPT_NAME_MAX + 1, "%s", opt_ref_collection_name(name));
	return 1;
}

int opt_store_name_clash(struct opt_store *s, const char *name, char other[OPT_NAME_MAX + 1])
{
	char ref[OPT_REF_MAX];
	const char *coll;
	size_t i;
	git_oid id;
	int rc;

	other[0] = '\0';
	if ((rc = opt_store__ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	/* it exists: then nothing clashes with it */
	if ((rc = head_read(s, ref, &id)) != 0)
		return rc < 0 ? rc : 0;
	/* a collection whose name is name's up to a '/' */
	coll = opt_ref_collection_name(ref);
	for (i = (size_t)(coll - ref); ref[i]; i++) {
		if (ref[i] != '/')
			continue;
		ref[i] = '\0';
		rc = head_read(s, ref, &id);
		ref[i] = '/';
		if (rc == 1)
			snprintf(other, OPT_NAME_MAX + 1, "%.*s", (int)(ref + i - coll), coll);
		if (rc != 0)
			return rc;
	}
	/* a collection whose name begins with name and '/' */
	strcat(ref, "/");
	return opt_ref_foreach(s->repo, ref, clash_cb, other, "cannot list collections");
}

int opt_store_check_new(struct opt_store *s, const char *name)
{
	char other[OPT_NAME_MAX + 1];
	int rc = opt_store_name_clash(s, name, other);

	if (rc <= 0)
		return rc;
	return opt_error_set(OPT_EINVAL, "collection '%s' cannot be created: collection '%s' exists", name, other);
}

static int snap_from_commit(struct opt_snap **out, struct opt_store *s, const char *name, git_commit *c)
{
	struct opt_snap *snap = calloc(1, sizeof(*snap));
	const git_tree_entry *e;
	const char *msg = git_commit_message(c);
	char *revs;

	*out = NULL;
	if (!snap) {
		git_commit_free(c);
		return opt_error_oom();
	}
	snap->s = s;
	snap->commit = c;
	snap->name = strdup(name);
	git_oid_tostr(snap->commit_hex, sizeof(snap->commit_hex), git_commit_id(c));
	if (opt_store__tree_lookup(s, &snap->root, git_commit_tree_id(c)) < 0) {
		opt_snap_free(snap);
		return opt_git_fail(OPT_EINTEGRITY, "cannot read collection tree");
	}
	e = git_tree_entry_byname(snap->root, "blocks");
	if (e && opt_store__tree_lookup(s, &snap->blocks, git_tree_entry_id(e)) < 0) {
		opt_snap_free(snap);
		return opt_git_fail(OPT_EINTEGRITY, "cannot read blocks tree");
	}
	revs = opt_trailer_value(msg, "Opt-Rev");
	snap->rev = revs ? strtol(revs, NULL, 10) : 0;
	free(revs);
	snap->trx = opt_trailer_value(msg, "Opt-Trx");
	{
		const char *nl = strchr(msg, '\n');
		snap->summary = strndup(msg, nl ? (size_t)(nl - msg) : strlen(msg));
	}
	snap->trailer_buf = strdup(msg);
	if (snap->rev <= 0) {
		opt_snap_free(snap);
		return opt_error_set(OPT_EINTEGRITY, "collection '%s': commit without an Opt-Rev trailer", name);
	}
	*out = snap;
	return 0;
}

static int snap_open_raw(struct opt_snap **out, struct opt_store *s, const char *name, long rev);

/* The first snapshot of the walk of opt_store__decision_from: 1 with
 * *out, or 0 with *d set when there is nothing to walk. */
static int decision_start(struct opt_snap **out, struct opt_store *s, const char *name, const git_oid *at, int *d)
{
	char hex[GIT_OID_HEXSZ + 1], other[OPT_NAME_MAX + 1];
	int rc;

	if (at) {
		git_oid_tostr(hex, sizeof(hex), at);
		return (rc = opt_snap_open_commit(out, s, name, hex)) < 0 ? rc : 1;
	}
	rc = snap_open_raw(out, s, name, 0);
	if (rc != OPT_ENOTFOUND)
		return rc < 0 ? rc : 1;
	opt_error_clear();
	/* a primary that cannot be created while a collection whose name
	 * clashes with its own exists (which is never removed) can hold
	 * neither the decision nor an abort record: aborted */
	if ((rc = opt_store_name_clash(s, name, other)) < 0)
		return rc;
	if (rc == 1)
		*d = -1;
	return 0;
}

int opt_store__decision_from(struct opt_store *s, const char *name, const git_oid *at, const char *trx,
			     const char *stop, int64_t since, int *out)
{
	struct opt_snap *snap = NULL, *p;
	int rc;

	*out = 0;
	if ((rc = decision_start(&snap, s, name, at, out)) <= 0)
		return rc;
	/* newest first, back to the primary's head before the pends: the
	 * decision or abort record is always after it */
	for (;;) {
		if (stop && *stop && strcmp(snap->commit_hex, stop) == 0)
			break;
		if (snap->trx && strcmp(snap->trx, trx) == 0) {
			const char *st = opt_snap_trailer(snap, "Opt-Status");
			if (!st || strcmp(st, "committed") == 0)
				*out = 1;
			else if (strcmp(st, "aborted") == 0)
				*out = -1;
			if (*out)
				break;
		}
		if (opt_snap_time(snap) < since - 60)
			break;
		rc = opt_snap_parent(&p, snap);
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			break;
		}
		if (rc < 0) {
			opt_snap_free(snap);
			return rc;
		}
		opt_snap_free(snap);
		snap = p;
	}
	opt_snap_free(snap);
	return 0;
}

int opt_store__decision_of(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out)
{
	char ref[OPT_REF_MAX];
	git_oid b;
	int rc;

	*out = 0;
	if (!opt_store_name_valid(primary))
		return opt_error_set(OPT_EINTEGRITY, "transaction %s names an invalid primary '%s'", trx, primary);
	if ((rc = opt_ref_backup(ref, sizeof(ref), primary)) < 0 || (rc = opt_ref_read(s->repo, ref, &b)) < 0)
		return rc;
	if (rc == 1 && (rc = opt_store__decision_from(s, primary, &b, trx, NULL, since, out)) < 0)
		return rc;
	if (*out)
		return 0;
	return opt_store_decision(s, primary, trx, since, out);
}

int opt_store_decision_at(struct opt_store *s, const char *primary, const char *trx, const char *stop, int *out)
{
	return opt_store__decision_from(s, primary, NULL, trx, stop, 0, out);
}

int opt_store_decision(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out)
{
	(void)since;  /* no time bound: clocks and stalled writers make it unsafe */
	return opt_store_decision_at(s, primary, trx, NULL, out);
}

int opt_snap_decided(struct opt_snap *snap, int *out)
{
	const char *st = opt_snap_trailer(snap, "Opt-Status");
	char primary[OPT_NAME_MAX + 1];

	*out = 1;
	if (!st || strcmp(st, "pending") != 0)
		return 0;
	st = opt_snap_trailer(snap, "Opt-Primary");
	if (!st)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' revision %ld is pending without a primary",
				     snap->name, snap->rev);
	snprintf(primary, sizeof(primary), "%.200s", st);
	return opt_store_decision_at(snap->s, primary, opt_snap_trx(snap), opt_snap_trailer(snap, "Opt-Primary-Base"),
				     out);
}

static int head_ids(struct opt_store *s, const char *const *names, size_t n, git_oid *ids)
{
	char ref[OPT_REF_MAX];
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = opt_store__ref_name(ref, sizeof(ref), names[i])) < 0)
			return rc;
		if ((rc = head_read(s, ref, &ids[i])) < 0)
			return rc;
		if (rc == 0)
			memset(&ids[i], 0, sizeof(ids[i]));
	}
	return 0;
}

int opt_snap_open_many(struct opt_snap **snaps, struct opt_store *s, const char *const *names, size_t n)
{
	git_oid *before = calloc(n ? n : 1, sizeof(*before)), *after = calloc(n ? n : 1, sizeof(*after));
	size_t i;
	int rc = 0, tries;

	if (!before || !after) {
		free(before);
		free(after);
		return opt_error_oom();
	}
	for (i = 0; i < n; i++)
		snaps[i] = NULL;
	for (tries = 0; tries < 100; tries++) {
		if ((rc = head_ids(s, names, n, before)) < 0)
			break;
		for (i = 0; i < n && rc == 0; i++) {
			rc = opt_snap_open(&snaps[i], s, names[i], 0);
			if (rc == OPT_ENOTFOUND) {
				snaps[i] = NULL;
				opt_error_clear();
				rc = 0;
			}
		}
		if (rc == 0 && (rc = head_ids(s, names, n, after)) == 0 &&
		    memcmp(before, after, n * sizeof(*before)) == 0)
			break;
		for (i = 0; i < n; i++) {
			opt_snap_free(snaps[i]);
			snaps[i] = NULL;
		}
		if (rc < 0)
			break;
		opt_sleep_ms(1 + opt_random(5));
	}
	if (rc == 0 && tries == 100)
		rc = opt_error_set(OPT_EBUSY, "the collections kept changing while being read");
	free(before);
	free(after);
	return rc;
}

int opt_snap_head(struct opt_snap **out, struct opt_store *s, const char *name)
{
	return snap_open_raw(out, s, name, 0);
}

int opt_snap_open(struct opt_snap **out, struct opt_store *s, const char *name, long rev)
{
	struct opt_snap *snap = NULL, *p;
	int rc, d;

	*out = NULL;
	if ((rc = snap_open_raw(&snap, s, name, rev)) < 0)
		return rc;
	/* readers see a pending revision only once its transaction committed */
	for (;;) {
		if ((rc = opt_snap_decided(snap, &d)) < 0) {
			opt_snap_free(snap);
			return rc;
		}
		if (d == 1)
			break;
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_ENOTFOUND, "no collection '%s' (its first transaction is not committed yet)",
					     name);
		if (rc < 0)
			return rc;
		snap = p;
	}
	*out = snap;
	return 0;
}

static int snap_open_raw(struct opt_snap **out, struct opt_store *s, const char *name, long rev)
{
	char ref[OPT_REF_MAX];
	git_oid id;
	git_commit *c = NULL;
	struct opt_snap *snap = NULL;
	int rc;

	*out = NULL;
	if ((rc = opt_store__ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (s->gname && s->gpending && strcmp(s->gname, name) == 0) {
		id = s->ghead;  /* the pending revision is the latest */
	} else {
		if ((rc = head_read(s, ref, &id)) < 0)
			return rc;
		if (rc == 0)
			return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", name);
	}
	if (opt_store__commit_lookup(s, &c, &id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read collection commit");
	if ((rc = snap_from_commit(&snap, s, name, c)) < 0)
		return rc;
	if (rev > 0 && rev > snap->rev) {
		long have = snap->rev;
		opt_snap_free(snap);
		return opt_error_set(OPT_ENOTFOUND, "collection '%s' has no revision %ld (latest is %ld)", name, rev, have);
	}
	while (rev > 0 && snap->rev > rev) {
		struct opt_snap *p;
		if ((rc = opt_snap_parent(&p, snap)) < 0) {
			opt_snap_free(snap);
			return rc;
		}
		opt_snap_free(snap);
		snap = p;
	}
	*out = snap;
	return 0;
}

int opt_snap_open_commit(struct opt_snap **out, struct opt_store *s, const char *name, const char *commit)
{
	git_oid id;
	git_commit *c = NULL;
	int rc;

	*out = NULL;
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	if (git_oid_fromstr(&id, commit) < 0)
		return opt_error_set(OPT_EINVAL, "invalid commit ID '%s'", opt_esc(commit));
	if (opt_store__commit_lookup(s, &c, &id) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read commit");
	return snap_from_commit(out, s, name, c);
}

int opt_snap_parent(struct opt_snap **out, struct opt_snap *snap)
{
	git_commit *p = NULL;
	int rc;

	*out = NULL;
	if (git_commit_parentcount(snap->commit) == 0)
		return opt_error_set(OPT_ENOTFOUND, "collection '%s' has no revision before %ld", snap->name, snap->rev);
	if (opt_store__commit_lookup(snap->s, &p, git_commit_parent_id(snap->commit, 0)) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read parent commit");
	rc = snap_from_commit(out, snap->s, snap->name, p);
	if (rc == 0 && (*out)->rev != snap->rev - 1) {
		long r = (*out)->rev;
		opt_snap_free(*out);
		*out = NULL;
		return opt_error_set(OPT_EINTEGRITY, "collection '%s': revision %ld follows revision %ld",
				     snap->name, snap->rev, r);
	}
	return rc;
}

static void sbuf_release(void *owner)
{
	struct sbuf *b = owner;

	if (b && --b->refs == 0) {
		free(b->data);
		free(b);
	}
}

static void raw_slot_free(struct raw_slot *r)
{
	if (r->memo.p && r->memo.free)
		r->memo.free(r->memo.p);
	sbuf_release(r->buf);
	free(r);
}

static void raw_cache_clear(struct opt_snap *snap)
{
	size_t i;

	for (i = 0; i < snap->rcount; i++)
		raw_slot_free(snap->rring[(snap->rhead + i) % snap->rcap]);
	free(snap->rring);
	idmap_clear(&snap->rmap);
	snap->rring = NULL;
	snap->rcap = snap->rhead = snap->rcount = snap->rbytes = 0;
}

void opt_snap_free(struct opt_snap *snap)
{
	size_t i;

	if (!snap)
		return;
	raw_cache_clear(snap);
	for (i = 0; snap->cache && i < snap->nslots; i++)
		free(snap->cache[i].id);
	free(snap->cache);
	json_decref(snap->lru);
	for (i = 0; i < snap->pinned.cap; i++) {
		struct pin *p = snap->pinned.t[i].id ? snap->pinned.t[i].v : NULL;
		if (!p)
			continue;
		if (p->memo.p && p->memo.free)
			p->memo.free(p->memo.p);
		json_decref(p->block);
		free(p);
	}
	idmap_clear(&snap->pinned);
	json_decref(snap->trailers);
	idmap_clear(&snap->blobs);
	for (i = 0; snap->t2 && i < 32 * 32; i++)
		git_tree_free(snap->t2[i]);
	free(snap->t2);
	git_tree_free(snap->blocks);
	git_tree_free(snap->root);
	git_commit_free(snap->commit);
	free(snap->name);
	free(snap->trx);
	free(snap->summary);
	free(snap->trailer_buf);
	free(snap);
}

const char *opt_snap_name(const struct opt_snap *snap) { return snap->name; }

const char *opt_snap_header_id(struct opt_snap *snap)
{
	if (!snap->hid[0])
		opt_collection_header_id(snap->name, snap->hid);
	return snap->hid;
}
long opt_snap_rev(const struct opt_snap *snap) { return snap->rev; }
const char *opt_snap_trx(const struct opt_snap *snap) { return snap->trx ? snap->trx : ""; }
const char *opt_snap_summary(const struct opt_snap *snap) { return snap->summary ? snap->summary : ""; }
const char *opt_snap_commit(const struct opt_snap *snap) { return snap->commit_hex; }
int64_t opt_snap_time(const struct opt_snap *snap) { return (int64_t)git_commit_time(snap->commit); }

const char *opt_snap_trailer(const struct opt_snap *snap, const char *key)
{
	struct opt_snap *m = (struct opt_snap *)snap;
	json_t *v;
	char *t;

	/* parsed on demand, kept per snapshot: valid until opt_snap_free */
	if (!m->trailers && !(m->trailers = json_object()))
		return NULL;
	v = json_object_get(m->trailers, key);
	if (v)
		return json_is_string(v) ? json_string_value(v) : NULL;
	t = opt_trailer_value(snap->trailer_buf, key);
	json_object_set_new(m->trailers, key, t ? json_string(t) : json_null());
	free(t);
	v = json_object_get(m->trailers, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Find the blob of block id. */
/* The slot of a two-character ID prefix in snap->t2 (IDs are a-z, 2-7). */
static size_t t2_slot(const char *id)
{
	return (size_t)(id[0] >= 'a' ? id[0] - 'a' : id[0] - '2' + 26) * 32 +
	       (size_t)(id[1] >= 'a' ? id[1] - 'a' : id[1] - '2' + 26);
}

static int find_blob(struct opt_snap *snap, const char *id, git_oid *out)
{
	const git_tree_entry *e;
	git_tree *t1 = NULL, *t2 = NULL;
	char c[2] = { 0, 0 };
	int rc = OPT_ENOTFOUND;

	if (!opt_id_valid(id))
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
	if (!snap->blocks)
		return OPT_ENOTFOUND;
	/* the trees of two-character prefixes are kept: a lookup of many
	 * blocks walks each of them many times */
	if (id[1] && snap->t2 && snap->t2[t2_slot(id)]) {
		e = snap->noblobs ? git_tree_entry_byname(snap->t2[t2_slot(id)], id) : idmap_get(&snap->blobs, id);
		if (!e)
			return OPT_ENOTFOUND;
		*out = *git_tree_entry_id(e);
		return 0;
	}
	c[0] = id[0];
	e = git_tree_entry_byname(snap->blocks, c);
	if (!e)
		return OPT_ENOTFOUND;
	if (opt_store__tree_lookup(snap->s, &t1, git_tree_entry_id(e)) < 0)
		return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
	c[0] = id[1];
	e = git_tree_entry_byname(t1, c);
	if (!e)
		goto done;
	if (opt_store__tree_lookup(snap->s, &t2, git_tree_entry_id(e)) < 0) {
		rc = opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
		goto done;
	}
	e = git_tree_entry_byname(t2, id);
	if (e) {
		*out = *git_tree_entry_id(e);
		rc = 0;
	}
	if (id[1] && (snap->t2 || (snap->t2 = calloc(32 * 32, sizeof(*snap->t2))))) {
		size_t i;
		snap->t2[t2_slot(id)] = t2;
		for (i = 0; i < git_tree_entrycount(t2) && !snap->noblobs; i++) {
			const git_tree_entry *te = git_tree_entry_byindex(t2, i);
			const char *n = git_tree_entry_name(te);
			/* (an entry out of place is not found, as by name) */
			if (n[0] == id[0] && n[1] == id[1] && idmap_put(&snap->blobs, n, (void *)te) < 0)
				snap->noblobs = 1;
		}
		t2 = NULL;
	}
done:
	git_tree_free(t2);
	git_tree_free(t1);
	return rc;
}

int opt_snap_block_oid(struct opt_snap *snap, const char *id, char out[41])
{
	git_oid oid;
	int rc = find_blob(snap, id, &oid);

	if (rc < 0)
		return rc;
	git_oid_tostr(out, 41, &oid);
	return 0;
}

int opt_snap_block_raw(struct opt_snap *snap, const char *id, char **buf, size_t *len)
{
	git_oid oid;
	int rc;

	*buf = NULL;
	if ((rc = find_blob(snap, id, &oid)) < 0)
		return rc;
	return opt_store__read(snap->s, &oid, (unsigned char **)buf, len);
}

int opt_snap_block_bytes(struct opt_snap *snap, const char *id, struct opt_bytes *out)
{
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = find_blob(snap, id, &oid)) < 0)
		return rc;
	if ((rc = opt_store__read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	out->data = (const char *)data;
	out->len = len;
	out->release = free;
	out->owner = data;
	return 0;
}

/* A block already parsed: 1 and *out, or 0 and *oid (its blob). */
static int snap_cached(struct opt_snap *snap, const char *id, git_oid *oid, json_t **out)
{
	struct pin *p;
	json_t *b;
	int rc;

	if (!snap->cache) {
		if (!snap->nslots)
			snap->nslots = CACHE_SLOTS;
		snap->cache = calloc(snap->nslots, sizeof(*snap->cache));
		if (!snap->lru)
			snap->lru = json_object();
		if (!snap->cache || !snap->lru)
			return opt_error_oom();
	}
	if ((p = idmap_get(&snap->pinned, id))) {
		*out = json_incref(p->block);
		return 1;
	}
	if ((b = json_object_get(snap->lru, id))) {
		*out = json_incref(b);
		return 1;
	}
	if ((rc = find_blob(snap, id, oid)) < 0)
		return rc;
	if ((b = ocache_get(snap->s, oid))) {
		*out = json_incref(b);
		return 1;
	}
	return 0;
}

/* Parse the bytes data (len; freed here) of block id and cache it. */
static int snap_parse(struct opt_snap *snap, const char *id, unsigned char *data, size_t len, json_t **out)
{
	struct cache_slot *slot;
	json_error_t err;
	json_t *b;

	b = json_loadb((const char *)data, len, 0, &err);
	free(data);
	if (!b)
		return opt_error_set(OPT_EINTEGRITY, "block '%s' of collection '%s' is not valid JSON: %s",
				     id, snap->name, opt_esc(err.text));
	/* inner nodes of trees (a small share of the blocks, read by every
	 * lookup) and headers stay; the rest share the slots, a map with the
	 * oldest entry leaving when it is full */
	if (json_object_get(b, "partitions") || json_object_get(b, "name")) {
		struct pin *p = malloc(sizeof(*p) + strlen(id) + 1);
		if (p) {
			strcpy(p->id, id);
			p->block = json_incref(b);
			p->memo.p = NULL;
			p->memo.free = NULL;
			if (idmap_put(&snap->pinned, p->id, p) < 0) {
				json_decref(b);
				free(p);
			}
		}
		*out = b;
		return 0;
	}
	slot = &snap->cache[snap->ring++ % snap->nslots];
	if (slot->id)
		json_object_del(snap->lru, slot->id);
	free(slot->id);
	slot->id = strdup(id);
	if (slot->id)
		json_object_set(snap->lru, id, b);
	*out = b;
	return 0;
}

static int snap_get(void *ctx, const char *id, json_t **out)
{
	struct opt_snap *snap = ctx;
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = snap_cached(snap, id, &oid, out)) != 0)
		return rc < 0 ? rc : 0;
	if ((rc = opt_store__read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	return snap_parse(snap, id, data, len, out);
}

static struct raw_slot *raw_cache_get(struct opt_snap *snap, const char *id)
{
	return idmap_get(&snap->rmap, id);
}

/* Keep buf (a new reference is taken) as block id's bytes; NULL when it
 * is not kept (too large, out of memory). */
static struct raw_slot *raw_cache_put(struct opt_snap *snap, const char *id, struct sbuf *buf)
{
	size_t size = buf->len;
	struct raw_slot *r;

	if (!snap->rbudget || size > snap->rbudget / 4)
		return NULL;
	while (snap->rcount && snap->rbytes + size > snap->rbudget) {
		struct raw_slot *old = snap->rring[snap->rhead];
		snap->rhead = (snap->rhead + 1) % snap->rcap;
		snap->rcount--;
		snap->rbytes -= old->buf->len;
		idmap_del(&snap->rmap, old->id);
		raw_slot_free(old);
	}
	if (snap->rcount == snap->rcap) {
		size_t cap = snap->rcap ? snap->rcap * 2 : 1024, i;
		struct raw_slot **nr = malloc(cap * sizeof(*nr));
		if (!nr)
			return NULL;
		for (i = 0; i < snap->rcount; i++)
			nr[i] = snap->rring[(snap->rhead + i) % snap->rcap];
		free(snap->rring);
		snap->rring = nr;
		snap->rcap = cap;
		snap->rhead = 0;
	}
	if (!(r = calloc(1, sizeof(*r) + strlen(id) + 1)))
		return NULL;
	strcpy(r->id, id);
	if (idmap_put(&snap->rmap, r->id, r) < 0) {
		free(r);
		return NULL;
	}
	buf->refs++;
	r->buf = buf;
	snap->rring[(snap->rhead + snap->rcount++) % snap->rcap] = r;
	snap->rbytes += size;
	return r;
}

void opt_snap_cache_bytes(struct opt_snap *snap, size_t bytes)
{
	raw_cache_clear(snap);
	snap->rbudget = bytes;
}

/* Hand buf to raw (the reference the caller holds goes with it). */
static void raw_out(struct opt_bytes *raw, struct sbuf *buf, struct raw_slot *r)
{
	raw->data = (const char *)buf->data;
	raw->len = buf->len;
	raw->release = sbuf_release;
	raw->owner = buf;
	raw->memo = r ? &r->memo : NULL;
}

/* Tree leaves come as their stored bytes (readers scan them); the rest as
 * snap_get gives them. */
static int snap_get_raw(void *ctx, const char *id, json_t **out, struct opt_bytes *raw)
{
	static const char leaf[] = "{\"entries\":[";
	struct opt_snap *snap = ctx;
	git_oid oid;
	unsigned char *data;
	size_t len;
	int rc;
	struct raw_slot *r;
	struct sbuf *buf;
	struct pin *p;

	*out = NULL;
	memset(raw, 0, sizeof(*raw));
	/* inner nodes and headers first: a lookup reads several of them */
	if ((p = idmap_get(&snap->pinned, id))) {
		*out = json_incref(p->block);
		raw->memo = &p->memo;
		return 0;
	}
	if ((r = raw_cache_get(snap, id))) {
		r->buf->refs++;
		raw_out(raw, r->buf, r);
		return 0;
	}
	if ((rc = snap_cached(snap, id, &oid, out)) != 0)
		return rc < 0 ? rc : 0;
	if ((rc = opt_store__read(snap->s, &oid, &data, &len)) < 0)
		return rc;
	if (len > sizeof(leaf) - 1 && memcmp(data, leaf, sizeof(leaf) - 1) == 0) {
		if (!(buf = malloc(sizeof(*buf)))) {
			free(data);
			return opt_error_oom();
		}
		buf->refs = 1;
		buf->len = len;
		buf->data = data;
		raw_out(raw, buf, raw_cache_put(snap, id, buf));
		return 0;
	}
	return snap_parse(snap, id, data, len, out);
}


void opt_snap_cache(struct opt_snap *snap, size_t blocks)
{
	size_t i;

	for (i = 0; snap->cache && i < snap->nslots; i++)
		free(snap->cache[i].id);
	free(snap->cache);
	snap->cache = NULL;
	json_decref(snap->lru);
	snap->lru = NULL;
	snap->ring = 0;
	snap->nslots = blocks ? blocks : CACHE_SLOTS;
}

struct opt_source opt_snap_source(struct opt_snap *snap)
{
	struct opt_source src = { snap_get, snap, snap_get_raw };
	return src;
}

int opt_snap_foreach(struct opt_snap *snap, int (*cb)(const char *id, void *arg), void *arg)
{
	size_t i, j, k;
	int rc = 0;

	if (!snap->blocks)
		return 0;
	for (i = 0; i < git_tree_entrycount(snap->blocks) && rc == 0; i++) {
		git_tree *t1 = NULL;
		if (opt_store__tree_lookup(snap->s, &t1, git_tree_entry_id(git_tree_entry_byindex(snap->blocks, i))) < 0)
			return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
		for (j = 0; j < git_tree_entrycount(t1) && rc == 0; j++) {
			git_tree *t2 = NULL;
			if (opt_store__tree_lookup(snap->s, &t2, git_tree_entry_id(git_tree_entry_byindex(t1, j))) < 0) {
				git_tree_free(t1);
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			}
			for (k = 0; k < git_tree_entrycount(t2) && rc == 0; k++)
				rc = cb(git_tree_entry_name(git_tree_entry_byindex(t2, k)), arg);
			git_tree_free(t2);
		}
		git_tree_free(t1);
	}
	return rc;
}

/* Diff two levels-deep trees of blocks (either may be NULL: empty);
 * depth 0 holds blobs. */
static int diff_trees(struct opt_store *s, git_tree *a, git_tree *b, int depth,
		      int (*cb)(const char *id, char change, void *arg), void *arg)
{
	size_t na = a ? git_tree_entrycount(a) : 0, nb = b ? git_tree_entrycount(b) : 0, i = 0, j = 0;
	int rc = 0;

	while (rc == 0 && (i < na || j < nb)) {
		const git_tree_entry *ea = i < na ? git_tree_entry_byindex(a, i) : NULL;
		const git_tree_entry *eb = j < nb ? git_tree_entry_byindex(b, j) : NULL;
		int c = !ea ? 1 : !eb ? -1 : strcmp(git_tree_entry_name(ea), git_tree_entry_name(eb));
		git_tree *ta = NULL, *tb = NULL;

		if (c == 0 && git_oid_equal(git_tree_entry_id(ea), git_tree_entry_id(eb))) {
			i++, j++;
			continue;
		}
		if (depth == 0) {
			rc = cb(c < 0 ? git_tree_entry_name(ea) : git_tree_entry_name(eb), c < 0 ? 'D' : c > 0 ? 'A' : 'M',
				arg);
		} else {
			if (c <= 0 && opt_store__tree_lookup(s, &ta, git_tree_entry_id(ea)) < 0)
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			if (c >= 0 && opt_store__tree_lookup(s, &tb, git_tree_entry_id(eb)) < 0) {
				git_tree_free(ta);
				return opt_git_fail(OPT_EINTEGRITY, "cannot read block tree");
			}
			rc = diff_trees(s, ta, tb, depth - 1, cb, arg);
			git_tree_free(ta);
			git_tree_free(tb);
		}
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
	}
	return rc;
}

int opt_snap_diff(struct opt_snap *a, struct opt_snap *b, int (*cb)(const char *id, char change, void *arg),
		  void *arg)
{
	return diff_trees(a->s, a->blocks, b->blocks, 2, cb, arg);
}

static int count_cb(const char *id, void *arg)
{
	(void)id;
	(*(size_t *)arg)++;
	return 0;
}

int opt_snap_count(struct opt_snap *snap, size_t *n)
{
	*n = 0;
	return opt_snap_foreach(snap, count_cb, n);
}

