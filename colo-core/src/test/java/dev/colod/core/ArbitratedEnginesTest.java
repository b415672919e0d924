package dev.colod.core;

import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.testing.EnginePair;
import dev.colod.core.testing.MemoryVm;
import dev.colod.core.testing.RecordingOutputCommit;
import dev.colod.core.testing.ScriptedArbiter;
import dev.colod.core.status.ColoCounters;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * The engines' side of the arbiter rules (docs/ARCHITECTURE.md, "Arbiter"), with a scripted arbiter: output never
 * passes unacknowledged without a grant and stops passing when the lease could lapse; a secondary resumes only with
 * the key; a primary that comes back cancels the wait; an older token is refused and its primary fences itself.
 * The etcd arbiter itself is tested against a real etcd in the agent.
 */
class ArbitratedEnginesTest
{
    private static List<String> after(final List<String> events, final int from)
    {
        synchronized (events)
        {
            return List.copyOf(events.subList(from, events.size()));
        }
    }

    /** A pair whose primary asks {@code arbiter} (granting {@code token} at first); the secondary knows {@code known}. */
    private static EnginePair arbitratedPrimary(final ColoConfig.Mode mode, final ScriptedArbiter arbiter, final long token,
        final long known) throws java.io.IOException
    {
        arbiter.unprotected = ScriptedArbiter.granted(token);
        return new EnginePair(() -> EnginePair.fastConfig(mode), 4096, ProtocolTap.NONE, ProtocolTap.NONE, arbiter,
            Arbiter.NONE, known);
    }

    @Test
    void primaryHoldsOutputWithoutAGrantPassesWithOneAndStopsBeforeTheLeaseCouldLapse() throws Exception
    {
        final ScriptedArbiter arbiter = new ScriptedArbiter();
        try (EnginePair pair = arbitratedPrimary(ColoConfig.Mode.STRICT, arbiter, 3, 0))
        {
            pair.awaitCheckpoints(3);
            assertThat(arbiter.callsSnapshot()).contains("unprotected 0");
            await().atMost(10, TimeUnit.SECONDS).until(() -> arbiter.calls.stream().anyMatch(c -> c.startsWith("protected ")));

            // the secondary dies while the store is unreachable: output stays held, never passes
            arbiter.unprotected = new Arbiter.Verdict(Arbiter.Verdict.Kind.WAIT, 3, "scripted: store unreachable");
            final int mark = pair.output.events.size();
            pair.secondary.kill();
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.primary.state() == ProtectionState.UNPROTECTED);
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.primary.counters().arbiterWaits.get() >= 2);
            assertThat(after(pair.output.events, mark)).noneMatch(e -> e.startsWith("lost "));

            // the store answers: granted, output passes
            arbiter.unprotected = ScriptedArbiter.granted(4);
            await().atMost(10, TimeUnit.SECONDS).until(() -> after(pair.output.events, mark).stream()
                .anyMatch(e -> e.startsWith("lost ")));
            assertThat(pair.primary.counters().arbiterGrants.get()).isEqualTo(2);

            // the lease could lapse: output is held again, before any new ask
            final int mark2 = pair.output.events.size();
            arbiter.unprotected = new Arbiter.Verdict(Arbiter.Verdict.Kind.WAIT, 4, "scripted: store unreachable");
            arbiter.lease = false;
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.primary.counters().leaseLapses.get() == 1);
            assertThat(after(pair.output.events, mark2)).first().asString().startsWith("started ");
            assertThat(after(pair.output.events, mark2)).noneMatch(e -> e.startsWith("lost "));
        }
    }

    @Test
    void primaryFencesItselfWhenTheArbiterGaveTheVmToTheOtherHost() throws Exception
    {
        final ScriptedArbiter arbiter = new ScriptedArbiter();
        try (EnginePair pair = arbitratedPrimary(ColoConfig.Mode.SPECULATIVE, arbiter, 3, 0))
        {
            pair.awaitCheckpoints(3);
            arbiter.unprotected = new Arbiter.Verdict(Arbiter.Verdict.Kind.FENCE, 9, "scripted: host b holds the key (token 9)");
            final int mark = pair.output.events.size();
            pair.secondary.kill();
            final ExitEvent e = EnginePair.next(pair.primaryExits, "primary");
            assertThat(e.detail()).contains("host b holds the key");
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.FENCED);
            assertThat(pair.vm.paused()).isTrue();
            assertThat(after(pair.output.events, mark)).anyMatch(ev -> ev.startsWith("fenced "));
            assertThat(after(pair.output.events, mark)).noneMatch(ev -> ev.startsWith("lost "));
            assertThat(arbiter.callsSnapshot()).contains("resign fenced");
        }
    }

    @Test
    void secondaryResumesOnlyWithTheKeyAndAPrimaryThatComesBackCancelsTheWait() throws Exception
    {
        final ScriptedArbiter arbiter = new ScriptedArbiter();
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT), 4096, ProtocolTap.NONE,
            ProtocolTap.NONE, Arbiter.NONE, arbiter, 0))
        {
            final List<Long> recorded = new java.util.concurrent.CopyOnWriteArrayList<>();
            pair.secondary.onNewerToken(recorded::add);
            pair.awaitCheckpoints(3);
            pair.primary.kill();
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.secondary.counters().arbiterWaits.get() >= 5);
            assertThat(pair.secondary.state()).isEqualTo(ProtectionState.FAILING_OVER);
            assertThat(pair.sink.activatedAt()).as("no resume without the key").isEqualTo(-1);

            // the primary (a new engine on the same VM) comes back while the secondary waits: protection resumes
            final RecordingOutputCommit output = new RecordingOutputCommit();
            try (MemoryVm vm = new MemoryVm(4096, false))
            {
                final PrimaryEngine back = new PrimaryEngine(EnginePair.fastConfig(ColoConfig.Mode.STRICT).conclude(),
                    pair.secondary.localAddress(), vm, output, new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM).start();
                try
                {
                    await().atMost(20, TimeUnit.SECONDS).until(() -> back.counters().checkpointsCompleted.get() >= 3);
                    final int claims = (int)arbiter.calls.stream().filter(c -> c.startsWith("claim ")).count();
                    Thread.sleep(300);
                    assertThat(arbiter.calls.stream().filter(c -> c.startsWith("claim ")).count())
                        .as("the wait ended").isEqualTo(claims);
                    assertThat(pair.secondary.state()).isEqualTo(ProtectionState.PROTECTED);

                    // that primary dies too: this time the key is granted and the VM resumes here
                    arbiter.claim = ScriptedArbiter.granted(12);
                    back.kill();
                    final ExitEvent e = EnginePair.next(pair.secondaryExits, "secondary");
                    assertThat(e.failedOver()).isTrue();
                    assertThat(pair.sink.activatedAt()).isPositive();
                    assertThat(pair.secondary.newestToken()).isEqualTo(12);
                    assertThat(recorded).as("each newer token is handed on to be persisted").containsExactly(12L);
                }
                finally
                {
                    back.close();
                }
            }
        }
    }

    @Test
    void aStaleTokenRefusalFencesOnlyWhenTheArbiterShowsAnotherOwner() throws Exception
    {
        final ScriptedArbiter arbiter = new ScriptedArbiter();
        try (EnginePair pair = arbitratedPrimary(ColoConfig.Mode.STRICT, arbiter, 5, 10))
        {
            // the secondary refuses token 5; the arbiter still says this host holds the key: no fence, output held
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.primary.counters().staleTokenRefusals.get() >= 1);
            arbiter.unprotected = new Arbiter.Verdict(Arbiter.Verdict.Kind.FENCE, 10, "scripted: host b holds the key (token 10)");
            final ExitEvent e = EnginePair.next(pair.primaryExits, "primary");
            assertThat(e.detail()).contains("host b holds the key");
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.FENCED);
            assertThat(pair.output.events).anyMatch(ev -> ev.startsWith("fenced "));
            assertThat(pair.secondary.counters().staleTokens.get()).isPositive();
            assertThat(pair.primary.counters().checkpointsCompleted.get()).isZero();
        }
    }

    @Test
    void aStaleTokenFromThisHostsOwnEarlierHoldNeverFencesAndANewerHoldProtectsAgain() throws Exception
    {
        final ScriptedArbiter arbiter = new ScriptedArbiter();
        try (EnginePair pair = arbitratedPrimary(ColoConfig.Mode.STRICT, arbiter, 5, 10))
        {
            await().atMost(10, TimeUnit.SECONDS).until(() -> pair.primary.counters().staleTokenRefusals.get() >= 2);
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.UNPROTECTED);
            assertThat(pair.vm.paused()).as("a refusal the arbiter does not confirm never pauses the VM").isFalse();
            assertThat(pair.output.events).noneMatch(ev -> ev.startsWith("fenced "));

            // this host takes the key anew (the earlier hold ended): its token is newer, the secondary takes it
            arbiter.unprotected = ScriptedArbiter.granted(11);
            pair.awaitCheckpoints(3);
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.PROTECTED);
            assertThat(pair.secondary.newestToken()).isEqualTo(11);
            assertThat(pair.output.events).noneMatch(ev -> ev.startsWith("fenced "));
        }
    }
}
