package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.qemu.QmpClient;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * QEMU's own COLO, hybrid (x-colo with colo-compare, filter-mirror, filter-redirector and filter-rewriter, wired as
 * QEMU's docs/COLO-FT.txt wires them), on a two-host lab's namespaces and the same test guest, for ServiceBench's side
 * by side row. The primary's QEMU uses the primary host's tap (on its bridge to the switch); the secondary's QEMU a tap
 * taken off its bridge, so only the redirector feeds its guest. Filters and compare links run over the replication
 * link. Diskless (the test guest runs from its initrd), taps with {@code vnet_hdr=off} (the filters then carry plain
 * frames). Checkpoints and pauses are counted from the primary's STOP and RESUME events.
 *
 * <p>Debian 12's QEMU 7.2 deadlocks at the end of its first COLO checkpoint under TCG (BENCHMARKS.md, "QEMU's own
 * COLO"); the binary is named by {@code -Dcolod.qemu.colo}, e.g. one built with
 * {@code deploy/bench/qemu-7.2-colo-tcg-bql.patch}.
 */
final class QemuColo implements AutoCloseable
{
    static final String BINARY = "colod.qemu.colo";
    /** Optional: QEMU trace events (e.g. {@code colo_*}) written to {@code /tmp/qemu-colo-<name>.trace}, to diagnose. */
    static final String TRACE = "colod.qemu.colo.trace";
    private static final long QMP_MS = 10_000;
    private static final String MAC = "52:54:00:c0:10:01";

    private final Path dir;
    private final List<Process> processes = new ArrayList<>();
    private final List<QmpClient> monitors = new ArrayList<>();
    private final AtomicLong stops = new AtomicLong();
    private final AtomicLong pausedMicros = new AtomicLong();
    private volatile long stopAtMicros = -1;

    private QemuColo(final TwoHostLab.Lab lab) throws IOException
    {
        this.dir = Files.createDirectories(lab.runDir.resolve("qemu-colo"));
    }

    /** Boots the primary, starts the secondary and COLO with {@code checkpointDelayMs}; returns once the guest answers. */
    static QemuColo start(final TwoHostLab.Lab lab, final Path guest, final long checkpointDelayMs,
        final String compareOptions) throws Exception
    {
        final String binary = System.getProperty(BINARY);
        if (binary == null || !Files.isExecutable(Path.of(binary)))
        {
            throw new IllegalStateException("QEMU's own COLO row needs -D" + BINARY + "=<qemu-system-x86_64 whose COLO " +
                "runs under TCG> (deploy/bench/qemu-7.2-colo-tcg-bql.patch); got " + binary);
        }
        final QemuColo q = new QemuColo(lab);
        try
        {
            final String p = TwoHostLab.Lab.ip("primary");
            final String s = TwoHostLab.Lab.ip("secondary");
            final QmpClient pri = q.qemu(binary, guest, "primary", lab.pri, List.of(
                "-chardev", "socket,id=mirror0,host=" + p + ",port=9003,server=on,wait=off",
                "-chardev", "socket,id=compare1,host=" + p + ",port=9004,server=on,wait=off",
                "-chardev", "socket,id=compare0,host=127.0.0.1,port=9001,server=on,wait=off",
                "-chardev", "socket,id=compare0-0,host=127.0.0.1,port=9001",
                "-chardev", "socket,id=compare_out,host=127.0.0.1,port=9005,server=on,wait=off",
                "-chardev", "socket,id=compare_out0,host=127.0.0.1,port=9005",
                "-object", "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
                "-object", "filter-redirector,id=redire0,netdev=hn0,queue=rx,indev=compare_out",
                "-object", "filter-redirector,id=redire1,netdev=hn0,queue=rx,outdev=compare0",
                "-object", "iothread,id=iothread1",
                "-object", "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0," +
                    "iothread=iothread1" + compareOptions));
            pri.onEvent(q::event);
            q.waitForSerial("primary", "colo-guest: up", 90);
            new IpRoute(lab.sec).ip("link", "set", "vt0", "nomaster");
            final QmpClient sec = q.qemu(binary, guest, "secondary", lab.sec, List.of(
                "-chardev", "socket,id=red0,host=" + p + ",port=9003,reconnect=1",
                "-chardev", "socket,id=red1,host=" + p + ",port=9004,reconnect=1",
                "-object", "filter-redirector,id=f1,netdev=hn0,queue=tx,indev=red0",
                "-object", "filter-redirector,id=f2,netdev=hn0,queue=rx,outdev=red1",
                "-object", "filter-rewriter,id=rew0,netdev=hn0,queue=all",
                "-incoming", "defer"));
            final Map<String, ?> colo = Map.of("capabilities", List.of(Map.of("capability", "x-colo", "state", true)));
            sec.execute("migrate-set-capabilities", colo, QMP_MS);
            sec.execute("migrate-incoming", Map.of("uri", "tcp:" + s + ":9998"), QMP_MS);
            pri.execute("migrate-set-capabilities", colo, QMP_MS);
            pri.execute("migrate-set-parameters", Map.of("x-checkpoint-delay", checkpointDelayMs), QMP_MS);
            pri.execute("migrate", Map.of("uri", "tcp:" + s + ":9998"), QMP_MS);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            String status = "";
            while (!"colo".equals(status))
            {
                status = pri.execute("query-migrate", Map.of(), QMP_MS).path("status").asText();
                if ("failed".equals(status) || "completed".equals(status) || System.nanoTime() - deadline > 0)
                {
                    throw new IOException("QEMU COLO did not start: migration " + status + "; " + q.said());
                }
                Thread.sleep(100);
            }
            while (Netns.call(lab.cli, () -> TwoHostLab.Http.count(TwoHostLab.GUEST_IP, 1000)) < 0)
            {
                if (System.nanoTime() - deadline > 0)
                {
                    throw new IOException("the guest did not answer through QEMU's COLO within 60 s; " + q.said());
                }
                Thread.sleep(200);
            }
            return q;
        }
        catch (final Exception ex)
        {
            q.close();
            throw ex;
        }
    }

    /** Checkpoints the primary took so far (its STOP events after COLO started). */
    long checkpoints()
    {
        return stops.get();
    }

    /** Time the primary's guest was stopped so far, µs. */
    long pausedMicros()
    {
        return pausedMicros.get();
    }

    private void event(final JsonNode e)
    {
        final long at = e.path("timestamp").path("seconds").asLong() * 1_000_000 +
            e.path("timestamp").path("microseconds").asLong();
        switch (e.path("event").asText())
        {
            case "STOP" ->
            {
                stops.incrementAndGet();
                stopAtMicros = at;
            }
            case "RESUME" ->
            {
                if (stopAtMicros >= 0)
                {
                    pausedMicros.addAndGet(at - stopAtMicros);
                    stopAtMicros = -1;
                }
            }
            default ->
            {
            }
        }
    }

    private QmpClient qemu(final String binary, final Path guest, final String name, final String ns,
        final List<String> extra) throws IOException
    {
        final Path qmp = dir.resolve(name + ".qmp");
        final List<String> cmd = new ArrayList<>(List.of("ip", "netns", "exec", ns, binary,
            "-L", "/usr/share/qemu", "-L", "/usr/share/seabios", "-name", name, "-accel", "tcg", "-nodefaults",
            "-display", "none", "-machine", "pc", "-m", "128M",
            "-kernel", guest.resolve("vmlinuz").toString(), "-initrd", guest.resolve("initrd.img").toString(),
            "-append", "console=ttyS0 quiet colo.ip=" + TwoHostLab.GUEST_IP + "/24",
            "-serial", "file:" + dir.resolve(name + ".serial"), "-qmp", "unix:" + qmp + ",server=on,wait=off",
            "-netdev", "tap,id=hn0,ifname=vt0,script=no,downscript=no,vhost=off,vnet_hdr=off",
            "-device", "virtio-net-pci,netdev=hn0,mac=" + MAC + ",romfile="));
        cmd.addAll(extra);
        if (System.getProperty(TRACE) != null)
        {
            cmd.addAll(List.of("-msg", "timestamp=on", "-trace", System.getProperty(TRACE), "-D", "/tmp/qemu-colo-" + name + ".trace"));
        }
        processes.add(new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve(name + ".out").toFile())
            .start());
        final QmpClient m = QmpClient.connect(qmp, name, QMP_MS);
        monitors.add(m);
        return m;
    }

    private void waitForSerial(final String name, final String line, final int seconds) throws Exception
    {
        final Path serial = dir.resolve(name + ".serial");
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!Files.exists(serial) || !Files.readString(serial).contains(line))
        {
            if (System.nanoTime() - deadline > 0)
            {
                throw new IOException(name + "'s guest did not say '" + line + "' within " + seconds + " s; " + said());
            }
            Thread.sleep(200);
        }
    }

    private String said()
    {
        final StringBuilder b = new StringBuilder();
        for (final String name : List.of("primary", "secondary"))
        {
            try
            {
                final Path out = dir.resolve(name + ".out");
                if (Files.exists(out))
                {
                    b.append(name).append(" QEMU said: ").append(Files.readString(out).strip()).append("; ");
                }
            }
            catch (final IOException ex)
            {
                b.append(name).append(": ").append(ex.getMessage()).append("; ");
            }
        }
        return b.toString();
    }

    @Override
    public void close()
    {
        monitors.forEach(QmpClient::close);
        for (final Process p : processes)
        {
            // ip netns exec runs QEMU in its own process (exec): the PID is QEMU's
            p.destroyForcibly();
            try
            {
                p.waitFor(10, TimeUnit.SECONDS);
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
            }
        }
    }
}
