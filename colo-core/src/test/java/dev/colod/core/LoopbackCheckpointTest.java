package dev.colod.core;

import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import static org.assertj.core.api.Assertions.assertThat;

class LoopbackCheckpointTest
{
    @ParameterizedTest
    @EnumSource(ColoConfig.Mode.class)
    void secondaryCommittedCopyEqualsPrimaryStateAtEachCheckpoint(final ColoConfig.Mode mode) throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(mode), 64 * 1024,
            dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(20);
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.PROTECTED);
            assertThat(pair.secondary.state()).isEqualTo(ProtectionState.PROTECTED);
            pair.primary.close();
            final ExitEvent exit = EnginePair.next(pair.primaryExits, "primary");
            assertThat(exit.reason()).isEqualTo(ExitReason.REQUEST);

            final long n = pair.sink.lastCommitted();
            assertThat(n).isGreaterThanOrEqualTo(20);
            assertThat(pair.sink.committed()).isEqualTo(pair.vm.capturedAt(n));
            assertThat(pair.vm.capturedAt(n)).isNotEqualTo(pair.vm.capturedAt(1)); // the VM really changed
            // every epoch was sealed before it was released, released once, in order
            for (long id = 1; id <= n; id++)
            {
                assertThat(pair.output.events.indexOf("sealed " + id))
                    .isLessThan(pair.output.events.indexOf("committed " + id)).isGreaterThanOrEqualTo(0);
            }
            assertThat(pair.output.committed).isSorted().doesNotHaveDuplicates();
            // a stop is not a loss of the primary: the secondary stands by, it does not fail over
            final ExitEvent secExit = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(secExit.failedOver()).isFalse();
            assertThat(pair.sink.activatedAt()).isEqualTo(-1);
        }
    }

    @ParameterizedTest
    @EnumSource(ColoConfig.Mode.class)
    void vmIsRunningBetweenCheckpointsAndPausedNeverAfterOne(final ColoConfig.Mode mode) throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(mode).checkpointDelayMs(20), 4096,
            dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(5);
            final long w = pair.vm.writes();
            pair.awaitCheckpoints(10);
            assertThat(pair.vm.writes()).isGreaterThan(w);
            assertThat(pair.primary.counters().pauseMicros.getTotalCount()).isGreaterThanOrEqualTo(10);
        }
    }

    @org.junit.jupiter.api.Test
    void earlyCheckpointRequestRunsBeforeThePeriod() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT)
            .checkpointDelayMs(60_000), 4096, dev.colod.core.protocol.ProtocolTap.NONE,
            dev.colod.core.protocol.ProtocolTap.NONE))
        {
            org.awaitility.Awaitility.await().until(() -> pair.primary.state() == ProtectionState.PROTECTED);
            pair.primary.requestCheckpoint();
            pair.awaitCheckpoints(1);
            pair.primary.requestCheckpoint();
            pair.awaitCheckpoints(2);
            assertThat(pair.primary.counters().checkpointsRequestedEarly.get()).isEqualTo(2);
        }
    }

    @org.junit.jupiter.api.Test
    void outputThatWantsACheckpointGetsOneBeforeThePeriodByPolling() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT)
            .checkpointDelayMs(60_000), 4096, dev.colod.core.protocol.ProtocolTap.NONE,
            dev.colod.core.protocol.ProtocolTap.NONE))
        {
            org.awaitility.Awaitility.await().until(() -> pair.primary.state() == ProtectionState.PROTECTED);
            assertThat(pair.primary.counters().checkpointsCompleted.get()).isZero();
            pair.output.wants = true; // the buffer crossed its high-water mark; nobody calls the engine
            pair.awaitCheckpoints(1);
            assertThat(pair.output.wants).as("the seal answered the request").isFalse();
            assertThat(pair.primary.counters().checkpointsRequestedEarly.get()).isEqualTo(1);
            Thread.sleep(50);
            assertThat(pair.primary.counters().checkpointsCompleted.get()).as("no more until asked or due").isEqualTo(1);
        }
    }

    @org.junit.jupiter.api.Test
    void aPrimaryWhoseAgentDiesButWhoseHostAnswersGetsAGracePeriodBeforeFailover() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT).peerRestartGraceMs(60_000),
            4096, dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(3);
            pair.primary.kill(); // its sockets close: the kernel of its host says so at once
            final ExitEvent wait = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(wait.failedOver()).isFalse();
            assertThat(wait.detail()).contains("agent gone (its host is up)", "awaiting the primary's agent");
            assertThat(pair.secondary.failoverState().phase()).isEqualTo(FailoverState.Phase.NONE);
            assertThat(pair.sink.activatedAt()).isEqualTo(-1);
        }
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT).peerRestartGraceMs(300),
            4096, dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(3);
            pair.primary.kill();
            assertThat(EnginePair.next(pair.secondaryExits, "secondary").failedOver()).isFalse();
            final ExitEvent after = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(after.failedOver()).as("no agent came back within the grace: %s", after.detail()).isTrue();
            assertThat(after.detail()).contains("did not come back within 300 ms");
        }
    }

    /**
     * A host in maintenance: the secondary does not take a lost primary's VM over on its own (held, counted, said
     * why), stands by with its checkpoint, and an operator's failover still resumes it.
     */
    @org.junit.jupiter.api.Test
    void aHeldSecondaryDoesNotFailOverOnItsOwnButAnOperatorsFailoverResumes() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT), 4096,
            dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            final String why = "this host is in maintenance since 2026-12-03T10:00:00Z (switch upgrade)";
            pair.secondary.holdFailovers(() -> why);
            pair.awaitCheckpoints(3);
            pair.primary.kill();
            final ExitEvent held = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(held.failedOver()).isFalse();
            assertThat(held.detail()).contains("agent gone").contains("NOT failing over: " + why);
            assertThat(pair.secondary.counters().failoversHeld.get()).isEqualTo(1);
            assertThat(pair.secondary.counters().failovers.get()).isZero();
            assertThat(pair.secondary.state()).isEqualTo(ProtectionState.CONNECTING);
            assertThat(pair.secondary.lastError()).contains("NOT failing over");
            assertThat(pair.sink.activatedAt()).as("nothing resumed").isEqualTo(-1);
            final long committed = pair.sink.lastCommitted();
            assertThat(committed).isGreaterThanOrEqualTo(3);

            pair.secondary.requestFailover();
            final ExitEvent resumed = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(resumed.failedOver()).as(resumed.detail()).isTrue();
            assertThat(pair.sink.activatedAt()).isEqualTo(committed);
        }
    }

    /**
     * No arbiter: a session that ends while the primary lives on (here its colod stops) leaves the standby outdated —
     * the primary serves on unprotected — and the next committed checkpoint of a new session makes it current again.
     */
    @org.junit.jupiter.api.Test
    void withoutAnArbiterTheStandbyIsOutdatedFromASessionsEndUntilTheNextCheckpoint() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT), 4096,
            dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            final java.util.List<String> told = new java.util.concurrent.CopyOnWriteArrayList<>();
            pair.secondary.onOutdated(w -> told.add(String.valueOf(w)));
            pair.awaitCheckpoints(3);
            assertThat(pair.secondary.outdated()).isNull();
            pair.primary.close(); // BYE stop: the VM runs on there, unprotected
            final ExitEvent ended = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(ended.failedOver()).isFalse();
            assertThat(pair.secondary.outdated()).contains("serves on unprotected since its session with this host ended " +
                "after checkpoint " + pair.sink.lastCommitted()).contains("its colod is stopping");
            assertThat(told).hasSize(1);

            final PrimaryEngine again = new PrimaryEngine(EnginePair.fastConfig(ColoConfig.Mode.STRICT).conclude(),
                pair.secondary.localAddress(), pair.vm, pair.output, new dev.colod.core.status.ColoCounters(),
                dev.colod.core.protocol.ProtocolTap.NONE, NanoClock.SYSTEM);
            try
            {
                again.start();
                org.awaitility.Awaitility.await().until(() -> again.counters().checkpointsCompleted.get() >= 1);
                org.awaitility.Awaitility.await().until(() -> pair.secondary.outdated() == null);
                assertThat(told).containsExactly(told.get(0), "null");
            }
            finally
            {
                again.close();
            }
        }
    }

    @org.junit.jupiter.api.Test
    void operatorFailoverOnSecondaryResumesThereAndFencesThePrimary() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT), 4096,
            dev.colod.core.protocol.ProtocolTap.NONE, dev.colod.core.protocol.ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(5);
            pair.secondary.requestFailover();
            final ExitEvent sec = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(sec.failedOver()).isTrue();
            assertThat(sec.reason()).isEqualTo(ExitReason.REQUEST);
            assertThat(pair.sink.activatedAt()).isEqualTo(pair.sink.lastCommitted()).isGreaterThanOrEqualTo(5);
            final ExitEvent pri = EnginePair.next(pair.primaryExits, "primary");
            assertThat(pri.detail()).contains("took over");
            assertThat(pair.primary.state()).isEqualTo(ProtectionState.FENCED);
            assertThat(pair.vm.paused()).isTrue();
            // the frames of the unacknowledged epoch were never released
            assertThat(pair.output.events).noneMatch(e -> e.startsWith("lost"));
            assertThat(pair.secondary.failoverState().phase()).isEqualTo(FailoverState.Phase.COMPLETED);
        }
    }
}
