#!/usr/bin/env bash
# README's test command: every module's tests. Tests that need root, a kernel feature or QEMU print why
# they skip; as root with .ci/run's packages installed, they all run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec mvn -B install
