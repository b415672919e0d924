package dev.colod.core.testing;

import dev.colod.core.spi.VmStateSink;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** A standby image in memory: staging is a fresh array per checkpoint, commit swaps it in. */
public final class MemorySink implements VmStateSink
{
    private volatile byte[] committed = new byte[0];
    private volatile long lastCommitted;
    private byte[] staging;
    private int staged;
    private long stagingId = -1;
    private volatile long largestStage;
    private volatile long activatedAt = -1;
    public final List<Long> discarded = Collections.synchronizedList(new ArrayList<>());
    public final List<Long> stagedIds = Collections.synchronizedList(new ArrayList<>());

    @Override
    public long lastCommitted()
    {
        return lastCommitted;
    }

    public byte[] committed()
    {
        return committed;
    }

    /** The largest size any staging area was ever allocated with. */
    public long largestStage()
    {
        return largestStage;
    }

    public long activatedAt()
    {
        return activatedAt;
    }

    @Override
    public void stage(final long checkpointId, final long sizeBytes) throws IOException
    {
        if (sizeBytes > Integer.MAX_VALUE - 8)
        {
            throw new IOException("memory sink cannot stage " + sizeBytes + " bytes");
        }
        largestStage = Math.max(largestStage, sizeBytes);
        stagedIds.add(checkpointId);
        staging = new byte[(int)sizeBytes];
        staged = 0;
        stagingId = checkpointId;
    }

    @Override
    public void stageWrite(final byte[] buf, final int off, final int len)
    {
        System.arraycopy(buf, off, staging, staged, len);
        staged += len;
    }

    @Override
    public void commit(final long checkpointId) throws IOException
    {
        if (checkpointId != stagingId || staged != staging.length)
        {
            throw new IOException("commit of checkpoint " + checkpointId + " but staged " + stagingId + " holds " + staged +
                " of " + (staging == null ? 0 : staging.length) + " bytes");
        }
        committed = staging;
        lastCommitted = checkpointId;
        staging = null;
        stagingId = -1;
    }

    @Override
    public void discard(final long checkpointId)
    {
        discarded.add(checkpointId);
        staging = null;
        stagingId = -1;
    }

    @Override
    public void activate(final long checkpointId)
    {
        activatedAt = checkpointId;
    }
}
