#!/usr/bin/env python3
"""QEMU's own COLO (x-colo, periodic, diskless, no NIC) on the test guest: primary and secondary QEMU on this
machine, checkpoint delay 100 ms; the primary's pause per checkpoint from its QMP STOP/RESUME event timestamps.
Debian 12's QEMU 7.2 deadlocks at the end of the first checkpoint under TCG: QCOLO_QEMU names a binary built by
build-qemu-colo.sh. RETURN_PATH=1 also sets the return-path capability (the migration then fails; COLO needs none).
QCOLO_TRACE=<pattern> writes QEMU trace events; QCOLO_PAUSE / QCOLO_HOLD give time to attach a debugger."""
import json, os, socket, subprocess, sys, time

G = sys.argv[1]
MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 128
# x-colo alone by default; RETURN_PATH=1 adds return-path
CAPS = [{'capability': 'x-colo', 'state': True}] + \
    ([] if os.environ.get('RETURN_PATH', '0') == '0' else [{'capability': 'return-path', 'state': True}])
D = os.environ.get('QCOLO_DIR', '/tmp/qcolo')
os.makedirs(D, exist_ok=True)
def qemu(name, extra):
    sock = f'{D}/{name}.qmp'
    if os.path.exists(sock): os.unlink(sock)
    cmd = [os.environ.get('QCOLO_QEMU', 'qemu-system-x86_64'), '-L', '/usr/share/qemu', '-L', '/usr/share/seabios', '-name', name, '-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', f'{MIB}M',
           '-kernel', f'{G}/vmlinuz', '-initrd', f'{G}/initrd.img', '-append', 'console=ttyS0 quiet',
           '-serial', f'file:{D}/{name}.serial', '-qmp', f'unix:{sock},server=on,wait=off'] + extra + \
          (['-trace', os.environ['QCOLO_TRACE'], '-D', f'{D}/{name}.trace'] if os.environ.get('QCOLO_TRACE') else [])
    p = subprocess.Popen(cmd, stdout=open(f'{D}/{name}.out', 'w'), stderr=subprocess.STDOUT)
    for _ in range(100):
        if os.path.exists(sock): break
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(5); f = s.makefile('rw')
    f.readline(); f.write(json.dumps({'execute': 'qmp_capabilities'}) + '\n'); f.flush(); f.readline()
    return p, f

events = []
def cmd(f, name, args=None):
    f.write(json.dumps({'execute': name, **({'arguments': args} if args else {})}) + '\n'); f.flush()
    while True:
        r = json.loads(f.readline())
        if 'event' in r: events.append(r); continue
        return r

sp, sf = qemu('secondary', ['-incoming', 'defer'])
pp, pf = qemu('primary', [])
try:
    time.sleep(6)  # let the guest boot
    if os.environ.get('QCOLO_PAUSE'):  # time to attach a debugger to the primary before the migration
        print('primary pid', pp.pid, flush=True); time.sleep(float(os.environ['QCOLO_PAUSE']))
    print('secondary caps', cmd(sf, 'migrate-set-capabilities', {'capabilities': CAPS}))
    print('secondary incoming', cmd(sf, 'migrate-incoming', {'uri': 'tcp:127.0.0.1:9998'}))
    print('primary caps', cmd(pf, 'migrate-set-capabilities', {'capabilities': CAPS}))
    print('primary delay', cmd(pf, 'migrate-set-parameters', {'x-checkpoint-delay': 100}))
    print('primary migrate', cmd(pf, 'migrate', {'uri': 'tcp:127.0.0.1:9998'}), flush=True)
    t0 = time.time()
    pf_sock = pf
    while time.time() - t0 < 20:
        st = cmd(pf, 'query-migrate')
        print(round(time.time() - t0, 1), st.get('return', {}).get('status'), flush=True)
        if st.get('return', {}).get('status') in ('colo', 'failed', 'completed'): break
        time.sleep(0.2)
    print('status after sync', cmd(pf, 'query-migrate').get('return', {}).get('status'), 'after', round(time.time() - t0, 1), 's')
    print('colo status', cmd(pf, 'query-colo-status'))
    events.clear()
    end = time.time() + 10
    while time.time() < end:
        cmd(pf, 'query-status'); time.sleep(0.01)
    stops = []
    last_stop = None
    for e in events:
        ts = e['timestamp']['seconds'] + e['timestamp']['microseconds'] / 1e6
        if e['event'] == 'STOP': last_stop = ts
        elif e['event'] == 'RESUME' and last_stop is not None:
            stops.append((ts - last_stop) * 1000); last_stop = None
    stops.sort()
    if stops:
        print(f'QEMU COLO: {len(stops)} checkpoints in 10 s, pause p50 {stops[len(stops)//2]:.1f} ms, '
              f'p99 {stops[min(len(stops)-1, int(len(stops)*0.99))]:.1f} ms, max {stops[-1]:.1f} ms')
    else:
        print('QEMU COLO: no STOP/RESUME pairs seen; events:', [e['event'] for e in events][:20])
    print('final status', cmd(pf, 'query-migrate').get('return', {}).get('status'))
except Exception as ex:
    print('FAILED:', repr(ex), 'primary pid', pp.pid, 'secondary pid', sp.pid, flush=True)
    time.sleep(float(os.environ.get('QCOLO_HOLD', '0')))
    print('events so far:', [e['event'] + ':' + json.dumps(e.get('data', {}))[:80] for e in events][:15])
finally:
    pp.kill(); sp.kill(); pp.wait(); sp.wait()
    print('primary said:', open(f'{D}/primary.out').read()[-600:])
    print('secondary said:', open(f'{D}/secondary.out').read()[-600:])
