#include "identity.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
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

int opt_identity_get(struct opt_identity *out, struct opt_store *s, int create)
{
	char path[4096], tmp[4200], skhex[129];
	json_t *j;
	json_error_t err;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	if ((rc = opt_util_init()) < 0)
		return rc;
	path_of(path, sizeof(path), s, "opt-identity");
	j = json_load_file(path, 0, &err);
	if (j) {
		const char *pk = json_string_value(json_object_get(j, "public"));
		const char *sk = json_string_value(json_object_get(j, "secret"));
		rc = 0;
		if (unhex(out->pk, 32, pk) < 0 || unhex(out->sk, 64, sk) < 0 ||
		    memcmp(out->sk + 32, out->pk, 32) != 0)
			rc = opt_error_set(OPT_EINTEGRITY, "the store's identity file '%s' is damaged", path);
		else
			snprintf(out->pub, sizeof(out->pub), "%s", pk);
		json_decref(j);
		return rc;
	}
	if (access(path, F_OK) == 0) {
		/* another process may have just made it: read it once more */
		json_t *again = json_load_file(path, 0, &err);
		if (again) {
			json_decref(again);
			return opt_identity_get(out, s, 0);
		}
		return opt_error_set(OPT_EINTEGRITY, "cannot read the store's identity '%s': %s", opt_esc(path), opt_esc(err.text));
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

/* The trusted file: "<key> <name>\n" lines. */
static int trust_read(struct opt_store *s, json_t **out)
{
	char path[4096], *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	json_t *arr = json_array();

	*out = NULL;
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

static int trust_write(struct opt_store *s, const json_t *arr)
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
	if (opt_identity_get(&id, s, 0) == 0)
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
	int rc;

	if (!opt_key_hex_valid(key))
		return opt_error_set(OPT_EINVAL, "a key is 64 lowercase hex characters (as 'opt-log identity' prints), not '%.80s'", key);
	if (name && (strchr(name, '\n') || strlen(name) > 200))
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
	if ((rc = trust_read(s, &arr)) < 0)
		return rc;
	for (i = 0; i < json_array_size(arr); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "key")), key) == 0)
			break;
	if (i < json_array_size(arr))
		json_object_set_new(json_array_get(arr, i), "name", json_string(name ? name : ""));
	else
		json_array_append_new(arr, json_pack("{s:s,s:s}", "key", key, "name", name ? name : ""));
	rc = trust_write(s, arr);
	json_decref(arr);
	return rc;
}

int opt_trust_remove(struct opt_store *s, const char *key)
{
	struct opt_identity id;
	json_t *arr;
	size_t i;
	int rc;

	if (!opt_key_hex_valid(key))
		return opt_error_set(OPT_EINVAL, "a key is 64 lowercase hex characters (as 'opt-log identity' prints), not '%.80s'", key);
	if (opt_identity_get(&id, s, 0) == 0 && strcmp(id.pub, key) == 0) {
		sodium_memzero(&id, sizeof(id));
		return opt_error_set(OPT_EINVAL, "the store's own key is always trusted");
	}
	sodium_memzero(&id, sizeof(id));
	opt_error_clear();
	if ((rc = trust_read(s, &arr)) < 0)
		return rc;
	for (i = 0; i < json_array_size(arr); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "key")), key) == 0)
			break;
	if (i == json_array_size(arr)) {
		json_decref(arr);
		return opt_error_set(OPT_ENOTFOUND, "key '%.80s' is not trusted", key);
	}
	json_array_remove(arr, i);
	rc = trust_write(s, arr);
	json_decref(arr);
	return rc;
}
