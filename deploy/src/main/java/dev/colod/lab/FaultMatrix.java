package dev.colod.lab;

import dev.colod.agent.ProtectedVm;
import dev.colod.buffer.NicStats;
import dev.colod.core.ColoConfig;
import dev.colod.core.ExitEvent;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.ProtectionState;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import dev.colod.lab.TwoHostLab.Protection;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The client-counter scenario under one fault at a random moment of the checkpoint cycle, on the two-host lab
 * with etcd (docs/RELIABILITY.md). Checked all along: the client never sees a repeat or a decrease, and never do
 * both copies serve (sampled every 5 ms: the primary letting output out unacknowledged while the secondary runs
 * the VM, each on a live uplink). Checked at the end, after the fault healed: exactly one copy runs, the other
 * is fenced or standing by. Used by FaultMatrixTest (a few cells, CI) and {@code deploy/fault-matrix.sh} (all
 * cells, many runs).
 */
public final class FaultMatrix
{
    public enum Fault
    {
        PRIMARY_HOST_KILLED("primary host killed (colod + QEMU, off the network)"),
        SECONDARY_HOST_KILLED("secondary host killed"),
        LINK_CUT_BOTH_WAYS("replication link cut both ways"),
        LINK_CUT_ONE_WAY("replication link cut one way (primary -> secondary dropped)"),
        PRIMARY_CUT_FROM_ETCD("primary cut from etcd"),
        SECONDARY_CUT_FROM_ETCD("secondary cut from etcd"),
        PRIMARY_CUT_FROM_EVERYTHING("primary cut from everything (uplink, replication, etcd), then back"),
        PRIMARY_FROZEN_3S("primary frozen 3 s (QEMU SIGSTOP, host off every network; in-process colod keeps running)"),
        ETCD_KILLED("etcd killed"),
        ACKS_LOST("replication link cut one way (secondary -> primary dropped: acknowledgements lost)"),
        SECONDARY_CUT_FROM_EVERYTHING("secondary cut from everything (uplink, replication, etcd), then back"),
        LINK_CUT_STORE_UNREACHABLE("replication link cut both ways while etcd is unreachable from both hosts"),
        STAGING_FULL("the secondary's staging area full (its file system filled for 4 s, then freed)"),
        STREAM_CUT_MID_BYTES("the replication stream reset at a random byte (TCP reset after 64 KiB-1 MiB)");

        public final String what;

        Fault(final String what)
        {
            this.what = what;
        }
    }

    /**
     * @param violations what went wrong (empty: the run passed)
     * @param failoverMs from the fault to the secondary's resumed VM, or -1 without a failover
     * @param runsNow    which host runs the VM at the end: primary, secondary, both or none
     */
    public record Result(Fault fault, ColoConfig.Mode mode, boolean arbitrated, List<String> violations, long failoverMs,
                         String runsNow, int answers)
    {
        public boolean ok()
        {
            return violations.isEmpty();
        }
    }

    private FaultMatrix()
    {
    }

    public static Result run(final Path guest, final Fault fault, final ColoConfig.Mode mode, final boolean arbitrated,
        final long seed) throws Exception
    {
        final Random random = new Random(seed);
        final List<String> violations = java.util.Collections.synchronizedList(new ArrayList<>());
        final Protection how = Protection.of(100).in(mode);
        try (Lab lab = new Lab(guest, 128, arbitrated))
        {
            lab.bootPrimary(how);
            if (fault == Fault.STAGING_FULL)
            {
                lab.standbySpace(192); // the 128 MiB RAM image, and room for staging that a filler takes away
            }
            lab.protect(how);
            final Client client = new Client(lab.cli);
            long failoverMs = -1;
            final AtomicBoolean watching = new AtomicBoolean(true);
            final boolean[] online = {true, true};
            final Thread watcher = new Thread(() ->
            {
                while (watching.get())
                {
                    if (online[0] && online[1] && primaryServes(lab) && secondaryServes(lab) && violations.isEmpty())
                    {
                        violations.add("both copies served at once (" + lab.primary().state() + " primary letting output " +
                            "out unacknowledged, secondary running the VM)");
                    }
                    sleep(5);
                }
            }, "fault-watcher");
            try
            {
                awaitAnswers(client, 0, 3);
                watcher.start();
                sleep(random.nextInt(150)); // a random moment of the 100 ms checkpoint cycle
                final long faultNs = System.nanoTime();
                final long checkpointsBefore = lab.primary().counters().checkpointsCompleted.get();
                switch (fault)
                {
                    case PRIMARY_HOST_KILLED ->
                    {
                        online[0] = false;
                        lab.kill("primary");
                        failoverMs = awaitFailoverMs(lab, faultNs, violations);
                    }
                    case SECONDARY_HOST_KILLED ->
                    {
                        online[1] = false;
                        lab.kill("secondary");
                        sleep(5000);
                    }
                    case LINK_CUT_BOTH_WAYS, LINK_CUT_ONE_WAY ->
                    {
                        final boolean both = fault == Fault.LINK_CUT_BOTH_WAYS;
                        lab.cutReplication("primary", both, true);
                        sleep(8000);
                        lab.cutReplication("primary", both, false);
                        failoverMs = failedOverMs(lab, faultNs);
                        sleep(12_000);
                    }
                    case ACKS_LOST ->
                    {
                        lab.cutReplication("secondary", false, true);
                        sleep(8000);
                        lab.cutReplication("secondary", false, false);
                        failoverMs = failedOverMs(lab, faultNs);
                        sleep(12_000);
                    }
                    case SECONDARY_CUT_FROM_EVERYTHING ->
                    {
                        online[1] = false;
                        lab.isolate("secondary", true);
                        sleep(6000);
                        lab.isolate("secondary", false);
                        online[1] = true;
                        failoverMs = failedOverMs(lab, faultNs);
                        sleep(10_000);
                    }
                    case LINK_CUT_STORE_UNREACHABLE ->
                    {
                        // nobody can win the key: the primary holds all output, the secondary cannot claim; clients
                        // wait. Then the store comes back first, the link after it
                        lab.cutFromEtcd("primary", true);
                        lab.cutFromEtcd("secondary", true);
                        lab.cutReplication("primary", true, true);
                        sleep(6000);
                        lab.cutFromEtcd("primary", false);
                        lab.cutFromEtcd("secondary", false);
                        sleep(3000);
                        lab.cutReplication("primary", true, false);
                        failoverMs = failedOverMs(lab, faultNs);
                        sleep(10_000);
                    }
                    case PRIMARY_CUT_FROM_ETCD, SECONDARY_CUT_FROM_ETCD, ETCD_KILLED ->
                    {
                        if (fault == Fault.ETCD_KILLED)
                        {
                            lab.killEtcd();
                        }
                        else
                        {
                            lab.cutFromEtcd(fault == Fault.PRIMARY_CUT_FROM_ETCD ? "primary" : "secondary", true);
                        }
                        sleep(6000);
                        final long during = lab.primary().counters().checkpointsCompleted.get() - checkpointsBefore;
                        if (lab.primary().state() != ProtectionState.PROTECTED || during < 10)
                        {
                            violations.add("the store's loss changed protection: primary " + lab.primary().state() + ", " +
                                during + " checkpoints in 6 s");
                        }
                        if (client.countSince(faultNs + TimeUnit.SECONDS.toNanos(1)) < 5)
                        {
                            violations.add("clients were served less while the store was lost: " +
                                client.countSince(faultNs) + " answers in 6 s");
                        }
                        if (fault == Fault.ETCD_KILLED)
                        {
                            lab.startEtcd();
                        }
                        else
                        {
                            lab.cutFromEtcd(fault == Fault.PRIMARY_CUT_FROM_ETCD ? "primary" : "secondary", false);
                        }
                        sleep(2000);
                    }
                    case PRIMARY_CUT_FROM_EVERYTHING ->
                    {
                        online[0] = false;
                        lab.isolate("primary", true);
                        failoverMs = awaitFailoverMs(lab, faultNs, violations);
                        sleep(3000);
                        lab.isolate("primary", false);
                        online[0] = true;
                        sleep(8000);
                    }
                    case PRIMARY_FROZEN_3S ->
                    {
                        final long pid = lab.host("primary").qemu().pid();
                        signal("STOP", pid);
                        lab.isolate("primary", true);
                        // the secondary takes over during the freeze: heartbeat timeout + the rest of the lease
                        failoverMs = awaitFailoverMs(lab, faultNs, violations);
                        sleep(Math.max(0, 3000 - (System.nanoTime() - faultNs) / 1_000_000));
                        lab.isolate("primary", false);
                        signal("CONT", pid);
                        sleep(10_000);
                    }
                    case STAGING_FULL ->
                    {
                        final java.nio.file.Path filler = lab.ramDir("secondary").resolve("filler");
                        final long filled = Lab.fill(filler);
                        // the secondary's refusal reaches the primary's status (its BYE carries the reason)
                        final long until = System.nanoTime() + 4_000_000_000L;
                        boolean told = false;
                        while (System.nanoTime() < until)
                        {
                            final String e = lab.primary().lastError();
                            told |= e != null && e.contains("staging area " + lab.ramDir("secondary"));
                            sleep(50);
                        }
                        java.nio.file.Files.delete(filler);
                        if (!told)
                        {
                            violations.add("the primary's last error never named the secondary's full staging area: " +
                                lab.primary().lastError());
                        }
                        System.out.println("staging area full for 4 s (" + (filled >> 20) + " MiB filler); checkpoints " +
                            "failed meanwhile: " + lab.primary().counters().checkpointsFailed.get());
                        protectedAgain(lab, violations);
                    }
                    case STREAM_CUT_MID_BYTES ->
                    {
                        final long at = 64 * 1024 + random.nextInt(1024 * 1024);
                        if (!lab.resetStreamAfter(at))
                        {
                            violations.add("the stream never reached " + at + " bytes within 60 s");
                        }
                        protectedAgain(lab, violations);
                        System.out.println("replication stream reset after " + at + " bytes; partly received " +
                            "checkpoints discarded by the secondary: " +
                            lab.host("secondary").secondary().counters().discardedPartialCheckpoints.get());
                    }
                    default -> throw new IllegalStateException(fault.name());
                }
                awaitAnswers(client, System.nanoTime(), 3);
            }
            finally
            {
                watching.set(false);
                watcher.join();
                client.close();
            }
            final List<Long> values = client.values();
            for (int i = 1; i < values.size(); i++)
            {
                if (values.get(i) <= values.get(i - 1))
                {
                    violations.add("the client saw " + values.get(i - 1) + " then " + values.get(i) + " (answer " + i + ")");
                    break;
                }
            }
            final String runs = runsNow(lab);
            if (!runs.equals("primary") && !runs.equals("secondary"))
            {
                violations.add("after the fault, " + runs + " run(s) the VM");
            }
            return new Result(fault, mode, arbitrated, List.copyOf(violations), failoverMs, runs, values.size());
        }
    }

    /** After a fault that only interrupted protection: protected again within 30 s, with new checkpoints. */
    private static void protectedAgain(final Lab lab, final List<String> violations)
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        final long from = lab.primary().counters().checkpointsCompleted.get();
        while (lab.primary().state() != ProtectionState.PROTECTED ||
            lab.primary().counters().checkpointsCompleted.get() < from + 5)
        {
            if (System.nanoTime() - deadline > 0)
            {
                violations.add("not protected again within 30 s: primary " + lab.primary().state() + ", " +
                    lab.primary().lastError());
                return;
            }
            sleep(50);
        }
    }

    /** The primary lets output out unacknowledged: unprotected, its NIC passing (not held, not fenced). */
    private static boolean primaryServes(final Lab lab)
    {
        final ProtectedVm p = lab.host("primary");
        final PrimaryEngine e = p.primary();
        if (e == null || e.state() != ProtectionState.UNPROTECTED || p.output() == null)
        {
            return false;
        }
        final List<NicStats> nics = p.output().stats();
        return !nics.isEmpty() && "pass-through".equals(nics.get(0).mode());
    }

    /** The secondary's host runs the VM (resumed by a failover). */
    private static boolean secondaryServes(final Lab lab)
    {
        final ProtectedVm s = lab.host("secondary");
        return s.failover() != null && s.failover().running() != null && s.failover().running().isAlive();
    }

    /** Which host runs the VM: the primary's copy unless fenced or dead, the secondary's if it failed over. */
    static String runsNow(final Lab lab)
    {
        final ProtectedVm p = lab.host("primary");
        final boolean primaryRuns = p.qemu() != null && p.qemu().isAlive() && p.primary() != null &&
            p.primary().state() != ProtectionState.FENCED && lab.online("primary");
        final boolean secondaryRuns = secondaryServes(lab) && lab.online("secondary");
        return primaryRuns && secondaryRuns ? "both" : primaryRuns ? "primary" : secondaryRuns ? "secondary" : "none";
    }

    private static long awaitFailoverMs(final Lab lab, final long faultNs, final List<String> violations)
        throws InterruptedException
    {
        final ExitEvent e = lab.secondaryExits().poll(60, TimeUnit.SECONDS);
        if (e == null || !e.failedOver())
        {
            violations.add("no failover within 60 s: " + (e == null ? "no event" : e.detail()));
            return -1;
        }
        return (System.nanoTime() - faultNs) / 1_000_000;
    }

    private static long failedOverMs(final Lab lab, final long faultNs)
    {
        final ExitEvent e = lab.secondaryExits().stream().filter(ExitEvent::failedOver).findFirst().orElse(null);
        return e == null ? -1 : (System.nanoTime() - faultNs) / 1_000_000;
    }

    private static void awaitAnswers(final Client client, final long sinceNs, final int n) throws IOException
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (client.countSince(sinceNs) < n)
        {
            if (System.nanoTime() - deadline > 0)
            {
                throw new IOException("the client had no " + n + " answers within 60 s");
            }
            sleep(50);
        }
    }

    /** Sends SIGsig to {@code pid} (a process this lab started). */
    static void signal(final String sig, final long pid) throws IOException, InterruptedException
    {
        final Process p = new ProcessBuilder("kill", "-" + sig, Long.toString(pid)).inheritIO().start();
        if (p.waitFor() != 0)
        {
            throw new IOException("kill -" + sig + " " + pid + " failed");
        }
    }

    private static void sleep(final long ms)
    {
        try
        {
            Thread.sleep(ms);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * The long profile: {@code runs} runs of every cell (fault x mode, arbitrated), a markdown table on stdout and in
     * {@code out}. Arguments: guest dir, runs, output file, optional comma-separated fault names.
     */
    public static void main(final String[] args) throws Exception
    {
        final Path guest = Path.of(args[0]);
        final int runs = Integer.parseInt(args[1]);
        final Path out = Path.of(args[2]);
        final List<Fault> faults = args.length > 3
            ? java.util.Arrays.stream(args[3].split(",")).map(Fault::valueOf).toList() : List.of(Fault.values());
        final StringBuilder table = new StringBuilder(
            "| fault | mode | runs | passed | failover ms (min/median/max) | runs the VM after |\n|---|---|---|---|---|---|\n");
        long seed = System.nanoTime();
        for (final Fault f : faults)
        {
            for (final ColoConfig.Mode m : ColoConfig.Mode.PERIODIC)
            {
                int passed = 0;
                final List<Long> failover = new ArrayList<>();
                final java.util.TreeMap<String, Integer> after = new java.util.TreeMap<>();
                for (int r = 0; r < runs; r++)
                {
                    Result res;
                    try
                    {
                        res = run(guest, f, m, true, seed++);
                    }
                    catch (final Exception ex)
                    {
                        res = new Result(f, m, true, List.of("run failed: " + ex), -1, "?", 0);
                    }
                    passed += res.ok() ? 1 : 0;
                    if (res.failoverMs() >= 0)
                    {
                        failover.add(res.failoverMs());
                    }
                    after.merge(res.runsNow(), 1, Integer::sum);
                    System.out.printf(Locale.ROOT, "%s %s run %d: %s%s (failover %d ms, runs %s)%n", f, m, r + 1,
                        res.ok() ? "ok" : "FAILED ", res.ok() ? "" : res.violations(), res.failoverMs(), res.runsNow());
                }
                java.util.Collections.sort(failover);
                table.append(String.format(Locale.ROOT, "| %s | %s | %d | %d | %s | %s |%n", f.what,
                    m.name().toLowerCase(), runs, passed, failover.isEmpty() ? "-" : failover.get(0) + " / " +
                        failover.get(failover.size() / 2) + " / " + failover.get(failover.size() - 1), after));
            }
        }
        System.out.print(table);
        Files.writeString(out, table.toString());
    }
}
