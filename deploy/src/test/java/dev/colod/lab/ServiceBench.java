package dev.colod.lab;

import dev.colod.agent.config.ColodConfig;
import dev.colod.buffer.NetnsLab;
import dev.colod.core.ColoConfig;
import dev.colod.core.status.ColoCounters;
import dev.colod.os.Netns;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What protection costs the guest's clients (docs/BENCHMARKS.md, "Service"): the test guest's services seen from the
 * client namespace of the two-host lab, each row a fresh lab in one run, the first row the VM's tap plainly on the
 * bridge (no colod in the path: the baseline every ratio is against). Per row: sequential GET of a static page
 * (p50/p99 of 60), request rate and p99 at 1, 8 and 32 concurrent clients (6 s each), TCP bulk from the guest (a 64
 * MiB answer made on the fly, at most 8 s) and into it (a 16 MiB POST, at most 15 s), a small UDP request/answer (p50
 * of 100, 64 bytes), and for protected rows the share of time the guest was paused under the 32-client load and the
 * checkpoints by cause. Both "hosts" and the client share this machine's CPUs with the TCG guest. Run as root:
 * {@code mvn -q install -DskipTests && mvn -q -pl deploy exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.lab.ServiceBench -Dcolod.guest.dir=$PWD/build/guest [-Dexec.args="name-filter ..."]}
 */
public final class ServiceBench
{
    /** One configuration: {@code how} null = the bridge baseline; {@code protect} false = colod passing output. */
    private record Row(String name, ColodConfig.Buffer buffer, TwoHostLab.Protection how, boolean protect, Boolean trigger,
                       List<String> options)
    {
        Row(final String name, final ColodConfig.Buffer buffer, final TwoHostLab.Protection how, final boolean protect,
            final Boolean trigger)
        {
            this(name, buffer, how, protect, trigger, List.of());
        }
    }

    private record Result(Row row, double seqP50, double seqP99, double[] rate, double[] p99, double downMBs, double upMBs,
                          double udpP50, long udpLost, double pausedPct, double ckptPerS, String causes, long errors,
                          String parts)
    {
    }

    /**
     * A row option (not a VM option): a second, unprotected lab runs beside the row's and its guest is given the same
     * requests at the same moments — the work hybrid mode's running copy adds, on the same two CPUs — so the bridge
     * row with a twin is the baseline of what two guests sharing this machine can serve.
     */
    private static final String TWIN = "#twin";
    /**
     * A row option: not colod but QEMU's own COLO in hybrid mode (colo-compare and its filters, {@link QemuColo}) on
     * the same lab and guest, with the row's checkpoint delay; runs only when asked by name.
     */
    private static final String QEMU_COLO = "#qemu-colo";
    private static final String IP = TwoHostLab.GUEST_IP;

    /** A workload on one lab. */
    private interface Load<T>
    {
        T on(TwoHostLab.Lab lab) throws Exception;
    }

    /** {@code load} on {@code lab}, and at the same time on {@code twin} (if any), whose result is dropped. */
    private static <T> T alike(final TwoHostLab.Lab lab, final TwoHostLab.Lab twin, final Load<T> load) throws Exception
    {
        if (twin == null)
        {
            return load.on(lab);
        }
        final java.util.concurrent.FutureTask<T> other = new java.util.concurrent.FutureTask<>(() -> load.on(twin));
        final Thread t = new Thread(other, "twin-load");
        t.start();
        try
        {
            return load.on(lab);
        }
        finally
        {
            other.get();
        }
    }
    private static final int[] CLIENTS = {1, 8, 32};

    public static void main(final String[] args) throws Exception
    {
        final List<Row> rows = rows();
        final List<Result> results = new ArrayList<>();
        System.out.printf(Locale.ROOT, "# Service benchmark (test guest 128 MiB, TCG, 1 vCPU), %s, %d CPUs%n",
            Runtime.version(), Runtime.getRuntime().availableProcessors());
        for (final Row r : rows)
        {
            // filters name rows with '_' for ' ', e.g. "speculative_100_(tap)"; the bridge always runs
            final String key = r.name().replace(' ', '_');
            final boolean named = java.util.Arrays.asList(args).contains(key);
            if ((args.length > 0 || r.options().contains(QEMU_COLO)) && !r.name().equals("bridge") && !named)
            {
                continue;
            }
            final Result res = run(r);
            results.add(res);
            System.out.println(line(res, results.get(0)));
        }
        System.out.println();
        System.out.println(header());
        results.forEach(res -> System.out.println(line(res, results.get(0))));
        System.exit(0);
    }

    private static List<Row> rows()
    {
        final List<Row> rows = new ArrayList<>();
        rows.add(new Row("bridge", ColodConfig.Buffer.TAP, null, false, null));
        rows.add(new Row("bridge, twin guest loaded alike", ColodConfig.Buffer.TAP, null, false, null, List.of(TWIN)));
        rows.add(new Row("colod pass-through (tap)", ColodConfig.Buffer.TAP, TwoHostLab.Protection.of(100), false, null));
        for (final ColoConfig.Mode m : ColoConfig.Mode.PERIODIC)
        {
            final String mode = m.name().toLowerCase();
            for (final ColodConfig.Buffer b : ColodConfig.Buffer.values())
            {
                rows.add(new Row(mode + " 100 (" + b.name().toLowerCase() + ")", b, TwoHostLab.Protection.of(100).in(m), true,
                    true));
            }
            rows.add(new Row(mode + " 20 (tap)", ColodConfig.Buffer.TAP, TwoHostLab.Protection.of(20).in(m), true, true));
            // before: checkpoints only at the interval (output-trigger: false)
            for (final int delay : new int[]{100, 20})
            {
                rows.add(new Row(mode + " " + delay + " timer-only (tap)", ColodConfig.Buffer.TAP,
                    TwoHostLab.Protection.of(delay).in(m), true, false));
            }
        }
        // hybrid mode: the secondary's copy runs, frames leave when it sent the same; checkpoints on mismatch, the
        // compare timeout (default 100 ms) or the interval
        rows.add(new Row("hybrid 1000 (tap)", ColodConfig.Buffer.TAP, TwoHostLab.Protection.of(1000).in(ColoConfig.Mode.HYBRID),
            true, null));
        rows.add(new Row("hybrid 1000 timeout 500 (tap)", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(1000).in(ColoConfig.Mode.HYBRID), true, null, List.of("compare-timeout-ms: 500")));
        // hybrid mode's defaults (interval 10 s, compare timeout 500 ms), and the compare timeout it had before
        rows.add(new Row("hybrid 10000 (tap)", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(ColoConfig.HYBRID_DELAY_MS).in(ColoConfig.Mode.HYBRID), true, null));
        // HTTP Date values compared byte for byte, as before http-date-tolerance-ms
        rows.add(new Row("hybrid 10000 exact dates (tap)", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(ColoConfig.HYBRID_DELAY_MS).in(ColoConfig.Mode.HYBRID), true, null,
            List.of("http-date-tolerance-ms: 0")));
        rows.add(new Row("hybrid 10000 timeout 100 (tap)", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(ColoConfig.HYBRID_DELAY_MS).in(ColoConfig.Mode.HYBRID), true, null,
            List.of("compare-timeout-ms: 100")));
        // QEMU's own COLO beside it: the same interval, colo-compare's defaults (a packet without its counterpart for
        // 3 s, found by a scan every 3 s, asks for a checkpoint), then colod's compare timeout (500 ms, scan 50 ms)
        rows.add(new Row("qemu colo-compare 10000", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(ColoConfig.HYBRID_DELAY_MS), false, null, List.of(QEMU_COLO)));
        rows.add(new Row("qemu colo-compare 10000 timeout 500", ColodConfig.Buffer.TAP,
            TwoHostLab.Protection.of(ColoConfig.HYBRID_DELAY_MS), false, null,
            List.of(QEMU_COLO, QEMU_COLO + ",compare_timeout=500,expired_scan_cycle=50")));
        // the knobs, speculative 100 (tap)
        for (final int linger : new int[]{250, 500, 1000})
        {
            rows.add(new Row("speculative 100 linger " + linger + " (tap)", ColodConfig.Buffer.TAP,
                TwoHostLab.Protection.of(100).in(ColoConfig.Mode.SPECULATIVE), true, true, List.of("output-linger-us: " + linger)));
        }
        for (final ColoConfig.Mode m : ColoConfig.Mode.PERIODIC)
        {
            for (final int paused : new int[]{10, 15, 50})
            {
                rows.add(new Row(m.name().toLowerCase() + " 100 paused " + paused + "% (tap)", ColodConfig.Buffer.TAP,
                    TwoHostLab.Protection.of(100).in(m), true, true, List.of("max-paused-percent: " + paused)));
            }
        }
        return rows;
    }

    private static Result run(final Row r) throws Exception
    {
        try (TwoHostLab.Lab lab = new TwoHostLab.Lab(FailoverEndToEndTest.GUEST, 128, false);
             TwoHostLab.Lab twin = r.options().contains(TWIN) ? new TwoHostLab.Lab(FailoverEndToEndTest.GUEST, 128, false)
                 : null)
        {
            lab.buffer(r.buffer());
            if (r.trigger() != null)
            {
                lab.outputTrigger(r.trigger());
            }
            r.options().stream().filter(o -> !o.startsWith("#")).forEach(lab::vmOption);
            final TwoHostLab.Protection how = r.how() == null ? TwoHostLab.Protection.of(100).withoutOutputCommit() : r.how();
            final QemuColo qemu = r.options().contains(QEMU_COLO)
                ? QemuColo.start(lab, FailoverEndToEndTest.GUEST, how.checkpointDelayMs(), r.options().stream()
                    .filter(o -> o.startsWith(QEMU_COLO + ",")).map(o -> o.substring(QEMU_COLO.length())).findFirst().orElse(""))
                : null;
            try
            {
                return run(r, lab, twin, how, qemu);
            }
            finally
            {
                if (qemu != null)
                {
                    qemu.close();
                }
            }
        }
    }

    private static Result run(final Row r, final TwoHostLab.Lab lab, final TwoHostLab.Lab twin, final TwoHostLab.Protection how,
        final QemuColo qemu) throws Exception
    {
        if (qemu == null)
        {
            lab.bootPrimary(how);
        }
        if (twin != null)
        {
            twin.bootPrimary(TwoHostLab.Protection.of(100).withoutOutputCommit());
        }
        if (r.protect())
        {
            lab.protect(how);
        }
        if (qemu == null)
        {
            // colod's one-time AES-GCM warm-up (a whole CPU for seconds, once per JVM) must not share the first row's
            // measurements: it started with the first colod of this JVM (the bridge row's pass-through)
            dev.colod.agent.tls.SealedChunks.awaitWarm(60_000);
        }
        final ColoCounters c = r.protect() ? lab.primary().counters() : null;
        // the guest's paused time and the checkpoints so far: colod's counters, or QEMU's STOP/RESUME events
        final java.util.function.LongSupplier pausedNanos = qemu != null ? () -> qemu.pausedMicros() * 1000
            : c != null ? c.pausedNanos::get : () -> 0;
        final java.util.function.LongSupplier checkpoints = qemu != null ? qemu::checkpoints
            : c != null ? c.checkpointsCompleted::get : () -> 0;
        alike(lab, twin, l -> sequential(l, 10)); // warm up: ARP, the guest's page cache, the JIT
        final Histogram seq = alike(lab, twin, l -> sequential(l, 60));
        final double[] rate = new double[CLIENTS.length];
        final double[] p99 = new double[CLIENTS.length];
        double pausedPct = 0;
        double ckptPerS = 0;
        String causes = "";
        long errors = 0;
        String parts = "";
        for (int i = 0; i < CLIENTS.length; i++)
        {
            if (c != null && CLIENTS[i] == 8)
            {
                for (final Histogram h : new Histogram[]{c.pauseMicros, c.transferMicros, c.commitMicros, c.checkpointMicros})
                {
                    h.reset();
                }
            }
            final long paused0 = pausedNanos.getAsLong();
            final long ckpt0 = checkpoints.getAsLong();
            final long[] cause0 = causes(c);
            final long t0 = System.nanoTime();
            final Histogram h = new ConcurrentHistogram(60_000_000_000L, 2);
            final AtomicLong failed = new AtomicLong();
            final int clients = CLIENTS[i];
            alike(lab, twin, l ->
            {
                concurrent(l, clients, 6_000, l == lab ? h : new ConcurrentHistogram(60_000_000_000L, 2),
                    l == lab ? failed : new AtomicLong());
                return null;
            });
            final long wall = System.nanoTime() - t0;
            rate[i] = h.getTotalCount() / (wall / 1e9);
            p99[i] = h.getValueAtPercentile(99) / 1e6;
            errors += failed.get();
            if (CLIENTS[i] == 32)
            {
                pausedPct = 100.0 * (pausedNanos.getAsLong() - paused0) / wall;
            }
            if (CLIENTS[i] == 8)
            {
                ckptPerS = (checkpoints.getAsLong() - ckpt0) / (wall / 1e9);
            }
            if (c != null && CLIENTS[i] == 8)
            {
                final long[] cause1 = causes(c);
                causes = String.format(Locale.ROOT, "t%d/o%d/b%d", cause1[0] - cause0[0], cause1[1] - cause0[1],
                    cause1[2] - cause0[2]) + (cause1[3] + cause1[4] - cause0[3] - cause0[4] == 0 ? ""
                    : String.format(Locale.ROOT, "/m%d/c%d", cause1[3] - cause0[3], cause1[4] - cause0[4]));
                // what one checkpoint costs under that load, p50 ms: the pause, the transfer (send to
                // vmstate-received), received to vmstate-loaded, and the whole transaction
                parts = String.format(Locale.ROOT, "%.1f / %.1f / %.1f / %.1f", c.pauseMicros.getValueAtPercentile(50) / 1e3,
                    c.transferMicros.getValueAtPercentile(50) / 1e3, c.commitMicros.getValueAtPercentile(50) / 1e3,
                    c.checkpointMicros.getValueAtPercentile(50) / 1e3);
            }
        }
        final double down = alike(lab, twin, l -> download(l, 64, 8_000));
        final double up = alike(lab, twin, l -> upload(l, 16, 15_000));
        if (r.protect())
        {
            // every dropped frame is counted: say where the row lost any (they cost TCP retransmits)
            final dev.colod.buffer.NicStats n = lab.nic();
            System.out.printf(Locale.ROOT, "# %s: released %d, dropped: limit-frames %d, limit-bytes %d, oversize %d," +
                " write-error %d, backpressure stalls %d%n", r.name(), n.releasedFrames(), n.droppedLimitFrames(),
                n.droppedLimitBytes(), n.droppedOversize(), n.droppedWriteError(), n.backpressureStalls());
        }
        final long[] udpLost = new long[1];
        final double udp = alike(lab, twin, l -> udp(l, 100, l == lab ? udpLost : new long[1]));
        if (r.how() != null && r.how().mode() == ColoConfig.Mode.HYBRID)
        {
            // what left by comparison (the rest by checkpoint) over the whole row
            final dev.colod.buffer.hybrid.Comparer.Stats cmp = lab.comparison();
            final dev.colod.buffer.NicStats n = lab.nic();
            System.out.printf(Locale.ROOT, "# %s: frames released %d, by comparison %d (%.1f %%); compared %d, matched" +
                " %d; checkpoints asked by mismatch %d, compare timeout %d; windows clamped %d, retransmissions " +
                "passed %d, HTTP dates tolerated %d, endings tolerated %d, segments split %d; last: %s%n", r.name(),
                n.releasedFrames(), cmp.releasedByComparison(),
                100.0 * cmp.releasedByComparison() / Math.max(1, n.releasedFrames()), cmp.compared(), cmp.matched(),
                cmp.mismatches(), cmp.timeouts(), cmp.windowsClamped(), cmp.retransmissionsPassed(),
                cmp.datesTolerated(), cmp.teardownsTolerated(), cmp.segmentsSplit(), cmp.lastCause());
            final dev.colod.buffer.hybrid.PrimaryMirror.Stats ch = lab.framesChannel();
            System.out.printf(Locale.ROOT, "# %s: inbound frames copied to the secondary %d, dropped %d%n", r.name(),
                ch.inboundCopied(), ch.inboundDropped());
            System.out.printf(Locale.ROOT, "# %s: a frame waited for the copy's counterpart %.2f ms on average, then " +
                "behind an epoch waiting for its checkpoint %.2f ms on average (longest %.1f ms)%n", r.name(),
                cmp.matchWaitMicros() / 1000.0 / Math.max(1, cmp.matched()),
                cmp.behindMicros() / 1000.0 / Math.max(1, cmp.releasedByComparison()), cmp.behindMaxMicros() / 1000.0);
            final dev.colod.buffer.hybrid.Comparer.Waits w = cmp.waits();
            final StringBuilder kinds = new StringBuilder();
            for (final dev.colod.buffer.hybrid.Comparer.WaitKind k : dev.colod.buffer.hybrid.Comparer.WaitKind.values())
            {
                kinds.append(String.format(Locale.ROOT, " %s %d × %.2f ms,", k.label(), w.count()[k.ordinal()],
                    w.meanMs(k)));
            }
            System.out.printf(Locale.ROOT, "# %s: matched by kind:%s before the copy of their era ran %.2f ms on average%n",
                r.name(), kinds, w.beforeCopyMicros() / 1000.0 / Math.max(1, cmp.matched()));
        }
        return new Result(r, seq.getValueAtPercentile(50) / 1e6, seq.getValueAtPercentile(99) / 1e6, rate, p99, down, up,
            udp, udpLost[0], pausedPct, ckptPerS, causes, errors, parts);
    }

    private static long[] causes(final ColoCounters c)
    {
        return c == null ? new long[5] : new long[]{c.checkpointsByTimer.get(), c.checkpointsByOutput.get(),
            c.checkpointsByBuffer.get(), c.checkpointsByMismatch.get(), c.checkpointsByCompareTimeout.get()};
    }

    /** {@code n} GETs of the static page one after another; latency from connect to the last byte. */
    private static Histogram sequential(final TwoHostLab.Lab lab, final int n) throws Exception
    {
        return Netns.call(lab.cli, () ->
        {
            final Histogram h = new Histogram(60_000_000_000L, 2);
            for (int i = 0; i < n; i++)
            {
                final long t0 = System.nanoTime();
                TwoHostLab.Http.get(IP, "/index.html", 10_000);
                h.recordValue(System.nanoTime() - t0);
            }
            return h;
        });
    }

    /** {@code clients} threads in the client namespace, each GETting the static page in a loop for {@code ms}. */
    private static void concurrent(final TwoHostLab.Lab lab, final int clients, final long ms, final Histogram h,
        final AtomicLong failed) throws InterruptedException
    {
        final long deadline = System.nanoTime() + ms * 1_000_000L;
        final List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < clients; i++)
        {
            final Thread t = new Thread(() ->
            {
                try
                {
                    Netns.enter(lab.cli);
                }
                catch (final IOException ex)
                {
                    throw new IllegalStateException(ex);
                }
                while (System.nanoTime() - deadline < 0)
                {
                    final long t0 = System.nanoTime();
                    try
                    {
                        TwoHostLab.Http.get(IP, "/index.html", 10_000);
                        h.recordValue(System.nanoTime() - t0);
                    }
                    catch (final IOException ex)
                    {
                        if (failed.incrementAndGet() <= 3)
                        {
                            // why, for the first few: a timeout, a reset, or an answer that was no 200
                            System.out.printf(Locale.ROOT, "# %d clients: a request failed after %.0f ms: %s%n", clients,
                                (System.nanoTime() - t0) / 1e6, ex);
                        }
                    }
                }
            }, "client-" + i);
            t.start();
            threads.add(t);
        }
        for (final Thread t : threads)
        {
            t.join();
        }
    }

    /** MB/s of a {@code mib} MiB answer from the guest, read for at most {@code ms}. */
    private static double download(final TwoHostLab.Lab lab, final int mib, final long ms) throws Exception
    {
        return Netns.call(lab.cli, () ->
        {
            try (Socket s = new Socket())
            {
                s.connect(new InetSocketAddress(IP, 80), 10_000);
                s.setSoTimeout(10_000);
                s.setReceiveBufferSize(4 << 20);
                final long t0 = System.nanoTime();
                s.getOutputStream().write(("GET /cgi-bin/bulk?" + mib + " HTTP/1.0\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                final InputStream in = s.getInputStream();
                final byte[] buf = new byte[1 << 16];
                long total = 0;
                final long deadline = t0 + ms * 1_000_000L;
                int n;
                while (System.nanoTime() - deadline < 0 && (n = in.read(buf)) > 0)
                {
                    total += n;
                }
                return total / ((System.nanoTime() - t0) / 1e9) / 1e6;
            }
        });
    }

    /** MB/s of a {@code mib} MiB POST into the guest, sent for at most {@code ms} (bytes the guest took). */
    private static double upload(final TwoHostLab.Lab lab, final int mib, final long ms) throws Exception
    {
        return Netns.call(lab.cli, () ->
        {
            try (Socket s = new Socket())
            {
                s.connect(new InetSocketAddress(IP, 80), 10_000);
                s.setSoTimeout(20_000);
                final long len = (long)mib << 20;
                final long t0 = System.nanoTime();
                final OutputStream out = s.getOutputStream();
                out.write(("POST /cgi-bin/sink HTTP/1.0\r\nContent-Length: " + len + "\r\n\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
                final byte[] chunk = new byte[1 << 16];
                final long deadline = t0 + ms * 1_000_000L;
                long sent = 0;
                while (sent < len && System.nanoTime() - deadline < 0)
                {
                    out.write(chunk);
                    sent += chunk.length;
                }
                if (sent < len)
                {
                    return sent / ((System.nanoTime() - t0) / 1e9) / 1e6; // cut short: what the socket took
                }
                out.flush();
                final String reply = new String(s.getInputStream().readAllBytes(), StandardCharsets.US_ASCII);
                final long got = Long.parseLong(reply.substring(reply.indexOf("\r\n\r\n") + 4).trim());
                return got / ((System.nanoTime() - t0) / 1e9) / 1e6;
            }
        });
    }

    /** p50 ms of {@code n} 64-byte UDP request/answers with the guest's echo; lost ones counted in {@code lost[0]}. */
    private static double udp(final TwoHostLab.Lab lab, final int n, final long[] lost) throws Exception
    {
        return Netns.call(lab.cli, () ->
        {
            final Histogram h = new Histogram(60_000_000_000L, 2);
            try (DatagramSocket s = new DatagramSocket())
            {
                s.setSoTimeout(2_000);
                final InetAddress to = InetAddress.getByName(IP);
                final byte[] out = new byte[64];
                final byte[] in = new byte[2048];
                for (int i = 0; i < n; i++)
                {
                    out[0] = (byte)i;
                    final long t0 = System.nanoTime();
                    s.send(new DatagramPacket(out, out.length, to, 7));
                    try
                    {
                        final DatagramPacket p = new DatagramPacket(in, in.length);
                        do
                        {
                            s.receive(p);
                        }
                        while (in[0] != out[0]);
                        h.recordValue(System.nanoTime() - t0);
                    }
                    catch (final SocketTimeoutException ex)
                    {
                        lost[0]++;
                    }
                }
            }
            return h.getTotalCount() == 0 ? -1 : h.getValueAtPercentile(50) / 1e6;
        });
    }

    private static String header()
    {
        return "| row | GET p50 ms | GET p99 ms | 1 client req/s | 8 clients req/s | 32 clients req/s (p99 ms) | " +
            "bulk from guest MB/s | bulk into guest MB/s | UDP p50 ms | paused at 32 clients | ckpt/s at 8 (timer/output/buffer[/mismatch/compare-timeout]) | " +
            "at 8: pause / transfer / loaded / whole, p50 ms |\n" +
            "|---|---|---|---|---|---|---|---|---|---|---|---|";
    }

    private static String line(final Result r, final Result bridge)
    {
        final boolean base = r == bridge;
        final boolean qemu = r.row().options().contains(QEMU_COLO);
        return String.format(Locale.ROOT, "| %s | %.1f%s | %.1f | %.0f%s | %.0f%s | %.0f%s (%.0f) | %.1f%s | %.1f%s | %.2f%s%s | %s | %s | %s |",
            r.row().name(), r.seqP50(), base ? "" : ratio(r.seqP50(), bridge.seqP50()), r.seqP99(),
            r.rate()[0], base ? "" : ratio(r.rate()[0], bridge.rate()[0]),
            r.rate()[1], base ? "" : ratio(r.rate()[1], bridge.rate()[1]),
            r.rate()[2], base ? "" : ratio(r.rate()[2], bridge.rate()[2]), r.p99()[2],
            r.downMBs(), base ? "" : ratio(r.downMBs(), bridge.downMBs()),
            r.upMBs(), base ? "" : ratio(r.upMBs(), bridge.upMBs()),
            r.udpP50(), base ? "" : ratio(r.udpP50(), bridge.udpP50()), r.udpLost() > 0 ? " (" + r.udpLost() + " lost)" : "",
            r.row().protect() || qemu ? String.format(Locale.ROOT, "%.0f %%", r.pausedPct()) : "-",
            r.row().protect() ? String.format(Locale.ROOT, "%.1f (%s)", r.ckptPerS(), r.causes())
                : qemu ? String.format(Locale.ROOT, "%.1f", r.ckptPerS()) : "-",
            r.row().protect() ? r.parts() : "-")
            + (r.errors() > 0 ? " " + r.errors() + " failed requests" : "");
    }

    private static String ratio(final double v, final double base)
    {
        return String.format(Locale.ROOT, " (%.2fx)", v / base);
    }

    static
    {
        NetnsLab.class.getName(); // same test classpath as the end-to-end test
    }
}
