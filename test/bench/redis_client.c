/*
 * redis_client.c
 *		Baseline (d) of the benchmark: idempotency keys in Redis beside
 *		PostgreSQL, as an application would do it.
 *
 * pgbench cannot speak Redis, so this client plays the application: each of
 * its threads holds one PostgreSQL connection (libpq, prepared statement) and
 * one Redis connection (hiredis), and per request runs
 *
 *	new:		SET key "in_progress" NX EX ttl; INSERT the order in PostgreSQL
 *				(its own transaction); SET key response XX EX ttl
 *	nocomplete:	SET key "in_progress" NX EX ttl; INSERT the order
 *	replay:		GET key (of keys loaded beforehand)
 *	load:		store nkeys completed keys, pipelined, then exit
 *
 * The key and the order are not written atomically: a crash between the two
 * loses one or the other.  That is the point of the comparison.
 *
 * It prints "requests N", "duration S" and "tps X", and writes one request
 * latency in microseconds per line to the log file.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#define TTL_SECONDS 86400

typedef enum Mode
{
	MODE_NEW,
	MODE_NOCOMPLETE,
	MODE_REPLAY,
	MODE_LOAD
} Mode;

typedef struct Worker
{
	int			id;
	pthread_t	thread;
	PGconn	   *pg;
	redisContext *redis;
	uint64_t	rng;
	uint32_t   *lat;			/* latencies in microseconds */
	size_t		nlat;
	size_t		cap;
	long		errors;
} Worker;

static Mode mode;
static const char *pg_conninfo;
static const char *redis_host = "127.0.0.1";
static int	redis_port;
static long nkeys = 100000;
static double duration = 10;
static double deadline;
static pthread_barrier_t start_barrier;

/* Monotonic time in seconds */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Print a message and exit */
static void
die(const char *msg, const char *detail)
{
	fprintf(stderr, "redis_client: %s%s%s\n", msg, detail ? ": " : "",
			detail ? detail : "");
	exit(1);
}

/* xorshift64*: a fast per-thread random number */
static uint64_t
next_random(Worker *w)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * UINT64_C(2685821657736338717);
}

/* Remember one latency */
static void
record(Worker *w, double seconds)
{
	if (w->nlat == w->cap)
	{
		w->cap = w->cap ? w->cap * 2 : 65536;
		w->lat = realloc(w->lat, w->cap * sizeof(uint32_t));
		if (w->lat == NULL)
			die("out of memory", NULL);
	}
	w->lat[w->nlat++] = (uint32_t) (seconds * 1e6);
}

/* Run one Redis command; fail on a connection error */
static redisReply *
redis_cmd(Worker *w, const char *fmt, const char *key, const char *value)
{
	redisReply *reply = value ? redisCommand(w->redis, fmt, key, value, TTL_SECONDS)
		: redisCommand(w->redis, fmt, key);

	if (reply == NULL)
		die("redis error", w->redis->errstr);
	return reply;
}

/* The business write: insert the order, return its id */
static long long
insert_order(Worker *w, const char *key)
{
	char		customer[16];
	const char *params[2];
	PGresult   *res;
	long long	id;

	snprintf(customer, sizeof(customer), "%d", (int) (next_random(w) % 100000) + 1);
	params[0] = customer;
	params[1] = key;
	res = PQexecPrepared(w->pg, "order", 2, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		die("insert failed", PQerrorMessage(w->pg));
	id = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return id;
}

/* One request of the chosen mode */
static void
one_request(Worker *w)
{
	char		key[48];
	char		response[96];
	redisReply *reply;
	long long	id;

	if (mode == MODE_REPLAY)
	{
		snprintf(key, sizeof(key), "idem:%ld", (long) (next_random(w) % nkeys) + 1);
		reply = redis_cmd(w, "GET %s", key, NULL);
		if (reply->type != REDIS_REPLY_STRING)
			w->errors++;
		freeReplyObject(reply);
		return;
	}

	snprintf(key, sizeof(key), "idem:%" PRIu64, next_random(w) >> 1);
	reply = redis_cmd(w, "SET %s %s NX EX %d", key, "in_progress");
	if (reply->type != REDIS_REPLY_STATUS)
	{
		/* taken already: a random 63-bit key should never be */
		w->errors++;
		freeReplyObject(reply);
		return;
	}
	freeReplyObject(reply);

	id = insert_order(w, key + 5);

	if (mode == MODE_NEW)
	{
		snprintf(response, sizeof(response),
				 "{\"order_id\": %lld, \"status\": \"created\"}", id);
		reply = redis_cmd(w, "SET %s %s XX EX %d", key, response);
		freeReplyObject(reply);
	}
}

/* A worker thread: connect, wait for the others, run until the deadline */
static void *
worker_main(void *arg)
{
	Worker	   *w = (Worker *) arg;

	pthread_barrier_wait(&start_barrier);
	while (now_seconds() < deadline)
	{
		double		t0 = now_seconds();

		one_request(w);
		record(w, now_seconds() - t0);
	}
	return NULL;
}

/* Store keys 1..nkeys as completed, pipelined */
static void
load_keys(redisContext *redis)
{
	long		i;
	long		pending = 0;
	char		key[48];
	char		response[96];
	redisReply *reply;

	for (i = 1; i <= nkeys; i++)
	{
		snprintf(key, sizeof(key), "idem:%ld", i);
		snprintf(response, sizeof(response),
				 "{\"order_id\": %ld, \"status\": \"created\"}", i);
		redisAppendCommand(redis, "SET %s %s EX %d", key, response, TTL_SECONDS);
		if (++pending == 1000 || i == nkeys)
		{
			while (pending-- > 0)
			{
				if (redisGetReply(redis, (void **) &reply) != REDIS_OK)
					die("redis error", redis->errstr);
				freeReplyObject(reply);
			}
			pending = 0;
		}
	}
}

/* Connect to Redis on loopback */
static redisContext *
redis_connect(void)
{
	redisContext *redis = redisConnect(redis_host, redis_port);

	if (redis == NULL || redis->err)
		die("could not connect to redis", redis ? redis->errstr : NULL);
	return redis;
}

int
main(int argc, char **argv)
{
	int			clients = 8;
	const char *logfile = NULL;
	Worker	   *workers;
	double		started;
	double		elapsed;
	long		total = 0;
	long		errors = 0;
	int			opt;
	int			i;

	while ((opt = getopt(argc, argv, "m:c:T:d:p:n:l:")) != -1)
	{
		switch (opt)
		{
			case 'm':
				if (strcmp(optarg, "new") == 0)
					mode = MODE_NEW;
				else if (strcmp(optarg, "nocomplete") == 0)
					mode = MODE_NOCOMPLETE;
				else if (strcmp(optarg, "replay") == 0)
					mode = MODE_REPLAY;
				else if (strcmp(optarg, "load") == 0)
					mode = MODE_LOAD;
				else
					die("unknown mode", optarg);
				break;
			case 'c':
				clients = atoi(optarg);
				break;
			case 'T':
				duration = atof(optarg);
				break;
			case 'd':
				pg_conninfo = optarg;
				break;
			case 'p':
				redis_port = atoi(optarg);
				break;
			case 'n':
				nkeys = atol(optarg);
				break;
			case 'l':
				logfile = optarg;
				break;
			default:
				die("usage: redis_client -m new|nocomplete|replay|load -p redis_port "
					"[-d conninfo] [-c clients] [-T seconds] [-n nkeys] [-l logfile]", NULL);
		}
	}
	if (redis_port <= 0 || clients <= 0 || nkeys <= 0)
		die("bad arguments", NULL);

	if (mode == MODE_LOAD)
	{
		redisContext *redis = redis_connect();

		load_keys(redis);
		redisFree(redis);
		printf("loaded %ld\n", nkeys);
		return 0;
	}
	if (pg_conninfo == NULL && mode != MODE_REPLAY)
		die("-d conninfo is needed", NULL);

	workers = calloc(clients, sizeof(Worker));
	pthread_barrier_init(&start_barrier, NULL, clients + 1);
	for (i = 0; i < clients; i++)
	{
		Worker	   *w = &workers[i];

		w->id = i;
		w->rng = (UINT64_C(0x9E3779B97F4A7C15) * (i + 1)) ^ (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 20);
		if (w->rng == 0)
			w->rng = 1;
		w->redis = redis_connect();
		if (mode != MODE_REPLAY)
		{
			PGresult   *res;

			w->pg = PQconnectdb(pg_conninfo);
			if (PQstatus(w->pg) != CONNECTION_OK)
				die("could not connect to postgres", PQerrorMessage(w->pg));
			res = PQprepare(w->pg, "order",
							"INSERT INTO orders (customer_id, amount, idem_key) "
							"VALUES ($1, 42.50, $2) RETURNING id", 2, NULL);
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				die("prepare failed", PQerrorMessage(w->pg));
			PQclear(res);
		}
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
			die("could not start a thread", strerror(errno));
	}

	started = now_seconds();
	deadline = started + duration;
	pthread_barrier_wait(&start_barrier);
	for (i = 0; i < clients; i++)
		pthread_join(workers[i].thread, NULL);
	elapsed = now_seconds() - started;

	if (logfile != NULL)
	{
		FILE	   *f = fopen(logfile, "w");

		if (f == NULL)
			die("could not open the log file", strerror(errno));
		for (i = 0; i < clients; i++)
			for (size_t j = 0; j < workers[i].nlat; j++)
				fprintf(f, "%u\n", workers[i].lat[j]);
		fclose(f);
	}
	for (i = 0; i < clients; i++)
	{
		total += workers[i].nlat;
		errors += workers[i].errors;
		if (workers[i].pg)
			PQfinish(workers[i].pg);
		redisFree(workers[i].redis);
	}
	printf("requests %ld\nerrors %ld\nduration %.3f\ntps %.1f\n",
		   total, errors, elapsed, total / elapsed);
	return errors > 0 ? 2 : 0;
}
