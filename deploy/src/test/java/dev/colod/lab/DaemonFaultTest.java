package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static dev.colod.lab.DaemonEndToEndTest.awaitStatus;
import static dev.colod.lab.DaemonEndToEndTest.colod;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * Fault-matrix cells that need real colod processes (docs/RELIABILITY.md): the primary frozen for 3 s (SIGSTOP of
 * its colod and its QEMU: the whole host stops), and the primary's colod killed with its QEMU left running and no
 * restart. Each with etcd and TLS; the client's counter must only go up and exactly one copy must run after.
 */
class DaemonFaultTest
{
    private record Hosts(Path pRun, Path sRun, Path pLog, Path sLog)
    {
    }

    private static Hosts configure(final Lab lab, final String secondaryExtra) throws Exception
    {
        final Path dir = lab.runDir;
        final Hosts h = new Hosts(dir.resolve("p-run"), dir.resolve("s-run"), dir.resolve("primary.log"),
            dir.resolve("secondary.log"));
        Files.writeString(dir.resolve("primary.yaml"), lab.yaml("primary", h.pRun(), 200, false, false));
        Files.writeString(dir.resolve("secondary.yaml"), lab.yaml("secondary", h.sRun(), 200, false, false)
            .replace("    heartbeat-timeout-ms: 1000", "    heartbeat-timeout-ms: 1000" + secondaryExtra));
        return h;
    }

    /** What a test does to the protected pair once the client has seen 4 values. */
    private interface Fault
    {
        void inject(Lab lab, Hosts h, Process primary, Process secondary, long qemuPid, Client client) throws Exception;
    }

    /** Two colod daemons protect the guest (etcd, TLS), a client counts, {@code fault} runs; then everything stops. */
    private static void run(final String secondaryExtra, final Fault fault) throws Exception
    {
        new FailoverEndToEndTest().usable();
        Process primary = null;
        Process secondary = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Hosts h = configure(lab, secondaryExtra);
            try
            {
                secondary = colod(lab.sec, lab.runDir.resolve("secondary.yaml"), h.sLog());
                primary = colod(lab.pri, lab.runDir.resolve("primary.yaml"), h.pLog());
                awaitStatus(h.pRun().resolve("colod.sock"), s -> "protected".equals(s.path("state").asText()) &&
                    s.path("checkpoints").asLong() >= 3, "protection", primary, h.pLog());
                final long qemuPid = Long.parseLong(Files.readString(h.pRun().resolve("e2e/qemu.pid")).trim());
                try (Client client = new Client(lab.cli))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }
                    fault.inject(lab, h, primary, secondary, qemuPid, client);
                }
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, new Process[]{primary, secondary}, h.pRun(), h.sRun());
            }
        }
    }

    @Test
    void aFrozenPrimaryIsTakenOverOnceItsLeaseRanOutAndFencesItselfWhenItWakes() throws Exception
    {
        run("", (lab, h, primary, secondary, qemuPid, client) ->
        {
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

    @Test
    void aKilledPrimaryAgentLeavesItsGuestCutOffAndTheSecondaryTakesOverAfterTheGrace() throws Exception
    {
        run("\n    peer-restart-grace-ms: 3000", (lab, h, primary, secondary, qemuPid, client) ->
        {
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
