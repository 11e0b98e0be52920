/* test-pack.c - our own pack reader (lib/pack.c, opt_packr): it reads
 * what libgit2 reads, object for object (whole objects, OFS_DELTA chains
 * of our packs, REF_DELTA of packs git wrote), sees packs written after it
 * started and keeps reading packs rolled up under it; damaged or hostile
 * pack and index data (truncated, bytes changed, bad deltas) give an
 * error, never a read outside the data (run under ASan); a delta of
 * itself ends at the depth limit. */
#include "harness.h"
#include "fixture.h"
#include "error.h"
#include "pack.h"
#include "store/git.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <git2.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static void rm_tree(const char *dir)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int have_git(void)
{
	return system("git --version >/dev/null 2>&1") == 0;
}

/* A block-like text of about n bytes; version v changes a little of it. */
static char *text_version(size_t n, int v)
{
	char *t = malloc(n + 64);
	size_t i, k = 0;

	for (i = 0; k < n; i++)
		k += (size_t)sprintf(t + k, "[\"key%06zu\",{\"n\":%zu,\"v\":%d}],", i, i * 7, i == (size_t)v % 40 ? v : 0);
	return t;
}

/* Add 60 versions of one big object (deltas, chains of up to 10), small
 * blobs and a tree to a new pack written to objdir; the versions' IDs go
 * to ids[0..59]. */
static void write_versions(const char *objdir, int salt, git_oid ids[60])
{
	struct opt_pack *p = NULL;
	char small[64];
	int v;

	CHECK_RC(opt_pack_new(&p));
	for (v = 0; p && v < 60; v++) {
		char *t = text_version(3000, v + 1000 * salt);
		CHECK_RC(opt_pack_add_version(p, GIT_OBJECT_BLOB, t, strlen(t), "big", &ids[v]));
		free(t);
		snprintf(small, sizeof(small), "small %d %d", salt, v);
		CHECK_RC(opt_pack_add(p, GIT_OBJECT_BLOB, small, strlen(small), NULL));
	}
	{
		unsigned char tree[64];
		size_t n = (size_t)sprintf((char *)tree, "100644 f%d", salt) + 1;
		memcpy(tree + n, ids[0].id, 20);
		CHECK_RC(opt_pack_add(p, GIT_OBJECT_TREE, tree, n + 20, NULL));
	}
	CHECK_RC(opt_pack_write(p, NULL, objdir));
	opt_pack_free(p);
}

struct agree {
	git_odb *odb;
	struct opt_packr *r;
	size_t n, bad;
};

static int agree_cb(const git_oid *id, void *arg)
{
	struct agree *a = arg;
	git_odb_object *obj = NULL;
	unsigned char *data = NULL;
	size_t len = 0;
	git_object_t type = GIT_OBJECT_INVALID;
	int rc = opt_packr_read(a->r, id, &data, &len, &type);

	a->n++;
	if (git_odb_read(&obj, a->odb, id) < 0 || rc < 0 || type != git_odb_object_type(obj) ||
	    len != git_odb_object_size(obj) || memcmp(data, git_odb_object_data(obj), len) != 0 || data[len] != '\0') {
		char hex[41];
		git_oid_tostr(hex, sizeof(hex), id);
		printf("# object %s: reader rc %d (%s), type %d, %zu bytes\n", hex, rc, rc < 0 ? opt_error_last() : "",
		       (int)type, len);
		a->bad++;
	}
	git_odb_object_free(obj);
	free(data);
	return 0;
}

/* Every object of the repository at gitdir reads the same through the
 * reader as through libgit2: the number of objects compared. */
static size_t check_agree(const char *gitdir)
{
	char objdir[PATH_MAX + 16];
	git_repository *repo = NULL;
	struct agree a = { NULL, NULL, 0, 0 };

	snprintf(objdir, sizeof(objdir), "%s/objects", gitdir);
	CHECK(git_repository_open_bare(&repo, gitdir) == 0);
	CHECK(repo && git_repository_odb(&a.odb, repo) == 0);
	CHECK_RC(opt_packr_new(&a.r, objdir));
	if (a.odb && a.r)
		CHECK(git_odb_foreach(a.odb, agree_cb, &a) == 0);
	CHECK(a.bad == 0);
	opt_packr_free(a.r);
	git_odb_free(a.odb);
	git_repository_free(repo);
	return a.n;
}

/* The number a shell command prints, or -1. */
static int shell_number(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	int n = -1;

	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

static int count_deltas(const char *gitdir)
{
	char cmd[PATH_MAX + 256];

	/* verify-pack -v lists "ID blob SIZE PACKED OFFSET DEPTH BASE" for a
	 * delta; git names no delta kind, so count what has a base */
	snprintf(cmd, sizeof(cmd), "git verify-pack -v '%s'/objects/pack/*.idx | awk 'NF==7{n++} END{print n+0}'", gitdir);
	return shell_number(cmd);
}

TEST(agrees_with_libgit2)
{
	struct opt_store *s = NULL;
	char objdir[PATH_MAX + 16], cmd[PATH_MAX * 2];
	git_oid ids[60];
	size_t n;

	CHECK_RC(opt_store_create(&s, at("agree/.opt"), NULL));
	snprintf(objdir, sizeof(objdir), "%s/objects", at("agree/.opt"));
	write_versions(objdir, 1, ids);
	write_versions(objdir, 2, ids);
	n = check_agree(at("agree/.opt"));
	printf("# %zu objects of our packs read alike\n", n);
	CHECK(n >= 2 * 121);
	if (have_git()) {
		/* ours: OFS_DELTA chains */
		CHECK(count_deltas(at("agree/.opt")) > 100);
		/* a pack git wrote of the same objects, its deltas against
		 * bases named by ID (no --delta-base-offset) */
		snprintf(cmd, sizeof(cmd),
			 "git init -q --bare '%s' && git --git-dir='%s' cat-file --batch-all-objects "
			 "--batch-check='%%(objectname)' | git --git-dir='%s' pack-objects -q --window=50 '%s/objects/pack/pack' "
			 ">/dev/null",
			 at("gitpack"), at("agree/.opt"), at("agree/.opt"), at("gitpack"));
		CHECK(system(cmd) == 0);
		CHECK(count_deltas(at("gitpack")) > 100);
		n = check_agree(at("gitpack"));
		printf("# %zu objects of git's pack read alike\n", n);
		CHECK(n >= 2 * 121);
	}
	opt_store_free(s);
}

/* A reader made before a pack was written finds its objects; one whose
 * packs were rolled up into another (and removed) still reads them. */
TEST(new_and_removed_packs)
{
	struct opt_store *s = NULL;
	struct opt_packr *r = NULL;
	char objdir[PATH_MAX + 16];
	git_oid a[60], b[60];
	unsigned char *data = NULL;
	size_t len, i;
	git_object_t type;

	CHECK_RC(opt_store_create(&s, at("rescan/.opt"), NULL));
	snprintf(objdir, sizeof(objdir), "%s/objects", at("rescan/.opt"));
	CHECK_RC(opt_packr_new(&r, objdir));
	if (!r || !s)
		goto done;
	CHECK(opt_packr_read(r, &a[0], &data, &len, &type) == OPT_ENOTFOUND);
	write_versions(objdir, 3, a);
	CHECK_RC(opt_packr_read(r, &a[59], &data, &len, &type));
	free(data);
	/* within the same second, and the same directory listing time */
	write_versions(objdir, 4, b);
	CHECK_RC(opt_packr_read(r, &b[30], &data, &len, &type));
	free(data);
	for (i = 0; i < 8; i++) {
		git_oid c[60];
		write_versions(objdir, 10 + (int)i, c);
	}
	CHECK_RC(opt_store_repack(s));
	{
		char cmd[PATH_MAX + 64];
		snprintf(cmd, sizeof(cmd), "ls '%s'/pack/*.idx | wc -l", objdir);
		CHECK(shell_number(cmd) == 1);
	}
	for (i = 0; i < 60; i++) {
		CHECK_RC(opt_packr_read(r, &a[i], &data, &len, &type));
		CHECK(data && type == GIT_OBJECT_BLOB && len > 3000);
		free(data);
		data = NULL;
	}
	/* the removed packs are still mapped (read through); a few thousand
	 * reads later the reader has let them go */
	CHECK(shell_number("grep -c 'pack-.*(deleted)' /proc/$PPID/maps") > 0);
	for (i = 0; i < 4096; i++) {
		CHECK_RC(opt_packr_read(r, &a[i % 60], &data, &len, &type));
		free(data);
		data = NULL;
	}
	CHECK(shell_number("grep -c 'pack-.*(deleted)' /proc/$PPID/maps") == 0);
done:
	opt_packr_free(r);
	opt_store_free(s);
}

/* A pack added within the clock tick of the reader's last look at the
 * directory leaves its time as it was (simulated: the time set back):
 * the reader still finds the pack. */
TEST(pack_added_within_a_tick)
{
	struct opt_packr *r = NULL;
	char objdir[PATH_MAX + 16], packdir[PATH_MAX + 32];
	git_oid a[60], b[60];
	unsigned char *data = NULL;
	size_t len;
	git_object_t type;
	struct stat st;
	struct timespec ts[2];

	mkdir(at("tick"), 0755);
	mkdir(at("tick/objects"), 0755);
	mkdir(at("tick/objects/pack"), 0755);
	snprintf(objdir, sizeof(objdir), "%s/objects", at("tick"));
	snprintf(packdir, sizeof(packdir), "%s/pack", objdir);
	write_versions(objdir, 20, a);
	CHECK_RC(opt_packr_new(&r, objdir));
	if (!r)
		return;
	CHECK_RC(opt_packr_read(r, &a[0], &data, &len, &type));
	free(data);
	CHECK(stat(packdir, &st) == 0);
	write_versions(objdir, 21, b);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	CHECK(utimensat(AT_FDCWD, packdir, ts, 0) == 0);
	CHECK_RC(opt_packr_read(r, &b[0], &data, &len, &type));
	CHECK(data && type == GIT_OBJECT_BLOB);
	free(data);
	opt_packr_free(r);
}

/* ---- damaged data ---- */

static unsigned char *slurp(const char *pattern, size_t *len)
{
	char cmd[PATH_MAX + 64];
	FILE *f;
	unsigned char *b = NULL;
	size_t cap = 0, n = 0, k;

	snprintf(cmd, sizeof(cmd), "cat %s", pattern);
	if (!(f = popen(cmd, "r")))
		return NULL;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			b = realloc(b, cap);
		}
		k = fread(b + n, 1, cap - n, f);
		if (k == 0)
			break;
		n += k;
	}
	pclose(f);
	*len = n;
	return b;
}

/* A copy of exactly len bytes (so ASan sees a read past it). */
static unsigned char *dup_n(const unsigned char *b, size_t len)
{
	unsigned char *c = malloc(len ? len : 1);

	memcpy(c, b, len);
	return c;
}

static size_t nobj_ok, nerr;

/* Read id from (idx, pack): fine either way, as long as a success gives
 * the right bytes when want is given, and nothing crashes. */
static void try_read(const unsigned char *idx, size_t il, const unsigned char *pack, size_t pl, const git_oid *id,
		     const unsigned char *want, size_t wl)
{
	unsigned char *ic = dup_n(idx, il), *pc = dup_n(pack, pl), *data = NULL;
	size_t len = 0;
	git_object_t type;
	int rc = opt_packr_read_mem(ic, il, pc, pl, id, &data, &len, &type);

	if (rc == 0) {
		nobj_ok++;
		if (want)
			CHECK(len == wl && memcmp(data, want, wl) == 0);
	} else {
		nerr++;
		CHECK(data == NULL);
		CHECK(rc == OPT_EINTEGRITY || rc == OPT_ENOTFOUND || rc == OPT_EIO);
	}
	free(data);
	free(ic);
	free(pc);
}

TEST(damaged_packs)
{
	char objdir[PATH_MAX + 16], pat[PATH_MAX + 64];
	git_oid ids[60];
	unsigned char *idx, *pack, *good[60];
	size_t il = 0, pl = 0, gl[60], i, k;
	git_object_t type;

	mkdir(at("damaged"), 0755);
	mkdir(at("damaged/objects"), 0755);
	mkdir(at("damaged/objects/pack"), 0755);
	snprintf(objdir, sizeof(objdir), "%s/objects", at("damaged"));
	write_versions(objdir, 5, ids);
	snprintf(pat, sizeof(pat), "'%s'/pack/*.idx", objdir);
	idx = slurp(pat, &il);
	snprintf(pat, sizeof(pat), "'%s'/pack/*.pack", objdir);
	pack = slurp(pat, &pl);
	CHECK(idx && pack && il > 1072 && pl > 32);
	if (!idx || !pack)
		return;
	for (i = 0; i < 60; i++) {
		CHECK_RC(opt_packr_read_mem(idx, il, pack, pl, &ids[i], &good[i], &gl[i], &type));
		CHECK(good[i] && type == GIT_OBJECT_BLOB);
	}
	/* truncated pack or index: refused (the trailer no longer matches) */
	nobj_ok = nerr = 0;
	for (k = 0; k < pl; k += 1 + k / 16)
		try_read(idx, il, pack, k, &ids[59], NULL, 0);
	for (k = 0; k < il; k += 1 + k / 64)
		try_read(idx, k, pack, pl, &ids[59], NULL, 0);
	CHECK(nobj_ok == 0 && nerr > 0);
	/* every byte of the pack changed in turn (the trailer kept): a
	 * success still gives the right bytes (libdeflate checks Adler-32) */
	nobj_ok = nerr = 0;
	for (k = 12; k < pl - 20; k++) {
		unsigned char *c = dup_n(pack, pl);
		c[k] ^= (unsigned char)(1u << (k % 8));
		try_read(idx, il, c, pl, &ids[59], good[59], gl[59]);
		c[k] = (unsigned char)(c[k] ^ 0xff);
		try_read(idx, il, c, pl, &ids[k % 60], good[k % 60], gl[k % 60]);
		free(c);
	}
	printf("# pack bytes changed: %zu reads right, %zu errors\n", nobj_ok, nerr);
	CHECK(nerr > 0);
	/* every byte of the index (fan-out, IDs, offsets) changed in turn */
	nobj_ok = nerr = 0;
	for (k = 8; k < il - 40; k++) {
		unsigned char *c = dup_n(idx, il);
		c[k] = (unsigned char)(c[k] ^ (k % 2 ? 0xff : 0x80));
		try_read(c, il, pack, pl, &ids[k % 60], good[k % 60], gl[k % 60]);
		free(c);
	}
	printf("# index bytes changed: %zu reads right, %zu errors\n", nobj_ok, nerr);
	CHECK(nerr > 0);
	for (i = 0; i < 60; i++)
		free(good[i]);
	free(idx);
	free(pack);
}

/* ---- a hand-made pack: a base and a delta with chosen instructions ---- */

static size_t put_hdr(unsigned char *o, int type, size_t size)
{
	size_t n = 0;

	o[n] = (unsigned char)((type << 4) | (size & 15));
	size >>= 4;
	while (size) {
		o[n++] |= 0x80;
		o[n] = size & 0x7f;
		size >>= 7;
	}
	return n + 1;
}

static void put32be(unsigned char *o, uint32_t v)
{
	o[0] = (unsigned char)(v >> 24);
	o[1] = (unsigned char)(v >> 16);
	o[2] = (unsigned char)(v >> 8);
	o[3] = (unsigned char)v;
}

/* A pack of two objects: the blob "hello, world" and an OFS_DELTA (of
 * the given instructions) against it; its index; the delta's (made up)
 * ID in *did. */
static void make_pair(const unsigned char *delta, size_t dl, unsigned char **pack, size_t *pl, unsigned char **idx,
		      size_t *il, git_oid *did)
{
	static const char base[] = "hello, world";
	unsigned char *p = malloc(4096), *x;
	size_t n = 12, off[2];
	uLongf zl;
	struct opt_sha1 c;
	git_oid ids[2];
	int i;

	memcpy(p, "PACK\0\0\0\2\0\0\0\2", 12);
	off[0] = n;
	n += put_hdr(p + n, GIT_OBJECT_BLOB, sizeof(base) - 1);
	zl = 1000;
	compress(p + n, &zl, (const unsigned char *)base, sizeof(base) - 1);
	n += zl;
	off[1] = n;
	n += put_hdr(p + n, 6, dl);
	p[n++] = (unsigned char)(off[1] - off[0]);  /* < 128 */
	zl = 2000;
	compress(p + n, &zl, delta, (uLong)dl);
	n += zl;
	opt_sha1_init(&c);
	opt_sha1_update(&c, p, n);
	opt_sha1_final(&c, p + n);
	n += 20;
	/* IDs made up, in order: 0x11.. the base, 0x22.. the delta */
	memset(ids[0].id, 0x11, 20);
	memset(ids[1].id, 0x22, 20);
	*did = ids[1];
	*il = 8 + 1024 + 2 * 28 + 40;
	x = calloc(1, *il);
	memcpy(x, "\377tOc\0\0\0\2", 8);
	for (i = 0; i < 256; i++)
		put32be(x + 8 + 4 * i, (uint32_t)((i >= 0x11) + (i >= 0x22)));
	for (i = 0; i < 2; i++) {
		memcpy(x + 8 + 1024 + 20 * i, ids[i].id, 20);
		put32be(x + 8 + 1024 + 2 * 24 + 4 * i, (uint32_t)off[i]);
	}
	memcpy(x + *il - 40, p + n - 20, 20);
	*pack = p;
	*pl = n;
	*idx = x;
}

static int read_delta(const unsigned char *delta, size_t dl, unsigned char **out, size_t *ol)
{
	unsigned char *pack, *idx;
	size_t pl, il;
	git_oid did;
	git_object_t type;
	int rc;

	make_pair(delta, dl, &pack, &pl, &idx, &il, &did);
	{
		unsigned char *pc = dup_n(pack, pl), *ic = dup_n(idx, il);
		rc = opt_packr_read_mem(ic, il, pc, pl, &did, out, ol, &type);
		CHECK(rc < 0 || type == GIT_OBJECT_BLOB);
		free(pc);
		free(ic);
	}
	free(pack);
	free(idx);
	return rc;
}

TEST(bad_deltas)
{
	unsigned char *out = NULL;
	size_t ol = 0;
	/* base "hello, world" (12 bytes), result 11: copy "hello", insert
	 * " there" */
	static const unsigned char ok[] = { 12, 11, 0x80 | 0x10, 5, 6, ' ', 't', 'h', 'e', 'r', 'e' };
	static const unsigned char copy_past[] = { 12, 5, 0x80 | 0x01 | 0x10, 10, 5 };       /* 10..15 of 12 */
	static const unsigned char insert_past[] = { 12, 3, 5, 'a', 'b', 'c', 'd', 'e' };     /* 5 > 3 */
	static const unsigned char insert_cut[] = { 12, 5, 5, 'a', 'b' };                     /* data ends */
	static const unsigned char cmd_zero[] = { 12, 1, 0 };
	static const unsigned char short_result[] = { 12, 6, 0x80 | 0x10, 5 };                /* 5 of 6 */
	static const unsigned char wrong_base[] = { 13, 5, 0x80 | 0x10, 5 };
	static const unsigned char huge[] = { 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x80 | 0x10, 5 };
	static const unsigned char cut_header[] = { 12 | 0x80 };
	static const unsigned char copy_args_cut[] = { 12, 5, 0x80 | 0x01 | 0x02 };

	CHECK_RC(read_delta(ok, sizeof(ok), &out, &ol));
	CHECK(out && ol == 11 && memcmp(out, "hello there", 11) == 0);
	free(out);
	CHECK(read_delta(copy_past, sizeof(copy_past), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(insert_past, sizeof(insert_past), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(insert_cut, sizeof(insert_cut), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(cmd_zero, sizeof(cmd_zero), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(short_result, sizeof(short_result), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(wrong_base, sizeof(wrong_base), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(huge, sizeof(huge), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(cut_header, sizeof(cut_header), &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(read_delta(copy_args_cut, sizeof(copy_args_cut), &out, &ol) == OPT_EINTEGRITY && !out);
	if (opt_error_last())
		printf("# last: %s\n", opt_error_last());
}

/* A pack of one REF_DELTA whose base is itself: an error once the chain
 * is OPT_PACKR_DEPTH deep, not a loop. */
TEST(delta_of_itself)
{
	static const unsigned char delta[] = { 12, 5, 0x80 | 0x10, 5 };
	unsigned char *p = malloc(4096), *x, *out = NULL;
	size_t n = 12, il, ol = 0;
	uLongf zl = 1000;
	struct opt_sha1 c;
	git_oid id;
	git_object_t type;
	int i;

	memset(id.id, 0x33, 20);
	memcpy(p, "PACK\0\0\0\2\0\0\0\1", 12);
	n += put_hdr(p + n, 7, sizeof(delta));
	memcpy(p + n, id.id, 20);
	n += 20;
	compress(p + n, &zl, delta, sizeof(delta));
	n += zl;
	opt_sha1_init(&c);
	opt_sha1_update(&c, p, n);
	opt_sha1_final(&c, p + n);
	n += 20;
	il = 8 + 1024 + 28 + 40;
	x = calloc(1, il);
	memcpy(x, "\377tOc\0\0\0\2", 8);
	for (i = 0; i < 256; i++)
		put32be(x + 8 + 4 * i, i >= 0x33);
	memcpy(x + 8 + 1024, id.id, 20);
	put32be(x + 8 + 1024 + 24, 12);
	memcpy(x + il - 40, p + n - 20, 20);
	CHECK(opt_packr_read_mem(x, il, p, n, &id, &out, &ol, &type) == OPT_EINTEGRITY && !out);
	CHECK(opt_error_last() && strstr(opt_error_last(), "too deep"));
	free(p);
	free(x);
}

/* A blob whose entry header claims more than a block may have, with
 * enough (garbage) data behind it that the ratio check lets it through:
 * refused before anything is allocated or inflated. */
TEST(object_too_large)
{
	size_t big = OPT_BLOCK_MAX + 1, body = big / 1000, n = 12, il;
	unsigned char *p = calloc(1, body + 64), *x, *out = NULL;
	size_t ol = 0;
	struct opt_sha1 c;
	git_oid id;
	git_object_t type;
	int i;
	/* a delta whose result is larger than a block */
	unsigned char huge_result[16] = { 12, 0x80 | ((OPT_BLOCK_MAX + 1) & 0x7f) };
	size_t k = 2, v = (OPT_BLOCK_MAX + 1) >> 7;

	memset(id.id, 0x44, 20);
	memcpy(p, "PACK\0\0\0\2\0\0\0\1", 12);
	n += put_hdr(p + n, GIT_OBJECT_BLOB, big);
	n += body;
	opt_sha1_init(&c);
	opt_sha1_update(&c, p, n);
	opt_sha1_final(&c, p + n);
	n += 20;
	il = 8 + 1024 + 28 + 40;
	x = calloc(1, il);
	memcpy(x, "\377tOc\0\0\0\2", 8);
	for (i = 0; i < 256; i++)
		put32be(x + 8 + 4 * i, i >= 0x44);
	memcpy(x + 8 + 1024, id.id, 20);
	put32be(x + 8 + 1024 + 24, 12);
	memcpy(x + il - 40, p + n - 20, 20);
	CHECK(opt_packr_read_mem(x, il, p, n, &id, &out, &ol, &type) == OPT_EINTEGRITY && !out);
	CHECK(opt_error_last() && strstr(opt_error_last(), "more than an object may have"));
	free(p);
	free(x);
	while (v) {
		huge_result[k - 1] |= 0x80;
		huge_result[k++] = v & 0x7f;
		v >>= 7;
	}
	huge_result[k++] = 0x80 | 0x10;
	huge_result[k++] = 5;
	CHECK(read_delta(huge_result, k, &out, &ol) == OPT_EINTEGRITY && !out);
	CHECK(opt_error_last() && strstr(opt_error_last(), "more than an object may have"));
}

/* opt_pack_idx_check_mem: a sound index passes; each kind of damage is
 * caught. */
TEST(idx_check)
{
	static const unsigned char ok[] = { 12, 11, 0x80 | 0x10, 5, 6, ' ', 't', 'h', 'e', 'r', 'e' };
	unsigned char *pack, *idx;
	size_t pl, il, at[] = { 9, 8 + 4 * 0x30, 8 + 1024 + 19, 8 + 1024 + 40 + 2, 8 + 1024 + 48 + 3, 0, 0 };
	git_oid did;
	size_t i;
	struct opt_sha1 c;

	make_pair(ok, sizeof(ok), &pack, &pl, &idx, &il, &did);
	/* make_pair leaves the CRCs and the index checksum out: fill them */
	{
		uint32_t o1 = ((uint32_t)idx[8 + 1024 + 48 + 4] << 24) | ((uint32_t)idx[8 + 1024 + 48 + 5] << 16) |
			      ((uint32_t)idx[8 + 1024 + 48 + 6] << 8) | idx[8 + 1024 + 48 + 7];
		put32be(idx + 8 + 1024 + 40, (uint32_t)crc32(0, pack + 12, o1 - 12));
		put32be(idx + 8 + 1024 + 44, (uint32_t)crc32(0, pack + o1, (uInt)(pl - 20 - o1)));
		opt_sha1_init(&c);
		opt_sha1_update(&c, idx, il - 20);
		opt_sha1_final(&c, idx + il - 20);
	}
	CHECK_RC(opt_pack_idx_check_mem("t", idx, il, pack, pl));
	at[5] = il - 30;
	at[6] = il - 5;
	for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		unsigned char *d = dup_n(idx, il);
		d[at[i]] ^= 0x5a;
		CHECK(opt_pack_idx_check_mem("t", d, il, pack, pl) == OPT_EINTEGRITY);
		free(d);
	}
	{
		/* damage in the pack's objects */
		unsigned char *d = dup_n(pack, pl);
		d[20] ^= 1;
		CHECK(opt_pack_idx_check_mem("t", idx, il, d, pl) == OPT_EINTEGRITY);
		free(d);
	}
	free(pack);
	free(idx);
}

static void write_file(const char *path, const unsigned char *b, size_t n)
{
	FILE *f = fopen(path, "wb");

	CHECK(f != NULL);
	if (f) {
		CHECK(fwrite(b, 1, n, f) == n);
		fclose(f);
	}
}

/* A pack of a store is read in pieces, not mapped whole: an object whose
 * zlib stream is much longer than its size (empty stored blocks before
 * its data, as a writer may make) is read again, longer, and read right;
 * the same stream cut short is an integrity error. */
TEST(long_stream_read_in_pieces)
{
	unsigned char data[100], *p = malloc(4096), *x, *out = NULL;
	char dir[PATH_MAX + 16], path[PATH_MAX + 64];
	size_t n = 12, off, i, il = 8 + 1024 + 28 + 40, ol = 0;
	uLong ad;
	struct opt_sha1 c;
	struct opt_packr *r = NULL;
	git_oid id;
	git_object_t type;

	for (i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + 3);
	memcpy(p, "PACK\0\0\0\2\0\0\0\1", 12);
	off = n;
	n += put_hdr(p + n, GIT_OBJECT_BLOB, sizeof(data));
	p[n++] = 0x78;
	p[n++] = 0x01;
	for (i = 0; i < 200; i++) {  /* 1,000 bytes of empty stored blocks */
		memcpy(p + n, "\0\0\0\377\377", 5);
		n += 5;
	}
	p[n++] = 1;                  /* the last block: stored, 100 bytes */
	p[n++] = sizeof(data);
	p[n++] = 0;
	p[n++] = (unsigned char)~sizeof(data);
	p[n++] = 0xff;
	memcpy(p + n, data, sizeof(data));
	n += sizeof(data);
	ad = adler32(adler32(0, NULL, 0), data, sizeof(data));
	put32be(p + n, (uint32_t)ad);
	n += 4;
	opt_sha1_init(&c);
	opt_sha1_update(&c, p, n);
	opt_sha1_final(&c, p + n);
	n += 20;
	memset(id.id, 0x33, 20);
	x = calloc(1, il);
	memcpy(x, "\377tOc\0\0\0\2", 8);
	for (i = 0; i < 256; i++)
		put32be(x + 8 + 4 * i, (uint32_t)(i >= 0x33));
	memcpy(x + 8 + 1024, id.id, 20);
	put32be(x + 8 + 1024 + 24, (uint32_t)off);
	memcpy(x + il - 40, p + n - 20, 20);

	snprintf(dir, sizeof(dir), "%s", at("long"));
	CHECK(mkdir(dir, 0755) == 0);
	snprintf(path, sizeof(path), "%s/pack", dir);
	CHECK(mkdir(path, 0755) == 0);
	snprintf(path, sizeof(path), "%s/pack/pack-long.pack", dir);
	write_file(path, p, n);
	snprintf(path, sizeof(path), "%s/pack/pack-long.idx", dir);
	write_file(path, x, il);
	CHECK_RC(opt_packr_new(&r, dir));
	CHECK_RC(opt_packr_read(r, &id, &out, &ol, &type));
	CHECK(out && ol == sizeof(data) && memcmp(out, data, sizeof(data)) == 0 && type == GIT_OBJECT_BLOB);
	free(out);
	out = NULL;
	opt_packr_free(r);
	r = NULL;

	/* the last block's data cut off (the trailer kept right) */
	memmove(p + n - 20 - 4 - 60, p + n - 20, 20);
	n -= 64;
	memcpy(x + il - 40, p + n - 20, 20);
	snprintf(path, sizeof(path), "%s/pack/pack-long.pack", dir);
	unlink(path);
	write_file(path, p, n);
	snprintf(path, sizeof(path), "%s/pack/pack-long.idx", dir);
	unlink(path);
	write_file(path, x, il);
	CHECK_RC(opt_packr_new(&r, dir));
	CHECK(opt_packr_read(r, &id, &out, &ol, &type) == OPT_EINTEGRITY && !out);
	opt_packr_free(r);
	opt_error_clear();
	free(p);
	free(x);
}

int main(void)
{
	int rc;

	if (fixture_start("pack") < 0)
		return 1;
	git_libgit2_init();
	RUN(agrees_with_libgit2);
	RUN(new_and_removed_packs);
	RUN(pack_added_within_a_tick);
	RUN(damaged_packs);
	RUN(bad_deltas);
	RUN(delta_of_itself);
	RUN(object_too_large);
	RUN(idx_check);
	RUN(long_stream_read_in_pieces);
	rc = DONE();
	rm_tree(root);
	git_libgit2_shutdown();
	return rc;
}
