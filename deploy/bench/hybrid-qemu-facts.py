#!/usr/bin/env python3
"""What QEMU on this machine does with the pieces hybrid mode needs (docs/ARCHITECTURE.md, "Hybrid mode").

Run as root after `bash deploy/guest/build-guest.sh build/guest`:  python3 deploy/bench/hybrid-qemu-facts.py
No network: the guests have no NIC. Everything lives in a temporary directory and the QEMUs it starts are
killed at the end (by their PIDs).

1. xen-load-devices-state into an existing QEMU: does it survive?
2. A QEMU on share=off of the committed RAM image: does the image stay unchanged while it runs?
3. A QEMU pre-started paused (-incoming defer) on share=off of the image before a commit: after the commit and
   migrate-incoming of the new device state, is its RAM the primary's?
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST = os.path.join(ROOT, 'build', 'guest')
MB = 128
D = tempfile.mkdtemp(prefix='colod-hybrid-facts-')
PROCS = []


class Qmp:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile('rw')
        self.f.readline()
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args} if args else {'execute': name}) + '\n')
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError('QEMU closed its QMP socket (it exited)')
            r = json.loads(line)
            if 'return' in r or 'error' in r:
                return r


def qemu(name, mem, share, extra=()):
    q = os.path.join(D, name + '.qmp')
    cmd = ['qemu-system-x86_64', '-accel', 'tcg', '-m', str(MB), '-machine', 'pc,memory-backend=ram0', '-smp', '1',
           '-nographic', '-nodefaults', '-nic', 'none',
           '-object', f'memory-backend-file,id=ram0,size={MB}M,mem-path={mem},share={share}',
           '-qmp', f'unix:{q},server=on,wait=off', '-serial', f'file:{D}/{name}.serial',
           '-kernel', GUEST + '/vmlinuz', '-initrd', GUEST + '/initrd.img', '-append', 'console=ttyS0 quiet'] + list(extra)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f'{D}/{name}.err', 'w'))
    PROCS.append(p)
    return p, Qmp(q)


INCOMING = ['-S', '-incoming', 'defer', '-global', 'migration.send-configuration=off', '-machine', 'suppress-vmdesc=on']


def load(q, dev):
    t0 = time.time()
    r = q.cmd('migrate-incoming', uri='exec:cat ' + dev)
    while q.cmd('query-status')['return']['status'] == 'inmigrate':
        time.sleep(0.005)
    return r, (time.time() - t0) * 1000


def md5(path):
    return hashlib.md5(open(path, 'rb').read()).hexdigest()


def copy_ram(src, dst):
    subprocess.run(['dd', f'if={src}', f'of={dst}', 'bs=1M', 'conv=notrunc', 'status=none'], check=True)


def main():
    ram_a, image = D + '/primary.ram', D + '/committed.ram'
    for f in (ram_a, image):
        with open(f, 'wb') as x:
            x.truncate(MB << 20)
    _, a = qemu('primary', ram_a, 'on')
    time.sleep(12)  # the guest boots under TCG
    a.cmd('stop')
    a.cmd('xen-save-devices-state', filename=D + '/dev1', live=False)
    copy_ram(ram_a, image)  # checkpoint 1 committed

    # 1. a device state into an existing (paused) QEMU
    _, x = qemu('reload', image, 'off', ['-S'])
    try:
        x.cmd('xen-load-devices-state', filename=D + '/dev1')
        print('1. xen-load-devices-state: QEMU survived')
    except ConnectionError:
        err = open(D + '/reload.err').read().strip().splitlines()
        print('1. xen-load-devices-state: QEMU ABORTED:', err[-1] if err else '?')

    # 2. a running copy on a private mapping of the image
    committed = md5(image)
    _, b1 = qemu('copy1', image, 'off', INCOMING)
    print('   copy 1 load: %s in %.1f ms' % load(b1, D + '/dev1'))
    b1.cmd('cont')
    a.cmd('cont')
    _, b2 = qemu('copy2', image, 'off', INCOMING)  # the next copy, pre-started before the next commit
    time.sleep(5)
    print('2. image unchanged while copy 1 ran 5 s:', md5(image) == committed)

    # 3. checkpoint 2: both paused, the primary's RAM committed, the pre-started copy takes the device state
    a.cmd('stop')
    a.cmd('xen-save-devices-state', filename=D + '/dev2', live=False)
    b1.cmd('stop')
    copy_ram(ram_a, image)
    r, ms = load(b2, D + '/dev2')
    b2.cmd('pmemsave', val=0, size=MB << 20, filename=D + '/copy2.dump')
    a.cmd('pmemsave', val=0, size=MB << 20, filename=D + '/primary.dump')
    x2, y2 = open(D + '/copy2.dump', 'rb').read(), open(D + '/primary.dump', 'rb').read()
    differ = sum(1 for i in range(0, len(x2), 4096) if x2[i:i + 4096] != y2[i:i + 4096])
    print('3. pre-started copy after commit + load (%s, %.1f ms): %d of %d pages differ from the primary'
          % (r, ms, differ, len(x2) // 4096))
    t0 = time.time()
    b2.cmd('cont')
    print('   cont: %.1f ms; copy 2 %s' % ((time.time() - t0) * 1000, b2.cmd('query-status')['return']['status']))


if __name__ == '__main__':
    try:
        main()
    finally:
        for p in PROCS:
            p.kill()
        shutil.rmtree(D, ignore_errors=True)
    sys.exit(0)
