#!/usr/bin/env bash
# Builds the test guest of docs/ARCHITECTURE.md ("a real test guest"): the Debian cloud kernel and a busybox
# initramfs whose init brings up eth0 and serves an HTTP counter kept in guest RAM (tmpfs); and the same guest as
# an installed system that boots from its own disk (boot-disk.img: an MBR partition table, a FAT partition with
# the kernel, the initramfs, the syslinux bootloader for BIOS and GRUB as \EFI\BOOT\BOOTX64.EFI for UEFI (OVMF);
# built without mounting anything).
#   usage: build-guest.sh [OUT_DIR]     (default: build/guest under the repository)
# Everything comes from Debian's package archive. The result is cached: an existing OUT_DIR/vmlinuz and
# OUT_DIR/initrd.img are kept unless FORCE=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../build/guest}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# bump when the guest changes, so cached guests are rebuilt
version=11
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/boot-disk.img" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$version" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "guest already built in $out"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
need=()
for p in busybox-static cpio gcc libc6-dev syslinux syslinux-common mtools dosfstools fdisk grub-efi-amd64-bin; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; apt-get install -y -qq --no-install-recommends "${need[@]}"; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
kpkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')"
[ -n "$kpkg" ] || { apt-get update -qq; kpkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')"; }
echo "kernel package: $kpkg"
apt-get download -qq "$kpkg"
dpkg -x ./*.deb kernel
cp kernel/boot/vmlinuz-* "$out/vmlinuz"
kver="$(ls kernel/lib/modules)"

root="$work/root"
mkdir -p "$root"/{bin,sbin,proc,sys,tmp,dev,etc,www/cgi-bin,lib/modules}
cp /bin/busybox "$root/bin/busybox"
# virtio-net and virtio-blk as modules, in dependency order (verified on this machine kind)
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk"
for m in $mods; do
  f="$(find "kernel/lib/modules/$kver" -name "$m.ko*" | head -1)"
  [ -n "$f" ] || { echo "module $m not found in $kpkg" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
echo "$mods" > "$root/lib/modules/order"

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
ip=""; gw=""
for a in $(cat /proc/cmdline); do
  case "$a" in colo.ip=*) ip="${a#colo.ip=}" ;; colo.gw=*) gw="${a#colo.gw=}" ;; esac
done
ip link set lo up
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
echo 0 > /tmp/counter
httpd -p 80 -h /www
/bin/udpecho 7 &
echo "colo-guest: up, ip ${ip:-none}"
# a guest that keeps writing memory, so checkpoints always have dirty pages
while true; do sleep 1; done
INIT
chmod +x "$root/init"

cat > "$root/www/cgi-bin/count" <<'CGI'
#!/bin/sh
# the counter lives in /tmp (tmpfs): guest RAM, so only checkpoints carry it to the standby. Replaced by rename,
# never rewritten in place: after a failover the resumed guest may run a request whose client gave up next to
# the client's retry, and "echo > file" (truncate, then write) would let the other read an empty file (an answer
# of 1 after N: a guest-level race, not a rollback)
n=$(cat /tmp/counter)
n=$((n + 1))
echo "$n" > /tmp/counter.$$
mv -f /tmp/counter.$$ /tmp/counter
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$n"
CGI
chmod +x "$root/www/cgi-bin/count"
cat > "$root/www/cgi-bin/churn" <<'CGI'
#!/bin/sh
# starts a memory writer in the guest (for benchmarks): rewrites 16 MiB of tmpfs over and over
if [ ! -e /tmp/churning ]; then
  touch /tmp/churning
  (while true; do dd if=/dev/urandom of=/tmp/churn bs=64k count=256 2>/dev/null; done) </dev/null >/dev/null 2>&1 &
fi
printf 'Content-Type: text/plain\r\n\r\nchurning\n'
CGI
chmod +x "$root/www/cgi-bin/churn"
cat > "$root/www/cgi-bin/disk" <<'CGI'
#!/bin/sh
# a counter on the data disk (/dev/vdb when the guest has two disks, its system disk being vda; else /dev/vda;
# first 4 KiB, written with O_DIRECT and synced) and the value this guest last wrote there, kept in RAM (tmpfs).
# Answers "N D": the new value N and what the disk held before, D. When RAM and disk belong to the same checkpoint,
# D is always N - 1.
dev=/dev/vdb; [ -b $dev ] || dev=/dev/vda
[ -b $dev ] || { printf 'Status: 503\r\nContent-Type: text/plain\r\n\r\nno disk\n'; exit 0; }
# one request at a time: after a failover the resumed guest may still be finishing a request whose client gave
# up and asked again; two at once would read the disk and RAM between the other's two writes (a lock held by a
# request that died is broken after 10 s)
i=0
while ! mkdir /tmp/dlock 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 500 ] && { rmdir /tmp/dlock; i=0; }
  usleep 20000
done
trap 'rmdir /tmp/dlock' EXIT
r=$(cat /tmp/dcount 2>/dev/null || echo 0)
d=$(dd if=$dev bs=4096 count=1 iflag=direct 2>/dev/null | tr -dc '0-9')
n=$((r + 1))
printf '%-4095s\n' "$n" | dd of=$dev bs=4096 count=1 oflag=direct conv=fsync,notrunc 2>/dev/null
echo "$n" > /tmp/dcount
printf 'Content-Type: text/plain\r\n\r\n%s %s\n' "$n" "${d:-0}"
CGI
chmod +x "$root/www/cgi-bin/disk"
cat > "$root/www/cgi-bin/diskbench" <<'CGI'
#!/bin/sh
# disk benchmark inside the guest. ?seq: 512 MiB sequential write (1 MiB blocks, O_DIRECT, synced at the end)
# from 1 MiB on. ?sync: 100 synced 4 KiB writes (O_DIRECT + fsync each, one dd each). Answers the time by the
# guest's clock (/proc/uptime, 10 ms steps; it stands still while the VM is paused: the host times the request).
cs() { t=$(cut -d' ' -f1 /proc/uptime); echo "${t%.*}${t#*.}"; }
dev=/dev/vdb; [ -b $dev ] || dev=/dev/vda
t0=$(cs)
case "$QUERY_STRING" in
  seq) dd if=/dev/zero of=$dev bs=1048576 count=512 seek=1 oflag=direct conv=fsync,notrunc 2>/dev/null ;;
  *) i=0
     while [ $i -lt 100 ]; do
       dd if=/dev/zero of=$dev bs=4096 count=1 seek=$((i * 16)) oflag=direct conv=fsync,notrunc 2>/dev/null
       i=$((i + 1))
     done ;;
esac
t1=$(cs)
printf 'Content-Type: text/plain\r\n\r\n%s\n' $((t1 - t0))
CGI
chmod +x "$root/www/cgi-bin/diskbench"
cat > "$root/www/cgi-bin/bulk" <<'CGI'
#!/bin/sh
# TCP bulk from the guest (benchmarks): QUERY_STRING MiB of zeros (default 64), made on the fly (no tmpfs needed)
n=${QUERY_STRING:-64}
printf 'Content-Type: application/octet-stream\r\n\r\n'
dd if=/dev/zero bs=65536 count=$((n * 16)) 2>/dev/null
CGI
chmod +x "$root/www/cgi-bin/bulk"
cat > "$root/www/cgi-bin/random" <<'CGI'
#!/bin/sh
# a second counter (guest RAM) whose answer also carries what differs between two copies of the guest run from the
# same state (hybrid mode's mismatch test): the clock in nanoseconds and bytes of /dev/urandom
n=$(cat /tmp/rcounter 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /tmp/rcounter.$$
mv -f /tmp/rcounter.$$ /tmp/rcounter
printf 'Content-Type: text/plain\r\n\r\n%s %s %s\n' "$n" "$(date +%s%N)" "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CGI
chmod +x "$root/www/cgi-bin/random"
cat > "$root/www/cgi-bin/sink" <<'CGI'
#!/bin/sh
# TCP bulk into the guest (benchmarks): reads the POST body and answers how many bytes arrived
n=$(head -c "${CONTENT_LENGTH:-0}" | wc -c)
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$n"
CGI
chmod +x "$root/www/cgi-bin/sink"
# a UDP echo on port 7 (benchmarks: small UDP request/answer); busybox has none, so a few lines of C, static
cat > "$work/udpecho.c" <<'C'
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 7)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        return 1;
    for (;;)
    {
        char b[2048];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, b, sizeof b, 0, (struct sockaddr *)&from, &len);
        if (n >= 0)
            sendto(s, b, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
}
C
gcc -static -O2 -o "$root/bin/udpecho" "$work/udpecho.c"
echo "colo test guest" > "$root/www/index.html"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img"
# the disk-booted guest: 64 MiB, partition 1 (FAT16, bootable) from sector 2048; the kernel command line is in
# syslinux.cfg (the address the lab gives the guest), so colod starts it with no kernel, initrd or append
disk="$work/boot-disk.img"
part="$work/part.img"
truncate -s 64M "$disk"
echo 'start=2048, type=e, bootable' | sfdisk -q "$disk"
truncate -s $(( (64 - 1) * 1024 * 1024 )) "$part"
mkfs.vfat -n COLOBOOT "$part" >/dev/null
cat > "$work/syslinux.cfg" <<'CFG'
DEFAULT colod
PROMPT 0
TIMEOUT 0
LABEL colod
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img console=ttyS0 quiet colo.ip=198.18.0.10/24
CFG
mcopy -i "$part" "$out/vmlinuz" ::/vmlinuz
mcopy -i "$part" "$out/initrd.img" ::/initrd.img
mcopy -i "$part" "$work/syslinux.cfg" ::/syslinux.cfg
# UEFI: a standalone GRUB (its configuration inside) at the removable-media path OVMF boots
cat > "$work/grub.cfg" <<'CFG'
set timeout=0
search --no-floppy --set=root --label COLOBOOT
linux /vmlinuz console=ttyS0 quiet colo.ip=198.18.0.10/24
initrd /initrd.img
boot
CFG
grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" --modules="part_msdos fat search search_label linux normal" \
  --install-modules="part_msdos fat search search_label linux normal configfile echo test" --locales= --fonts= \
  "boot/grub/grub.cfg=$work/grub.cfg"
mmd -i "$part" ::/EFI ::/EFI/BOOT
mcopy -i "$part" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
syslinux --install "$part"
dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
mv "$disk" "$out/boot-disk.img"
echo "$kpkg" > "$out/KERNEL"
echo "$version" > "$out/VERSION"
echo "guest built in $out: $(du -h "$out/vmlinuz" | cut -f1) kernel, $(du -h "$out/initrd.img" | cut -f1) initramfs, boot-disk.img"
