#!/usr/bin/env bash
# Builds colod and installs it: jars in $PREFIX/lib/colod, launchers colod and coloctl in $PREFIX/bin, the
# systemd unit, the example configuration in /etc/colod, bash completion, the docs.
#   sudo bash deploy/install.sh              install (PREFIX=/usr/local)
#   sudo bash deploy/install.sh --uninstall  remove all of it (keeps /etc/colod/colod.yaml)
# ROOT=/some/dir installs into a staging tree instead of / (for packaging and tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-}"
PREFIX="${PREFIX:-/usr/local}"
lib="$ROOT$PREFIX/lib/colod"; bin="$ROOT$PREFIX/bin"; etc="$ROOT/etc/colod"
unit="$ROOT/etc/systemd/system/colod.service"; comp="$ROOT/etc/bash_completion.d/coloctl"
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

mvn -q -B -DskipTests package
install -d "$lib" "$bin" "$etc" "$(dirname "$unit")" "$(dirname "$comp")" "$doc"
rm -f "$lib"/*.jar
cp agent/target/agent-*.jar agent/target/lib/*.jar "$lib/"
for tool in colod:dev.colod.agent.Colod coloctl:dev.colod.agent.control.Coloctl; do
  name="${tool%%:*}"; main="${tool#*:}"
  cat > "$bin/$name" <<LAUNCH
#!/bin/sh
exec java \${COLOD_JAVA_OPTS:-} -cp '$PREFIX/lib/colod/*' $main "\$@"
LAUNCH
  chmod 0755 "$bin/$name"
done
install -m 0644 deploy/colod.service "$unit"
install -m 0644 deploy/colod.example.yaml "$etc/colod.example.yaml"
install -m 0644 docs/*.md "$doc/"
java -cp "$lib/*" dev.colod.agent.control.Coloctl completion > "$comp"
if [ -z "$ROOT" ] && command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
echo "colod installed in $ROOT$PREFIX. Next: write /etc/colod/colod.yaml (see colod.example.yaml), then"
echo "  coloctl config check /etc/colod/colod.yaml && systemctl enable --now colod"
