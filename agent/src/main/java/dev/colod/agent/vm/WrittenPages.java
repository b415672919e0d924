package dev.colod.agent.vm;

import java.io.IOException;

/**
 * Which guest pages were written since the last checkpoint: asked with the VM paused, so the answer is exact
 * for the checkpoint being taken, and tracking restarts at once for the next one. Two ways:
 * {@link KernelWriteTracker} (the kernel marks written pages; cost follows what the guest wrote) and
 * {@link ShadowCompare} (compare RAM with a shadow copy; cost and memory follow the RAM size).
 */
public interface WrittenPages extends AutoCloseable
{
    /** Receives written pages as runs of consecutive page indexes. */
    interface Regions
    {
        void region(long firstPage, long pageCount) throws IOException;
    }

    /** "kernel" or "compare", as {@code coloctl status} shows it. */
    String method();

    /** A full checkpoint is taken (every page is sent): forget what was written and track afresh from here. */
    void restart() throws IOException;

    /** The pages written since the last {@link #restart()} or {@code collect}; tracking restarts. Returns pages. */
    long collect(Regions out) throws IOException;

    /** Time the last restart or collect spent finding pages (not copying them), in nanoseconds. */
    long lastTrackNanos();

    @Override
    void close();
}
