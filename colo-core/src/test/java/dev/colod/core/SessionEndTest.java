package dev.colod.core;

import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.status.ColoCounters;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.util.concurrent.CountDownLatch;

import static org.assertj.core.api.Assertions.assertThat;

class SessionEndTest
{
    @Test
    void theFirstWriterWinsAndLaterOnesChangeNothing()
    {
        final SessionEnd end = new SessionEnd();
        assertThat(end.record(SessionEnd.Cause.PEER_LOST, "no heartbeat for 1000 ms")).isTrue();
        assertThat(end.record(SessionEnd.Cause.STOPPING, "agent stopping")).isFalse();
        end.recordBye(HeartbeatFrame.BYE_FAILOVER, "");
        assertThat(end.recorded().cause()).isEqualTo(SessionEnd.Cause.PEER_LOST);
    }

    @Test
    void aProtocolErrorIsTheCauseAtOnceButAnIoErrorWaitsForTheHeartbeatsVerdict() throws Exception
    {
        final SessionEnd a = new SessionEnd();
        final long t0 = System.nanoTime();
        assertThat(a.fail(new ProtocolException("command", "invalid command 9"), 10_000).cause())
            .isEqualTo(SessionEnd.Cause.PROTOCOL_ERROR);
        assertThat(System.nanoTime() - t0).as("no wait for a protocol error").isLessThan(5_000_000_000L);

        final SessionEnd b = new SessionEnd();
        final CountDownLatch waiting = new CountDownLatch(1);
        final Thread heartbeat = new Thread(() ->
        {
            try
            {
                waiting.await();
                Thread.sleep(50);
            }
            catch (final InterruptedException ex)
            {
                return;
            }
            b.recordBye(HeartbeatFrame.BYE_FAILOVER, "");
        });
        heartbeat.start();
        waiting.countDown();
        final SessionEnd.Recorded r = b.fail(new IOException("Connection reset"), 10_000);
        assertThat(r.cause()).as("the heartbeat's goodbye, which came after the I/O error").isEqualTo(SessionEnd.Cause.PEER_TOOK_OVER);
        heartbeat.join();

        final SessionEnd c = new SessionEnd();
        assertThat(c.fail(new IOException("Broken pipe"), 10).cause()).isEqualTo(SessionEnd.Cause.FAILED);
    }

    @Test
    void oneClassifierSaysWhatComesNextForEachRole()
    {
        final ColoCounters counters = new ColoCounters();
        assertThat(next(SessionEnd.Cause.PEER_TOOK_OVER, true, counters)).isEqualTo(SessionEnd.Next.FENCE);
        assertThat(next(SessionEnd.Cause.PEER_LOST, true, counters)).isEqualTo(SessionEnd.Next.RECONNECT);
        assertThat(next(SessionEnd.Cause.REQUESTED, true, counters)).isEqualTo(SessionEnd.Next.STOP);
        assertThat(next(SessionEnd.Cause.STOPPING, true, counters)).isEqualTo(SessionEnd.Next.STOP);
        assertThat(next(SessionEnd.Cause.PROTOCOL_ERROR, true, counters)).isEqualTo(SessionEnd.Next.RECONNECT);

        assertThat(next(SessionEnd.Cause.PEER_LOST, false, counters)).isEqualTo(SessionEnd.Next.FAIL_OVER);
        assertThat(next(SessionEnd.Cause.PEER_CLOSED, false, counters)).isEqualTo(SessionEnd.Next.AWAIT_PEER);
        assertThat(next(SessionEnd.Cause.PEER_CLOSED, true, counters)).isEqualTo(SessionEnd.Next.RECONNECT);
        assertThat(next(SessionEnd.Cause.VM_LOST, true, counters)).as("a primary without its VM hands it over")
            .isEqualTo(SessionEnd.Next.FENCE);
        assertThat(next(SessionEnd.Cause.VM_LOST, false, counters)).isEqualTo(SessionEnd.Next.FAIL_OVER);
        assertThat(next(SessionEnd.Cause.REQUESTED, false, counters)).isEqualTo(SessionEnd.Next.FAIL_OVER);
        assertThat(next(SessionEnd.Cause.PROTOCOL_ERROR, false, counters))
            .as("a bad message ends the session, never the VM").isEqualTo(SessionEnd.Next.RECONNECT);
        assertThat(next(SessionEnd.Cause.DEADLINE_MISSED, false, counters)).isEqualTo(SessionEnd.Next.RECONNECT);
        assertThat(next(SessionEnd.Cause.PEER_ENDED, false, counters)).isEqualTo(SessionEnd.Next.RECONNECT);
        assertThat(next(SessionEnd.Cause.STOPPING, false, counters)).isEqualTo(SessionEnd.Next.STOP);

        assertThat(counters.protocolErrors.get()).isEqualTo(2);
        assertThat(counters.deadlinesMissed.get()).isEqualTo(1);
        final SessionEnd end = new SessionEnd();
        end.record(SessionEnd.Cause.DEADLINE_MISSED, "waiting for vmstate-received (deadline 5000 ms)");
        final SessionEnd.Outcome o = SessionEnd.classify(end.recorded(), true, "198.19.0.2:7600", counters);
        assertThat(o.detail()).isEqualTo("deadline missed waiting for vmstate-received (deadline 5000 ms) with " +
            "secondary 198.19.0.2:7600");
        assertThat(o.reason()).isEqualTo(ExitReason.ERROR);
    }

    private static SessionEnd.Next next(final SessionEnd.Cause cause, final boolean primary, final ColoCounters c)
    {
        final SessionEnd end = new SessionEnd();
        end.record(cause, "test");
        return SessionEnd.classify(end.recorded(), primary, "peer:1", c).next();
    }
}
