#include "chain.h"
#include "error.h"
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define ID_BUF (OPT_ID_MAX + 1)

static const char *bid(const json_t *block)
{
	const char *id = opt_block_id(block);

	return id ? id : "?";
}

/* Copy an ID already checked with opt_id_valid (so it fits). */
static void id_copy(char dst[ID_BUF], const char *src)
{
	snprintf(dst, ID_BUF, "%s", src);
}

/* A link field of block: 0 and *out (borrowed; NULL when absent or null),
 * or OPT_EINTEGRITY when it is not a valid ID. */
static int link_get(const json_t *block, const char *field, const char **out)
{
	const json_t *v = json_object_get(block, field);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || !opt_id_valid(json_string_value(v)))
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s': \"%s\" is not a block ID",
				     bid(block), field);
	*out = json_string_value(v);
	return 0;
}

static int entries_get(const json_t *block, const json_t **out)
{
	const json_t *e = json_object_get(block, "entries");

	*out = NULL;
	if (!json_is_array(e))
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' has no \"entries\" array",
				     bid(block));
	*out = e;
	return 0;
}

/* The chain links of a header block: 1 and head, tail copied when it holds
 * a chain, 0 when it holds none, OPT_EINTEGRITY when they are malformed. */
static int header_links(const json_t *h, const char *header_id, char head[ID_BUF], char tail[ID_BUF])
{
	const json_t *hv = json_object_get(h, "headId"), *tv = json_object_get(h, "tailId");

	if (json_is_null(hv))
		hv = NULL;
	if (json_is_null(tv))
		tv = NULL;
	if (!hv && !tv)
		return 0;
	if (!json_is_string(hv) || !opt_id_valid(json_string_value(hv)) ||
	    !json_is_string(tv) || !opt_id_valid(json_string_value(tv)))
		return opt_error_set(OPT_EINTEGRITY, "chain header '%.80s': \"headId\" and \"tailId\" must both be block IDs",
				     header_id);
	id_copy(head, json_string_value(hv));
	id_copy(tail, json_string_value(tv));
	return 1;
}

/* A data block as seen by a reader, checked: it is an object whose header
 * ID is id, with an entries array. */
static int data_check(const json_t *b, const char *id, const json_t **entries)
{
	const char *got = opt_block_id(b);

	if (!json_is_object(b) || !got || strcmp(got, id) != 0)
		return opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' is malformed or has another ID", id);
	return entries_get(b, entries);
}

/* ---- reading through a source ---- */

static int src_header(const struct opt_source *src, const char *header_id,
		      char head[ID_BUF], char tail[ID_BUF])
{
	json_t *h = NULL;
	int rc;

	if (!header_id)
		return opt_error_set(OPT_EINVAL, "no chain header ID given");
	rc = src->get(src->ctx, header_id, &h);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no chain header block '%.80s'", header_id);
	if (rc < 0)
		return rc;
	rc = header_links(h, header_id, head, tail);
	json_decref(h);
	return rc;
}

/* A cursor over the data blocks, holding one block at a time.  Cycles are
 * caught with Brent's method (one remembered ID), broken links by checking
 * that each block links back to the one before it. */
struct walker {
	struct opt_source src;
	json_t *block;          /* current block (new reference), NULL at the end */
	const json_t *entries;  /* its entries (borrowed from block) */
	int forward;
	char mark[ID_BUF];
	char end[ID_BUF];       /* where the walk must end (the header's tail or
				   head), "" when unknown */
	unsigned long power, lam;
};

static void walker_release(struct walker *w)
{
	json_decref(w->block);
	w->block = NULL;
	w->entries = NULL;
}

/* Load block id as the current block; from names the block or header that
 * links to it (for messages), NULL for a position given by the caller. */
static int walker_load(struct walker *w, const char *id, const char *from)
{
	json_t *b = NULL;
	const json_t *e;
	int rc = w->src.get(w->src.ctx, id, &b);

	if (rc == OPT_ENOTFOUND)
		return from ? opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' (linked from '%.80s') is missing",
					    id, from)
			    : opt_error_set(OPT_ENOTFOUND, "no chain data block '%.80s'", id);
	if (rc < 0)
		return rc;
	if ((rc = data_check(b, id, &e)) < 0) {
		json_decref(b);
		return rc;
	}
	walker_release(w);
	w->block = b;
	w->entries = e;
	id_copy(w->mark, id);
	w->power = 1;
	w->lam = 0;
	return 0;
}

/* Move to the next block in the walker's direction: 1 when moved, 0 when
 * the current block is the last one (it stays current), <0 on error. */
static int walker_step(struct walker *w)
{
	const char *next, *back;
	char cur[ID_BUF];
	json_t *nb = NULL;
	const json_t *e;
	int rc;

	if ((rc = link_get(w->block, w->forward ? "nextId" : "priorId", &next)) < 0)
		return rc;
	if (!next) {
		/* the walk must end where the header says the chain ends */
		if (w->end[0] && strcmp(bid(w->block), w->end) != 0)
			return opt_error_set(OPT_EINTEGRITY, "chain ends at block '%.80s', but its header names '%.80s'",
					     bid(w->block), w->end);
		return 0;
	}
	id_copy(cur, bid(w->block));
	if (strcmp(next, w->mark) == 0)
		return opt_error_set(OPT_EINTEGRITY, "chain has a cycle through block '%.80s'", next);
	rc = w->src.get(w->src.ctx, next, &nb);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' (linked from '%.80s') is missing",
				     next, cur);
	if (rc < 0)
		return rc;
	if ((rc = data_check(nb, next, &e)) < 0)
		goto done;
	if ((rc = link_get(nb, w->forward ? "priorId" : "nextId", &back)) < 0)
		goto done;
	if (!back || strcmp(back, cur) != 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' does not link back to '%.80s'",
				   next, cur);
		goto done;
	}
	walker_release(w);
	w->block = nb;
	w->entries = e;
	nb = NULL;
	if (++w->lam == w->power) {
		id_copy(w->mark, bid(w->block));
		w->power *= 2;
		w->lam = 0;
	}
	rc = 1;
done:
	json_decref(nb);
	return rc;
}

/* Position w at the head (forward) or the tail of the chain of header_id.
 * The end block must have no link beyond itself. */
static int walker_open(struct walker *w, const struct opt_source *src, const char *header_id, int forward)
{
	char head[ID_BUF], tail[ID_BUF];
	const char *beyond;
	int rc;

	memset(w, 0, sizeof(*w));
	w->src = *src;
	w->forward = forward;
	rc = src_header(src, header_id, head, tail);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return opt_error_set(OPT_ENOTFOUND, "block '%.80s' holds no chain", header_id);
	if ((rc = walker_load(w, forward ? head : tail, header_id)) < 0)
		return rc;
	id_copy(w->end, forward ? tail : head);
	if ((rc = link_get(w->block, forward ? "priorId" : "nextId", &beyond)) < 0)
		goto done;
	if (beyond)
		rc = opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' is the %s of '%.80s' but has a \"%s\"",
				   bid(w->block), forward ? "head" : "tail", header_id,
				   forward ? "priorId" : "nextId");
done:
	if (rc < 0)
		walker_release(w);
	return rc;
}

int opt_chain_has(const struct opt_source *src, const char *header_id)
{
	char head[ID_BUF], tail[ID_BUF];

	return src_header(src, header_id, head, tail);
}

struct opt_chain_iter {
	struct walker w;
	long index;     /* next entry of the current block to return */
	long last;      /* index of the entry returned last, -1 if none */
};

int opt_chain_iter_open(struct opt_chain_iter **out, const struct opt_source *src,
			const char *header_id, int forward)
{
	struct opt_chain_iter *it = calloc(1, sizeof(*it));
	int rc;

	*out = NULL;
	OPT_CHECK_ALLOC(it);
	if ((rc = walker_open(&it->w, src, header_id, forward)) < 0)
		goto done;
	it->index = forward ? 0 : (long)json_array_size(it->w.entries) - 1;
	it->last = -1;
	*out = it;
	it = NULL;
done:
	opt_chain_iter_free(it);
	return rc;
}

int opt_chain_iter_open_at(struct opt_chain_iter **out, const struct opt_source *src,
			   const struct opt_chain_pos *pos, int forward)
{
	struct opt_chain_iter *it = NULL;
	int rc;

	*out = NULL;
	if (!opt_id_valid(pos->block_id))
		return opt_error_set(OPT_EINVAL, "invalid chain position: bad block ID '%s'", opt_esc(pos->block_id));
	it = calloc(1, sizeof(*it));
	OPT_CHECK_ALLOC(it);
	it->w.src = *src;
	it->w.forward = forward;
	if ((rc = walker_load(&it->w, pos->block_id, NULL)) < 0)
		goto done;
	if (pos->index < 0 || (size_t)pos->index >= json_array_size(it->w.entries)) {
		rc = opt_error_set(OPT_EINVAL, "invalid chain position: block '%s' has no entry %ld",
				   pos->block_id, pos->index);
		goto done;
	}
	it->index = pos->index;
	it->last = -1;
	*out = it;
	it = NULL;
done:
	opt_chain_iter_free(it);
	return rc;
}

int opt_chain_iter_next(struct opt_chain_iter *it, const json_t **entry)
{
	int rc;

	*entry = NULL;
	it->last = -1;
	while (it->w.block) {
		long len = (long)json_array_size(it->w.entries);

		if (it->index >= 0 && it->index < len) {
			*entry = json_array_get(it->w.entries, (size_t)it->index);
			it->last = it->index;
			it->index += it->w.forward ? 1 : -1;
			return 1;
		}
		rc = walker_step(&it->w);
		if (rc <= 0) {
			walker_release(&it->w);
			return rc;
		}
		it->index = it->w.forward ? 0 : (long)json_array_size(it->w.entries) - 1;
	}
	return 0;
}

int opt_chain_iter_pos(const struct opt_chain_iter *it, struct opt_chain_pos *pos)
{
	if (!it->w.block || it->last < 0)
		return opt_error_set(OPT_EINVAL, "the chain iterator is not at an entry");
	id_copy(pos->block_id, bid(it->w.block));
	pos->index = it->last;
	return 0;
}

void opt_chain_iter_free(struct opt_chain_iter *it)
{
	if (!it)
		return;
	walker_release(&it->w);
	free(it);
}

/* The first entry in one direction, as a copy. */
static int chain_end_entry(const struct opt_source *src, const char *header_id, int forward,
			   json_t **entry)
{
	struct opt_chain_iter *it = NULL;
	const json_t *e;
	int rc;

	*entry = NULL;
	if ((rc = opt_chain_iter_open(&it, src, header_id, forward)) < 0)
		goto done;
	rc = opt_chain_iter_next(it, &e);
	if (rc < 0)
		goto done;
	if (rc == 0) {
		rc = opt_error_set(OPT_ENOTFOUND, "the chain of '%.80s' is empty", header_id);
		goto done;
	}
	*entry = opt_json_copy(e);
	rc = *entry ? 0 : opt_error_oom();
done:
	opt_chain_iter_free(it);
	return rc;
}

int opt_chain_last(const struct opt_source *src, const char *header_id, json_t **entry)
{
	return chain_end_entry(src, header_id, 0, entry);
}

int opt_chain_first(const struct opt_source *src, const char *header_id, json_t **entry)
{
	return chain_end_entry(src, header_id, 1, entry);
}

int opt_chain_count(const struct opt_source *src, const char *header_id, size_t *n)
{
	struct walker w;
	size_t sum = 0;
	int rc;

	*n = 0;
	if ((rc = walker_open(&w, src, header_id, 1)) < 0)
		return rc;
	do {
		sum += json_array_size(w.entries);
	} while ((rc = walker_step(&w)) > 0);
	walker_release(&w);
	if (rc == 0)
		*n = sum;
	return rc;
}

/* ---- changing through a tracker ---- */

/* The chain links of header_id as the tracker sees it. */
static int t_header(struct opt_tracker *t, const char *header_id, char head[ID_BUF], char tail[ID_BUF])
{
	const json_t *h;
	int rc;

	if (!header_id)
		return opt_error_set(OPT_EINVAL, "no chain header ID given");
	rc = opt_tracker_get(t, header_id, &h);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no chain header block '%.80s'", header_id);
	if (rc < 0)
		return rc;
	rc = header_links(h, header_id, head, tail);
	if (rc == 0)
		return opt_error_set(OPT_ENOTFOUND, "block '%.80s' holds no chain", header_id);
	return rc < 0 ? rc : 0;
}

/* Data block id as the tracker sees it (borrowed, valid until the block
 * changes); from names what links to it. */
static int t_block(struct opt_tracker *t, const char *id, const char *from,
		   const json_t **out, const json_t **entries)
{
	int rc = opt_tracker_get(t, id, out);

	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' (linked from '%.80s') is missing",
				     id, from);
	if (rc < 0)
		return rc;
	return data_check(*out, id, entries);
}

/* Set (value not NULL) or remove a link field of block id. */
static int set_link(struct opt_tracker *t, const char *id, const char *field, const char *value)
{
	json_t *op = value ? json_pack("[s,i,i,s]", field, 0, 0, value)
			   : json_pack("[s,i,i,n]", field, 0, 0);
	int rc;

	OPT_CHECK_ALLOC(op);
	rc = opt_tracker_update(t, id, op);
	json_decref(op);
	return rc;
}

/* Splice the entries of block id: remove del at index, insert ins (copied). */
static int splice(struct opt_tracker *t, const char *id, size_t index, size_t del, json_t *ins)
{
	json_t *op = json_pack("[s,I,I,O]", "entries", (json_int_t)index, (json_int_t)del, ins);
	int rc;

	OPT_CHECK_ALLOC(op);
	rc = opt_tracker_update(t, id, op);
	json_decref(op);
	return rc;
}

int opt_chain_create(struct opt_tracker *t, const char *header_id,
		     const char *collection, const char *data_type)
{
	char did[ID_BUF];
	const json_t *h;
	json_t *b = NULL;
	size_t tok;
	int rc, marked = 0;

	if (!header_id)
		return opt_error_set(OPT_EINVAL, "no chain header ID given");
	if (!data_type || !*data_type)
		return opt_error_set(OPT_EINVAL, "a chain needs a data block type");
	rc = opt_tracker_get(t, header_id, &h);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no chain header block '%.80s'", header_id);
	if (rc < 0)
		return rc;
	if ((json_object_get(h, "headId") && !json_is_null(json_object_get(h, "headId"))) ||
	    (json_object_get(h, "tailId") && !json_is_null(json_object_get(h, "tailId"))))
		return opt_error_set(OPT_EINVAL, "block '%.80s' already holds a chain", header_id);
	if (!collection)
		collection = opt_block_collection(h);
	if (!collection)
		return opt_error_set(OPT_EINVAL, "block '%.80s' has no collection", header_id);
	if ((rc = opt_block_new(&b, NULL, data_type, collection)) < 0)
		goto done;
	if (json_object_set_new(b, "entries", json_array()) < 0) {
		rc = opt_error_oom();
		goto done;
	}
	id_copy(did, opt_block_id(b));
	opt_tracker_mark(t, &tok);
	marked = 1;
	rc = opt_tracker_insert_new(t, b);
	b = NULL;
	if (rc < 0)
		goto done;
	if ((rc = set_link(t, header_id, "headId", did)) < 0)
		goto done;
	rc = set_link(t, header_id, "tailId", did);
done:
	if (marked) {
		if (rc < 0)
			opt_tracker_rollback(t, tok);
		else
			opt_tracker_release(t, tok);
	}
	json_decref(b);
	return rc;
}

/* A new data block after prior holding copies of entries[from, from+k). */
static int new_block(json_t **out, const char *type, const char *coll, const char *prior,
		     const json_t *entries, size_t from, size_t k)
{
	json_t *b = NULL, *arr = json_array(), *e;
	size_t j;
	int rc;

	*out = NULL;
	OPT_CHECK_ALLOC(arr);
	for (j = 0; j < k; j++) {
		/* entries are shared, not copied: nothing changes them in place */
		e = json_incref(json_array_get(entries, from + j));
		if (!e || json_array_append_new(arr, e) < 0) {
			rc = opt_error_oom();
			goto done;
		}
	}
	if ((rc = opt_block_new(&b, NULL, type, coll)) < 0)
		goto done;
	if (json_object_set_new(b, "entries", arr) < 0 ||
	    json_object_set_new(b, "priorId", json_string(prior)) < 0) {
		arr = NULL;
		rc = opt_error_oom();
		goto done;
	}
	arr = NULL;
	*out = b;
	b = NULL;
done:
	json_decref(arr);
	json_decref(b);
	return rc;
}

static int chain_add(struct opt_tracker *t, const char *header_id, const json_t *entries, int start_new,
		     int then_empty);

int opt_chain_add(struct opt_tracker *t, const char *header_id, const json_t *entries)
{
	return chain_add(t, header_id, entries, 0, 0);
}

int opt_chain_add_new_block(struct opt_tracker *t, const char *header_id, const json_t *entries)
{
	return chain_add(t, header_id, entries, 1, 0);
}

int opt_chain_add_sealed(struct opt_tracker *t, const char *header_id, const json_t *entries)
{
	return chain_add(t, header_id, entries, 1, 1);
}

/* The tail block of header_id's chain, which chain_add appends to: its
 * entries (*ents, borrowed) and its type and collection (copies, which
 * new blocks take). */
static int add_tail(struct opt_tracker *t, const char *header_id, const char *tail, const json_t **ents,
		    char **type, char **coll)
{
	const json_t *b;
	const char *beyond;
	int rc;

	if ((rc = t_block(t, tail, header_id, &b, ents)) < 0)
		return rc;
	if ((rc = link_get(b, "nextId", &beyond)) < 0)
		return rc;
	if (beyond)
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' is the tail of '%.80s' but has a \"nextId\"",
				     tail, header_id);
	if (!opt_block_type(b) || !opt_block_collection(b))
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' has no type or collection", tail);
	*type = strdup(opt_block_type(b));
	*coll = strdup(opt_block_collection(b));
	if (!*type || !*coll)
		return opt_error_oom();
	return 0;
}

/* Fill the tail block (holding len entries) with the first entries, as
 * many as it has room for: *i gets how many. */
static int fill_tail(struct opt_tracker *t, const char *tail, size_t len, const json_t *entries, size_t *i)
{
	size_t n = json_array_size(entries), k = OPT_CHAIN_ENTRIES - len < n ? OPT_CHAIN_ENTRIES - len : n;
	json_t *slice = json_array();
	int rc = 0;

	*i = 0;
	OPT_CHECK_ALLOC(slice);
	for (; *i < k && rc == 0; ++*i)
		if (json_array_append(slice, json_array_get(entries, *i)) < 0)
			rc = opt_error_oom();
	if (rc == 0)
		rc = splice(t, tail, len, 0, slice);
	json_decref(slice);
	return rc;
}

/* Link a new block of entries[from, from+k) after block cur, which
 * becomes it. */
static int link_new_block(struct opt_tracker *t, char cur[ID_BUF], const char *type, const char *coll,
			  const json_t *entries, size_t from, size_t k)
{
	char nid[ID_BUF];
	json_t *nb = NULL;
	int rc;

	if ((rc = new_block(&nb, type, coll, cur, entries, from, k)) < 0)
		return rc;
	id_copy(nid, opt_block_id(nb));
	if ((rc = opt_tracker_insert_new(t, nb)) < 0 || (rc = set_link(t, cur, "nextId", nid)) < 0)
		return rc;
	id_copy(cur, nid);
	return 0;
}

static int chain_add(struct opt_tracker *t, const char *header_id, const json_t *entries, int start_new,
		     int then_empty)
{
	char head[ID_BUF], tail[ID_BUF], cur[ID_BUF];
	char *type = NULL, *coll = NULL;
	const json_t *ents;
	size_t n, i = 0, len, k, tok;
	int rc, marked = 0;

	if (!json_is_array(entries))
		return opt_error_set(OPT_EINVAL, "chain entries to add must be a JSON array");
	n = json_array_size(entries);
	if ((rc = t_header(t, header_id, head, tail)) < 0)
		return rc;
	if (n == 0)
		return 0;
	if ((rc = add_tail(t, header_id, tail, &ents, &type, &coll)) < 0)
		goto done;
	len = json_array_size(ents);
	opt_tracker_mark(t, &tok);
	marked = 1;
	if (len < OPT_CHAIN_ENTRIES && !(start_new && len > 0) && (rc = fill_tail(t, tail, len, entries, &i)) < 0)
		goto done;
	id_copy(cur, tail);
	for (; i < n; i += k) {
		k = n - i < OPT_CHAIN_ENTRIES ? n - i : OPT_CHAIN_ENTRIES;
		if ((rc = link_new_block(t, cur, type, coll, entries, i, k)) < 0)
			goto done;
	}
	/* an empty block after them takes the next entries: linking it now
	 * means no later append reads or rewrites theirs */
	if (then_empty && (rc = link_new_block(t, cur, type, coll, entries, 0, 0)) < 0)
		goto done;
	if (strcmp(cur, tail) != 0)
		rc = set_link(t, header_id, "tailId", cur);
done:
	if (marked) {
		if (rc < 0)
			opt_tracker_rollback(t, tok);
		else
			opt_tracker_release(t, tok);
	}
	free(type);
	free(coll);
	return rc;
}

/* The direction chain_remove takes entries in: from the tail (at_tail)
 * or the head; outward is the link that end must not have, inward the
 * link to its neighbour. */
struct rm_dir {
	int at_tail;
	const char *outward, *inward;
};

/* Take up to *remaining entries from block cur, the end of header_id's
 * chain: a chunk of copies appended to chunks, removed from the block.
 * *left gets 1 when entries stay in it, nbr its inward neighbour ("" at
 * the other end). */
static int take_entries(struct opt_tracker *t, const char *header_id, const struct rm_dir *d, const char *cur,
			size_t *remaining, json_t *chunks, int *left, char nbr[ID_BUF])
{
	const json_t *b, *ents;
	const char *link;
	json_t *chunk, *e, *none;
	size_t len, k, from, j;
	int rc;

	if ((rc = t_block(t, cur, header_id, &b, &ents)) < 0 || (rc = link_get(b, d->outward, &link)) < 0)
		return rc;
	if (link)
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' is the %s of '%.80s' but has a \"%s\"", cur,
				     d->at_tail ? "tail" : "head", header_id, d->outward);
	if ((rc = link_get(b, d->inward, &link)) < 0)
		return rc;
	nbr[0] = '\0';
	if (link)
		id_copy(nbr, link);
	len = json_array_size(ents);
	k = len < *remaining ? len : *remaining;
	from = d->at_tail ? len - k : 0;
	*left = len > k;
	if (k == 0)
		return 0;
	OPT_CHECK_ALLOC(chunk = json_array());
	for (j = 0; j < k; j++) {
		e = opt_json_copy(json_array_get(ents, from + j));
		if (!e || json_array_append_new(chunk, e) < 0) {
			json_decref(chunk);
			return opt_error_oom();
		}
	}
	if (json_array_append_new(chunks, chunk) < 0)
		return opt_error_oom();
	if (!(none = json_array()))
		return opt_error_oom();
	rc = splice(t, cur, from, k, none);
	json_decref(none);
	if (rc < 0)
		return rc;
	*remaining -= k;
	return 0;
}

/* Block cur is empty and has the neighbour nbr: drop it (nbr is the end
 * now). */
static int drop_block(struct opt_tracker *t, const struct rm_dir *d, const char *cur, const char *nbr)
{
	const json_t *b, *ents;
	const char *link;
	int rc;

	if ((rc = t_block(t, nbr, cur, &b, &ents)) < 0 || (rc = link_get(b, d->outward, &link)) < 0)
		return rc;
	if (!link || strcmp(link, cur) != 0)
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' does not link back to '%.80s'", nbr, cur);
	if ((rc = opt_tracker_delete(t, cur)) < 0)
		return rc;
	return set_link(t, nbr, d->outward, NULL);
}

/* The entries of chunks, taken going inward, in chain order. */
static int in_chain_order(json_t *chunks, int at_tail, json_t **out)
{
	size_t c, n = json_array_size(chunks);
	json_t *result = json_array();

	OPT_CHECK_ALLOC(result);
	for (c = 0; c < n; c++)
		if (json_array_extend(result, json_array_get(chunks, at_tail ? n - 1 - c : c)) < 0) {
			json_decref(result);
			return opt_error_oom();
		}
	*out = result;
	return 0;
}

/* Remove up to n entries from the tail (at_tail) or the head. */
static int chain_remove(struct opt_tracker *t, const char *header_id, size_t n, json_t **out,
			int at_tail)
{
	const struct rm_dir d = { at_tail, at_tail ? "nextId" : "priorId", at_tail ? "priorId" : "nextId" };
	char head[ID_BUF], tail[ID_BUF], start[ID_BUF], cur[ID_BUF], nbr[ID_BUF];
	json_t *chunks = NULL;
	size_t remaining = n, tok;
	int rc, left;

	*out = NULL;
	if ((rc = t_header(t, header_id, head, tail)) < 0)
		return rc;
	OPT_CHECK_ALLOC(chunks = json_array());
	id_copy(start, at_tail ? tail : head);
	id_copy(cur, start);
	opt_tracker_mark(t, &tok);
	while (remaining > 0) {
		if ((rc = take_entries(t, header_id, &d, cur, &remaining, chunks, &left, nbr)) < 0)
			goto done;
		if (left || !nbr[0])
			break;
		/* cur is empty and has a neighbour: drop it */
		if ((rc = drop_block(t, &d, cur, nbr)) < 0)
			goto done;
		id_copy(cur, nbr);
	}
	if (strcmp(cur, start) != 0 && (rc = set_link(t, header_id, at_tail ? "tailId" : "headId", cur)) < 0)
		goto done;
	rc = in_chain_order(chunks, at_tail, out);
done:
	if (rc < 0)
		opt_tracker_rollback(t, tok);
	else
		opt_tracker_release(t, tok);
	json_decref(chunks);
	return rc;
}

int opt_chain_pop(struct opt_tracker *t, const char *header_id, size_t n, json_t **out)
{
	return chain_remove(t, header_id, n, out, 1);
}

int opt_chain_dequeue(struct opt_tracker *t, const char *header_id, size_t n, json_t **out)
{
	return chain_remove(t, header_id, n, out, 0);
}
