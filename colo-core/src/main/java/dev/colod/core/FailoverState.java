package dev.colod.core;

import java.util.concurrent.atomic.AtomicReference;

/**
 * Failover progress of one engine, changed only by compare-and-set so that concurrent triggers (a lost
 * heartbeat, an operator's command, a protocol error) agree on one winner.
 */
public final class FailoverState
{
    public enum Phase
    {
        NONE, REQUIRE, ACTIVE, COMPLETED
    }

    private final AtomicReference<Phase> phase = new AtomicReference<>(Phase.NONE);
    private volatile ExitReason reason;

    public Phase phase()
    {
        return phase.get();
    }

    public boolean isPending()
    {
        return phase.get() == Phase.REQUIRE;
    }

    /** NONE -> REQUIRE; false if a failover was already requested or done. */
    public boolean require(final ExitReason why)
    {
        if (phase.compareAndSet(Phase.NONE, Phase.REQUIRE))
        {
            reason = why;
            return true;
        }
        return false;
    }

    public boolean transition(final Phase from, final Phase to)
    {
        return phase.compareAndSet(from, to);
    }

    public ExitReason reason()
    {
        return reason;
    }

    /** Back to NONE after a completed or abandoned failover, so protection can start again. */
    public void reset()
    {
        phase.set(Phase.NONE);
        reason = null;
    }
}
