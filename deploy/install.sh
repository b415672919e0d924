#!/usr/bin/env bash
# Builds colod and installs it: jars in $PREFIX/lib/colod, launchers colod and coloctl in $PREFIX/bin, the
# systemd unit, the example configuration in /etc/colod, bash completion, the docs.
#   sudo bash deploy/install.sh              install (PREFIX=/usr/local)
#   sudo bash deploy/install.sh --uninstall  remove all of it (keeps /etc/colod/colod.yaml)
# ROOT=/some/dir installs into a staging tree instead of / (for packaging and tests); UNIT_DIR and COMPLETION_DIR
# move the unit and the completion (a package puts them under /lib/systemd/system and /usr/share/bash-completion);
# SKIP_BUILD=1 uses the jars already built (agent/target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-}"
PREFIX="${PREFIX:-/usr/local}"
lib="$ROOT$PREFIX/lib/colod"; bin="$ROOT$PREFIX/bin"; etc="$ROOT/etc/colod"
unit="$ROOT${UNIT_DIR:-/etc/systemd/system}/colod.service"; comp="$ROOT${COMPLETION_DIR:-/etc/bash_completion.d}/coloctl"
doc="$ROOT$PREFIX/share/doc/colod"

if [ "${1:-}" = "--uninstall" ]; then
  if [ -z "$ROOT" ] && command -v systemctl >/dev/null && systemctl is-active -q colod 2>/dev/null; then
    systemctl stop colod
  fi
  [ -z "$ROOT" ] && command -v systemctl >/dev/null && systemctl disable -q colod 2>/dev/null || true
  rm -rf "$lib" "$doc" "$bin/colod" "$bin/coloctl" "$unit" "$comp" "$etc/colod.example.yaml"
  [ -z "$ROOT" ] && command -v systemctl >/dev/null && systemctl daemon-reload || true
  echo "colod removed (configuration in $etc kept)"
  exit 0
fi

[ "${SKIP_BUILD:-0}" = 1 ] && ls agent/target/lib/*.jar >/dev/null 2>&1 || mvn -q -B -DskipTests package
install -d "$lib" "$bin" "$etc" "$(dirname "$unit")" "$(dirname "$comp")" "$doc"
rm -f "$lib"/*.jar
cp agent/target/agent-*.jar agent/target/lib/*.jar "$lib/"
for tool in colod:dev.colod.agent.Colod coloctl:dev.colod.agent.control.Coloctl; do
  name="${tool%%:*}"; main="${tool#*:}"
  # colod's data path runs in Java: ZGC, whose pauses stay under a millisecond (with G1, young collections stopped
  # the NIC loops for up to 60 ms under load: docs/BENCHMARKS.md, run S7); COLOD_JAVA_OPTS replaces the default
  opts=""; [ "$name" = colod ] && opts="-XX:+UseZGC"
  # the jars are found next to the launcher (../lib/colod), wherever the tree was unpacked
  cat > "$bin/$name" <<LAUNCH
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")
exec java \${COLOD_JAVA_OPTS:-$opts} -cp "\$here/../lib/colod/*" $main "\$@"
LAUNCH
  chmod 0755 "$bin/$name"
done
# the unit names the launchers where this PREFIX puts them
sed "s#/usr/local/#$PREFIX/#g" deploy/colod.service > "$unit"
chmod 0644 "$unit"
install -m 0644 deploy/colod.example.yaml "$etc/colod.example.yaml"
install -m 0644 docs/*.md "$doc/"
java -cp "$lib/*" dev.colod.agent.control.Coloctl completion > "$comp"
if [ -z "$ROOT" ] && command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
echo "colod installed in $ROOT$PREFIX. Next: write /etc/colod/colod.yaml (see colod.example.yaml), then"
echo "  coloctl config check /etc/colod/colod.yaml && systemctl enable --now colod"
