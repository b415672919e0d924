#!/usr/bin/env bash
# Builds the Debian package of colod once, to install on every host without building there:
#   bash deploy/build-deb.sh            -> build/colod_VERSION_amd64.deb
# (SKIP_BUILD=1 uses the jars already built in agent/target.) It holds /usr/bin/colod and coloctl, the jars in
# /usr/lib/colod, the systemd unit (/lib/systemd/system/colod.service), /etc/colod/colod.example.yaml, bash
# completion, the docs and man pages colod(8), coloctl(8) and colod.yaml(5). Install: apt install ./colod_*.deb
# (it pulls Java 17, QEMU, iproute2 and iptables), then write /etc/colod/colod.yaml and systemctl enable --now colod.
# amd64, not all: the jar carries the small native library QEMU loads for write tracking (x86-64).
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's:^  <version>\(.*\)</version>:\1:p' pom.xml | head -1)"
version="${version%-SNAPSHOT}"
[ -n "$version" ] || { echo "build-deb.sh: no <version> in pom.xml" >&2; exit 1; }
command -v help2man >/dev/null || { echo "build-deb.sh: help2man is needed for the man pages (apt-get install help2man)" >&2; exit 1; }
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
ROOT="$root" PREFIX=/usr UNIT_DIR=/lib/systemd/system COMPLETION_DIR=/usr/share/bash-completion/completions \
  bash deploy/install.sh >/dev/null

# man pages from the commands' own --help and --version, and colod.yaml(5) from the annotated example
man="$root/usr/share/man"
install -d "$man/man8" "$man/man5"
help2man -N -s 8 -n "COLO checkpointing and network output commit for QEMU/KVM VMs" "$root/usr/bin/colod" \
  | gzip -9n > "$man/man8/colod.8.gz"
help2man -N -s 8 -n "inspect and command colod" "$root/usr/bin/coloctl" | gzip -9n > "$man/man8/coloctl.8.gz"
{
  printf '.TH COLOD.YAML 5 "" "colod %s" "File formats"\n.SH NAME\ncolod.yaml \\- configuration of colod(8)\n' "$version"
  printf '.SH DESCRIPTION\nOne YAML file per host (/etc/colod/colod.yaml). Check it with \\fBcoloctl config check --host FILE\\fR: '
  printf 'every problem is reported with file:line:column. Every key, with its default and meaning:\n.SH EXAMPLE\n.nf\n'
  sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./' deploy/colod.example.yaml
  printf '.fi\n.SH SEE ALSO\ncolod(8), coloctl(8), /usr/share/doc/colod/OPERATIONS.md\n'
} | gzip -9n > "$man/man5/colod.yaml.5.gz"

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: colod
Version: $version
Architecture: amd64
Maintainer: colod developers <colod@localhost>
Depends: openjdk-17-jre-headless | java17-runtime-headless, qemu-system-x86, qemu-utils, iproute2, iptables
Recommends: ovmf
Section: admin
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Description: keeps a QEMU/KVM VM serving through the loss of its host
 colod checkpoints a running VM to a standby host many times a second (COLO
 coarse-grained lock-stepping) and holds every frame the guest sends until the
 standby has the checkpoint that produced it, so no client sees state a failover
 could lose. coloctl inspects and commands it.
EOF
echo /etc/colod/colod.example.yaml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# a new unit file: tell systemd (the service is not enabled or started: it needs /etc/colod/colod.yaml first);
# not when installed into another root (DPKG_ROOT set: dpkg --root, a chrootless install): that root's systemd is not this one
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# on removal only (not on upgrade: the running colod is restarted by the operator, adopting its VMs)
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then systemctl stop colod 2>/dev/null || true; fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p build
out="build/colod_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
