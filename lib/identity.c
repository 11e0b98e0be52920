#include "identity.h"
#include "error.h"
#include "json.h"
#include "pack.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(crypto_sign_PUBLICKEYBYTES == 32 && crypto_sign_SECRETKEYBYTES == 64 &&
	       crypto_sign_BYTES == 64, "Ed25519 sizes");

static int unhex(unsigned char *out, size_t n, const char *hex)
{
	size_t bin = 0;

	if (!hex || strlen(hex) != 2 * n)
		return -1;
	if (sodium_hex2bin(out, n, hex, 2 * n, NULL, &bin, NULL) < 0 || bin != n)
		return -1;
	return 0;
}

int opt_key_hex_valid(const char *s)
{
	size_t i;

	if (!s || strlen(s) != OPT_KEY_HEX)
		return 0;
	for (i = 0; i < OPT_KEY_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static void path_of(char *buf, size_t n, struct opt_store *s, const char *file)
{
	snprintf(buf, n, "%s/%s", opt_store_path(s), file);
}

/* Read the regular file path (at most max bytes) into *out (malloc'd,
 * NUL-terminated): 0; 1 when it does not exist; -1 with errno (EINVAL for
 * something that is not a regular file: a FIFO, a device, a symlink,
 * which are never waited on or followed; EFBIG when too large). */
static int read_regular(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *b = NULL;
	size_t n = 0;
	ssize_t r;
	int fd, e;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			return 1;
		if (errno == ELOOP)
			errno = EINVAL;
		return -1;
	}
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	if ((uint64_t)st.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	if (!(b = malloc(max + 1)))
		goto fail;
	while (n < max && (r = read(fd, b + n, max - n)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		n += (size_t)r;
	}
	close(fd);
	b[n] = '\0';
	*out = b;
	if (len)
		*len = n;
	return 0;
fail:
	e = errno;
	if (b) {
		sodium_memzero(b, max + 1);
		free(b);
	}
	close(fd);
	errno = e;
	return -1;
}

static const char *read_error(void)
{
	return errno == EINVAL ? "not a regular file" : errno == EFBIG ? "too large" : strerror(errno);
}

/* Write the public key file beside the identity (mode 0644): best effort,
 * a read-only store keeps working without it. */
static void write_public(const char *path, const char *pub)
{
	char file[4200], tmp[4300], line[OPT_KEY_HEX + 2];
	int fd, ok;

	snprintf(file, sizeof(file), "%s.pub", path);
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", file, (long)getpid());
	snprintf(line, sizeof(line), "%s\n", pub);
	if ((fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644)) < 0)
		return;
	ok = write(fd, line, strlen(line)) == (ssize_t)strlen(line) && fchmod(fd, 0644) == 0 &&
	     (!opt_pack_fsync_enabled() || fsync(fd) == 0);
	if (close(fd) < 0)
		ok = 0;
	if (!ok || rename(tmp, file) < 0)
		unlink(tmp);
}

/* The key of the public key file at path: 0 (key set), 1 (no such file),
 * or -1 with errno (EBADMSG: not a key). */
static int read_public(const char *path, char key[OPT_KEY_HEX + 1])
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_regular(path, 256, &text, &len);

	if (rc != 0)
		return rc;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
		text[--len] = '\0';
	if (!opt_key_hex_valid(text)) {
		free(text);
		errno = EBADMSG;
		return -1;
	}
	memcpy(key, text, OPT_KEY_HEX + 1);
	free(text);
	return 0;
}

int opt_identity_public_at(const char *dir, char key[OPT_KEY_HEX + 1])
{
	char path[4200], *text = NULL;
	json_t *j;
	const char *pk;
	int rc;

	key[0] = '\0';
	snprintf(path, sizeof(path), "%s/opt-identity.pub", dir);
	if ((rc = read_public(path, key)) == 0)
		return 0;
	if (rc < 0)
		return opt_error_set(OPT_EINTEGRITY, "cannot read the store's public key '%s': %s", path,
				     errno == EBADMSG ? "not a key" : read_error());
	/* a store made before the public key had a file of its own: its
	 * identity file, where the owner may read it (the secret half is
	 * wiped at once) */
	snprintf(path, sizeof(path), "%s/opt-identity", dir);
	rc = read_regular(path, 4096, &text, NULL);
	if (rc == 1)
		return 0;
	if (rc < 0) {
		if (errno == EACCES)
			return 0;
		return opt_error_set(OPT_EINTEGRITY, "cannot read the store's identity '%s': %s", opt_esc(path), read_error());
	}
	j = json_loads(text, 0, NULL);
	sodium_memzero(text, strlen(text));
	free(text);
	pk = json_string_value(json_object_get(j, "public"));
	if (pk && opt_key_hex_valid(pk))
		snprintf(key, OPT_KEY_HEX + 1, "%s", pk);
	if (j) {
		const char *sk = json_string_value(json_object_get(j, "secret"));
		if (sk)
			sodium_memzero((void *)sk, strlen(sk));
	}
	json_decref(j);
	return 0;
}

int opt_identity_get(struct opt_identity *out, struct opt_store *s, int create)
{
	char path[4096], tmp[4200], pubpath[4200], skhex[129], *text = NULL;
	struct stat st;
	json_t *j;
	json_error_t err;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	if ((rc = opt_util_init()) < 0)
		return rc;
	path_of(path, sizeof(path), s, "opt-identity");
	rc = read_regular(path, 4096, &text, NULL);
	if (rc < 0)
		return opt_error_set(OPT_EINTEGRITY, "cannot read the store's identity '%s': %s", opt_esc(path), read_error());
	if (rc == 0 && stat(path, &st) == 0 && (st.st_mode & 077)) {
		/* as ssh does with a private key others may read: not used */
		sodium_memzero(text, strlen(text));
		free(text);
		return opt_error_set(OPT_EIO, "the store's secret key '%s' may be read by others (mode %04o): not used; "
				     "make it readable by its owner only (chmod 600 '%s')", opt_esc(path),
				     (unsigned)(st.st_mode & 07777), opt_esc(path));
	}
	if (rc == 0) {
		const char *pk, *sk;
		j = json_loads(text, 0, &err);
		sodium_memzero(text, strlen(text));
		free(text);
		if (!j)
			return opt_error_set(OPT_EINTEGRITY, "cannot read the store's identity '%s': %s", opt_esc(path), opt_esc(err.text));
		pk = json_string_value(json_object_get(j, "public"));
		sk = json_string_value(json_object_get(j, "secret"));
		if (unhex(out->pk, 32, pk) < 0 || unhex(out->sk, 64, sk) < 0 ||
		    memcmp(out->sk + 32, out->pk, 32) != 0)
			rc = opt_error_set(OPT_EINTEGRITY, "the store's identity file '%s' is damaged", path);
		else
			snprintf(out->pub, sizeof(out->pub), "%s", pk);
		if (sk)
			sodium_memzero((void *)sk, strlen(sk));
		json_decref(j);
		if (rc == 0) {
			/* the public half, for peers that must not read the
			 * secret one (a store made before it had this file
			 * gets it now) */
			char have[OPT_KEY_HEX + 1];
			snprintf(pubpath, sizeof(pubpath), "%s.pub", path);
			if (read_public(pubpath, have) != 0 || strcmp(have, out->pub) != 0)
				write_public(path, out->pub);
		}
		return rc;
	}
	if (!create)
		return opt_error_set(OPT_ENOTFOUND, "the store has no identity yet");
	crypto_sign_keypair(out->pk, out->sk);
	sodium_bin2hex(out->pub, sizeof(out->pub), out->pk, 32);
	sodium_bin2hex(skhex, sizeof(skhex), out->sk, 64);
	j = json_pack("{s:s,s:s}", "public", out->pub, "secret", skhex);
	sodium_memzero(skhex, sizeof(skhex));
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0 || json_dumpfd(j, fd, JSON_COMPACT) < 0 || fsync(fd) < 0) {
		rc = opt_error_set(OPT_EIO, "cannot write the store's identity '%s': %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		json_decref(j);
		return rc;
	}
	close(fd);
	json_decref(j);
	/* two processes may race to create it: the first link wins and the
	 * loser reads the winner's */
	if (link(tmp, path) < 0) {
		unlink(tmp);
		if (errno == EEXIST)
			return opt_identity_get(out, s, 0);
		return opt_error_set(OPT_EIO, "cannot write the store's identity '%s': %s", path, strerror(errno));
	}
	unlink(tmp);
	write_public(path, out->pub);
	return 0;
}

int opt_identity_sign(const struct opt_identity *id, const char *msg, char sig[OPT_SIG_HEX + 1])
{
	unsigned char s[64];

	if (crypto_sign_detached(s, NULL, (const unsigned char *)msg, strlen(msg), id->sk) < 0)
		return opt_error_set(OPT_EIO, "cannot sign");
	sodium_bin2hex(sig, OPT_SIG_HEX + 1, s, 64);
	return 0;
}

int opt_sig_verify(const char *pub, const char *msg, const char *sig)
{
	unsigned char pk[32], s[64];

	if (unhex(pk, 32, pub) < 0)
		return opt_error_set(OPT_EINTEGRITY, "author key is not 64 hex characters");
	if (unhex(s, 64, sig) < 0)
		return opt_error_set(OPT_EINTEGRITY, "signature is not 128 hex characters");
	if (crypto_sign_verify_detached(s, (const unsigned char *)msg, strlen(msg), pk) != 0)
		return opt_error_set(OPT_EINTEGRITY, "bad signature");
	return 0;
}

/* The trusted file: "<key> <name>\n" lines, and at most one line
 * "writers any" or "writers listed" (*mode 0 or 1; -1 without one: a file
 * written before the line existed, or by opt_trust_add alone).  Programs
 * before that line skip it (it begins with no key). */
static int trust_read_mode(struct opt_store *s, json_t **out, int *mode)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	json_t *arr = json_array();

	*out = NULL;
	*mode = -1;
	path_of(path, sizeof(path), s, "opt-trusted");
	f = fopen(path, "r");
	if (!f) {
		if (errno != ENOENT) {
			json_decref(arr);
			return opt_error_set(OPT_EIO, "cannot read '%s': %s", path, strerror(errno));
		}
		*out = arr;
		return 0;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		char *sp;
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (strcmp(line, "writers any") == 0 || strcmp(line, "writers listed") == 0) {
			*mode = line[8] == 'l';
			continue;
		}
		sp = strchr(line, ' ');
		if (sp)
			*sp++ = '\0';
		if (!opt_key_hex_valid(line))
			continue;
		json_array_append_new(arr, json_pack("{s:s,s:s}", "key", line, "name", sp ? sp : ""));
	}
	free(line);
	fclose(f);
	*out = arr;
	return 0;
}

static int trust_read(struct opt_store *s, json_t **out)
{
	int mode;

	return trust_read_mode(s, out, &mode);
}

static int trust_write(struct opt_store *s, const json_t *arr, int mode)
{
	char path[4096], tmp[4200];
	size_t i;
	FILE *f;
	int rc = 0;

	path_of(path, sizeof(path), s, "opt-trusted");
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	f = fopen(tmp, "w");
	if (!f)
		return opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if (mode >= 0)
		fprintf(f, "writers %s\n", mode ? "listed" : "any");
	for (i = 0; i < json_array_size(arr); i++) {
		const json_t *e = json_array_get(arr, i);
		fprintf(f, "%s %s\n", json_string_value(json_object_get(e, "key")),
			json_string_value(json_object_get(e, "name")));
	}
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if (fclose(f) != 0 && rc == 0)
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", tmp, strerror(errno));
	if (rc == 0 && rename(tmp, path) < 0)
		rc = opt_error_set(OPT_EIO, "cannot write '%s': %s", path, strerror(errno));
	if (rc < 0)
		unlink(tmp);
	return rc;
}

int opt_trust_list(struct opt_store *s, json_t **out)
{
	struct opt_identity id;
	int rc = trust_read(s, out);

	if (rc < 0)
		return rc;
	if (opt_identity_get(&id, s, 0) == 0 || (opt_identity_public_at(opt_store_path(s), id.pub) == 0 && id.pub[0]))
		json_array_insert_new(*out, 0, json_pack("{s:s,s:s,s:b}", "key", id.pub, "name", "this store", "self", 1));
	opt_error_clear();
	sodium_memzero(&id, sizeof(id));
	return 0;
}

int opt_trust_has(struct opt_store *s, const char *key)
{
	json_t *arr;
	size_t i;
	int found = 0;

	if (opt_trust_list(s, &arr) < 0)
		return 0;
	for (i = 0; i < json_array_size(arr) && !found; i++)
		found = strcmp(json_string_value(json_object_get(json_array_get(arr, i), "key")), key) == 0;
	json_decref(arr);
	return found;
}

int opt_trust_add(struct opt_store *s, const char *key, const char *name)
{
	json_t *arr;
	size_t i;
	int rc, mode;

	if (!opt_key_hex_valid(key))
		return opt_error_set(OPT_EINVAL, "a key is 64 lowercase hex characters (as 'opt-log identity' prints), not '%.80s'", key);
	if (name && (strchr(name, '\n') || strlen(name) > OPT_TRUST_NAME_MAX))
		return opt_error_set(OPT_EINVAL, "a key's name is one line of at most 200 characters");
	{
		/* the store's own key is trusted already, and listed as such */
		struct opt_identity id;
		int self = opt_identity_get(&id, s, 0) == 0 && strcmp(id.pub, key) == 0;
		sodium_memzero(&id, sizeof(id));
		opt_error_clear();
		if (self)
			return 0;
	}
	if ((rc = trust_read_mode(s, &arr, &mode)) < 0)
		return rc;
	for (i = 0; i < json_array_size(arr); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "key")), key) == 0)
			break;
	if (i < json_array_size(arr))
		json_object_set_new(json_array_get(arr, i), "name", json_string(name ? name : ""));
	else
		json_array_append_new(arr, json_pack("{s:s,s:s}", "key", key, "name", name ? name : ""));
	rc = trust_write(s, arr, mode);
	json_decref(arr);
	return rc;
}

int opt_trust_remove(struct opt_store *s, const char *key)
{
	struct opt_identity id;
	json_t *arr;
	size_t i;
	int rc, mode;

	if (!opt_key_hex_valid(key))
		return opt_error_set(OPT_EINVAL, "a key is 64 lowercase hex characters (as 'opt-log identity' prints), not '%.80s'", key);
	if (opt_identity_get(&id, s, 0) == 0 && strcmp(id.pub, key) == 0) {
		sodium_memzero(&id, sizeof(id));
		return opt_error_set(OPT_EINVAL, "the store's own key is always trusted");
	}
	sodium_memzero(&id, sizeof(id));
	opt_error_clear();
	if ((rc = trust_read_mode(s, &arr, &mode)) < 0)
		return rc;
	for (i = 0; i < json_array_size(arr); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "key")), key) == 0)
			break;
	if (i == json_array_size(arr)) {
		json_decref(arr);
		return opt_error_set(OPT_ENOTFOUND, "key '%.80s' is not trusted", key);
	}
	json_array_remove(arr, i);
	rc = trust_write(s, arr, mode);
	json_decref(arr);
	return rc;
}

int opt_trust_restricted(struct opt_store *s)
{
	json_t *arr;
	int rc, mode;

	if ((rc = trust_read_mode(s, &arr, &mode)) < 0)
		return rc;
	rc = mode >= 0 ? mode : json_array_size(arr) > 0;
	json_decref(arr);
	return rc;
}

int opt_trust_restrict(struct opt_store *s, int on)
{
	json_t *arr;
	int rc, mode;

	if ((rc = trust_read_mode(s, &arr, &mode)) < 0)
		return rc;
	rc = mode == !!on ? 0 : trust_write(s, arr, !!on);
	json_decref(arr);
	return rc;
}
