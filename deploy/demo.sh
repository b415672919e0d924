#!/usr/bin/env bash
# README's main job: a protected VM survives the loss of its host, all on this machine (run as root).
# Installs what it needs (Debian packages, the test guest, Maven dependencies), then runs the two-host demo.
# Everything it creates (namespaces, QEMU processes, RAM files) is removed at the end, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (it creates network namespaces and starts QEMU)" >&2; exit 2; fi
export DEBIAN_FRONTEND=noninteractive
need=()
for p in openjdk-17-jdk-headless maven iproute2 qemu-system-x86 busybox-static cpio; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; apt-get install -y -qq --no-install-recommends "${need[@]}"; fi
bash deploy/guest/build-guest.sh build/guest
mvn -q -B install -DskipTests
exec mvn -q -B -pl agent exec:java -Dexec.mainClass=dev.colod.agent.demo.TwoHostDemo -Dexec.args="$PWD/build/guest" \
  -Dlogback.configurationFile="$PWD/deploy/demo-logback.xml"
