#!/usr/bin/env bash
# The Debian packages the test suite drives: only the missing ones, in one
# apt-get run. promtool/amtool check the alert rules, curl/jq run the
# runbook's commands, chromium (never a downloaded browser) runs the console's
# browser tests, pgbouncer the pooler compatibility test, openssl makes the
# webhook TLS test's certificate.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$1" >/dev/null 2>&1; }
have promtool || need+=(prometheus)
have amtool || need+=(prometheus-alertmanager)
have curl || need+=(curl)
have jq || need+=(jq)
have pgbouncer || need+=(pgbouncer)
have openssl || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]}: run 'sudo make debian-deps' once" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
