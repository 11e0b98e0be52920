#include "txn.h"
#include "collection.h" /* the header types: the default, and their names in messages */
#include "error.h"
#include "json.h"
#include "identity.h"
#include "log.h"
#include "store/git.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct opt_txn {
	struct opt_store *s;
	const char *name;
	struct opt_snap *base;
	struct opt_tracker *t;
	json_t *actions;
	char *actions_text;     /* or the actions as canonical text */
	size_t actions_text_len, actions_text_n;
	char header_id[OPT_ID_LEN + 1];
	/* the signer */
	struct opt_identity id;
	int have_id;
	/* multi-collection transactions (docs/protocol.md) */
	const char *status;     /* NULL: committed; "pending"; "aborted" */
	const char *primary;
	json_t *collections;    /* names, or NULL */
	int64_t expires;        /* ms, for pending revisions */
	char primary_base[41];  /* the primary's head before the pends ("" if none) */
	long revert;            /* a revert of this pending revision */
};

struct opt_tracker *opt_txn_tracker(struct opt_txn *x) { return x->t; }
struct opt_snap *opt_txn_base(struct opt_txn *x) { return x->base; }
const char *opt_txn_header_id(struct opt_txn *x) { return x->header_id; }
const char *opt_txn_collection(struct opt_txn *x) { return x->name; }

int opt_txn_action(struct opt_txn *x, json_t *action)
{
	OPT_CHECK_ALLOC(action);
	if (x->actions_text) {
		json_decref(action);
		return opt_error_set(OPT_EINVAL, "a transaction's actions are either JSON values or one text");
	}
	if (json_array_append_new(x->actions, action) < 0)
		return opt_error_oom();
	return 0;
}

int opt_txn_actions_text(struct opt_txn *x, char *text, size_t len, size_t count)
{
	if (json_array_size(x->actions) || x->actions_text) {
		free(text);
		return opt_error_set(OPT_EINVAL, "a transaction's actions are either JSON values or one text");
	}
	x->actions_text = text;
	x->actions_text_len = len;
	x->actions_text_n = count;
	return 0;
}

int opt_txn_block_hash(const json_t *block, int is_header, char out[65])
{
	json_t *copy;
	int rc;

	if (!is_header)
		return opt_json_hash(out, block);
	copy = json_copy((json_t *)block);
	OPT_CHECK_ALLOC(copy);
	json_object_del(copy, "headId");
	json_object_del(copy, "tailId");
	json_object_del(copy, "logRev");
	json_object_del(copy, "logHash");
	json_object_del(copy, "logBig");
	rc = opt_json_hash(out, copy);
	json_decref(copy);
	return rc;
}

struct hash_ctx {
	json_t *blocks;
	struct opt_canon *canon;
	const char *header_id;
};

static int hash_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	struct hash_ctx *h = arg;
	char hex[65];
	const char *type;
	int rc;

	if (text) {
		/* a block inserted as canonical text: hashed as it is */
		if (strcmp(text->type, OPT_TYPE_LOG) == 0)
			return 0;  /* the log's own (opt_log_append_text) */
		if (strcmp(id, h->header_id) == 0)
			return opt_error_set(OPT_EINVAL, "the header block cannot be inserted as text");
		if (!opt_json_text_fits(text->text, text->len, 0)) {
			char what[OPT_ID_MAX + 16];
			snprintf(what, sizeof(what), "block '%s'", id);
			return opt_json_too_deep(what);
		}
		opt_sha256_hex(hex, text->text, text->len);
		if ((rc = opt_canon_add_borrowed(h->canon, id, text->text, text->len)) < 0)
			return rc;
		return json_object_set_new(h->blocks, id, json_string(hex)) < 0 ?
			opt_error_oom() : 0;
	}
	if (!block)
		return json_object_set_new(h->blocks, id, json_null()) < 0 ?
			opt_error_oom() : 0;
	type = opt_block_type(block);
	if (type && strcmp(type, OPT_TYPE_LOG) == 0)
		return 0;
	if (strcmp(id, h->header_id) == 0) {
		if ((rc = opt_txn_block_hash(block, 1, hex)) < 0)
			return rc;
	} else {
		/* serialize once: the store reuses these bytes for the blob;
		 * a block that could not be read back is refused here */
		char *s, what[OPT_ID_MAX + 16];
		size_t len;
		snprintf(what, sizeof(what), "block '%s'", id);
		if ((rc = opt_json_canon_at(&s, &len, block, 0, what)) < 0)
			return rc;
		opt_sha256_hex(hex, s, len);
		if ((rc = opt_canon_add(h->canon, id, s, len)) < 0)
			return rc;
	}
	return json_object_set_new(h->blocks, id, json_string(hex)) < 0 ?
		opt_error_oom() : 0;
}

static int sign_cb(void *ctx, const char *hash, char sig[129])
{
	return opt_identity_sign(ctx, hash, sig);
}

static long busy_timeout(const struct opt_txn_opts *o)
{
	const char *e;

	if (o && o->busy_timeout_ms > 0)
		return o->busy_timeout_ms;
	e = getenv("OPT_BUSY_TIMEOUT");
	if (e && *e)
		return atol(e);
	return 30000;
}

static int attempt(struct opt_txn *x, opt_txn_fn fn, void *arg, const struct opt_txn_opts *o,
		   const char *trx, struct opt_txn_result *res);

static int noop_fn(struct opt_txn *x, void *arg)
{
	(void)x;
	(void)arg;
	return 0;
}

static int64_t txn_ttl(void)
{
	const char *e = getenv("OPT_TXN_TTL");
	return e && *e ? atol(e) : 30000;
}

/* Block id, absent at the parent revision, in a revert: the header goes
 * back to a bare header (its type and name, and the log, which goes on:
 * the pend created the collection); another block goes. */
static int revert_absent(struct opt_txn *x, const char *id, json_t *blocks)
{
	const json_t *h;
	json_t *nh;
	char hex[65];
	int rc;

	opt_error_clear();
	if (strcmp(id, x->header_id) != 0) {
		if (opt_tracker_get(x->t, id, &h) == 0 && (rc = opt_tracker_delete(x->t, id)) < 0)
			return rc;
		opt_error_clear();
		json_object_set_new(blocks, id, json_null());
		return 0;
	}
	if ((rc = opt_tracker_get(x->t, id, &h)) < 0)
		return rc;
	nh = json_pack("{s:O,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "header", json_object_get(h, "header"), "name",
		       json_object_get(h, "name"), "headId", json_object_get(h, "headId"), "tailId",
		       json_object_get(h, "tailId"), "logRev", json_object_get(h, "logRev"), "logHash",
		       json_object_get(h, "logHash"), "logBig", json_object_get(h, "logBig"));
	if ((rc = opt_txn_block_hash(nh, 1, hex)) < 0 || (rc = opt_tracker_insert_new(x->t, nh)) < 0)
		return rc;
	json_object_set_new(blocks, id, json_string(hex));
	return 0;
}

/* The header as it was at the parent (pb, stolen), with the current log
 * links (the log goes on): *out. */
static int revert_header(struct opt_txn *x, json_t *pb, json_t **out)
{
	static const char *keep[] = { "headId", "tailId", "logRev", "logHash", "logBig" };
	const json_t *h;
	json_t *nh;
	size_t q;
	int rc;

	*out = NULL;
	if ((rc = opt_tracker_get(x->t, x->header_id, &h)) < 0) {
		json_decref(pb);
		return rc;
	}
	nh = json_copy(pb);
	for (q = 0; q < sizeof(keep) / sizeof(*keep); q++) {
		if (json_object_get(h, keep[q]))
			json_object_set(nh, keep[q], json_object_get(h, keep[q]));
		else
			json_object_del(nh, keep[q]);
	}
	json_decref(pb);
	*out = nh;
	return 0;
}

/* A revert of the pending revision x->base (rev x->revert): every block
 * its log entry lists goes back to its content at the parent revision;
 * the header too, except for its log links.  blocks gets the hashes. */
static int revert_blocks(struct opt_txn *x, json_t *blocks)
{
	struct opt_source cur = opt_snap_source(x->base), psrc;
	struct opt_snap *parent = NULL;
	json_t *entry = NULL, *pb, *v;
	const char *id;
	int rc;

	if ((rc = opt_log_last(&cur, x->header_id, &entry)) < 0)
		return rc;
	rc = opt_snap_parent(&parent, x->base);
	if (rc < 0 && rc != OPT_ENOTFOUND)
		goto done;
	opt_error_clear();
	if (parent)
		psrc = opt_snap_source(parent);
	json_object_foreach(json_object_get(entry, "blocks"), id, v) {
		char hex[65];
		int is_header = strcmp(id, x->header_id) == 0;
		pb = NULL;
		rc = parent ? psrc.get(psrc.ctx, id, &pb) : OPT_ENOTFOUND;
		if (rc == OPT_ENOTFOUND) {
			if ((rc = revert_absent(x, id, blocks)) < 0)
				goto done;
			continue;
		}
		if (rc < 0 || (is_header && (rc = revert_header(x, pb, &pb)) < 0))
			goto done;
		if ((rc = opt_txn_block_hash(pb, is_header, hex)) < 0 || (rc = opt_tracker_insert_new(x->t, pb)) < 0)
			goto done;
		json_object_set_new(blocks, id, json_string(hex));
	}
	rc = 0;
done:
	json_decref(entry);
	opt_snap_free(parent);
	return rc;
}

/* Write T's abort record on primary, unless T is decided already.
 * *decision: 1 committed, -1 aborted (by us or before). */
static int abort_on_primary(struct opt_txn *x, const char *primary, const char *trx, const char *stop,
			    int *decision)
{
	struct opt_txn p;
	struct opt_txn_opts o = { NULL, "abort an expired transaction", 0, 1 };
	struct opt_txn_result res;
	int64_t deadline = opt_now_ms() + busy_timeout(NULL);
	unsigned tries = 0;
	int rc;

	for (;;) {
		if ((rc = opt_store_decision_at(x->s, primary, trx, stop, decision)) < 0)
			return rc;
		if (*decision)
			return 0;
		memset(&p, 0, sizeof(p));
		p.s = x->s;
		p.name = primary;
		p.id = x->id;
		p.have_id = x->have_id;
		p.status = "aborted";
		opt_collection_header_id(primary, p.header_id);
		memset(&res, 0, sizeof(res));
		rc = attempt(&p, noop_fn, NULL, &o, trx, &res);
		if (rc >= 0) {
			*decision = -1;
			opt_fault("txn:aborted-on-primary");
			return 0;
		}
		if (rc != OPT_ECONFLICT && rc != OPT_EBUSY)
			return rc;
		if (opt_now_ms() >= deadline)
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy (transaction %s expired, and its primary '%s' stays too busy to abort it)",
					     x->name, trx, primary);
		opt_sleep_ms(opt_backoff_ms(tries++ < 8 ? tries : 8, 2, 200));
	}
}

/* Revert pending revision snap of collection name (x's store and id). */
static int revert_pending(struct opt_txn *x, struct opt_snap *snap)
{
	struct opt_txn r;
	struct opt_txn_opts o = { NULL, "revert an aborted transaction", 0, 1 };
	struct opt_txn_result res;
	int rc;

	memset(&r, 0, sizeof(r));
	r.s = x->s;
	r.name = x->name;
	r.id = x->id;
	r.have_id = x->have_id;
	r.status = "aborted";
	r.revert = opt_snap_rev(snap);
	memcpy(r.header_id, x->header_id, sizeof(r.header_id));
	memset(&res, 0, sizeof(res));
	rc = attempt(&r, noop_fn, NULL, &o, opt_snap_trx(snap), &res);
	if (rc >= 0)
		opt_fault("txn:reverted");
	return rc < 0 ? rc : 0;
}

/* The head x->base is a pending revision of another transaction?  0: no,
 * or committed (build on it); OPT_ECONFLICT: it was resolved now (read
 * again); OPT_EBUSY: in flight (back off). */
static int resolve_head(struct opt_txn *x, const char *trx)
{
	const char *st = opt_snap_trailer(x->base, "Opt-Status");
	char primary[OPT_NAME_MAX + 1], ptrx[OPT_ID_MAX + 1], pbase[41];
	int64_t since, expires;
	int d, rc;

	if (x->revert) {
		/* we are the revert: only of that very pending revision */
		if (!st || strcmp(st, "pending") != 0 || opt_snap_rev(x->base) != x->revert ||
		    strcmp(opt_snap_trx(x->base), trx) != 0)
			return 1;  /* resolved by someone else meanwhile */
		return 0;
	}
	if (!st || strcmp(st, "pending") != 0)
		return 0;
	snprintf(ptrx, sizeof(ptrx), "%.64s", opt_snap_trx(x->base));
	if (strcmp(ptrx, trx) == 0)
		return 0;  /* our own pend (a retry) */
	st = opt_snap_trailer(x->base, "Opt-Expires");
	expires = st ? atoll(st) : 0;
	st = opt_snap_trailer(x->base, "Opt-Primary");
	if (!st)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' revision %ld is pending without a primary",
				     x->name, opt_snap_rev(x->base));
	snprintf(primary, sizeof(primary), "%.200s", st);
	since = opt_snap_time(x->base);
	(void)since;
	st = opt_snap_trailer(x->base, "Opt-Primary-Base");
	snprintf(pbase, sizeof(pbase), "%.40s", st ? st : "");
	if ((rc = opt_store_decision_at(x->s, primary, ptrx, pbase, &d)) < 0)
		return rc;
	if (d == 1)
		return 0;
	if (d == 0) {
		if (opt_now_ms() < expires)
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy (transaction %s is in flight)", x->name, ptrx);
		if ((rc = abort_on_primary(x, primary, ptrx, pbase, &d)) < 0)
			return rc;
		if (d == 1)
			return OPT_ECONFLICT;  /* it committed after all: read again */
	}
	if ((rc = revert_pending(x, x->base)) < 0 && rc != OPT_ECONFLICT)
		return rc;
	return opt_error_set(OPT_ECONFLICT, "reverted aborted transaction %s on '%s'", ptrx, x->name);
}

/* The attempt's base: the collection's head (NULL: a new collection, not
 * beside one whose name clashes), its pending revision resolved.  0 to go
 * on, 1 when there is nothing to do (*res->rev set), <0 error. */
static int read_head(struct opt_txn *x, const char *trx, struct opt_txn_result *res)
{
	int rc;

	if (!x->have_id) {
		if ((rc = opt_identity_get(&x->id, x->s, 1)) < 0)
			return rc;
		x->have_id = 1;
	}
	rc = opt_snap_head(&x->base, x->s, x->name);
	if (rc == OPT_ENOTFOUND) {
		x->base = NULL;
		opt_error_clear();
		/* a new collection: not beside one whose name clashes */
		return opt_store_check_new(x->s, x->name);
	}
	if (rc < 0)
		return rc;
	if ((rc = resolve_head(x, trx)) != 0) {
		/* the head was a pending revision of another transaction: it was
		 * resolved (retry on the new head) or is still in flight; or a
		 * revert found its work done */
		if (rc == 1)
			res->rev = opt_snap_rev(x->base);
		opt_snap_free(x->base);
		x->base = NULL;
	}
	return rc;
}

/* The collection's header block: checked against the type asked for (a
 * placeholder takes it), or made for a new collection. */
static int ensure_header(struct opt_txn *x, const struct opt_txn_opts *o)
{
	const json_t *h;
	json_t *nh;
	int rc;

	if (!x->base) {
		if ((rc = opt_block_new(&nh, x->header_id, o && o->type ? o->type : OPT_TYPE_BLOCKS, x->name)) < 0)
			return rc;
		json_object_set_new(nh, "name", json_string(x->name));
		if (x->status && strcmp(x->status, "aborted") == 0 && !x->revert)
			json_object_set_new(nh, "placeholder", json_true());
		return opt_tracker_insert_new(x->t, nh);
	}
	rc = opt_tracker_get(x->t, x->header_id, &h);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' has no header block", x->name);
	if (rc < 0 || !(o && o->type) || (opt_block_type(h) && strcmp(opt_block_type(h), o->type) == 0))
		return rc;
	if (!json_is_true(json_object_get(h, "placeholder")))
		return opt_error_set(OPT_EINVAL, "collection '%s' is a %s collection, not a %s collection",
				     x->name, opt_type_name(opt_block_type(h)), opt_type_name(o->type));
	/* made only to hold an abort record (docs/protocol.md): the first
	 * real transaction gives it its type */
	nh = opt_json_copy(h);
	json_object_set_new(json_object_get(nh, "header"), "type", json_string(o->type));
	json_object_del(nh, "placeholder");
	return opt_tracker_insert_new(x->t, nh);
}

/* The log entry's fields (trx, actions, the blocks' hashes, the
 * multi-collection ones), signed and appended to the log; the blocks'
 * canonical texts kept in canon for the commit. */
static int log_fields(struct opt_txn *x, const char *trx, struct opt_canon *canon)
{
	json_t *fields;
	struct hash_ctx hc;
	int rc;

	hc.blocks = json_object();
	hc.canon = canon;
	hc.header_id = x->header_id;
	fields = json_pack("{s:s,s:O,s:o,s:s}", "trx", trx, "actions", x->actions, "blocks", hc.blocks,
			   "author", x->id.pub);
	OPT_CHECK_ALLOC(fields);
	if (x->status)
		json_object_set_new(fields, "status", json_string(x->status));
	if (x->primary)
		json_object_set_new(fields, "primary", json_string(x->primary));
	if (x->collections)
		json_object_set(fields, "collections", x->collections);
	if (x->status && strcmp(x->status, "pending") == 0)
		json_object_set_new(fields, "expires", json_integer(x->expires));
	if (x->revert)
		json_object_set_new(fields, "revert", json_integer(x->revert));
	if ((rc = opt_tracker_foreach_text(x->t, hash_cb, &hc)) < 0)
		goto done;
	if (x->revert && (rc = revert_blocks(x, hc.blocks)) < 0)
		goto done;
	if (x->actions_text) {
		struct opt_log_actions_text at = { x->actions_text, x->actions_text_len, x->actions_text_n };
		rc = opt_log_append_text(x->t, x->header_id, fields, &at, sign_cb, &x->id);
	} else {
		rc = opt_log_append_signed(x->t, x->header_id, fields, sign_cb, &x->id, NULL);
	}
done:
	json_decref(fields);
	return rc;
}

/* The trailers of a multi-collection transaction's revision (none for a
 * plain one) into buf. */
static void multi_trailers(const struct opt_txn *x, char *buf, size_t n)
{
	struct opt_trailers tr = { 0 };
	char cols[600] = "";
	size_t i;

	if (!x->status && !x->primary)
		return;
	for (i = 0; i < json_array_size(x->collections); i++)
		snprintf(cols + strlen(cols), sizeof(cols) - strlen(cols), "%s%s", i ? "," : "",
			 json_string_value(json_array_get(x->collections, i)));
	tr.status = x->status ? x->status : "committed";
	tr.primary = x->primary ? x->primary : x->name;
	tr.collections = cols;
	if (x->status && strcmp(x->status, "pending") == 0) {
		tr.has_expires = 1;
		tr.expires = x->expires;
		tr.primary_base = x->primary_base[0] ? x->primary_base : "none";
	}
	opt_trailers_format(buf, n, &tr);
}

/* Commit the attempt's blocks (their texts in canon) as the next
 * revision. */
static int commit(struct opt_txn *x, const struct opt_txn_opts *o, const char *trx, struct opt_canon *canon,
		  struct opt_txn_result *res)
{
	char trailers[1024] = "";
	struct opt_commit_info info = { trx, o && o->summary ? o->summary : "transaction", trailers, canon };
	long rev = 0;
	int rc;

	multi_trailers(x, trailers, sizeof(trailers));
	opt_fault("txn:before-commit");
	if ((rc = opt_store_commit(x->s, x->name, x->base, x->t, &info, &rev)) < 0)
		return rc;
	opt_fault("txn:after-commit");
	res->rev = rev;
	res->committed = 1;
	res->created = x->base == NULL;
	return 0;
}

/* One attempt: 0 committed, 1 nothing to do, <0 error (OPT_ECONFLICT and
 * OPT_EBUSY are retried by the caller). */
static int attempt(struct opt_txn *x, opt_txn_fn fn, void *arg, const struct opt_txn_opts *o,
		   const char *trx, struct opt_txn_result *res)
{
	json_t *empty = NULL;
	struct opt_canon canon = { NULL, 0, 0, 0 };
	struct opt_source src;
	int rc;

	if ((rc = read_head(x, trx, res)) != 0)
		return rc;
	if (x->base) {
		src = opt_snap_source(x->base);
	} else {
		empty = json_object();
		src = opt_source_object(empty);
	}
	if ((rc = opt_tracker_new(&x->t, &src)) < 0)
		goto done;
	x->actions = json_array();
	if (!x->actions) {
		rc = opt_error_oom();
		goto done;
	}
	if ((rc = ensure_header(x, o)) < 0 || (rc = fn(x, arg)) < 0)
		goto done;
	if (json_array_size(x->actions) == 0 && !x->actions_text_n && !(o && o->allow_empty) && !x->status &&
	    !x->revert && x->base) {
		res->rev = opt_snap_rev(x->base);
		rc = 1;
		goto done;
	}
	if ((rc = log_fields(x, trx, &canon)) < 0)
		goto done;
	rc = commit(x, o, trx, &canon, res);
done:
	opt_canon_clear(&canon);
	json_decref(x->actions);
	x->actions = NULL;
	free(x->actions_text);
	x->actions_text = NULL;
	x->actions_text_len = x->actions_text_n = 0;
	opt_tracker_free(x->t);
	x->t = NULL;
	opt_snap_free(x->base);
	x->base = NULL;
	json_decref(empty);
	return rc;
}

/* The error of collection name when it stayed busy until the deadline:
 * what held it at the last attempt (rc, and its message, which says
 * "collection 'NAME' is busy (why)" when it knows why) and how often it
 * was tried, in one message that does not repeat itself. */
static int busy_error(const char *name, int rc, int attempts)
{
	char pre[OPT_NAME_MAX + 32];
	const char *last = opt_error_last();
	int n = snprintf(pre, sizeof(pre), "collection '%s' is busy (", name);

	if (rc == OPT_EBUSY && n > 0 && strncmp(last, pre, (size_t)n) == 0)
		return opt_error_set(OPT_EBUSY, "%s; gave up after %d attempts", last, attempts);
	if (rc == OPT_ECONFLICT)
		return opt_error_set(OPT_EBUSY, "collection '%s' is busy (other writers kept committing first); gave up after %d attempts",
				     name, attempts);
	return opt_error_set(OPT_EBUSY, "collection '%s' is busy (%s); gave up after %d attempts", name, last,
			     attempts);
}

int opt_txn_run(struct opt_store *s, const char *name, opt_txn_fn fn, void *arg,
		const struct opt_txn_opts *o, struct opt_txn_result *res)
{
	struct opt_txn x;
	int64_t deadline = opt_now_ms() + busy_timeout(o);
	unsigned conflicts = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&x, 0, sizeof(x));
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	x.s = s;
	x.name = name;
	opt_collection_header_id(name, x.header_id);
	opt_id_new(res->trx);
	for (;;) {
		res->attempts++;
		rc = attempt(&x, fn, arg, o, res->trx, res);
		if (rc >= 0)
			return 0;
		if (rc != OPT_ECONFLICT && rc != OPT_EBUSY)
			return rc;
		if (opt_now_ms() >= deadline)
			return busy_error(name, rc, res->attempts);
		if (rc == OPT_ECONFLICT)
			opt_sleep_ms(opt_backoff_ms(conflicts++ < 8 ? conflicts : 8, 2, 500));
		else
			opt_sleep_ms(1 + opt_random(4));
	}
}

struct staged {
	opt_txn_fn fn;
	void *arg;
	struct opt_txn_result res;
};

struct opt_txn_group {
	struct opt_store *s;
	char *name;
	struct opt_txn_opts o;
	struct staged *v;
	size_t n, cap;
	size_t durable;        /* v[0 .. durable) are committed durably */
	int err;               /* a failure that sticks until the clear */
	char errmsg[1024];
	struct opt_txn x;
};

int opt_txn_group_new(struct opt_txn_group **out, struct opt_store *s, const char *name,
		      const struct opt_txn_opts *o)
{
	struct opt_txn_group *g;
	int rc;

	*out = NULL;
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	g = calloc(1, sizeof(*g));
	if (!g || !(g->name = strdup(name))) {
		free(g);
		return opt_error_oom();
	}
	if (o)
		g->o = *o;
	g->s = s;
	g->x.s = s;
	g->x.name = g->name;
	opt_collection_header_id(name, g->x.header_id);
	if ((rc = opt_store_group_begin(s, name)) < 0) {
		free(g->name);
		free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void opt_txn_group_free(struct opt_txn_group *g)
{
	if (!g)
		return;
	opt_store_group_end(g->s);
	free(g->v);
	free(g->name);
	free(g);
}

size_t opt_txn_group_size(const struct opt_txn_group *g)
{
	return g->n;
}

const struct opt_txn_result *opt_txn_group_result(const struct opt_txn_group *g, size_t i)
{
	return i < g->durable ? &g->v[i].res : NULL;
}

/* The group failed with rc (its message is the last): none of the staged
 * transactions that are not durable yet is committed.  What the store
 * holds pending for them is dropped (a replay may have left some), and
 * the failure sticks: a later flush must not find an empty group and call
 * that success. */
static int group_fail(struct opt_txn_group *g, int rc)
{
	snprintf(g->errmsg, sizeof(g->errmsg), "%s", opt_error_last());
	g->err = rc;
	opt_store_group_end(g->s);
	if (opt_store_group_begin(g->s, g->name) < 0)
		opt_error_clear();  /* the clear tries again */
	return opt_error_set(rc, "%s", g->errmsg);
}

void opt_txn_group_clear(struct opt_txn_group *g)
{
	int rc;

	if (g->err || g->durable < g->n) {
		/* drop what is staged and not durable: it was never committed */
		opt_store_group_end(g->s);
		g->err = 0;
		if ((rc = opt_store_group_begin(g->s, g->name)) < 0) {
			snprintf(g->errmsg, sizeof(g->errmsg), "%s", opt_error_last());
			g->err = rc;
		}
	}
	g->n = 0;
	g->durable = 0;
}

int opt_txn_group_add(struct opt_txn_group *g, opt_txn_fn fn, void *arg, size_t *index)
{
	struct staged *st;
	int rc;

	if (g->err)
		return opt_error_set(g->err, "%s", g->errmsg);
	if ((rc = OPT_ALLOC_GROW(g->v, g->n + 1, g->cap)) < 0)
		return rc;
	st = &g->v[g->n];
	memset(st, 0, sizeof(*st));
	st->fn = fn;
	st->arg = arg;
	opt_id_new(st->res.trx);
	st->res.attempts = 1;
	/* in group mode the store keeps the commit pending: no CAS here */
	rc = attempt(&g->x, fn, arg, &g->o, st->res.trx, &st->res);
	if (rc < 0)
		return rc;
	if (index)
		*index = g->n;
	g->n++;
	return 0;
}

int opt_txn_group_flush(struct opt_txn_group *g)
{
	int64_t deadline = opt_now_ms() + busy_timeout(&g->o);
	unsigned conflicts = 0;
	size_t i, commits;
	int rc, attempts = 0;

	if (g->err)
		return opt_error_set(g->err, "%s", g->errmsg);
	if (g->durable == g->n)
		return 0;
	for (;;) {
		attempts++;
		/* the transactions that wrote a revision (the others had
		 * nothing to commit): the store must make exactly these durable */
		for (commits = 0, i = g->durable; i < g->n; i++)
			commits += g->v[i].res.committed;
		rc = opt_store_group_flush(g->s);
		if (rc >= 0 && (size_t)rc != commits)
			return group_fail(g, opt_error_set(OPT_EIO, "group commit on '%s' wrote %d of %zu revisions",
							   g->name, rc, commits));
		if (rc >= 0) {
			rc = (int)(g->n - g->durable);
			g->durable = g->n;
			return rc;
		}
		if (rc != OPT_ECONFLICT && rc != OPT_EBUSY)
			return group_fail(g, rc);
		if (opt_now_ms() >= deadline)
			return group_fail(g, busy_error(g->name, rc, attempts));
		if (rc == OPT_ECONFLICT)
			opt_sleep_ms(opt_backoff_ms(conflicts++ < 8 ? conflicts : 8, 2, 500));
		else
			opt_sleep_ms(1 + opt_random(4));
		/* replay every staged transaction on the new state */
		for (i = g->durable; i < g->n; i++) {
			struct staged *st = &g->v[i];
			st->res.attempts++;
			st->res.committed = 0;
			rc = attempt(&g->x, st->fn, st->arg, &g->o, st->res.trx, &st->res);
			if (rc < 0)
				return group_fail(g, opt_error_wrap(rc, "replaying transaction %s", st->res.trx));
		}
	}
}

/* ---- multi-collection transactions (docs/protocol.md) ---- */

static int cmp_part(const void *a, const void *b)
{
	return strcmp((*(struct opt_txn_part *const *)a)->name, (*(struct opt_txn_part *const *)b)->name);
}

/* 1 if the first len characters of name are the name of one of the n
 * parts v (sorted by name). */
static int part_named(struct opt_txn_part *const *v, size_t n, const char *name, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(v[mid]->name, name, len);
		if (c == 0 && v[mid]->name[len])
			c = 1;
		if (c == 0)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Run one step (a pend, or the decision) until it commits. */
static int step(struct opt_txn *x, struct opt_txn_part *p, const struct opt_txn_opts *o, const char *trx,
		int64_t deadline, int64_t since, int decide)
{
	struct opt_txn_opts po = o ? *o : (struct opt_txn_opts){ 0 };
	unsigned conflicts = 0;
	int rc, d;

	po.type = p->type;
	for (;;) {
		if (decide) {
			/* never decide after an abort record */
			(void)since;
			if ((rc = opt_store_decision_at(x->s, x->primary, trx, x->primary_base, &d)) < 0)
				return rc;
			if (d == -1) {
				/* a collection that clashes with the primary came meanwhile */
				if (!x->primary_base[0] && (rc = opt_store_check_new(x->s, x->primary)) < 0)
					return rc;
				return opt_error_set(OPT_ECONFLICT, "transaction %s was aborted (it outlived OPT_TXN_TTL)", trx);
			}
			if (d == 1)
				return 0;
		}
		p->res.attempts++;
		rc = attempt(x, p->fn, p->arg, &po, trx, &p->res);
		if (rc >= 0)
			return 0;
		if (rc != OPT_ECONFLICT && rc != OPT_EBUSY)
			return rc;
		if (opt_now_ms() >= deadline)
			return busy_error(p->name, rc, p->res.attempts);
		if (rc == OPT_ECONFLICT)
			opt_sleep_ms(opt_backoff_ms(conflicts++ < 8 ? conflicts : 8, 2, 500));
		else
			opt_sleep_ms(2 + opt_random(20));
	}
}

/* The parts by name (v), each named once, their names into cols; names
 * that clash ('x' and 'x/y', see opt_store_name_clash) are refused before
 * anything is written: after a pend, a primary that cannot be created
 * could hold neither decision nor abort record. */
static int multi_names(struct opt_store *s, struct opt_txn_part *parts, size_t n, const char *trx,
		       struct opt_txn_part **v, json_t *cols)
{
	size_t i, k;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = opt_store_name_check(parts[i].name)) < 0)
			return rc;
		memset(&parts[i].res, 0, sizeof(parts[i].res));
		memcpy(parts[i].res.trx, trx, sizeof(parts[i].res.trx));
		v[i] = &parts[i];
	}
	qsort(v, n, sizeof(*v), cmp_part);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(v[i]->name, v[i - 1]->name) == 0)
			return opt_error_set(OPT_EINVAL, "collection '%s' is named twice", v[i]->name);
		json_array_append_new(cols, json_string(v[i]->name));
	}
	for (i = 0; i < n; i++) {
		const char *nm = v[i]->name;
		for (k = 0; nm[k]; k++)
			if (nm[k] == '/' && part_named(v, n, nm, k))
				return opt_error_set(OPT_EINVAL, "collections '%.*s' and '%s' cannot both exist", (int)k, nm,
						     nm);
		if ((rc = opt_store_check_new(s, nm)) < 0)
			return rc;
	}
	return 0;
}

/* Refuse a collection of the wrong kind before anything is written
 * (after a pend, a refusal leaves abort and revert revisions). */
static int multi_kinds(struct opt_store *s, struct opt_txn_part **v, size_t n)
{
	struct opt_snap *h;
	struct opt_source src;
	char hid[OPT_ID_LEN + 1];
	json_t *hb;
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		if (!v[i]->type)
			continue;
		h = NULL;
		hb = NULL;
		rc = opt_snap_head(&h, s, v[i]->name);
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			rc = 0;
			continue;
		}
		if (rc < 0)
			return rc;
		opt_collection_header_id(v[i]->name, hid);
		src = opt_snap_source(h);
		if (src.get(src.ctx, hid, &hb) == 0 && opt_block_type(hb) && strcmp(opt_block_type(hb), v[i]->type) != 0 &&
		    !json_is_true(json_object_get(hb, "placeholder")))
			rc = opt_error_set(OPT_EINVAL, "collection '%s' is a %s collection, not a %s collection", v[i]->name,
					   opt_type_name(opt_block_type(hb)), opt_type_name(v[i]->type));
		json_decref(hb);
		opt_snap_free(h);
	}
	return rc;
}

/* 1. pend every collection but the primary, in name order (*pended
 * counts them); 2. the decision: T's revision of the primary, by one
 * CAS. */
static int multi_steps(struct opt_txn *x, struct opt_txn_part **v, size_t n, const struct opt_txn_opts *o,
		       const char *trx, int64_t deadline, size_t *pended)
{
	int64_t since = opt_now_ms() / 1000;
	size_t i;
	int rc;

	for (i = 0; i + 1 < n; i++) {
		x->name = v[i]->name;
		opt_collection_header_id(x->name, x->header_id);
		x->status = "pending";
		x->expires = opt_now_ms() + txn_ttl();
		if ((rc = step(x, v[i], o, trx, deadline, since, 0)) < 0)
			return rc;
		(*pended)++;
		opt_fault("txn:pended");
	}
	x->name = v[n - 1]->name;
	opt_collection_header_id(x->name, x->header_id);
	x->status = n > 1 ? "committed" : NULL;
	x->expires = 0;
	if ((rc = step(x, v[n - 1], o, trx, deadline, since, n > 1)) < 0)
		return rc;
	opt_fault("txn:decided");
	return 0;
}

/* Not decided (rc): abort through the primary, then revert our pends
 * (what is left is resolved by whoever comes next, after the TTL).  rc,
 * its message kept, or 0 when it was decided after all. */
static int multi_undo(struct opt_txn *x, struct opt_txn_part **v, size_t n, size_t pended, const char *trx, int rc)
{
	struct opt_snap *h;
	char msg[1024];
	size_t i;
	int d = 0;

	for (i = 0; i < n; i++)
		v[i]->res.committed = 0;
	if (pended == 0)
		return rc;
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if (abort_on_primary(x, v[n - 1]->name, trx, x->primary_base, &d) == 0 && d == -1) {
		for (i = 0; i < pended; i++) {
			h = NULL;
			x->name = v[i]->name;
			opt_collection_header_id(x->name, x->header_id);
			if (opt_snap_head(&h, x->s, x->name) == 0 && strcmp(opt_snap_trx(h), trx) == 0)
				revert_pending(x, h);
			opt_snap_free(h);
		}
	} else if (d == 1) {
		for (i = 0; i < n; i++)
			v[i]->res.committed = 1;
		return 0;  /* it was decided after all */
	}
	if (rc < 0)
		opt_error_set(rc, "%s", msg);
	return rc;
}

static int txn_multi(struct opt_store *s, struct opt_txn_part *parts, size_t n, const struct opt_txn_opts *o,
		     char trx[OPT_ID_LEN + 1], int keep)
{
	struct opt_txn_part **v = NULL;
	struct opt_snap *ph = NULL;
	struct opt_txn x;
	json_t *cols = NULL;
	int64_t deadline = opt_now_ms() + busy_timeout(o);
	size_t i, pended = 0;
	int rc = 0;

	if (!keep)
		opt_id_new(trx);
	else if (!opt_id_valid(trx))
		return opt_error_set(OPT_EINVAL, "invalid transaction ID '%s'", opt_esc(trx));
	if (n == 0)
		return opt_error_set(OPT_EINVAL, "a transaction needs at least one collection");
	v = malloc(n * sizeof(*v));
	cols = json_array();
	if (!v || !cols) {
		rc = opt_error_oom();
		goto done;
	}
	if ((rc = multi_names(s, parts, n, trx, v, cols)) < 0 || (rc = multi_kinds(s, v, n)) < 0)
		goto done;
	memset(&x, 0, sizeof(x));
	x.s = s;
	if ((rc = opt_identity_get(&x.id, s, 1)) < 0)
		goto done;
	x.have_id = 1;
	x.primary = n > 1 ? v[n - 1]->name : NULL;
	x.collections = n > 1 ? cols : NULL;
	if (x.primary && opt_snap_head(&ph, s, x.primary) == 0)
		snprintf(x.primary_base, sizeof(x.primary_base), "%s", opt_snap_commit(ph));
	opt_error_clear();
	opt_snap_free(ph);
	if ((rc = multi_steps(&x, v, n, o, trx, deadline, &pended)) < 0) {
		rc = multi_undo(&x, v, n, pended, trx, rc);
		goto done;
	}
	for (i = 0; i < n; i++)
		v[i]->res.committed = 1;
done:
	free(v);
	json_decref(cols);
	return rc;
}

/* What the revisions of a transaction say (opt_txn_status). */
struct trx_seen {
	char primary[OPT_NAME_MAX + 1];
	int64_t since, expires;  /* a pending revision's time and deadline */
	int pending, aborted;
};

/* Walk collection name's history for revisions of trx into *t: 1 when
 * it has one, 0 when not. */
static int status_scan(struct opt_store *s, const char *name, const char *trx, struct trx_seen *t)
{
	struct opt_snap *snap = NULL, *p;
	int here = 0, rc;

	if ((rc = opt_snap_head(&snap, s, name)) < 0)
		return rc;
	while (snap) {
		if (strcmp(opt_snap_trx(snap), trx) == 0) {
			const char *st = opt_snap_trailer(snap, "Opt-Status");
			const char *pr = opt_snap_trailer(snap, "Opt-Primary");
			here = 1;
			if (pr)
				snprintf(t->primary, sizeof(t->primary), "%.200s", pr);
			if (st && strcmp(st, "pending") == 0) {
				const char *ex = opt_snap_trailer(snap, "Opt-Expires");
				t->pending = 1;
				t->since = opt_snap_time(snap);
				t->expires = ex ? atoll(ex) : 0;
			} else if (st && strcmp(st, "aborted") == 0) {
				t->aborted = 1;
			}
		}
		rc = opt_snap_parent(&p, snap);
		opt_snap_free(snap);
		snap = NULL;
		if (rc == OPT_ENOTFOUND) {
			opt_error_clear();
			break;
		}
		if (rc < 0)
			return rc;
		snap = p;
	}
	return here;
}

int opt_txn_multi(struct opt_store *s, struct opt_txn_part *parts, size_t n, const struct opt_txn_opts *o,
		  char trx[OPT_ID_LEN + 1])
{
	return txn_multi(s, parts, n, o, trx, 0);
}

int opt_txn_multi_keep(struct opt_store *s, struct opt_txn_part *parts, size_t n, const struct opt_txn_opts *o,
		       const char *trx)
{
	char id[OPT_ID_LEN + 1];

	snprintf(id, sizeof(id), "%s", trx);
	return txn_multi(s, parts, n, o, id, 1);
}

int opt_txn_status(struct opt_store *s, const char *trx, json_t **out)
{
	json_t *names = NULL, *cols = json_array();
	struct trx_seen t = { "", 0, 0, 0, 0 };
	const char *status = "committed";
	int d = 1, rc;
	size_t i;

	*out = NULL;
	if (!opt_id_valid(trx)) {
		json_decref(cols);
		return opt_error_set(OPT_EINVAL, "invalid transaction ID '%s'", opt_esc(trx));
	}
	if ((rc = opt_store_list(s, &names)) < 0) {
		json_decref(cols);
		return rc;
	}
	for (i = 0; i < json_array_size(names); i++) {
		const char *name = json_string_value(json_array_get(names, i));
		if ((rc = status_scan(s, name, trx, &t)) < 0)
			goto done;
		if (rc)
			json_array_append_new(cols, json_string(name));
	}
	if (json_array_size(cols) == 0) {
		rc = opt_error_set(OPT_ENOTFOUND, "no transaction '%s' in this store", trx);
		goto done;
	}
	if (t.primary[0] && (t.pending || t.aborted)) {
		if ((rc = opt_store_decision(s, t.primary, trx, t.since, &d)) < 0)
			goto done;
		status = d == 1 ? "committed" : d == -1 ? "aborted" : "pending";
	} else if (t.aborted) {
		status = "aborted";
	}
	*out = json_pack("{s:s,s:s,s:O}", "trx", trx, "status", status, "collections", cols);
	if (t.primary[0])
		json_object_set_new(*out, "primary", json_string(t.primary));
	if (d == 0 && opt_now_ms() >= t.expires)
		json_object_set_new(*out, "expired", json_true());
	rc = 0;
done:
	json_decref(names);
	json_decref(cols);
	return rc;
}
