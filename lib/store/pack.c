/* pack.c - writing packs: one pack per transaction (deltas against the
 * versions it replaces), consolidation of small packs, and gc. */
#include "pack.h"
#include "store/git.h"
#include "error.h"
#include "util.h"
#include "store/internal.h"

#include <git2/sys/odb_backend.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>
#include <zlib.h>
#include <libdeflate.h>
#include <sys/mman.h>

struct pobj {
	git_oid id;
	uint64_t off;
	uint32_t crc;
	uint32_t mtime;     /* a cruft pack's: when the object was last written */
};

struct opt_pack {
	unsigned char *buf;  /* the pack stream, from the 12-byte header on */
	size_t len, cap;
	uint32_t count;
	char name[64];       /* "pack-<hex>" once written */
	git_odb_backend *mirror;
	git_oid *set;        /* open-addressing set of object IDs */
	struct pobj *objs;   /* every object: ID, offset, CRC-32 (for the .idx) */
	size_t nobjs, capobjs;
	size_t setcap, setn;
	z_stream z, zs;   /* zs stores small objects without compression:
			     zlib's fixed cost per stream (~10 us) would
			     dominate, for little gain on a few hundred bytes */
	int zinit;
	/* the others are compressed by libdeflate (level 1: as small as
	 * zlib's level 1, in about half the time; a bulk load compresses
	 * hundreds of MB) */
	struct libdeflate_compressor *ld;
	/* the last version of each hinted object in this pack (a block by
	 * its ID): the next version is stored as a delta against it */
	struct dbase *bases;
	size_t nbases, capbases;
	unsigned char *dbuf;  /* delta being built */
	size_t dcap;
	/* a cruft pack (git's: unreachable objects kept for a while) has a
	 * .mtimes file, the time of each object; objects added take cur_mtime */
	int mtimes;
	uint32_t cur_mtime;
};

struct dbase {
	char *hint;
	uint64_t off;
	unsigned char *bytes;
	size_t len;
	int depth;
};

/* Deltas are chained at most this deep (a read resolves the chain). */
#define DELTA_DEPTH 10

static int grow(struct opt_pack *p, size_t need)
{
	return OPT_ALLOC_GROW(p->buf, p->len + need, p->cap);
}

int opt_pack_new(struct opt_pack **out)
{
	struct opt_pack *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p || grow(p, 12) < 0) {
		free(p);
		return opt_error_oom();
	}
	memcpy(p->buf, "PACK\0\0\0\2\0\0\0\0", 12);
	p->len = 12;
	if (deflateInit(&p->z, 1) != Z_OK) {
		free(p->buf);
		free(p);
		return opt_error_set(OPT_EIO, "cannot initialise zlib");
	}
	if (deflateInit2(&p->zs, 0, Z_DEFLATED, 15, 1, Z_DEFAULT_STRATEGY) != Z_OK) {
		deflateEnd(&p->z);
		free(p->buf);
		free(p);
		return opt_error_set(OPT_EIO, "cannot initialise zlib");
	}
	p->zinit = 1;
	if (!(p->ld = libdeflate_alloc_compressor(1))) {
		opt_pack_free(p);
		return opt_error_oom();
	}
	*out = p;
	return 0;
}

void opt_pack_free(struct opt_pack *p)
{
	if (!p)
		return;
	if (p->zinit) {
		deflateEnd(&p->z);
		deflateEnd(&p->zs);
	}
	if (p->ld)
		libdeflate_free_compressor(p->ld);
	for (size_t i = 0; i < p->capbases; i++) {
		free(p->bases[i].hint);
		free(p->bases[i].bytes);
	}
	free(p->bases);
	free(p->dbuf);
	free(p->buf);
	free(p->set);
	free(p->objs);
	free(p);
}

void opt_pack_mirror(struct opt_pack *p, git_odb_backend *backend)
{
	p->mirror = backend;
}

size_t opt_pack_count(const struct opt_pack *p)
{
	return p->count;
}

static size_t oid_hash(const git_oid *id)
{
	size_t h;

	memcpy(&h, id->id, sizeof(h));
	return h;
}

/* 1 if inserted, 0 if present, <0 on error */
static int set_add(struct opt_pack *p, const git_oid *id)
{
	size_t i;

	if ((p->setn + 1) * 2 > p->setcap) {
		size_t ncap = p->setcap ? p->setcap * 2 : 1024, k;
		git_oid *ns = calloc(ncap, sizeof(*ns));
		OPT_CHECK_ALLOC(ns);
		for (k = 0; k < p->setcap; k++) {
			if (git_oid_is_zero(&p->set[k]))
				continue;
			i = oid_hash(&p->set[k]) & (ncap - 1);
			while (!git_oid_is_zero(&ns[i]))
				i = (i + 1) & (ncap - 1);
			ns[i] = p->set[k];
		}
		free(p->set);
		p->set = ns;
		p->setcap = ncap;
	}
	i = oid_hash(id) & (p->setcap - 1);
	while (!git_oid_is_zero(&p->set[i])) {
		if (git_oid_equal(&p->set[i], id))
			return 0;
		i = (i + 1) & (p->setcap - 1);
	}
	p->set[i] = *id;
	p->setn++;
	return 1;
}

static const char *type_name(git_object_t type)
{
	switch (type) {
	case GIT_OBJECT_COMMIT: return "commit";
	case GIT_OBJECT_TREE: return "tree";
	case GIT_OBJECT_BLOB: return "blob";
	case GIT_OBJECT_TAG: return "tag";
	default: return NULL;
	}
}

static size_t str_hash(const char *s)
{
	size_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* The base slot of hint (an empty one, hint NULL, when it has none). */
static struct dbase *base_slot(struct opt_pack *p, const char *hint)
{
	size_t i;

	if ((p->nbases + 1) * 2 > p->capbases) {
		size_t ncap = p->capbases ? p->capbases * 2 : 64, k;
		struct dbase *nb = calloc(ncap, sizeof(*nb));
		if (!nb)
			return NULL;
		for (k = 0; k < p->capbases; k++) {
			if (!p->bases[k].hint)
				continue;
			i = str_hash(p->bases[k].hint) & (ncap - 1);
			while (nb[i].hint)
				i = (i + 1) & (ncap - 1);
			nb[i] = p->bases[k];
		}
		free(p->bases);
		p->bases = nb;
		p->capbases = ncap;
	}
	i = str_hash(hint) & (p->capbases - 1);
	while (p->bases[i].hint && strcmp(p->bases[i].hint, hint) != 0)
		i = (i + 1) & (p->capbases - 1);
	return &p->bases[i];
}

static size_t put_size(unsigned char *o, size_t v)
{
	size_t n = 0;

	do {
		o[n] = v & 0x7f;
		v >>= 7;
		if (v)
			o[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

static size_t put_copy(unsigned char *o, size_t off, size_t size)
{
	unsigned char *cmd = o++;
	int i;

	*cmd = 0x80;
	for (i = 0; i < 4; i++)
		if ((off >> (8 * i)) & 0xff) {
			*o++ = (unsigned char)(off >> (8 * i));
			*cmd |= (unsigned char)(1 << i);
		}
	for (i = 0; i < 3; i++)
		if ((size >> (8 * i)) & 0xff) {
			*o++ = (unsigned char)(size >> (8 * i));
			*cmd |= (unsigned char)(0x10 << i);
		}
	return (size_t)(o - cmd);
}

/* A git delta turning base into data: what the two share at the start
 * and at the end is copied, the middle inserted (a changed block is
 * mostly its old self with something spliced in).  *out in p->dbuf;
 * 0, or -1 when the delta would not be worth it (over half the object). */
static int make_delta(struct opt_pack *p, const unsigned char *base, size_t blen, const unsigned char *data,
		      size_t len, size_t *out)
{
	size_t pre = 0, suf = 0, max = blen < len ? blen : len, mid, need, n = 0, i;

	if (blen > 0xffffffffu || len > 0xffffffffu)
		return -1;
	while (pre < max && base[pre] == data[pre])
		pre++;
	while (suf < max - pre && base[blen - 1 - suf] == data[len - 1 - suf])
		suf++;
	mid = len - pre - suf;
	need = 20 + mid + mid / 127 + 1 + 8 * (2 + (pre + suf) / 0xffffff);
	if (need * 2 > len)
		return -1;
	if (need > p->dcap) {
		unsigned char *nb = realloc(p->dbuf, need);
		if (!nb)
			return -1;
		p->dbuf = nb;
		p->dcap = need;
	}
	n += put_size(p->dbuf + n, blen);
	n += put_size(p->dbuf + n, len);
	for (i = 0; i < pre; i += 0xffffff)
		n += put_copy(p->dbuf + n, i, pre - i < 0xffffff ? pre - i : 0xffffff);
	for (i = 0; i < mid; i += 127) {
		size_t k = mid - i < 127 ? mid - i : 127;
		p->dbuf[n++] = (unsigned char)k;
		memcpy(p->dbuf + n, data + pre + i, k);
		n += k;
	}
	for (i = 0; i < suf; i += 0xffffff)
		n += put_copy(p->dbuf + n, blen - suf + i, suf - i < 0xffffff ? suf - i : 0xffffff);
	*out = n;
	return 0;
}

/* Append an entry: the pack header of type/size, for a delta the
 * distance back to its base, then body deflated. */
static void put32(unsigned char *o, uint32_t v)
{
	o[0] = (unsigned char)(v >> 24);
	o[1] = (unsigned char)(v >> 16);
	o[2] = (unsigned char)(v >> 8);
	o[3] = (unsigned char)v;
}

static int put_entry(struct opt_pack *p, int type, size_t size, uint64_t dist, const void *body, size_t blen)
{
	unsigned char *o;
	size_t bound;
	/* small objects and git trees are stored: zlib's fixed cost would
	 * dominate the first, and the second are mostly SHA-1s, which do
	 * not compress, rewritten by every transaction (the fan-out trees
	 * grow with the store: compressing them made writes slower as the
	 * store grew) */
	z_stream *z = blen < 512 || type == GIT_OBJECT_TREE ? &p->zs : &p->z;
	int rc;

	bound = z == &p->zs ? blen + 16 + 5 * (blen / 65535) : libdeflate_zlib_compress_bound(p->ld, blen);
	if ((rc = grow(p, 32 + bound)) < 0 || (rc = OPT_ALLOC_GROW(p->objs, p->nobjs + 1, p->capobjs)) < 0)
		return rc;
	p->objs[p->nobjs].off = p->len;
	o = p->buf + p->len;
	*o = (unsigned char)((type << 4) | (size & 15));
	size >>= 4;
	while (size) {
		*o++ |= 0x80;
		*o = size & 0x7f;
		size >>= 7;
	}
	o++;
	if (type == OBJ_OFS_DELTA) {
		unsigned char ob[16];
		size_t pos = sizeof(ob) - 1;
		ob[pos] = dist & 127;
		while (dist >>= 7)
			ob[--pos] = (unsigned char)(128 | (--dist & 127));
		memcpy(o, ob + pos, sizeof(ob) - pos);
		o += sizeof(ob) - pos;
	}
	if (z == &p->zs) {
		/* stored: a zlib stream of uncompressed blocks (at most 65,535
		 * bytes each), by hand */
		uLong a = adler32(1, body, (uInt)blen);
		size_t done = 0;
		*o++ = 0x78;
		*o++ = 0x01;
		do {
			size_t k = blen - done < 65535 ? blen - done : 65535;
			*o++ = done + k == blen;  /* final?, type 00: stored */
			*o++ = (unsigned char)(k & 0xff);
			*o++ = (unsigned char)(k >> 8);
			*o++ = (unsigned char)(~k & 0xff);
			*o++ = (unsigned char)((~k >> 8) & 0xff);
			memcpy(o, (const unsigned char *)body + done, k);
			o += k;
			done += k;
		} while (done < blen);
		put32(o, (uint32_t)a);
		p->len = (size_t)(o + 4 - p->buf);
	} else {
		size_t n = libdeflate_zlib_compress(p->ld, body, blen, o, bound);
		if (n == 0)
			return opt_error_set(OPT_EIO, "libdeflate compression failed");
		p->len = (size_t)((o + n) - p->buf);
	}
	p->objs[p->nobjs].crc = (uint32_t)crc32(0, p->buf + p->objs[p->nobjs].off,
						(uInt)(p->len - p->objs[p->nobjs].off));
	p->objs[p->nobjs].mtime = p->cur_mtime;
	p->nobjs++;
	p->count++;
	return 0;
}

static int pack_add(struct opt_pack *p, git_object_t type, const void *data, size_t len, git_oid *oid,
		    const char *hint)
{
	char hdr[64];
	int hl, rc;
	struct opt_sha1 c;
	git_oid id;
	struct dbase *b = NULL;
	size_t dlen;
	uint64_t off;
	const char *tn = type_name(type);

	if (!tn)
		return opt_error_set(OPT_EINVAL, "bad object type");
	if (len > OPT_BLOCK_MAX)
		return opt_error_set(OPT_EINVAL, "%s%s%s would be %zu bytes, more than a block may have (%zu bytes): "
				     "write it in parts", type == GIT_OBJECT_BLOB ? "block" : "object", hint ? " " : "",
				     hint ? hint : "", len, OPT_BLOCK_MAX);
	{
		/* "<type> <size>\0", without printf on this hot path */
		char digits[24];
		size_t tl = strlen(tn), dl = 0, v = len;
		do {
			digits[dl++] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		memcpy(hdr, tn, tl);
		hdr[tl] = ' ';
		for (hl = 0; hl < (int)dl; hl++)
			hdr[tl + 1 + (size_t)hl] = digits[dl - 1 - (size_t)hl];
		hdr[tl + 1 + dl] = '\0';
		hl = (int)(tl + 2 + dl);
	}
	opt_sha1_init(&c);
	opt_sha1_update(&c, hdr, (size_t)hl);
	opt_sha1_update(&c, data, len);
	opt_sha1_final(&c, id.id);
	if (oid)
		*oid = id;
	rc = set_add(p, &id);
	if (rc <= 0)
		return rc;
	if (p->mirror && p->mirror->write(p->mirror, &id, data, len, type) < 0)
		return opt_error_set(OPT_EIO, "cannot keep object in memory");
	off = p->len;
	if (hint && len >= 512 && (b = base_slot(p, hint)) && b->hint && b->depth < DELTA_DEPTH &&
	    make_delta(p, b->bytes, b->len, data, len, &dlen) == 0) {
		rc = put_entry(p, OBJ_OFS_DELTA, dlen, off - b->off, p->dbuf, dlen);
		b->depth++;
	} else {
		rc = put_entry(p, (int)type, len, 0, data, len);
		if (b)
			b->depth = 0;
	}
	if (rc < 0)
		return rc;
	p->objs[p->nobjs - 1].id = id;
	/* remember this version as the base for the next one */
	if (hint && len >= 512 && (b || (b = base_slot(p, hint)))) {
		unsigned char *copy = malloc(len);
		if (!copy)
			return 0;  /* no delta next time: fine */
		memcpy(copy, data, len);
		if (!b->hint) {
			if (!(b->hint = strdup(hint))) {
				free(copy);
				return 0;
			}
			p->nbases++;
			b->depth = 0;
		}
		free(b->bytes);
		b->bytes = copy;
		b->len = len;
		b->off = off;
	}
	return 0;
}

int opt_pack_add(struct opt_pack *p, git_object_t type, const void *data, size_t len, git_oid *oid)
{
	return pack_add(p, type, data, len, oid, NULL);
}

int opt_pack_add_version(struct opt_pack *p, git_object_t type, const void *data, size_t len, const char *hint,
			 git_oid *oid)
{
	return pack_add(p, type, data, len, oid, hint);
}

static int cmp_pobj(const void *a, const void *b)
{
	return memcmp(((const struct pobj *)a)->id.id, ((const struct pobj *)b)->id.id, 20);
}

static int write_all(int fd, const void *data, size_t len)
{
	const unsigned char *d = data;

	while (len) {
		ssize_t n = write(fd, d, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		d += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write buf to dir/name through a temporary file: write, fsync, rename. */
static int write_file(const char *dir, const char *name, const void *buf, size_t len, int sync)
{
	char tmp[4200], path[4200];
	int fd, err;

	snprintf(tmp, sizeof(tmp), "%s/tmp_%s_%ld", dir, name, (long)getpid());
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0444);
	if (fd < 0)
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if (write_all(fd, buf, len) < 0 || (sync && fsync(fd) < 0)) {
		err = errno;
		close(fd);
		unlink(tmp);
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(err));
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		err = errno;
		unlink(tmp);
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", path, strerror(err));
	}
	return 0;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", dir, strerror(errno));
	if (fsync(fd) < 0)
		rc = opt_error_set(OPT_EIO, "cannot sync '%s': %s", dir, strerror(errno));
	close(fd);
	return rc;
}

const char *opt_pack_last_name(const struct opt_pack *p)
{
	return p->name[0] ? p->name : NULL;
}

int opt_pack_fsync_enabled(void)
{
	const char *e = getenv("OPT_FSYNC");
	return !(e && strcmp(e, "0") == 0);
}

/* The version 2 index of p (its objects sorted by ID, the pack's
 * checksum trailer): fan-out, sorted IDs, CRC-32s, offsets (large ones
 * in their own table), the checksums.  *out malloc'd. */
static int make_idx(struct opt_pack *p, const unsigned char trailer[20], unsigned char **out, size_t *len)
{
	struct opt_sha1 c;
	unsigned char *idx, *o, *large;
	size_t i, nlarge = 0;
	uint32_t fan[256], li = 0;

	for (i = 0; i < p->nobjs; i++)
		if (p->objs[i].off >= 0x80000000u)
			nlarge++;
	idx = malloc(8 + 1024 + p->nobjs * (20 + 4 + 4) + nlarge * 8 + 40);
	OPT_CHECK_ALLOC(idx);
	memcpy(idx, "\377tOc\0\0\0\2", 8);
	memset(fan, 0, sizeof(fan));
	for (i = 0; i < p->nobjs; i++)
		fan[p->objs[i].id.id[0]]++;
	for (i = 1; i < 256; i++)
		fan[i] += fan[i - 1];
	for (i = 0; i < 256; i++)
		put32(idx + 8 + 4 * i, fan[i]);
	o = idx + 8 + 1024;
	for (i = 0; i < p->nobjs; i++, o += 20)
		memcpy(o, p->objs[i].id.id, 20);
	for (i = 0; i < p->nobjs; i++, o += 4)
		put32(o, p->objs[i].crc);
	large = o + 4 * p->nobjs;
	for (i = 0; i < p->nobjs; i++, o += 4) {
		uint64_t off = p->objs[i].off;
		if (off < 0x80000000u) {
			put32(o, (uint32_t)off);
		} else {
			put32(o, 0x80000000u | li);
			put32(large + 8 * li, (uint32_t)(off >> 32));
			put32(large + 8 * li + 4, (uint32_t)off);
			li++;
		}
	}
	o = large + 8 * nlarge;
	memcpy(o, trailer, 20);
	o += 20;
	opt_sha1_init(&c);
	opt_sha1_update(&c, idx, (size_t)(o - idx));
	opt_sha1_final(&c, o);
	o += 20;
	*out = idx;
	*len = (size_t)(o - idx);
	return 0;
}

/* git's format: "MTME", version 1, SHA-1, one time per object in index
 * order, the pack's checksum, the checksum of all that; written before
 * the index, which makes the pack visible. */
static int write_mtimes(struct opt_pack *p, const char *packdir, const char *hex, const unsigned char trailer[20],
			int sync)
{
	struct opt_sha1 c;
	char name[64];
	size_t i, mlen = 12 + 4 * p->nobjs + 40;
	unsigned char *m = malloc(mlen);
	int rc;

	OPT_CHECK_ALLOC(m);
	memcpy(m, "MTME", 4);
	put32(m + 4, 1);
	put32(m + 8, 1);
	for (i = 0; i < p->nobjs; i++)
		put32(m + 12 + 4 * i, p->objs[i].mtime);
	memcpy(m + 12 + 4 * p->nobjs, trailer, 20);
	opt_sha1_init(&c);
	opt_sha1_update(&c, m, mlen - 20);
	opt_sha1_final(&c, m + mlen - 20);
	snprintf(name, sizeof(name), "pack-%s.mtimes", hex);
	rc = write_file(packdir, name, m, mlen, sync);
	free(m);
	return rc;
}

int opt_pack_write(struct opt_pack *p, git_odb *odb, const char *objdir)
{
	struct opt_sha1 c;
	unsigned char trailer[20], *idx = NULL;
	char packdir[4096], hex[41], name[64];
	size_t idxlen = 0;
	int rc = 0, sync = opt_pack_fsync_enabled();

	if (p->count == 0)
		return 0;
	put32(p->buf + 8, p->count);
	opt_sha1_init(&c);
	opt_sha1_update(&c, p->buf, p->len);
	opt_sha1_final(&c, trailer);
	if ((rc = grow(p, 20)) < 0)
		return rc;
	memcpy(p->buf + p->len, trailer, 20);
	qsort(p->objs, p->nobjs, sizeof(*p->objs), cmp_pobj);
	if ((rc = make_idx(p, trailer, &idx, &idxlen)) < 0)
		return rc;

	/* the pack first, then its index: readers find packs by their .idx */
	snprintf(packdir, sizeof(packdir), "%s/pack", objdir);
	opt_hex(hex, trailer, 20);
	snprintf(name, sizeof(name), "pack-%s.pack", hex);
	if ((rc = write_file(packdir, name, p->buf, p->len + 20, sync)) < 0)
		goto done;
	snprintf(p->name, sizeof(p->name), "pack-%s", hex);
	if (p->mtimes && (rc = write_mtimes(p, packdir, hex, trailer, sync)) < 0)
		goto done;
	snprintf(name, sizeof(name), "pack-%s.idx", hex);
	if ((rc = write_file(packdir, name, idx, idxlen, sync)) < 0)
		goto done;
	if (sync && (rc = sync_dir(packdir)) < 0)
		goto done;
	if (odb)
		git_odb_refresh(odb);
done:
	free(idx);
	return rc;
}

/* ---- consolidation ---- */

struct packinfo {
	char name[128]; /* "pack-<hex>" */
	uint32_t count;
	off_t bytes;
	int64_t mtime;  /* of the .pack */
	int keep;       /* has a .keep: someone is writing or keeping it */
	int cruft;      /* has a .mtimes: unreachable objects kept a while */
};

static int read_idx_count(const char *path, uint32_t *count)
{
	unsigned char h[8 + 256 * 4];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return -1;
	n = fread(h, 1, sizeof(h), f);
	fclose(f);
	if (n != sizeof(h) || memcmp(h, "\377tOc\0\0\0\2", 8) != 0)
		return -1;
	*count = (uint32_t)h[8 + 255 * 4] << 24 | (uint32_t)h[8 + 255 * 4 + 1] << 16 |
		 (uint32_t)h[8 + 255 * 4 + 2] << 8 | h[8 + 255 * 4 + 3];
	return 0;
}

static int list_packs(const char *packdir, struct packinfo **out, size_t *n)
{
	DIR *d = opendir(packdir);
	struct dirent *e;
	struct packinfo *v = NULL;
	size_t cnt = 0, cap = 0;

	*out = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT ? 0 : opt_error_set(OPT_EIO, "cannot read '%s': %s", packdir, strerror(errno));
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		char path[4096];
		struct stat st;
		uint32_t c;

		if (l < 10 || strncmp(e->d_name, "pack-", 5) || strcmp(e->d_name + l - 4, ".idx"))
			continue;
		if (l - 4 >= sizeof(v->name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", packdir, e->d_name);
		if (read_idx_count(path, &c) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/%.*s.pack", packdir, (int)(l - 4), e->d_name);
		if (stat(path, &st) < 0)
			continue;
		if (OPT_ALLOC_GROW(v, cnt + 1, cap) < 0) {
			free(v);
			closedir(d);
			return OPT_EIO;
		}
		memcpy(v[cnt].name, e->d_name, l - 4);
		v[cnt].name[l - 4] = '\0';
		v[cnt].count = c;
		v[cnt].bytes = st.st_size;
		v[cnt].mtime = (int64_t)st.st_mtime;
		snprintf(path, sizeof(path), "%s/%.*s.keep", packdir, (int)(l - 4), e->d_name);
		v[cnt].keep = access(path, F_OK) == 0;
		snprintf(path, sizeof(path), "%s/%.*s.mtimes", packdir, (int)(l - 4), e->d_name);
		v[cnt].cruft = access(path, F_OK) == 0;
		cnt++;
	}
	closedir(d);
	*out = v;
	*n = cnt;
	return 0;
}

int opt_pack_stats(git_repository *repo, size_t *packs, size_t *objects, size_t *bytes)
{
	char dir[4096];
	struct packinfo *v;
	size_t n, i;
	int rc;

	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(repo));
	if ((rc = list_packs(dir, &v, &n)) < 0)
		return rc;
	*packs = n;
	*objects = 0;
	*bytes = 0;
	for (i = 0; i < n; i++) {
		*objects += v[i].count;
		*bytes += (size_t)v[i].bytes;
	}
	free(v);
	return 0;
}

static int cmp_count(const void *a, const void *b)
{
	const struct packinfo *x = a, *y = b;
	return x->count < y->count ? -1 : x->count > y->count;
}

/* The consolidation lock: flock on a file that stays (no create/unlink
 * churn, and a killed holder releases it).  Returns the fd or -1 when
 * another process holds it. */
static int take_lock(const char *path)
{
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);

	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

struct idxent {
	const unsigned char *id;
	uint64_t off;
	uint32_t crc;
};

static int cmp_off(const void *a, const void *b)
{
	const struct idxent *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static int read_whole(const char *path, unsigned char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	unsigned char *b;

	*out = NULL;
	if (!f)
		return opt_error_set(OPT_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (fstat(fileno(f), &st) < 0 || !(b = malloc((size_t)st.st_size + 1))) {
		fclose(f);
		return opt_error_set(OPT_EIO, "cannot read '%s'", path);
	}
	if (fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		free(b);
		fclose(f);
		return opt_error_set(OPT_EIO, "cannot read '%s'", path);
	}
	fclose(f);
	*out = b;
	*len = (size_t)st.st_size;
	return 0;
}

/* Add a raw, already compressed entry (header + zlib data) to p. */
static int pack_add_raw(struct opt_pack *p, const unsigned char *id, const unsigned char *raw, size_t len,
			uint32_t crc)
{
	git_oid oid;
	int rc;

	memcpy(oid.id, id, 20);
	rc = set_add(p, &oid);
	if (rc <= 0)
		return rc;
	if ((rc = grow(p, len)) < 0 || (rc = OPT_ALLOC_GROW(p->objs, p->nobjs + 1, p->capobjs)) < 0)
		return rc;
	p->objs[p->nobjs].id = oid;
	p->objs[p->nobjs].off = p->len;
	p->objs[p->nobjs].crc = crc;
	p->objs[p->nobjs].mtime = p->cur_mtime;
	p->nobjs++;
	memcpy(p->buf + p->len, raw, len);
	p->len += len;
	p->count++;
	return 0;
}

struct rollup {
	struct opt_pack *pack;
	git_odb *odb;
	/* gc: where each object goes (NULL: all into pack) */
	struct opt_pack *cruft;
	int (*classify)(const git_oid *id, void *arg, uint32_t *mtime);  /* a ROLL_ value */
	void *arg;
};

#define ROLL_MAIN 0
#define ROLL_CRUFT 1
#define ROLL_DROP 2

/* Copy the delta entry e[i] (raw, len bytes) of a pack into p, its base
 * distance rewritten for where its base went in p: 0 when copied, 1 when
 * it cannot be (its base was not copied: it was in p already), <0 on
 * error. */
static int rollup_delta(struct opt_pack *p, const struct idxent *e, const uint64_t *newoff, const unsigned char *tgt,
			size_t i, const unsigned char *raw, size_t len)
{
	size_t h = 0, lo = 0, hi = i, q;
	uint64_t dist, base, nd;
	unsigned char ob[16], *nb;
	size_t pos = sizeof(ob) - 1;
	int rc;

	while (h < len && (raw[h] & 0x80))
		h++;
	if (++h >= len)
		return 1;
	q = h;
	dist = raw[q] & 127;
	while (raw[q] & 128) {
		if (++q >= len || dist > (UINT64_MAX >> 8))
			return 1;
		dist = ((dist + 1) << 7) | (raw[q] & 127);
	}
	q++;
	if (dist == 0 || dist > e[i].off)
		return 1;
	base = e[i].off - dist;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (e[mid].off < base)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo >= i || e[lo].off != base || newoff[lo] == UINT64_MAX || tgt[lo] != tgt[i])
		return 1;
	nd = p->len - newoff[lo];
	ob[pos] = nd & 127;
	while (nd >>= 7)
		ob[--pos] = (unsigned char)(128 | (--nd & 127));
	nb = malloc(h + (sizeof(ob) - pos) + (len - q));
	OPT_CHECK_ALLOC(nb);
	memcpy(nb, raw, h);
	memcpy(nb + h, ob + pos, sizeof(ob) - pos);
	memcpy(nb + h + (sizeof(ob) - pos), raw + q, len - q);
	len = h + (sizeof(ob) - pos) + (len - q);
	rc = pack_add_raw(p, e[i].id, nb, len, (uint32_t)crc32(0, nb, (uInt)len));
	free(nb);
	return rc < 0 ? rc : 0;
}

/* Copy every object of one pack into the roll-up: whole objects are copied
 * as they are stored (no inflate, no deflate); deltas (from packs fetched
 * from peers) are resolved through the object database. */
/* The entries of index idx (of pack name) by offset: *out malloc'd,
 * *count of them. */
static int idx_entries(const char *name, const unsigned char *idx, size_t idxlen, struct idxent **out, size_t *count)
{
	const unsigned char *offs, *lg;
	struct idxent *e;
	size_t i, n;
	uint32_t o;

	if (idxlen < 8 + 1024 + 40 || memcmp(idx, "\377tOc\0\0\0\2", 8) != 0)
		return opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
	n = get32(idx + 8 + 255 * 4);
	if (idxlen < 8 + 1024 + n * 28 + 40)
		return opt_error_set(OPT_EINTEGRITY, "pack '%s' has a truncated index", name);
	e = malloc((n ? n : 1) * sizeof(*e));
	OPT_CHECK_ALLOC(e);
	offs = idx + 8 + 1024 + n * 24;
	for (i = 0; i < n; i++) {
		o = get32(offs + 4 * i);
		e[i].id = idx + 8 + 1024 + 20 * i;
		e[i].crc = get32(idx + 8 + 1024 + n * 20 + 4 * i);
		e[i].off = o;
		if (!(o & 0x80000000u))
			continue;
		lg = offs + 4 * n + 8 * (o & 0x7fffffffu);
		if (lg + 8 > idx + idxlen - 40) {
			free(e);
			return opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
		}
		e[i].off = (uint64_t)get32(lg) << 32 | get32(lg + 4);
	}
	qsort(e, n, sizeof(*e), cmp_off);
	*out = e;
	*count = n;
	return 0;
}

/* Object id from the object database, added to p as a whole object. */
static int rollup_read(struct rollup *r, struct opt_pack *p, const unsigned char *id)
{
	git_oid oid;
	git_odb_object *obj;
	int rc;

	memcpy(oid.id, id, 20);
	if (git_odb_read(&obj, r->odb, &oid) < 0) {
		const git_error *ge = git_error_last();
		return opt_error_set(OPT_EINTEGRITY, "cannot read object while packing: %s", ge ? ge->message : "unknown");
	}
	rc = opt_pack_add(p, git_odb_object_type(obj), git_odb_object_data(obj), git_odb_object_size(obj), NULL);
	git_odb_object_free(obj);
	return rc;
}

/* Entry i (of the n of e, in pack pk) to its pack (tgt[i]: main, cruft,
 * or dropped), as it is when it can be; newoff[i] its new offset. */
static int rollup_entry(struct rollup *r, const char *name, const unsigned char *pk, size_t pklen,
			const struct idxent *e, size_t n, size_t i, uint64_t *newoff, unsigned char *tgt)
{
	uint64_t end = i + 1 < n ? e[i + 1].off : pklen - 20, at;
	struct opt_pack *to = r->pack;
	size_t before;
	int type, rc;

	newoff[i] = UINT64_MAX;
	tgt[i] = ROLL_MAIN;
	if (r->classify) {
		git_oid id;
		uint32_t mt = 0;
		memcpy(id.id, e[i].id, 20);
		tgt[i] = (unsigned char)r->classify(&id, r->arg, &mt);
		if (tgt[i] == ROLL_DROP)
			return 0;
		if (tgt[i] == ROLL_CRUFT) {
			to = r->cruft;
			to->cur_mtime = mt;
		}
	}
	at = to->len;
	before = to->nobjs;
	if (e[i].off < 12 || end <= e[i].off || end > pklen - 20)
		return opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
	type = (pk[e[i].off] >> 4) & 7;
	if (type >= 1 && type <= 4)
		rc = pack_add_raw(to, e[i].id, pk + e[i].off, (size_t)(end - e[i].off), e[i].crc);
	else if (type != OBJ_OFS_DELTA ||
		 (rc = rollup_delta(to, e, newoff, tgt, i, pk + e[i].off, (size_t)(end - e[i].off))) == 1)
		rc = rollup_read(r, to, e[i].id);
	/* (else a delta copied as it is, its base found by its new offset) */
	if (rc == 0 && to->nobjs > before)
		newoff[i] = at;
	return rc;
}

static int rollup_pack(const char *dir, const char *name, struct rollup *r)
{
	char path[4400];
	unsigned char *idx = NULL, *pk = NULL;
	size_t idxlen, pklen, i, n = 0;
	struct idxent *e = NULL;
	uint64_t *newoff = NULL;
	unsigned char *tgt = NULL;
	int rc;

	snprintf(path, sizeof(path), "%s/%s.idx", dir, name);
	if ((rc = read_whole(path, &idx, &idxlen)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/%s.pack", dir, name);
	if ((rc = read_whole(path, &pk, &pklen)) < 0)
		goto done;
	if (pklen < 32) {
		rc = opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", name);
		goto done;
	}
	if ((rc = idx_entries(name, idx, idxlen, &e, &n)) < 0)
		goto done;
	newoff = malloc((n ? n : 1) * sizeof(*newoff));
	tgt = malloc(n ? n : 1);
	if (!newoff || !tgt) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = rollup_entry(r, name, pk, pklen, e, n, i, newoff, tgt);
done:
	free(tgt);
	free(newoff);
	free(e);
	free(pk);
	free(idx);
	return rc;
}

/* How many of the n packs of v (sorted by count, smallest first) to roll
 * up into one: all when forced; else git's geometric rule (factor 2):
 * from the largest pack down, find where the progression breaks; roll up
 * everything below, then every larger pack that is not twice the
 * roll-up. */
static size_t roll_split(const struct packinfo *v, size_t n, int force)
{
	uint64_t total = 0;
	size_t i, split;

	if (force)
		return n;
	for (i = n - 1; i > 0; i--)
		if ((uint64_t)v[i].count < 2 * (uint64_t)v[i - 1].count)
			break;
	split = i;
	for (i = 0; i < split; i++)
		total += v[i].count;
	for (i = split; i < n && split > 0; i++) {
		if ((uint64_t)v[i].count >= 2 * total)
			break;
		split++;
		total += v[i].count;
	}
	return split;
}

/* The repack lock: beside the store's other files of ours, not in
 * objects/pack, where git count-objects calls any other file garbage.
 * Stores of earlier versions have it in objects/pack (dir): take that one
 * too (an earlier program may be repacking), then remove it.  The lock's
 * fd, or -1 when another holds it. */
static int repack_lock(git_repository *repo, const char *dir)
{
	char lock[4200], path[4400];
	int fd, old;

	snprintf(lock, sizeof(lock), "%sopt-repack.lock", git_repository_path(repo)); /* path ends in / */
	if ((fd = take_lock(lock)) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/opt-repack.lock", dir);
	if (access(path, F_OK) == 0) {
		if ((old = take_lock(path)) < 0) {
			close(fd);
			return -1;
		}
		unlink(path);
		close(old);
	}
	return fd;
}

/* The new pack holds every object of the first split packs of v: the old
 * ones can go (unless it is one of them: the same objects make the same
 * pack; or kept by someone). */
static void remove_rolled(const char *dir, const struct packinfo *v, size_t split, const struct opt_pack *p)
{
	static const char *ext[] = { ".keep", ".idx", ".pack", ".rev" };
	const char *nm = opt_pack_last_name(p);
	char path[4400];
	size_t k, e;

	for (k = 0; k < split; k++) {
		if (nm && strcmp(nm, v[k].name) == 0)
			continue;
		for (e = 0; e < sizeof(ext) / sizeof(*ext); e++) {
			snprintf(path, sizeof(path), "%s/%s%s", dir, v[k].name, ext[e]);
			if (e == 0 && access(path, F_OK) == 0)
				break; /* kept by someone: leave it */
			unlink(path);
		}
	}
}

/* The most bytes of packs one roll-up copies (gc's aside): with the
 * biggest pack it reads (under half of it) and the process's own ~18 MB,
 * a put that happens to roll up stays under 32 MB. */
#define ROLL_MAX (6u << 20)

int opt_pack_consolidate(git_repository *repo, int force)
{
	char dir[4096], objdir[4096];
	struct packinfo *v = NULL;
	size_t n, i, k = 0, split = 0;
	struct rollup r = { NULL, NULL, NULL, NULL, NULL };
	uint64_t total = 0;
	int rc = 0, lockfd = -1;

	snprintf(objdir, sizeof(objdir), "%s/objects", git_repository_path(repo));
	snprintf(dir, sizeof(dir), "%s/objects/pack", git_repository_path(repo));
	if ((rc = list_packs(dir, &v, &n)) < 0)
		return rc;
	/* a cruft pack (opt-block gc's) keeps its objects' times: only gc
	 * rolls it */
	for (i = k = 0; i < n; i++)
		if (!v[i].cruft)
			v[k++] = v[i];
	n = k;
	/* a roll-up is paid for by the writer that happens to start it, in
	 * time and memory (the packs are read, the new one is built in
	 * memory): one that copied the whole store made that writer's cost
	 * grow with the store.  Packs of ROLL_MAX/2 bytes or more stay as
	 * they are, and a roll-up writes at most ROLL_MAX (a store holds
	 * about one pack per ROLL_MAX/2 to ROLL_MAX of its size, plus a few
	 * small ones);
	 * gc (force) rolls up everything */
	if (!force) {
		for (i = k = 0; i < n; i++)
			if (v[i].bytes < ROLL_MAX / 2)
				v[k++] = v[i];
		n = k;
	}
	/* a few packs cost nothing to read through: leave them */
	if (n < 2 || (!force && n < 8))
		goto done;
	qsort(v, n, sizeof(*v), cmp_count);
	split = roll_split(v, n, force);
	for (i = 0; i < split && (force || total + (uint64_t)v[i].bytes <= ROLL_MAX); i++)
		total += (uint64_t)v[i].bytes;
	split = i;
	if (split < 2 || (lockfd = repack_lock(repo, dir)) < 0)
		goto done;
	if (git_repository_odb(&r.odb, repo) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot open object database");
		goto done;
	}
	/* the new pack's buffer at its size at once: grown by doubling, it
	 * held up to twice that while moving */
	if ((rc = opt_pack_new(&r.pack)) < 0 || (total < SIZE_MAX / 2 && (rc = grow(r.pack, (size_t)total)) < 0))
		goto done;
	for (k = 0; k < split && rc == 0; k++)
		rc = rollup_pack(dir, v[k].name, &r);
	if (rc == 0)
		rc = opt_pack_write(r.pack, NULL, objdir);
	if (rc == 0) {
		remove_rolled(dir, v, split, r.pack);
		git_odb_refresh(r.odb);
	}
done:
	if (lockfd >= 0)
		close(lockfd);
	opt_pack_free(r.pack);
	git_odb_free(r.odb);
	free(v);
	return rc;
}

/* ---- gc ---- */

/* The consolidation lock, for gc: waited for up to timeout_ms. */
int opt_pack_lock(git_repository *repo, long timeout_ms, int *fd)
{
	char path[4200];
	int64_t deadline = 0;
	struct timespec ts;

	/* (the lock consolidation takes: beside the store's files, not in
	 * objects/pack; see opt_pack_consolidate) */
	snprintf(path, sizeof(path), "%sopt-repack.lock", git_repository_path(repo)); /* path ends in / */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	for (;;) {
		*fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
		if (*fd < 0)
			return opt_error_set(OPT_EIO, "cannot lock the store's packs ('%s'): %s", path, strerror(errno));
		if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
			/* a store of an earlier version has the lock in
			 * objects/pack: take that one too (an earlier program
			 * may be repacking), then remove it */
			char old[4200];
			int ofd;
			snprintf(old, sizeof(old), "%sobjects/pack/opt-repack.lock", git_repository_path(repo));
			if (access(old, F_OK) != 0)
				return 0;
			if ((ofd = take_lock(old)) >= 0) {
				unlink(old);
				close(ofd);
				return 0;
			}
		}
		close(*fd);
		*fd = -1;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= deadline)
			return opt_error_set(OPT_EBUSY, "the store's packs are being rolled up by another process ('%s' is "
					     "locked)", path);
		usleep(20000);
	}
}

void opt_pack_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

static size_t oidset_slot(const git_oid *id, size_t cap)
{
	size_t h;

	memcpy(&h, id->id, sizeof(h));
	return h & (cap - 1);
}

int opt_oidset_add(struct opt_oidset *s, const git_oid *id)
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 4096, k;
		git_oid *nv = calloc(ncap, sizeof(*nv));
		OPT_CHECK_ALLOC(nv);
		for (k = 0; k < s->cap; k++) {
			if (git_oid_is_zero(&s->v[k]))
				continue;
			for (i = oidset_slot(&s->v[k], ncap); !git_oid_is_zero(&nv[i]); i = (i + 1) & (ncap - 1))
				;
			nv[i] = s->v[k];
		}
		free(s->v);
		s->v = nv;
		s->cap = ncap;
	}
	for (i = oidset_slot(id, s->cap); !git_oid_is_zero(&s->v[i]); i = (i + 1) & (s->cap - 1))
		if (git_oid_equal(&s->v[i], id))
			return 0;
	s->v[i] = *id;
	s->n++;
	return 1;
}

int opt_oidset_has(const struct opt_oidset *s, const git_oid *id)
{
	size_t i;

	if (!s->cap)
		return 0;
	for (i = oidset_slot(id, s->cap); !git_oid_is_zero(&s->v[i]); i = (i + 1) & (s->cap - 1))
		if (git_oid_equal(&s->v[i], id))
			return 1;
	return 0;
}

void opt_oidset_clear(struct opt_oidset *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* Every object gc saw: where, and when it was last written. */
struct gobj {
	git_oid id;
	int64_t mtime;   /* the newest of its copies */
	unsigned where;  /* G_ bits */
};

#define G_PACKED 1  /* in a pack gc rolls */
#define G_LOOSE 2

struct gmap {
	struct gobj *v;
	size_t n, cap;
};

static struct gobj *gmap_get(struct gmap *m, const git_oid *id, int add)
{
	size_t i;

	if (add && (m->n + 1) * 2 > m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 4096, k;
		struct gobj *nv = calloc(ncap, sizeof(*nv));
		if (!nv)
			return NULL;
		for (k = 0; k < m->cap; k++) {
			if (git_oid_is_zero(&m->v[k].id))
				continue;
			for (i = oidset_slot(&m->v[k].id, ncap); !git_oid_is_zero(&nv[i].id); i = (i + 1) & (ncap - 1))
				;
			nv[i] = m->v[k];
		}
		free(m->v);
		m->v = nv;
		m->cap = ncap;
	}
	if (!m->cap)
		return NULL;
	for (i = oidset_slot(id, m->cap); !git_oid_is_zero(&m->v[i].id); i = (i + 1) & (m->cap - 1))
		if (git_oid_equal(&m->v[i].id, id))
			return &m->v[i];
	if (!add)
		return NULL;
	m->v[i].id = *id;
	m->v[i].mtime = INT64_MIN;
	m->n++;
	return &m->v[i];
}

static int gmap_note(struct gmap *m, const git_oid *id, int64_t mtime, unsigned where)
{
	struct gobj *o = gmap_get(m, id, 1);

	OPT_CHECK_ALLOC(o);
	if (mtime > o->mtime)
		o->mtime = mtime;
	o->where |= where;
	return 0;
}

/* The process id in a temporary name at p (digits up to a '-', '_', '.'
 * or the end), or 0. */
static long name_pid(const char *p)
{
	long pid = 0;

	if (*p < '1' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9' && pid < 100000000)
		pid = pid * 10 + (*p++ - '0');
	return *p == '\0' || *p == '-' || *p == '_' || *p == '.' ? pid : 0;
}

static int pid_gone(long pid)
{
	return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int rm_tree_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The newest time of dir and what it holds (a few levels down). */
static int64_t newest_mtime(const char *dir, int64_t t, int depth)
{
	DIR *d;
	struct dirent *de;
	char path[4700];
	struct stat st;

	if (depth > 4 || !(d = opendir(dir)))
		return t;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) < 0)
			continue;
		if ((int64_t)st.st_mtime > t)
			t = (int64_t)st.st_mtime;
		if (S_ISDIR(st.st_mode))
			t = newest_mtime(path, t, depth + 1);
	}
	closedir(d);
	return t;
}

/* Remove what killed writers left in directory dir: temporary files
 * (ours "tmp_NAME_PID", git's "tmp_*", libgit2's "*_git2_*", a copy's
 * "*.tmp", a lock "*.lock" but the repack lock) untouched for an hour or
 * named for a process that is gone, and quarantines of fetches
 * (OPT_QUARANTINE_DIR_PREFIX "PID-...") whose process is gone (git's own
 * "tmp_objdir-*" when nothing in it changed for an hour). */
static int remove_temps(const char *dir, int64_t now, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : opt_error_set(OPT_EIO, "cannot read '%s': %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		const char *n = de->d_name, *u;
		char path[4700];
		struct stat st;
		size_t l = strlen(n);
		int quarantine = strncmp(n, "tmp_objdir-", 11) == 0, stale;
		long pid = 0;

		if (!(strncmp(n, "tmp_", 4) == 0 || strstr(n, "_git2_") || (l > 4 && strcmp(n + l - 4, ".tmp") == 0) ||
		      (l > 5 && strcmp(n + l - 5, ".lock") == 0 && strcmp(n, "opt-repack.lock") != 0)))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, n);
		if (lstat(path, &st) < 0)
			continue;
		if (strncmp(n, OPT_QUARANTINE_DIR_PREFIX, strlen(OPT_QUARANTINE_DIR_PREFIX)) == 0)
			pid = name_pid(n + strlen(OPT_QUARANTINE_DIR_PREFIX));
		else if (!quarantine && strncmp(n, "tmp_", 4) == 0 && (u = strrchr(n, '_')))
			pid = name_pid(u + 1);
		stale = pid ? pid_gone(pid)
			    : now - (S_ISDIR(st.st_mode) ? newest_mtime(path, (int64_t)st.st_mtime, 0) : (int64_t)st.st_mtime) >
				      OPT_GC_TEMP_AGE;
		if (!stale)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (!quarantine)
				continue;
			nftw(path, rm_tree_cb, 16, FTW_DEPTH | FTW_PHYS);
		} else if (unlink(path) < 0 && errno != ENOENT) {
			rc = opt_error_set(OPT_EIO, "cannot remove '%s': %s", path, strerror(errno));
			break;
		}
		(*count)++;
	}
	closedir(d);
	return rc;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Call fn for every loose object of objdir (its ID, path and time). */
static int foreach_loose(const char *objdir, int (*fn)(const git_oid *id, const char *path, int64_t mtime, void *arg),
			 void *arg)
{
	char sub[4200], path[4500];
	int i, rc = 0;

	for (i = 0; i < 256 && rc == 0; i++) {
		DIR *d;
		struct dirent *de;
		snprintf(sub, sizeof(sub), "%s/%02x", objdir, i);
		if (!(d = opendir(sub)))
			continue;
		while (rc == 0 && (de = readdir(d))) {
			git_oid id;
			struct stat st;
			int k, ok = strlen(de->d_name) == 38;
			id.id[0] = (unsigned char)i;
			for (k = 0; ok && k < 19; k++) {
				int hi = hexval(de->d_name[2 * k]), lo = hexval(de->d_name[2 * k + 1]);
				ok = hi >= 0 && lo >= 0;
				id.id[k + 1] = (unsigned char)(hi << 4 | lo);
			}
			if (!ok)
				continue;
			snprintf(path, sizeof(path), "%s/%.38s", sub, de->d_name);
			if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			rc = fn(&id, path, (int64_t)st.st_mtime, arg);
		}
		closedir(d);
	}
	return rc;
}

struct gc_ctx {
	const struct opt_pack_gc *g;
	struct gmap m;
	struct opt_pack *main, *cruft;
	git_odb *odb;
	struct opt_pack_gc_result *res;
	int pass;        /* foreach_loose: 0 note, 1 pack, 2 remove */
};

static int gc_classify(const git_oid *id, void *arg, uint32_t *mtime)
{
	struct gc_ctx *x = arg;
	struct gobj *o;

	if (x->g->reachable(id, x->g->arg))
		return ROLL_MAIN;
	o = gmap_get(&x->m, id, 0);
	*mtime = o && o->mtime > 0 ? (uint32_t)(o->mtime > UINT32_MAX ? UINT32_MAX : o->mtime) : 0;
	if (x->g->expire == INT64_MIN || (o && o->mtime >= x->g->expire))
		return ROLL_CRUFT;
	return ROLL_DROP;
}

static int gc_loose(const git_oid *id, const char *path, int64_t mtime, void *arg)
{
	struct gc_ctx *x = arg;
	struct gobj *o;
	int reach;

	if (x->pass == 0)
		return gmap_note(&x->m, id, mtime, G_LOOSE);
	o = gmap_get(&x->m, id, 0);
	reach = x->g->reachable(id, x->g->arg);
	if (x->pass == 1) {
		/* a reachable object only loose goes into the pack */
		git_odb_object *obj;
		int rc;
		if (!reach || (o && (o->where & G_PACKED)))
			return 0;
		if (git_odb_read(&obj, x->odb, id) < 0) {
			const git_error *ge = git_error_last();
			return opt_error_set(OPT_EINTEGRITY, "cannot read '%s' while packing: %s", path,
					     ge ? ge->message : "unknown");
		}
		rc = opt_pack_add(x->main, git_odb_object_type(obj), git_odb_object_data(obj), git_odb_object_size(obj),
				  NULL);
		git_odb_object_free(obj);
		return rc;
	}
	/* packed now (or before): the loose copy goes; unreachable and
	 * younger than the grace period: it stays as it is */
	if (!reach && !(o && (o->where & G_PACKED))) {
		if (x->g->expire == INT64_MIN || mtime >= x->g->expire) {
			x->res->unreachable++;
			return 0;
		}
		x->res->pruned++;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return opt_error_set(OPT_EIO, "cannot remove '%s': %s", path, strerror(errno));
	return 0;
}

/* The objects of pack name (its index) into m, each with time t or,
 * for a cruft pack, its own. */
static int gc_note_pack(struct gmap *m, const char *dir, const struct packinfo *pi)
{
	char path[4400];
	unsigned char *idx = NULL, *mt = NULL;
	size_t idxlen = 0, mtlen = 0, i, n;
	int rc;

	snprintf(path, sizeof(path), "%s/%s.idx", dir, pi->name);
	if ((rc = read_whole(path, &idx, &idxlen)) < 0)
		return rc;
	n = idxlen >= 8 + 1024 ? get32(idx + 8 + 255 * 4) : 0;
	if (idxlen < 8 + 1024 + n * 28 + 40 || memcmp(idx, "\377tOc\0\0\0\2", 8) != 0) {
		free(idx);
		return opt_error_set(OPT_EINTEGRITY, "pack '%s' has a damaged index", pi->name);
	}
	if (pi->cruft) {
		snprintf(path, sizeof(path), "%s/%s.mtimes", dir, pi->name);
		if (read_whole(path, &mt, &mtlen) < 0 || mtlen < 12 + 4 * n + 40 || memcmp(mt, "MTME", 4) != 0) {
			free(mt);
			mt = NULL;  /* the pack's own time, then */
			opt_error_clear();
		}
	}
	for (i = 0, rc = 0; i < n && rc == 0; i++) {
		git_oid id;
		memcpy(id.id, idx + 8 + 1024 + 20 * i, 20);
		rc = gmap_note(m, &id, mt ? (int64_t)get32(mt + 12 + 4 * i) : pi->mtime, G_PACKED);
	}
	free(mt);
	free(idx);
	return rc;
}

/* What killed writers left, in objdir, its pack directory and its
 * loose object directories. */
static int gc_remove_temps(const char *objdir, const char *dir, int64_t now, size_t *count)
{
	char path[4400];
	size_t i;
	int rc;

	if ((rc = remove_temps(objdir, now, count)) < 0 || (rc = remove_temps(dir, now, count)) < 0)
		return rc;
	for (i = 0; i < 256 && rc == 0; i++) {
		snprintf(path, sizeof(path), "%s/%02x", objdir, (unsigned)i);
		rc = remove_temps(path, now, count);
	}
	return rc;
}

/* What a gc finds: the packs it may rewrite, and what it would do. */
struct gc_survey {
	size_t nroll, ncruft, drop, unreach, loose_work;
};

/* Every object, and when it was written last (.keep packs are left as
 * they are): into x->m, counted in *sv. */
static int gc_note(struct gc_ctx *x, const struct packinfo *v, size_t n, const char *dir, const char *objdir,
		   struct gc_survey *sv)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		if (v[i].keep)
			continue;
		sv->nroll++;
		sv->ncruft += v[i].cruft;
		rc = gc_note_pack(&x->m, dir, &v[i]);
	}
	if (rc < 0 || (rc = foreach_loose(objdir, gc_loose, x)) < 0)
		return rc;
	for (i = 0; i < x->m.cap; i++) {
		struct gobj *o = &x->m.v[i];
		uint32_t mt;
		int t;
		if (git_oid_is_zero(&o->id))
			continue;
		t = gc_classify(&o->id, x, &mt);
		if (o->where & G_LOOSE)
			sv->loose_work += t == ROLL_MAIN || t == ROLL_DROP || (o->where & G_PACKED);
		if (!(o->where & G_PACKED))
			continue;
		sv->drop += t == ROLL_DROP;
		sv->unreach += t == ROLL_CRUFT;
	}
	return 0;
}

/* The new packs: reachable objects in one, unreachable recent ones in a
 * cruft pack, from every pack not kept and the loose objects; written
 * (synced) before anything goes. */
static int gc_rewrite(struct gc_ctx *x, git_repository *repo, const struct packinfo *v, size_t n, const char *dir,
		      const char *objdir)
{
	struct rollup r;
	size_t i;
	int rc;

	memset(&r, 0, sizeof(r));
	if (git_repository_odb(&x->odb, repo) < 0)
		return opt_error_set(OPT_EIO, "cannot open object database");
	if ((rc = opt_pack_new(&x->main)) < 0 || (rc = opt_pack_new(&x->cruft)) < 0)
		return rc;
	x->cruft->mtimes = 1;
	r.pack = x->main;
	r.cruft = x->cruft;
	r.odb = x->odb;
	r.classify = gc_classify;
	r.arg = x;
	for (i = 0; i < n && rc == 0; i++)
		if (!v[i].keep)
			rc = rollup_pack(dir, v[i].name, &r);
	x->pass = 1;
	if (rc == 0)
		rc = foreach_loose(objdir, gc_loose, x);
	if (rc == 0)
		rc = opt_pack_write(x->main, NULL, objdir);
	if (rc == 0)
		rc = opt_pack_write(x->cruft, NULL, objdir);
	return rc;
}

/* Remove the packs the new ones replace (not kept, not the new ones). */
static int gc_remove_old(const struct gc_ctx *x, const struct packinfo *v, size_t n, const char *dir)
{
	static const char *ext[] = { ".idx", ".pack", ".rev", ".bitmap", ".mtimes" };
	const char *nm = opt_pack_last_name(x->main), *nc = opt_pack_last_name(x->cruft);
	char path[4400];
	size_t i, e;

	for (i = 0; i < n; i++) {
		if (v[i].keep || (nm && strcmp(nm, v[i].name) == 0) || (nc && strcmp(nc, v[i].name) == 0))
			continue;
		for (e = 0; e < sizeof(ext) / sizeof(*ext); e++) {
			snprintf(path, sizeof(path), "%s/%s%s", dir, v[i].name, ext[e]);
			if (unlink(path) < 0 && errno != ENOENT)
				return opt_error_set(OPT_EIO, "cannot remove '%s': %s", path, strerror(errno));
		}
	}
	return 0;
}

/* Nothing rewritten: the unreachable objects that stay (packed ones
 * counted in unreach, plus the loose ones). */
static size_t gc_unreachable(struct gc_ctx *x, size_t unreach)
{
	size_t i;

	for (i = 0; i < x->m.cap; i++) {
		struct gobj *o = &x->m.v[i];
		uint32_t mt;
		if (!git_oid_is_zero(&o->id) && !(o->where & G_PACKED) && gc_classify(&o->id, x, &mt) == ROLL_CRUFT)
			unreach++;
	}
	return unreach;
}

int opt_pack_gc(git_repository *repo, const struct opt_pack_gc *g, struct opt_pack_gc_result *res)
{
	char objdir[4096], dir[4200], path[4400];
	struct packinfo *v = NULL;
	struct gc_survey sv;
	struct gc_ctx x;
	size_t n = 0, i;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&x, 0, sizeof(x));
	memset(&sv, 0, sizeof(sv));
	x.g = g;
	x.res = res;
	snprintf(objdir, sizeof(objdir), "%sobjects", git_repository_path(repo));
	snprintf(dir, sizeof(dir), "%s/pack", objdir);
	if ((rc = gc_remove_temps(objdir, dir, g->now, &res->temporary)) < 0 || (rc = list_packs(dir, &v, &n)) < 0 ||
	    (rc = gc_note(&x, v, n, dir, objdir, &sv)) < 0)
		goto done;
	/* one pack of reachable objects and nothing else: nothing to do */
	if (sv.nroll - sv.ncruft <= 1 && sv.ncruft == 0 && sv.drop == 0 && sv.unreach == 0 && sv.loose_work == 0)
		goto done;
	if ((rc = gc_rewrite(&x, repo, v, n, dir, objdir)) < 0)
		goto done;
	res->pruned = sv.drop;
	res->unreachable = x.cruft->count;
	if ((rc = gc_remove_old(&x, v, n, dir)) < 0)
		goto done;
	x.pass = 2;
	if ((rc = foreach_loose(objdir, gc_loose, &x)) < 0)
		goto done;
	for (i = 0; i < 256; i++) {
		snprintf(path, sizeof(path), "%s/%02x", objdir, (unsigned)i);
		rmdir(path);  /* (only when empty) */
	}
	git_odb_refresh(x.odb);
done:
	if (rc == 0 && !x.main)
		res->unreachable = gc_unreachable(&x, sv.unreach);
	opt_pack_free(x.main);
	opt_pack_free(x.cruft);
	git_odb_free(x.odb);
	free(x.m.v);
	free(v);
	return rc;
}
