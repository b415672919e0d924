package dev.colod.core;

import java.util.function.Consumer;

/**
 * A warning that may come back at every reconnect (a secondary that is down, a refusal): said the first time and
 * whenever it changes, otherwise at most once a minute with how often it recurred, and once more, with the count,
 * when it stops. Thread-safe.
 */
final class RepeatedWarning
{
    static final long EVERY_NS = 60_000_000_000L;

    private final NanoClock clock;
    private final Consumer<String> out;
    private String last;
    private long again;
    private long saidNs;

    RepeatedWarning(final NanoClock clock, final Consumer<String> out)
    {
        this.clock = clock;
        this.out = out;
    }

    synchronized void warn(final String message)
    {
        final long now = clock.nanoTime();
        if (!message.equals(last))
        {
            flush(now);
            last = message;
            again = 0;
            saidNs = now;
            out.accept(message);
            return;
        }
        again++;
        if (now - saidNs >= EVERY_NS)
        {
            flush(now);
            saidNs = now;
        }
    }

    /** The condition is over (e.g. protected again): says how often the last warning recurred since it was said. */
    synchronized void clear()
    {
        flush(clock.nanoTime());
        last = null;
    }

    private void flush(final long now)
    {
        if (last != null && again > 0)
        {
            out.accept(last + " (again " + again + " time" + (again == 1 ? "" : "s") + " in the last " +
                Math.max(1, (now - saidNs) / 1_000_000_000L) + " s)");
        }
        again = 0;
    }
}
