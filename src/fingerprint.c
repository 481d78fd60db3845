/*
 * fingerprint.c
 *		idem_fingerprint(): a stable hash of a request body.
 *
 * The jsonb value is walked in its canonical order (object keys sorted,
 * duplicates removed) and each token is fed to SHA-256 with a tag and a
 * length, so that equal jsonb values hash equal and different structures
 * cannot collide by concatenation.  Numbers are hashed in their normalised
 * form, so 1.0 and 1 (which jsonb holds equal) hash equal.
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "port/pg_bswap.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(idem_fingerprint);

/* Feed bytes to the hash, or fail */
static void
hash_bytes_in(pg_cryptohash_ctx *ctx, const void *data, size_t len)
{
	if (pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0)
		elog(ERROR, "could not update SHA-256 hash: %s", pg_cryptohash_error(ctx));
}

/* Feed a tag byte, then a length-prefixed string */
static void
hash_token(pg_cryptohash_ctx *ctx, char tag, const char *data, uint32 len)
{
	hash_bytes_in(ctx, &tag, 1);
	if (data != NULL)
	{
		uint32		be = pg_hton32(len);

		hash_bytes_in(ctx, &be, sizeof(be));
		hash_bytes_in(ctx, data, len);
	}
}

/* Feed one scalar */
static void
hash_scalar(pg_cryptohash_ctx *ctx, JsonbValue *v)
{
	char	   *num;

	switch (v->type)
	{
		case jbvNull:
			hash_token(ctx, 'n', NULL, 0);
			break;
		case jbvBool:
			hash_token(ctx, v->val.boolean ? 't' : 'f', NULL, 0);
			break;
		case jbvString:
			hash_token(ctx, 's', v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			num = numeric_normalize(v->val.numeric);
			hash_token(ctx, 'd', num, strlen(num));
			pfree(num);
			break;
		default:
			elog(ERROR, "unexpected jsonb scalar type %d", (int) v->type);
	}
}

/*
 * idem_fingerprint(request jsonb) returns text: 64 hexadecimal digits
 */
Datum
idem_fingerprint(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	pg_cryptohash_ctx *ctx;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	int			i;

	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialize SHA-256 hash: %s", pg_cryptohash_error(ctx));

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
				hash_token(ctx, '{', NULL, 0);
				break;
			case WJB_END_OBJECT:
				hash_token(ctx, '}', NULL, 0);
				break;
			case WJB_BEGIN_ARRAY:
				/* a top-level scalar is a one-element "raw scalar" array */
				hash_token(ctx, v.val.array.rawScalar ? '!' : '[', NULL, 0);
				break;
			case WJB_END_ARRAY:
				hash_token(ctx, ']', NULL, 0);
				break;
			case WJB_KEY:
				hash_token(ctx, 'k', v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				hash_scalar(ctx, &v);
				break;
			default:
				elog(ERROR, "unexpected jsonb token %d", (int) tok);
		}
	}

	if (pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not finalize SHA-256 hash: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);

	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + i * 2, 3, "%02x", digest[i]);
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}
