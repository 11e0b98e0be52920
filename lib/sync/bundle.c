#include "internal.h"
#include "error.h"
#include "identity.h"
#include "pack.h"
#include "util.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096
#define HDR_V2 "# v2 git bundle"
#define HDR_V3 "# v3 git bundle"

/* ---- small helpers ---- */

/* ---- reading ---- */

static void lines_free(struct opt_bundle_line *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].text);
	free(v);
}

void opt_bundle_free(struct opt_bundle *b)
{
	if (!b)
		return;
	if (b->f && b->own)
		fclose(b->f);
	lines_free(b->pre, b->npre);
	lines_free(b->refs, b->nrefs);
	free(b->path);
	free(b);
}

/* One header line into buf (without its newline): its length, -1 at a
 * line too long, -2 at the end of the file, -3 on a read error. */
static long read_line(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	int c;

	while ((c = getc(f)) != EOF && c != '\n') {
		if (n + 1 >= cap)
			return -1;
		buf[n++] = (char)c;
	}
	if (c == EOF)
		return ferror(f) ? -3 : -2;
	buf[n] = 0;
	return (long)n;
}

static int add_line(struct opt_bundle_line **v, size_t *n, const git_oid *id, const char *text)
{
	struct opt_bundle_line *nv;

	if ((*n & (*n - 1)) == 0) {
		nv = realloc(*v, (*n ? *n * 2 : 8) * sizeof(*nv));
		if (!nv)
			return opt_error_set(OPT_EIO, "out of memory");
		*v = nv;
	}
	(*v)[*n].id = *id;
	if (!((*v)[*n].text = strdup(text)))
		return opt_error_set(OPT_EIO, "out of memory");
	(*n)++;
	return 0;
}

/* Parse the header of b->f. */
static int read_header(struct opt_bundle *b)
{
	char line[LINE_MAX_BYTES];
	const char *name;
	size_t nlines = 0, i;
	int v3;
	long len;
	git_oid id;
	int rc;

	len = read_line(b->f, line, sizeof(line));
	if (len == -3)
		return opt_error_set(OPT_EIO, "cannot read bundle '%s': %s", b->path, strerror(errno));
	if (len < 0 || (strcmp(line, HDR_V2) != 0 && strcmp(line, HDR_V3) != 0))
		return opt_error_set(OPT_EINTEGRITY, "'%s' is not a git bundle (no \"" HDR_V2 "\" line)", b->path);
	v3 = strcmp(line, HDR_V3) == 0;
	for (;;) {
		len = read_line(b->f, line, sizeof(line));
		if (len == -3)
			return opt_error_set(OPT_EIO, "cannot read bundle '%s': %s", b->path, strerror(errno));
		if (len == -2)
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s' is truncated: its header has no end", b->path);
		if (len == -1)
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s': a header line is longer than %d bytes", b->path,
					     LINE_MAX_BYTES);
		if (len == 0)
			break;
		if (++nlines > OPT_BUNDLE_MAX_REFS)
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s': more than %d header lines", b->path,
					     OPT_BUNDLE_MAX_REFS);
		if (v3 && line[0] == '@') {
			if (strcmp(line, "@object-format=sha1") != 0)
				return opt_error_set(OPT_EINTEGRITY, "bundle '%s': unsupported capability '%s'", b->path,
						     opt_esc(line + 1));
			continue;
		}
		if (line[0] == '-') {
			if (len < 1 + GIT_OID_HEXSZ || git_oid_fromstrn(&id, line + 1, GIT_OID_HEXSZ) < 0 ||
			    (line[1 + GIT_OID_HEXSZ] && line[1 + GIT_OID_HEXSZ] != ' '))
				return opt_error_set(OPT_EINTEGRITY, "bundle '%s': malformed prerequisite line '%s'",
						     b->path, opt_esc(line));
			git_error_clear();
			if ((rc = add_line(&b->pre, &b->npre, &id,
					   line[1 + GIT_OID_HEXSZ] ? line + 2 + GIT_OID_HEXSZ : "")) < 0)
				return rc;
			continue;
		}
		if (len < GIT_OID_HEXSZ + 2 || line[GIT_OID_HEXSZ] != ' ' ||
		    git_oid_fromstrn(&id, line, GIT_OID_HEXSZ) < 0) {
			git_error_clear();
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s': malformed ref line '%s'", b->path, opt_esc(line));
		}
		/* only collections are ours; other refs are left alone */
		if (!(name = opt_ref_collection_name(line + GIT_OID_HEXSZ + 1)))
			continue;
		if (!opt_store_name_valid(name))
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s': invalid collection name in '%s'", opt_esc(b->path),
					     opt_esc(line));
		for (i = 0; i < b->nrefs; i++)
			if (strcmp(b->refs[i].text, name) == 0)
				return opt_error_set(OPT_EINTEGRITY, "bundle '%s': collection '%s' is listed twice", b->path,
						     b->refs[i].text);
		if ((rc = add_line(&b->refs, &b->nrefs, &id, name)) < 0)
			return rc;
	}
	return 0;
}

int opt_bundle_open(struct opt_bundle **out, const char *path)
{
	struct opt_bundle *b;
	int rc;

	*out = NULL;
	{
		/* ls needs no store, so libgit2 may not be set up yet */
		static int inited;
		if (!inited && git_libgit2_init() < 0)
			return opt_git_fail(OPT_EIO, "cannot initialise libgit2");
		inited = 1;
	}
	if (!(b = calloc(1, sizeof(*b))) || !(b->path = strdup(strcmp(path, "-") == 0 ? "(stdin)" : opt_esc(path)))) {
		free(b);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	if (strcmp(path, "-") == 0) {
		b->f = stdin;
	} else {
		struct stat st;
		if (!(b->f = fopen(path, "rb"))) {
			rc = opt_error_set(errno == ENOENT ? OPT_ENOTFOUND : OPT_EIO, "cannot open bundle '%s': %s", opt_esc(path),
					   strerror(errno));
			opt_bundle_free(b);
			return rc;
		}
		b->own = 1;
		if (fstat(fileno(b->f), &st) == 0 && S_ISDIR(st.st_mode)) {
			opt_bundle_free(b);
			return opt_error_set(OPT_EINVAL, "cannot open bundle '%s': a directory", opt_esc(path));
		}
	}
	if ((rc = read_header(b)) < 0) {
		opt_bundle_free(b);
		return rc;
	}
	*out = b;
	return 0;
}

const git_oid *opt_bundle_head(const struct opt_bundle *b, const char *name)
{
	size_t i;

	for (i = 0; i < b->nrefs; i++)
		if (strcmp(b->refs[i].text, name) == 0)
			return &b->refs[i].id;
	return NULL;
}

struct iprog {
	opt_sync_progress_fn fn;
	void *arg;
};

static int index_cb(const git_indexer_progress *st, void *payload)
{
	struct iprog *p = payload;

	if (p->fn && st->total_objects)
		p->fn(st->received_objects < st->total_objects ? "reading the bundle" : "indexing objects",
		      st->received_objects < st->total_objects ? st->received_objects : st->indexed_objects,
		      st->total_objects, p->arg);
	return 0;
}

/* 1 if id is a commit in repo. */
static int is_commit(git_repository *repo, const git_oid *id)
{
	git_odb *odb = NULL;
	size_t len;
	git_object_t type = GIT_OBJECT_INVALID;
	int ok = 0;

	if (git_repository_odb(&odb, repo) == 0)
		ok = git_odb_read_header(&len, &type, odb, id) == 0 && type == GIT_OBJECT_COMMIT;
	git_odb_free(odb);
	git_error_clear();
	return ok;
}


static int missing(const char *path, const char *what, const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1];

	sync_hex_of(hex, id);
	git_error_clear();
	return opt_error_set(OPT_EINTEGRITY, "bundle '%s' is incomplete: it lacks %s %s", path, what, hex);
}

/* The walk of check_complete over the trees of the bundle's commits. */
struct walk {
	const struct opt_bundle *b;
	git_repository *repo;
	git_odb *odb, *known;   /* the repository's objects; known may be NULL */
	struct oidset seen;     /* trees looked at */
	git_oid *stack;         /* trees still to look at */
	size_t sn, scap;
};

static int walk_push(struct walk *w, const git_oid *id)
{
	int rc;

	if ((rc = OPT_ALLOC_GROW(w->stack, w->sn + 1, w->scap)) < 0)
		return rc;
	w->stack[w->sn++] = *id;
	return 0;
}

/* Tree id: there (unless known has it or it was seen), its subtrees
 * pushed, its blobs there. */
static int walk_tree(struct walk *w, const git_oid *id)
{
	git_tree *t = NULL;
	size_t k, ne;
	int rc;

	if ((rc = sync_oidset_add(&w->seen, id)) <= 0)
		return rc;
	if (w->known && git_odb_exists(w->known, id))
		return 0;
	if (git_tree_lookup(&t, w->repo, id) < 0)
		return missing(w->b->path, "tree", id);
	ne = git_tree_entrycount(t);
	for (k = 0, rc = 0; k < ne && rc == 0; k++) {
		const git_tree_entry *e = git_tree_entry_byindex(t, k);
		git_object_t type = git_tree_entry_type(e);
		if (type == GIT_OBJECT_TREE)
			rc = walk_push(w, git_tree_entry_id(e));
		else if (type == GIT_OBJECT_BLOB && !git_odb_exists(w->odb, git_tree_entry_id(e)))
			rc = missing(w->b->path, "blob", git_tree_entry_id(e));
	}
	git_tree_free(t);
	return rc;
}

/* The trees of commit id, depth first, with a stack of our own (a hostile
 * pack may nest them deep). */
static int walk_commit(struct walk *w, const git_oid *id)
{
	git_commit *c = NULL;
	git_oid tree;
	int rc;

	if (w->known && git_odb_exists(w->known, id))
		return 0;
	if (git_commit_lookup(&c, w->repo, id) < 0)
		return missing(w->b->path, "commit", id);
	tree = *git_commit_tree_id(c);
	git_commit_free(c);
	if ((rc = walk_push(w, &tree)) < 0)
		return rc;
	while (w->sn > 0) {
		tree = w->stack[--w->sn];
		if ((rc = walk_tree(w, &tree)) < 0)
			return rc;
	}
	return 0;
}

/* A walk over the commits of b: from its heads, hiding its
 * prerequisites. */
static int walk_commits(git_revwalk **out, const struct opt_bundle *b, git_repository *repo)
{
	size_t i;

	if (git_revwalk_new(out, repo) < 0)
		return opt_git_fail(OPT_EIO, "cannot read the bundle's objects");
	for (i = 0; i < b->nrefs; i++)
		if (git_revwalk_push(*out, &b->refs[i].id) < 0)
			return missing(b->path, "commit", &b->refs[i].id);
	for (i = 0; i < b->npre; i++)
		if (git_revwalk_hide(*out, &b->pre[i].id) < 0)
			return missing(b->path, "commit", &b->pre[i].id);
	return 0;
}

/* Every object reachable from the heads of b and not from its
 * prerequisites is in repo: the commits, their trees, the trees' entries.
 * What known (may be NULL) has is taken as complete, as git does with
 * what a repository has. */
static int check_complete(const struct opt_bundle *b, git_repository *repo, git_odb *known)
{
	struct walk w = { b, repo, NULL, known, { 0 }, NULL, 0, 0 };
	git_revwalk *rw = NULL;
	git_oid id;
	int rc, err;

	if (git_repository_odb(&w.odb, repo) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot read the bundle's objects");
		goto done;
	}
	if ((rc = walk_commits(&rw, b, repo)) < 0)
		goto done;
	while (rc == 0 && (err = git_revwalk_next(&id, rw)) != GIT_ITEROVER) {
		if (err < 0) {
			const git_error *e = git_error_last();
			rc = opt_error_set(OPT_EINTEGRITY, "bundle '%s' is incomplete: its history breaks off: %s", b->path,
					   e && e->message ? e->message : "unknown libgit2 error");
			break;
		}
		rc = walk_commit(&w, &id);
	}
done:
	free(w.stack);
	sync_oidset_clear(&w.seen);
	git_revwalk_free(rw);
	git_odb_free(w.odb);
	return rc;
}

int opt_bundle_index(struct opt_bundle *b, git_repository *repo, git_odb *known, opt_sync_progress_fn progress,
		     void *arg, size_t *objects)
{
	git_indexer *idx = NULL;
	git_indexer_options io;
	git_indexer_progress st;
	git_odb *odb = NULL;
	struct iprog ip = { progress, arg };
	char dir[PATH_MAX], hex[GIT_OID_HEXSZ + 1];
	char *buf = NULL;
	size_t got, total = 0, i;
	int rc = 0;

	if (objects)
		*objects = 0;
	memset(&st, 0, sizeof(st));
	/* the prerequisites first: without them the pack cannot be complete */
	for (i = 0; i < b->npre; i++)
		if (!is_commit(repo, &b->pre[i].id)) {
			sync_hex_of(hex, &b->pre[i].id);
			return opt_error_set(OPT_ENOTFOUND, "bundle '%s' needs commit %s (%s), which the store lacks: apply "
					     "the bundle it follows first", b->path, hex, b->pre[i].text);
		}
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(repo));
	git_indexer_options_init(&io, GIT_INDEXER_OPTIONS_VERSION);
	io.progress_cb = index_cb;
	io.progress_cb_payload = &ip;
	if (git_repository_odb(&odb, repo) < 0 || git_indexer_new(&idx, dir, 0, odb, &io) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot index the bundle");
		goto done;
	}
	if (!(buf = malloc(1 << 16))) {
		rc = opt_error_set(OPT_EIO, "out of memory");
		goto done;
	}
	while ((got = fread(buf, 1, 1 << 16, b->f)) > 0) {
		total += got;
		if (git_indexer_append(idx, buf, got, &st) < 0) {
			rc = opt_git_fail(OPT_EINTEGRITY, "malformed pack");
			goto done;
		}
	}
	if (ferror(b->f)) {
		rc = opt_error_set(OPT_EIO, "cannot read bundle '%s': %s", b->path, strerror(errno));
		goto done;
	}
	if (total == 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "bundle '%s' is truncated: it has no pack", b->path);
		goto done;
	}
	if (git_indexer_commit(idx, &st) < 0) {
		rc = opt_git_fail(OPT_EINTEGRITY, "truncated or malformed pack");
		goto done;
	}
	git_odb_refresh(odb);
	for (i = 0; i < b->nrefs; i++)
		if (!is_commit(repo, &b->refs[i].id)) {
			sync_hex_of(hex, &b->refs[i].id);
			rc = opt_error_set(OPT_EINTEGRITY, "bundle '%s' is incomplete: the head of '%s' (%s) is not a commit it "
					   "carries", b->path, b->refs[i].text, hex);
			goto done;
		}
	if ((rc = check_complete(b, repo, known)) < 0)
		goto done;
	if (objects)
		*objects = st.total_objects;
done:
	if (rc < 0 && rc != OPT_EIO && rc != OPT_ENOTFOUND) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (strncmp(msg, "bundle '", 8) != 0)
			opt_error_set(rc, "bundle '%s': %s", b->path, msg);
	}
	free(buf);
	git_indexer_free(idx);
	git_odb_free(odb);
	return rc;
}

/* ---- writing ---- */

struct wr {
	FILE *f;
	size_t bytes;
};

static int write_cb(void *buf, size_t size, void *payload)
{
	struct wr *w = payload;

	if (fwrite(buf, 1, size, w->f) != size)
		return -1;
	w->bytes += size;
	return 0;
}

int opt_bundle_write(FILE *f, git_repository *repo, const struct opt_bundle_line *refs, size_t n,
		     const struct opt_bundle_line *pre, size_t m, size_t *bytes, size_t *objects)
{
	git_packbuilder *pb = NULL;
	git_revwalk *w = NULL;
	struct wr wr = { f, 0 };
	char hex[GIT_OID_HEXSZ + 1], ref[REFLEN];
	size_t i;
	int rc = 0, len;

	if (git_packbuilder_new(&pb, repo) < 0 || git_revwalk_new(&w, repo) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the bundle");
		goto done;
	}
	for (i = 0; i < n; i++)
		if (git_revwalk_push(w, &refs[i].id) < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot pack the bundle");
			goto done;
		}
	for (i = 0; i < m; i++)
		if (git_revwalk_hide(w, &pre[i].id) < 0) {
			rc = opt_git_fail(OPT_EIO, "cannot pack the bundle");
			goto done;
		}
	if (git_packbuilder_insert_walk(pb, w) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot pack the bundle");
		goto done;
	}
	if ((len = fprintf(f, HDR_V2 "\n")) < 0)
		goto werr;
	wr.bytes += (size_t)len;
	for (i = 0; i < m; i++) {
		sync_hex_of(hex, &pre[i].id);
		if ((len = fprintf(f, "-%s %s\n", hex, pre[i].text)) < 0)
			goto werr;
		wr.bytes += (size_t)len;
	}
	for (i = 0; i < n; i++) {
		sync_hex_of(hex, &refs[i].id);
		if (opt_ref_collection(ref, sizeof(ref), refs[i].text) < 0)
			goto werr;
		if ((len = fprintf(f, "%s %s\n", hex, ref)) < 0)
			goto werr;
		wr.bytes += (size_t)len;
	}
	if (fputc('\n', f) == EOF)
		goto werr;
	wr.bytes++;
	if (git_packbuilder_foreach(pb, write_cb, &wr) < 0 || fflush(f) != 0 || ferror(f))
		goto werr;
	if (bytes)
		*bytes = wr.bytes;
	if (objects)
		*objects = git_packbuilder_object_count(pb);
	goto done;
werr:
	rc = opt_error_set(OPT_EIO, "cannot write the bundle: %s", errno ? strerror(errno) : "write error");
done:
	git_revwalk_free(w);
	git_packbuilder_free(pb);
	return rc;
}

/* ---- the scratch repository ---- */

struct scratch {
	char dir[PATH_MAX];
	git_repository *repo;
	struct opt_store *store;     /* opened on demand (verify) */
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void scratch_free(struct scratch *sc)
{
	opt_store_free(sc->store);
	git_repository_free(sc->repo);
	if (sc->dir[0])
		nftw(sc->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	memset(sc, 0, sizeof(*sc));
}

/* Scratch repositories older than a day, left by a process that was
 * killed, go. */
static void scratch_sweep(const char *store)
{
	DIR *d = opendir(store);
	struct dirent *e;
	struct stat st;
	char path[PATH_MAX];
	time_t now = time(NULL);

	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, "opt-bundle.", 11) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", store, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && now - st.st_mtime > 86400)
			nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	}
	if (d)
		closedir(d);
}

/* A bare repository beside store s whose objects include the store's. */
static int scratch_new(struct scratch *sc, struct opt_store *s)
{
	git_repository_init_options io;
	git_config *cfg = NULL;
	char *abs = NULL, alt[PATH_MAX + 64];
	FILE *f;
	int rc = 0;

	memset(sc, 0, sizeof(*sc));
	if (!(abs = realpath(opt_store_path(s), NULL)))
		return opt_error_set(OPT_EIO, "cannot resolve '%s': %s", opt_store_path(s), strerror(errno));
	scratch_sweep(abs);
	snprintf(sc->dir, sizeof(sc->dir), "%s/opt-bundle.XXXXXX", abs);
	if (!mkdtemp(sc->dir)) {
		rc = opt_error_set(OPT_EIO, "cannot make '%s': %s", sc->dir, strerror(errno));
		sc->dir[0] = 0;
		goto done;
	}
	git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	io.flags = GIT_REPOSITORY_INIT_BARE;
	if (git_repository_init_ext(&sc->repo, sc->dir, &io) < 0 || git_repository_config(&cfg, sc->repo) < 0 ||
	    git_config_set_int32(cfg, "optimystic.version", 1) < 0 || git_config_set_int32(cfg, "gc.auto", 0) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot make the scratch repository");
		goto done;
	}
	snprintf(alt, sizeof(alt), "%s/objects/info/alternates", sc->dir);
	if (!(f = fopen(alt, "w")) || fprintf(f, "%s/objects\n", abs) < 0 || fclose(f) != 0) {
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", alt, strerror(errno));
		goto done;
	}
	/* libgit2 reads the alternates when it opens the object database */
	rc = opt_git_repo_reopen_odb(sc->repo, NULL);
done:
	git_config_free(cfg);
	free(abs);
	if (rc < 0)
		scratch_free(sc);
	return rc;
}

/* Read bundle path into a new scratch repository beside s: its objects
 * indexed, a collection ref per head.  *out the bundle (its header). */
static int unpack(struct scratch *sc, struct opt_bundle **out, struct opt_store *s, const char *path,
		  const struct opt_sync_opts *o)
{
	struct opt_bundle *b = NULL;
	git_odb *known = NULL;
	char ref[PATH_MAX];
	size_t i;
	int rc;

	*out = NULL;
	memset(sc, 0, sizeof(*sc));
	if ((rc = opt_bundle_open(&b, path)) < 0)
		return rc;
	snprintf(ref, sizeof(ref), "%s/objects", opt_store_path(s));
	if (git_odb_open(&known, ref) < 0) {
		rc = opt_git_fail(OPT_EIO, "cannot open the store's objects");
		goto done;
	}
	if ((rc = scratch_new(sc, s)) < 0 ||
	    (rc = opt_bundle_index(b, sc->repo, known, o ? o->progress : NULL, o ? o->arg : NULL, NULL)) < 0)
		goto done;
	for (i = 0; i < b->nrefs; i++) {
		opt_ref_collection(ref, sizeof(ref), b->refs[i].text);
		if (opt_ref_cas(sc->repo, ref, OPT_REF_ANY, &b->refs[i].id, "opt-sync bundle", 0) < 0) {
			/* (libgit2's error is still set: the message as it was) */
			rc = opt_git_fail(OPT_EIO, "cannot write the scratch repository");
			goto done;
		}
	}
done:
	git_odb_free(known);
	if (rc < 0) {
		scratch_free(sc);
		opt_bundle_free(b);
		return rc;
	}
	*out = b;
	return 0;
}

/* ---- create ---- */

/* The basis of collection name: from remote since, or bundle base. */
static int basis_of(git_repository *repo, const char *name, const char *since, const struct opt_bundle *base,
		    git_oid *out)
{
	char ref[PATH_MAX];
	const git_oid *id;

	if (since) {
		opt_ref_tracking(ref, sizeof(ref), since, name);
		return opt_ref_read(repo, ref, out);
	}
	if (base && (id = opt_bundle_head(base, name))) {
		*out = *id;
		if (!is_commit(repo, id)) {
			char hex[GIT_OID_HEXSZ + 1];
			sync_hex_of(hex, id);
			return opt_error_set(OPT_ENOTFOUND, "the base bundle's head of '%s' (%s) is not in this store", name,
					     hex);
		}
		return 1;
	}
	return 0;
}

static long rev_at(struct opt_store *s, const char *name, const git_oid *id)
{
	struct opt_snap *snap = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	long rev = 0;

	sync_hex_of(hex, id);
	if (opt_snap_open_commit(&snap, s, name, hex) == 0)
		rev = opt_snap_rev(snap);
	else
		opt_error_clear();
	opt_snap_free(snap);
	return rev;
}

static int any_cb(const char *name, const git_oid *id, void *arg)
{
	(void)name;
	(void)id;
	(void)arg;
	return 1;
}

/* Is remote a configured remote of y, or one with tracking refs? */
static int remote_known(struct opt_sync *y, git_repository *repo, const char *remote)
{
	json_t *list = NULL;
	char prefix[REFLEN];
	size_t i;
	int found = 0;

	if (opt_sync_remote_list(y, &list) < 0)
		return opt_error_last_code();
	for (i = 0; i < json_array_size(list) && !found; i++)
		found = strcmp(json_string_value(json_object_get(json_array_get(list, i), "name")), remote) == 0;
	json_decref(list);
	opt_ref_tracking(prefix, sizeof(prefix), remote, NULL);
	if (!found && (found = opt_ref_foreach(repo, prefix, any_cb, NULL, "cannot list refs")) < 0) {
		opt_error_clear();
		found = 0;
	}
	return found;
}

/* What a bundle being made carries: its heads and prerequisites, and a
 * record per collection for the report. */
struct made {
	struct opt_bundle_line *refs, *pre;
	size_t nrefs, npre;
	json_t *recs;
};

/* The collections to bundle (colls, or every collection when n is 0),
 * each there, closed over multi-collection transactions: *out. */
static int create_names(struct opt_sync *y, struct opt_store *s, git_repository *repo, const char *const *colls,
			size_t n, const char *since, json_t **out)
{
	json_t *names = NULL;
	char ref[PATH_MAX];
	size_t i;
	int rc = 0;

	if (n) {
		names = json_array();
		for (i = 0; i < n; i++)
			json_array_append_new(names, json_string(colls[i]));
	} else if ((rc = opt_store_list(s, &names)) < 0) {
		return rc;
	}
	for (i = 0; n && i < json_array_size(names); i++) {
		git_oid id;
		opt_ref_collection(ref, sizeof(ref), json_string_value(json_array_get(names, i)));
		if ((rc = opt_ref_read(repo, ref, &id)) <= 0) {
			if (rc == 0)
				rc = opt_error_set(OPT_ENOTFOUND, "no collection '%s'", json_string_value(json_array_get(names, i)));
			goto done;
		}
	}
	rc = opt_sync_close_over(y, since, names, NULL);
done:
	if (rc < 0)
		json_decref(names);
	else
		*out = names;
	return rc < 0 ? rc : 0;
}

/* Collection name into m: its head, and its basis (from remote since or
 * bundle base) as a prerequisite; nothing when it has no head or its head
 * is the basis. */
static int create_one(struct made *m, struct opt_store *s, git_repository *repo, const char *name, const char *since,
		      const struct opt_bundle *base)
{
	char ref[PATH_MAX], hex[GIT_OID_HEXSZ + 1];
	git_oid head, b;
	int has_b, rc;
	json_t *rec;

	opt_ref_collection(ref, sizeof(ref), name);
	if ((rc = opt_ref_read(repo, ref, &head)) <= 0)
		return rc;
	if ((has_b = basis_of(repo, name, since, base, &b)) < 0)
		return has_b;
	if (has_b && git_oid_equal(&b, &head))
		return 0;
	if ((rc = add_line(&m->refs, &m->nrefs, &head, name)) < 0)
		return rc;
	sync_hex_of(hex, &head);
	rec = json_pack("{s:s,s:I,s:s}", "collection", name, "rev", (json_int_t)rev_at(s, name, &head), "commit", hex);
	if (has_b) {
		char comment[OPT_NAME_MAX + 64];
		long brev = rev_at(s, name, &b);
		snprintf(comment, sizeof(comment), "%s rev %ld", name, brev);
		if ((rc = add_line(&m->pre, &m->npre, &b, comment)) < 0) {
			json_decref(rec);
			return rc;
		}
		json_object_set_new(rec, "since", json_integer(brev));
	}
	json_array_append_new(m->recs, rec);
	return 0;
}

/* Write the bundle of m to path ("-": standard output), through a
 * temporary file beside it, synced and renamed into place. */
static int create_write(const char *path, git_repository *repo, const struct made *m, size_t *bytes, size_t *objects)
{
	char tmp[PATH_MAX];
	FILE *f;
	int rc;

	if (strcmp(path, "-") == 0)
		return opt_bundle_write(stdout, repo, m->refs, m->nrefs, m->pre, m->npre, bytes, objects);
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	if (!(f = fopen(tmp, "wb")))
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if ((rc = opt_bundle_write(f, repo, m->refs, m->nrefs, m->pre, m->npre, bytes, objects)) < 0)
		goto fail;
	if (opt_pack_fsync_enabled() && fsync(fileno(f)) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
		goto fail;
	}
	rc = fclose(f);
	f = NULL;
	if (rc != 0 || rename(tmp, path) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", path, strerror(errno));
		goto fail;
	}
	return 0;
fail:
	if (f)
		fclose(f);
	unlink(tmp);
	return rc;
}

int opt_bundle_create(struct opt_sync *y, struct opt_store *s, const char *path, const char *const *colls, size_t n,
		      const char *since, const char *base, const struct opt_sync_opts *o)
{
	git_repository *repo = NULL;
	struct opt_bundle *bb = NULL;
	struct made m = { 0 };
	size_t i, bytes = 0, objects = 0;
	json_t *names = NULL;
	int rc = 0;

	for (i = 0; i < n; i++)
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
	if (since && !opt_sync_remote_name_valid(since))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(since));
	if ((rc = opt_store__repo_open(s, &repo)) < 0)
		return rc;
	if (since && (rc = remote_known(y, repo, since)) <= 0) {
		if (rc == 0)
			rc = opt_error_set(OPT_ENOTFOUND, "no remote '%s'", since);
		goto done;
	}
	if (base && (rc = opt_bundle_open(&bb, base)) < 0) {
		opt_error_wrap(rc, "the base bundle");
		goto done;
	}
	if ((rc = create_names(y, s, repo, colls, n, since, &names)) < 0)
		goto done;
	m.recs = json_array();
	for (i = 0; i < json_array_size(names) && rc >= 0; i++)
		rc = create_one(&m, s, repo, json_string_value(json_array_get(names, i)), since, bb);
	if (rc < 0)
		goto done;
	if (m.nrefs == 0) {
		rc = opt_error_set(OPT_ENOTFOUND, "nothing to bundle: %s", since ? "the remote has every collection at its head" :
				   base ? "the base bundle has every collection at its head" : "the store has no collection");
		goto done;
	}
	if ((rc = create_write(path, repo, &m, &bytes, &objects)) < 0)
		goto done;
	for (i = 0; i < json_array_size(m.recs) && rc == 0; i++)
		rc = opt_sync_emit_rec(o, json_incref(json_array_get(m.recs, i)));
	if (rc == 0)
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:I,s:I,s:I}", "file", path, "bytes", (json_int_t)bytes,
				       "objects", (json_int_t)objects, "collections", (json_int_t)m.nrefs));
done:
	json_decref(m.recs);
	json_decref(names);
	lines_free(m.refs, m.nrefs);
	lines_free(m.pre, m.npre);
	opt_bundle_free(bb);
	git_repository_free(repo);
	return rc;
}

/* ---- ls ---- */

int opt_bundle_ls(const char *path, const struct opt_sync_opts *o)
{
	struct opt_bundle *b = NULL;
	char hex[GIT_OID_HEXSZ + 1];
	size_t i;
	int rc;

	if ((rc = opt_bundle_open(&b, path)) < 0)
		return rc;
	for (i = 0; i < b->nrefs && rc == 0; i++) {
		sync_hex_of(hex, &b->refs[i].id);
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s}", "collection", b->refs[i].text, "commit", hex));
	}
	for (i = 0; i < b->npre && rc == 0; i++) {
		sync_hex_of(hex, &b->pre[i].id);
		rc = opt_sync_emit_rec(o, json_pack("{s:s,s:s}", "prerequisite", hex, "comment", b->pre[i].text));
	}
	opt_bundle_free(b);
	return rc;
}

/* ---- verify and apply ---- */

/* The named collections the bundle lacks. */
static int check_named(const struct opt_bundle *b, const char *const *colls, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = opt_store_name_check(colls[i])) < 0)
			return rc;
		if (!opt_bundle_head(b, colls[i]))
			return opt_error_set(OPT_ENOTFOUND, "bundle '%s' has no collection '%s'", b->path, colls[i]);
	}
	return 0;
}

struct vprog {
	const struct opt_sync_opts *o;
	char what[OPT_NAME_MAX + 32];
};

static void verify_progress(long done, long total, void *arg)
{
	struct vprog *p = arg;

	p->o->progress(p->what, (size_t)done, (size_t)total, p->o->arg);
}

/* Verify the wanted collections of b in the scratch repository, as a
 * fetch from remote as would: no rewind of its tracking refs, then
 * opt_verify_collection with the keys s trusts. */
static int verify_all(struct scratch *sc, const struct opt_bundle *b, git_repository *repo, struct opt_store *s,
		      const char *as, const char *const *colls, size_t n, const struct opt_sync_opts *o, int report)
{
	json_t *keys = NULL;
	char ref[PATH_MAX], hex[GIT_OID_HEXSZ + 1];
	size_t i;
	int rc;

	if ((rc = opt_store_open(&sc->store, sc->dir)) < 0 || (rc = opt_trust_list(s, &keys)) < 0)
		return rc;
	for (i = 0; i < json_array_size(keys) && rc == 0; i++)
		rc = opt_trust_add(sc->store, json_string_value(json_object_get(json_array_get(keys, i), "key")),
				   json_string_value(json_object_get(json_array_get(keys, i), "name")));
	json_decref(keys);
	for (i = 0; rc == 0 && i < b->nrefs; i++) {
		const struct opt_bundle_line *e = &b->refs[i];
		struct vprog vp;
		git_oid old;
		int has_old;

		if (!opt_name_wanted(e->text, colls, n))
			continue;
		opt_ref_tracking(ref, sizeof(ref), as, e->text);
		if ((has_old = opt_ref_read(repo, ref, &old)) < 0)
			return has_old;
		if (has_old && !git_oid_equal(&old, &e->id) && git_graph_descendant_of(sc->repo, &e->id, &old) != 1) {
			git_error_clear();
			return opt_error_set(OPT_EINTEGRITY, "bundle '%s': collection '%s' was rewound: its revision %ld does not "
					     "descend from revision %ld that we had from '%s' before (refused)", b->path, e->text,
					     rev_at(sc->store, e->text, &e->id), rev_at(s, e->text, &old), as);
		}
		sync_hex_of(hex, &e->id);
		vp.o = o;
		snprintf(vp.what, sizeof(vp.what), "verifying '%s'", e->text);
		rc = opt_verify_collection(sc->store, e->text, hex, o && o->progress ? verify_progress : NULL, &vp, NULL);
		if (rc < 0) {
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			return opt_error_set(rc == OPT_EIO ? OPT_EIO : OPT_EINTEGRITY, "bundle '%s': collection '%s' refused: %s",
					     b->path, e->text, msg);
		}
		if (report)
			rc = opt_sync_emit_rec(o, json_pack("{s:s,s:I,s:s,s:s}", "collection", e->text, "rev",
					       (json_int_t)rev_at(sc->store, e->text, &e->id), "commit", hex, "status", "verified"));
	}
	return rc;
}

/* The plan of an apply (after verify_all): pull's records, with
 * "dry_run": true.  The scratch store sees both sides' objects. */
static int plan(struct scratch *sc, const struct opt_bundle *b, git_repository *repo, const char *as,
		const char *const *colls, size_t n, const struct opt_sync_opts *o)
{
	const char *policy = o->conflict ? o->conflict : "replay";
	char ref[PATH_MAX];
	size_t i;
	int rc = 0, diverged = 0;

	for (i = 0; rc == 0 && i < b->nrefs; i++) {
		const struct opt_bundle_line *e = &b->refs[i];
		const char *status;
		git_oid L, base;
		long rev = rev_at(sc->store, e->text, &e->id), ours = -1;
		int has_L;
		json_t *rec;

		if (!opt_name_wanted(e->text, colls, n))
			continue;
		opt_ref_collection(ref, sizeof(ref), e->text);
		if ((has_L = opt_ref_read(repo, ref, &L)) < 0)
			return has_L;
		if (!has_L) {
			status = "new";
		} else if (git_oid_equal(&L, &e->id)) {
			status = "up-to-date";
		} else if (git_graph_descendant_of(sc->repo, &e->id, &L) == 1) {
			status = "fast-forward";
		} else if (git_graph_descendant_of(sc->repo, &L, &e->id) == 1) {
			status = "ahead";
			rev = rev_at(sc->store, e->text, &L);
		} else {
			diverged = 1;
			rev = rev_at(sc->store, e->text, &L);
			status = strcmp(policy, "keep-remote") == 0 ? "kept-remote" : strcmp(policy, "fail") == 0 ? "conflict"
													      : "replayed";
			if (strcmp(status, "replayed") == 0)
				ours = git_merge_base(&base, sc->repo, &L, &e->id) == 0 ? rev - rev_at(sc->store, e->text, &base)
											    : rev;
		}
		git_error_clear();
		rec = json_pack("{s:s,s:s,s:I,s:s,s:b}", "remote", as, "collection", e->text, "rev", (json_int_t)rev, "status",
				status, "dry_run", 1);
		if (rec && ours >= 0)
			json_object_set_new(rec, "replayed", json_integer(ours));
		rc = opt_sync_emit_rec(o, rec);
	}
	if (rc == 0 && diverged && strcmp(policy, "fail") == 0)
		rc = opt_error_set(OPT_ECONFLICT, "bundle '%s': collections diverged (--conflict fail)", b->path);
	return rc;
}

static int verify_or_plan(struct opt_sync *y, struct opt_store *s, const char *path, const char *as,
			  const char *const *colls, size_t n, const struct opt_sync_opts *o, int dry_run)
{
	struct scratch sc;
	struct opt_bundle *b = NULL;
	git_repository *repo = NULL;
	int rc;

	(void)y;
	as = as ? as : OPT_BUNDLE_AS;
	if (!opt_sync_remote_name_valid(as))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(as));
	if ((rc = unpack(&sc, &b, s, path, o)) < 0)
		return rc;
	if ((rc = check_named(b, colls, n)) < 0)
		goto done;
	if ((rc = opt_store__repo_open(s, &repo)) < 0)
		goto done;
	if ((rc = verify_all(&sc, b, repo, s, as, colls, n, o, !dry_run)) == 0 && dry_run)
		rc = plan(&sc, b, repo, as, colls, n, o);
done:
	git_repository_free(repo);
	opt_bundle_free(b);
	scratch_free(&sc);
	return rc;
}

int opt_bundle_verify(struct opt_sync *y, struct opt_store *s, const char *path, const char *as,
		      const char *const *colls, size_t n, const struct opt_sync_opts *o)
{
	static const struct opt_sync_opts none;

	return verify_or_plan(y, s, path, as, colls, n, o ? o : &none, 0);
}

int opt_bundle_apply(struct opt_sync *y, struct opt_store *s, const char *path, const char *as,
		     const char *const *colls, size_t n, const struct opt_sync_opts *o)
{
	static const struct opt_sync_opts none;
	struct scratch sc;
	struct opt_bundle *b = NULL;
	int rc;

	o = o ? o : &none;
	if (o->dry_run)
		return verify_or_plan(y, s, path, as, colls, n, o, 1);
	as = as ? as : OPT_BUNDLE_AS;
	if (!opt_sync_remote_name_valid(as))
		return opt_error_set(OPT_EINVAL, "invalid remote name '%s'", opt_esc(as));
	if ((rc = unpack(&sc, &b, s, path, o)) < 0)
		return rc;
	if ((rc = check_named(b, colls, n)) == 0) {
		rc = opt_sync_pull_url(y, as, sc.dir, colls, n, o);
		if (rc < 0) {
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			opt_error_set(rc, "bundle '%s': %s", b->path, msg);
		}
	}
	opt_bundle_free(b);
	scratch_free(&sc);
	return rc;
}
