#include "txn.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct opt_txn {
	struct opt_store *s;
	const char *name;
	struct opt_snap *base;
	struct opt_tracker *t;
	json_t *actions;
	char header_id[OPT_ID_LEN + 1];
};

struct opt_tracker *opt_txn_tracker(struct opt_txn *x) { return x->t; }
struct opt_snap *opt_txn_base(struct opt_txn *x) { return x->base; }
const char *opt_txn_header_id(struct opt_txn *x) { return x->header_id; }
const char *opt_txn_collection(struct opt_txn *x) { return x->name; }

int opt_txn_action(struct opt_txn *x, json_t *action)
{
	if (!action)
		return opt_error_set(OPT_EIO, "out of memory");
	if (json_array_append_new(x->actions, action) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	return 0;
}

const char *opt_type_name(const char *type)
{
	if (!type)
		return "unknown";
	if (strcmp(type, OPT_TYPE_TREE) == 0)
		return "tree";
	if (strcmp(type, OPT_TYPE_DIARY) == 0)
		return "diary";
	if (strcmp(type, OPT_TYPE_BLOCKS) == 0)
		return "block";
	return type;
}

int opt_txn_block_hash(const json_t *block, int is_header, char out[65])
{
	json_t *copy;
	int rc;

	if (!is_header)
		return opt_json_hash(out, block);
	copy = json_copy((json_t *)block);
	if (!copy)
		return opt_error_set(OPT_EIO, "out of memory");
	json_object_del(copy, "headId");
	json_object_del(copy, "tailId");
	rc = opt_json_hash(out, copy);
	json_decref(copy);
	return rc;
}

struct hash_ctx {
	json_t *blocks;
	json_t *canon;
	const char *header_id;
};

static int hash_cb(const char *id, const json_t *block, void *arg)
{
	struct hash_ctx *h = arg;
	char hex[65];
	const char *type;
	int rc;

	if (!block)
		return json_object_set_new(h->blocks, id, json_null()) < 0 ?
			opt_error_set(OPT_EIO, "out of memory") : 0;
	type = opt_block_type(block);
	if (type && strcmp(type, OPT_TYPE_LOG) == 0)
		return 0;
	if (strcmp(id, h->header_id) == 0) {
		if ((rc = opt_txn_block_hash(block, 1, hex)) < 0)
			return rc;
	} else {
		/* serialize once: the store reuses these bytes for the blob */
		char *s;
		size_t len;
		if ((rc = opt_json_canon(&s, &len, block)) < 0)
			return rc;
		opt_sha256_hex(hex, s, len);
		rc = json_object_set_new(h->canon, id, json_stringn_nocheck(s, len));
		free(s);
		if (rc < 0)
			return opt_error_set(OPT_EIO, "out of memory");
	}
	return json_object_set_new(h->blocks, id, json_string(hex)) < 0 ?
		opt_error_set(OPT_EIO, "out of memory") : 0;
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

/* One attempt: 0 committed, 1 nothing to do, <0 error (OPT_ECONFLICT and
 * OPT_EBUSY are retried by the caller). */
static int attempt(struct opt_txn *x, opt_txn_fn fn, void *arg, const struct opt_txn_opts *o,
		   const char *trx, struct opt_txn_result *res)
{
	json_t *empty = NULL, *fields = NULL, *canon = NULL;
	struct opt_source src;
	struct hash_ctx hc;
	long rev = 0;
	int rc;

	rc = opt_snap_open(&x->base, x->s, x->name, 0);
	if (rc == OPT_ENOTFOUND) {
		x->base = NULL;
		opt_error_clear();
	} else if (rc < 0) {
		return rc;
	}
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
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	if (x->base) {
		const json_t *h;
		rc = opt_tracker_get(x->t, x->header_id, &h);
		if (rc == OPT_ENOTFOUND) {
			rc = opt_error_set(OPT_EINTEGRITY, "collection '%s' has no header block", x->name);
			goto done;
		}
		if (rc < 0)
			goto done;
		if (o && o->type && (!opt_block_type(h) || strcmp(opt_block_type(h), o->type) != 0)) {
			rc = opt_error_set(OPT_EINVAL, "collection '%s' is a %s collection, not a %s collection",
					   x->name, opt_type_name(opt_block_type(h)), opt_type_name(o->type));
			goto done;
		}
	} else {
		json_t *h;
		if ((rc = opt_block_new(&h, x->header_id, o && o->type ? o->type : OPT_TYPE_BLOCKS, x->name)) < 0)
			goto done;
		json_object_set_new(h, "name", json_string(x->name));
		if ((rc = opt_tracker_insert_new(x->t, h)) < 0)
			goto done;
	}
	if ((rc = fn(x, arg)) < 0)
		goto done;
	if (json_array_size(x->actions) == 0 && !(o && o->allow_empty) && x->base) {
		res->rev = opt_snap_rev(x->base);
		rc = 1;
		goto done;
	}
	hc.blocks = json_object();
	hc.canon = canon = json_object();
	hc.header_id = x->header_id;
	fields = json_pack("{s:s,s:O,s:o}", "trx", trx, "actions", x->actions, "blocks", hc.blocks);
	if (!fields) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	if ((rc = opt_tracker_foreach(x->t, hash_cb, &hc)) < 0)
		goto done;
	if ((rc = opt_log_append(x->t, x->header_id, fields, NULL)) < 0)
		goto done;
	{
		struct opt_commit_info info = { trx, o && o->summary ? o->summary : "transaction", NULL, canon };
		rc = opt_store_commit(x->s, x->name, x->base, x->t, &info, &rev);
	}
	if (rc == 0) {
		res->rev = rev;
		res->committed = 1;
		res->created = x->base == NULL;
	}
done:
	json_decref(fields);
	json_decref(canon);
	json_decref(x->actions);
	x->actions = NULL;
	opt_tracker_free(x->t);
	x->t = NULL;
	opt_snap_free(x->base);
	x->base = NULL;
	json_decref(empty);
	return rc;
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
	if (!opt_store_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid collection name '%.100s' (use letters, digits, '.', '_', '-' and '/')",
				     name);
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
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy: gave up after %d attempts (%s)",
					     name, res->attempts, opt_error_last());
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
	struct opt_txn x;
};

int opt_txn_group_new(struct opt_txn_group **out, struct opt_store *s, const char *name,
		      const struct opt_txn_opts *o)
{
	struct opt_txn_group *g;
	int rc;

	*out = NULL;
	if (!opt_store_name_valid(name))
		return opt_error_set(OPT_EINVAL, "invalid collection name '%.100s' (use letters, digits, '.', '_', '-' and '/')",
				     name);
	g = calloc(1, sizeof(*g));
	if (!g || !(g->name = strdup(name))) {
		free(g);
		return opt_error_set(OPT_EIO, "out of memory");
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
	return i < g->n ? &g->v[i].res : NULL;
}

void opt_txn_group_clear(struct opt_txn_group *g)
{
	g->n = 0;
}

int opt_txn_group_add(struct opt_txn_group *g, opt_txn_fn fn, void *arg, size_t *index)
{
	struct staged *st;
	int rc;

	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct staged *nv = realloc(g->v, cap * sizeof(*nv));
		if (!nv)
			return opt_error_set(OPT_EIO, "out of memory");
		g->v = nv;
		g->cap = cap;
	}
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
	size_t i;
	int rc;

	if (g->n == 0)
		return 0;
	for (;;) {
		rc = opt_store_group_flush(g->s);
		if (rc == 0)
			return 0;
		if (rc != OPT_ECONFLICT && rc != OPT_EBUSY)
			return rc;
		if (opt_now_ms() >= deadline)
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy: gave up (%s)", g->name,
					     opt_error_last());
		if (rc == OPT_ECONFLICT)
			opt_sleep_ms(opt_backoff_ms(conflicts++ < 8 ? conflicts : 8, 2, 500));
		else
			opt_sleep_ms(1 + opt_random(4));
		/* replay every staged transaction on the new state */
		for (i = 0; i < g->n; i++) {
			struct staged *st = &g->v[i];
			st->res.attempts++;
			st->res.committed = 0;
			rc = attempt(&g->x, st->fn, st->arg, &g->o, st->res.trx, &st->res);
			if (rc < 0)
				return opt_error_wrap(rc, "replaying transaction %s", st->res.trx);
		}
	}
}
