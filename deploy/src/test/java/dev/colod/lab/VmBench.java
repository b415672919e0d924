package dev.colod.lab;

import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.buffer.NetnsLab;
import dev.colod.core.ColoConfig;
import dev.colod.core.status.ColoCounters;
import dev.colod.os.Netns;
import org.HdrHistogram.Histogram;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Locale;

/**
 * Pause of a real QEMU guest's checkpoints, side by side in one run: 128 MiB, 1 GiB and 4 GiB; strict and
 * speculative; idle and with the guest rewriting 16 MiB of tmpfs in a loop (/cgi-bin/churn); kernel write
 * tracking, and the shadow compare at 128 MiB and 1 GiB for comparison. Per step (p50 of 30 checkpoints): stop,
 * device state (and QEMU's part of it), tracking and copy of written pages (side by side with the device
 * state), resume, and the rest of the pause (strict: transfer and the secondary's commit). Baseline in the same run: memcpy between two direct buffers. Also the pause at protection
 * start (the first paused checkpoint after the live base) and the base's duration. Run as root:
 * {@code mvn -q install -DskipTests && mvn -q -pl deploy exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.lab.VmBench -Dcolod.guest.dir=$PWD/build/guest}
 */
public final class VmBench
{
    /** {@code huge}: the guest's RAM on 2 MiB pages ({@code ram-page-size: 2m}). */
    private record Run(int mib, ColoConfig.Mode mode, ColodConfig.WriteTracking tracking, int vcpus, boolean huge)
    {
        Run(final int mib, final ColoConfig.Mode mode, final ColodConfig.WriteTracking tracking)
        {
            this(mib, mode, tracking, 1);
        }

        Run(final int mib, final ColoConfig.Mode mode, final ColodConfig.WriteTracking tracking, final int vcpus)
        {
            this(mib, mode, tracking, vcpus, false);
        }

        Run onHugePages()
        {
            return new Run(mib, mode, tracking, vcpus, true);
        }

        String cell()
        {
            return mib + " MiB " + mode.name().toLowerCase() + (huge ? ", 2m" : "");
        }
    }

    public static void main(final String[] args) throws Exception
    {
        final double copyGBs = memcpyGBs(256);
        System.out.printf(Locale.ROOT, "# VM checkpoint benchmark (TCG guest, checkpoint delay 100 ms), %s, %d CPUs; " +
            "memcpy baseline %.2f GB/s%n", Runtime.version(), Runtime.getRuntime().availableProcessors(), copyGBs);
        System.out.println("| guest | mode | tracking | load | pause p50 | stop | device (QEMU) | tracking | copy (pages) |" +
            " resume | rest | floor | pause / floor | start pause | base |");
        System.out.println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        final List<Run> runs = List.of(
            new Run(128, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.COMPARE),
            new Run(128, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL),
            new Run(128, ColoConfig.Mode.SPECULATIVE, ColodConfig.WriteTracking.KERNEL),
            new Run(128, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL, 2),
            new Run(128, ColoConfig.Mode.SPECULATIVE, ColodConfig.WriteTracking.KERNEL, 2),
            new Run(128, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL, 4),
            new Run(1024, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.COMPARE),
            new Run(1024, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL),
            new Run(1024, ColoConfig.Mode.SPECULATIVE, ColodConfig.WriteTracking.KERNEL),
            new Run(4096, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL),
            new Run(4096, ColoConfig.Mode.SPECULATIVE, ColodConfig.WriteTracking.KERNEL));
        // optional arguments: the guest sizes (MiB) to run, e.g. "128 4096"; all by default (the vCPU rows are 128 MiB)
        final List<Integer> only = java.util.Arrays.stream(args).map(Integer::valueOf).toList();
        // -Dcolod.vmbench.repeat=N: only the kernel-tracking rows of one vCPU, N times in turn, then the start pause
        // against the idle pause per size and mode, and the idle pause per size against 128 MiB's (issue 23's goals)
        final int repeat = Integer.getInteger("colod.vmbench.repeat", 0);
        // -Dcolod.vmbench.pages=4k (default) | 2m | both: the guest's RAM page size; both runs each kernel-tracking row
        // of one vCPU on 4 KiB pages and then on 2 MiB pages
        final String pages = System.getProperty("colod.vmbench.pages", "4k");
        final List<Run> sized = "4k".equals(pages) ? runs : runs.stream()
            .filter(r -> r.tracking() == ColodConfig.WriteTracking.KERNEL && r.vcpus() == 1)
            .flatMap(r -> "2m".equals(pages) ? java.util.stream.Stream.of(r.onHugePages())
                : java.util.stream.Stream.of(r, r.onHugePages())).toList();
        final List<Run> chosen = repeat == 0 ? sized : sized.stream()
            .filter(r -> r.tracking() == ColodConfig.WriteTracking.KERNEL && r.vcpus() == 1).toList();
        final java.util.Map<String, List<double[]>> byCell = new java.util.LinkedHashMap<>();
        for (int round = 0; round < Math.max(1, repeat); round++)
        {
            for (final Run r : chosen)
            {
                if (!only.isEmpty() && !only.contains(r.mib()))
                {
                    continue;
                }
                final double[] idleAndStart = one(r, copyGBs);
                byCell.computeIfAbsent(r.cell(), k -> new java.util.ArrayList<>())
                    .add(idleAndStart);
            }
        }
        if (repeat > 0)
        {
            summary(byCell);
        }
        System.exit(0);
    }

    /** Start pause / idle pause per run, and the idle pause against 128 MiB's of the same mode and round. */
    private static void summary(final java.util.Map<String, List<double[]>> byCell)
    {
        System.out.println();
        System.out.println("| guest, mode | idle pause p50 per run (ms) | start pause per run (ms) | start / idle per run | " +
            "worst | idle / 128 MiB idle per run |");
        System.out.println("|---|---|---|---|---|---|");
        for (final java.util.Map.Entry<String, List<double[]>> e : byCell.entrySet())
        {
            final List<double[]> runs = e.getValue();
            final List<double[]> small = byCell.get("128 MiB " + e.getKey().substring(e.getKey().indexOf("MiB ") + 4));
            final StringBuilder idle = new StringBuilder();
            final StringBuilder start = new StringBuilder();
            final StringBuilder ratio = new StringBuilder();
            final StringBuilder size = new StringBuilder();
            double worst = 0;
            for (int i = 0; i < runs.size(); i++)
            {
                final double[] r = runs.get(i);
                final String sep = i == 0 ? "" : " / ";
                idle.append(sep).append(String.format(Locale.ROOT, "%.1f", r[0]));
                start.append(sep).append(String.format(Locale.ROOT, "%.1f", r[1]));
                ratio.append(sep).append(String.format(Locale.ROOT, "%.2f", r[1] / r[0]));
                worst = Math.max(worst, r[1] / r[0]);
                if (small != null && i < small.size())
                {
                    size.append(sep).append(String.format(Locale.ROOT, "%.2f", r[0] / small.get(i)[0]));
                }
            }
            System.out.printf(Locale.ROOT, "| %s | %s | %s | %s | %.2fx | %s |%n", e.getKey(), idle, start, ratio, worst, size);
        }
    }

    /** One row pair (idle, writing) of {@code r}; returns its idle pause p50 and its start pause, in ms. */
    private static double[] one(final Run r, final double copyGBs) throws Exception
    {
        try (TwoHostLab.Lab rig = new TwoHostLab.Lab(FailoverEndToEndTest.GUEST, r.mib()))
        {
            if (r.vcpus() > 1)
            {
                rig.vmOption("vcpus: " + r.vcpus());
            }
            if (r.huge())
            {
                rig.hugePages();
            }
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(100).in(r.mode()).tracking(r.tracking());
            rig.bootPrimary(how);
            rig.protect(how);
            final QemuStateSource s = rig.stateSource();
            final double idle = sample(rig, s, r, "idle", copyGBs);
            final double start = rig.primary().counters().protectionStartPauseMicros.get() / 1000.0;
            Netns.call(rig.cli, () -> TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/cgi-bin/churn", 10_000));
            Thread.sleep(1000);
            sample(rig, s, r, "writing", copyGBs);
            return new double[]{idle, start};
        }
    }

    /** Prints one row; returns its pause p50 in ms. */
    private static double sample(final TwoHostLab.Lab rig, final QemuStateSource s, final Run r, final String load,
        final double copyGBs) throws InterruptedException
    {
        final ColoCounters c = rig.primary().counters();
        c.pauseMicros.reset();
        final QemuStateSource.Timings before = s.timings();
        final long c0 = c.checkpointsCompleted.get();
        while (c.checkpointsCompleted.get() < c0 + 30)
        {
            Thread.sleep(10);
        }
        final QemuStateSource.Timings t = since(s.timings(), before);
        final double pause = c.pauseMicros.getValueAtPercentile(50) / 1000.0;
        final double stop = t.stop().getValueAtPercentile(50) / 1000.0;
        final double dev = t.device().getValueAtPercentile(50) / 1000.0;
        final double track = t.tracking().getValueAtPercentile(50) / 1000.0;
        final double copy = t.copy().getValueAtPercentile(50) / 1000.0;
        final double resume = t.resume().getValueAtPercentile(50) / 1000.0;
        final long pages = t.dirtyPages().getValueAtPercentile(50);
        // the least a pause can be: stop + device state + the written pages at memcpy speed + resume
        final double floor = stop + dev + pages * 4096.0 / (copyGBs * 1e9) * 1e3 + resume;
        // device state and tracking + copy run side by side
        final double rest = Math.max(0, pause - stop - Math.max(dev, track + copy) - resume);
        System.out.printf(Locale.ROOT, "| %d MiB%s | %s | %s | %s | %.1f ms | %.1f | %.1f (%.1f) | %.2f | %.2f (%d) | %.1f | %.1f |" +
                " %.1f | %.2fx | %.1f ms | %.1f s |%n", r.mib(), r.vcpus() > 1 ? ", " + r.vcpus() + " vCPUs" : "", r.mode().name().toLowerCase(),
            s.writeTracking() + (s.ramPageBytes() > 4096 ? ", " + s.ramPageBytes() / 1024 + " KiB pages" : ""), load, pause,
            stop, dev, t.deviceQemu().getValueAtPercentile(50) / 1000.0, track, copy, pages, resume, rest, floor,
            pause / floor, c.protectionStartPauseMicros.get() / 1000.0, c.baseSyncMicros.getMaxValue() / 1e6);
        return pause;
    }

    /** What was recorded between two snapshots. */
    private static QemuStateSource.Timings since(final QemuStateSource.Timings after, final QemuStateSource.Timings before)
    {
        return new QemuStateSource.Timings(minus(after.stop(), before.stop()), minus(after.device(), before.device()),
            minus(after.deviceQemu(), before.deviceQemu()), minus(after.tracking(), before.tracking()),
            minus(after.copy(), before.copy()), minus(after.resume(), before.resume()),
            minus(after.dirtyPages(), before.dirtyPages()));
    }

    private static Histogram minus(final Histogram after, final Histogram before)
    {
        after.subtract(before);
        return after;
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
