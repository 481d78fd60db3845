# shellcheck shell=bash disable=SC2034
# Shared by clients/test.sh and clients/bench.sh (sourced after scripts/lib.sh,
# from the repository's root): a copy of the clients that the test user may
# read, a throwaway PostgreSQL with the extension on loopback, PgBouncer in
# transaction pooling mode, and the commands that start each app server.

PY=/usr/bin/python3

# Install what the apps need; set dir, port, bport, aport, direct, pooled, apps
clients_setup() {
	: "${PG_CONFIG:?set PG_CONFIG to the pg_config of the PostgreSQL to run on}"
	export PG_CONFIG
	if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/idempotency.control" ]; then
		echo "the extension is not installed into $("$PG_CONFIG" --bindir)/..: run make install first" >&2
		exit 2
	fi
	ensure_test_user
	ensure_packages python3-psycopg python3-flask python3-django python3-fastapi python3-uvicorn \
		gunicorn pgbouncer "$@"
	command -v node >/dev/null || ensure_packages nodejs
	command -v npm >/dev/null || ensure_packages npm

	dir=$(mktemp -d /tmp/idempotency-clients.XXXXXX)
	port=$((20000 + RANDOM % 20000))
	bport=$((port + 1))
	aport=$((port + 2))
	trap clients_cleanup EXIT

	# a copy the test user may read and write (the checkout may be under /root)
	mkdir -p "$dir/clients/node"
	cp -a clients/python clients/tests "$dir/clients/"
	cp -a clients/node/index.js clients/node/lib clients/node/package.json \
		clients/node/package-lock.json "$dir/clients/node/"
	set +e
	(cd "$dir/clients/node" && npm ci --no-audit --no-fund --loglevel=error) >"$dir/npm.log" 2>&1
	npm_rc=$?
	set -e
	if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$dir"; fi
	cd "$dir"

	# PostgreSQL on a unix socket and on loopback
	start_cluster "$dir" "$port" "listen_addresses = '127.0.0.1'" "max_connections = 200"
	as_test_user createdb -h "$dir" -p "$port" -U postgres test
	as_test_user psql -X -q -h "$dir" -p "$port" -U postgres -d test -v ON_ERROR_STOP=1 <<-'SQL'
		CREATE EXTENSION idempotency;
		CREATE TABLE payments (id bigserial PRIMARY KEY, ref text NOT NULL, amount integer NOT NULL);
	SQL

	# PgBouncer in transaction pooling mode, on loopback
	as_test_user sh -c "echo '\"postgres\" \"\"' >'$dir/userlist.txt'"
	as_test_user tee "$dir/pgbouncer.ini" >/dev/null <<-INI
		[databases]
		test = host=$dir port=$port dbname=test

		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $bport
		unix_socket_dir =
		auth_type = trust
		auth_file = $dir/userlist.txt
		pool_mode = transaction
		default_pool_size = 20
		max_client_conn = 500
		server_reset_query =
		logfile = $dir/pgbouncer.log
		pidfile = $dir/pgbouncer.pid
	INI
	# Debian installs it in /usr/sbin, which a normal user's PATH may lack
	as_test_user "$(PATH=$PATH:/usr/sbin command -v pgbouncer)" -d -q "$dir/pgbouncer.ini"

	direct="postgresql://postgres@127.0.0.1:$port/test"
	pooled="postgresql://postgres@127.0.0.1:$bport/test"
	apps="$dir/clients/tests/apps"
	export PYTHONPATH="$dir/clients/python:$apps"
}

clients_cleanup() {
	if [ -f "$dir/pgbouncer.pid" ]; then
		kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
	fi
	if [ -f "$dir/data/postmaster.pid" ]; then
		(cd "$dir" && as_test_user pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1) || true
	fi
	cd /
	rm -rf "$dir"
}

# The command that serves app NAME (flask, django, fastapi, express) on aport
app_command() {
	case $1 in
	flask | django)
		local app=flask_app:app
		[ "$1" = django ] && app=django_app:application
		echo gunicorn --workers 2 --worker-class gthread --threads 16 --bind "127.0.0.1:$aport" \
			--chdir "$apps" --log-level warning "$app"
		;;
	fastapi)
		echo "$PY" -m uvicorn --host 127.0.0.1 --port "$aport" --app-dir "$apps" --log-level warning \
			fastapi_app:app
		;;
	express) echo node "$apps/express_app.js" ;;
	esac
}
