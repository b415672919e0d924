package dev.colod.core;

import java.io.Closeable;
import java.util.concurrent.locks.LockSupport;

/**
 * Enforces the deadline of the one blocking step a session is in. Blocking socket reads and writes have no
 * deadline of their own (writes none at all), so when a step overruns, the watchdog records the missed
 * deadline as the session's end (first writer wins) and closes the session's connection: the blocked call
 * fails at once and the engine's single exit path finds the cause already recorded.
 */
final class Watchdog implements AutoCloseable
{
    private static final long TICK_NS = 2_000_000L;

    /** One armed step: step and deadline are written together, so a new step never pairs with an old deadline. */
    private record Armed(String step, long timeoutMs, long deadlineNs)
    {
    }

    /** What is watched: the connection to cut and the session whose end to record. */
    private record Target(Closeable connection, SessionEnd end)
    {
    }

    private final NanoClock clock;
    private final Thread thread;
    private volatile boolean running = true;
    private volatile Target target;
    private volatile Armed armed;

    Watchdog(final String name, final NanoClock clock)
    {
        this.clock = clock;
        this.thread = new Thread(this::run, name);
        this.thread.setDaemon(true);
    }

    /** Starts watching (the engine's {@code start()}); a watchdog never started needs no close. */
    void start()
    {
        thread.start();
    }

    /** Watch {@code connection} of the session ending in {@code end} from now on; disarmed. */
    void watch(final Closeable connection, final SessionEnd end)
    {
        this.armed = null;
        this.target = new Target(connection, end);
    }

    void arm(final String step, final long timeoutMs)
    {
        armed = new Armed(step, timeoutMs, clock.nanoTime() + timeoutMs * 1_000_000L);
    }

    void disarm()
    {
        armed = null;
    }

    private void run()
    {
        while (running)
        {
            final Armed a = armed;
            final Target t = target;
            if (a != null && t != null && a.deadlineNs() - clock.nanoTime() < 0)
            {
                armed = null;
                t.end().record(SessionEnd.Cause.DEADLINE_MISSED, a.step() + " (deadline " + a.timeoutMs() + " ms)");
                try
                {
                    t.connection().close();
                }
                catch (final Exception ignore)
                {
                    // closing is the whole point; a failure to close leaves nothing to do
                }
            }
            LockSupport.parkNanos(this, TICK_NS);
        }
    }

    @Override
    public void close()
    {
        running = false;
        LockSupport.unpark(thread);
    }
}
