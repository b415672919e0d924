#!/usr/bin/env bash
# Builds the QEMU that ServiceBench's "qemu colo-compare" rows and qemu-colo.py run: Debian 12's own QEMU 7.2 source
# (the orig tarball and Debian's patches, the version installed here) plus one change, qemu-7.2-colo-tcg-bql.patch.
# Without it the primary deadlocks at the end of its first COLO checkpoint under TCG (BENCHMARKS.md, "QEMU's own
# COLO"). Only x86_64-softmmu, TCG and KVM, COLO (replication); about 10 min on 2 CPUs. Not a colod dependency.
#   bash deploy/bench/build-qemu-colo.sh [dir]   ->  <dir>/qemu-7.2.0/build/qemu-system-x86_64
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(realpath -m "${1:-build/qemu-colo}")
version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null || true)
version=${version#1:}
[ -n "$version" ] || { echo "qemu-system-x86 is not installed; install it first (deploy/packages.sh)" >&2; exit 1; }
upstream=${version%%-*}
DEBIAN_FRONTEND=noninteractive apt-get install -y -q meson ninja-build pkg-config flex bison \
    libglib2.0-dev libpixman-1-dev libfdt-dev > /dev/null
mkdir -p "$dir" && cd "$dir"
pool=http://deb.debian.org/debian/pool/main/q/qemu
[ -f "qemu_${upstream}.orig.tar.xz" ] || curl -fsSO "$pool/qemu_${upstream}.orig.tar.xz"
[ -f "qemu_${version}.debian.tar.xz" ] || curl -fsSO "$pool/qemu_${version}.debian.tar.xz"
rm -rf qemu-7.2.0 && tar xf "qemu_${upstream}.orig.tar.xz" && cd qemu-7.2.0
tar xf "../qemu_${version}.debian.tar.xz"
grep -v '^#' debian/patches/series | awk 'NF {print $1}' | while read -r p; do patch -p1 -s < "debian/patches/$p"; done
patch -p1 < "$here/qemu-7.2-colo-tcg-bql.patch"
./configure --target-list=x86_64-softmmu --without-default-features --disable-docs --disable-werror \
    --enable-tcg --enable-kvm --enable-fdt=system --enable-replication > configure.log
make -j"$(nproc)" qemu-system-x86_64 > make.log
echo "$dir/qemu-7.2.0/build/qemu-system-x86_64"
