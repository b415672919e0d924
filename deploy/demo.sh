#!/usr/bin/env bash
# README's main job. Until the two-host QEMU demo lands (issue 5), this shows the checkpoint engine:
# primary and secondary over loopback TCP, an in-memory VM, the primary killed, the secondary failing over.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mvn >/dev/null || ! command -v java >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven
fi
mvn -q -B install -DskipTests
exec mvn -q -B -pl colo-core exec:java -Dexec.classpathScope=test -Dexec.mainClass=dev.colod.core.EngineDemo
