#include "btree.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* No valid tree is this deep (every node below the root has at least two
 * children or entries); a deeper walk means a cycle or a corrupt tree. */
#define MAX_DEPTH 64

enum { LEAF, BRANCH };

struct header {
	char root[OPT_ID_MAX + 1];
	int cap;
};

/* A position in the tree while changing it: the IDs from the root down to
 * the leaf, and at each level the child index taken (branches) or the
 * entry index (the leaf). */
struct path {
	struct header h;
	int depth;
	struct {
		char id[OPT_ID_MAX + 1];
		size_t idx;
	} lv[MAX_DEPTH];
};

static int copy_id(char out[OPT_ID_MAX + 1], const json_t *v, const char *from)
{
	const char *s = json_string_value(v);

	if (!s || !opt_id_valid(s))
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' holds an invalid block ID", from);
	memcpy(out, s, json_string_length(v) + 1);
	return 0;
}

static int header_parse(struct header *h, const json_t *hb, const char *header_id)
{
	const json_t *cap = json_object_get(hb, "capacity");
	int rc;

	if (!json_object_get(hb, "rootId"))
		return opt_error_set(OPT_EINTEGRITY, "block '%s' holds no tree (no \"rootId\")", header_id);
	if ((rc = copy_id(h->root, json_object_get(hb, "rootId"), header_id)) < 0)
		return rc;
	if (!json_is_integer(cap) || json_integer_value(cap) < OPT_BTREE_MIN_CAPACITY ||
	    json_integer_value(cap) > OPT_BTREE_MAX_CAPACITY)
		return opt_error_set(OPT_EINTEGRITY, "btree header '%s' has no valid \"capacity\"", header_id);
	h->cap = (int)json_integer_value(cap);
	return 0;
}

/* The kind of node block b (LEAF or BRANCH) after checking the fields the
 * tree code relies on, or OPT_EINTEGRITY.  The hot paths tell the kind by
 * shape (an "entries" array, or "partitions" and "nodes" arrays) without
 * reading the header; strict also checks the type (TL or TB). */
static int node_kind(const json_t *b, const char *id, int strict)
{
	const json_t *e = json_object_get(b, "entries"), *p, *n;
	const char *type;
	int kind;

	if (json_is_array(e)) {
		kind = LEAF;
	} else {
		p = json_object_get(b, "partitions");
		n = json_object_get(b, "nodes");
		if (!json_is_array(p) || !json_is_array(n) || json_array_size(n) != json_array_size(p) + 1)
			return opt_error_set(OPT_EINTEGRITY,
					     "block '%s' is not a btree node: it needs an \"entries\" array, or \"partitions\" and \"nodes\" arrays with one more node than partitions",
					     id);
		kind = BRANCH;
	}
	if (strict) {
		type = opt_block_type(b);
		if (!type || strcmp(type, kind == LEAF ? "TL" : "TB") != 0)
			return opt_error_set(OPT_EINTEGRITY, "btree %s '%s' has type %s, not %s",
					     kind == LEAF ? "leaf" : "branch", id, type ? type : "missing",
					     kind == LEAF ? "TL" : "TB");
	}
	return kind;
}

static const json_t *entry_key(const json_t *entry)
{
	return json_array_get(entry, 0);
}

static int entry_ok(const json_t *entry)
{
	return json_is_array(entry) && json_array_size(entry) == 2 && opt_key_valid(json_array_get(entry, 0));
}

/* The first index of entries whose key is >= key (upper: > key); *found
 * tells whether entries holds key (lower bound only). */
static size_t leaf_search(const json_t *entries, const json_t *key, int upper, int *found)
{
	size_t lo = 0, hi = json_array_size(entries);
	int c;

	if (found)
		*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		c = opt_key_cmp(entry_key(json_array_get(entries, mid)), key);
		if (c < 0 || (upper && c == 0)) {
			lo = mid + 1;
		} else {
			if (c == 0 && found)
				*found = 1;
			hi = mid;
		}
	}
	return lo;
}

/* The child to follow for key: the number of partitions <= key (a key
 * equal to a partition goes right). */
static size_t branch_search(const json_t *parts, const json_t *key)
{
	size_t lo = 0, hi = json_array_size(parts);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (opt_key_cmp(key, json_array_get(parts, mid)) >= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---- changing the tree through the tracker ---- */

/* Apply the splice [entity, index, del, ins] to block id; ins (an array,
 * or NULL after a failed allocation) is stolen. */
static int splice(struct opt_tracker *t, const char *id, const char *entity, size_t index, size_t del,
		  json_t *ins)
{
	json_t *op = NULL;
	int rc;

	if (!ins || !(op = json_array()) || json_array_append_new(op, json_string(entity)) < 0 ||
	    json_array_append_new(op, json_integer((json_int_t)index)) < 0 ||
	    json_array_append_new(op, json_integer((json_int_t)del)) < 0 ||
	    json_array_append(op, ins) < 0) {
		rc = opt_error_oom();
		goto done;
	}
	rc = opt_tracker_update(t, id, op);
done:
	json_decref(op);
	json_decref(ins);
	return rc;
}

/* A one-element array holding v (a new reference is taken). */
static json_t *one(const json_t *v)
{
	json_t *a = json_array();

	if (a && json_array_append(a, (json_t *)v) < 0) {
		json_decref(a);
		return NULL;
	}
	return a;
}

/* one() of a new string that is then released */
static json_t *one_str(const char *s)
{
	json_t *v = json_string(s), *a = v ? one(v) : NULL;

	json_decref(v);
	return a;
}

/* [[key, value]] (new references to both are taken), or NULL. */
static json_t *pair(const json_t *key, const json_t *value)
{
	json_t *e = json_array(), *a = json_array();

	if (!e || !a || json_array_append(e, (json_t *)key) < 0 || json_array_append(e, (json_t *)value) < 0 ||
	    json_array_append(a, e) < 0) {
		json_decref(a);
		a = NULL;
	}
	json_decref(e);
	return a;
}

static int remove_at(struct opt_tracker *t, const char *id, const char *entity, size_t index, size_t del)
{
	return splice(t, id, entity, index, del, json_array());
}

static int set_root(struct opt_tracker *t, const char *header_id, const char *root)
{
	json_t *op = json_pack("[s,i,i,s]", "rootId", 0, 0, root);
	int rc;

	if (!op)
		return opt_error_oom();
	rc = opt_tracker_update(t, header_id, op);
	json_decref(op);
	return rc;
}

/* Get node id from the tracker: 0 and *b (borrowed) and *kind. */
static int tget(struct opt_tracker *t, const char *id, const json_t **b, int *kind)
{
	int rc = opt_tracker_get(t, id, b);

	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is missing", id);
	if (rc < 0)
		return rc;
	if ((rc = node_kind(*b, id, 0)) < 0)
		return rc;
	if (kind)
		*kind = rc;
	return 0;
}

/* Walk from the root to the leaf where key belongs, filling p; *leaf is
 * that leaf (borrowed) and *found tells whether it holds key (at
 * p->lv[depth-1].idx).  When hi is not NULL, *hi gets the leaf's upper
 * bound (a new reference; NULL for the last leaf): the leaf holds keys
 * below it. */
static int descend(struct path *p, struct opt_tracker *t, const char *header_id, const json_t *key,
		   const json_t **leaf, int *found, json_t **hi)
{
	const json_t *b, *parts, *bound = NULL;
	int rc, kind, d;

	rc = opt_tracker_get(t, header_id, &b);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no btree header block '%s'", header_id);
	if (rc < 0)
		return rc;
	if ((rc = header_parse(&p->h, b, header_id)) < 0)
		return rc;
	strcpy(p->lv[0].id, p->h.root);
	for (d = 0;; d++) {
		if ((rc = tget(t, p->lv[d].id, &b, &kind)) < 0)
			return rc;
		if (kind == LEAF) {
			p->lv[d].idx = leaf_search(json_object_get(b, "entries"), key, 0, found);
			p->depth = d + 1;
			*leaf = b;
			if (hi)
				*hi = bound ? json_incref((json_t *)bound) : NULL;
			return 0;
		}
		parts = json_object_get(b, "partitions");
		p->lv[d].idx = branch_search(parts, key);
		if (p->lv[d].idx < json_array_size(parts))
			bound = json_array_get(parts, p->lv[d].idx);
		if (d + 1 == MAX_DEPTH)
			return opt_error_set(OPT_EINTEGRITY, "btree under '%s' is deeper than %d levels",
					     header_id, MAX_DEPTH);
		if ((rc = copy_id(p->lv[d + 1].id, json_array_get(json_object_get(b, "nodes"), p->lv[d].idx),
				  p->lv[d].id)) < 0)
			return rc;
	}
}

/* Insert a new node block (stolen) and copy its ID to id. */
static int insert_node(struct opt_tracker *t, json_t *nb, char id[OPT_ID_MAX + 1])
{
	strcpy(id, opt_block_id(nb));
	return opt_tracker_insert_new(t, nb);
}

/* Elements [from, to) of array a in a new array, or NULL.  The elements
 * are shared, not copied: values in blocks are never changed in place. */
static json_t *slice(const json_t *a, size_t from, size_t to)
{
	json_t *s = json_array();
	size_t i;

	for (i = from; s && i < to; i++)
		if (json_array_append(s, json_array_get(a, i)) < 0) {
			json_decref(s);
			s = NULL;
		}
	return s;
}

/* Set two fields of block b, consuming v1 and v2 (either may be NULL after
 * a failed allocation: then -1). */
static int set2(json_t *b, const char *k1, json_t *v1, const char *k2, json_t *v2)
{
	int r1 = json_object_set_new(b, k1, v1);
	int r2 = json_object_set_new(b, k2, v2);

	return r1 < 0 || r2 < 0 ? -1 : 0;
}

static int grow_up(struct path *p, struct opt_tracker *t, const char *header_id, int d, json_t *sep,
		   char rid[OPT_ID_MAX + 1], const char *coll);

/* The leaf at the bottom of p holds capacity + 1 entries, the new one at
 * p's leaf index: split it, and every ancestor that overflows in turn.
 * The halves are the original's: a full leaf of C entries splits at
 * mid = (C+1)/2, a full branch of C children at mid = C/2, and the new
 * entry (or child) joins the half where it falls; the right half's first
 * key (for a branch, the partition between the halves) goes up. */
static int split(struct path *p, struct opt_tracker *t, const char *header_id)
{
	const json_t *b, *a;
	json_t *nb = NULL, *sep = NULL, *arr;
	char rid[OPT_ID_MAX + 1], *coll = NULL;
	size_t n, m;
	int d = p->depth - 1, rc;

	if ((rc = tget(t, p->lv[d].id, &b, NULL)) < 0)
		goto done;
	a = json_object_get(b, "entries");
	n = json_array_size(a);
	m = (size_t)(p->h.cap + 1) / 2;
	if (p->lv[d].idx < m)
		m++;
	coll = strdup(opt_block_collection(b) ? opt_block_collection(b) : "");
	if (!coll || opt_block_new(&nb, NULL, "TL", coll) < 0 ||
	    json_object_set_new(nb, "entries", (arr = slice(a, m, n))) < 0) {
		rc = opt_error_oom();
		goto done;
	}
	sep = json_incref(json_array_get(json_array_get(arr, 0), 0));
	rc = insert_node(t, nb, rid);
	nb = NULL;
	if (rc < 0 || (rc = remove_at(t, p->lv[d].id, "entries", m, n - m)) < 0)
		goto done;
	rc = grow_up(p, t, header_id, d, sep, rid, coll);
	sep = NULL;
done:
	json_decref(nb);
	json_decref(sep);
	free(coll);
	return rc;
}

/* Node rid (a new sibling right of the node at level d of p, its first key
 * sep: taken) goes into the parent, and every ancestor that overflows
 * splits in turn; at the root, a new root above it. */
static int grow_up(struct path *p, struct opt_tracker *t, const char *header_id, int d, json_t *sep,
		   char rid[OPT_ID_MAX + 1], const char *coll)
{
	const json_t *b, *a, *parts;
	json_t *nb = NULL;
	size_t n, m;
	int rc = 0;

	for (;;) {
		const char *pid;
		size_t ci;

		if (d == 0) {
			/* the root split: a new root above it */
			if (opt_block_new(&nb, NULL, "TB", coll) < 0 ||
			    set2(nb, "partitions", json_pack("[O]", sep),
				 "nodes", json_pack("[s,s]", p->lv[0].id, rid)) < 0) {
				rc = opt_error_oom();
				goto done;
			}
			rc = insert_node(t, nb, rid);
			nb = NULL;
			if (rc == 0)
				rc = set_root(t, header_id, rid);
			goto done;
		}
		d--;
		pid = p->lv[d].id;
		ci = p->lv[d].idx;
		if ((rc = splice(t, pid, "partitions", ci, 0, one(sep))) < 0 ||
		    (rc = splice(t, pid, "nodes", ci + 1, 0, one_str(rid))) < 0 ||
		    (rc = tget(t, pid, &b, NULL)) < 0)
			goto done;
		a = json_object_get(b, "nodes");
		parts = json_object_get(b, "partitions");
		n = json_array_size(a);
		if (n <= (size_t)p->h.cap)
			goto done;
		/* split the branch: the left keeps nodes [0, m) and partitions
		 * [0, m-1); partitions[m-1] goes up; the right takes the rest */
		m = (size_t)p->h.cap / 2;
		if (ci < m)
			m++;
		if (opt_block_new(&nb, NULL, "TB", coll) < 0 ||
		    set2(nb, "partitions", slice(parts, m, n - 1), "nodes", slice(a, m, n)) < 0) {
			rc = opt_error_oom();
			goto done;
		}
		json_decref(sep);
		sep = json_incref(json_array_get(parts, m - 1));
		rc = insert_node(t, nb, rid);
		nb = NULL;
		if (rc < 0 || (rc = remove_at(t, pid, "partitions", m - 1, n - m)) < 0 ||
		    (rc = remove_at(t, pid, "nodes", m, n - m)) < 0)
			goto done;
	}
done:
	json_decref(nb);
	json_decref(sep);
	return rc;
}

/* [first, rest...]: a new array of first followed by the elements of rest */
static json_t *prepend(const json_t *first, const json_t *rest)
{
	json_t *a = one(first);

	if (a && json_array_extend(a, (json_t *)rest) < 0) {
		json_decref(a);
		return NULL;
	}
	return a;
}

/* ---- rebalancing after a delete (in the shape of sqlite's balance():
 * rebalance dispatches, each case is a function of its own) ---- */

/* A node at one level of a path that has too few entries (a leaf) or
 * children (a branch), with its parent and the siblings beside it. */
struct family {
	const char *id, *pid;   /* the node, its parent */
	const json_t *b, *pb;   /* (borrowed from the tracker) */
	size_t pi;              /* the node's index among the parent's nodes */
	size_t n, min;          /* its entries or children, the least allowed */
	int has_r, has_l;       /* a sibling to the right, to the left */
	char rid[OPT_ID_MAX + 1], lid[OPT_ID_MAX + 1];
	size_t rn, ln;          /* the siblings' entries or children */
};

/* Read the node at level d of p (not the root) and what (its "entries"
 * or "nodes") into f: 1 when it holds enough (nothing to do), 0 when it
 * holds too few (then its parent and siblings are read too). */
static int family_read(const struct path *p, struct opt_tracker *t, int d, const char *what, struct family *f)
{
	const json_t *sb, *nodes;
	size_t np;
	int rc;

	f->min = (size_t)p->h.cap / 2;
	f->id = p->lv[d].id;
	f->pid = p->lv[d - 1].id;
	f->pi = p->lv[d - 1].idx;
	if ((rc = tget(t, f->id, &f->b, NULL)) < 0)
		return rc;
	f->n = json_array_size(json_object_get(f->b, what));
	if (f->n >= f->min)
		return 1;
	if ((rc = tget(t, f->pid, &f->pb, NULL)) < 0)
		return rc;
	nodes = json_object_get(f->pb, "nodes");
	np = json_array_size(nodes);
	f->has_r = f->pi + 1 < np;
	f->has_l = f->pi > 0;
	f->rn = f->ln = 0;
	if ((f->has_r && (rc = copy_id(f->rid, json_array_get(nodes, f->pi + 1), f->pid)) < 0) ||
	    (f->has_l && (rc = copy_id(f->lid, json_array_get(nodes, f->pi - 1), f->pid)) < 0))
		return rc;
	if (f->has_r) {
		if ((rc = tget(t, f->rid, &sb, NULL)) < 0)
			return rc;
		f->rn = json_array_size(json_object_get(sb, what));
	}
	if (f->has_l) {
		if ((rc = tget(t, f->lid, &sb, NULL)) < 0)
			return rc;
		f->ln = json_array_size(json_object_get(sb, what));
	}
	return 0;
}

static int single_child(const char *pid)
{
	return opt_error_set(OPT_EINTEGRITY, "btree branch '%s' has a single child", pid);
}

/* A leaf: move the right sibling's first entry to its end. */
static int leaf_borrow_right(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb;
	json_t *hold = NULL, *hold2 = NULL;
	int rc;

	tget(t, f->rid, &sb, NULL);
	hold = json_incref(json_array_get(json_object_get(sb, "entries"), 0));
	if ((rc = remove_at(t, f->rid, "entries", 0, 1)) < 0 ||
	    (rc = splice(t, f->id, "entries", f->n, 0, one(hold))) < 0 ||
	    (rc = tget(t, f->rid, &sb, NULL)) < 0)
		goto done;
	hold2 = json_incref((json_t *)entry_key(json_array_get(json_object_get(sb, "entries"), 0)));
	rc = splice(t, f->pid, "partitions", f->pi, 1, one(hold2));
done:
	json_decref(hold);
	json_decref(hold2);
	return rc;
}

/* A leaf: move the left sibling's last entry to its front. */
static int leaf_borrow_left(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb;
	json_t *hold;
	int rc;

	tget(t, f->lid, &sb, NULL);
	hold = json_incref(json_array_get(json_object_get(sb, "entries"), f->ln - 1));
	if ((rc = remove_at(t, f->lid, "entries", f->ln - 1, 1)) == 0 &&
	    (rc = splice(t, f->id, "entries", 0, 0, one(hold))) == 0)
		rc = splice(t, f->pid, "partitions", f->pi - 1, 1, one(entry_key(hold)));
	json_decref(hold);
	return rc;
}

/* A leaf: take in the right sibling, or go into the left one; the parent
 * loses a child. */
static int leaf_merge(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb;
	int rc;

	if (f->has_r) {
		tget(t, f->rid, &sb, NULL);
		if ((rc = splice(t, f->id, "entries", f->n, 0, json_incref(json_object_get(sb, "entries")))) < 0 ||
		    (rc = remove_at(t, f->pid, "partitions", f->pi, 1)) < 0 ||
		    (rc = remove_at(t, f->pid, "nodes", f->pi + 1, 1)) < 0)
			return rc;
		return opt_tracker_delete(t, f->rid);
	}
	if (f->has_l) {
		if ((rc = splice(t, f->lid, "entries", f->ln, 0, json_incref(json_object_get(f->b, "entries")))) < 0 ||
		    (rc = remove_at(t, f->pid, "partitions", f->pi - 1, 1)) < 0 ||
		    (rc = remove_at(t, f->pid, "nodes", f->pi, 1)) < 0)
			return rc;
		return opt_tracker_delete(t, f->id);
	}
	return single_child(f->pid);
}

/* The root (a branch) with one child left: the child becomes the root. */
static int root_collapse(struct opt_tracker *t, const char *header_id, const char *id)
{
	const json_t *b;
	char rid[OPT_ID_MAX + 1];
	int rc;

	if ((rc = tget(t, id, &b, NULL)) < 0)
		return rc;
	if (json_array_size(json_object_get(b, "nodes")) != 1)
		return 0;
	if ((rc = copy_id(rid, json_array_get(json_object_get(b, "nodes"), 0), id)) < 0 ||
	    (rc = set_root(t, header_id, rid)) < 0)
		return rc;
	return opt_tracker_delete(t, id);
}

/* A branch: rotate through the parent: its separator comes down to the
 * branch's end, the right sibling's first partition goes up. */
static int branch_borrow_right(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb;
	json_t *hold, *hold2;
	int rc;

	tget(t, f->rid, &sb, NULL);
	hold = json_incref(json_array_get(json_object_get(f->pb, "partitions"), f->pi));
	hold2 = json_incref(json_array_get(json_object_get(sb, "partitions"), 0));
	if ((rc = splice(t, f->id, "partitions", f->n - 1, 0, one(hold))) == 0 &&
	    (rc = splice(t, f->id, "nodes", f->n, 0, one(json_array_get(json_object_get(sb, "nodes"), 0)))) == 0 &&
	    (rc = remove_at(t, f->rid, "partitions", 0, 1)) == 0 && (rc = remove_at(t, f->rid, "nodes", 0, 1)) == 0)
		rc = splice(t, f->pid, "partitions", f->pi, 1, one(hold2));
	json_decref(hold);
	json_decref(hold2);
	return rc;
}

/* A branch: the mirror of branch_borrow_right, from the left sibling. */
static int branch_borrow_left(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb;
	json_t *hold, *hold2;
	int rc;

	tget(t, f->lid, &sb, NULL);
	hold = json_incref(json_array_get(json_object_get(f->pb, "partitions"), f->pi - 1));
	hold2 = json_incref(json_array_get(json_object_get(sb, "partitions"), f->ln - 2));
	if ((rc = splice(t, f->id, "partitions", 0, 0, one(hold))) == 0 &&
	    (rc = splice(t, f->id, "nodes", 0, 0, one(json_array_get(json_object_get(sb, "nodes"), f->ln - 1)))) == 0 &&
	    (rc = remove_at(t, f->lid, "partitions", f->ln - 2, 1)) == 0 &&
	    (rc = remove_at(t, f->lid, "nodes", f->ln - 1, 1)) == 0)
		rc = splice(t, f->pid, "partitions", f->pi - 1, 1, one(hold2));
	json_decref(hold);
	json_decref(hold2);
	return rc;
}

/* A branch: merge the right sibling into it, or it into the left one,
 * pulling the parent's separator down between the partition lists; the
 * parent loses a child. */
static int branch_merge(struct opt_tracker *t, const struct family *f)
{
	const json_t *sb, *parts = json_object_get(f->pb, "partitions");
	json_t *hold = NULL;
	int rc;

	if (f->has_r) {
		tget(t, f->rid, &sb, NULL);
		hold = json_incref(json_array_get(parts, f->pi));
		if ((rc = splice(t, f->id, "partitions", f->n - 1, 0, prepend(hold, json_object_get(sb, "partitions")))) == 0 &&
		    (rc = splice(t, f->id, "nodes", f->n, 0, json_incref(json_object_get(sb, "nodes")))) == 0 &&
		    (rc = remove_at(t, f->pid, "partitions", f->pi, 1)) == 0 &&
		    (rc = remove_at(t, f->pid, "nodes", f->pi + 1, 1)) == 0)
			rc = opt_tracker_delete(t, f->rid);
	} else if (f->has_l) {
		tget(t, f->lid, &sb, NULL);
		hold = json_incref(json_array_get(parts, f->pi - 1));
		if ((rc = splice(t, f->lid, "partitions", f->ln - 1, 0, prepend(hold, json_object_get(f->b, "partitions")))) == 0 &&
		    (rc = splice(t, f->lid, "nodes", f->ln, 0, json_incref(json_object_get(f->b, "nodes")))) == 0 &&
		    (rc = remove_at(t, f->pid, "partitions", f->pi - 1, 1)) == 0 &&
		    (rc = remove_at(t, f->pid, "nodes", f->pi, 1)) == 0)
			rc = opt_tracker_delete(t, f->id);
	} else {
		rc = single_child(f->pid);
	}
	json_decref(hold);
	return rc;
}

/* The branch at level d of p after a child of it went: the root
 * collapses when one child is left; another branch with too few children
 * borrows from a sibling or merges with one, and then *up is set: its
 * parent lost a child, the level above is next. */
static int branch_rebalance(struct path *p, struct opt_tracker *t, const char *header_id, int d, int *up)
{
	struct family f;
	int rc;

	*up = 0;
	if (d == 0)
		return root_collapse(t, header_id, p->lv[0].id);
	if ((rc = family_read(p, t, d, "nodes", &f)) != 0)
		return rc < 0 ? rc : 0;
	if (f.has_r && f.rn > f.min)
		return branch_borrow_right(t, &f);
	if (f.has_l && f.ln > f.min)
		return branch_borrow_left(t, &f);
	if ((rc = branch_merge(t, &f)) == 0)
		*up = 1;
	return rc;
}

/* The leaf at the bottom of p (not the root) has one entry too few:
 * borrow from or merge with a sibling, then fix the branches above. */
static int rebalance(struct path *p, struct opt_tracker *t, const char *header_id)
{
	struct family f;
	int d = p->depth - 1, rc, up;

	if ((rc = family_read(p, t, d, "entries", &f)) != 0)
		return rc < 0 ? rc : 0;
	if (f.has_r && f.rn > f.min)
		return leaf_borrow_right(t, &f);
	if (f.has_l && f.ln > f.min)
		return leaf_borrow_left(t, &f);
	if ((rc = leaf_merge(t, &f)) < 0)
		return rc;
	/* the branches above, while one merges */
	do
		rc = branch_rebalance(p, t, header_id, --d, &up);
	while (rc == 0 && up);
	return rc;
}

int opt_btree_create(struct opt_tracker *t, const char *header_id, const char *collection, int capacity)
{
	const json_t *hb;
	json_t *leaf = NULL, *op = NULL;
	char rid[OPT_ID_MAX + 1];
	size_t tok;
	int rc;

	if (capacity < OPT_BTREE_MIN_CAPACITY || capacity > OPT_BTREE_MAX_CAPACITY)
		return opt_error_set(OPT_EINVAL, "btree capacity %d out of range (%d-%d)", capacity,
				     OPT_BTREE_MIN_CAPACITY, OPT_BTREE_MAX_CAPACITY);
	if (!collection)
		return opt_error_set(OPT_EINVAL, "btree needs a collection name");
	rc = opt_tracker_get(t, header_id, &hb);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no btree header block '%s'", header_id);
	if (rc < 0)
		return rc;
	if (json_object_get(hb, "rootId") && !json_is_null(json_object_get(hb, "rootId")))
		return opt_error_set(OPT_EINVAL, "block '%s' already holds a tree", header_id);
	if ((rc = opt_block_new(&leaf, NULL, "TL", collection)) < 0)
		return rc;
	if (json_object_set_new(leaf, "entries", json_array()) < 0) {
		json_decref(leaf);
		return opt_error_oom();
	}
	opt_tracker_mark(t, &tok);
	rc = insert_node(t, leaf, rid);
	if (rc < 0 || (rc = set_root(t, header_id, rid)) < 0)
		goto done;
	op = json_pack("[s,i,i,i]", "capacity", 0, 0, capacity);
	rc = op ? opt_tracker_update(t, header_id, op) : opt_error_oom();
done:
	if (rc < 0)
		opt_tracker_rollback(t, tok);
	else
		opt_tracker_release(t, tok);
	json_decref(op);
	return rc;
}

int opt_btree_put(struct opt_tracker *t, const char *header_id, const json_t *key, const json_t *value,
		  int *replaced)
{
	struct path p;
	const json_t *leaf;
	json_t *ins;
	size_t n, i, tok;
	int rc, found;

	if (replaced)
		*replaced = 0;
	if (!opt_key_valid(key))
		return opt_error_set(OPT_EINVAL, "invalid btree key: keys are numbers, strings or arrays of keys");
	if (!value)
		return opt_error_set(OPT_EINVAL, "btree value missing");
	if ((rc = descend(&p, t, header_id, key, &leaf, &found, NULL)) < 0)
		return rc;
	i = p.lv[p.depth - 1].idx;
	n = json_array_size(json_object_get(leaf, "entries"));
	ins = pair(key, value);
	if (!ins)
		return opt_error_oom();
	if (found || n < (size_t)p.h.cap) {
		rc = splice(t, p.lv[p.depth - 1].id, "entries", i, found ? 1 : 0, ins);
		if (rc == 0 && replaced)
			*replaced = found;
		return rc;
	}
	/* the leaf overflows: insert, then split (all or nothing) */
	opt_tracker_mark(t, &tok);
	rc = splice(t, p.lv[p.depth - 1].id, "entries", i, 0, ins);
	if (rc == 0)
		rc = split(&p, t, header_id);
	if (rc < 0)
		opt_tracker_rollback(t, tok);
	else
		opt_tracker_release(t, tok);
	return rc;
}

struct kv {
	const json_t *key, *value;
	size_t i;
	json_int_t iv;  /* the key's value when it is an integer */
	const char *s;  /* its bytes when it is a string (slen of them) */
	size_t slen;
	int is_int;
};

static int kv_cmp(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	int c;

	if (x->is_int && y->is_int) {
		c = x->iv < y->iv ? -1 : x->iv > y->iv;
	} else if (x->s && y->s) {
		c = memcmp(x->s, y->s, x->slen < y->slen ? x->slen : y->slen);
		c = c ? c : (x->slen > y->slen) - (x->slen < y->slen);
	} else {
		c = opt_key_cmp(x->key, y->key);
	}
	if (c)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

int opt_btree_put_many(struct opt_tracker *t, const char *header_id, const json_t *const *keys,
		       const json_t *const *values, size_t n)
{
	struct kv *kv = NULL;
	struct path p;
	const json_t *leaf;
	json_t *hi = NULL, *ins;
	size_t i, j, len, tok;
	int rc = 0, found, have = 0;

	for (i = 0; i < n; i++) {
		if (!opt_key_valid(keys[i]))
			return opt_error_set(OPT_EINVAL, "invalid btree key (entry %zu): keys are numbers, strings or arrays of keys", i);
		if (!values[i])
			return opt_error_set(OPT_EINVAL, "btree value missing (entry %zu)", i);
	}
	if (n == 0)
		return 0;
	if (!(kv = malloc(n * sizeof(*kv))))
		return opt_error_oom();
	for (i = 0; i < n; i++) {
		kv[i].key = keys[i];
		kv[i].value = values[i];
		kv[i].i = i;
		kv[i].is_int = json_is_integer(keys[i]);
		kv[i].iv = kv[i].is_int ? json_integer_value(keys[i]) : 0;
		kv[i].s = json_is_string(keys[i]) ? json_string_value(keys[i]) : NULL;
		kv[i].slen = kv[i].s ? json_string_length(keys[i]) : 0;
	}
	qsort(kv, n, sizeof(*kv), kv_cmp);
	for (j = 0; j < n; j++) {
		/* keys ascend: while they stay below the leaf's upper bound
		 * they belong to the same leaf, and the path holds */
		if (have && (!hi || opt_key_cmp(kv[j].key, hi) < 0)) {
			if ((rc = tget(t, p.lv[p.depth - 1].id, &leaf, NULL)) < 0)
				goto done;
			p.lv[p.depth - 1].idx = leaf_search(json_object_get(leaf, "entries"), kv[j].key, 0, &found);
		} else {
			json_decref(hi);
			hi = NULL;
			if ((rc = descend(&p, t, header_id, kv[j].key, &leaf, &found, &hi)) < 0)
				goto done;
			have = 1;
		}
		i = p.lv[p.depth - 1].idx;
		len = json_array_size(json_object_get(leaf, "entries"));
		if (!(ins = pair(kv[j].key, kv[j].value))) {
			rc = opt_error_oom();
			goto done;
		}
		if (found || len < (size_t)p.h.cap) {
			if ((rc = splice(t, p.lv[p.depth - 1].id, "entries", i, found ? 1 : 0, ins)) < 0)
				goto done;
			continue;
		}
		opt_tracker_mark(t, &tok);
		rc = splice(t, p.lv[p.depth - 1].id, "entries", i, 0, ins);
		if (rc == 0)
			rc = split(&p, t, header_id);
		if (rc < 0) {
			opt_tracker_rollback(t, tok);
			goto done;
		}
		opt_tracker_release(t, tok);
		have = 0;
	}
done:
	json_decref(hi);
	free(kv);
	return rc;
}

/* ---- a bulk load of canonical text into an empty tree ---- */

struct lk {
	const char *k, *v;
	size_t kl, vl, i;
	long long iv;
	json_t *j;   /* the parsed key, when keys are not all plain */
	int cls;     /* 0 an integer, 1 a string without escapes, 2 other */
};

static int lk_cmp(const void *a, const void *b)
{
	const struct lk *x = a, *y = b;
	int c;

	if (x->cls == 0 && y->cls == 0) {
		c = x->iv < y->iv ? -1 : x->iv > y->iv;
	} else if (x->cls == 1 && y->cls == 1) {
		size_t la = x->kl - 2, lb = y->kl - 2;
		c = memcmp(x->k + 1, y->k + 1, la < lb ? la : lb);
		c = c ? c : (la > lb) - (la < lb);
	} else if (x->cls < 2 && y->cls < 2) {
		c = x->cls < y->cls ? -1 : 1;  /* numbers before strings */
	} else {
		c = opt_key_cmp(x->j, y->j);
	}
	if (c)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Plain keys (integers and strings without escapes) sort by a 16-byte
 * prefix, the rest of the text only on a tie: qsort moves 24 bytes, not
 * a whole struct lk, and rarely reads the keys' text. */
struct sk {
	uint64_t p1, p2;
	uint32_t i, cls;
};

static const struct lk *sk_base;

static int sk_cmp(const void *a, const void *b)
{
	const struct sk *x = a, *y = b;

	if (x->cls != y->cls)
		return x->cls < y->cls ? -1 : 1;
	if (x->p1 != y->p1)
		return x->p1 < y->p1 ? -1 : 1;
	if (x->p2 != y->p2)
		return x->p2 < y->p2 ? -1 : 1;
	if (x->cls == 1) {
		const struct lk *kx = &sk_base[x->i], *ky = &sk_base[y->i];
		size_t la = kx->kl - 2, lb = ky->kl - 2;
		if (la > 16 && lb > 16) {
			int c = memcmp(kx->k + 17, ky->k + 17, (la < lb ? la : lb) - 16);
			if (c)
				return c < 0 ? -1 : 1;
		}
		if (la != lb)
			return la < lb ? -1 : 1;
	}
	return x->i < y->i ? -1 : x->i > y->i;
}

static uint64_t be_prefix(const char *s, size_t n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | (i < n ? (unsigned char)s[i] : 0);
	return v;
}

static void sk_make(struct sk *k, const struct lk *e, uint32_t i)
{
	k->i = i;
	k->cls = (uint32_t)e->cls;
	if (e->cls == 0) {
		k->p1 = (uint64_t)e->iv ^ (1ULL << 63);
		k->p2 = 0;
	} else {
		/* no NUL in such a string: padding with zeros keeps the order */
		size_t n = e->kl - 2;
		k->p1 = be_prefix(e->k + 1, n);
		k->p2 = n > 8 ? be_prefix(e->k + 9, n - 8) : 0;
	}
}

static int lk_classify(struct lk *e)
{
	const char *k = e->k;
	size_t n = e->kl, d = k[0] == '-' ? 1 : 0, i;

	if (n >= 2 && k[0] == '"' && k[n - 1] == '"' && !memchr(k + 1, '\\', n - 2))
		return 1;
	if (n > d && n - d <= 18) {
		for (i = d; i < n && k[i] >= '0' && k[i] <= '9'; i++)
			;
		if (i == n && !(k[d] == '0' && n - d > 1)) {
			/* (not strtoll: the text is not NUL-terminated) */
			long long v = 0;
			for (i = d; i < n; i++)
				v = v * 10 + (k[i] - '0');
			e->iv = d ? -v : v;
			return 0;
		}
	}
	return 2;
}

/* The sizes of the nodes of one level holding m items: full ones (cap),
 * the last two evened out when the last would hold fewer than cap/2. */
static size_t level_size(size_t m, size_t cap, size_t i, size_t nodes)
{
	size_t r;

	if (nodes == 1)
		return m;
	r = m - (nodes - 1) * cap;
	if (r >= cap / 2)
		return i + 1 < nodes ? cap : r;
	if (i + 2 < nodes)
		return cap;
	return i + 2 == nodes ? (cap + r) - (cap + r) / 2 : (cap + r) / 2;
}

/* The text of one node block as it is built. */
struct tbuf {
	char *p;
	size_t len, cap;
};

static int tb_put(struct tbuf *b, const char *s, size_t n)
{
	int rc;

	/* (4 KiB at first: a node's text is rarely less) */
	if ((rc = OPT_ALLOC_GROW(b->p, b->len + n > 4096 ? b->len + n : 4096, b->cap)) < 0)
		return rc;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

static int tb_puts(struct tbuf *b, const char *s)
{
	return tb_put(b, s, strlen(s));
}

/* A bulk load under way. */
struct load {
	struct opt_tracker *t;
	size_t cap;                     /* the tree's capacity */
	char *ccoll;                    /* its collection, as JSON text */
	size_t cl;
	struct lk *e;                   /* the entries, sorted, distinct */
	size_t n, m;                    /* (n as given, m distinct) */
	int others;                     /* keys not all plain: e[].j parsed */
	char (*ids)[OPT_ID_MAX + 1];    /* the nodes of the level made last */
	size_t *first;                  /* index in e of each one's first key */
	size_t nodes;
};

/* The tree at header_id, which must be empty (else 1): *h its header, and
 * its collection as canonical JSON text in L. */
static int load_target(struct load *L, const char *header_id, struct header *h)
{
	const json_t *hb, *root;
	json_t *c;
	int rc, kind;

	rc = opt_tracker_get(L->t, header_id, &hb);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no btree header block '%s'", header_id);
	if (rc < 0)
		return rc;
	if ((rc = header_parse(h, hb, header_id)) < 0)
		return rc;
	if ((rc = tget(L->t, h->root, &root, &kind)) < 0)
		return rc;
	if (kind != LEAF || json_array_size(json_object_get(root, "entries")) != 0)
		return 1;
	if (L->n == 0)
		return 0;
	c = json_string(opt_block_collection(root) ? opt_block_collection(root) : "");
	rc = c ? opt_json_canon(&L->ccoll, &L->cl, c) : opt_error_oom();
	json_decref(c);
	return rc;
}

/* The entries of kv into L->e, each key classified (parsed and checked
 * when not all are plain). */
static int load_keys(struct load *L, const struct opt_kv_text *kv)
{
	size_t i;
	int rc;

	OPT_CHECK_ALLOC(L->e = calloc(L->n, sizeof(*L->e)));
	for (i = 0; i < L->n; i++) {
		struct lk *e = &L->e[i];
		e->k = kv[i].k;
		e->kl = kv[i].kl;
		e->v = kv[i].v;
		e->vl = kv[i].vl;
		e->i = i;
		if (kv[i].kl == 0 || kv[i].vl == 0)
			return opt_error_set(OPT_EINVAL, "btree entry %zu has an empty key or value", i);
		if ((e->cls = lk_classify(e)) == 2)
			L->others = 1;
	}
	if (!L->others)
		return 0;
	/* keys that are not plain integers or strings: compare parsed */
	for (i = 0; i < L->n; i++) {
		if ((rc = opt_json_parse(&L->e[i].j, L->e[i].k, L->e[i].kl)) < 0)
			return rc;
		if (!opt_key_valid(L->e[i].j))
			return opt_error_set(OPT_EINVAL, "invalid btree key (entry %zu): keys are numbers, strings or arrays of keys", i);
		L->e[i].cls = 2;
	}
	return 0;
}

/* Sort L->e by key, of equal keys in the order given. */
static int load_sort(struct load *L)
{
	struct sk *k;
	struct lk *sorted;
	size_t i, n = L->n;

	if (L->others || n > UINT32_MAX) {
		qsort(L->e, n, sizeof(*L->e), lk_cmp);
		return 0;
	}
	k = malloc(n * sizeof(*k));
	sorted = malloc(n * sizeof(*sorted));
	if (!k || !sorted) {
		free(k);
		free(sorted);
		return opt_error_oom();
	}
	for (i = 0; i < n; i++)
		sk_make(&k[i], &L->e[i], (uint32_t)i);
	sk_base = L->e;
	qsort(k, n, sizeof(*k), sk_cmp);
	for (i = 0; i < n; i++)
		sorted[i] = L->e[k[i].i];
	free(k);
	free(L->e);
	L->e = sorted;
	return 0;
}

/* Of equal keys the last put wins (its key and its value): L->e[0, m). */
static void load_dedup(struct load *L)
{
	struct lk *e = L->e;
	size_t i, m;

	for (i = 0, m = 0; i < L->n; i++) {
		if (i + 1 < L->n) {
			int c = L->others ? opt_key_cmp(e[i].j, e[i + 1].j) :
				(e[i].cls == e[i + 1].cls && e[i].kl == e[i + 1].kl &&
				 (e[i].cls == 0 ? e[i].iv == e[i + 1].iv : memcmp(e[i].k, e[i + 1].k, e[i].kl) == 0)) ? 0 : 1;
			if (c == 0)
				continue;
		}
		if (m != i) {
			json_t *tmp = e[m].j;
			e[m] = e[i];
			e[i].j = tmp;
		}
		m++;
	}
	L->m = m;
}

/* The text of leaf id holding the k entries from e[j]. */
static int leaf_text(const struct load *L, struct tbuf *b, const char *id, size_t j, size_t k)
{
	size_t x;
	int rc;

	if ((rc = tb_puts(b, "{\"entries\":[")) < 0)
		return rc;
	for (x = 0; x < k; x++, j++) {
		if ((rc = tb_puts(b, x ? ",[" : "[")) < 0 || (rc = tb_put(b, L->e[j].k, L->e[j].kl)) < 0 ||
		    (rc = tb_puts(b, ",")) < 0 || (rc = tb_put(b, L->e[j].v, L->e[j].vl)) < 0 ||
		    (rc = tb_puts(b, "]")) < 0)
			return rc;
	}
	if ((rc = tb_puts(b, "],\"header\":{\"collection\":")) < 0 || (rc = tb_put(b, L->ccoll, L->cl)) < 0 ||
	    (rc = tb_puts(b, ",\"id\":\"")) < 0 || (rc = tb_puts(b, id)) < 0)
		return rc;
	return tb_puts(b, "\",\"type\":\"TL\"}}");
}

/* The leaves, full, the first keeping the old root's ID. */
static int load_leaves(struct load *L, const char *root)
{
	size_t i, j;
	int rc;

	L->nodes = (L->m + L->cap - 1) / L->cap;
	OPT_CHECK_ALLOC(L->ids = malloc(L->nodes * sizeof(*L->ids)));
	OPT_CHECK_ALLOC(L->first = malloc(L->nodes * sizeof(*L->first)));
	for (i = 0, j = 0; i < L->nodes; i++) {
		size_t k = level_size(L->m, L->cap, i, L->nodes);
		struct tbuf b = { NULL, 0, 0 };
		if (i == 0)
			strcpy(L->ids[i], root);
		else
			opt_id_new(L->ids[i]);
		L->first[i] = j;
		if ((rc = leaf_text(L, &b, L->ids[i], j, k)) < 0) {
			free(b.p);
			return rc;
		}
		if ((rc = opt_tracker_insert_text(L->t, L->ids[i], "TL", b.p, b.len)) < 0)
			return rc;
		j += k;
	}
	return 0;
}

/* The text of branch id over the k nodes of the level below from
 * L->ids[c]. */
static int branch_text(const struct load *L, struct tbuf *b, const char *id, size_t c, size_t k)
{
	size_t x;
	int rc;

	if ((rc = tb_puts(b, "{\"header\":{\"collection\":")) < 0 || (rc = tb_put(b, L->ccoll, L->cl)) < 0 ||
	    (rc = tb_puts(b, ",\"id\":\"")) < 0 || (rc = tb_puts(b, id)) < 0 ||
	    (rc = tb_puts(b, "\",\"type\":\"TB\"},\"nodes\":[")) < 0)
		return rc;
	for (x = 0; x < k; x++) {
		if ((rc = tb_puts(b, x ? ",\"" : "\"")) < 0 || (rc = tb_puts(b, L->ids[c + x])) < 0 ||
		    (rc = tb_puts(b, "\"")) < 0)
			return rc;
	}
	if ((rc = tb_puts(b, "],\"partitions\":[")) < 0)
		return rc;
	for (x = 1; x < k; x++) {
		const struct lk *p = &L->e[L->first[c + x]];
		if ((x > 1 && (rc = tb_puts(b, ",")) < 0) || (rc = tb_put(b, p->k, p->kl)) < 0)
			return rc;
	}
	return tb_puts(b, "]}");
}

/* The branches, level by level, until one node is left: L->ids[] and
 * L->first[] become each level's. */
static int load_branches(struct load *L)
{
	size_t i, level_n;
	int rc;

	for (level_n = L->nodes; level_n > 1; level_n = L->nodes) {
		size_t c = 0;
		L->nodes = (level_n + L->cap - 1) / L->cap;
		for (i = 0; i < L->nodes; i++) {
			size_t k = level_size(level_n, L->cap, i, L->nodes);
			char id[OPT_ID_MAX + 1];
			struct tbuf b = { NULL, 0, 0 };
			opt_id_new(id);
			if ((rc = branch_text(L, &b, id, c, k)) < 0) {
				free(b.p);
				return rc;
			}
			if ((rc = opt_tracker_insert_text(L->t, id, "TB", b.p, b.len)) < 0)
				return rc;
			/* this level's node i: written over the slots already read */
			L->first[i] = L->first[c];
			strcpy(L->ids[i], id);
			c += k;
		}
	}
	return 0;
}

int opt_btree_load_text(struct opt_tracker *t, const char *header_id, const struct opt_kv_text *kv, size_t n,
			size_t *count)
{
	struct load L = { .t = t, .n = n };
	struct header h;
	size_t i;
	int rc;

	*count = 0;
	if ((rc = load_target(&L, header_id, &h)) != 0 || n == 0)
		goto done;
	L.cap = (size_t)h.cap;
	if ((rc = load_keys(&L, kv)) < 0 || (rc = load_sort(&L)) < 0)
		goto done;
	load_dedup(&L);
	if ((rc = load_leaves(&L, h.root)) < 0 || (rc = load_branches(&L)) < 0)
		goto done;
	if (strcmp(L.ids[0], h.root) != 0 && (rc = set_root(t, header_id, L.ids[0])) < 0)
		goto done;
	*count = L.m;
done:
	if (L.e)
		for (i = 0; i < n; i++)
			json_decref(L.e[i].j);
	free(L.e);
	free(L.ids);
	free(L.first);
	free(L.ccoll);
	return rc;
}

int opt_btree_del(struct opt_tracker *t, const char *header_id, const json_t *key)
{
	struct path p;
	const json_t *leaf;
	size_t n, i, tok;
	int rc, found;

	if (!opt_key_valid(key))
		return opt_error_set(OPT_EINVAL, "invalid btree key: keys are numbers, strings or arrays of keys");
	if ((rc = descend(&p, t, header_id, key, &leaf, &found, NULL)) < 0)
		return rc;
	if (!found)
		return opt_error_set(OPT_ENOTFOUND, "key not found");
	i = p.lv[p.depth - 1].idx;
	n = json_array_size(json_object_get(leaf, "entries"));
	if (p.depth == 1 || n - 1 >= (size_t)p.h.cap / 2)
		return remove_at(t, p.lv[p.depth - 1].id, "entries", i, 1);
	opt_tracker_mark(t, &tok);
	rc = remove_at(t, p.lv[p.depth - 1].id, "entries", i, 1);
	if (rc == 0)
		rc = rebalance(&p, t, header_id);
	if (rc < 0)
		opt_tracker_rollback(t, tok);
	else
		opt_tracker_release(t, tok);
	return rc;
}

/* ---- reading through a source ---- */

/* Get block id from src: 0 and *b (a new reference) and *kind. */
static int sget(const struct opt_source *src, const char *id, json_t **b, int *kind, int strict)
{
	int rc = src->get(src->ctx, id, b);

	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is missing", id);
	if (rc < 0)
		return rc;
	if ((rc = node_kind(*b, id, strict)) < 0) {
		json_decref(*b);
		*b = NULL;
		return rc;
	}
	if (kind)
		*kind = rc;
	return 0;
}

/* ---- leaves read as stored text ----
 *
 * A leaf is stored as canonical JSON, {"entries":[[k,v],...],"header":..};
 * readers find the entries' keys and values in the text (offsets) instead
 * of building JSON values, compare keys on the text, and parse only what
 * they hand out as values.  Text that does not scan is parsed instead. */

struct rawent {
	uint32_t k, kl, v, vl;  /* key and value: offsets and lengths */
};

struct rawleaf {
	struct opt_bytes b;     /* empty when not in use */
	const struct rawent *ent; /* n entries: e, or an index kept with b */
	size_t n;
	struct rawent *e;       /* our own index */
	size_t cap;
};

/* An index kept with the bytes by the source (opt_bytes.memo). */
struct rawidx {
	size_t n;
	struct rawent e[];
};

static void rawleaf_release(struct rawleaf *l)
{
	opt_bytes_release(&l->b);
	l->n = 0;
}

static void rawleaf_free(struct rawleaf *l)
{
	rawleaf_release(l);
	free(l->e);
	l->e = NULL;
	l->cap = 0;
}

/* Find the entries in l->b: 0, or -1 when the text does not scan. */
static int rawleaf_index(struct rawleaf *l)
{
	const char *base = l->b.data, *end = base + l->b.len, *p = base + 12, *q;

	l->n = 0;
	l->ent = l->e;
	if (l->b.len < 13 || l->b.len > UINT32_MAX || memcmp(base, "{\"entries\":[", 12) != 0)
		return -1;
	if (*p == ']')
		return l->b.len == 14 || (l->b.len > 24 && memcmp(p, "],\"header\":", 11) == 0) ? 0 : -1;
	for (;;) {
		struct rawent *e;

		if (p >= end || *p != '[')
			return -1;
		/* (room for 128 at first: a leaf rarely holds fewer) */
		if (OPT_ALLOC_GROW(l->e, l->n + 1 > 128 ? l->n + 1 : 128, l->cap) < 0)
			return -1;
		e = &l->e[l->n];
		p++;
		if (!(q = opt_raw_skip(p, end)) || q >= end || *q != ',')
			return -1;
		e->k = (uint32_t)(p - base);
		e->kl = (uint32_t)(q - p);
		p = q + 1;
		if (!(q = opt_raw_skip(p, end)) || q >= end || *q != ']')
			return -1;
		e->v = (uint32_t)(p - base);
		e->vl = (uint32_t)(q - p);
		l->n++;
		p = q + 1;
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		/* then the header, or the end: nothing else in a leaf */
		if (p >= end || *p != ']' || (end - p != 2 && (end - p < 12 || memcmp(p, "],\"header\":", 11) != 0)) ||
		    end[-1] != '}')
			return -1;
		l->ent = l->e;
		return 0;
	}
}

/* A key as an entry holds it: parsed, or as text. */
struct kref {
	const json_t *j;
	const char *t;
	size_t tl;
};

static int kref_cmp_json(const struct kref *a, const json_t *b, int *err)
{
	return a->j ? opt_key_cmp(a->j, b) : opt_raw_key_cmp(a->t, a->tl, b, err);
}

static int kref_cmp(const struct kref *a, const struct kref *b, int *err)
{
	if (b->j)
		return kref_cmp_json(a, b->j, err);
	if (a->j)
		return -opt_raw_key_cmp(b->t, b->tl, a->j, err);
	return opt_raw_keys_cmp(a->t, a->tl, b->t, b->tl, err);
}

/* rawleaf's leaf_search (see there). */
static size_t raw_search(const struct rawleaf *l, const json_t *key, int upper, int *found, int *err)
{
	size_t lo = 0, hi = l->n;
	int c;

	if (found)
		*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		c = opt_raw_key_cmp(l->b.data + l->ent[mid].k, l->ent[mid].kl, key, err);
		if (*err)
			return 0;
		if (c < 0 || (upper && c == 0)) {
			lo = mid + 1;
		} else {
			if (c == 0 && found)
				*found = 1;
			hi = mid;
		}
	}
	return lo;
}

/* ---- branches compiled for lookups ----
 *
 * An inner node the source keeps (with a memo slot: opt_source.get_raw)
 * is read by every lookup under it: its partitions (string keys as bytes)
 * and child IDs, checked once, go into the memo, so a lookup compares
 * bytes instead of walking JSON values. */

struct cpart {
	const char *s;     /* a string key's bytes, else NULL */
	size_t l;
	const json_t *j;
};

struct cbranch {
	size_t n;          /* partitions; n + 1 children */
	const char **child;
	struct cpart part[];
};

/* Compile branch b (checked by node_kind): NULL when a child ID is not
 * valid (the uncompiled path reports it) or out of memory.  Child IDs and
 * string keys are copied next to each other (a search touches one block
 * of memory); other keys point into b, which the source keeps as long as
 * the memo. */
static struct cbranch *branch_compile(const json_t *b)
{
	const json_t *parts = json_object_get(b, "partitions"), *nodes = json_object_get(b, "nodes");
	size_t n = json_array_size(parts), i, text = 0, at;
	struct cbranch *cb;
	char *t;

	for (i = 0; i < n; i++)
		text += json_string_length(json_array_get(parts, i));  /* 0 for others */
	for (i = 0; i <= n; i++)
		text += json_string_length(json_array_get(nodes, i)) + 1;
	at = sizeof(*cb) + n * sizeof(cb->part[0]) + (n + 1) * sizeof(char *);
	if (!(cb = malloc(at + text + 1)))
		return NULL;
	t = (char *)cb + at;
	cb->n = n;
	cb->child = (const char **)(void *)(cb->part + n);
	for (i = 0; i <= n; i++) {
		const char *c = json_string_value(json_array_get(nodes, i));
		if (!c || !opt_id_valid(c)) {
			free(cb);
			return NULL;
		}
		cb->child[i] = t;
		memcpy(t, c, json_string_length(json_array_get(nodes, i)) + 1);
		t += json_string_length(json_array_get(nodes, i)) + 1;
	}
	for (i = 0; i < n; i++) {
		const json_t *p = json_array_get(parts, i);
		cb->part[i].j = p;
		cb->part[i].s = NULL;
		cb->part[i].l = 0;
		if (json_is_string(p)) {
			cb->part[i].l = json_string_length(p);
			memcpy(t, json_string_value(p), cb->part[i].l);
			cb->part[i].s = t;
			t += cb->part[i].l;
		}
	}
	return cb;
}

/* branch_search on a compiled branch; ks (kl bytes) is key's string, or
 * NULL when key is not one. */
static size_t cbranch_search(const struct cbranch *cb, const json_t *key, const char *ks, size_t kl)
{
	size_t lo = 0, hi = cb->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct cpart *p = &cb->part[mid];
		int c;
		if (ks && p->s) {
			c = memcmp(ks, p->s, kl < p->l ? kl : p->l);
			if (!c)
				c = kl < p->l ? -1 : kl > p->l;
		} else {
			c = opt_key_cmp(key, p->j);
		}
		if (c >= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Read node id: parsed into *b, or (l given, the source offers it, a leaf
 * that scans) as text into l with *b NULL.  A branch the source keeps
 * comes with its compiled form in l->b.memo->p.  borrow: l may point at
 * the index the source keeps (the caller reads nothing more from src
 * while it uses l). */
static int node_read(const struct opt_source *src, const char *id, json_t **b, struct rawleaf *l, int *kind,
		     int borrow)
{
	json_error_t jerr;
	int rc;

	*b = NULL;
	if (!l || !src->get_raw)
		return sget(src, id, b, kind, 0);
	rc = src->get_raw(src->ctx, id, b, &l->b);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is missing", id);
	if (rc < 0)
		return rc;
	if (!*b) {
		struct opt_memo *m = l->b.memo;
		if (m && m->p && borrow) {
			/* used before the next read from the source */
			const struct rawidx *ix = m->p;
			l->ent = ix->e;
			l->n = ix->n;
			*kind = LEAF;
			return 0;
		}
		if (m && m->p) {
			/* the memo stays with the source's cache, which may drop
			 * it at the next read from the source: keep a copy */
			const struct rawidx *ix = m->p;
			if ((rc = OPT_ALLOC_GROW(l->e, ix->n, l->cap)) < 0) {
				rawleaf_release(l);
				return rc;
			}
			if (ix->n)
				memcpy(l->e, ix->e, ix->n * sizeof(*ix->e));
			l->ent = l->e;
			l->n = ix->n;
			*kind = LEAF;
			return 0;
		}
		if (rawleaf_index(l) == 0) {
			struct rawidx *ix;
			if (m && (ix = malloc(sizeof(*ix) + l->n * sizeof(ix->e[0])))) {
				ix->n = l->n;
				memcpy(ix->e, l->e, l->n * sizeof(ix->e[0]));
				m->p = ix;
				m->free = free;
			}
			*kind = LEAF;
			return 0;
		}
		*b = json_loadb(l->b.data, l->b.len, 0, &jerr);
		rawleaf_release(l);
		if (!*b)
			return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is not valid JSON: %s", id, opt_esc(jerr.text));
	} else if (l->b.memo && l->b.memo->p) {
		*kind = BRANCH;  /* checked and compiled at an earlier read */
		return 0;
	}
	if ((rc = node_kind(*b, id, 0)) < 0) {
		json_decref(*b);
		*b = NULL;
		return rc;
	}
	*kind = rc;
	if (rc == BRANCH && l->b.memo && !l->b.memo->p && (l->b.memo->p = branch_compile(*b)))
		l->b.memo->free = free;
	return 0;
}

static int read_header(struct header *h, const struct opt_source *src, const char *header_id)
{
	json_t *hb;
	int rc = src->get(src->ctx, header_id, &hb);

	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no btree header block '%s'", header_id);
	if (rc < 0)
		return rc;
	rc = header_parse(h, hb, header_id);
	json_decref(hb);
	return rc;
}

/* Look key up: its value parsed (value) or as canonical text (text). */
static int lookup(const struct opt_source *src, const char *header_id, const json_t *key, json_t **value,
		  char **text, size_t *len)
{
	struct header h;
	struct rawleaf l;
	json_t *b = NULL;
	char id[OPT_ID_MAX + 1];
	const json_t *e;
	size_t i, kl = json_is_string(key) ? json_string_length(key) : 0;
	const char *ks = json_is_string(key) ? json_string_value(key) : NULL;
	int rc, kind = BRANCH, d, found, err = 0;

	memset(&l, 0, sizeof(l));
	if (!opt_key_valid(key))
		return opt_error_set(OPT_EINVAL, "invalid btree key: keys are numbers, strings or arrays of keys");
	if ((rc = read_header(&h, src, header_id)) < 0)
		return rc;
	strcpy(id, h.root);
	for (d = 0;; d++) {
		if (d == MAX_DEPTH) {
			rc = opt_error_set(OPT_EINTEGRITY, "btree under '%s' is deeper than %d levels", header_id,
					   MAX_DEPTH);
			goto done;
		}
		if ((rc = node_read(src, id, &b, &l, &kind, 1)) < 0)
			goto done;
		if (kind == LEAF)
			break;
		if (l.b.memo && l.b.memo->p) {
			const struct cbranch *cb = l.b.memo->p;
			strcpy(id, cb->child[cbranch_search(cb, key, ks, kl)]);
			rc = 0;
		} else {
			i = branch_search(json_object_get(b, "partitions"), key);
			rc = copy_id(id, json_array_get(json_object_get(b, "nodes"), i), id);
		}
		json_decref(b);
		b = NULL;
		if (rc < 0)
			goto done;
	}
	if (!b) {
		i = raw_search(&l, key, 0, &found, &err);
		if (err) {
			rc = err;
			goto done;
		}
		if (!found) {
			rc = opt_error_set(OPT_ENOTFOUND, "key not found");
			goto done;
		}
		if (value) {
			rc = opt_json_parse(value, l.b.data + l.ent[i].v, l.ent[i].vl);
			if (rc < 0)
				rc = opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' holds a malformed entry", id);
		} else if (!(*text = malloc(l.ent[i].vl + 1))) {
			rc = opt_error_oom();
		} else {
			memcpy(*text, l.b.data + l.ent[i].v, l.ent[i].vl);
			(*text)[l.ent[i].vl] = '\0';
			*len = l.ent[i].vl;
		}
		goto done;
	}
	i = leaf_search(json_object_get(b, "entries"), key, 0, &found);
	if (!found) {
		rc = opt_error_set(OPT_ENOTFOUND, "key not found");
		goto done;
	}
	e = json_array_get(json_object_get(b, "entries"), i);
	if (!entry_ok(e)) {
		rc = opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' holds a malformed entry", id);
		goto done;
	}
	if (value)
		*value = json_incref(json_array_get(e, 1));
	else if (opt_json_canon(text, len, json_array_get(e, 1)) < 0)
		rc = opt_error_oom();
done:
	json_decref(b);
	rawleaf_free(&l);
	return rc;
}

int opt_btree_get(const struct opt_source *src, const char *header_id, const json_t *key, json_t **value)
{
	*value = NULL;
	return lookup(src, header_id, key, value, NULL, NULL);
}

int opt_btree_get_text(const struct opt_source *src, const char *header_id, const json_t *key, char **text,
		       size_t *len)
{
	*text = NULL;
	*len = 0;
	return lookup(src, header_id, key, NULL, text, len);
}

struct frame {
	json_t *node;   /* a new reference; NULL for a leaf read as text */
	const json_t *arr; /* its "entries" (leaf) or "nodes" (branch) */
	struct rawleaf raw; /* a leaf read as text */
	char id[OPT_ID_MAX + 1];
	long idx;       /* child index (branch) or next entry (leaf) */
	int kind;
};

struct opt_btree_cursor {
	struct opt_source src;
	/* the key returned last (keys must keep their order): parsed in
	 * last, or as text in lastk */
	json_t *last;
	char *lastk;
	size_t lastkl, lastkcap;
	int haslast;
	json_t *lo, *hi;
	int lo_incl, hi_incl, reverse;
	int depth;      /* frames in use; 0 once the range is done */
	int err;
	json_t *ck, *cv;   /* the entry handed out parsed */
	char *kbuf, *vbuf; /* the entry handed out as text, when it was parsed */
	struct frame st[MAX_DEPTH];
};

static size_t leaf_size(const struct frame *f)
{
	return f->node ? json_array_size(f->arr) : f->raw.n;
}

static struct kref entry_kref(const struct frame *f, size_t i)
{
	struct kref k = { NULL, NULL, 0 };

	if (f->node) {
		k.j = entry_key(json_array_get(f->arr, i));
	} else {
		k.t = f->raw.b.data + f->raw.ent[i].k;
		k.tl = f->raw.ent[i].kl;
	}
	return k;
}

static int set_last(struct opt_btree_cursor *c, const struct kref *k)
{
	int rc;

	json_decref(c->last);
	c->last = NULL;
	c->haslast = 1;
	if (k->j) {
		c->last = json_incref((json_t *)k->j);
		return 0;
	}
	if ((rc = OPT_ALLOC_GROW(c->lastk, k->tl, c->lastkcap)) < 0)
		return rc;
	if (k->tl)
		memcpy(c->lastk, k->t, k->tl);  /* (none yet: both NULL) */
	c->lastkl = k->tl;
	return 0;
}

static struct kref last_kref(const struct opt_btree_cursor *c)
{
	struct kref k = { c->last, c->lastk, c->lastkl };
	return k;
}

static void cursor_pop(struct opt_btree_cursor *c)
{
	struct frame *f = &c->st[--c->depth];

	json_decref(f->node);
	f->node = NULL;
	f->arr = NULL;
	rawleaf_release(&f->raw);
}

static void cursor_clear(struct opt_btree_cursor *c)
{
	while (c->depth > 0)
		cursor_pop(c);
}

/* Push node id and go down to a leaf.  key (may be NULL) picks the path
 * as a search would; else the first (or with reverse the last) child. */
static int cursor_down(struct opt_btree_cursor *c, const char *start, const json_t *key)
{
	char id[OPT_ID_MAX + 1];
	struct frame *f;
	const json_t *a;
	int rc, err = 0;

	strcpy(id, start);
	for (;;) {
		if (c->depth == MAX_DEPTH)
			return opt_error_set(OPT_EINTEGRITY, "btree deeper than %d levels at block '%s'",
					     MAX_DEPTH, id);
		f = &c->st[c->depth];
		strcpy(f->id, id);
		if ((rc = node_read(&c->src, id, &f->node, &f->raw, &f->kind, 0)) < 0)
			return rc;
		c->depth++;
		if (f->kind == LEAF && !f->node) {
			if (!key)
				f->idx = c->reverse ? (long)f->raw.n - 1 : 0;
			else if (!c->reverse)
				f->idx = (long)raw_search(&f->raw, key, !c->lo_incl, NULL, &err);
			else
				f->idx = (long)raw_search(&f->raw, key, c->hi_incl, NULL, &err) - 1;
			return err;
		}
		if (f->kind == LEAF) {
			a = f->arr = json_object_get(f->node, "entries");
			if (!key)
				f->idx = c->reverse ? (long)json_array_size(a) - 1 : 0;
			else if (!c->reverse)
				f->idx = (long)leaf_search(a, key, !c->lo_incl, NULL);
			else
				f->idx = (long)leaf_search(a, key, c->hi_incl, NULL) - 1;
			return 0;
		}
		a = f->arr = json_object_get(f->node, "nodes");
		if (key)
			f->idx = (long)branch_search(json_object_get(f->node, "partitions"), key);
		else
			f->idx = c->reverse ? (long)json_array_size(a) - 1 : 0;
		if ((rc = copy_id(id, json_array_get(a, (size_t)f->idx), f->id)) < 0)
			return rc;
	}
}

/* Move to the next (reverse: previous) leaf: 1, or 0 past the end. */
static int cursor_step(struct opt_btree_cursor *c)
{
	char id[OPT_ID_MAX + 1];
	int rc;

	cursor_pop(c);
	while (c->depth > 0) {
		struct frame *f = &c->st[c->depth - 1];
		const json_t *nodes = f->arr;
		long next = f->idx + (c->reverse ? -1 : 1);

		if (next >= 0 && next < (long)json_array_size(nodes)) {
			f->idx = next;
			if ((rc = copy_id(id, json_array_get(nodes, (size_t)next), f->id)) < 0)
				return rc;
			if ((rc = cursor_down(c, id, NULL)) < 0)
				return rc;
			/* only a root leaf may be empty: a damaged tree could
			 * otherwise send a walk round empty subtrees for ever */
			if (c->depth > 1 && leaf_size(&c->st[c->depth - 1]) == 0)
				return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' is empty but not the root",
						     c->st[c->depth - 1].id);
			return 1;
		}
		cursor_pop(c);
	}
	return 0;
}

int opt_btree_cursor_open(struct opt_btree_cursor **out, const struct opt_source *src,
			  const char *header_id, const struct opt_btree_range *range)
{
	struct opt_btree_cursor *c;
	struct header h;
	const json_t *start;
	int rc;

	*out = NULL;
	if (range && ((range->lo && !opt_key_valid(range->lo)) || (range->hi && !opt_key_valid(range->hi))))
		return opt_error_set(OPT_EINVAL, "invalid btree range bound: keys are numbers, strings or arrays of keys");
	if ((rc = read_header(&h, src, header_id)) < 0)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return opt_error_oom();
	c->src = *src;
	if (range) {
		c->lo_incl = range->lo_incl;
		c->hi_incl = range->hi_incl;
		c->reverse = range->reverse;
		if ((range->lo && !(c->lo = opt_json_copy(range->lo))) ||
		    (range->hi && !(c->hi = opt_json_copy(range->hi)))) {
			rc = opt_error_oom();
			goto done;
		}
	}
	start = c->reverse ? c->hi : c->lo;
	rc = cursor_down(c, h.root, start);
done:
	if (rc < 0)
		opt_btree_cursor_free(c);
	else
		*out = c;
	return rc;
}

static int cursor_fail(struct opt_btree_cursor *c, int rc)
{
	c->err = rc;
	cursor_clear(c);
	return rc;
}

/* The next entry: 1 with *f (its leaf) and *i (its index), 0 at the end. */
static int cursor_advance(struct opt_btree_cursor *c, struct frame **fp, size_t *ip)
{
	if (c->err)
		return c->err;
	while (c->depth > 0) {
		struct frame *f = &c->st[c->depth - 1];
		struct kref k, l;
		int rc, cmp, err = 0;

		if (f->idx < 0 || f->idx >= (long)leaf_size(f)) {
			rc = cursor_step(c);
			if (rc < 0)
				return cursor_fail(c, rc);
			continue;
		}
		if (f->node) {
			const json_t *e = json_array_get(f->arr, (size_t)f->idx);
			if (!json_is_array(e) || json_array_size(e) != 2)
				return cursor_fail(c, opt_error_set(OPT_EINTEGRITY,
								    "btree leaf '%s' holds a malformed entry", f->id));
		}
		k = entry_kref(f, (size_t)f->idx);
		if (!c->reverse && c->hi) {
			cmp = kref_cmp_json(&k, c->hi, &err);
			if (err)
				return cursor_fail(c, err);
			if (cmp > 0 || (cmp == 0 && !c->hi_incl))
				break;
		}
		if (c->reverse && c->lo) {
			cmp = kref_cmp_json(&k, c->lo, &err);
			if (err)
				return cursor_fail(c, err);
			if (cmp < 0 || (cmp == 0 && !c->lo_incl))
				break;
		}
		if (c->haslast) {
			/* a tree whose branches share children would repeat keys
			 * (and could take exponential time): stop at the first */
			l = last_kref(c);
			cmp = kref_cmp(&k, &l, &err);
			if (err)
				return cursor_fail(c, err);
			if (c->reverse ? cmp >= 0 : cmp <= 0)
				return cursor_fail(c, opt_error_set(OPT_EINTEGRITY,
								    "btree leaf '%s': keys out of order (the tree is damaged)",
								    f->id));
		}
		if ((rc = set_last(c, &k)) < 0)
			return cursor_fail(c, rc);
		*fp = f;
		*ip = (size_t)f->idx;
		f->idx += c->reverse ? -1 : 1;
		return 1;
	}
	cursor_clear(c);
	return 0;
}

int opt_btree_cursor_next(struct opt_btree_cursor *c, const json_t **key, const json_t **value)
{
	struct frame *f;
	size_t i;
	int rc;

	*key = *value = NULL;
	json_decref(c->ck);
	json_decref(c->cv);
	c->ck = c->cv = NULL;
	if ((rc = cursor_advance(c, &f, &i)) <= 0)
		return rc;
	if (f->node) {
		const json_t *e = json_array_get(f->arr, i);
		*key = entry_key(e);
		*value = json_array_get(e, 1);
		return 1;
	}
	if (opt_json_parse(&c->ck, f->raw.b.data + f->raw.ent[i].k, f->raw.ent[i].kl) < 0 ||
	    opt_json_parse(&c->cv, f->raw.b.data + f->raw.ent[i].v, f->raw.ent[i].vl) < 0)
		return cursor_fail(c, opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' holds a malformed entry", f->id));
	*key = c->ck;
	*value = c->cv;
	return 1;
}

int opt_btree_cursor_next_text(struct opt_btree_cursor *c, const char **key, size_t *klen, const char **value,
			       size_t *vlen)
{
	struct frame *f;
	size_t i;
	int rc;

	*key = *value = NULL;
	*klen = *vlen = 0;
	free(c->kbuf);
	free(c->vbuf);
	c->kbuf = c->vbuf = NULL;
	if ((rc = cursor_advance(c, &f, &i)) <= 0)
		return rc;
	if (f->node) {
		const json_t *e = json_array_get(f->arr, i);
		if (opt_json_canon(&c->kbuf, klen, entry_key(e)) < 0 ||
		    opt_json_canon(&c->vbuf, vlen, json_array_get(e, 1)) < 0)
			return cursor_fail(c, opt_error_oom());
		*key = c->kbuf;
		*value = c->vbuf;
		return 1;
	}
	*key = f->raw.b.data + f->raw.ent[i].k;
	*klen = f->raw.ent[i].kl;
	*value = f->raw.b.data + f->raw.ent[i].v;
	*vlen = f->raw.ent[i].vl;
	return 1;
}

void opt_btree_cursor_free(struct opt_btree_cursor *c)
{
	int i;

	if (!c)
		return;
	cursor_clear(c);
	for (i = 0; i < MAX_DEPTH; i++)
		rawleaf_free(&c->st[i].raw);
	json_decref(c->last);
	free(c->lastk);
	json_decref(c->lo);
	json_decref(c->hi);
	json_decref(c->ck);
	json_decref(c->cv);
	free(c->kbuf);
	free(c->vbuf);
	free(c);
}

int opt_btree_count(const struct opt_source *src, const char *header_id, size_t *count)
{
	struct opt_btree_cursor *c = NULL;
	size_t n = 0;
	int rc;

	*count = 0;
	if ((rc = opt_btree_cursor_open(&c, src, header_id, NULL)) < 0)
		return rc;
	do {
		const struct frame *f = &c->st[c->depth - 1];
		size_t k = leaf_size(f);
		/* each leaf's first key above the previous leaf's last */
		if (k && c->haslast) {
			struct kref first = entry_kref(f, 0), last = last_kref(c);
			int err = 0, cmp = kref_cmp(&first, &last, &err);
			if (err || cmp <= 0) {
				rc = err ? err : opt_error_set(OPT_EINTEGRITY,
							       "btree leaf '%s': keys out of order (the tree is damaged)",
							       f->id);
				break;
			}
		}
		if (k) {
			struct kref lastk = entry_kref(f, k - 1);
			if ((rc = set_last(c, &lastk)) < 0)
				break;
		}
		n += k;
	} while ((rc = cursor_step(c)) > 0);
	if (rc == 0)
		*count = n;
	opt_btree_cursor_free(c);
	return rc;
}

/* ---- structural check ---- */

struct check {
	const struct opt_source *src;
	size_t min, max, count;
	int leaf_depth;
	char *coll;
	json_t *seen;
};

#define BAD(...) do { rc = opt_error_set(OPT_EINTEGRITY, __VA_ARGS__); goto done; } while (0)

/* Check that key k lies in [lo, hi) (either bound may be NULL). */
static int in_bounds(const json_t *k, const json_t *lo, const json_t *hi)
{
	return (!lo || opt_key_cmp(k, lo) >= 0) && (!hi || opt_key_cmp(k, hi) < 0);
}

static int check_node(struct check *k, const char *id, int depth, const json_t *lo, const json_t *hi)
{
	json_t *b = NULL;
	const json_t *a, *parts, *prev = NULL;
	const char *coll, *bid;
	char child[OPT_ID_MAX + 1];
	size_t n, i;
	int rc, kind;

	if (depth >= MAX_DEPTH)
		BAD("btree deeper than %d levels at block '%s'", MAX_DEPTH, id);
	if (json_object_get(k->seen, id))
		BAD("btree block '%s' is reached twice", id);
	if (json_object_set_new(k->seen, id, json_true()) < 0) {
		rc = opt_error_oom();
		goto done;
	}
	if ((rc = sget(k->src, id, &b, &kind, 1)) < 0)
		goto done;
	bid = opt_block_id(b);
	if (!bid || strcmp(bid, id) != 0)
		BAD("btree block '%s' has the ID '%s' in its header", id, bid ? bid : "");
	coll = opt_block_collection(b);
	if (!coll)
		BAD("btree block '%s' has no collection", id);
	if (!k->coll && !(k->coll = strdup(coll))) {
		rc = opt_error_oom();
		goto done;
	}
	if (strcmp(coll, k->coll) != 0)
		BAD("btree block '%s' is in collection '%s', the root in '%s'", id, coll, k->coll);
	if (kind == LEAF) {
		a = json_object_get(b, "entries");
		n = json_array_size(a);
		if (k->leaf_depth < 0)
			k->leaf_depth = depth;
		if (depth != k->leaf_depth)
			BAD("btree leaf '%s' is at depth %d, another at %d", id, depth, k->leaf_depth);
		if (n > k->max || (depth > 0 && n < k->min))
			BAD("btree leaf '%s' holds %zu entries (%zu-%zu allowed)", id, n, depth ? k->min : 0,
			    k->max);
		for (i = 0; i < n; i++) {
			const json_t *e = json_array_get(a, i);
			if (!entry_ok(e))
				BAD("btree leaf '%s' entry %zu is not a [key, value] pair", id, i);
			if (prev && opt_key_cmp(prev, entry_key(e)) >= 0)
				BAD("btree leaf '%s' entries %zu and %zu are out of order", id, i - 1, i);
			if (!in_bounds(entry_key(e), lo, hi))
				BAD("btree leaf '%s' entry %zu is outside the bounds of its parent's partitions", id, i);
			prev = entry_key(e);
		}
		k->count += n;
		goto done;
	}
	a = json_object_get(b, "nodes");
	parts = json_object_get(b, "partitions");
	n = json_array_size(a);
	if (n > k->max || (depth > 0 && n < k->min) || n < 2)
		BAD("btree branch '%s' has %zu children (%zu-%zu allowed)", id, n, depth ? k->min : 2, k->max);
	for (i = 0; i + 1 < n; i++) {
		const json_t *p = json_array_get(parts, i);
		if (!opt_key_valid(p))
			BAD("btree branch '%s' partition %zu is not a valid key", id, i);
		if (prev && opt_key_cmp(prev, p) >= 0)
			BAD("btree branch '%s' partitions %zu and %zu are out of order", id, i - 1, i);
		if (!in_bounds(p, lo, hi))
			BAD("btree branch '%s' partition %zu is outside the bounds of its parent's partitions", id, i);
		prev = p;
	}
	for (i = 0; i < n; i++) {
		if ((rc = copy_id(child, json_array_get(a, i), id)) < 0)
			goto done;
		rc = check_node(k, child, depth + 1, i ? json_array_get(parts, i - 1) : lo,
				i + 1 < n ? json_array_get(parts, i) : hi);
		if (rc < 0)
			goto done;
	}
done:
	json_decref(b);
	return rc;
}

/* Route key from the root of h down to a leaf: *leaf (its ID), its
 * bounds (*lo, *hi: borrowed from *keep, which the caller frees; NULL:
 * unbounded) and depth. */
static int route(const struct opt_source *src, const struct header *h, const json_t *key, char leaf[OPT_ID_MAX + 1],
		 json_t **keep, const json_t **lo, const json_t **hi, int *depth)
{
	json_t *b = NULL;
	int kind, rc;

	*lo = *hi = NULL;
	snprintf(leaf, OPT_ID_MAX + 1, "%s", h->root);
	for (*depth = 0; *depth < MAX_DEPTH; (*depth)++) {
		const json_t *parts;
		size_t i, n;
		if ((rc = sget(src, leaf, &b, &kind, 1)) < 0)
			return rc;
		if (kind == LEAF) {
			json_decref(b);
			return 0;
		}
		parts = json_object_get(b, "partitions");
		n = json_array_size(parts);
		for (i = 0; i < n && opt_key_cmp(key, json_array_get(parts, i)) >= 0; i++)
			;
		if (i > 0)
			*lo = json_array_get(parts, i - 1);
		if (i < n)
			*hi = json_array_get(parts, i);
		if (json_array_append(*keep, b) < 0) {
			json_decref(b);
			return opt_error_oom();
		}
		rc = copy_id(leaf, json_array_get(json_object_get(b, "nodes"), i), leaf);
		json_decref(b);
		if (rc < 0)
			return rc;
	}
	return opt_error_set(OPT_EINTEGRITY, "btree deeper than %d levels at block '%s'", MAX_DEPTH, leaf);
}

/* Leaf id of the tree at src, changed in place: it must be where its
 * first key routes (1: it is not: judge the whole tree), and pass the
 * checks of check_node with the bounds and depth found there.  *n its
 * entries. */
static int leaf_in_place(const struct opt_source *src, const struct header *h, const char *id, int leaf_depth,
			 size_t *n)
{
	struct check k = { src, (size_t)h->cap / 2, (size_t)h->cap, 0, -1, NULL, NULL };
	json_t *b = NULL, *keep = json_array();
	const json_t *lo, *hi, *es;
	char at[OPT_ID_MAX + 1];
	int kind, depth, rc;

	*n = 0;
	if (!keep || !(k.seen = json_object())) {
		rc = opt_error_oom();
		goto done;
	}
	if ((rc = sget(src, id, &b, &kind, 0)) < 0)
		goto done;
	es = json_object_get(b, "entries");
	rc = 1;
	if (kind != LEAF || !json_array_size(es))
		goto done;  /* a branch now, or empty (the root only) */
	if ((rc = route(src, h, json_array_get(json_array_get(es, 0), 0), at, &keep, &lo, &hi, &depth)) < 0)
		goto done;
	if (strcmp(at, id) != 0 || depth != leaf_depth) {
		rc = 1;
		goto done;
	}
	k.leaf_depth = depth;
	if ((rc = check_node(&k, id, depth, lo, hi)) == 0)
		*n = k.count;
done:
	json_decref(b);
	json_decref(keep);
	json_decref(k.seen);
	free(k.coll);
	return rc;
}

/* The depth of the leaves along the leftmost path from the root. */
static int leftmost_depth(const struct opt_source *src, const char *root, int *depth)
{
	char cur[OPT_ID_MAX + 1];
	json_t *b = NULL;
	int kind, rc;

	snprintf(cur, sizeof(cur), "%s", root);
	for (*depth = 0; *depth < MAX_DEPTH; (*depth)++) {
		if ((rc = sget(src, cur, &b, &kind, 1)) < 0)
			return rc;
		if (kind == LEAF) {
			json_decref(b);
			return 0;
		}
		rc = copy_id(cur, json_array_get(json_object_get(b, "nodes"), 0), cur);
		json_decref(b);
		if (rc < 0)
			return rc;
	}
	return opt_error_set(OPT_EINTEGRITY, "btree deeper than %d levels at block '%s'", MAX_DEPTH, cur);
}

static int check_whole(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *o,
		       size_t *count);

/* opt_btree_check since o->base. */
static int check_since(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *o,
		       size_t *count)
{
	const struct opt_source *base = o->base;
	struct header h, bh;
	const char *id;
	const json_t *v;
	size_t total = o->base_count, n;
	int depth, rc;

	if (count)
		*count = 0;
	if ((rc = read_header(&h, src, header_id)) < 0 || (rc = read_header(&bh, base, header_id)) < 0)
		return rc;
	if (strcmp(h.root, bh.root) != 0 || h.cap != bh.cap)
		goto full;
	if ((rc = leftmost_depth(src, h.root, &depth)) < 0)
		return rc;
	/* only leaves changed, each in place: its ancestors, unchanged, give
	 * it the bounds and depth it had */
	json_object_foreach((json_t *)o->changed, id, v) {
		json_t *b = NULL;
		int kind;
		const char *type;
		if (strcmp(id, header_id) == 0)
			continue;
		rc = src->get(src->ctx, id, &b);
		if (rc == OPT_ENOTFOUND) {
			if (base->get(base->ctx, id, &b) < 0) {
				opt_error_clear();
				continue;
			}
			type = opt_block_type(b);
			kind = type && (strcmp(type, "TL") == 0 || strcmp(type, "TB") == 0);
			json_decref(b);
			opt_error_clear();
			if (kind)
				goto full;  /* a node dropped */
			continue;
		}
		if (rc < 0)
			return rc;
		type = opt_block_type(b);
		kind = !type ? -1 : strcmp(type, "TL") == 0 ? LEAF : strcmp(type, "TB") == 0 ? BRANCH : -1;
		json_decref(b);
		if (kind == -1)
			continue;  /* not a node (the log's blocks) */
		if (kind == BRANCH)
			goto full;
		if ((rc = leaf_in_place(src, &h, id, depth, &n)) < 0)
			return rc;
		if (rc == 1)
			goto full;
		total += n;
		rc = base->get(base->ctx, id, &b);
		if (rc == OPT_ENOTFOUND)
			goto full;  /* a new leaf */
		if (rc < 0)
			return rc;
		n = json_array_size(json_object_get(b, "entries"));
		type = opt_block_type(b);
		kind = type && strcmp(type, "TL") == 0;
		json_decref(b);
		if (!kind || n > total)
			goto full;
		total -= n;
	}
	if (count)
		*count = total;
	return 0;
full:
	opt_error_clear();
	return check_whole(src, header_id, o, count);
}

/* ---- the structural check on stored text ----
 *
 * The checks of check_node, on each node's canonical text (checked so in
 * one pass, opt_canon_scan) instead of a parse: keys are compared as
 * text, bounds are spans of the parent's text. */

struct tcheck {
	opt_btree_bytes_fn bytes;
	void *bctx;
	int (*seen)(void *arg, const char *id, const char *text, size_t len);
	void *sarg;
	size_t min, max, count;
	int leaf_depth;
	char *coll;             /* the root's collection, as stored (no quotes) */
	size_t colll;
	json_t *visited;
	struct opt_ctape tape[MAX_DEPTH];
	int parsed;             /* a node the scanner cannot judge: check parsed */
};

/* A span of text that is a canonical key (or not: *err). */
static int tkey_valid(const char *text, const struct opt_cnode *c)
{
	json_t *v;
	int ok;

	if (c->t == '0' || c->t == '"')
		return 1;
	if (c->t != '[')
		return 0;
	v = json_loadb(text + c->v, c->vl, JSON_DECODE_ANY, NULL);
	ok = v && opt_key_valid(v);
	json_decref(v);
	return ok;
}

struct tspan {
	const char *p;
	size_t l;
};

static int tin_bounds(const char *k, size_t kl, const struct tspan *lo, const struct tspan *hi, int *err)
{
	return (!lo || opt_raw_keys_cmp(k, kl, lo->p, lo->l, err) >= 0) && (!hi || opt_raw_keys_cmp(k, kl, hi->p, hi->l, err) < 0);
}

/* The string node c of text: its bytes without quotes (no escapes in a
 * valid ID or name), or NULL when c is absent or not a string. */
static const char *tstr(const char *text, const struct opt_ctape *t, size_t c, size_t *len)
{
	if (!c || t->v[c].t != '"')
		return NULL;
	*len = t->v[c].vl - 2;
	return text + t->v[c].v + 1;
}

/* A node being checked on its text. */
struct tnode {
	const char *id;
	const char *text;
	struct opt_ctape *t;    /* its tape (k->tape[depth]) */
	int depth, kind;
	size_t ents, parts, nodes, hdr;  /* its members' tape nodes (0: none) */
};

/* Read node id at depth into *b and scan it: 0 when the scanner judged
 * it canonical, 1 when it is canonical but beyond the scanner (the whole
 * tree is then checked parsed: k->parsed), or an error. */
static int tread(struct tcheck *k, const char *id, int depth, struct opt_bytes *b)
{
	int rc;

	if (depth >= MAX_DEPTH)
		return opt_error_set(OPT_EINTEGRITY, "btree deeper than %d levels at block '%s'", MAX_DEPTH, id);
	if (json_object_get(k->visited, id))
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is reached twice", id);
	if (json_object_set_new(k->visited, id, json_true()) < 0)
		return opt_error_oom();
	rc = k->bytes(k->bctx, id, b);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is missing", id);
	if (rc < 0)
		return rc;
	if (k->seen && (rc = k->seen(k->sarg, id, b->data, b->len)) < 0)
		return rc;
	if ((rc = opt_canon_scan(b->data, b->len, 3, &k->tape[depth])) < 0)
		return rc;
	if (rc == 0) {
		if ((rc = opt_canon_check_parsed(b->data, b->len)) < 0)
			return rc;
		if (rc == 0)
			return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is not stored as canonical JSON", id);
		k->parsed = 1;  /* canonical, but beyond the scanner */
		return 1;
	}
	return 0;
}

/* The number of elements of array node a of tape t. */
static size_t tcount(const struct opt_ctape *t, size_t a)
{
	size_t n = 0, c;

	for (c = a + 1; c < t->v[a].next; c = t->v[c].next)
		n++;
	return n;
}

/* What node nd is: a leaf (an "entries" array) or a branch ("partitions"
 * and "nodes" arrays, one more node than partitions). */
static int tkind(struct tnode *nd)
{
	const struct opt_cnode *v = nd->t->v;
	const struct opt_ctape *t = nd->t;

	if (v[0].t != '{')
		goto bad;
	nd->ents = opt_ctape_member(t, nd->text, 0, "entries");
	nd->parts = opt_ctape_member(t, nd->text, 0, "partitions");
	nd->nodes = opt_ctape_member(t, nd->text, 0, "nodes");
	nd->hdr = opt_ctape_member(t, nd->text, 0, "header");
	if (nd->ents && v[nd->ents].t == '[') {
		nd->kind = LEAF;
		return 0;
	}
	if (nd->parts && v[nd->parts].t == '[' && nd->nodes && v[nd->nodes].t == '[' &&
	    tcount(t, nd->nodes) == tcount(t, nd->parts) + 1) {
		nd->kind = BRANCH;
		return 0;
	}
bad:
	return opt_error_set(OPT_EINTEGRITY, "block '%s' is not a btree node: it needs an \"entries\" array, or \"partitions\" and \"nodes\" arrays with one more node than partitions", nd->id);
}

/* The header of node nd: its type, its ID, the root's collection. */
static int theader(struct tcheck *k, const struct tnode *nd)
{
	const struct opt_ctape *t = nd->t;
	const char *s, *id = nd->id, *text = nd->text;
	size_t sl = 0;
	int leaf = nd->kind == LEAF;

	s = nd->hdr ? tstr(text, t, opt_ctape_member(t, text, nd->hdr, "type"), &sl) : NULL;
	if (!s || sl != 2 || memcmp(s, leaf ? "TL" : "TB", 2) != 0) {
		char ty[64];
		if (s)
			snprintf(ty, sizeof(ty), "%.*s", (int)(sl < 60 ? sl : 60), s);
		return opt_error_set(OPT_EINTEGRITY, "btree %s '%s' has type %s, not %s", leaf ? "leaf" : "branch", id,
				     s ? ty : "missing", leaf ? "TL" : "TB");
	}
	s = nd->hdr ? tstr(text, t, opt_ctape_member(t, text, nd->hdr, "id"), &sl) : NULL;
	if (!s || sl != strlen(id) || memcmp(s, id, sl) != 0)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' has the ID '%.*s' in its header", id,
				     s ? (int)(sl < 100 ? sl : 100) : 0, s ? s : "");
	s = nd->hdr ? tstr(text, t, opt_ctape_member(t, text, nd->hdr, "collection"), &sl) : NULL;
	if (!s)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' has no collection", id);
	if (!k->coll) {
		OPT_CHECK_ALLOC(k->coll = malloc(sl + 1));
		memcpy(k->coll, s, sl);
		k->coll[sl] = '\0';
		k->colll = sl;
	}
	if (sl != k->colll || memcmp(s, k->coll, sl) != 0)
		return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is in collection '%.*s', the root in '%s'", id,
				     (int)(sl < 200 ? sl : 200), s, k->coll);
	return 0;
}

/* Leaf nd: its depth, its fill, its entries sorted, valid and within
 * [lo, hi). */
static int tleaf(struct tcheck *k, const struct tnode *nd, const struct tspan *lo, const struct tspan *hi)
{
	const struct opt_cnode *v = nd->t->v;
	const char *id = nd->id, *text = nd->text;
	size_t n = tcount(nd->t, nd->ents), i, c, pc = 0;
	int depth = nd->depth, err = 0;

	if (k->leaf_depth < 0)
		k->leaf_depth = depth;
	if (depth != k->leaf_depth)
		return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' is at depth %d, another at %d", id, depth,
				     k->leaf_depth);
	if (n > k->max || (depth > 0 && n < k->min))
		return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' holds %zu entries (%zu-%zu allowed)", id, n,
				     depth ? k->min : 0, k->max);
	for (i = 0, c = nd->ents + 1; c < v[nd->ents].next; c = v[c].next, i++) {
		size_t key = c + 1;
		if (v[c].t != '[' || v[c].next != c + 3 || !tkey_valid(text, &v[key]))
			return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' entry %zu is not a [key, value] pair", id, i);
		if (pc && opt_raw_keys_cmp(text + v[pc].v, v[pc].vl, text + v[key].v, v[key].vl, &err) >= 0)
			return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' entries %zu and %zu are out of order", id,
					     i - 1, i);
		if (err)
			return opt_error_set(OPT_EINTEGRITY, "btree leaf '%s' entry %zu is not a [key, value] pair", id, i);
		if (!tin_bounds(text + v[key].v, v[key].vl, lo, hi, &err) || err)
			return opt_error_set(OPT_EINTEGRITY,
					     "btree leaf '%s' entry %zu is outside the bounds of its parent's partitions",
					     id, i);
		pc = key;
	}
	k->count += n;
	return 0;
}

static int tcheck_node(struct tcheck *k, const char *id, int depth, const struct tspan *lo, const struct tspan *hi);

/* Branch nd: its fill, its partitions sorted, valid and within [lo, hi),
 * then each child within the partitions around it (spans of this node's
 * text, which stays while they are checked; the tape of this depth is
 * not touched below it). */
static int tbranch(struct tcheck *k, const struct tnode *nd, const struct tspan *lo, const struct tspan *hi)
{
	const struct opt_cnode *v = nd->t->v;
	const char *id = nd->id, *text = nd->text, *s;
	char child[OPT_ID_MAX + 1];
	size_t n = tcount(nd->t, nd->nodes), i, c, pc = 0, sl = 0, pcur = nd->parts + 1;
	struct tspan plo, phi;
	int rc, err = 0;

	if (n > k->max || (nd->depth > 0 && n < k->min) || n < 2)
		return opt_error_set(OPT_EINTEGRITY, "btree branch '%s' has %zu children (%zu-%zu allowed)", id, n,
				     nd->depth ? k->min : 2, k->max);
	for (i = 0, c = nd->parts + 1; c < v[nd->parts].next; c = v[c].next, i++) {
		if (!tkey_valid(text, &v[c]))
			return opt_error_set(OPT_EINTEGRITY, "btree branch '%s' partition %zu is not a valid key", id, i);
		if (pc && (opt_raw_keys_cmp(text + v[pc].v, v[pc].vl, text + v[c].v, v[c].vl, &err) >= 0 || err))
			return opt_error_set(OPT_EINTEGRITY, "btree branch '%s' partitions %zu and %zu are out of order",
					     id, i - 1, i);
		if (!tin_bounds(text + v[c].v, v[c].vl, lo, hi, &err) || err)
			return opt_error_set(OPT_EINTEGRITY,
					     "btree branch '%s' partition %zu is outside the bounds of its parent's partitions",
					     id, i);
		pc = c;
	}
	for (i = 0, c = nd->nodes + 1; c < v[nd->nodes].next; c = v[c].next, i++) {
		s = tstr(text, nd->t, c, &sl);
		if (!s || sl > OPT_ID_MAX)
			return opt_error_set(OPT_EINTEGRITY, "btree block '%s' holds an invalid block ID", id);
		memcpy(child, s, sl);
		child[sl] = '\0';
		if (!opt_id_valid(child))
			return opt_error_set(OPT_EINTEGRITY, "btree block '%s' holds an invalid block ID", id);
		if (i + 1 < n) {
			phi.p = text + v[pcur].v;
			phi.l = v[pcur].vl;
		}
		if ((rc = tcheck_node(k, child, nd->depth + 1, i ? &plo : lo, i + 1 < n ? &phi : hi)) != 0)
			return rc;
		if (i + 1 < n) {
			plo = phi;
			pcur = v[pcur].next;
		}
	}
	return 0;
}

static int tcheck_node(struct tcheck *k, const char *id, int depth, const struct tspan *lo, const struct tspan *hi)
{
	struct opt_bytes b = { 0 };
	struct tnode nd = { id, NULL, &k->tape[depth < MAX_DEPTH ? depth : 0], depth, 0, 0, 0, 0, 0 };
	int rc;

	if ((rc = tread(k, id, depth, &b)) != 0)
		goto done;
	nd.text = b.data;
	if ((rc = tkind(&nd)) < 0 || (rc = theader(k, &nd)) < 0)
		goto done;
	if (nd.kind == LEAF)
		rc = tleaf(k, &nd, lo, hi);
	else
		rc = tbranch(k, &nd, lo, hi);
done:
	opt_bytes_release(&b);
	return rc;
}

static int check_parsed(const struct opt_source *src, const char *header_id, size_t *count);

/* The whole tree, checked on the text of its nodes (o->bytes). */
static int check_text(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *o,
		      size_t *count)
{
	struct tcheck *k;
	struct header h;
	int rc, i;

	if (count)
		*count = 0;
	if ((rc = read_header(&h, src, header_id)) < 0)
		return rc;
	if (!(k = calloc(1, sizeof(*k))))
		return opt_error_oom();
	k->bytes = o->bytes;
	k->bctx = o->bctx;
	k->seen = o->seen;
	k->sarg = o->sarg;
	k->min = (size_t)h.cap / 2;
	k->max = (size_t)h.cap;
	k->leaf_depth = -1;
	if (!(k->visited = json_object())) {
		free(k);
		return opt_error_oom();
	}
	rc = tcheck_node(k, h.root, 0, NULL, NULL);
	if (rc == 0 && count)
		*count = k->count;
	json_decref(k->visited);
	free(k->coll);
	for (i = 0; i < MAX_DEPTH; i++)
		opt_ctape_free(&k->tape[i]);
	free(k);
	if (rc == 1) {
		/* a node the scanner could not judge (canonical all the same):
		 * the whole tree parsed, as check_parsed does */
		rc = check_parsed(src, header_id, count);
	}
	return rc;
}

/* The whole tree, parsed. */
static int check_parsed(const struct opt_source *src, const char *header_id, size_t *count)
{
	struct check k = { src, 0, 0, 0, -1, NULL, NULL };
	struct header h;
	int rc;

	if (count)
		*count = 0;
	if ((rc = read_header(&h, src, header_id)) < 0)
		return rc;
	k.min = (size_t)h.cap / 2;
	k.max = (size_t)h.cap;
	if (!(k.seen = json_object()))
		return opt_error_oom();
	rc = check_node(&k, h.root, 0, NULL, NULL);
	if (rc == 0 && count)
		*count = k.count;
	json_decref(k.seen);
	free(k.coll);
	return rc;
}

/* The whole tree, read as o says. */
static int check_whole(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *o,
		       size_t *count)
{
	return o->bytes ? check_text(src, header_id, o, count) : check_parsed(src, header_id, count);
}

int opt_btree_check(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *opts,
		    size_t *count)
{
	static const struct opt_btree_check_opts none = OPT_BTREE_CHECK_OPTS_INIT;

	if (!opts)
		opts = &none;
	if (opts->base)
		return check_since(src, header_id, opts, count);
	return check_whole(src, header_id, opts, count);
}

/* ---- puts of canonical text into a tree that is not empty ----
 *
 * The batch is sorted as a bulk load sorts it; each leaf it touches is
 * read as stored text and merged with the batch's entries for it as text,
 * building no JSON values for the entries.  A leaf that overflows is cut
 * into pieces of at most capacity entries (each at least capacity/2), the
 * first keeping the leaf's ID; each further piece goes up into the
 * branches as a split's right half does (grow_up). */

struct merge {
	struct opt_tracker *t;
	const struct opt_source *raw;   /* the tracker's source, or NULL */
	const char *header_id;
	struct load L;
	int depth;                      /* the leaves' depth, once known */
	size_t added;
};

/* A leaf's stored text: l->b (borrowed from the source, or *own). */
struct mleaf {
	struct rawleaf l;
	char *own;
};

static void mleaf_release(struct mleaf *m)
{
	rawleaf_free(&m->l);
	free(m->own);
	m->own = NULL;
}

/* Node id: a branch (*b, borrowed from the tracker) or a leaf (its text in
 * m; *b NULL). */
static int merge_node(struct merge *M, const char *id, const json_t **b, struct mleaf *m)
{
	int rc, kind;

	*b = NULL;
	if (!opt_tracker_changed(M->t, id) && M->raw && M->raw->get_raw) {
		json_t *out = NULL;
		rc = M->raw->get_raw(M->raw->ctx, id, &out, &m->l.b);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_EINTEGRITY, "btree block '%s' is missing", id);
		if (rc < 0)
			return rc;
		if (!out)
			return 0;
		json_decref(out);
		opt_bytes_release(&m->l.b);
	}
	if ((rc = tget(M->t, id, b, &kind)) < 0)
		return rc;
	if (kind == BRANCH)
		return 0;
	if ((rc = opt_json_canon(&m->own, &m->l.b.len, *b)) < 0)
		return rc;
	m->l.b.data = m->own;
	*b = NULL;
	return 0;
}

/* Walk from the root to the leaf where key k[0..kl) belongs: p (the
 * leaf's index unset), *hi its upper bound (borrowed from the tracker,
 * valid until it changes; NULL for the last leaf).  With m, the leaf's
 * text is read into it; without, the walk stops above the leaf (the
 * leaves' depth must be known). */
static int merge_route(struct merge *M, struct path *p, const char *k, size_t kl, const json_t **hi,
		       struct mleaf *m)
{
	const json_t *b, *parts;
	int rc, d, err = 0;

	*hi = NULL;
	rc = opt_tracker_get(M->t, M->header_id, &b);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no btree header block '%s'", M->header_id);
	if (rc < 0 || (rc = header_parse(&p->h, b, M->header_id)) < 0)
		return rc;
	strcpy(p->lv[0].id, p->h.root);
	for (d = 0;; d++) {
		if (M->depth && d == M->depth - 1 && !m) {
			p->depth = d + 1;
			return 0;
		}
		if (!m) {
			/* above the leaves: branches only */
			struct mleaf x;
			memset(&x, 0, sizeof(x));
			rc = merge_node(M, p->lv[d].id, &b, &x);
			mleaf_release(&x);
			if (rc < 0)
				return rc;
			if (!b)
				return opt_error_set(OPT_EINTEGRITY, "btree under '%s' has leaves at different depths",
						     M->header_id);
		} else if ((rc = merge_node(M, p->lv[d].id, &b, m)) < 0) {
			return rc;
		}
		if (!b) {
			if (M->depth && M->depth != d + 1)
				return opt_error_set(OPT_EINTEGRITY, "btree under '%s' has leaves at different depths",
						     M->header_id);
			M->depth = p->depth = d + 1;
			return 0;
		}
		parts = json_object_get(b, "partitions");
		{
			size_t lo = 0, n = json_array_size(parts);
			while (lo < n) {
				size_t mid = lo + (n - lo) / 2;
				int c = opt_raw_key_cmp(k, kl, json_array_get(parts, mid), &err);
				if (err)
					return opt_error_set(OPT_EINVAL, "invalid btree key");
				if (c >= 0)
					lo = mid + 1;
				else
					n = mid;
			}
			p->lv[d].idx = lo;
		}
		if (p->lv[d].idx < json_array_size(parts))
			*hi = json_array_get(parts, p->lv[d].idx);
		if (d + 1 == MAX_DEPTH)
			return opt_error_set(OPT_EINTEGRITY, "btree under '%s' is deeper than %d levels", M->header_id,
					     MAX_DEPTH);
		if ((rc = copy_id(p->lv[d + 1].id, json_array_get(json_object_get(b, "nodes"), p->lv[d].idx),
				  p->lv[d].id)) < 0)
			return rc;
	}
}

/* One entry of a merged leaf: key and value text. */
struct ment {
	const char *k, *v;
	size_t kl, vl;
};

/* A leaf's text holding ents[0, n) under the header text of collection
 * c[0..cl) and ID id: into the tracker. */
static int merge_put_leaf(struct merge *M, const char *id, const struct ment *ents, size_t n, const char *c,
			  size_t cl)
{
	struct tbuf b = { NULL, 0, 0 };
	size_t x;
	int rc;

	if ((rc = tb_puts(&b, "{\"entries\":[")) < 0)
		goto fail;
	for (x = 0; x < n; x++)
		if ((rc = tb_puts(&b, x ? ",[" : "[")) < 0 || (rc = tb_put(&b, ents[x].k, ents[x].kl)) < 0 ||
		    (rc = tb_puts(&b, ",")) < 0 || (rc = tb_put(&b, ents[x].v, ents[x].vl)) < 0 ||
		    (rc = tb_puts(&b, "]")) < 0)
			goto fail;
	if ((rc = tb_puts(&b, "],\"header\":{\"collection\":")) < 0 || (rc = tb_put(&b, c, cl)) < 0 ||
	    (rc = tb_puts(&b, ",\"id\":\"")) < 0 || (rc = tb_puts(&b, id)) < 0 ||
	    (rc = tb_puts(&b, "\",\"type\":\"TL\"}}")) < 0)
		goto fail;
	return opt_tracker_insert_text(M->t, id, "TL", b.p, b.len);
fail:
	free(b.p);
	return rc;
}

/* The collection text c[0..cl) of leaf id's text, whose entries end at
 * off: 0, or 1 when the rest is not the header a leaf of ours has. */
static int merge_leaf_header(const struct rawleaf *l, size_t off, const char *id, const char **c, size_t *cl)
{
	static const char pre[] = "],\"header\":{\"collection\":\"", mid[] = ",\"id\":\"", post[] = "\",\"type\":\"TL\"}}";
	const char *s = l->b.data + off;
	size_t n = l->b.len - off, il = strlen(id), tail = sizeof(mid) - 1 + il + sizeof(post) - 1;

	if (n < sizeof(pre) - 1 + 1 + tail || memcmp(s, pre, sizeof(pre) - 1) != 0)
		return 1;
	*c = s + sizeof(pre) - 2;
	*cl = n - (sizeof(pre) - 2) - tail;
	s += n - tail;
	if (memcmp(s, mid, sizeof(mid) - 1) != 0 || memcmp(s + sizeof(mid) - 1, id, il) != 0 ||
	    memcmp(s + sizeof(mid) - 1 + il, post, sizeof(post) - 1) != 0 || (*c)[*cl - 1] != '"')
		return 1;
	return 0;
}

/* Merge the batch's entries e[j, k) into the leaf at the bottom of p (its
 * text in m): 0, 1 when the leaf's text is not as expected (nothing
 * changed), or <0. */
static int merge_leaf(struct merge *M, struct path *p, struct mleaf *m, size_t j, size_t k)
{
	const struct lk *e = M->L.e;
	struct rawleaf *l = &m->l;
	struct ment *out = NULL;
	const char *c;
	char *coll = NULL, id[OPT_ID_MAX + 1];
	size_t a = 0, n = 0, off, pieces, q, at, cl, cap = (size_t)p->h.cap;
	json_t *cj = NULL;
	int rc, err = 0;

	strcpy(id, p->lv[p->depth - 1].id);
	if (rawleaf_index(l) < 0)
		return 1;
	off = l->n ? l->ent[l->n - 1].v + l->ent[l->n - 1].vl + 1 : 12;
	if ((rc = merge_leaf_header(l, off, id, &c, &cl)) != 0)
		return rc;
	OPT_CHECK_ALLOC(out = malloc((l->n + (k - j)) * sizeof(*out)));
	while (a < l->n || j < k) {
		int cmp = a == l->n ? 1 : j == k ? -1 :
			opt_raw_keys_cmp(l->b.data + l->ent[a].k, l->ent[a].kl, e[j].k, e[j].kl, &err);
		if (err) {
			rc = 1;
			goto done;
		}
		if (cmp < 0) {
			out[n].k = l->b.data + l->ent[a].k;
			out[n].kl = l->ent[a].kl;
			out[n].v = l->b.data + l->ent[a].v;
			out[n].vl = l->ent[a].vl;
			a++;
		} else {
			if (cmp == 0)
				a++;
			else
				M->added++;
			out[n].k = e[j].k;
			out[n].kl = e[j].kl;
			out[n].v = e[j].v;
			out[n].vl = e[j].vl;
			j++;
		}
		n++;
	}
	pieces = n <= cap ? 1 : (n + cap - 1) / cap;
	if (pieces > 1) {
		if ((rc = opt_json_parse(&cj, c, cl)) < 0)
			goto done;
		if (!(coll = strdup(json_string_value(cj) ? json_string_value(cj) : ""))) {
			rc = opt_error_oom();
			goto done;
		}
	}
	for (q = 0, at = 0; q < pieces; q++) {
		size_t sz = n / pieces + (q < n % pieces ? 1 : 0);
		char pid[OPT_ID_MAX + 1], rid[OPT_ID_MAX + 1];
		struct path up;
		const json_t *hi;
		json_t *sep = NULL;

		if (q == 0)
			strcpy(pid, id);
		else
			opt_id_new(pid);
		if ((rc = merge_put_leaf(M, pid, out + at, sz, c, cl)) < 0)
			goto done;
		if (q > 0) {
			/* the piece's first key routes to the piece before it
			 * until the branches know the piece */
			if ((rc = opt_json_parse(&sep, out[at].k, out[at].kl)) < 0 ||
			    (rc = merge_route(M, &up, out[at].k, out[at].kl, &hi, NULL)) < 0) {
				json_decref(sep);
				goto done;
			}
			strcpy(rid, pid);
			if ((rc = grow_up(&up, M->t, M->header_id, up.depth - 1, sep, rid, coll)) < 0)
				goto done;
			{
				/* a split that reached the root put a new one above */
				const json_t *hb;
				struct header h;
				if ((rc = opt_tracker_get(M->t, M->header_id, &hb)) < 0 ||
				    (rc = header_parse(&h, hb, M->header_id)) < 0)
					goto done;
				if (strcmp(h.root, up.lv[0].id) != 0)
					M->depth++;
			}
		}
		at += sz;
	}
	rc = 0;
done:
	json_decref(cj);
	free(coll);
	free(out);
	return rc;
}

int opt_btree_merge_text(struct opt_tracker *t, const struct opt_source *raw, const char *header_id,
			 const struct opt_kv_text *kv, size_t n, size_t *added)
{
	struct merge M = { .t = t, .raw = raw, .header_id = header_id, .L = { .t = t, .n = n } };
	size_t i, j, k;
	int rc = 0, err = 0;

	*added = 0;
	if (n == 0)
		return 0;
	if ((rc = load_keys(&M.L, kv)) < 0 || (rc = load_sort(&M.L)) < 0)
		goto done;
	load_dedup(&M.L);
	for (j = 0; j < M.L.m; j = k) {
		struct mleaf m;
		struct path p;
		const json_t *hi;

		memset(&m, 0, sizeof(m));
		if ((rc = merge_route(&M, &p, M.L.e[j].k, M.L.e[j].kl, &hi, &m)) < 0) {
			mleaf_release(&m);
			goto done;
		}
		/* the batch's keys below the leaf's upper bound are its */
		for (k = j + 1; k < M.L.m && (!hi || opt_raw_key_cmp(M.L.e[k].k, M.L.e[k].kl, hi, &err) < 0) && !err; k++)
			;
		rc = err ? 1 : merge_leaf(&M, &p, &m, j, k);
		mleaf_release(&m);
		if (rc != 0)
			goto done;
	}
	*added = M.added;
done:
	for (i = 0; M.L.e && i < n; i++)
		json_decref(M.L.e[i].j);
	free(M.L.e);
	return rc;
}
