#!/bin/sh
# First start on an empty PGDATA: create the cluster, the POSTGRES_USER role (superuser, with
# POSTGRES_PASSWORD) and POSTGRES_DB, as the official image's entrypoint does; then run the server.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "postgres-entrypoint: POSTGRES_PASSWORD is empty; set it (clients connect over the network with a password)" >&2
  exit 1
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # No TCP and a private socket while the database is created: neither clients nor the health
  # check (pg_isready on the default socket) see a half-made server.
  socket=$(mktemp -d)
  pg_ctl --silent --wait --options="-c listen_addresses='' -c unix_socket_directories=$socket" start
  if [ "$POSTGRES_DB" != postgres ]; then
    createdb --host="$socket" --username="$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl --silent --wait --mode=fast stop
  rmdir "$socket"
  echo "postgres-entrypoint: created database $POSTGRES_DB owned by $POSTGRES_USER"
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
