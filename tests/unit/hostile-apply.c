/* hostile-apply - a modified `opt-block apply`, for the tests of what a
 * hostile peer can send (tests/100-opt-sync.bats).
 *
 * Usage: hostile-apply STORE COLL ID < OPS
 *
 * Applies the block operations read from stdin (one JSON array of them)
 * to block ID of collection COLL in one transaction, logged and signed as
 * opt-block apply logs and signs it, but without the check that keeps
 * opt-block to collections of plain blocks: so it can break a tree's
 * structure with a log that still verifies, which only the structure
 * check of verification can tell.  Not installed; built by `make units`.
 */
#include "opt.h"
#include "txn.h"

#include <stdio.h>
#include <string.h>

struct apply {
	const char *id;
	json_t *ops;
};

static int apply_fn(struct opt_txn *x, void *arg)
{
	struct apply *a = arg;
	size_t i;
	int rc;

	for (i = 0; i < json_array_size(a->ops); i++)
		if ((rc = opt_tracker_update(opt_txn_tracker(x), a->id, json_array_get(a->ops, i))) < 0)
			return rc;
	return opt_txn_action(x, json_pack("{s:s,s:s,s:O}", "type", "block.apply", "id", a->id, "ops", a->ops));
}

int main(int argc, char **argv)
{
	struct opt_txn_opts o = { NULL, "opt-block apply", 0, 0 };
	struct opt_txn_result res;
	struct opt_store *s = NULL;
	struct apply a;
	json_error_t err;
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: hostile-apply STORE COLL ID < OPS\n");
		return 2;
	}
	a.id = argv[3];
	a.ops = json_loadf(stdin, 0, &err);
	if (!json_is_array(a.ops)) {
		fprintf(stderr, "hostile-apply: expected an array of operations\n");
		json_decref(a.ops);
		return 2;
	}
	if ((rc = opt_store_open(&s, argv[1])) == 0)
		rc = opt_txn_run(s, argv[2], apply_fn, &a, &o, &res);
	if (rc < 0)
		fprintf(stderr, "hostile-apply: %s\n", opt_error_last());
	else
		printf("{\"id\":\"%s\",\"collection\":\"%s\",\"rev\":%ld}\n", a.id, argv[2], res.rev);
	opt_store_free(s);
	json_decref(a.ops);
	return rc < 0 ? opt_exit_status(rc) : 0;
}
