package dev.colod.buffer;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * Held guest frames of one NIC, in arrival order, grouped into epochs. Frames are read straight into a
 * preallocated off-heap arena (a byte ring) and indexed by a preallocated frame ring: nothing is allocated per
 * frame. {@link #seal(long)} closes the open epoch; {@link #release(long)} writes every frame of that epoch
 * (and of any older one) out, in order; {@link #releaseAll()} writes everything.
 * <p>
 * Single-threaded: only the NIC's event-loop thread calls it. Its counters are volatile so that
 * {@link #stats(String, long)} can be read from any thread.
 */
public final class EpochBuffer
{
    /** Writes one frame out; returns false if the kernel refused it. */
    public interface FrameWriter
    {
        boolean write(ByteBuffer arena, int offset, int length);
    }

    private static final int MAX_SEALED = 1024;

    private final BufferLimits limits;
    private final ByteBuffer arena;
    private final int capacity;
    private final int window;
    private final int[] frameOff;
    private final int[] frameLen;
    private final long[] frameNanos;
    private final long[] sealedId = new long[MAX_SEALED];
    private final long[] sealedEndSeq = new long[MAX_SEALED];
    private final long[] sealedEndBytes = new long[MAX_SEALED];
    private int sealedHead;
    private int sealedCount;
    private long headSeq;
    private long tailSeq;
    private int dataHead;
    private int dataTail;
    private long bytesInTotal;
    private long bytesOutTotal;
    private boolean highWaterSignalled;

    private volatile long heldFrames;
    private volatile long heldBytes;
    private volatile long oldestNanos;
    private volatile long releasedFrames;
    private volatile long releasedBytes;
    private volatile long droppedLimitFrames;
    private volatile long droppedLimitBytes;
    private volatile long droppedOversize;
    private volatile long droppedFenced;
    private volatile long droppedWriteError;
    private volatile long earlyCheckpointRequests;
    private volatile List<NicStats.EpochStats> epochView = List.of();
    private volatile long lastReleaseNanos;
    private volatile long lastReleaseFrames;

    public EpochBuffer(final BufferLimits limits)
    {
        this.limits = limits;
        this.window = limits.maxFrameBytes();
        // slack of three windows: free space of at least two windows, split in two parts, always leaves one
        // contiguous window for the next read however the ring has wrapped
        this.capacity = (int)limits.maxBytes() + 3 * window;
        this.arena = ByteBuffer.allocateDirect(capacity);
        this.frameOff = new int[limits.maxFrames()];
        this.frameLen = new int[limits.maxFrames()];
        this.frameNanos = new long[limits.maxFrames()];
    }

    public ByteBuffer arena()
    {
        return arena;
    }

    /** Bytes a read may fill at the position {@link #reserve()} returns. */
    public int window()
    {
        return window;
    }

    /**
     * Where the next frame may be read into (a contiguous window of {@link #window()} bytes), or -1 when the
     * buffer is at a limit (frames or bytes): then {@link BufferLimits.Policy} decides.
     */
    public int reserve()
    {
        if (tailSeq - headSeq >= frameOff.length)
        {
            return -1;
        }
        if (heldBytes + 64 > limits.maxBytes())
        {
            return -1;
        }
        if (tailSeq == headSeq)
        {
            dataHead = 0;
            dataTail = 0;
            return 0;
        }
        if (dataTail > dataHead)
        {
            if (capacity - dataTail >= window)
            {
                return dataTail;
            }
            return dataHead > window ? 0 : -1;
        }
        return dataHead - dataTail > window ? dataTail : -1;
    }

    /** Which limit {@link #reserve()} hit: true for frames, false for bytes. */
    public boolean atFrameLimit()
    {
        return tailSeq - headSeq >= frameOff.length;
    }

    /**
     * A frame of {@code length} bytes was read at {@code offset} (from {@link #reserve()}). Returns true if the
     * high-water mark was crossed for the first time in this epoch (ask for an early checkpoint).
     */
    public boolean append(final int offset, final int length, final long nowNs)
    {
        if (length >= window)
        {
            droppedOversize++;
            return false;
        }
        if (heldBytes + length > limits.maxBytes())
        {
            droppedLimitBytes++;
            return false;
        }
        final int i = (int)(tailSeq % frameOff.length);
        frameOff[i] = offset;
        frameLen[i] = length;
        frameNanos[i] = nowNs;
        if (tailSeq == headSeq)
        {
            dataHead = offset;
            oldestNanos = nowNs;
        }
        dataTail = offset + length;
        tailSeq++;
        bytesInTotal += length;
        heldFrames = tailSeq - headSeq;
        heldBytes = heldBytes + length;
        if (!highWaterSignalled && (heldFrames * 100 >= (long)frameOff.length * limits.highWaterPercent() ||
            heldBytes * 100 >= limits.maxBytes() * limits.highWaterPercent()))
        {
            highWaterSignalled = true;
            earlyCheckpointRequests++;
            return true;
        }
        return false;
    }

    /** A frame arrived and the limit policy dropped it. */
    public void dropAtLimit(final boolean frameLimit)
    {
        if (frameLimit)
        {
            droppedLimitFrames++;
        }
        else
        {
            droppedLimitBytes++;
        }
    }

    /** Checkpoint {@code epoch} started: every frame held so far belongs to it (or to an older epoch). */
    public void seal(final long epoch)
    {
        if (sealedCount == MAX_SEALED)
        {
            // cannot happen with the protocol's one transaction at a time; refuse loudly rather than mix epochs
            throw new IllegalStateException("more than " + MAX_SEALED + " unreleased epochs");
        }
        final int i = (sealedHead + sealedCount) % MAX_SEALED;
        sealedId[i] = epoch;
        sealedEndSeq[i] = tailSeq;
        sealedEndBytes[i] = bytesInTotal;
        sealedCount++;
        highWaterSignalled = false;
        publishEpochs();
    }

    /** {@code vmstate-received} for {@code epoch}: write its frames, and those of older epochs, in order. */
    public int release(final long epoch, final FrameWriter out)
    {
        final long startNs = System.nanoTime();
        int n = 0;
        while (sealedCount > 0 && sealedId[sealedHead] <= epoch)
        {
            n += writeUpTo(sealedEndSeq[sealedHead], out);
            sealedHead = (sealedHead + 1) % MAX_SEALED;
            sealedCount--;
        }
        if (n > 0)
        {
            lastReleaseNanos = System.nanoTime() - startNs;
            lastReleaseFrames = n;
        }
        publishEpochs();
        return n;
    }

    /** Protection lost: write everything held, sealed or not, in order. */
    public int releaseAll(final FrameWriter out)
    {
        final int n = writeUpTo(tailSeq, out);
        sealedCount = 0;
        publishEpochs();
        return n;
    }

    /** The VM was taken over elsewhere: drop everything held, counted. */
    public void dropAll()
    {
        droppedFenced += tailSeq - headSeq;
        headSeq = tailSeq;
        bytesOutTotal = bytesInTotal;
        heldFrames = 0;
        heldBytes = 0;
        oldestNanos = 0;
        sealedCount = 0;
        publishEpochs();
    }

    /** A frame dropped because the VM is fenced (arrived after the takeover). */
    public void countFenced()
    {
        droppedFenced++;
    }

    private int writeUpTo(final long endSeq, final FrameWriter out)
    {
        int n = 0;
        long bytes = 0;
        long okFrames = 0;
        while (headSeq < endSeq)
        {
            final int i = (int)(headSeq % frameOff.length);
            final int len = frameLen[i];
            if (out.write(arena, frameOff[i], len))
            {
                okFrames++;
                bytes += len;
            }
            else
            {
                droppedWriteError++;
            }
            bytesOutTotal += len;
            headSeq++;
            n++;
        }
        releasedFrames += okFrames;
        releasedBytes += bytes;
        heldFrames = tailSeq - headSeq;
        heldBytes = bytesInTotal - bytesOutTotal;
        if (headSeq == tailSeq)
        {
            oldestNanos = 0;
            dataHead = 0;
            dataTail = 0;
        }
        else
        {
            final int i = (int)(headSeq % frameOff.length);
            dataHead = frameOff[i];
            oldestNanos = frameNanos[i];
        }
        return n;
    }

    private void publishEpochs()
    {
        final List<NicStats.EpochStats> view = new ArrayList<>(sealedCount + 1);
        long startSeq = headSeq;
        long startBytes = bytesOutTotal;
        for (int k = 0; k < sealedCount; k++)
        {
            final int i = (sealedHead + k) % MAX_SEALED;
            view.add(new NicStats.EpochStats(sealedId[i], sealedEndSeq[i] - startSeq, sealedEndBytes[i] - startBytes));
            startSeq = sealedEndSeq[i];
            startBytes = sealedEndBytes[i];
        }
        epochView = List.copyOf(view);
    }

    /** How long the last non-empty release took, from its start to its last frame written, and how many frames. */
    public long lastReleaseNanos()
    {
        return lastReleaseNanos;
    }

    public long lastReleaseFrames()
    {
        return lastReleaseFrames;
    }

    public long heldFrames()
    {
        return heldFrames;
    }

    public long heldBytes()
    {
        return heldBytes;
    }

    /** Counters as seen from any thread; {@code extra} fills the NIC-level fields. */
    public NicStats stats(final String nic, final String mode, final long nowNs, final long passedFrames,
        final long inboundFrames, final long inboundBytes, final long backpressureStalls)
    {
        final long oldest = oldestNanos;
        final long held = heldFrames;
        final long heldB = heldBytes;
        final List<NicStats.EpochStats> all = NicStats.withOpenEpoch(epochView, held, heldB);
        return new NicStats(nic, mode, held, heldB, held == 0 || oldest == 0 ? 0 : Math.max(0, nowNs - oldest), all,
            releasedFrames, releasedBytes, passedFrames, inboundFrames, inboundBytes, droppedLimitFrames,
            droppedLimitBytes, droppedOversize, droppedFenced, droppedWriteError, backpressureStalls,
            earlyCheckpointRequests);
    }
}
