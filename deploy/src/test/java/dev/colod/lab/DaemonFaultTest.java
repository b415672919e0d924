package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import dev.colod.core.ColoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static dev.colod.lab.DaemonEndToEndTest.awaitStatus;
import static dev.colod.lab.DaemonEndToEndTest.colod;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * Fault-matrix cells that need real colod processes (docs/RELIABILITY.md): the primary frozen for 3 s (SIGSTOP of
 * its colod and its QEMU: the whole host stops); the primary's colod killed with its QEMU left running and no
 * restart; the secondary's colod restarted during a failover; the primary's colod restarted around an operator's
 * failover. Each with etcd and TLS; the client's counter must only go up and exactly one copy must run after.
 */
class DaemonFaultTest
{
    private record Hosts(Path pRun, Path sRun, Path pLog, Path sLog, Path pConf, Path sConf)
    {
    }

    /** Roles fixed in the files (the primary host starts as primary) unless {@code rolesFollow} (listen on both). */
    private static Hosts configure(final Lab lab, final ColoConfig.Mode mode, final boolean rolesFollow,
        final String secondaryExtra) throws Exception
    {
        final Path dir = lab.runDir;
        final Hosts h = new Hosts(dir.resolve("p-run"), dir.resolve("s-run"), dir.resolve("primary.log"),
            dir.resolve("secondary.log"), dir.resolve("primary.yaml"), dir.resolve("secondary.yaml"));
        final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(mode);
        Files.writeString(h.pConf(), (rolesFollow ? lab.daemonYaml("primary", h.pRun(), how, false)
            : lab.yaml("primary", h.pRun(), how, false, false))
            .replace("    nics:\n", PauseWatch.extraArgs(DaemonRestartTest.monitor(lab)) + "\n    nics:\n"));
        Files.writeString(h.sConf(), (rolesFollow ? lab.daemonYaml("secondary", h.sRun(), how, false)
            : lab.yaml("secondary", h.sRun(), how, false, false))
            .replace("    heartbeat-timeout-ms: 1000", "    heartbeat-timeout-ms: 1000" + secondaryExtra));
        return h;
    }

    /**
     * What a test does to the protected pair once the client has seen 4 values. {@code colods}: the primary host's
     * colod at 0, the secondary host's at 1; a fault that restarts one puts the new process there.
     */
    private interface Fault
    {
        void inject(Lab lab, Hosts h, Process[] colods, long qemuPid, Client client) throws Exception;
    }

    private static void run(final String secondaryExtra, final Fault fault) throws Exception
    {
        run(ColoConfig.Mode.STRICT, false, secondaryExtra, fault);
    }

    /** Two colod daemons protect the guest (etcd, TLS), a client counts, {@code fault} runs; then everything stops. */
    private static void run(final ColoConfig.Mode mode, final boolean rolesFollow, final String secondaryExtra,
        final Fault fault) throws Exception
    {
        new FailoverEndToEndTest().usable();
        final Process[] colods = new Process[2];
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Hosts h = configure(lab, mode, rolesFollow, secondaryExtra);
            try
            {
                colods[1] = colod(lab.sec, h.sConf(), h.sLog());
                colods[0] = colod(lab.pri, h.pConf(), h.pLog());
                awaitStatus(h.pRun().resolve("colod.sock"), s -> "protected".equals(s.path("state").asText()) &&
                    s.path("checkpoints").asLong() >= 3, "protection", colods[0], h.pLog());
                final long qemuPid = Long.parseLong(Files.readString(h.pRun().resolve("e2e/qemu.pid")).trim());
                try (Client client = new Client(lab.cli))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }
                    fault.inject(lab, h, colods, qemuPid, client);
                }
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, colods, h.pRun(), h.sRun());
            }
        }
    }

    /** SIGTERM, wait for the stop, start again: a routine restart of one host's colod. */
    private static Process restart(final Process colod, final String ns, final Path conf, final Path log) throws Exception
    {
        colod.destroy();
        assertThat(colod.waitFor(30, TimeUnit.SECONDS)).as("colod stops on SIGTERM").isTrue();
        return colod(ns, conf, log);
    }

    /** Runs of each restart-during-failover cell per mode ({@code -Dcolod.cellRuns=N}, default 1). */
    private static final int CELL_RUNS = Integer.getInteger("colod.cellRuns", 1);

    /**
     * Fault-matrix cell: the primary host dies and the secondary's colod is SIGTERM-restarted at a random moment of
     * its failover (before the loss is seen, while it claims the key, while its QEMU loads the state, after). Exactly
     * one copy runs after, on the secondary's host; the client's counter only goes up.
     */
    @ParameterizedTest
    @EnumSource(value = ColoConfig.Mode.class, names = {"STRICT", "SPECULATIVE"})
    void theSecondarysColodRestartedDuringAFailoverStillFailsOverOnce(final ColoConfig.Mode mode) throws Exception
    {
        final Random random = new Random();
        for (int r = 1; r <= CELL_RUNS; r++)
        {
            final int delay = random.nextInt(1_800);
            final String run = mode + " run " + r + " (restart " + delay + " ms after the host died)";
            run(mode, true, "", (lab, h, colods, qemuPid, client) ->
            {
                final long diedAt = System.nanoTime();
                lab.isolate("primary", true); // off every network first: nothing it still holds reaches anyone
                colods[0].destroyForcibly();
                ProcessHandle.of(qemuPid).ifPresent(ProcessHandle::destroyForcibly);
                Thread.sleep(delay);
                colods[1] = restart(colods[1], lab.sec, h.sConf(), h.sLog());
                awaitStatus(h.sRun().resolve("colod.sock"), s -> "primary".equals(s.path("role").asText()) &&
                    s.path("failovers").asLong() == 1, run + ": the secondary's host runs the VM", colods[1], h.sLog());
                FailoverEndToEndTest.awaitAnswers(client, diedAt);
                Thread.sleep(1_000);
                client.close();
                System.out.println("secondary restarted during failover, " + run + ": values " + client.values() +
                    ", first answer " + client.firstAfterMs(diedAt) + " ms after the host died");
                FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                final long failoverQemu = Long.parseLong(Files.readString(h.sRun().resolve("e2e/qemu.pid")).trim());
                assertThat(ProcessHandle.of(failoverQemu).map(ProcessHandle::isAlive).orElse(false)).as(run).isTrue();
            });
        }
    }

    /**
     * Fault-matrix cell: an operator asks the secondary for a failover while the primary's colod is SIGTERM-restarted,
     * at a random moment between 600 ms before the request and 800 ms after it. Never two copies: the client's counter
     * only goes up, and after it exactly one host runs the VM (the other fenced, or refusing the failover).
     */
    @ParameterizedTest
    @EnumSource(value = ColoConfig.Mode.class, names = {"STRICT", "SPECULATIVE"})
    void thePrimarysColodRestartedAroundAnOperatorsFailoverLeavesOneCopy(final ColoConfig.Mode mode) throws Exception
    {
        final Random random = new Random();
        for (int r = 1; r <= CELL_RUNS; r++)
        {
            final int offset = random.nextInt(1_400) - 600;
            final String run = mode + " run " + r + " (primary's restart " + offset + " ms after the request)";
            run(mode, true, "", (lab, h, colods, qemuPid, client) ->
            {
                final long at = System.nanoTime();
                final Thread restarter = new Thread(() ->
                {
                    try
                    {
                        Thread.sleep(Math.max(0, offset));
                        colods[0] = restart(colods[0], lab.pri, h.pConf(), h.pLog());
                    }
                    catch (final Exception ex)
                    {
                        throw new IllegalStateException(ex);
                    }
                });
                if (offset < 0)
                {
                    restarter.start();
                    Thread.sleep(-offset);
                }
                final DaemonEndToEndTest.Answer asked = DaemonEndToEndTest.run(h.sRun().resolve("colod.sock"),
                    "failover", "e2e", "--wait", "--timeout", "60");
                if (offset >= 0)
                {
                    restarter.start();
                }
                restarter.join(60_000);
                final boolean moved = asked.exit() == 0;
                if (moved)
                {
                    awaitStatus(h.pRun().resolve("colod.sock"), s -> "fenced".equals(s.path("state").asText()) ||
                        "secondary".equals(s.path("role").asText()), run + ": the old primary fenced or standing by",
                        colods[0], h.pLog());
                }
                else
                {
                    awaitStatus(h.pRun().resolve("colod.sock"), s -> "protected".equals(s.path("state").asText()),
                        run + ": the primary protected again after the refused failover", colods[0], h.pLog());
                }
                FailoverEndToEndTest.awaitAnswers(client, at);
                Thread.sleep(2_000); // both copies have had time to answer, if they could
                client.close();
                final JsonNode p = DaemonEndToEndTest.status(h.pRun().resolve("colod.sock"));
                final JsonNode s = DaemonEndToEndTest.status(h.sRun().resolve("colod.sock"));
                System.out.println("primary restarted around an operator's failover, " + run + ": failover " +
                    (moved ? "done" : "refused: " + (asked.out() + asked.err()).strip()) + "; primary's host " +
                    p.path("role").asText() + " " + p.path("state").asText() + ", values " + client.values());
                Files.readString(h.sLog()).lines().filter(l -> l.contains("ailover") || l.contains("outdated"))
                    .map(l -> "  secondary: " + l).forEach(System.out::println);
                FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                final boolean primaryRuns = ProcessHandle.of(qemuPid).map(ProcessHandle::isAlive).orElse(false) &&
                    "primary".equals(p.path("role").asText()) && !"fenced".equals(p.path("state").asText());
                final boolean secondaryRuns = "primary".equals(s.path("role").asText());
                assertThat(primaryRuns).as(run + ": exactly one copy runs (primary's host %s, secondary's host %s)",
                    primaryRuns, secondaryRuns).isNotEqualTo(secondaryRuns);
                assertThat(secondaryRuns).as(run + ": the secondary runs the VM exactly when the failover succeeded")
                    .isEqualTo(moved);
            });
        }
    }

    @Test
    void aFrozenPrimaryIsTakenOverOnceItsLeaseRanOutAndFencesItselfWhenItWakes() throws Exception
    {
        run("", (lab, h, colods, qemuPid, client) ->
        {
            final Process primary = colods[0];
            final Process secondary = colods[1];
            final long frozenAt = System.nanoTime();
            FaultMatrix.signal("STOP", primary.pid());
            FaultMatrix.signal("STOP", qemuPid);
            Thread.sleep(3000);
            FaultMatrix.signal("CONT", qemuPid);
            FaultMatrix.signal("CONT", primary.pid());
            final JsonNode taken = awaitStatus(h.sRun().resolve("colod.sock"),
                s -> s.path("failovers").asLong() >= 1, "the secondary's failover", secondary, h.sLog());
            assertThat(taken.path("fencing_token").asLong()).isPositive();
            final JsonNode fenced = awaitStatus(h.pRun().resolve("colod.sock"),
                s -> "fenced".equals(s.path("state").asText()), "the woken primary fencing itself", primary, h.pLog());
            assertThat(fenced.path("last_error").asText()).containsAnyOf("host-secondary", "took over", "stale-token",
                "failed-over");
            FailoverEndToEndTest.awaitAnswers(client, frozenAt);
            Thread.sleep(2000); // both copies have had time to answer, if they could
            client.close();
            System.out.println("frozen primary: values " + client.values());
            FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
            assertThat(Files.readString(h.pLog())).contains("FENCED");
        });
    }

    /**
     * Maintenance on the secondary's host (coloctl maintenance on): the primary's host dies (colod and QEMU killed),
     * and the secondary does not take the VM over on its own — it says why, counts it, and stands by; the operator's
     * failover then resumes it. Kept across a restart of colod (a file in the state directory).
     */
    @Test
    void aSecondaryInMaintenanceTakesALostPrimaryOverOnlyWhenTheOperatorSays() throws Exception
    {
        run("\n    peer-restart-grace-ms: 500", (lab, h, colods, qemuPid, client) ->
        {
            final Path socket = h.sRun().resolve("colod.sock");
            final DaemonEndToEndTest.Answer on = DaemonEndToEndTest.run(socket, "maintenance", "on", "--reason",
                "switch upgrade");
            assertThat(on.exit()).as(on.out() + on.err()).isZero();
            assertThat(on.out()).contains("this host is in maintenance since ").contains("(switch upgrade)");
            assertThat(DaemonEndToEndTest.run(socket, "status").out()).contains("MAINTENANCE: this host is in maintenance");
            assertThat(DaemonEndToEndTest.run(socket, "maintenance", "sideways").exit()).isEqualTo(2);

            final long killedAt = System.nanoTime();
            colods[0].destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            FaultMatrix.signal("KILL", qemuPid);
            awaitStatus(socket, s -> s.path("failovers_held").asLong() >= 1, "the held failover", colods[1], h.sLog());
            Thread.sleep(3000); // and nothing starts it meanwhile
            final JsonNode held = DaemonEndToEndTest.coloctl(socket, "status", "-o", "json").get(0);
            assertThat(held.path("failovers").asLong()).isZero();
            assertThat(held.path("role").asText()).isEqualTo("secondary");
            assertThat(held.path("last_error").asText()).contains("NOT failing over: this host is in maintenance since ");
            assertThat(held.path("maintenance").asText()).contains("(switch upgrade)");
            assertThat(DaemonEndToEndTest.run(socket, "events").out()).contains("maintenance on: ");

            final DaemonEndToEndTest.Answer moved = DaemonEndToEndTest.run(socket, "failover", "e2e", "--wait",
                "--timeout", "60");
            assertThat(moved.exit()).as(moved.out() + moved.err()).isZero();
            FailoverEndToEndTest.awaitAnswers(client, killedAt);
            final DaemonEndToEndTest.Answer off = DaemonEndToEndTest.run(socket, "maintenance", "off");
            assertThat(off.out()).contains("maintenance off");
            assertThat(DaemonEndToEndTest.run(socket, "maintenance").out()).contains("not in maintenance");
            Thread.sleep(1000);
            client.close();
            System.out.println("maintenance: values " + client.values());
            FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
        });
    }

    @Test
    void aKilledPrimaryAgentLeavesItsGuestCutOffAndTheSecondaryTakesOverAfterTheGrace() throws Exception
    {
        run("\n    peer-restart-grace-ms: 3000", (lab, h, colods, qemuPid, client) ->
        {
            final Process primary = colods[0];
            final Process secondary = colods[1];
            final long killedAt = System.nanoTime();
            primary.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            awaitStatus(h.sRun().resolve("colod.sock"), s -> s.path("failovers").asLong() >= 1,
                "the secondary's failover after the grace", secondary, h.sLog());
            FailoverEndToEndTest.awaitAnswers(client, killedAt);
            assertThat(ProcessHandle.of(qemuPid).map(ProcessHandle::isAlive).orElse(false))
                .as("the orphaned guest still runs on the primary host, cut off").isTrue();
            Thread.sleep(2000);
            client.close();
            System.out.println("killed primary agent: values " + client.values());
            FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
            assertThat(Files.readString(h.sLog())).contains("unless it comes back")
                .contains("the arbiter grants this host the VM");
        });
    }
}
