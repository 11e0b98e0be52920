/* test-bundle.c - bundle files: written and read back (full and
 * incremental), and what reading refuses: truncated files, bad headers,
 * missing prerequisites, garbage packs, packs that lack objects. */
#include "harness.h"
#include "fixture.h"
#include "sync/internal.h"
#include "error.h"

#include <git2.h>
#include <time.h>
#include <unistd.h>

static git_repository *new_repo(const char *rel)
{
	git_repository *r = NULL;

	if (git_repository_init(&r, at(rel), 1) < 0)
		printf("# cannot init %s: %s\n", rel, git_error_last()->message);
	return r;
}

/* A commit holding one blob with text, on parent (may be NULL). */
static git_oid commit_of(git_repository *r, const char *text, const git_oid *parent)
{
	git_oid blob, tree, c;
	git_treebuilder *tb = NULL;
	git_tree *t = NULL;
	git_commit *p = NULL;
	git_signature *sig = NULL;

	git_blob_create_from_buffer(&blob, r, text, strlen(text));
	git_treebuilder_new(&tb, r, NULL);
	git_treebuilder_insert(NULL, tb, "f", &blob, GIT_FILEMODE_BLOB);
	git_treebuilder_write(&tree, tb);
	git_tree_lookup(&t, r, &tree);
	git_signature_new(&sig, "t", "t@example.org", 1700000000, 0);
	if (parent)
		git_commit_lookup(&p, r, parent);
	git_commit_create(&c, r, NULL, sig, sig, NULL, text, t, parent ? 1 : 0, (const git_commit **)&p);
	git_commit_free(p);
	git_signature_free(sig);
	git_tree_free(t);
	git_treebuilder_free(tb);
	return c;
}

static void write_bundle(const char *rel, git_repository *r, const git_oid *head, const git_oid *pre)
{
	struct opt_bundle_line ref = { *head, (char *)"x" }, pl = { { { 0 } }, (char *)"x rev 1" };
	FILE *f = fopen(at(rel), "wb");
	size_t bytes = 0, objects = 0;

	if (pre)
		pl.id = *pre;
	CHECK_RC(opt_bundle_write(f, r, &ref, 1, &pl, pre ? 1 : 0, &bytes, &objects));
	CHECK(ftell(f) == (long)bytes);
	CHECK(objects == (pre ? 3u : 6u));
	fclose(f);
}

static void write_file(const char *rel, const void *data, size_t len)
{
	FILE *f = fopen(at(rel), "wb");

	fwrite(data, 1, len, f);
	fclose(f);
}

static size_t read_file(const char *rel, char **out)
{
	FILE *f = fopen(at(rel), "rb");
	size_t n;

	*out = malloc(1 << 20);
	n = fread(*out, 1, 1 << 20, f);
	fclose(f);
	return n;
}

/* Open and index rel into r: the code. */
static int apply_to(const char *rel, git_repository *r)
{
	struct opt_bundle *b = NULL;
	int rc = opt_bundle_open(&b, at(rel));

	if (rc == 0)
		rc = opt_bundle_index(b, r, NULL, NULL, NULL, NULL);
	opt_bundle_free(b);
	return rc;
}

static git_repository *src;
static git_oid c1, c2;

TEST(round_trip)
{
	git_repository *dst = new_repo("dst");
	struct opt_bundle *b = NULL;
	git_commit *c = NULL;
	size_t objects = 0;

	write_bundle("full.bundle", src, &c2, NULL);
	CHECK_RC(opt_bundle_open(&b, at("full.bundle")));
	CHECK(b && b->nrefs == 1 && b->npre == 0);
	CHECK(b && strcmp(b->refs[0].text, "x") == 0 && git_oid_equal(&b->refs[0].id, &c2));
	CHECK(b && opt_bundle_head(b, "x") && !opt_bundle_head(b, "y"));
	CHECK_RC(opt_bundle_index(b, dst, NULL, NULL, NULL, &objects));
	CHECK(objects == 6);
	CHECK(git_commit_lookup(&c, dst, &c2) == 0);
	CHECK(c && git_oid_equal(git_commit_parent_id(c, 0), &c1));
	git_commit_free(c);
	opt_bundle_free(b);
	/* incremental: only what c1 lacks, and c1 must be there */
	write_bundle("inc.bundle", src, &c2, &c1);
	CHECK(apply_to("inc.bundle", dst) == 0);
	git_repository_free(dst);
	dst = new_repo("empty");
	CHECK(apply_to("inc.bundle", dst) == OPT_ENOTFOUND);
	CHECK(strstr(opt_error_last(), "needs commit") && strstr(opt_error_last(), "(x rev 1)"));
	git_repository_free(dst);
}

TEST(truncated)
{
	git_repository *dst = new_repo("trunc");
	char *data = NULL;
	size_t n = read_file("full.bundle", &data), cut[] = { n - 1, n - 21, n / 2, 40, 17, 0 };
	size_t i;

	for (i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		write_file("cut.bundle", data, cut[i]);
		CHECK(apply_to("cut.bundle", dst) == OPT_EINTEGRITY);
	}
	free(data);
	git_repository_free(dst);
}

TEST(bad_header)
{
	static const char *bad[] = {
		"",
		"# v2 git bundlx\n\n",
		"# v4 git bundle\n\n",
		"# v2 git bundle\nzz refs/opt/collections/x\n\n",
		"# v2 git bundle\n-0123\n\n",
		"# v2 git bundle\n0123456789012345678901234567890123456789refs/opt/collections/x\n\n",
		"# v2 git bundle\n0123456789012345678901234567890123456789 refs/opt/collections/.x\n\n",
		"# v2 git bundle\n0123456789012345678901234567890123456789 refs/opt/collections/x\n"
		"0123456789012345678901234567890123456789 refs/opt/collections/x\n\n",
		"# v3 git bundle\n@filter=blob:none\n\n",
	};
	struct opt_bundle *b = NULL;
	char *line;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file("bad.bundle", bad[i], strlen(bad[i]));
		if (opt_bundle_open(&b, at("bad.bundle")) != OPT_EINTEGRITY) {
			printf("# header %zu was accepted\n", i);
			h_failed_now = 1;
		}
		opt_bundle_free(b);
		b = NULL;
	}
	line = malloc(10000);
	memset(line, 'a', 10000);
	memcpy(line, "# v2 git bundle\n", 16);
	write_file("bad.bundle", line, 10000);
	CHECK(opt_bundle_open(&b, at("bad.bundle")) == OPT_EINTEGRITY);
	free(line);
	CHECK(opt_bundle_open(&b, at("nosuch.bundle")) == OPT_ENOTFOUND);
	/* refs of other kinds are ignored; v3 with sha1 is read */
	line = "# v3 git bundle\n@object-format=sha1\n0123456789012345678901234567890123456789 refs/heads/main\n\n";
	write_file("ok.bundle", line, strlen(line));
	CHECK_RC(opt_bundle_open(&b, at("ok.bundle")));
	CHECK(b && b->nrefs == 0);
	opt_bundle_free(b);
}

/* A bundle of c1 whose pack has the commit, and its tree when with_tree,
 * but not the blob; applied to dst. */
static int incomplete_to(git_repository *dst, int with_tree)
{
	git_packbuilder *pb = NULL;
	git_commit *c = NULL;
	git_buf pack = { 0 };
	char hex[GIT_OID_HEXSZ + 1];
	FILE *f;

	git_packbuilder_new(&pb, src);
	git_packbuilder_insert(pb, &c1, NULL);
	if (with_tree && git_commit_lookup(&c, src, &c1) == 0)
		git_packbuilder_insert(pb, git_commit_tree_id(c), NULL);
	git_commit_free(c);
	git_packbuilder_write_buf(&pack, pb);
	git_oid_tostr(hex, sizeof(hex), &c1);
	f = fopen(at("incomplete.bundle"), "wb");
	fprintf(f, "# v2 git bundle\n%s refs/opt/collections/x\n\n", hex);
	fwrite(pack.ptr, 1, pack.size, f);
	fclose(f);
	git_buf_dispose(&pack);
	git_packbuilder_free(pb);
	return apply_to("incomplete.bundle", dst);
}

TEST(garbage_pack)
{
	git_repository *dst = new_repo("garbage");
	char buf[600], hex[GIT_OID_HEXSZ + 1];
	size_t i;
	int len;

	git_oid_tostr(hex, sizeof(hex), &c2);
	len = snprintf(buf, sizeof(buf), "# v2 git bundle\n%s refs/opt/collections/x\n\n", hex);
	memcpy(buf + len, "PACK\0\0\0\2\0\0\0\3", 12);
	len += 12;
	for (i = (size_t)len; i < sizeof(buf); i++)
		buf[i] = (char)rn(256);
	write_file("garbage.bundle", buf, sizeof(buf));
	CHECK(apply_to("garbage.bundle", dst) == OPT_EINTEGRITY);
	/* well-formed packs that lack a commit's tree, or a tree's blob */
	CHECK(incomplete_to(dst, 0) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "is incomplete: it lacks tree"));
	CHECK(incomplete_to(dst, 1) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "is incomplete: it lacks blob"));
	git_repository_free(dst);
}

int main(void)
{
	const char *s = getenv("OPT_TEST_SEED");
	char tmpl[] = "/tmp/opt-unit-bundle.XXXXXX";

	seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
	rng = seed;
	printf("# seed %llu (OPT_TEST_SEED)\n", (unsigned long long)seed);
	git_libgit2_init();
	snprintf(root, sizeof(root), "%s", mkdtemp(tmpl));
	src = new_repo("src");
	c1 = commit_of(src, "one", NULL);
	c2 = commit_of(src, "two", &c1);
	RUN(round_trip);
	RUN(truncated);
	RUN(bad_header);
	RUN(garbage_pack);
	git_repository_free(src);
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	git_libgit2_shutdown();
	return DONE();
}
