package dev.colod.agent;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.Consumer;

/** Things to undo, undone in the reverse order they were set up; one failure never stops the rest. */
public final class Closers implements AutoCloseable
{
    private final List<AutoCloseable> all = Collections.synchronizedList(new ArrayList<>());
    private final Consumer<Exception> onError;

    public Closers(final Consumer<Exception> onError)
    {
        this.onError = onError;
    }

    public void add(final AutoCloseable c)
    {
        all.add(c);
    }

    @Override
    public void close()
    {
        final List<AutoCloseable> copy;
        synchronized (all)
        {
            copy = new ArrayList<>(all);
            all.clear();
        }
        Collections.reverse(copy);
        for (final AutoCloseable c : copy)
        {
            try
            {
                c.close();
            }
            catch (final Exception ex)
            {
                onError.accept(ex);
            }
        }
    }
}
