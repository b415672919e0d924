package dev.colod.lab;

import dev.colod.agent.vm.QemuStateSource;
import dev.colod.buffer.NetnsLab;
import dev.colod.core.ExitEvent;
import org.HdrHistogram.Histogram;

import java.nio.ByteBuffer;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * Pause time per checkpoint of a real QEMU guest broken down into stop, device state, page scan and resume,
 * for 128 and 512 MiB, idle and with the guest rewriting 16 MiB of memory in a loop; the page scan against a
 * plain memory copy of the same size measured in the same run; and failover time from the primary's death to
 * the client's first answer from the resumed guest. Run as root:
 * {@code mvn -q -pl agent exec:java -Dexec.classpathScope=test -Dexec.mainClass=dev.colod.agent.VmBench}
 */
public final class VmBench
{
    public static void main(final String[] args) throws Exception
    {
        System.out.printf(Locale.ROOT, "# VM checkpoint benchmark (TCG guest, strict mode, checkpoint delay 100 ms), %s%n",
            Runtime.version());
        for (final int mib : new int[]{128, 512})
        {
            final double copyGBs = memcpyGBs(mib);
            try (TwoHostLab.Lab rig = new TwoHostLab.Lab(FailoverEndToEndTest.GUEST, mib))
            {
                rig.bootPrimary(TwoHostLab.Protection.of(100));
                rig.protect(TwoHostLab.Protection.of(100));
                final QemuStateSource s = rig.stateSource();
                sample(rig, s, mib, "idle", copyGBs);
                dev.colod.buffer.net.Netns.call(rig.cli, () -> churn());
                Thread.sleep(1000);
                sample(rig, s, mib, "writing", copyGBs);

                try (TwoHostLab.Client client = new TwoHostLab.Client(rig.cli))
                {
                    while (client.values().size() < 3)
                    {
                        Thread.sleep(10);
                    }
                    final long killed = System.nanoTime();
                    rig.killPrimary();
                    final ExitEvent e = rig.secondaryExits().poll(60, TimeUnit.SECONDS);
                    final long detected = System.nanoTime();
                    while (client.countSince(killed) < 1)
                    {
                        Thread.sleep(1);
                    }
                    final long answeredMs = client.firstAfterMs(killed);
                    System.out.printf(Locale.ROOT, "%4d MiB failover (cold start): loss detected after %d ms (heartbeat timeout" +
                        " 1000 ms), QEMU start %d ms, device-state load + cont %d ms, first client answer %d ms after the" +
                        " kill (%s)%n", mib, (detected - killed) / 1_000_000, rig.failover().lastStartMicros / 1000,
                        rig.failover().lastLoadMicros / 1000, answeredMs, e == null ? "?" : "failed over");
                }
            }
        }
        System.exit(0);
    }

    private static Object churn()
    {
        try (java.net.Socket so = new java.net.Socket())
        {
            so.connect(new java.net.InetSocketAddress(TwoHostLab.GUEST_IP, 80), 5000);
            so.setSoTimeout(10_000);
            so.getOutputStream().write("GET /cgi-bin/churn HTTP/1.0\r\n\r\n".getBytes());
            so.getInputStream().readAllBytes();
        }
        catch (final java.io.IOException ex)
        {
            throw new java.io.UncheckedIOException(ex);
        }
        return null;
    }

    private static void sample(final TwoHostLab.Lab rig, final QemuStateSource s, final int mib,
        final String load, final double copyGBs) throws InterruptedException
    {
        for (final Histogram h : new Histogram[]{s.stopMicros, s.deviceMicros, s.scanMicros, s.resumeMicros, s.dirtyPages})
        {
            h.reset();
        }
        rig.primary().counters().pauseMicros.reset();
        final long c0 = rig.primary().counters().checkpointsCompleted.get();
        while (rig.primary().counters().checkpointsCompleted.get() < c0 + 30)
        {
            Thread.sleep(10);
        }
        final double pause = rig.primary().counters().pauseMicros.getValueAtPercentile(50);
        final double dev = s.deviceMicros.getValueAtPercentile(50);
        final double scan = s.scanMicros.getValueAtPercentile(50);
        final double scanGBs = (mib * 1048576.0) / (scan / 1e6) / 1e9;
        final double ideal = dev + (mib * 1048576.0) / (copyGBs * 1e9) * 1e6;
        System.out.printf(Locale.ROOT, "%4d MiB %-7s pause p50 %6.1f ms = stop %.1f + device %.1f + scan %.1f (%d dirty pages," +
                " %.2f GB/s vs memcpy %.2f GB/s) + resume %.1f ms; pause / (device + RAM at memcpy speed) = %.2fx%n",
            mib, load, pause / 1000, s.stopMicros.getValueAtPercentile(50) / 1000.0, dev / 1000, scan / 1000,
            s.dirtyPages.getValueAtPercentile(50), scanGBs, copyGBs, s.resumeMicros.getValueAtPercentile(50) / 1000.0,
            pause / ideal);
    }

    /** Plain copy of {@code mib} MiB between two direct buffers: the memory-bandwidth baseline. */
    private static double memcpyGBs(final int mib)
    {
        final ByteBuffer a = ByteBuffer.allocateDirect(mib << 20);
        final ByteBuffer b = ByteBuffer.allocateDirect(mib << 20);
        double best = 0;
        for (int i = 0; i < 8; i++)
        {
            final long t0 = System.nanoTime();
            b.clear().put(a.clear());
            final long t1 = System.nanoTime();
            best = Math.max(best, (mib * 1048576.0) / ((t1 - t0) / 1e9) / 1e9);
        }
        return best;
    }

    static
    {
        NetnsLab.class.getName(); // same test classpath as the end-to-end test
    }
}
