#!/usr/bin/env bash
# Installs the Debian packages colod's build, tests and demo need, when missing (as root, with apt-get).
# Sourced by deploy/test.sh and deploy/demo.sh; .ci/run goes through deploy/test.sh.
colod_install_packages()
{
  local need=() p
  for p in openjdk-17-jdk-headless maven gcc libc6-dev iproute2 iptables qemu-system-x86 qemu-utils busybox-static syslinux syslinux-common mtools dosfstools fdisk grub-efi-amd64-bin ovmf cpio ethtool etcd-server help2man; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
}

# colod_fetch_promtool DIR: the Prometheus project's own exposition checker, promtool, unpacked from Debian's
# prometheus package into DIR (not installed: that would start a Prometheus server). Tests check /metrics with it.
colod_fetch_promtool()
{
  local dir="$1" work
  [ -x "$dir/promtool" ] && return 0
  work="$(mktemp -d)"
  (cd "$work" && apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; })
  dpkg -x "$work"/prometheus_*.deb "$work/x"
  mkdir -p "$dir"
  cp "$work/x/usr/bin/promtool" "$dir/promtool"
  rm -rf "$work"
}

# colod_become_root SCRIPT ARGS...: runs SCRIPT again as root with sudo when not root and sudo is there.
# Without either it returns (tests then run unprivileged: those that need root skip and say why).
colod_become_root()
{
  local script="$1"; shift
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then
    exec sudo -E bash "$script" "$@"
  fi
}
