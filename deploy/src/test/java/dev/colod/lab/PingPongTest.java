package dev.colod.lab;

import dev.colod.agent.ProtectedVm;
import dev.colod.core.ColoConfig;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.ProtectionState;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Roles follow the VM: the primary host dies, the secondary fails over and becomes the primary; the dead host
 * comes back, finds (by asking its peer) that the VM runs there now, becomes the secondary, and protection resumes
 * by itself — then the same the other way round, three failovers in one run, no YAML edited, no VM restarted. The
 * client's counter (on the guest's disk) only goes up throughout, and the disk always matches RAM; the time
 * unprotected after each return is measured.
 */
class PingPongTest
{
    @BeforeEach
    void usable()
    {
        new FailoverEndToEndTest().usable();
    }

    /**
     * Hybrid mode too: each failover continues the running copy, whose RAM is a private mapping of the standby
     * image; before it is protected again it moves into a QEMU on a shared RAM file (a local live migration).
     */
    @ParameterizedTest
    @EnumSource(value = ColoConfig.Mode.class, names = {"STRICT", "HYBRID"})
    void threeFailoversBackAndForthEachFollowedByProtectionAgain(final ColoConfig.Mode mode) throws Exception
    {
        // with a disk: each returning host's image is stale and the resync rewrites it while the guest runs
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST).withDisk(64).vmOption("compare-timeout-ms: 500"))
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200).in(mode);
            lab.bootPrimary(how);
            lab.protect(how);
            final List<String> times = new ArrayList<>();
            try (Client client = new Client(lab.cli, "/cgi-bin/disk"))
            {
                while (client.values().size() < 3)
                {
                    Thread.sleep(20);
                }
                String dead = "primary";
                String alive = "secondary";
                for (int round = 1; round <= 3; round++)
                {
                    final ProtectedVm survivor = lab.host(alive);
                    final long killedAt = System.nanoTime();
                    lab.kill(dead);
                    await(() -> "primary".equals(survivor.handle().status().get("role")),
                        "round " + round + ": the " + alive + " host fails over and becomes the primary");
                    final long failedOverAt = System.nanoTime();
                    await(() -> client.countSince(killedAt) >= 2, "round " + round + ": the client is served again");

                    final long backAt = System.nanoTime();
                    final ProtectedVm back = lab.revive(dead, how);
                    assertThat(back.secondary()).as("round %d: the returning host stands by", round).isNotNull();
                    final PrimaryEngine engine = survivor.primary();
                    await(() -> engine.state() == ProtectionState.PROTECTED && engine.counters().checkpointsCompleted.get() >= 2,
                        "round " + round + ": protection resumes by itself");
                    final long protectedAt = System.nanoTime();
                    final Map<String, Object> s = survivor.handle().status();
                    assertThat(s.get("state")).isEqualTo("protected");
                    assertThat((Long)s.get("failovers")).as("failovers seen by the survivor").isPositive();
                    times.add(String.format("round %d: failover %d ms after the kill, protected again %d ms after the " +
                        "host came back (unprotected %d ms in all)", round, (failedOverAt - killedAt) / 1_000_000,
                        (protectedAt - backAt) / 1_000_000, (protectedAt - failedOverAt) / 1_000_000));
                    final String t = dead;
                    dead = alive;
                    alive = t;
                }
                final long end = client.values().size();
                await(() -> client.values().size() >= end + 2, "the client goes on");
                client.close();
                times.forEach(System.out::println);
                System.out.println(mode + " ping-pong answers " + client.readings().stream().map(Client.Reading::body).toList());
                FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                assertThat(DiskReplicationTest.mismatches(client.readings())).as("answers whose disk was not N-1").isEmpty();
            }
        }
    }

    @Test
    void anOperatorsFailoverFencesThePrimaryWhichComesBackAsTheSecondaryAndProtectionResumes() throws Exception
    {
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final TwoHostLab.Protection how = TwoHostLab.Protection.of(200);
            lab.bootPrimary(how);
            lab.protect(how);
            try (Client client = new Client(lab.cli))
            {
                while (client.values().size() < 3)
                {
                    Thread.sleep(20);
                }
                final ProtectedVm b = lab.host("secondary");
                b.handle().failover(); // the operator moves the VM to host B while A lives
                await(() -> lab.host("primary").primary().state() == ProtectionState.FENCED, "A fenced (paused)");
                await(() -> "primary".equals(b.handle().status().get("role")), "B runs the VM as primary");
                final long movedAt = System.nanoTime();
                await(() -> client.countSince(movedAt) >= 2, "the client is served by B");

                final ProtectedVm a = lab.restart("primary", how); // colod on A starts again
                assertThat(a.secondary()).as("the fenced host stands by now").isNotNull();
                final PrimaryEngine engine = b.primary();
                await(() -> engine.state() == ProtectionState.PROTECTED && engine.counters().checkpointsCompleted.get() >= 2,
                    "B protected by A");
                final long end = client.values().size();
                await(() -> client.values().size() >= end + 2, "the client goes on");
                client.close();
                System.out.println("operator failover, fenced primary back as secondary: values " + client.values());
                FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
            }
        }
    }

    private interface Condition
    {
        boolean holds() throws Exception;
    }

    private static void await(final Condition c, final String what) throws Exception
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
        while (!c.holds())
        {
            assertThat(System.nanoTime() - deadline).as(what + " within 90 s").isNegative();
            Thread.sleep(20);
        }
    }
}
