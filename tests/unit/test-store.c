/* test-store.c - the store: creating and opening, collection names,
 * revisions read back through snapshots, compare-and-swap, pack upkeep,
 * group commits, the snapshot cache and the visibility of pending
 * revisions of multi-collection transactions. */
#include "harness.h"
#include "fixture.h"
#include "block.h"
#include "error.h"
#include "json.h"
#include "pack.h"
#include "store/git.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- random numbers (seeded, re-runnable with OPT_TEST_SEED) ---- */




/* ---- the scratch directory ---- */




static void rm_tree(const char *dir)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkdirs(const char *path)
{
	char tmp[PATH_MAX], *p;

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0755);
			*p = '/';
		}
	mkdir(tmp, 0755);
}

/* ---- helpers ---- */

static struct opt_store *new_store(const char *rel)
{
	struct opt_store *s = NULL;
	int created = -1;

	CHECK_RC(opt_store_create(&s, at(rel), &created));
	CHECK(created == 1);
	return s;
}

static long stat_of(struct opt_store *s, const char *key)
{
	json_t *st = NULL;
	long v = -1;

	CHECK_RC(opt_store_stats(s, &st));
	if (st)
		v = (long)json_integer_value(json_object_get(st, key));
	json_decref(st);
	return v;
}

/* A plain block of collection coll with field "n". */
static json_t *blk(const char *id, const char *coll, long n)
{
	json_t *b = NULL;

	if (opt_block_new(&b, id, "t", coll) < 0)
		return NULL;
	json_object_set_new(b, "n", json_integer(n));
	return b;
}

/* Commit on base (NULL: create the collection) the insertion of one block
 * id with n (id NULL: nothing), with the given trx (NULL: a fresh one) and
 * trailers. */
static int commit_one(struct opt_store *s, const char *name, struct opt_snap *base, const char *id, long n,
		      const char *trx, const char *trailers, long *rev)
{
	json_t *empty = json_object();
	struct opt_source src = base ? opt_snap_source(base) : opt_source_object(empty);
	struct opt_tracker *t = NULL;
	char fresh[OPT_ID_LEN + 1];
	struct opt_commit_info info;
	int rc;

	if ((rc = opt_tracker_new(&t, &src)) < 0)
		goto done;
	if (id && (rc = opt_tracker_insert_new(t, blk(id, name, n))) < 0)
		goto done;
	opt_id_new(fresh);
	info.trx = trx ? trx : fresh;
	info.summary = "test commit";
	info.trailers = trailers;
	info.canon = NULL;
	rc = opt_store_commit(s, name, base, t, &info, rev);
done:
	opt_tracker_free(t);
	json_decref(empty);
	return rc;
}

/* The same on the head (or a new collection). */
static int commit_head(struct opt_store *s, const char *name, const char *id, long n, const char *trx,
		       const char *trailers, long *rev)
{
	struct opt_snap *h = NULL;
	int rc = opt_snap_head(&h, s, name);

	if (rc < 0 && rc != OPT_ENOTFOUND)
		return rc;
	rc = commit_one(s, name, h, id, n, trx, trailers, rev);
	opt_snap_free(h);
	return rc;
}

static long head_rev(struct opt_store *s, const char *name)
{
	struct opt_snap *h = NULL;
	long r = -1;

	if (opt_snap_head(&h, s, name) == 0)
		r = opt_snap_rev(h);
	opt_snap_free(h);
	return r;
}

static long open_rev(struct opt_store *s, const char *name)
{
	struct opt_snap *h = NULL;
	long r = -1;

	if (opt_snap_open(&h, s, name, 0) == 0)
		r = opt_snap_rev(h);
	opt_snap_free(h);
	return r;
}

/* The "n" of block id at snap, or -1. */
static long n_of(struct opt_snap *snap, const char *id)
{
	struct opt_source src = opt_snap_source(snap);
	json_t *b = NULL;
	long n = -1;

	if (src.get(src.ctx, id, &b) == 0)
		n = (long)json_integer_value(json_object_get(b, "n"));
	json_decref(b);
	return n;
}

/* git's blob ID of data. */
static void blob_id(char out[41], const char *data, size_t len)
{
	struct opt_sha1 c;
	char hdr[64];
	uint8_t d[20];
	int n = snprintf(hdr, sizeof(hdr), "blob %zu", len);

	opt_sha1_init(&c);
	opt_sha1_update(&c, hdr, (size_t)n + 1);
	opt_sha1_update(&c, data, len);
	opt_sha1_final(&c, d);
	opt_hex(out, d, 20);
}

struct ids {
	json_t *arr;
	int stop_at;
};

static int collect_ids(const char *id, void *arg)
{
	struct ids *v = arg;

	json_array_append_new(v->arr, json_string(id));
	if (v->stop_at && (int)json_array_size(v->arr) == v->stop_at)
		return 42;
	return 0;
}

/* ---- tests ---- */

TEST(create_and_open)
{
	struct opt_store *s = NULL, *s2 = NULL;
	int created = -1;
	FILE *f;

	/* a new directory, and one whose parents do not exist yet */
	CHECK_RC(opt_store_create(&s, at("new/.opt"), &created));
	CHECK(created == 1);
	CHECK(s && strcmp(opt_store_path(s), at("new/.opt")) == 0);
	opt_store_free(s);
	s = NULL;
	CHECK_RC(opt_store_create(&s, at("deep/er/.opt"), &created));
	CHECK(created == 1);
	opt_store_free(s);
	s = NULL;
	/* creating it again opens it */
	CHECK_RC(opt_store_create(&s, at("new/.opt"), &created));
	CHECK(created == 0);
	CHECK_RC(opt_store_open(&s2, at("new/.opt")));
	CHECK(s2 != NULL);
	opt_store_free(s2);
	opt_store_free(s);
	s = NULL;
	/* created may be NULL */
	CHECK_RC(opt_store_create(&s, at("nullcreated"), NULL));
	opt_store_free(s);
	s = NULL;

	/* an existing empty directory */
	mkdirs(at("empty"));
	CHECK_RC(opt_store_create(&s, at("empty"), &created));
	CHECK(created == 1);
	opt_store_free(s);
	s = NULL;
	CHECK_RC(opt_store_open(&s, at("empty")));
	opt_store_free(s);
	s = NULL;

	/* a non-empty directory that is not a store */
	mkdirs(at("full"));
	f = fopen(at("full/file"), "w");
	CHECK(f != NULL);
	if (f) {
		fputs("data\n", f);
		fclose(f);
	}
	CHECK(opt_store_create(&s, at("full"), &created) == OPT_EINVAL);
	CHECK(s == NULL);
	CHECK(strstr(opt_error_last(), "not empty") != NULL);
	CHECK(opt_store_open(&s, at("full")) == OPT_EINVAL);
	CHECK(s == NULL);
	/* left as it was */
	CHECK(access(at("full/file"), F_OK) == 0);
	CHECK(access(at("full/HEAD"), F_OK) != 0);

	/* nothing there; a file */
	CHECK(opt_store_open(&s, at("nothing")) == OPT_ENOTFOUND);
	CHECK(opt_store_open(&s, at("full/file")) == OPT_EINVAL);
}

TEST(foreign_repositories)
{
	struct opt_store *s = NULL;
	char cmd[PATH_MAX * 2];
	int created = -1;

	if (system("git --version >/dev/null 2>&1") != 0) {
		printf("# skip: no git\n");
		return;
	}
	/* a plain (SHA-1) git repository is not a store */
	snprintf(cmd, sizeof(cmd), "git init -q --bare '%s' >/dev/null 2>&1", at("plain.git"));
	if (system(cmd) == 0) {
		CHECK(opt_store_open(&s, at("plain.git")) == OPT_EINVAL);
		CHECK(strstr(opt_error_last(), "not an optimystic store") != NULL);
		CHECK(opt_store_create(&s, at("plain.git"), &created) == OPT_EINVAL);
		CHECK(s == NULL);
	}
	/* a SHA-256 repository is refused, and not written to */
	snprintf(cmd, sizeof(cmd), "git init -q --bare --object-format=sha256 '%s' >/dev/null 2>&1", at("sha256.git"));
	if (system(cmd) != 0) {
		printf("# skip: this git cannot make SHA-256 repositories\n");
		return;
	}
	CHECK(opt_store_open(&s, at("sha256.git")) == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "sha256") != NULL);
	CHECK(s == NULL);
	CHECK(opt_store_create(&s, at("sha256.git"), &created) == OPT_EINVAL);
	CHECK(s == NULL);
	CHECK(created == 0);
	snprintf(cmd, sizeof(cmd), "grep -q optimystic '%s/config'", at("sha256.git"));
	CHECK(system(cmd) != 0);
	snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s/objects' '%s/refs' -type f)\"", at("sha256.git"),
		 at("sha256.git"));
	CHECK(system(cmd) == 0); /* no object, no ref written */
}

#define CREATORS 4

/* Several processes create the same store at once: one creates it, the
 * others open it, and all of them end up with one whole store. */
TEST(create_race)
{
	int round;

	for (round = 0; round < 3; round++) {
		char rel[32];
		int go[2], k, created_total = 0, ok = 1;
		pid_t pids[CREATORS];
		struct opt_store *s = NULL;

		snprintf(rel, sizeof(rel), "crace%d/.opt", round);
		if (pipe(go) < 0) {
			CHECK(!"pipe");
			return;
		}
		fflush(stdout);
		for (k = 0; k < CREATORS; k++) {
			pids[k] = fork();
			if (pids[k] == 0) {
				struct opt_store *cs = NULL;
				int created = 0, rc;
				char c;
				long rev = 0;
				close(go[1]);
				while (read(go[0], &c, 1) > 0)
					;
				rc = opt_store_create(&cs, at(rel), &created);
				/* and each writes a collection of its own */
				if (rc == 0) {
					char name[16];
					snprintf(name, sizeof(name), "c%d", k);
					rc = commit_head(cs, name, "aa", k, NULL, NULL, &rev);
				}
				opt_store_free(cs);
				_exit(rc < 0 ? 100 : created);
			}
		}
		close(go[0]);
		close(go[1]);
		for (k = 0; k < CREATORS; k++) {
			int status = 0;
			if (pids[k] < 0 || waitpid(pids[k], &status, 0) < 0 || !WIFEXITED(status) ||
			    WEXITSTATUS(status) > 1) {
				printf("# round %d: creator %d failed (status %d)\n", round, k, status);
				ok = 0;
			} else {
				created_total += WEXITSTATUS(status);
			}
		}
		CHECK(ok);
		CHECK(created_total == 1);
		CHECK_RC(opt_store_open(&s, at(rel)));
		if (s) {
			json_t *names = NULL;
			CHECK_RC(opt_store_list(s, &names));
			CHECK(json_array_size(names) == CREATORS);
			json_decref(names);
		}
		opt_store_free(s);
		{
			/* no half-made store left beside it */
			char cmd[PATH_MAX + 64], dir[32];
			snprintf(dir, sizeof(dir), "crace%d", round);
			snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q opt-init", at(dir));
			CHECK(system(cmd) != 0);
		}
	}
}

TEST(discover)
{
	struct opt_store *s = new_store("disc/.opt");
	char *path = NULL, real[PATH_MAX], want[PATH_MAX + 8];

	mkdirs(at("disc/a/b/c"));
	CHECK(realpath(at("disc"), real) != NULL);
	snprintf(want, sizeof(want), "%s/.opt", real);
	CHECK_RC(opt_store_discover(&path, at("disc/a/b/c")));
	CHECK(path && strcmp(path, want) == 0);
	free(path);
	path = NULL;
	CHECK_RC(opt_store_discover(&path, at("disc")));
	CHECK(path && strcmp(path, want) == 0);
	free(path);
	path = NULL;
	/* the nearest one wins */
	opt_store_free(s);
	s = new_store("disc/a/.opt");
	CHECK_RC(opt_store_discover(&path, at("disc/a/b/c")));
	CHECK(realpath(at("disc/a"), real) != NULL);
	snprintf(want, sizeof(want), "%s/.opt", real);
	CHECK(path && strcmp(path, want) == 0);
	free(path);
	path = NULL;
	/* none above (unless this machine has one in / or the temp dir) */
	mkdirs(at("nostore/x"));
	if (access("/.opt", F_OK) != 0 && access("/tmp/.opt", F_OK) != 0) {
		CHECK(opt_store_discover(&path, at("nostore/x")) == OPT_ENOTFOUND);
		CHECK(path == NULL);
	}
	CHECK(opt_store_discover(&path, at("does/not/exist")) == OPT_EIO);
	opt_store_free(s);
}

TEST(names)
{
	static const char *good[] = { "a", "users", "a/b", "a.b", "A_b-9", "x.lockx", "lock", "v1.2/x_y",
				      "a.lock.b" };
	static const char *bad[] = { "", ".", "..", "a/../b", "../a", "a/..", ".x", "a/.x", "x.lock", "a/x.lock",
				     "a.lock/b", "a//b", "/a", "a/", "a b", "a\\b", "a:b", "a*", "a~1", "\xc3\xa9" };
	char name[OPT_NAME_MAX + 2];
	char h1[OPT_ID_LEN + 1], h2[OPT_ID_LEN + 1], h3[OPT_ID_LEN + 1];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
		if (!opt_store_name_valid(good[i]))
			printf("# refused good name '%s'\n", good[i]);
		CHECK(opt_store_name_valid(good[i]));
	}
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		if (opt_store_name_valid(bad[i]))
			printf("# accepted bad name '%s'\n", bad[i]);
		CHECK(!opt_store_name_valid(bad[i]));
	}
	CHECK(!opt_store_name_valid(NULL));
	memset(name, 'n', sizeof(name));
	name[OPT_NAME_MAX] = '\0';
	CHECK(opt_store_name_valid(name)); /* 200 */
	name[OPT_NAME_MAX] = 'n';
	name[OPT_NAME_MAX + 1] = '\0';
	CHECK(!opt_store_name_valid(name)); /* 201 */

	/* header IDs: valid, deterministic, distinct */
	opt_collection_header_id("users", h1);
	opt_collection_header_id("users", h2);
	opt_collection_header_id("users2", h3);
	CHECK(opt_id_valid(h1) && strlen(h1) == OPT_ID_LEN);
	CHECK(strcmp(h1, h2) == 0);
	CHECK(strcmp(h1, h3) != 0);
}

TEST(bad_names_refused)
{
	struct opt_store *s = new_store("badnames/.opt");
	struct opt_snap *snap = NULL;
	long rev = 0;

	CHECK(opt_snap_open(&snap, s, "../x", 0) == OPT_EINVAL);
	CHECK(opt_snap_head(&snap, s, "a/../b") == OPT_EINVAL);
	CHECK(commit_head(s, "x.lock", "aa", 1, NULL, NULL, &rev) == OPT_EINVAL);
	CHECK(commit_head(s, "", "aa", 1, NULL, NULL, &rev) == OPT_EINVAL);
	CHECK(opt_store_group_begin(s, "..") == OPT_EINVAL);
	CHECK(opt_snap_open_commit(&snap, s, ".x", "0123456789012345678901234567890123456789") == OPT_EINVAL);
	CHECK(snap == NULL);
	opt_store_free(s);
}

#define NREV 12

TEST(revisions_read_back)
{
	struct opt_store *s = new_store("rev/.opt");
	json_t *model[NREV + 1] = { 0 }, *cur = json_object(), *empty = json_object();
	char trx[NREV + 1][OPT_ID_LEN + 1], commit[NREV + 1][41];
	static const char *fixed[] = { "ab", "abc", "abz", "ab2", "a2", "zz" };
	int64_t t0 = opt_now_ms() / 1000;
	long r, rev;
	size_t i;

	memset(commit, 0, sizeof(commit));
	for (r = 1; r <= NREV; r++) {
		struct opt_snap *base = NULL;
		struct opt_tracker *t = NULL;
		struct opt_source src;
		struct opt_commit_info info;
		char summary[64];
		unsigned k, nops = 1 + rn(6);

		if (r > 1) {
			CHECK_RC(opt_snap_open(&base, s, "c", 0));
			if (!base)
				break;
			CHECK(opt_snap_rev(base) == r - 1);
		}
		src = base ? opt_snap_source(base) : opt_source_object(empty);
		CHECK_RC(opt_tracker_new(&t, &src));
		if (r == 1) {
			/* IDs of several lengths sharing their first two letters */
			for (i = 0; i < sizeof(fixed) / sizeof(*fixed); i++) {
				json_t *b = blk(fixed[i], "c", (long)i);
				CHECK_RC(opt_tracker_insert(t, b));
				json_object_set_new(cur, fixed[i], b);
			}
		} else if (r == NREV / 2) {
			/* every block goes: an empty revision in the middle */
			const char *id;
			json_t *v;
			json_object_foreach(cur, id, v)
				CHECK_RC(opt_tracker_delete(t, id));
			json_object_clear(cur);
			nops = 0;
		}
		for (k = 0; k < nops; k++) {
			size_t n = json_object_size(cur);
			unsigned what = rn(4);
			if (n > 0 && what == 0) {
				/* delete a random block */
				void *it = json_object_iter(cur);
				size_t skip = rn((unsigned)n);
				char id[OPT_ID_MAX + 1];
				while (skip--)
					it = json_object_iter_next(cur, it);
				snprintf(id, sizeof(id), "%s", json_object_iter_key(it));
				CHECK_RC(opt_tracker_delete(t, id));
				json_object_del(cur, id);
			} else if (n > 0 && what == 1) {
				/* update one by an operation */
				void *it = json_object_iter(cur);
				size_t skip = rn((unsigned)n);
				char id[OPT_ID_MAX + 1];
				long v = (long)rn(1000000);
				json_t *op = json_pack("[s,i,i,I]", "n", 0, 0, (json_int_t)v), *nb;
				while (skip--)
					it = json_object_iter_next(cur, it);
				snprintf(id, sizeof(id), "%s", json_object_iter_key(it));
				CHECK_RC(opt_tracker_update(t, id, op));
				json_decref(op);
				nb = json_deep_copy(json_object_get(cur, id));
				json_object_set_new(nb, "n", json_integer(v));
				json_object_set_new(cur, id, nb);
			} else {
				/* a new block, with some structure */
				char id[OPT_ID_LEN + 1];
				json_t *b;
				opt_id_new(id);
				b = blk(id, "c", (long)rn(1000));
				json_object_set_new(b, "z", json_pack("{s:[i,s,b,n],s:f}", "list", (int)r, "\xc3\xa9t\xc3\xa9", 1,
								      "half", 0.5));
				CHECK_RC(opt_tracker_insert(t, b));
				json_object_set_new(cur, id, b);
			}
		}
		opt_id_new(trx[r]);
		snprintf(summary, sizeof(summary), "revision %ld", r);
		info.trx = trx[r];
		info.summary = summary;
		info.trailers = "Test-Extra: yes\n";
		info.canon = NULL;
		rev = 0;
		CHECK_RC(opt_store_commit(s, "c", base, t, &info, &rev));
		CHECK(rev == r);
		model[r] = json_deep_copy(cur);
		opt_tracker_free(t);
		opt_snap_free(base);
	}

	/* read every revision back */
	for (r = NREV; r >= 1; r--) {
		struct opt_snap *snap = NULL, *p = NULL, *again = NULL;
		struct ids got = { json_array(), 0 };
		struct opt_source src;
		const char *id;
		json_t *v;
		size_t count = 99;
		char rs[16];

		if (!model[r])
			break;
		CHECK_RC(opt_snap_open(&snap, s, "c", r));
		if (!snap) {
			json_decref(got.arr);
			break;
		}
		CHECK(opt_snap_rev(snap) == r);
		CHECK(strcmp(opt_snap_name(snap), "c") == 0);
		CHECK(strcmp(opt_snap_trx(snap), trx[r]) == 0);
		snprintf(rs, sizeof(rs), "%ld", r);
		CHECK(opt_snap_trailer(snap, "Opt-Rev") && strcmp(opt_snap_trailer(snap, "Opt-Rev"), rs) == 0);
		CHECK(opt_snap_trailer(snap, "Test-Extra") && strcmp(opt_snap_trailer(snap, "Test-Extra"), "yes") == 0);
		CHECK(opt_snap_trailer(snap, "Opt-Status") == NULL);
		CHECK(strncmp(opt_snap_summary(snap), "revision ", 9) == 0 && atol(opt_snap_summary(snap) + 9) == r);
		CHECK(opt_snap_time(snap) >= t0 - 5 && opt_snap_time(snap) <= opt_now_ms() / 1000 + 5);
		CHECK(strlen(opt_snap_commit(snap)) == 40);
		snprintf(commit[r], sizeof(commit[r]), "%s", opt_snap_commit(snap));
		CHECK_RC(opt_snap_count(snap, &count));
		CHECK(count == json_object_size(model[r]));
		CHECK_RC(opt_snap_foreach(snap, collect_ids, &got));
		CHECK(json_array_size(got.arr) == json_object_size(model[r]));
		for (i = 0; i < json_array_size(got.arr); i++) {
			const char *gid = json_string_value(json_array_get(got.arr, i));
			CHECK(json_object_get(model[r], gid) != NULL);
			if (i > 0)
				CHECK(strcmp(json_string_value(json_array_get(got.arr, i - 1)), gid) < 0);
		}
		/* a callback's non-zero return stops the walk and is returned */
		if (count >= 2) {
			struct ids two = { json_array(), 2 };
			CHECK(opt_snap_foreach(snap, collect_ids, &two) == 42);
			CHECK(json_array_size(two.arr) == 2);
			json_decref(two.arr);
		}
		src = opt_snap_source(snap);
		json_object_foreach(model[r], id, v) {
			char *raw = NULL, *canon = NULL, oid[41], want[41];
			size_t len = 0, clen = 0;
			json_t *b = NULL;
			CHECK_RC(opt_snap_block_raw(snap, id, &raw, &len));
			CHECK_RC(opt_json_canon(&canon, &clen, v));
			CHECK(raw && canon && len == clen && memcmp(raw, canon, len) == 0);
			CHECK(raw && raw[len] == '\0');
			CHECK_RC(opt_snap_block_oid(snap, id, oid));
			if (canon) {
				blob_id(want, canon, clen);
				CHECK(strcmp(oid, want) == 0);
			}
			CHECK_RC(src.get(src.ctx, id, &b));
			CHECK(b && json_equal(b, v));
			json_decref(b);
			free(raw);
			free(canon);
		}
		/* blocks of other revisions are not here */
		if (r > 1) {
			json_object_foreach(model[r - 1], id, v) {
				char *raw = NULL, oid[41];
				size_t len;
				json_t *b = NULL;
				if (json_object_get(model[r], id))
					continue;
				CHECK(opt_snap_block_raw(snap, id, &raw, &len) == OPT_ENOTFOUND);
				CHECK(raw == NULL);
				CHECK(opt_snap_block_oid(snap, id, oid) == OPT_ENOTFOUND);
				CHECK(src.get(src.ctx, id, &b) == OPT_ENOTFOUND);
				CHECK(b == NULL);
			}
		}
		{
			char *raw = NULL;
			size_t len;
			CHECK(opt_snap_block_raw(snap, "qqqqqqqqqqqqqqqqqqqqqqqqqq", &raw, &len) == OPT_ENOTFOUND);
			CHECK(opt_snap_block_raw(snap, "../HEAD", &raw, &len) == OPT_EINVAL);
		}
		/* the parent */
		if (r > 1) {
			CHECK_RC(opt_snap_parent(&p, snap));
			CHECK(p && opt_snap_rev(p) == r - 1);
			CHECK(p && strcmp(opt_snap_trx(p), trx[r - 1]) == 0);
		} else {
			CHECK(opt_snap_parent(&p, snap) == OPT_ENOTFOUND);
			CHECK(p == NULL);
		}
		/* by commit */
		CHECK_RC(opt_snap_open_commit(&again, s, "c", opt_snap_commit(snap)));
		CHECK(again && opt_snap_rev(again) == r && strcmp(opt_snap_trx(again), trx[r]) == 0);
		opt_snap_free(again);
		opt_snap_free(p);
		opt_snap_free(snap);
		json_decref(got.arr);
	}
	/* the parents' commits are the commits of the revisions before */
	for (r = 2; r <= NREV; r++) {
		struct opt_snap *snap = NULL, *p = NULL;
		if (opt_snap_open_commit(&snap, s, "c", commit[r]) == 0 && opt_snap_parent(&p, snap) == 0)
			CHECK(strcmp(opt_snap_commit(p), commit[r - 1]) == 0);
		else
			CHECK(!"open by commit");
		opt_snap_free(p);
		opt_snap_free(snap);
	}
	{
		struct opt_snap *snap = NULL;
		json_t *names = NULL;
		CHECK(opt_snap_open(&snap, s, "c", NREV + 1) == OPT_ENOTFOUND);
		CHECK(opt_snap_open(&snap, s, "nope", 0) == OPT_ENOTFOUND);
		CHECK(opt_snap_head(&snap, s, "nope") == OPT_ENOTFOUND);
		CHECK(opt_snap_open_commit(&snap, s, "c", "not-a-commit") == OPT_EINVAL);
		CHECK_RC(opt_snap_open(&snap, s, "c", -5)); /* <= 0: the latest */
		CHECK(snap && opt_snap_rev(snap) == NREV);
		opt_snap_free(snap);
		CHECK_RC(opt_store_list(s, &names));
		CHECK(json_array_size(names) == 1 && strcmp(json_string_value(json_array_get(names, 0)), "c") == 0);
		json_decref(names);
	}
	/* another handle sees the same */
	{
		struct opt_store *s2 = NULL;
		CHECK_RC(opt_store_open(&s2, at("rev/.opt")));
		if (s2) {
			CHECK(open_rev(s2, "c") == NREV);
			CHECK(head_rev(s2, "c") == NREV);
		}
		opt_store_free(s2);
	}
	for (r = 0; r <= NREV; r++)
		json_decref(model[r]);
	json_decref(cur);
	json_decref(empty);
	opt_store_free(s);
}

TEST(list_sorted)
{
	struct opt_store *s = new_store("list/.opt");
	static const char *names[] = { "zeta", "b/x", "a", "b/a", "c.d", "B" };
	json_t *got = NULL, *want = json_pack("[s,s,s,s,s,s]", "B", "a", "b/a", "b/x", "c.d", "zeta");
	size_t i;
	long rev;

	CHECK_RC(opt_store_list(s, &got));
	CHECK(got && json_array_size(got) == 0);
	json_decref(got);
	for (i = 0; i < sizeof(names) / sizeof(*names); i++)
		CHECK_RC(commit_head(s, names[i], "aa", 1, NULL, NULL, &rev));
	CHECK_RC(opt_store_list(s, &got));
	CHECK(json_equal(got, want));
	json_decref(got);
	json_decref(want);
	opt_store_free(s);
}

TEST(name_prefix_of_another)
{
	/* "a" and "a/b" are both valid names; git cannot hold both refs
	 * (refs/.../a is a file, a/b needs a directory a): the second must
	 * fail cleanly, and not as a conflict that a writer would retry */
	struct opt_store *s = new_store("prefix/.opt");
	long rev = 0;
	int rc;

	CHECK_RC(commit_head(s, "a", "aa", 1, NULL, NULL, &rev));
	rc = commit_head(s, "a/b", "aa", 1, NULL, NULL, &rev);
	if (rc == 0) {
		CHECK(head_rev(s, "a/b") == 1);
		CHECK(head_rev(s, "a") == 1);
	} else {
		printf("# commit of 'a/b' beside 'a': %d (%s)\n", rc, opt_error_last());
		CHECK(rc != OPT_ECONFLICT && rc != OPT_EBUSY);
		CHECK(head_rev(s, "a") == 1);
	}
	/* the other way round */
	CHECK_RC(commit_head(s, "b/c", "aa", 1, NULL, NULL, &rev));
	rc = commit_head(s, "b", "aa", 1, NULL, NULL, &rev);
	if (rc == 0) {
		CHECK(head_rev(s, "b") == 1);
		CHECK(head_rev(s, "b/c") == 1);
	} else {
		printf("# commit of 'b' beside 'b/c': %d (%s)\n", rc, opt_error_last());
		CHECK(rc != OPT_ECONFLICT && rc != OPT_EBUSY);
		CHECK(head_rev(s, "b/c") == 1);
	}
	opt_store_free(s);
}

TEST(cas_conflict)
{
	struct opt_store *s = new_store("cas/.opt"), *s2 = NULL;
	struct opt_snap *b1 = NULL, *b2 = NULL, *h = NULL;
	char commit_before[41] = "", trx1[OPT_ID_LEN + 1], trx2[OPT_ID_LEN + 1];
	long rev = 0;

	CHECK_RC(commit_head(s, "c", "aa", 1, NULL, NULL, &rev));
	CHECK_RC(commit_head(s, "c", "bb", 2, NULL, NULL, &rev));
	CHECK(rev == 2);
	CHECK_RC(opt_store_open(&s2, at("cas/.opt")));
	/* two trackers based on the same revision, through two handles */
	CHECK_RC(opt_snap_open(&b1, s, "c", 0));
	CHECK_RC(opt_snap_open(&b2, s2, "c", 0));
	if (!b1 || !b2 || !s2)
		goto done;
	opt_id_new(trx1);
	opt_id_new(trx2);
	CHECK_RC(commit_one(s, "c", b1, "cc", 3, trx1, NULL, &rev));
	CHECK(rev == 3);
	CHECK_RC(opt_snap_head(&h, s, "c"));
	snprintf(commit_before, sizeof(commit_before), "%s", h ? opt_snap_commit(h) : "");
	opt_snap_free(h);
	h = NULL;
	rev = 0;
	CHECK(commit_one(s2, "c", b2, "dd", 4, trx2, NULL, &rev) == OPT_ECONFLICT);
	CHECK(rev == 0);
	CHECK(strstr(opt_error_last(), "changed since revision 2") != NULL);
	/* the same handle too */
	CHECK(commit_one(s, "c", b1, "dd", 4, trx2, NULL, &rev) == OPT_ECONFLICT);
	/* nothing changed */
	CHECK_RC(opt_snap_head(&h, s2, "c"));
	if (h) {
		CHECK(opt_snap_rev(h) == 3);
		CHECK(strcmp(opt_snap_commit(h), commit_before) == 0);
		CHECK(strcmp(opt_snap_trx(h), trx1) == 0);
		CHECK(n_of(h, "cc") == 3);
		CHECK(n_of(h, "dd") == -1);
	}
	opt_snap_free(h);
	h = NULL;
	/* creating a collection that exists meanwhile */
	CHECK_RC(commit_one(s, "new", NULL, "aa", 1, NULL, NULL, &rev));
	CHECK(commit_one(s2, "new", NULL, "bb", 1, NULL, NULL, &rev) == OPT_ECONFLICT);
	CHECK_RC(opt_snap_head(&h, s2, "new"));
	CHECK(h && n_of(h, "aa") == 1 && n_of(h, "bb") == -1);
	/* a commit needs a transaction ID */
	{
		struct opt_commit_info info = { NULL, "x", NULL, NULL };
		struct opt_tracker *t = NULL;
		json_t *e = json_object();
		struct opt_source src = opt_source_object(e);
		CHECK_RC(opt_tracker_new(&t, &src));
		CHECK(opt_store_commit(s, "other", NULL, t, &info, &rev) == OPT_EINVAL);
		opt_tracker_free(t);
		json_decref(e);
	}
done:
	opt_snap_free(h);
	opt_snap_free(b1);
	opt_snap_free(b2);
	opt_store_free(s2);
	opt_store_free(s);
}

TEST(empty_collection)
{
	struct opt_store *s = new_store("empty/.opt");
	struct opt_snap *snap = NULL;
	struct ids got = { json_array(), 0 };
	size_t n = 99;
	long rev = 0;

	/* created with no blocks at all */
	CHECK_RC(commit_one(s, "e", NULL, NULL, 0, NULL, NULL, &rev));
	CHECK(rev == 1);
	CHECK_RC(opt_snap_open(&snap, s, "e", 0));
	if (snap) {
		char *raw = NULL;
		size_t len;
		CHECK(opt_snap_rev(snap) == 1);
		CHECK_RC(opt_snap_count(snap, &n));
		CHECK(n == 0);
		CHECK_RC(opt_snap_foreach(snap, collect_ids, &got));
		CHECK(json_array_size(got.arr) == 0);
		CHECK(opt_snap_block_raw(snap, "aa", &raw, &len) == OPT_ENOTFOUND);
		CHECK(n_of(snap, "aa") == -1);
	}
	/* then something, then nothing again */
	CHECK_RC(commit_one(s, "e", snap, "aa", 7, NULL, NULL, &rev));
	CHECK(rev == 2);
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_snap_open(&snap, s, "e", 0));
	CHECK(snap && n_of(snap, "aa") == 7);
	if (snap) {
		struct opt_tracker *t = NULL;
		struct opt_source src = opt_snap_source(snap);
		struct opt_commit_info info = { "aaaaaaaaaaaaaaaaaaaaaaaaaa", "delete all", NULL, NULL };
		CHECK_RC(opt_tracker_new(&t, &src));
		CHECK_RC(opt_tracker_delete(t, "aa"));
		CHECK(opt_tracker_delete(t, "bb") == OPT_ENOTFOUND);
		CHECK_RC(opt_store_commit(s, "e", snap, t, &info, &rev));
		CHECK(rev == 3);
		opt_tracker_free(t);
	}
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_snap_open(&snap, s, "e", 0));
	if (snap) {
		CHECK(opt_snap_rev(snap) == 3);
		CHECK_RC(opt_snap_count(snap, &n));
		CHECK(n == 0);
	}
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_snap_open(&snap, s, "e", 2));
	CHECK(snap && n_of(snap, "aa") == 7);
	opt_snap_free(snap);
	json_decref(got.arr);
	opt_store_free(s);
}

#define MANY 300

/* A commit that cannot move the ref writes no object: its ref moved, its
 * ref is locked, or another writer holds the collection's commit lock. */
TEST(blocked_commit_writes_nothing)
{
	struct opt_store *s = new_store("blocked/.opt");
	struct opt_snap *b = NULL;
	char path[PATH_MAX], hex[OPT_SHA256_HEX + 1];
	long rev = 0, objects, packs;
	int fd;

	CHECK_RC(commit_head(s, "c", "aa", 1, NULL, NULL, &rev));
	CHECK_RC(opt_snap_open(&b, s, "c", 0));
	CHECK_RC(commit_head(s, "c", "bb", 2, NULL, NULL, &rev));
	if (!b)
		goto done;
	objects = stat_of(s, "objects");
	packs = stat_of(s, "packs");
	/* the ref moved since b */
	CHECK(commit_one(s, "c", b, "cc", 3, NULL, NULL, &rev) == OPT_ECONFLICT);
	CHECK(strstr(opt_error_last(), "changed since revision 1") != NULL);
	CHECK(stat_of(s, "objects") == objects && stat_of(s, "packs") == packs);
	opt_snap_free(b);
	b = NULL;
	/* the ref is locked (by another program, or left by a killed one) */
	snprintf(path, sizeof(path), "%s/refs/opt/collections/c.lock", at("blocked/.opt"));
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(commit_head(s, "c", "cc", 3, NULL, NULL, &rev) == OPT_EBUSY);
	CHECK(stat_of(s, "objects") == objects && stat_of(s, "packs") == packs);
	unlink(path);
	/* another writer holds the collection's commit lock */
	opt_sha256_hex(hex, "c", 1);
	snprintf(path, sizeof(path), "%s/opt-locks/%.32s", at("blocked/.opt"), hex);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	if (fd >= 0) {
		/* (an flock of another open file conflicts, in this process too) */
		CHECK(flock(fd, LOCK_EX) == 0);
		CHECK(commit_head(s, "c", "cc", 3, NULL, NULL, &rev) == OPT_EBUSY);
		CHECK(stat_of(s, "objects") == objects && stat_of(s, "packs") == packs);
		close(fd);
	}
	/* free again: the commit goes through */
	CHECK_RC(commit_head(s, "c", "cc", 3, NULL, NULL, &rev));
	CHECK(rev == 3);
	CHECK(stat_of(s, "objects") > objects);
done:
	opt_snap_free(b);
	opt_store_free(s);
}

TEST(many_commits_few_packs)
{
	struct opt_store *s = new_store("many/.opt"), *s2 = NULL;
	struct opt_snap *snap = NULL, *p = NULL;
	long i, max_packs = 0, rev = 0, r;
	int ok = 1;

	for (i = 1; i <= MANY && ok; i++) {
		struct opt_snap *h = NULL;
		struct opt_tracker *t = NULL;
		struct opt_source src;
		struct opt_commit_info info;
		char trx[OPT_ID_LEN + 1], id[OPT_ID_LEN + 1];
		json_t *empty = json_object();
		long packs;

		if (i > 1 && opt_snap_head(&h, s, "m") < 0) {
			CHECK(!"head");
			ok = 0;
		}
		src = h ? opt_snap_source(h) : opt_source_object(empty);
		opt_tracker_new(&t, &src);
		opt_tracker_insert_new(t, blk("counter", "m", i));
		opt_id_new(id);
		opt_tracker_insert_new(t, blk(id, "m", i));
		opt_id_new(trx);
		info.trx = trx;
		info.summary = NULL;
		info.trailers = NULL;
		info.canon = NULL;
		if (opt_store_commit(s, "m", h, t, &info, &rev) < 0 || rev != i) {
			CHECK(!"commit");
			printf("# commit %ld: %s\n", i, opt_error_last());
			ok = 0;
		}
		opt_tracker_free(t);
		opt_snap_free(h);
		json_decref(empty);
		packs = stat_of(s, "packs");
		if (packs > max_packs)
			max_packs = packs;
	}
	printf("# %d commits: at most %ld packs, %ld at the end, %ld objects\n", MANY, max_packs, stat_of(s, "packs"),
	       stat_of(s, "objects"));
	CHECK(max_packs <= 16);
	CHECK(stat_of(s, "objects") >= 4 * MANY);

	/* a second handle, opened before the repack */
	CHECK_RC(opt_store_open(&s2, at("many/.opt")));
	for (int pass = 0; pass < 3; pass++) {
		struct opt_store *rs = pass == 2 ? s2 : s;
		if (pass == 1) {
			CHECK_RC(opt_store_repack(s));
			CHECK(stat_of(s, "packs") == 1);
			CHECK(stat_of(s, "objects") >= 4 * MANY);
		}
		/* every revision is readable: walk the history */
		snap = NULL;
		CHECK_RC(opt_snap_open(&snap, rs, "m", 0));
		for (r = MANY; r >= 1 && snap; r--) {
			size_t n = 0;
			if (opt_snap_rev(snap) != r || n_of(snap, "counter") != r || opt_snap_count(snap, &n) < 0 ||
			    n != (size_t)r + 1) {
				printf("# pass %d, revision %ld: rev %ld, counter %ld, count %zu: %s\n", pass, r,
				       opt_snap_rev(snap), n_of(snap, "counter"), n, opt_error_last());
				CHECK(!"revision readable");
				break;
			}
			if (r == 1) {
				CHECK(opt_snap_parent(&p, snap) == OPT_ENOTFOUND);
				break;
			}
			if (opt_snap_parent(&p, snap) < 0) {
				CHECK(!"parent");
				break;
			}
			opt_snap_free(snap);
			snap = p;
			p = NULL;
		}
		opt_snap_free(snap);
		snap = NULL;
		/* and by number */
		CHECK_RC(opt_snap_open(&snap, rs, "m", 17));
		CHECK(snap && n_of(snap, "counter") == 17);
		opt_snap_free(snap);
		snap = NULL;
	}
	/* the store goes on after a repack */
	CHECK_RC(commit_head(s, "m", "after", 1, NULL, NULL, &rev));
	CHECK(rev == MANY + 1);
	CHECK_RC(commit_head(s2, "m", "after2", 1, NULL, NULL, &rev));
	CHECK(rev == MANY + 2);
	CHECK(open_rev(s, "m") == MANY + 2);
	opt_store_free(s2);
	opt_store_free(s);
}

#define NGROUP 5

TEST(group_commit)
{
	struct opt_store *s = new_store("group/.opt"), *s2 = NULL;
	struct opt_snap *h = NULL;
	long rev = 0, packs0, objs0, i;
	char trx[NGROUP + 1][OPT_ID_LEN + 1];

	CHECK_RC(commit_head(s, "g", "base", 0, NULL, NULL, &rev));
	CHECK_RC(opt_store_open(&s2, at("group/.opt")));
	packs0 = stat_of(s, "packs");
	objs0 = stat_of(s, "objects");

	CHECK_RC(opt_store_group_begin(s, "g"));
	CHECK(opt_store_group_begin(s, "g") == OPT_EINVAL);
	for (i = 1; i <= NGROUP; i++) {
		char id[8];
		snprintf(id, sizeof(id), "gb%c", (char)('a' + i));
		opt_id_new(trx[i]);
		rev = 0;
		CHECK_RC(commit_head(s, "g", id, i, trx[i], NULL, &rev));
		CHECK(rev == 1 + i);
		/* this handle reads the pending revision as the latest */
		CHECK(head_rev(s, "g") == 1 + i);
		CHECK(open_rev(s, "g") == 1 + i);
	}
	/* one collection per group */
	CHECK(commit_head(s, "other", "aa", 1, NULL, NULL, &rev) == OPT_EINVAL);
	/* a commit that does not build on the pending revision */
	{
		struct opt_snap *old = NULL;
		CHECK_RC(opt_snap_open(&old, s, "g", 2));
		CHECK(old && commit_one(s, "g", old, "zz", 1, NULL, NULL, &rev) == OPT_ECONFLICT);
		opt_snap_free(old);
	}
	/* nothing written yet: others see nothing */
	CHECK(stat_of(s, "packs") == packs0);
	CHECK(head_rev(s2, "g") == 1);
	CHECK(open_rev(s2, "g") == 1);
	CHECK(opt_store_group_flush(s) == NGROUP);
	CHECK(opt_store_group_flush(s) == 0); /* made durable once */
	opt_store_group_end(s);
	/* one pack for the whole group */
	CHECK(stat_of(s, "packs") == packs0 + 1);
	CHECK(stat_of(s, "objects") > objs0);
	CHECK(head_rev(s2, "g") == 1 + NGROUP);
	/* every revision, through the other handle */
	for (i = 1; i <= NGROUP; i++) {
		struct opt_snap *snap = NULL;
		char id[8];
		snprintf(id, sizeof(id), "gb%c", (char)('a' + i));
		CHECK_RC(opt_snap_open(&snap, s2, "g", 1 + i));
		if (snap) {
			CHECK(strcmp(opt_snap_trx(snap), trx[i]) == 0);
			CHECK(n_of(snap, id) == i);
			if (i < NGROUP) {
				snprintf(id, sizeof(id), "gb%c", (char)('a' + i + 1));
				CHECK(n_of(snap, id) == -1);
			}
		}
		opt_snap_free(snap);
	}
	/* an empty group: the flush does nothing */
	CHECK_RC(opt_store_group_begin(s, "g"));
	packs0 = stat_of(s, "packs");
	CHECK(opt_store_group_flush(s) == 0);
	opt_store_group_end(s);
	CHECK(stat_of(s, "packs") == packs0);
	CHECK(opt_store_group_flush(s) == OPT_EINVAL);
	opt_store_group_end(s); /* harmless outside a group */

	/* a conflict: another handle commits between begin and flush */
	CHECK_RC(opt_store_group_begin(s, "g"));
	CHECK_RC(commit_head(s, "g", "losta", 1, NULL, NULL, &rev));
	CHECK(rev == 2 + NGROUP);
	CHECK_RC(commit_head(s, "g", "lostb", 2, NULL, NULL, &rev));
	CHECK(rev == 3 + NGROUP);
	CHECK_RC(commit_head(s2, "g", "won", 3, NULL, NULL, &rev));
	CHECK(rev == 2 + NGROUP);
	CHECK(opt_store_group_flush(s) == OPT_ECONFLICT);
	/* what was pending is dropped: a flush after it writes nothing */
	CHECK(opt_store_group_flush(s) == 0);
	opt_store_group_end(s);
	CHECK_RC(opt_snap_head(&h, s, "g"));
	if (h) {
		CHECK(opt_snap_rev(h) == 2 + NGROUP);
		CHECK(n_of(h, "won") == 3);
		CHECK(n_of(h, "losta") == -1);
		CHECK(n_of(h, "lostb") == -1);
	}
	opt_snap_free(h);
	h = NULL;
	CHECK(head_rev(s2, "g") == 2 + NGROUP);
	/* the handle goes on normally */
	CHECK_RC(commit_head(s, "g", "next", 4, NULL, NULL, &rev));
	CHECK(rev == 3 + NGROUP);
	CHECK_RC(opt_snap_head(&h, s2, "g"));
	CHECK(h && n_of(h, "next") == 4 && n_of(h, "won") == 3 && n_of(h, "losta") == -1);
	opt_snap_free(h);
	h = NULL;

	/* a group that creates its collection */
	CHECK_RC(opt_store_group_begin(s, "fresh"));
	CHECK_RC(commit_head(s, "fresh", "aa", 1, NULL, NULL, &rev));
	CHECK(rev == 1);
	CHECK_RC(commit_head(s, "fresh", "bb", 2, NULL, NULL, &rev));
	CHECK(rev == 2);
	CHECK(head_rev(s2, "fresh") == -1);
	CHECK(opt_store_group_flush(s) == 2);
	opt_store_group_end(s);
	CHECK(head_rev(s2, "fresh") == 2);
	/* and one that loses the creation */
	CHECK_RC(opt_store_group_begin(s, "fresh2"));
	CHECK_RC(commit_head(s, "fresh2", "aa", 1, NULL, NULL, &rev));
	CHECK_RC(commit_head(s2, "fresh2", "bb", 2, NULL, NULL, &rev));
	CHECK(opt_store_group_flush(s) == OPT_ECONFLICT);
	opt_store_group_end(s);
	CHECK_RC(opt_snap_head(&h, s, "fresh2"));
	CHECK(h && opt_snap_rev(h) == 1 && n_of(h, "bb") == 2 && n_of(h, "aa") == -1);
	opt_snap_free(h);
	/* freeing a store in the middle of a group drops it */
	CHECK_RC(opt_store_group_begin(s2, "g"));
	CHECK_RC(commit_head(s2, "g", "dropped", 1, NULL, NULL, &rev));
	opt_store_free(s2);
	CHECK(head_rev(s, "g") == 3 + NGROUP);
	opt_store_free(s);
}

/* A version of block "big": n entries of ~40 bytes. */
static json_t *big_version(long n)
{
	json_t *b = blk("big", "d", n), *e = json_array();
	long i;

	for (i = 0; i < n; i++)
		json_array_append_new(e, json_pack("[i,s]", (int)i, "some text that repeats in every version"));
	json_object_set_new(b, "entries", e);
	return b;
}

/* Successive versions of a block written in one group are stored as git
 * deltas against the version before (so a stream of small changes to big
 * blocks costs little); every version reads back, before and after a
 * repack, and git accepts the packs. */
TEST(versions_as_deltas)
{
	struct opt_store *s = new_store("delta/.opt");
	long i, rev = 0, full = 0, bytes;
	char cmd[4200];

	CHECK_RC(opt_store_group_begin(s, "d"));
	for (i = 1; i <= 60; i++) {
		struct opt_snap *h = NULL;
		struct opt_tracker *t = NULL;
		struct opt_source src;
		struct opt_commit_info info = { NULL, NULL, NULL, NULL };
		json_t *empty = json_object(), *b = big_version(20 + i);
		char trx[OPT_ID_LEN + 1], *canon = NULL;
		size_t len = 0;

		opt_json_canon(&canon, &len, b);
		full += (long)len;
		free(canon);
		if (i > 1)
			CHECK_RC(opt_snap_head(&h, s, "d"));
		src = h ? opt_snap_source(h) : opt_source_object(empty);
		CHECK_RC(opt_tracker_new(&t, &src));
		CHECK_RC(opt_tracker_insert_new(t, b));
		opt_id_new(trx);
		info.trx = trx;
		CHECK_RC(opt_store_commit(s, "d", h, t, &info, &rev));
		CHECK(rev == i);
		opt_tracker_free(t);
		opt_snap_free(h);
		json_decref(empty);
	}
	CHECK_RC(opt_store_group_flush(s));
	opt_store_group_end(s);
	bytes = stat_of(s, "pack_bytes");
	printf("# 60 versions of %ld bytes in all: %ld bytes of pack\n", full, bytes);
	CHECK(bytes > 0 && bytes < full / 2);
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			CHECK_RC(opt_store_repack(s));
			CHECK(stat_of(s, "packs") == 1);
			/* the roll-up copies deltas as they are */
			CHECK(stat_of(s, "pack_bytes") <= bytes);
		}
		if (system("git --version >/dev/null 2>&1") == 0) {
			/* 59 of the 60 versions are deltas, in chains of up to 10 */
			snprintf(cmd, sizeof(cmd),
				 "git verify-pack -v '%s'/objects/pack/*.idx | grep -q '^chain length = 10: 5 objects'",
				 at("delta/.opt"));
			CHECK(system(cmd) == 0);
		}
		for (i = 1; i <= 60; i++) {
			struct opt_snap *snap = NULL;
			json_t *b = NULL, *want = big_version(20 + i);
			struct opt_source src;
			CHECK_RC(opt_snap_open(&snap, s, "d", i));
			if (!snap)
				break;
			src = opt_snap_source(snap);
			CHECK_RC(src.get(src.ctx, "big", &b));
			CHECK(b && json_equal(b, want));
			json_decref(b);
			json_decref(want);
			opt_snap_free(snap);
		}
		if (system("git --version >/dev/null 2>&1") == 0) {
			snprintf(cmd, sizeof(cmd), "git --git-dir='%s' fsck --strict --no-progress >/dev/null 2>&1",
				 at("delta/.opt"));
			CHECK(system(cmd) == 0);
		}
	}
	opt_store_free(s);
}

/* A git tree bigger than one stored zlib block (65,535 bytes) is
 * written as several and reads back whole; git accepts the pack. */
TEST(big_tree_stored)
{
	struct opt_store *s = new_store("bigtree/.opt");
	struct opt_pack *p = NULL;
	git_repository *repo = NULL;
	git_odb *odb = NULL;
	git_odb_object *obj = NULL;
	git_oid blob, tree;
	unsigned char *t = malloc(6000 * 40);
	size_t n = 0, i;
	char objdir[4200], cmd[4400];

	CHECK(t != NULL);
	CHECK_RC(opt_pack_new(&p));
	CHECK_RC(opt_pack_add(p, GIT_OBJECT_BLOB, "x", 1, &blob));
	for (i = 0; t && i < 6000; i++) {
		n += (size_t)sprintf((char *)t + n, "100644 f%05zu", i) + 1;  /* the NUL too */
		memcpy(t + n, blob.id, 20);
		n += 20;
	}
	CHECK(n > 3 * 65535);
	CHECK_RC(opt_pack_add(p, GIT_OBJECT_TREE, t, n, &tree));
	snprintf(objdir, sizeof(objdir), "%s/objects", at("bigtree/.opt"));
	CHECK_RC(opt_pack_write(p, NULL, objdir));
	CHECK(git_repository_open_bare(&repo, at("bigtree/.opt")) == 0);
	CHECK(repo && git_repository_odb(&odb, repo) == 0);
	CHECK(odb && git_odb_read(&obj, odb, &tree) == 0);
	CHECK(obj && git_odb_object_size(obj) == n && memcmp(git_odb_object_data(obj), t, n) == 0);
	if (system("git --version >/dev/null 2>&1") == 0) {
		snprintf(cmd, sizeof(cmd), "git --git-dir='%s' fsck --strict --no-progress --unreachable >/dev/null 2>&1",
			 at("bigtree/.opt"));
		CHECK(system(cmd) == 0);
	}
	git_odb_object_free(obj);
	git_odb_free(odb);
	git_repository_free(repo);
	opt_pack_free(p);
	free(t);
	opt_store_free(s);
}

TEST(snapshot_cache)
{
	struct opt_store *s = new_store("cache/.opt");
	struct opt_snap *snap = NULL;
	struct opt_tracker *t = NULL;
	json_t *empty = json_object(), *held = NULL, *pinned = NULL;
	struct opt_source src = opt_source_object(empty);
	struct opt_commit_info info = { "aaaaaaaaaaaaaaaaaaaaaaaaaa", "many blocks", NULL, NULL };
	static const size_t sizes[] = { 1, 2, 3, 0, 64, 1000, 1 };
	char ids[200][8];
	size_t i, k;
	long rev;

	CHECK_RC(opt_tracker_new(&t, &src));
	for (i = 0; i < 200; i++) {
		snprintf(ids[i], sizeof(ids[i]), "b%c%c", (char)('a' + i / 26), (char)('a' + i % 26));
		CHECK_RC(opt_tracker_insert_new(t, blk(ids[i], "k", (long)i)));
	}
	{
		/* a header-like block (kept out of the ring) */
		json_t *h = blk("hdr", "k", 999);
		json_object_set_new(h, "name", json_string("k"));
		CHECK_RC(opt_tracker_insert_new(t, h));
	}
	CHECK_RC(opt_store_commit(s, "k", NULL, t, &info, &rev));
	opt_tracker_free(t);
	CHECK_RC(opt_snap_open(&snap, s, "k", 0));
	if (!snap)
		goto done;
	src = opt_snap_source(snap);
	for (k = 0; k < sizeof(sizes) / sizeof(*sizes); k++) {
		opt_snap_cache(snap, sizes[k]);
		/* forward, backward, and a block kept across evictions */
		CHECK_RC(src.get(src.ctx, ids[5], &held));
		CHECK_RC(src.get(src.ctx, "hdr", &pinned));
		for (i = 0; i < 200; i++)
			CHECK(n_of(snap, ids[i]) == (long)i);
		for (i = 200; i-- > 0;)
			CHECK(n_of(snap, ids[i]) == (long)i);
		for (i = 0; i < 500; i++) {
			size_t j = rn(200);
			CHECK(n_of(snap, ids[j]) == (long)j);
			if (i % 50 == 0)
				CHECK(n_of(snap, "hdr") == 999);
			if (i % 97 == 0)
				CHECK(n_of(snap, "qqqq") == -1);
		}
		CHECK(held && json_integer_value(json_object_get(held, "n")) == 5);
		CHECK(pinned && json_integer_value(json_object_get(pinned, "n")) == 999);
		json_decref(held);
		json_decref(pinned);
		held = pinned = NULL;
	}
	/* resizing between reads of a source already handed out */
	opt_snap_cache(snap, 4);
	CHECK(n_of(snap, ids[1]) == 1);
	opt_snap_cache(snap, 2);
	CHECK(n_of(snap, ids[2]) == 2);
	CHECK(n_of(snap, ids[1]) == 1);
done:
	opt_snap_free(snap);
	json_decref(empty);
	opt_store_free(s);
}

TEST(pending_visibility)
{
	struct opt_store *s = new_store("pend/.opt");
	struct opt_snap *snap = NULL, *h = NULL;
	char trx[OPT_ID_LEN + 1], trx2[OPT_ID_LEN + 1], trailers[512], qbase[41] = "";
	long rev = 0;
	int d = 99;

	/* p and its primary q */
	CHECK_RC(commit_head(s, "p", "aa", 1, NULL, NULL, &rev));
	CHECK_RC(commit_head(s, "q", "aa", 1, NULL, NULL, &rev));
	CHECK_RC(opt_snap_head(&h, s, "q"));
	if (h)
		snprintf(qbase, sizeof(qbase), "%s", opt_snap_commit(h));
	opt_snap_free(h);
	h = NULL;

	/* a pending revision of p whose transaction is undecided */
	opt_id_new(trx);
	snprintf(trailers, sizeof(trailers),
		 "Opt-Status: pending\nOpt-Primary: q\nOpt-Collections: p,q\nOpt-Expires: %lld\nOpt-Primary-Base: %s\n",
		 (long long)(opt_now_ms() + 600000), qbase);
	CHECK_RC(commit_head(s, "p", "aa", 2, trx, trailers, &rev));
	CHECK(rev == 2);
	CHECK_RC(opt_snap_open(&snap, s, "p", 0));
	CHECK(snap && opt_snap_rev(snap) == 1 && n_of(snap, "aa") == 1);
	opt_snap_free(snap);
	snap = NULL;
	/* asked for by number: still read as its parent */
	CHECK_RC(opt_snap_open(&snap, s, "p", 2));
	CHECK(snap && opt_snap_rev(snap) == 1);
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_snap_head(&h, s, "p"));
	if (h) {
		CHECK(opt_snap_rev(h) == 2);
		CHECK(strcmp(opt_snap_trx(h), trx) == 0);
		CHECK(opt_snap_trailer(h, "Opt-Status") && strcmp(opt_snap_trailer(h, "Opt-Status"), "pending") == 0);
		CHECK(opt_snap_trailer(h, "Opt-Primary") && strcmp(opt_snap_trailer(h, "Opt-Primary"), "q") == 0);
		CHECK(n_of(h, "aa") == 2);
		CHECK_RC(opt_snap_decided(h, &d));
		CHECK(d == 0);
	}
	opt_snap_free(h);
	h = NULL;
	CHECK_RC(opt_store_decision(s, "q", trx, 0, &d));
	CHECK(d == 0);

	/* the decision on the primary: same trx, no Opt-Status */
	CHECK_RC(commit_head(s, "q", "bb", 1, trx, NULL, &rev));
	CHECK(rev == 2);
	CHECK_RC(opt_snap_open(&snap, s, "p", 0));
	CHECK(snap && opt_snap_rev(snap) == 2 && n_of(snap, "aa") == 2);
	if (snap) {
		CHECK_RC(opt_snap_decided(snap, &d));
		CHECK(d == 1);
	}
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_store_decision(s, "q", trx, 0, &d));
	CHECK(d == 1);
	CHECK_RC(opt_store_decision_at(s, "q", trx, qbase, &d));
	CHECK(d == 1);
	CHECK_RC(opt_store_decision_at(s, "q", trx, "", &d));
	CHECK(d == 1);
	/* the search stops at the given commit (the decision is after it) */
	CHECK_RC(opt_snap_head(&h, s, "q"));
	if (h) {
		CHECK_RC(opt_store_decision_at(s, "q", trx, opt_snap_commit(h), &d));
		CHECK(d == 0);
	}
	opt_snap_free(h);
	h = NULL;
	/* a committed revision of p is decided (1) for anyone */
	CHECK_RC(opt_snap_open(&snap, s, "p", 1));
	if (snap) {
		CHECK_RC(opt_snap_decided(snap, &d));
		CHECK(d == 1);
	}
	opt_snap_free(snap);
	snap = NULL;

	/* an aborted transaction: an abort record on the primary */
	opt_id_new(trx2);
	snprintf(trailers, sizeof(trailers),
		 "Opt-Status: pending\nOpt-Primary: q\nOpt-Collections: p,q\nOpt-Expires: %lld\n",
		 (long long)(opt_now_ms() - 1000));
	CHECK_RC(commit_head(s, "p", "aa", 3, trx2, trailers, &rev));
	CHECK(rev == 3);
	CHECK(open_rev(s, "p") == 2);
	CHECK_RC(commit_head(s, "q", NULL, 0, trx2, "Opt-Status: aborted\nOpt-Primary: q\n", &rev));
	CHECK(rev == 3);
	CHECK_RC(opt_store_decision(s, "q", trx2, 0, &d));
	CHECK(d == -1);
	CHECK_RC(opt_snap_open(&snap, s, "p", 0));
	if (snap) {
		CHECK(opt_snap_rev(snap) == 2);
		CHECK(n_of(snap, "aa") == 2);
	}
	opt_snap_free(snap);
	snap = NULL;
	CHECK_RC(opt_snap_head(&h, s, "p"));
	if (h) {
		CHECK_RC(opt_snap_decided(h, &d));
		CHECK(d == -1);
	}
	opt_snap_free(h);
	h = NULL;

	/* a collection whose first revision is pending does not exist yet
	 * for readers; a primary that does not exist decides nothing */
	opt_id_new(trx2);
	CHECK_RC(commit_head(s, "r", "aa", 1, trx2, "Opt-Status: pending\nOpt-Primary: zz\nOpt-Expires: 0\n", &rev));
	CHECK(opt_snap_open(&snap, s, "r", 0) == OPT_ENOTFOUND);
	CHECK(head_rev(s, "r") == 1);
	CHECK_RC(opt_store_decision(s, "zz", trx2, 0, &d));
	CHECK(d == 0);
	/* a pending revision without a primary is damage */
	CHECK_RC(commit_head(s, "r2", "aa", 1, NULL, "Opt-Status: pending\n", &rev));
	CHECK(opt_snap_open(&snap, s, "r2", 0) == OPT_EINTEGRITY);
	CHECK(snap == NULL);
	opt_store_free(s);
}

TEST(fsync_on)
{
	struct opt_store *s = NULL, *s2 = NULL;
	struct opt_snap *snap = NULL;
	long rev = 0, i;

	/* everything else runs with OPT_FSYNC=0: here the default, syncing */
	unsetenv("OPT_FSYNC");
	s = new_store("fsync/.opt");
	if (!s)
		goto done;
	for (i = 1; i <= 3; i++) {
		CHECK_RC(commit_head(s, "f", "aa", i, NULL, NULL, &rev));
		CHECK(rev == i);
	}
	CHECK_RC(opt_store_group_begin(s, "f"));
	CHECK_RC(commit_head(s, "f", "bb", 1, NULL, NULL, &rev));
	CHECK_RC(opt_store_group_flush(s));
	opt_store_group_end(s);
	CHECK_RC(opt_store_repack(s));
	CHECK_RC(opt_store_open(&s2, at("fsync/.opt")));
	if (s2) {
		CHECK_RC(opt_snap_open(&snap, s2, "f", 0));
		CHECK(snap && opt_snap_rev(snap) == 4 && n_of(snap, "aa") == 3 && n_of(snap, "bb") == 1);
		opt_snap_free(snap);
		snap = NULL;
		CHECK_RC(opt_snap_open(&snap, s2, "f", 1));
		CHECK(snap && n_of(snap, "aa") == 1);
		opt_snap_free(snap);
	}
	/* no temporary files left beside the packs */
	{
		char cmd[PATH_MAX + 64];
		snprintf(cmd, sizeof(cmd), "ls '%s/objects/pack' | grep -q tmp", at("fsync/.opt"));
		CHECK(system(cmd) != 0);
	}
done:
	opt_store_free(s2);
	opt_store_free(s);
	setenv("OPT_FSYNC", "0", 1);
}

int main(void)
{
	int rc;

	if (fixture_start("store") < 0)
		return 1;
	RUN(create_and_open);
	RUN(foreign_repositories);
	RUN(create_race);
	RUN(discover);
	RUN(names);
	RUN(bad_names_refused);
	RUN(revisions_read_back);
	RUN(list_sorted);
	RUN(name_prefix_of_another);
	RUN(cas_conflict);
	RUN(blocked_commit_writes_nothing);
	RUN(empty_collection);
	RUN(many_commits_few_packs);
	RUN(group_commit);
	RUN(versions_as_deltas);
	RUN(big_tree_stored);
	RUN(snapshot_cache);
	RUN(pending_visibility);
	RUN(fsync_on);
	rc = DONE();
	rm_tree(root);
	return rc;
}
