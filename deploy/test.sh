#!/usr/bin/env bash
# README's test command: every module's tests. Tests that need root, a kernel feature or QEMU print why
# they skip; as root with .ci/run's packages installed, they all run. The test guest (a Debian cloud kernel
# and a busybox initramfs) is built first when missing (cached in build/guest).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash deploy/guest/build-guest.sh build/guest
fi
exec mvn -B install
