package dev.colod.core;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;

/** Subscribers to an engine's {@link ExitEvent}s; one failing subscriber never stops the others. */
final class ExitListeners
{
    private static final Logger LOG = LoggerFactory.getLogger(ExitListeners.class);
    private final List<Consumer<ExitEvent>> listeners = new CopyOnWriteArrayList<>();

    void add(final Consumer<ExitEvent> listener)
    {
        listeners.add(listener);
    }

    void publish(final ExitEvent e)
    {
        for (final Consumer<ExitEvent> l : listeners)
        {
            try
            {
                l.accept(e);
            }
            catch (final RuntimeException ex)
            {
                LOG.error("exit listener failed", ex);
            }
        }
    }
}
