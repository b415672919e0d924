#!/usr/bin/env bash
# README's main job: a protected VM survives the loss of its host, all on this machine (as root: from a root
# shell, or it re-runs itself with sudo).
# Installs what it needs (Debian packages, the test guest, Maven dependencies), then runs the two-host demo.
# Everything it creates (namespaces, QEMU processes, RAM files) is removed at the end, also on Ctrl-C.
set -euo pipefail
self="$(readlink -f "$0")"
cd "$(dirname "$self")/.."
. deploy/packages.sh
colod_become_root "$self" "$@"
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (it creates network namespaces and starts QEMU)" >&2; exit 2; fi
colod_install_packages
bash deploy/guest/build-guest.sh build/guest
mvn -q -B install -DskipTests
exec mvn -q -B -pl deploy exec:java -Dexec.mainClass=dev.colod.lab.TwoHostDemo -Dexec.args="$PWD/build/guest" \
  -Dlogback.configurationFile="$PWD/deploy/demo-logback.xml"
