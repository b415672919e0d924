#!/usr/bin/env bash
# README's test command: every module's tests. Run from a root shell (or as a user with sudo: it re-runs itself
# with sudo). As root it first installs what the tests need (Debian packages, the test guest: a Debian cloud
# kernel and a busybox initramfs, cached in build/guest); then nothing is skipped: a test whose prerequisite
# is missing fails with the reason. Without root (no sudo) the tests that need it skip and print why.
set -euo pipefail
self="$(readlink -f "$0")"
cd "$(dirname "$self")/.."
. deploy/packages.sh
colod_become_root "$self" "$@"
if [ "$(id -u)" = 0 ]; then
  command -v apt-get >/dev/null && colod_install_packages && colod_fetch_promtool build/tools
  bash deploy/guest/build-guest.sh build/guest
else
  echo "test.sh: not root and no sudo: tests that need root, network namespaces or QEMU will skip (each says why)" >&2
fi
mkdir -p build
set +e
mvn -B install 2>&1 | tee build/test.log
status=${PIPESTATUS[0]}
set -e
# the summary: how many ran, failed and were skipped, per module
for r in */target/surefire-reports; do
  [ -d "$r" ] || continue
  awk -v m="${r%%/*}" -F'[,:] *' '/^Tests run:/ {t+=$2; f+=$4; e+=$6; s+=$8} END {printf "%-14s %4d tests, %d failed, %d errors, %d skipped\n", m, t, f, e, s}' "$r"/*.txt
done
# why tests skipped (only without root: as root a missing prerequisite fails the test instead)
grep -h "^SKIPPED (" build/test.log | sort | uniq -c || true
exit $status
