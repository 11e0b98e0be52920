/* commit.c - writing: the shape of what our writer makes (checked on
 * what peers send), the trees of a revision, the commit that moves a
 * collection's ref, and group commits. */
#include "store.h"
#include "error.h"
#include "json.h"
#include "pack.h"
#include "store/git.h"
#include "store/internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <errno.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/repository.h>
#include <git2/sys/odb_backend.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- shape: what our writer makes ----
 *
 * A revision is a commit "tree", "parent" (none for revision 1, else
 * one), "author", "committer", a blank line and the message; its tree
 * holds "blocks" (40000) and nothing else (or is empty), blocks/ holds
 * one-character directories of the base32 alphabet (40000) and so does
 * each of them, and blocks/<c1>/<c2>/ holds the blobs (100644) of block
 * IDs beginning with c1 c2.  Trees are never empty below the top, their
 * entries strictly in order, their modes written as git writes them.  A
 * peer that sends anything else (a symbolic link, a submodule, "..",
 * ".git", a name with '/', a payload beside blocks/) is refused: git
 * fsck --strict would refuse the store that took it in. */

static int is_b32(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

/* The next entry of a raw tree at *p: 1 with *e, 0 at the end, -1 when
 * the bytes are no tree entry. */
int opt_store__tree_next(const unsigned char **p, const unsigned char *end, struct tent *e)
{
	const unsigned char *q = *p, *sp, *nul;

	if (q == end)
		return 0;
	if (!(sp = memchr(q, ' ', (size_t)(end - q))) || sp == q)
		return -1;
	if (!(nul = memchr(sp + 1, '\0', (size_t)(end - sp - 1))) || nul == sp + 1 || end - nul - 1 < 20)
		return -1;
	e->mode = (const char *)q;
	e->modelen = (size_t)(sp - q);
	e->name = (const char *)sp + 1;
	e->namelen = (size_t)(nul - sp - 1);
	e->oid = nul + 1;
	*p = nul + 21;
	return 1;
}

int opt_store__mode_is(const struct tent *e, const char *m)
{
	return e->modelen == strlen(m) && memcmp(e->mode, m, e->modelen) == 0;
}

static int name_cmp(const struct tent *a, const struct tent *b)
{
	size_t n = a->namelen < b->namelen ? a->namelen : b->namelen;
	int c = memcmp(a->name, b->name, n);

	return c ? c : a->namelen < b->namelen ? -1 : a->namelen > b->namelen;
}

struct shape {
	struct opt_store *s;
	char path[OPT_ID_MAX * 2 + 400];  /* the entry's path, printable */
};

/* sh->path with entry e's name appended at pathlen (printable bytes
 * only: a hostile name may hold anything). */
static void shape_path(struct shape *sh, size_t pathlen, const struct tent *e)
{
	size_t i, n = pathlen;

	if (n && n < sizeof(sh->path) - 1)
		sh->path[n++] = '/';
	for (i = 0; i < e->namelen && n < sizeof(sh->path) - 1; i++) {
		unsigned char c = (unsigned char)e->name[i];
		sh->path[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	sh->path[n] = '\0';
}

static const char *mode_what(const struct tent *e)
{
	if (opt_store__mode_is(e, "120000"))
		return " (a symbolic link)";
	if (opt_store__mode_is(e, "160000"))
		return " (a submodule)";
	if (opt_store__mode_is(e, "40000"))
		return " (a tree)";
	if (opt_store__mode_is(e, "100755"))
		return " (an executable file)";
	if (e->modelen > 1 && e->mode[0] == '0')
		return " (written with a leading zero)";
	return "";
}

/* Entry e (its path in sh->path) where level says what may be there:
 * blocks/ at the top, fan-out directories below it, block IDs of their
 * fan-out directory at the bottom; in git's mode, after prev (n
 * before). */
static int shape_entry(struct shape *sh, const struct tent *e, const struct tent *prev, size_t n, int level,
		       const char *want)
{
	char name[OPT_ID_MAX + 1];
	int ok;

	if (level == 0 && !(e->namelen == 6 && memcmp(e->name, "blocks", 6) == 0))
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': a collection holds nothing but blocks/ at the top",
				     sh->path);
	if ((level == 1 || level == 2) && !(e->namelen == 1 && is_b32(e->name[0])))
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': not a fan-out directory (one character of a-z, 2-7)",
				     sh->path);
	if (level == 3) {
		ok = e->namelen <= OPT_ID_MAX;
		if (ok) {
			memcpy(name, e->name, e->namelen);
			name[e->namelen] = '\0';
			ok = strlen(name) == e->namelen && opt_id_valid(name) && name[0] == sh->path[7] &&
			     name[1] == sh->path[9];
		}
		if (!ok)
			return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': not a block ID of its fan-out directory",
					     sh->path);
	}
	if (!opt_store__mode_is(e, want))
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': mode %.*s%s, where this program writes %s", sh->path,
				     (int)(e->modelen > 12 ? 12 : e->modelen), e->mode, mode_what(e), want);
	if (n > 0 && name_cmp(prev, e) >= 0)
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': out of order in its tree (or there twice)", sh->path);
	return 0;
}

/* A block's entry: its object there, and a blob. */
static int shape_blob(struct shape *sh, const git_oid *eid)
{
	char hex[GIT_OID_HEXSZ + 1];
	git_object_t type;
	size_t sz;

	if (git_odb_read_header(&sz, &type, sh->s->odb, eid) < 0 &&
	    (opt_store__reload_odb(sh->s) < 0 || git_odb_read_header(&sz, &type, sh->s->odb, eid) < 0)) {
		git_error_clear();
		git_oid_tostr(hex, sizeof(hex), eid);
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': its object %s is missing", sh->path, hex);
	}
	if (type != GIT_OBJECT_BLOB) {
		git_oid_tostr(hex, sizeof(hex), eid);
		return opt_error_set(OPT_EINTEGRITY, "tree entry '%s': its object %s is a %s, not a blob", sh->path, hex,
				     git_object_type2string(type));
	}
	return 0;
}

/* Tree id, checked at level (0 the top, 3 the blocks), and the tree of
 * the same path in the revision before (old, NULL: none) read beside it:
 * raw bytes *data and *odata (malloc'd), *odata NULL without old. */
static int shape_read(struct shape *sh, const git_oid *id, const git_oid *old, const char *where, const char *hex,
		      unsigned char **data, size_t *len, unsigned char **odata, size_t *olen)
{
	git_object_t type;
	int rc;

	*odata = NULL;
	*olen = 0;
	if ((rc = opt_store__read_typed(sh->s, id, data, len, &type)) < 0) {
		if (rc == OPT_ENOTFOUND)
			rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is missing", where, hex);
		return rc;
	}
	if (type != GIT_OBJECT_TREE)
		return opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is a %s", where, hex,
				     git_object_type2string(type));
	if (old && opt_store__read_typed(sh->s, old, odata, olen, &type) < 0)
		return opt_error_set(OPT_EINTEGRITY, "tree '%s/' of the revision before cannot be read", where);
	return 0;
}

/* Tree id at level (0 the top, 1 blocks/, 2 blocks/c1/, 3 blocks/c1/c2/)
 * as our writer makes it, looked at only where it differs from old (the
 * tree at the same path in the revision before; NULL: none). */
static int shape_tree(struct shape *sh, const git_oid *id, const git_oid *old, int level, size_t pathlen)
{
	unsigned char *data = NULL, *odata = NULL;
	const unsigned char *p, *end, *op = NULL, *oend = NULL;
	struct tent e, prev = { 0 }, oe = { 0 };
	const char *want = level < 3 ? "40000" : "100644";
	size_t len = 0, olen, n = 0;
	int rc, got, ogot = 0, same;
	char hex[GIT_OID_HEXSZ + 1];
	const char *where = pathlen ? sh->path : "";
	git_oid eid, oid_old;

	git_oid_tostr(hex, sizeof(hex), id);
	if ((rc = shape_read(sh, id, old, where, hex, &data, &len, &odata, &olen)) < 0)
		goto done;
	if (old) {
		op = odata;
		oend = odata + olen;
		ogot = opt_store__tree_next(&op, oend, &oe);
	}
	p = data;
	end = data + len;
	while ((got = opt_store__tree_next(&p, end, &e)) == 1) {
		shape_path(sh, pathlen, &e);
		if ((rc = shape_entry(sh, &e, &prev, n, level, want)) < 0)
			goto done;
		prev = e;
		n++;
		/* the same entry as the revision before: checked then */
		while (ogot == 1 && name_cmp(&oe, &e) < 0)
			ogot = opt_store__tree_next(&op, oend, &oe);
		same = ogot == 1 && name_cmp(&oe, &e) == 0 && opt_store__mode_is(&oe, want);
		if (same && memcmp(oe.oid, e.oid, 20) == 0)
			continue;
		memcpy(eid.id, e.oid, 20);
		if (same)
			memcpy(oid_old.id, oe.oid, 20);
		if (level < 3)
			rc = shape_tree(sh, &eid, same ? &oid_old : NULL, level + 1, strlen(sh->path));
		else
			rc = shape_blob(sh, &eid);
		if (rc < 0)
			goto done;
		sh->path[pathlen] = '\0';
	}
	sh->path[pathlen] = '\0';
	if (got < 0)
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is damaged", where, hex);
	else if (n == 0 && level > 0)
		rc = opt_error_set(OPT_EINTEGRITY, "tree '%s/' (object %s) is empty", where, hex);
	else
		rc = 0;
done:
	free(odata);
	free(data);
	return rc;
}

/* An ident line's value as git fsck --strict wants it: "NAME <EMAIL>
 * SECONDS +HHMM" (NAME without '<', '>'; EMAIL without '<', '>';
 * SECONDS without a leading zero). */
static int ident_ok(const char *p, const char *end)
{
	const char *lt = memchr(p, '<', (size_t)(end - p)), *gt, *q;

	if (!lt || lt == p || lt[-1] != ' ' || memchr(p, '>', (size_t)(lt - p)))
		return 0;
	if (!(gt = memchr(lt + 1, '>', (size_t)(end - lt - 1))) || memchr(lt + 1, '<', (size_t)(gt - lt - 1)))
		return 0;
	q = gt + 1;
	if (q >= end || *q++ != ' ' || q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] != ' '))
		return 0;
	while (q < end && *q >= '0' && *q <= '9')
		q++;
	if (end - q != 6 || q[0] != ' ' || (q[1] != '+' && q[1] != '-'))
		return 0;
	for (q += 2; q < end; q++)
		if (*q < '0' || *q > '9')
			return 0;
	return 1;
}

/* The commit's header lines as our writer makes them; *tree gets its
 * tree. */
static int shape_commit(const unsigned char *data, size_t len, const git_oid *parent, git_oid *tree)
{
	const char *p = (const char *)data, *end = p + len, *nl;
	int parents = 0, line = 0, author = 0, committer = 0;
	git_oid got;

	if (memchr(data, '\0', len))
		return opt_error_set(OPT_EINTEGRITY, "its commit holds a NUL byte");
	for (;; line++, p = nl + 1) {
		size_t n;
		if (!(nl = memchr(p, '\n', (size_t)(end - p))))
			return opt_error_set(OPT_EINTEGRITY, "its commit has no message");
		if (nl == p)
			break;
		n = (size_t)(nl - p);
		if (line == 0 && n == 45 && strncmp(p, "tree ", 5) == 0 && git_oid_fromstrn(tree, p + 5, 40) == 0)
			continue;
		if (line == 0)
			return opt_error_set(OPT_EINTEGRITY, "its commit does not begin with its tree");
		if (n == 47 && strncmp(p, "parent ", 7) == 0 && !author) {
			if (git_oid_fromstrn(&got, p + 7, 40) < 0)
				return opt_error_set(OPT_EINTEGRITY, "its commit has a parent line git would refuse");
			if (parents++ == 0 && parent && !git_oid_equal(&got, parent))
				return opt_error_set(OPT_EINTEGRITY, "its commit's parent is not the revision before");
			continue;
		}
		if (n > 7 && strncmp(p, "author ", 7) == 0 && !author && !committer) {
			if (!ident_ok(p + 7, nl))
				return opt_error_set(OPT_EINTEGRITY, "its commit has an author line git would refuse");
			author = 1;
			continue;
		}
		if (n > 10 && strncmp(p, "committer ", 10) == 0 && author && !committer) {
			if (!ident_ok(p + 10, nl))
				return opt_error_set(OPT_EINTEGRITY, "its commit has a committer line git would refuse");
			committer = 1;
			continue;
		}
		return opt_error_set(OPT_EINTEGRITY, "its commit has a header line this program does not write (line %d)",
				     line + 1);
	}
	if (parents != (parent ? 1 : 0))
		return opt_error_set(OPT_EINTEGRITY, "its commit has %d parents, where this program writes %d", parents,
				     parent ? 1 : 0);
	if (!author || !committer)
		return opt_error_set(OPT_EINTEGRITY, "its commit has no %s", author ? "committer" : "author");
	return 0;
}

int opt_store_check_shape(struct opt_store *s, const char *commit, const char *parent)
{
	struct shape sh;
	git_oid cid, pid, tree, ptree;
	unsigned char *data = NULL;
	size_t len;
	git_object_t type;
	int rc;

	if (git_oid_fromstr(&cid, commit) < 0 || (parent && git_oid_fromstr(&pid, parent) < 0))
		return opt_error_set(OPT_EINVAL, "invalid commit ID '%.50s'", commit);
	sh.s = s;
	sh.path[0] = '\0';
	if ((rc = opt_store__read_typed(s, &cid, &data, &len, &type)) < 0)
		return rc == OPT_ENOTFOUND ? opt_error_set(OPT_EINTEGRITY, "its commit %s is missing", commit) : rc;
	if (type != GIT_OBJECT_COMMIT)
		rc = opt_error_set(OPT_EINTEGRITY, "its commit %s is a %s", commit, git_object_type2string(type));
	else
		rc = shape_commit(data, len, parent ? &pid : NULL, &tree);
	free(data);
	data = NULL;
	if (rc < 0)
		return rc;
	if (parent) {
		/* (the revision before passed: its tree is ours) */
		if ((rc = opt_store__read_typed(s, &pid, &data, &len, &type)) < 0 || type != GIT_OBJECT_COMMIT || len < 45 ||
		    git_oid_fromstrn(&ptree, (const char *)data + 5, 40) < 0) {
			free(data);
			return rc == OPT_EIO ? rc : opt_error_set(OPT_EINTEGRITY, "the commit of the revision before is damaged");
		}
		free(data);
	}
	return shape_tree(&sh, &tree, parent ? &ptree : NULL, 0, 0);
}

/* ---- writing ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n)
{
	int rc;

	if ((rc = OPT_ALLOC_GROW(b->p, b->len + n, b->cap)) < 0)
		return rc;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* A change to one tree: all names at one level are of one kind (blobs or
 * trees), so git's entry order is plain byte order of the names. */
struct tmod {
	char name[OPT_ID_MAX + 1];
	git_oid oid;
	int tree;
	int del;
};

static int entry_add(struct buf *b, int tree, const char *name, const git_oid *oid)
{
	const char *mode = tree ? "40000 " : "100644 ";
	int rc;

	if ((rc = buf_add(b, mode, strlen(mode))) < 0 ||
	    (rc = buf_add(b, name, strlen(name) + 1)) < 0 ||
	    (rc = buf_add(b, oid->id, 20)) < 0)
		return rc;
	return 0;
}

/* Write base (may be NULL) with mods (sorted by name) applied. */
/* Write the tree base with mods applied; path (e.g. "tree:blocks/a")
 * names it so that its next version in a stream is a delta of this one. */
static int write_tree(struct opt_pack *p, const char *path, const git_tree *base, const struct tmod *mods,
		      size_t nmods, git_oid *out, int *empty)
{
	struct buf b = { 0 };
	size_t i = 0, j = 0, nbase = base ? git_tree_entrycount(base) : 0;
	int rc = 0, n = 0;

	while ((i < nbase || j < nmods) && rc == 0) {
		const git_tree_entry *e = i < nbase ? git_tree_entry_byindex(base, i) : NULL;
		int c = !e ? 1 : j >= nmods ? -1 : strcmp(git_tree_entry_name(e), mods[j].name);

		if (c < 0) {
			rc = entry_add(&b, git_tree_entry_type(e) == GIT_OBJECT_TREE, git_tree_entry_name(e),
				       git_tree_entry_id(e));
			n++;
			i++;
			continue;
		}
		if (!mods[j].del) {
			rc = entry_add(&b, mods[j].tree, mods[j].name, &mods[j].oid);
			n++;
		}
		if (c == 0)
			i++;
		j++;
	}
	*empty = n == 0;
	if (rc == 0 && n > 0)
		rc = opt_pack_add_version(p, GIT_OBJECT_TREE, b.p, b.len, path, out);
	free(b.p);
	return rc;
}

struct change {
	char id[OPT_ID_MAX + 1];
	git_oid oid;
	int del;
};

static int canon_add(struct opt_canon *c, const char *id, char *text, size_t len, int borrowed)
{
	int rc;

	if (strlen(id) > OPT_ID_MAX) {
		if (!borrowed)
			free(text);
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
	}
	if ((rc = OPT_ALLOC_GROW(c->v, c->n + 1, c->cap)) < 0) {
		if (!borrowed)
			free(text);
		return rc;
	}
	strcpy(c->v[c->n].id, id);
	c->v[c->n].text = text;
	c->v[c->n].len = len;
	c->v[c->n].borrowed = borrowed;
	c->n++;
	return 0;
}

int opt_canon_add(struct opt_canon *c, const char *id, char *text, size_t len)
{
	return canon_add(c, id, text, len, 0);
}

int opt_canon_add_borrowed(struct opt_canon *c, const char *id, const char *text, size_t len)
{
	return canon_add(c, id, (char *)text, len, 1);
}

void opt_canon_clear(struct opt_canon *c)
{
	size_t i;

	for (i = 0; i < c->n; i++)
		if (!c->v[i].borrowed)
			free(c->v[i].text);
	free(c->v);
	memset(c, 0, sizeof(*c));
}

struct collect {
	struct opt_store *s;
	struct opt_pack *pack;
	struct opt_canon *canon;
	struct change *v;
	size_t n, cap;
};

static int collect_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	struct collect *c = arg;
	struct change *ch;
	int rc = 0;

	if ((rc = OPT_ALLOC_GROW(c->v, c->n + 1, c->cap)) < 0)
		return rc;
	ch = &c->v[c->n];
	if (!opt_id_valid(id) || strlen(id) > OPT_ID_MAX)
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s'", opt_esc(id));
	strcpy(ch->id, id);
	ch->del = block == NULL && text == NULL;
	if (text && !(c->canon && c->canon->next < c->canon->n && strcmp(c->canon->v[c->canon->next].id, id) == 0)) {
		/* a block inserted as text: stored as it is */
		if ((rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, text->text, text->len, id, &ch->oid)) < 0)
			return rc;
	} else if (block || text) {
		char *s;
		size_t len;
		struct opt_canon *cn = c->canon;
		if (cn && cn->next < cn->n && strcmp(cn->v[cn->next].id, id) == 0) {
			struct opt_canon_ent *e = &cn->v[cn->next++];
			if ((rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, e->text, e->len, id, &ch->oid)) < 0)
				return rc;
			if (block)
				opt_store__ocache_put(c->s, &ch->oid, block);
			c->n++;
			return 0;
		}
		if ((rc = opt_json_canon(&s, &len, block)) < 0)
			return rc;
		rc = opt_pack_add_version(c->pack, GIT_OBJECT_BLOB, s, len, id, &ch->oid);
		free(s);
		if (rc < 0)
			return rc;
		opt_store__ocache_put(c->s, &ch->oid, block);
	}
	c->n++;
	return 0;
}

static git_tree *subtree(struct opt_store *s, const git_tree *t, const char *name, int *rc)
{
	const git_tree_entry *e;
	git_tree *out = NULL;

	*rc = 0;
	if (!t || !(e = git_tree_entry_byname(t, name)) || git_tree_entry_type(e) != GIT_OBJECT_TREE)
		return NULL;
	if (opt_store__tree_lookup(s, &out, git_tree_entry_id(e)) < 0)
		*rc = opt_git_fail(OPT_EINTEGRITY, "cannot read tree");
	return out;
}

static int build_trees(struct opt_store *s, struct opt_pack *p, struct opt_snap *base,
		       const struct change *ch, size_t n, git_oid *root_out)
{
	git_tree *bblocks = base ? base->blocks : NULL;
	struct tmod *m1 = NULL, *mb = NULL, *ml = NULL, rootmod;
	char path[32];
	size_t nb = 0, i = 0;
	int rc = 0, empty;
	git_oid oid;

	mb = calloc(32, sizeof(*mb));
	m1 = calloc(32, sizeof(*m1));
	ml = n ? malloc(n * sizeof(*ml)) : NULL;
	if (!mb || !m1 || (n && !ml)) {
		rc = opt_error_oom();
		goto done;
	}
	while (i < n && rc == 0) {
		char c1[2] = { ch[i].id[0], 0 };
		git_tree *b1 = subtree(s, bblocks, c1, &rc);
		size_t n1 = 0;

		if (rc < 0)
			break;
		while (i < n && ch[i].id[0] == c1[0] && rc == 0) {
			char c2[2] = { ch[i].id[1], 0 };
			git_tree *b2 = subtree(s, b1, c2, &rc);
			size_t nl = 0;

			if (rc < 0)
				break;
			while (i < n && ch[i].id[0] == c1[0] && ch[i].id[1] == c2[0]) {
				strcpy(ml[nl].name, ch[i].id);
				ml[nl].oid = ch[i].oid;
				ml[nl].tree = 0;
				ml[nl].del = ch[i].del;
				nl++;
				i++;
			}
			snprintf(path, sizeof(path), "tree:blocks/%s/%s", c1, c2);
			rc = write_tree(p, path, b2, ml, nl, &oid, &empty);
			git_tree_free(b2);
			if (rc < 0)
				break;
			strcpy(m1[n1].name, c2);
			m1[n1].oid = oid;
			m1[n1].tree = 1;
			m1[n1].del = empty;
			n1++;
		}
		snprintf(path, sizeof(path), "tree:blocks/%s", c1);
		if (rc == 0)
			rc = write_tree(p, path, b1, m1, n1, &oid, &empty);
		git_tree_free(b1);
		if (rc < 0)
			break;
		strcpy(mb[nb].name, c1);
		mb[nb].oid = oid;
		mb[nb].tree = 1;
		mb[nb].del = empty;
		nb++;
	}
	if (rc < 0)
		goto done;
	if ((rc = write_tree(p, "tree:blocks", bblocks, mb, nb, &oid, &empty)) < 0)
		goto done;
	memset(&rootmod, 0, sizeof(rootmod));
	strcpy(rootmod.name, "blocks");
	rootmod.oid = oid;
	rootmod.tree = 1;
	rootmod.del = empty;
	rc = write_tree(p, "tree:", base ? base->root : NULL, &rootmod, 1, root_out, &empty);
	if (rc == 0 && empty) /* an empty collection: the empty tree */
		rc = opt_pack_add(p, GIT_OBJECT_TREE, "", 0, root_out);
done:
	free(mb);
	free(m1);
	free(ml);
	return rc;
}

/* The group's pack of pending objects, made when missing. */
static int group_pack(struct opt_store *s)
{
	int rc;

	if (s->gpack)
		return 0;
	if ((rc = opt_pack_new(&s->gpack)) < 0)
		return rc;
	if (s->mempack)
		opt_pack_mirror(s->gpack, s->mempack);
	return 0;
}

/* Drop what the group holds pending (the group stays open). */
static void group_drop(struct opt_store *s)
{
	opt_pack_free(s->gpack);
	s->gpack = NULL;
	s->gpending = 0;
	s->gcount = 0;
	s->gcreate = 0;
	if (s->mempack)
		git_mempack_reset(s->mempack);
}

/* libgit2 could not create the ref of collection name: a collection whose
 * name clashes with it came since the check (OPT_EINVAL, saying so), or
 * another failure (OPT_EIO, libgit2's words). */
static int create_failed(struct opt_store *s, const char *name)
{
	char msg[1024];

	opt_git_fail(OPT_EIO, "cannot update collection ref");
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if (opt_store_check_new(s, name) == OPT_EINVAL)
		return OPT_EINVAL;
	return opt_error_set(OPT_EIO, "%s", msg);
}

/* Before the objects of a commit are written.  A writer that cannot
 * move the ref (another holds its lock, or it moved) must not write them:
 * every retry would leave a pack of objects nothing reaches.  So: the
 * collection's commit lock, an flock on a file that stays
 * (opt-locks/<hash of the name>), held from here until the ref has moved,
 * so that the writers of this store never write a pack for a commit that
 * cannot land; then the ref must not be locked (by another program, or
 * left by a killed one) and must still be at base (NULL: absent).
 * 0 with *fd (-1 when the lock file could not be made: the checks still
 * hold), or OPT_EBUSY / OPT_ECONFLICT (*moved) with nothing held. */
static int commit_guard(struct opt_store *s, const char *name, const char *ref, const git_oid *base, int *fd,
			int *moved)
{
	char path[PATH_MAX], hex[OPT_SHA256_HEX + 1];
	const char *dir = git_repository_path(s->repo);
	git_oid cur;
	int has;

	*fd = -1;
	*moved = 0;
	opt_sha256_hex(hex, name, strlen(name));
	snprintf(path, sizeof(path), "%sopt-locks", dir);
	if (mkdir(path, 0777) == 0 || errno == EEXIST) {
		snprintf(path, sizeof(path), "%sopt-locks/%.32s", dir, hex);
		*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	}
	if (*fd >= 0 && flock(*fd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;
		close(*fd);
		*fd = -1;
		if (busy)
			return opt_error_set(OPT_EBUSY, "collection '%s' is busy (another writer of this store is committing)",
					     name);
	}
	opt_ref_break_stale_lock(s->repo, ref);
	if (opt_ref_locked(s->repo, ref)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return opt_error_set(OPT_EBUSY, "collection '%s' is busy (its ref is locked: %s.lock)", name, ref);
	}
	if ((has = opt_ref_read(s->repo, ref, &cur)) < 0)
		return 0;  /* (an unreadable ref: the compare-and-swap will say why) */
	*moved = has == 0 ? base != NULL : !base || !git_oid_equal(&cur, base);
	if (*moved) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return OPT_ECONFLICT;
	}
	git_error_clear();
	return 0;
}

static void commit_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* The message of revision newrev: summary, blank line, trailers. */
static int commit_message(struct buf *msg, const struct opt_commit_info *info, long newrev)
{
	struct opt_trailers tr = { 0 };
	char line[512];
	int rc;

	snprintf(line, sizeof(line), "%s\n\n", info->summary && *info->summary ? info->summary : "transaction");
	tr.rev = newrev;
	tr.trx = info->trx;
	opt_trailers_format(line, sizeof(line), &tr);
	if ((rc = buf_add(msg, line, strlen(line))) < 0)
		return rc;
	if (info->trailers && (rc = buf_add(msg, info->trailers, strlen(info->trailers))) < 0)
		return rc;
	return 0;
}

/* The commit object of tree root on base with message msg, added to p:
 * its ID in *commit. */
static int commit_object(struct opt_pack *p, const git_oid *root, const struct opt_snap *base,
			 const struct buf *msg, git_oid *commit)
{
	struct buf cbuf = { 0 };
	char hex[GIT_OID_HEXSZ + 1], line[512];
	int64_t now = opt_now_ms() / 1000;
	int rc;

	git_oid_tostr(hex, sizeof(hex), root);
	snprintf(line, sizeof(line), "tree %s\n", hex);
	if ((rc = buf_add(&cbuf, line, strlen(line))) < 0)
		goto done;
	if (base) {
		snprintf(line, sizeof(line), "parent %s\n", base->commit_hex);
		if ((rc = buf_add(&cbuf, line, strlen(line))) < 0)
			goto done;
	}
	snprintf(line, sizeof(line),
		 "author optimystic <optimystic@localhost> %lld +0000\n"
		 "committer optimystic <optimystic@localhost> %lld +0000\n\n",
		 (long long)now, (long long)now);
	if ((rc = buf_add(&cbuf, line, strlen(line))) < 0 ||
	    (rc = buf_add(&cbuf, msg->p, msg->len)) < 0)
		goto done;
	rc = opt_pack_add(p, GIT_OBJECT_COMMIT, cbuf.p, cbuf.len, commit);
done:
	free(cbuf.p);
	return rc;
}

/* A group commit: remember commit as the pending head; the flush writes
 * and moves the ref. */
static int group_stage(struct opt_store *s, const char *name, const struct opt_snap *base, const git_oid *commit)
{
	if (!s->gpending) {
		s->gcreate = base == NULL;
		if (base)
			s->gbase = *git_commit_id(base->commit);
	} else if (!base || !git_oid_equal(git_commit_id(base->commit), &s->ghead)) {
		return opt_error_set(OPT_ECONFLICT, "group commit on '%s' must build on its pending revision", name);
	}
	s->ghead = *commit;
	s->gpending = 1;
	s->gcount++;
	return 0;
}

/* Land commit (its objects in p) on collection name: the guard, the pack
 * written, then the ref moved from base by compare-and-swap. */
static int commit_land(struct opt_store *s, const char *name, const char *ref, const struct opt_snap *base,
		       struct opt_pack *p, const git_oid *commit, const char *msg)
{
	const git_oid *old = base ? git_commit_id(base->commit) : NULL;
	char objdir[4096];
	int rc, moved, lockfd = -1;

	if ((rc = commit_guard(s, name, ref, old, &lockfd, &moved)) < 0) {
		if (moved)
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed since revision %ld was read",
					   name, base ? base->rev : 0);
		return rc;
	}
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	if ((rc = opt_pack_write(p, s->odb, objdir)) < 0) {
		commit_unlock(lockfd);
		return rc;
	}
	rc = opt_ref_cas(s->repo, ref, old, commit, msg, 0);
	commit_unlock(lockfd);
	if (rc == OPT_ECONFLICT)
		return opt_error_set(OPT_ECONFLICT, "collection '%s' changed since revision %ld was read",
				     name, base ? base->rev : 0);
	if (rc == OPT_EBUSY)
		opt_ref_break_stale_lock(s->repo, ref);
	else if (rc < 0)
		rc = base ? opt_git_fail(OPT_EIO, "cannot update collection ref") : create_failed(s, name);
	return rc;
}

int opt_store_commit(struct opt_store *s, const char *name, struct opt_snap *base,
		     struct opt_tracker *t, const struct opt_commit_info *info, long *rev)
{
	char ref[OPT_REF_MAX];
	struct collect col = { 0 };
	struct buf msg = { 0 };
	git_oid root, commit;
	long newrev = base ? base->rev + 1 : 1;
	int rc;

	if ((rc = opt_store__ref_name(ref, sizeof(ref), name)) < 0)
		return rc;
	if (!info || !info->trx)
		return opt_error_set(OPT_EINVAL, "a commit needs a transaction ID");
	if (s->gname && strcmp(s->gname, name) != 0)
		return opt_error_set(OPT_EINVAL, "a group commit covers one collection ('%s', not '%s')", s->gname, name);
	if (s->gname) {
		if ((rc = group_pack(s)) < 0)
			return rc;
		col.pack = s->gpack;  /* objects go to the group's pack */
	} else if ((rc = opt_pack_new(&col.pack)) < 0) {
		return rc;
	}
	col.canon = info->canon;
	col.s = s;
	/* the objects: blocks, trees, the commit */
	if ((rc = opt_tracker_foreach_text(t, collect_cb, &col)) < 0 ||
	    (rc = build_trees(s, col.pack, base, col.v, col.n, &root)) < 0 ||
	    (rc = commit_message(&msg, info, newrev)) < 0 ||
	    (rc = commit_object(col.pack, &root, base, &msg, &commit)) < 0)
		goto done;
	if (s->gname)
		rc = group_stage(s, name, base, &commit);
	else
		rc = commit_land(s, name, ref, base, col.pack, &commit, msg.p);
	if (rc < 0)
		goto done;
	if (rev)
		*rev = newrev;
	/* keep the number of packs small; failures here lose nothing */
	if (!s->gname && opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
done:
	if (col.pack != s->gpack)
		opt_pack_free(col.pack);
	free(col.v);
	free(msg.p);
	return rc;
}

int opt_store_group_begin(struct opt_store *s, const char *name)
{
	int rc;

	if (s->gname)
		return opt_error_set(OPT_EINVAL, "a group commit is already open");
	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	if (!s->mempack) {
		if (git_mempack_new(&s->mempack) < 0 || git_odb_add_backend(s->odb, s->mempack, 1000) < 0) {
			s->mempack = NULL;
			return opt_git_fail(OPT_EIO, "cannot set up group commit");
		}
	}
	if (!(s->gname = strdup(name)))
		return opt_error_oom();
	if ((rc = group_pack(s)) < 0) {
		free(s->gname);
		s->gname = NULL;
		return rc;
	}
	s->gpending = 0;
	s->gcount = 0;
	s->gcreate = 0;
	return 0;
}

void opt_store_group_end(struct opt_store *s)
{
	if (!s->gname)
		return;
	group_drop(s);
	free(s->gname);
	s->gname = NULL;
}

int opt_store_group_flush(struct opt_store *s)
{
	char ref[OPT_REF_MAX], objdir[4096];
	size_t n;
	int rc = 0, lockfd = -1, moved;

	if (!s->gname)
		return opt_error_set(OPT_EINVAL, "no group commit is open");
	if (!s->gpending)
		return 0;  /* nothing pending: no commit made durable */
	opt_ref_collection(ref, sizeof(ref), s->gname);
	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(s->repo));
	/* nothing is written for a group that cannot land (see commit_guard) */
	if ((rc = commit_guard(s, s->gname, ref, s->gcreate ? NULL : &s->gbase, &lockfd, &moved)) < 0) {
		if (moved)
			rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed while the group was staged", s->gname);
		goto done;
	}
	if ((rc = opt_pack_write(s->gpack, s->odb, objdir)) < 0)
		goto done;
	rc = opt_ref_cas(s->repo, ref, s->gcreate ? NULL : &s->gbase, &s->ghead, "opt group commit", 0);
	if (rc == OPT_ECONFLICT)
		rc = opt_error_set(OPT_ECONFLICT, "collection '%s' changed while the group was staged", s->gname);
	else if (rc == OPT_EBUSY)
		opt_ref_break_stale_lock(s->repo, ref);
	else if (rc < 0)
		rc = s->gcreate ? create_failed(s, s->gname) : opt_git_fail(OPT_EIO, "cannot update collection ref");
done:
	commit_unlock(lockfd);
	/* start over with an empty group either way: after a failure, what
	 * was pending is dropped, so no later flush can report it */
	n = s->gcount;
	group_drop(s);
	if (rc < 0)
		return rc;
	if (opt_pack_consolidate(s->repo, 0) < 0)
		opt_error_clear();
	/* the next group's pack, now or at its first commit: the commits
	 * are durable whatever happens to it */
	if (group_pack(s) < 0)
		opt_error_clear();
	return n > INT_MAX ? INT_MAX : (int)n;
}
