#!/usr/bin/env bash
# Drops arbor_test_* databases left behind by interrupted test runs.
set -uo pipefail
for db in $(psql -h 127.0.0.1 -U postgres -Atc "select datname from pg_database where datname like 'arbor_test_%'" 2>/dev/null); do
  psql -h 127.0.0.1 -U postgres -qc "drop database if exists \"$db\" with (force)"
done
for db in $(mysql -h127.0.0.1 -uroot -Nse "show databases like 'arbor\_test\_%'" 2>/dev/null); do
  mysql -h127.0.0.1 -uroot -e "drop database if exists \`$db\`"
done
rm -rf "${TMPDIR:-/tmp}"/arbor_test_*
echo "test databases cleaned"
