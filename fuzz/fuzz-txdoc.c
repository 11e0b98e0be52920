/* fuzz-txdoc.c - libFuzzer harness for transaction documents (the input of
 * `opt-log commit`): bytes -> opt_json_parse -> opt_txdoc_check.
 *
 * Properties (a broken one aborts): opt_txdoc_check returns 0 or OPT_EINVAL
 * with a message; its verdict does not depend on the order of members (the
 * document re-parsed from its canonical JSON, whose objects are sorted,
 * gets the same verdict); an accepted document names only valid collection
 * names, each with a non-empty array of actions. */
#include "collection.h"
#include "error.h"
#include "json.h"
#include "store.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) do { fprintf(stderr, "fuzz-txdoc: " __VA_ARGS__); \
	fputc('\n', stderr); abort(); } while (0)
#define ASSERT(c) do { if (!(c)) FAIL("assertion failed: %s (line %d)", #c, __LINE__); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (opt_util_init() < 0)
		FAIL("cannot initialise libsodium");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = NULL, *again = NULL, *acts;
	const char *name;
	char *s = NULL;
	size_t n = 0;
	int rc, rc2;

	if (opt_json_parse(&doc, (const char *)data, size) < 0)
		return 0;
	opt_error_clear();
	rc = opt_txdoc_check(doc);
	if (rc != 0 && rc != OPT_EINVAL)
		FAIL("opt_txdoc_check returns %d (%s)", rc, opt_error_last());
	if (rc < 0 && !*opt_error_last())
		FAIL("opt_txdoc_check fails without a message");
	if (rc == 0) {
		json_object_foreach(json_object_get(doc, "collections"), name, acts) {
			ASSERT(opt_store_name_valid(name));
			ASSERT(json_is_array(acts) && json_array_size(acts) > 0);
		}
	}
	/* the same document with its members in another (sorted) order */
	if (opt_json_canon(&s, &n, doc) < 0)
		FAIL("opt_json_canon fails on a parsed document: %s", opt_error_last());
	ASSERT(opt_json_parse(&again, s, n) == 0);
	rc2 = opt_txdoc_check(again);
	if (rc2 != rc)
		FAIL("opt_txdoc_check gives %d, and %d on the same document in canonical order", rc, rc2);
	free(s);
	json_decref(again);
	json_decref(doc);
	return 0;
}
