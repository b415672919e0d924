package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static dev.colod.lab.DaemonEndToEndTest.awaitStatus;
import static dev.colod.lab.DaemonEndToEndTest.colod;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * colod restarted under a running VM, as real processes in host namespaces: kill -9 of the primary's colod, then
 * SIGTERM and a fresh start (a rolling upgrade), then kill -9 of the secondary's colod. Each time the guest keeps
 * running in the same QEMU, is protected again (the new colod adopts it), the secondary never fails over (the
 * primary's host answered, so it waits for its agent), and the client's counter only goes up.
 */
class DaemonRestartTest
{
    @Test
    void colodRestartsAndUpgradesUnderARunningVmWithoutFailoverOrRepeat() throws Exception
    {
        new FailoverEndToEndTest().usable();
        Process primary = null;
        Process secondary = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Pair f = Pair.configure(lab, 200);
            final Path pRun = f.pRun();
            final Path sRun = f.sRun();
            final Path pConf = f.pConf();
            final Path sConf = f.sConf();
            final Path pLog = f.pLog();
            final Path sLog = f.sLog();
            try
            {
                secondary = colod(lab.sec, sConf, sLog);
                primary = colod(lab.pri, pConf, pLog);
                awaitProtected(pRun, primary, pLog, 3);
                final long qemuPid = Long.parseLong(Files.readString(pRun.resolve("e2e/qemu.pid")).trim());
                try (Client client = new Client(lab.cli))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }

                    // 1. kill -9 of the primary's colod: its QEMU runs on, cut off (fail-closed) until colod is back
                    primary.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                    Thread.sleep(1_000);
                    assertThat(ProcessHandle.of(qemuPid).map(ProcessHandle::isAlive).orElse(false)).isTrue();
                    primary = colod(lab.pri, pConf, pLog);
                    restarted(lab, client, pRun, primary, pLog, sRun, secondary, sLog, qemuPid, "after kill -9");
                    assertThat(crashReports(pLog)).as("what the killed agent held is reported once").isEqualTo(1);

                    // 2. SIGTERM and a fresh start: the rolling upgrade
                    primary.destroy();
                    assertThat(primary.waitFor(30, TimeUnit.SECONDS)).as("colod stops on SIGTERM").isTrue();
                    primary = colod(lab.pri, pConf, pLog);
                    restarted(lab, client, pRun, primary, pLog, sRun, secondary, sLog, qemuPid, "after SIGTERM");
                    assertThat(crashReports(pLog)).as("a clean stop leaves nothing to report").isEqualTo(1);

                    // 3. kill -9 of the secondary's colod: the primary re-protects with a new session
                    final long sessions = status(pRun, primary, pLog).path("checkpoints").asLong();
                    secondary.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                    secondary = colod(lab.sec, sConf, sLog);
                    awaitStatus(sRun.resolve("colod.sock"), s -> "protected".equals(s.path("state").asText()),
                        "the restarted secondary protecting", secondary, sLog);
                    awaitProtected(pRun, primary, pLog, sessions + 3);

                    final long before = client.values().size();
                    while (client.values().size() < before + 3)
                    {
                        Thread.sleep(50);
                    }
                    client.close();
                    System.out.println("colod restarts under a running VM: values " + client.values());
                    FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                }
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, new Process[]{primary, secondary}, pRun, sRun);
            }
        }
    }

    /**
     * Routine restarts in a loop (issue 18's live bug: a SIGTERM restart fenced the VM when it met the end of its own
     * earlier hold): the primary's colod SIGTERM-restarted and kill -9-restarted in turn, then the secondary's, each at
     * a random moment relative to checkpoints and lease renewals, every third time with etcd restarted meanwhile.
     * Every time: same QEMU, never fenced, no failover,
     * protected again, the client's counter only goes up. {@code -Dcolod.restarts=N} restarts per host (default 6).
     */
    @Test
    void routineRestartsInALoopNeverFenceNorFailOver() throws Exception
    {
        new FailoverEndToEndTest().usable();
        final int rounds = Integer.getInteger("colod.restarts", 6);
        final java.util.Random random = new java.util.Random();
        Process primary = null;
        Process secondary = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Pair f = Pair.configure(lab, 100);
            final Path pRun = f.pRun();
            final Path sRun = f.sRun();
            final Path pConf = f.pConf();
            final Path sConf = f.sConf();
            final Path pLog = f.pLog();
            final Path sLog = f.sLog();
            try
            {
                secondary = colod(lab.sec, sConf, sLog);
                primary = colod(lab.pri, pConf, pLog);
                awaitProtected(pRun, primary, pLog, 3);
                final long qemuPid = Long.parseLong(Files.readString(pRun.resolve("e2e/qemu.pid")).trim());
                try (Client client = new Client(lab.cli); PauseWatch watch = PauseWatch.attach(monitor(lab)))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }
                    // the pauses of regular checkpoints while the client is served: what a restart is compared with
                    final int regularFrom = watch.mark();
                    Thread.sleep(5_000);
                    final List<PauseWatch.Pause> regular = watch.since(regularFrom);
                    final List<String> report = new ArrayList<>();
                    for (int i = 0; i < rounds; i++)
                    {
                        Thread.sleep(random.nextInt(2_500)); // somewhere among checkpoints and lease renewals
                        final boolean term = i % 2 == 0;
                        // every third round etcd restarts while colod does: the new colod starts without the store
                        final boolean storeToo = i % 3 == 2;
                        if (storeToo)
                        {
                            lab.killEtcd();
                        }
                        final int roundFrom = watch.mark();
                        final long stopMicros = java.time.Instant.now().toEpochMilli() * 1000;
                        if (term)
                        {
                            primary.destroy();
                            assertThat(primary.waitFor(30, TimeUnit.SECONDS)).as("colod stops on SIGTERM").isTrue();
                            // a colod that stops never leaves the VM paused: no pause spans the restart
                            assertThat(watch.running()).as("the VM runs when colod has stopped (round %d); its log " +
                                "ends:%n%s", i + 1, tail(pLog, 30)).isTrue();
                        }
                        else
                        {
                            primary.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                        }
                        primary = colod(lab.pri, pConf, pLog);
                        if (storeToo)
                        {
                            Thread.sleep(random.nextInt(2_000));
                            lab.startEtcd();
                        }
                        final String when = "after primary restart " + (i + 1) + (term ? " (SIGTERM)" : " (kill -9)") +
                            (storeToo ? " with etcd restarted meanwhile" : "");
                        restarted(lab, client, pRun, primary, pLog, sRun, secondary, sLog, qemuPid, when);
                        assertThat(Files.readString(pLog)).as("never fenced " + when).doesNotContain("FENCED");
                        final List<PauseWatch.Pause> round = watch.since(roundFrom);
                        final PauseWatch.Pause worst = round.stream()
                            .max(java.util.Comparator.comparingLong(PauseWatch.Pause::micros)).orElse(null);
                        report.add(worst == null ? "  " + when + ": no pause" : String.format("  %s: %d pauses, the " +
                            "longest %.1f ms, begun %d ms after the old colod was signalled", when, round.size(),
                            worst.micros() / 1000.0, (worst.startMicros() - stopMicros) / 1000));
                    }
                    System.out.printf("routine restarts: regular checkpoints' pauses over 5 s: %d, longest %.1f ms, " +
                        "median %.1f ms%n", regular.size(), PauseWatch.longest(regular) / 1000.0,
                        regular.stream().mapToLong(PauseWatch.Pause::micros).sorted().skip(regular.size() / 2).findFirst()
                            .orElse(0) / 1000.0);
                    report.forEach(System.out::println);
                    for (int i = 0; i < rounds; i++)
                    {
                        Thread.sleep(random.nextInt(2_500));
                        final long checkpoints = status(pRun, primary, pLog).path("checkpoints").asLong();
                        if (i % 2 == 0)
                        {
                            secondary.destroy();
                            assertThat(secondary.waitFor(30, TimeUnit.SECONDS)).isTrue();
                        }
                        else
                        {
                            secondary.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                        }
                        secondary = colod(lab.sec, sConf, sLog);
                        awaitStatus(sRun.resolve("colod.sock"), st -> "protected".equals(st.path("state").asText()),
                            "the restarted secondary protecting", secondary, sLog);
                        awaitProtected(pRun, primary, pLog, checkpoints + 3);
                        final long at = System.nanoTime();
                        final long deadline = at + TimeUnit.SECONDS.toNanos(60);
                        while (client.countSince(at) < 2)
                        {
                            assertThat(System.nanoTime() - deadline).as("client served after secondary restart " + (i + 1))
                                .isNegative();
                            Thread.sleep(50);
                        }
                        assertThat(ProcessHandle.of(qemuPid).map(ProcessHandle::isAlive).orElse(false)).isTrue();
                        assertThat(Files.readString(pLog)).doesNotContain("FENCED");
                        assertThat(Files.readString(sLog)).doesNotContain("FAILED OVER");
                    }
                    client.close();
                    System.out.println("routine restarts (" + rounds + " per host): values " + client.values().size());
                    FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                }
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, new Process[]{primary, secondary}, pRun, sRun);
            }
        }
    }

    /** One host of the switchover loop: its namespace, files and colod process. */
    private static final class Host
    {
        final String ns;
        final Path run;
        final Path conf;
        final Path log;
        Process colod;

        Host(final String ns, final Path run, final Path conf, final Path log)
        {
            this.ns = ns;
            this.run = run;
            this.conf = conf;
            this.log = log;
        }

        Path socket()
        {
            return run.resolve("colod.sock");
        }

        long qemuPid() throws Exception
        {
            return Long.parseLong(Files.readString(run.resolve("e2e/qemu.pid")).trim());
        }
    }

    /**
     * Planned switchovers in a loop, as OPERATIONS.md describes them, with real daemons whose roles follow the VM
     * (listen on both hosts) and {@code reprotect: manual}: {@code coloctl failover --wait} on the standby host (the
     * VM resumes there, the old primary fences itself), a SIGTERM restart of the fenced host's colod (it stops its
     * paused copy and stands by), {@code coloctl reprotect --wait} on the new primary; then the other way. Every
     * round: both commands exit 0, the client's counter only goes up and it is served again, exactly one QEMU runs
     * the VM, protected again. {@code -Dcolod.switchovers=N} rounds (default 2).
     */
    @Test
    void plannedSwitchoversBackAndForthEachProtectedAgain() throws Exception
    {
        new FailoverEndToEndTest().usable();
        final int rounds = Integer.getInteger("colod.switchovers", 2);
        final Process[] colods = new Process[2];
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Path dir = lab.runDir;
            final Host a = new Host(lab.pri, dir.resolve("p-run"), dir.resolve("primary.yaml"), dir.resolve("primary.log"));
            final Host b = new Host(lab.sec, dir.resolve("s-run"), dir.resolve("secondary.yaml"),
                dir.resolve("secondary.log"));
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200);
            Files.writeString(a.conf, lab.daemonYaml("primary", a.run, how, true));
            Files.writeString(b.conf, lab.daemonYaml("secondary", b.run, how, true));
            try
            {
                b.colod = colod(b.ns, b.conf, b.log);
                a.colod = colod(a.ns, a.conf, a.log);
                colods[0] = a.colod;
                colods[1] = b.colod;
                awaitProtected(a.run, a.colod, a.log, 3);
                final List<String> report = new ArrayList<>();
                try (Client client = new Client(lab.cli))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }
                    Host primary = a;
                    Host standby = b;
                    for (int i = 1; i <= rounds; i++)
                    {
                        final String round = "switchover " + i + " to " + (standby == a ? "host A" : "host B");
                        final long oldQemu = primary.qemuPid();
                        final long at = System.nanoTime();
                        final DaemonEndToEndTest.Answer moved = DaemonEndToEndTest.run(standby.socket(), "failover",
                            "e2e", "--wait", "--timeout", "60");
                        assertThat(moved.exit()).as(round + ": coloctl failover --wait: " + moved.out() + moved.err())
                            .isZero();
                        final long movedMs = (System.nanoTime() - at) / 1_000_000;
                        awaitStatus(primary.socket(), s -> "fenced".equals(s.path("state").asText()),
                            round + ": the old primary fenced", primary.colod, primary.log);
                        FailoverEndToEndTest.awaitAnswers(client, at);

                        if (i % 2 == 1)
                        {
                            // the fence cleared without a restart: coloctl standby stops the paused copy, stands by
                            final DaemonEndToEndTest.Answer refused = DaemonEndToEndTest.run(standby.socket(), "standby",
                                "e2e");
                            assertThat(refused.exit()).as(round + ": standby on the running primary: " + refused.out())
                                .isEqualTo(1);
                            assertThat(refused.err()).contains("vm e2e is not fenced here (it is primary, ");
                            final long pid = primary.colod.pid();
                            final DaemonEndToEndTest.Answer stood = DaemonEndToEndTest.run(primary.socket(), "standby",
                                "e2e", "--wait", "--timeout", "60");
                            assertThat(stood.exit()).as(round + ": coloctl standby --wait: " + stood.out() + stood.err())
                                .isZero();
                            assertThat(stood.out()).contains("standby done: vm e2e is secondary, ");
                            assertThat(primary.colod.isAlive() && primary.colod.pid() == pid).as(round +
                                ": the same colod").isTrue();
                        }
                        else
                        {
                            // the fenced host's colod restarts and stands by; its paused copy is stopped
                            primary.colod.destroy();
                            assertThat(primary.colod.waitFor(30, TimeUnit.SECONDS)).as(round + ": colod stops").isTrue();
                            primary.colod = colod(primary.ns, primary.conf, primary.log);
                            colods[primary == a ? 0 : 1] = primary.colod;
                        }
                        awaitStatus(primary.socket(), s -> "secondary".equals(s.path("role").asText()),
                            round + ": the fenced host standing by", primary.colod, primary.log);
                        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                        while (ProcessHandle.of(oldQemu).map(ProcessHandle::isAlive).orElse(false))
                        {
                            assertThat(System.nanoTime() - deadline).as(round + ": the fenced copy stopped").isNegative();
                            Thread.sleep(50);
                        }

                        final long reprotectAt = System.nanoTime();
                        final DaemonEndToEndTest.Answer again = DaemonEndToEndTest.run(standby.socket(), "reprotect",
                            "e2e", "--wait", "--timeout", "90");
                        assertThat(again.exit()).as(round + ": coloctl reprotect --wait: " + again.out() + again.err())
                            .isZero();
                        awaitProtected(standby.run, standby.colod, standby.log, 3);
                        final long protectedMs = (System.nanoTime() - reprotectAt) / 1_000_000;
                        assertThat(ProcessHandle.of(standby.qemuPid()).map(ProcessHandle::isAlive).orElse(false))
                            .as(round + ": the VM runs on the new primary").isTrue();
                        final long before = client.values().size();
                        while (client.values().size() < before + 2)
                        {
                            Thread.sleep(50);
                        }
                        FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                        report.add(String.format("  %s: failover --wait returned after %d ms, the fence cleared by %s, " +
                            "the client's longest wait for an answer %d ms, protected again %d ms after reprotect", round,
                            movedMs, i % 2 == 1 ? "coloctl standby" : "a restart of colod",
                            longestGapMs(client, at), protectedMs));
                        final Host t = primary;
                        primary = standby;
                        standby = t;
                    }
                    client.close();
                    System.out.println("planned switchovers (" + rounds + "), values " + client.values().size() + ":");
                    report.forEach(System.out::println);
                    FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                }
            }
            finally
            {
                colods[0] = a.colod;
                colods[1] = b.colod;
                DaemonEndToEndTest.stopAll(lab, colods, a.run, b.run);
            }
        }
    }

    /** The last {@code n} lines of {@code log}. */
    static String tail(final Path log, final int n) throws Exception
    {
        final List<String> lines = Files.readAllLines(log);
        return String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()));
    }

    /** The longest time between two of the client's answers since {@code sinceNanos}, in ms. */
    private static long longestGapMs(final Client client, final long sinceNanos)
    {
        long last = sinceNanos;
        long gap = 0;
        for (final Client.Reading r : client.readings())
        {
            if (r.atNanos() >= sinceNanos)
            {
                gap = Math.max(gap, r.atNanos() - last);
                last = r.atNanos();
            }
        }
        return gap / 1_000_000;
    }

    /** The two hosts' files; the secondary gives a restarting primary colod 30 s to come back. */
    private record Pair(Path pRun, Path sRun, Path pConf, Path sConf, Path pLog, Path sLog)
    {
        static Pair configure(final Lab lab, final long checkpointDelayMs) throws Exception
        {
            final Path dir = lab.runDir;
            final Pair f = new Pair(dir.resolve("p-run"), dir.resolve("s-run"), dir.resolve("primary.yaml"),
                dir.resolve("secondary.yaml"), dir.resolve("primary.log"), dir.resolve("secondary.log"));
            // a second QMP monitor on the primary's QEMU: the pause watch sees every STOP and RESUME, whichever colod
            Files.writeString(f.pConf(), lab.yaml("primary", f.pRun(), checkpointDelayMs, false, false)
                .replace("    nics:\n", PauseWatch.extraArgs(monitor(lab)) + "\n    nics:\n"));
            // what these tests restart is colod, which on a loaded two-CPU machine can take longer than the default
            // grace to come back: give it room, so that the tests are about adoption, not about a JVM's start time
            Files.writeString(f.sConf(), lab.yaml("secondary", f.sRun(), checkpointDelayMs, false, false)
                .replace("    heartbeat-timeout-ms: 1000", "    heartbeat-timeout-ms: 1000\n    peer-restart-grace-ms: 30000"));
            return f;
        }
    }

    /** The primary QEMU's second QMP monitor (for {@link PauseWatch}). */
    static Path monitor(final Lab lab)
    {
        return lab.runDir.resolve("p-monitor.sock");
    }

    /** How often the primary's log reported what an agent that ended without a clean stop held. */
    private static long crashReports(final Path log) throws Exception
    {
        return Files.readString(log).lines().filter(l -> l.contains("the agent before this one ended without a clean stop"))
            .count();
    }

    private static JsonNode status(final Path run, final Process p, final Path log) throws Exception
    {
        return awaitStatus(run.resolve("colod.sock"), s -> true, "status", p, log);
    }

    private static JsonNode awaitProtected(final Path run, final Process p, final Path log, final long checkpoints)
        throws Exception
    {
        return awaitStatus(run.resolve("colod.sock"), s -> "protected".equals(s.path("state").asText()) &&
            s.path("checkpoints").asLong() >= checkpoints, "protection with " + checkpoints + " checkpoints", p, log);
    }

    /** The restarted primary colod adopted the same QEMU and protects it; the secondary did not fail over. */
    private static void restarted(final Lab lab, final Client client, final Path pRun, final Process primary,
        final Path pLog, final Path sRun, final Process secondary, final Path sLog, final long qemuPid, final String when)
        throws Exception
    {
        final long restartedAt = System.nanoTime();
        awaitProtected(pRun, primary, pLog, 3);
        assertThat(Long.parseLong(Files.readString(pRun.resolve("e2e/qemu.pid")).trim())).as("same QEMU " + when)
            .isEqualTo(qemuPid);
        assertThat(ProcessHandle.of(qemuPid).map(ProcessHandle::isAlive).orElse(false)).isTrue();
        assertThat(Files.readString(pLog)).contains("adopted the running QEMU pid " + qemuPid);
        final JsonNode s = status(sRun, secondary, sLog);
        assertThat(s.path("failovers").asLong()).as("the secondary did not fail over " + when).isZero();
        assertThat(s.path("state").asText()).isEqualTo("protected");
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (client.countSince(restartedAt) < 2)
        {
            assertThat(System.nanoTime() - deadline).as("client served " + when).isNegative();
            Thread.sleep(50);
        }
        FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
    }
}
