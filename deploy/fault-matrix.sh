#!/usr/bin/env bash
# The long profile of the fault matrix (docs/RELIABILITY.md): every fault x both modes, RUNS runs each (default
# 20; ~20 s a run, ~2 h in all), on the two-host lab with etcd, TLS and the real test guest, as root. Prints one line per run
# and writes the table to docs/RELIABILITY-latest.md.
# Usage: bash deploy/fault-matrix.sh [RUNS] [FAULT,FAULT,...]   (fault names: see FaultMatrix.Fault)
set -euo pipefail
self="$(readlink -f "$0")"
cd "$(dirname "$self")/.."
. deploy/packages.sh
colod_become_root "$self" "$@"
if [ "$(id -u)" != 0 ]; then echo "fault-matrix.sh: run as root" >&2; exit 2; fi
colod_install_packages
bash deploy/guest/build-guest.sh build/guest
mvn -q -B install -DskipTests
exec mvn -q -B -pl deploy exec:java -Dexec.mainClass=dev.colod.lab.FaultMatrix \
  -Dexec.args="$PWD/build/guest ${1:-20} $PWD/docs/RELIABILITY-latest.md ${2:-}" \
  -Dlogback.configurationFile="$PWD/deploy/demo-logback.xml"
