package dev.colod.buffer;

/** Lets the benchmark read buffer internals that are not part of the public API. */
public final class BenchAccess
{
    private BenchAccess()
    {
    }

    public static long lastReleaseNanos(final TapNic nic)
    {
        return nic.buffer().lastReleaseNanos();
    }

    public static long lastReleaseFrames(final TapNic nic)
    {
        return nic.buffer().lastReleaseFrames();
    }
}
