package dev.colod.core.testing;

import dev.colod.core.spi.OutputCommit;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** Records what the engine told the output-commit side, in order, as strings like "sealed 3", "committed 3". */
public final class RecordingOutputCommit implements OutputCommit
{
    public final List<String> events = Collections.synchronizedList(new ArrayList<>());
    public final List<Long> committed = Collections.synchronizedList(new ArrayList<>());
    /** What {@link #wantsCheckpoint()} answers until the next seal (as a ledger at its high-water mark does). */
    public volatile boolean wants;
    /** What {@link #holdsOpenOutput()} answers until the next seal (a frame held in the open epoch). */
    public volatile boolean openOutput;

    @Override
    public void hold(final long firstEpoch)
    {
        events.add("started " + firstEpoch);
    }

    @Override
    public void seal(final long checkpointId)
    {
        wants = false;
        openOutput = false;
        events.add("sealed " + checkpointId);
    }

    @Override
    public void release(final long checkpointId)
    {
        committed.add(checkpointId);
        events.add("committed " + checkpointId);
    }

    @Override
    public void passThrough(final String reason)
    {
        events.add("lost " + reason);
    }

    @Override
    public void fence(final String reason)
    {
        events.add("fenced " + reason);
    }

    public long maxCommitted()
    {
        synchronized (committed)
        {
            return committed.stream().mapToLong(Long::longValue).max().orElse(0);
        }
    }

    @Override
    public boolean wantsCheckpoint()
    {
        return wants;
    }

    @Override
    public boolean holdsOpenOutput()
    {
        return openOutput;
    }
}
