package dev.colod.buffer.tap;

import dev.colod.buffer.BufferLimits;

import java.nio.ByteBuffer;

/**
 * Where the TAP backend keeps held guest frames, in arrival order: read straight into a preallocated off-heap
 * arena (a byte ring) and indexed by a preallocated frame ring, so nothing is allocated per frame. A frame's
 * position is its sequence number; {@link #tail()} is the mark after the newest. Which frames form which
 * epoch is the {@link EpochLedger}'s business, not this class's.
 * <p>
 * Single-threaded: only the NIC's loop thread uses it.
 */
public final class EpochBuffer
{
    /** Writes one frame out; returns false if the kernel refused it. */
    public interface FrameWriter
    {
        boolean write(ByteBuffer arena, int offset, int length);
    }

    private final BufferLimits limits;
    private final ByteBuffer arena;
    private final int capacity;
    private final int window;
    private final int[] frameOff;
    private final int[] frameLen;
    /** Frames already written ahead of older ones ({@link #writeOne}): skipped when the head passes them. */
    private final boolean[] sent;
    private long headSeq;
    private long tailSeq;
    private int dataHead;
    private int dataTail;
    private long heldBytes;

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
        this.sent = new boolean[limits.maxFrames()];
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
     * Keeps a frame of {@code length} bytes read at {@code offset} (from {@link #reserve()}); false, and not
     * kept, if it would pass the byte limit.
     */
    public boolean append(final int offset, final int length)
    {
        if (heldBytes + length > limits.maxBytes())
        {
            return false;
        }
        final int i = (int)(tailSeq % frameOff.length);
        frameOff[i] = offset;
        frameLen[i] = length;
        if (tailSeq == headSeq)
        {
            dataHead = offset;
        }
        dataTail = offset + length;
        tailSeq++;
        heldBytes += length;
        return true;
    }

    /** The mark after the newest frame. */
    public long tail()
    {
        return tailSeq;
    }

    /** Writes every frame before {@code mark} out, in order; returns how many {@code out} refused. */
    public int writeUpTo(final long mark, final FrameWriter out)
    {
        int refused = 0;
        while (headSeq < mark)
        {
            final int i = (int)(headSeq % frameOff.length);
            if (sent[i])
            {
                sent[i] = false;
            }
            else if (!out.write(arena, frameOff[i], frameLen[i]))
            {
                refused++;
            }
            heldBytes -= frameLen[i];
            headSeq++;
        }
        advanced();
        return refused;
    }

    /** Replaces the held frame at {@code seq} with the no longer {@code frame} (hybrid mode: the rest of a cut segment). */
    public void replace(final long seq, final byte[] frame)
    {
        final int i = (int)(seq % frameOff.length);
        if (seq < headSeq || seq >= tailSeq || sent[i] || frame.length > frameLen[i])
        {
            throw new IllegalArgumentException("frame " + seq + " is not held with room for " + frame.length + " bytes");
        }
        arena.put(frameOff[i], frame);
        heldBytes -= frameLen[i] - frame.length;
        frameLen[i] = frame.length;
    }

    /**
     * Writes the held frame at {@code seq} out now, ahead of older frames still held (hybrid mode's release by
     * comparison); it is not written again when they leave. Its space is free once every frame before it left.
     * Returns false if {@code out} refused it.
     */
    public boolean writeOne(final long seq, final FrameWriter out)
    {
        final int i = (int)(seq % frameOff.length);
        if (seq < headSeq || seq >= tailSeq || sent[i])
        {
            throw new IllegalArgumentException("frame " + seq + " is not held (held: " + headSeq + ".." + tailSeq + ")");
        }
        final boolean ok = out.write(arena, frameOff[i], frameLen[i]);
        sent[i] = true;
        while (headSeq < tailSeq && sent[(int)(headSeq % frameOff.length)])
        {
            final int h = (int)(headSeq % frameOff.length);
            sent[h] = false;
            heldBytes -= frameLen[h];
            headSeq++;
        }
        advanced();
        return ok;
    }

    /** Forgets every frame before {@code mark}, unwritten. */
    public void dropUpTo(final long mark)
    {
        while (headSeq < mark)
        {
            final int i = (int)(headSeq % frameOff.length);
            sent[i] = false;
            heldBytes -= frameLen[i];
            headSeq++;
        }
        advanced();
    }

    private void advanced()
    {
        if (headSeq == tailSeq)
        {
            dataHead = 0;
            dataTail = 0;
        }
        else
        {
            dataHead = frameOff[(int)(headSeq % frameOff.length)];
        }
    }

    public long heldFrames()
    {
        return tailSeq - headSeq;
    }

    public long heldBytes()
    {
        return heldBytes;
    }
}
