package dev.colod.core;

import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.api.Test;

import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * When a checkpoint starts (docs/ARCHITECTURE.md): a held frame starts one at once instead of at the interval, the
 * pause budget bounds the share of time paused by a guest that sends all the time, and with the trigger off only
 * the interval counts. The interval here is an hour, so a checkpoint that happens was started by output.
 */
class OutputTriggerTest
{
    private static ColoConfig hourly(final boolean trigger)
    {
        return EnginePair.fastConfig(ColoConfig.Mode.SPECULATIVE).checkpointDelayMs(3_600_000).outputTrigger(trigger);
    }

    @Test
    void aHeldFrameStartsACheckpointAtOnce() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> hourly(true), 4096, ProtocolTap.NONE, ProtocolTap.NONE))
        {
            // nothing but output can start a checkpoint within the hour
            for (int i = 0; i < 5; i++)
            {
                final long before = pair.primary.counters().checkpointsCompleted.get();
                pair.output.openOutput = true;
                await().atMost(30, TimeUnit.SECONDS).until(() -> pair.primary.counters().checkpointsCompleted.get() > before);
            }
            assertThat(pair.primary.counters().checkpointsByOutput.get()).isGreaterThanOrEqualTo(5);
            assertThat(pair.primary.counters().checkpointsByTimer.get()).isZero();
        }
    }

    /**
     * Hybrid mode: held output waits for comparison, but only while something compares it. Without a frames channel
     * (here: none on either side; in production, one that ended) it starts checkpoints as in periodic mode instead of
     * waiting out the interval (an hour here, 10 s by default in hybrid mode).
     */
    @Test
    void inHybridModeHeldOutputStartsACheckpointOnlyWhileNothingComparesIt() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> hourly(true).mode(ColoConfig.Mode.HYBRID), 4096, ProtocolTap.NONE,
            ProtocolTap.NONE))
        {
            pair.awaitCheckpoints(1); // hybrid mode takes the first at once
            for (int i = 1; i <= 3; i++)
            {
                final long n = i;
                pair.output.openOutput = true; // a frame held in the open epoch (until the next seal)
                await().atMost(30, TimeUnit.SECONDS).until(() -> pair.primary.counters().checkpointsByOutput.get() >= n);
            }
        }
        // control: a frames side that compares (a fake, attached too late to get the channel: only comparing() counts)
        try (EnginePair pair = new EnginePair(() -> hourly(true).mode(ColoConfig.Mode.HYBRID), 4096, ProtocolTap.NONE,
            ProtocolTap.NONE))
        {
            pair.primary.frames(new dev.colod.core.spi.FrameMirror()
            {
                @Override
                public void attach(final java.net.Socket socket, final String peer) throws java.io.IOException
                {
                    socket.close();
                }

                @Override
                public void detach()
                {
                }
            });
            pair.awaitCheckpoints(1);
            final long before = pair.primary.counters().checkpointsCompleted.get();
            pair.output.openOutput = true;
            Thread.sleep(1_000); // the trigger above fires within milliseconds
            assertThat(pair.primary.counters().checkpointsByOutput.get()).isZero();
            assertThat(pair.primary.counters().checkpointsCompleted.get()).isEqualTo(before);
        }
    }

    @Test
    void withTheTriggerOffHeldOutputWaitsForTheInterval() throws Exception
    {
        try (EnginePair pair = new EnginePair(() -> hourly(false).checkpointDelayMs(300), 4096, ProtocolTap.NONE,
            ProtocolTap.NONE))
        {
            pair.output.openOutput = true;
            pair.awaitCheckpoints(4);
            assertThat(pair.primary.counters().checkpointsByOutput.get()).isZero();
            assertThat(pair.primary.counters().checkpointsByTimer.get()).isGreaterThanOrEqualTo(3);
        }
    }

    @Test
    void aGuestThatSendsAllTheTimeIsPausedAtMostItsShare()
    {
        // a fake clock: each checkpoint pauses 5 ms; output is always there; the budget decides when the next starts
        final long ms = 1_000_000L;
        final PauseBudget b = new PauseBudget(30, 20 * ms, 0);
        long now = 0;
        long paused = 0;
        int checkpoints = 0;
        while (now < 10_000 * ms)
        {
            now = b.earliestNs(now);
            now += 5 * ms;
            b.paused(5 * ms, now);
            paused += 5 * ms;
            checkpoints++;
        }
        final double share = (double)paused / now;
        assertThat(share).isLessThanOrEqualTo(0.30 + 0.005).isGreaterThan(0.25);
        assertThat(checkpoints).isGreaterThan(500);
    }

    @Test
    void aBurstAfterQuietIsNotDelayed()
    {
        final long ms = 1_000_000L;
        final PauseBudget b = new PauseBudget(30, 20 * ms, 0);
        long now = 1_000 * ms; // quiet for a second: the bucket is full
        for (int i = 0; i < 3; i++)
        {
            assertThat(b.earliestNs(now)).as("checkpoint %d of a burst", i).isEqualTo(now);
            now += 5 * ms;
            b.paused(5 * ms, now);
        }
    }
}
