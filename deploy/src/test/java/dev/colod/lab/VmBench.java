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
                dev.colod.buffer.net.Netns.call(rig.cli, () -> TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/cgi-bin/churn", 10_000));
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

    private static void sample(final TwoHostLab.Lab rig, final QemuStateSource s, final int mib,
        final String load, final double copyGBs) throws InterruptedException
    {
        for (final Histogram h : new Histogram[]{s.stopMicros, s.deviceMicros, s.trackMicros, s.copyMicros, s.resumeMicros,
            s.dirtyPages})
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
        final double stop = s.stopMicros.getValueAtPercentile(50);
        final double track = s.trackMicros.getValueAtPercentile(50);
        final double copy = s.copyMicros.getValueAtPercentile(50);
        final double resume = s.resumeMicros.getValueAtPercentile(50);
        final long pages = s.dirtyPages.getValueAtPercentile(50);
        // what the pause cannot go below: stop + device state + the written pages at memcpy speed + resume
        final double floor = stop + dev + pages * 4096.0 / (copyGBs * 1e9) * 1e6 + resume;
        System.out.printf(Locale.ROOT, "%5d MiB %-7s %-7s pause p50 %6.1f ms = stop %.1f + device %.1f + tracking %.2f + " +
                "copy %.2f (%d written pages) + resume %.1f ms; pause / (stop + device + pages at memcpy %.1f GB/s + " +
                "resume) = %.2fx%n", mib, s.writeTracking(), load, pause / 1000, stop / 1000, dev / 1000, track / 1000,
            copy / 1000, pages, copyGBs, resume / 1000, pause / floor);
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
