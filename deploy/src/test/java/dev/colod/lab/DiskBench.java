package dev.colod.lab;

import dev.colod.agent.disk.DiskSet;
import dev.colod.core.ColoConfig;
import dev.colod.core.status.ColoCounters;
import dev.colod.os.Netns;
import org.HdrHistogram.Histogram;

import java.util.Locale;

/**
 * The guest's disk, protected vs the same disk unprotected, side by side in one run (one lab per mode: the guest
 * measures unprotected after one uncounted warm-up round, then protected): {@code /cgi-bin/diskbench?seq} writes
 * 512 MiB sequentially in the guest (1 MiB O_DIRECT writes, synced), {@code ?sync} makes 100 synced 4 KiB writes
 * (one dd + fsync each). Timed by the host, from the request to the answer (the guest's clock stands still while
 * the VM is paused, so it cannot see checkpoints); a protected answer also waits for output commit once (at most
 * one checkpoint interval plus a checkpoint). Also: how much of the run the VM was paused, and the disk step.
 * Run as root: {@code mvn -q install -DskipTests && mvn -q -pl deploy exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.lab.DiskBench -Dcolod.guest.dir=$PWD/build/guest} (add {@code -Dexec.args=formats}
 * for a raw disk vs a qcow2 disk, plaintext, side by side per mode).
 */
public final class DiskBench
{
    private static final int ROUNDS = 3;

    public static void main(final String[] args) throws Exception
    {
        System.out.printf(Locale.ROOT, "# disk benchmark (TCG guest, 128 MiB RAM, 1 GiB disk, checkpoint delay 100 ms), %s, " +
            "%d CPUs; best of %d rounds each, host-timed%n", Runtime.version(), Runtime.getRuntime().availableProcessors(),
            ROUNDS);
        System.out.println("| mode, link | seq write unprotected | protected | ratio | paused during seq | synced 4 KiB write " +
            "unprotected | protected | added per write | paused per write | disk step p50 / p99 | disk bytes per " +
            "checkpoint p50 / max | transfer / commit p50 | longest pause (seq) | writes throttled (times, s) |");
        System.out.println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        // "formats": raw vs qcow2 side by side (plaintext); else each periodic mode with TLS and plaintext (raw)
        final boolean formats = args.length > 0 && "formats".equals(args[0]);
        for (final ColoConfig.Mode mode : ColoConfig.Mode.PERIODIC)
        for (final boolean second : new boolean[]{true, false})
        {
            final boolean tls = !formats && second;
            final boolean qcow2 = formats && second;
            final TwoHostLab.Lab lab = new TwoHostLab.Lab(FailoverEndToEndTest.GUEST);
            try (TwoHostLab.Lab rig = tls ? lab.withDisk(1024) : qcow2 ? lab.withQcow2Disk(1024).plaintext()
                : lab.withDisk(1024).plaintext())
            {
                final TwoHostLab.Protection how = TwoHostLab.Protection.of(100).in(mode);
                rig.bootPrimary(how);
                best(rig, "seq", 1, null); // warm-up, not counted: the first writes allocate the image's blocks
                final double[] seqOff = best(rig, "seq", ROUNDS, null);
                final double[] syncOff = best(rig, "sync", ROUNDS, null);
                rig.protect(how);
                final ColoCounters c = rig.primary().counters();
                final DiskSet d = rig.stateSource().disk();
                d.diskMicros.reset();
                d.diskBytesPerCheckpoint.reset();
                c.transferMicros.reset();
                c.commitMicros.reset();
                final long throttles0 = rig.stateSource().diskThrottles.get();
                final long throttled0 = rig.stateSource().diskThrottledMicros.get();
                final double[] seqOn = best(rig, "seq", ROUNDS, c.pauseMicros);
                final double[] syncOn = best(rig, "sync", ROUNDS, c.pauseMicros);
                System.out.printf(Locale.ROOT, "| %s, %s | %.0f MiB/s | %.0f MiB/s | %.2fx | %.0f%% | %.1f ms | %.1f ms | %+.1f ms |" +
                        " %.1f ms | %.1f / %.1f ms | %d KiB / %d KiB | %.1f / %.1f ms | %.1f ms | %d, %.1f |%n",
                    mode.name().toLowerCase(), (tls ? "TLS" : "plaintext") + (qcow2 ? ", qcow2" : formats ? ", raw" : ""), 512 / seqOff[0], 512 / seqOn[0], seqOff[0] / seqOn[0],
                    100 * seqOn[1] / seqOn[0], syncOff[0] * 10, syncOn[0] * 10, (syncOn[0] - syncOff[0]) * 10,
                    syncOn[1] * 10, d.diskMicros.getValueAtPercentile(50) / 1000.0,
                    d.diskMicros.getValueAtPercentile(99) / 1000.0, d.diskBytesPerCheckpoint.getValueAtPercentile(50) >> 10,
                    d.diskBytesPerCheckpoint.getMaxValue() >> 10, c.transferMicros.getValueAtPercentile(50) / 1000.0,
                    c.commitMicros.getValueAtPercentile(50) / 1000.0, seqOn[2],
                    rig.stateSource().diskThrottles.get() - throttles0,
                    (rig.stateSource().diskThrottledMicros.get() - throttled0) / 1e6);
            }
        }
        System.exit(0);
    }

    /**
     * The fastest of {@code rounds} requests of {@code /cgi-bin/diskbench?what}: its wall time in seconds, and the
     * seconds the VM was paused during it (from {@code pauses}, the engine's pause histogram; 0 without), and the
     * longest pause of all rounds in ms.
     */
    private static double[] best(final TwoHostLab.Lab rig, final String what, final int rounds, final Histogram pauses)
        throws Exception
    {
        double best = Double.MAX_VALUE;
        double paused = 0;
        double longest = 0;
        for (int i = 0; i < rounds; i++)
        {
            if (pauses != null)
            {
                pauses.reset();
            }
            final long t0 = System.nanoTime();
            Netns.call(rig.cli, () -> TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/cgi-bin/diskbench?" + what, 300_000));
            final double s = (System.nanoTime() - t0) / 1e9;
            longest = Math.max(longest, pauses == null ? 0 : pauses.getMaxValue() / 1000.0);
            if (s < best)
            {
                best = s;
                paused = pauses == null ? 0 : pauses.getMean() * pauses.getTotalCount() / 1e6;
            }
        }
        return new double[]{best, paused, longest};
    }
}
