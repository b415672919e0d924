package dev.colod.lab;

import dev.colod.buffer.NicStats;
import dev.colod.core.ExitEvent;
import dev.colod.core.status.ColoCounters;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * README's main job: a protected VM survives the loss of its host, on one machine. Two host namespaces,
 * a switch and a client; the real test guest with its HTTP counter; colod's checkpointing and output commit;
 * a live view of what is held and released each epoch; the primary host killed; the secondary resumes the
 * guest; the client's counter goes on without a repeat. Exits 1 if the client ever saw a value twice or if
 * no frame was ever held.
 */
public final class TwoHostDemo
{
    public static void main(final String[] args) throws Exception
    {
        final Path guest = Path.of(args.length > 0 ? args[0] : "build/guest").toAbsolutePath();
        System.exit(run(guest, Long.getLong("demo.protected.ms", 8_000)));
    }

    /** Runs the whole story; returns 0 when the invariants held, 1 otherwise. */
    public static int run(final Path guest, final long protectedMs) throws Exception
    {
        final TwoHostLab.Lab lab = new TwoHostLab.Lab(guest, 128).withDisk(64);
        final Thread cleanup = new Thread(lab::close, "demo-cleanup");
        Runtime.getRuntime().addShutdownHook(cleanup); // also on Ctrl-C
        int exit = 1;
        try
        {
            say("namespaces: primary %s, secondary %s, switch %s, client %s", lab.pri, lab.sec, lab.sw, lab.cli);
            final long t0 = System.nanoTime();
            say("booting the test guest on the primary host (QEMU, TCG, 128 MiB RAM, a 64 MiB disk; its counter is kept " +
                "on the disk, and the value it last wrote there in RAM)...");
            lab.bootPrimary(TwoHostLab.Protection.of(200));
            say("guest answers after %.1f s; starting colod: secondary standby, primary checkpoints every 200 ms, " +
                "output commit on its NIC, the disk's writes shipped with each checkpoint", (System.nanoTime() - t0) / 1e9);
            final double[] unprotectedMs = latency(lab, 20);
            lab.protect(TwoHostLab.Protection.of(200));
            say("replication: %s; arbiter: %s", lab.host("primary").handle().status().get("replication"),
                lab.primary().arbiter().describe());
            try (TwoHostLab.Client client = new TwoHostLab.Client(lab.cli, "/cgi-bin/disk"))
            {
                say("client increments the counter in a loop; each answer is 'N D': the new value and what the disk " +
                    "held before (always N-1). Live view (what `coloctl status` / `coloctl buffers` show):");
                long maxHeld = 0;
                final long until = System.nanoTime() + protectedMs * 1_000_000L;
                while (System.nanoTime() < until)
                {
                    Thread.sleep(500);
                    maxHeld = Math.max(maxHeld, view(lab, client));
                }
                final double[] duringMs = latency(lab, 20);
                final List<Long> before = client.values();
                say("KILLING THE PRIMARY HOST: off the network (uplink, replication link, etcd link) and its QEMU killed (client has seen %d values, last %s)",
                    before.size(), before.isEmpty() ? "-" : before.get(before.size() - 1));
                final long killedAt = System.nanoTime();
                lab.killPrimary();
                final ExitEvent e = lab.secondaryExits().poll(60, TimeUnit.SECONDS);
                say("secondary: %s -> %s, %d ms after the kill (heartbeat timeout, then the VM's key taken over from the " +
                    "protected primary in one etcd transaction: %s)",
                    e == null ? "no event" : e.detail(), lab.secondary().state(), (System.nanoTime() - killedAt) / 1_000_000,
                    lab.secondary().arbiter().describe());
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (client.countSince(killedAt) < 5 && System.nanoTime() < deadline)
                {
                    Thread.sleep(200);
                }
                client.close();
                final List<Long> values = client.values();
                int repeats = 0;
                for (int i = 1; i < values.size(); i++)
                {
                    repeats += values.get(i) <= values.get(i - 1) ? 1 : 0;
                }
                final long diskMismatches = client.readings().stream()
                    .filter(r -> !r.body().equals(r.value() + " " + (r.value() - 1))).count();
                final ColoCounters pc = lab.primary().counters();
                final NicStats nic = lab.nic();
                say("SUMMARY");
                say("  checkpoints before the kill: %d, pause p50 %.1f ms, p99 %.1f ms, %.1f MiB shipped",
                    pc.checkpointsCompleted.get(), pc.pauseMicros.getValueAtPercentile(50) / 1000.0,
                    pc.pauseMicros.getValueAtPercentile(99) / 1000.0, pc.stateBytes.get() / 1048576.0);
                say("  output commit: %d frames released in order, up to %d held at once, %d dropped; checkpoints " +
                    "started by output %d, by the 200 ms timer %d", nic.releasedFrames(), maxHeld, nic.droppedTotal(),
                    pc.checkpointsByOutput.get(), pc.checkpointsByTimer.get());
                say("  what the client paid: GET of a static page p50 %.1f ms / max %.1f ms before protection, " +
                    "p50 %.1f ms / max %.1f ms protected (strict, disk replicated, the counter client running beside it)",
                    unprotectedMs[0], unprotectedMs[1], duringMs[0], duringMs[1]);
                say("  failover: resumed from checkpoint %d, QEMU start %d ms, device-state load + cont %d ms",
                    e == null ? -1 : e.lastCheckpointId(), lab.failover().lastStartMicros / 1000,
                    lab.failover().lastLoadMicros / 1000);
                say("  client: %d values, %d after the kill, first answer after the kill at +%d ms, repeats or " +
                    "decreases: %d", values.size(), client.countSince(killedAt), client.firstAfterMs(killedAt), repeats);
                say("  disk: %s; answers whose disk value was not N-1: %d",
                    lab.host("primary").handle().status().get("disk"), diskMismatches);
                say("  answers: %s", client.readings().stream().map(TwoHostLab.Client.Reading::body).toList());
                final boolean ok = repeats == 0 && diskMismatches == 0 && nic.releasedFrames() > 0 && maxHeld > 0 &&
                    e != null && e.failedOver() && client.countSince(killedAt) > 0;
                say(ok ? "OK: the VM survived the loss of its host, no client saw a value twice, and its disk always " +
                    "matched its RAM" : "FAILED: see above");
                exit = ok ? 0 : 1;
            }
        }
        finally
        {
            lab.close();
            Runtime.getRuntime().removeShutdownHook(cleanup);
        }
        return exit;
    }

    /** p50 and max ms of {@code n} sequential GETs of the guest's static page from the client. */
    private static double[] latency(final TwoHostLab.Lab lab, final int n) throws Exception
    {
        return dev.colod.os.Netns.call(lab.cli, () ->
        {
            final long[] ns = new long[n];
            for (int i = 0; i < n; i++)
            {
                final long t0 = System.nanoTime();
                TwoHostLab.Http.get(TwoHostLab.GUEST_IP, "/index.html", 10_000);
                ns[i] = System.nanoTime() - t0;
            }
            java.util.Arrays.sort(ns);
            return new double[]{ns[n / 2] / 1e6, ns[n - 1] / 1e6};
        });
    }

    /** One line of status and buffers; returns frames held now. */
    private static long view(final TwoHostLab.Lab lab, final TwoHostLab.Client client)
    {
        final ColoCounters c = lab.primary().counters();
        final NicStats n = lab.nic();
        final StringBuilder epochs = new StringBuilder();
        for (final NicStats.EpochStats e : n.epochs())
        {
            epochs.append(e.epoch() < 0 ? "open" : "#" + e.epoch()).append(':').append(e.frames()).append(' ');
        }
        final List<Long> v = client.values();
        say("  %-9s ckpt %4d pause p50 %5.1f ms | standby %-9s committed %4d | vt0 held %3d fr %6d B [%s] oldest %3d ms" +
                " released %5d dropped %d | client %s", lab.primary().state(), c.checkpointsCompleted.get(),
            c.pauseMicros.getValueAtPercentile(50) / 1000.0, lab.secondary().state(),
            lab.secondary().counters().lastCheckpointId.get(), n.heldFrames(), n.heldBytes(), epochs.toString().trim(),
            n.oldestHeldAgeNs() / 1_000_000, n.releasedFrames(), n.droppedTotal(),
            v.isEmpty() ? "-" : v.get(v.size() - 1));
        return n.heldFrames();
    }

    private static void say(final String fmt, final Object... args)
    {
        System.out.printf(Locale.ROOT, "[demo] " + fmt + "%n", args);
    }
}
