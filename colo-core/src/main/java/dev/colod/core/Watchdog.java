package dev.colod.core;

import java.io.Closeable;
import java.util.concurrent.locks.LockSupport;

/**
 * Enforces the deadline of the one blocking step a session is in. Blocking socket reads and writes have no
 * deadline of their own (writes none at all), so when a step overruns, the watchdog closes the session's
 * connection: the blocked call fails at once, and the engine's single failure exit asks {@link #expiredStep()}
 * to report which wait missed its deadline.
 */
final class Watchdog implements AutoCloseable
{
    private static final long TICK_NS = 2_000_000L;

    private final NanoClock clock;
    private final Thread thread;
    private volatile boolean running = true;
    private volatile Closeable target;
    private volatile String step;
    private volatile long timeoutMs;
    private volatile long deadlineNs;
    private volatile boolean armed;
    private volatile String expired;

    Watchdog(final String name, final NanoClock clock)
    {
        this.clock = clock;
        this.thread = new Thread(this::run, name);
        this.thread.setDaemon(true);
        this.thread.start();
    }

    /** Watch {@code target} from now on; clears any earlier expiry. */
    void watch(final Closeable target)
    {
        this.armed = false;
        this.expired = null;
        this.target = target;
    }

    void arm(final String step, final long timeoutMs)
    {
        this.step = step;
        this.timeoutMs = timeoutMs;
        this.deadlineNs = clock.nanoTime() + timeoutMs * 1_000_000L;
        this.armed = true;
    }

    void disarm()
    {
        armed = false;
    }

    /** The step whose deadline passed ("waiting for vmstate-received, 5000 ms"), or null. */
    String expiredStep()
    {
        return expired;
    }

    private void run()
    {
        while (running)
        {
            if (armed && deadlineNs - clock.nanoTime() < 0)
            {
                armed = false;
                expired = step + " (deadline " + timeoutMs + " ms)";
                final Closeable c = target;
                if (c != null)
                {
                    try
                    {
                        c.close();
                    }
                    catch (final Exception ignore)
                    {
                        // closing is the whole point; a failure to close leaves nothing to do
                    }
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
