package dev.colod.core;

/** Closing what may already be closed, or null, where a failure to close leaves nothing to do. */
public final class Closeables
{
    private Closeables()
    {
    }

    public static void closeQuietly(final AutoCloseable c)
    {
        if (c != null)
        {
            try
            {
                c.close();
            }
            catch (final Exception ignore)
            {
                // nothing more to do with it
            }
        }
    }
}
