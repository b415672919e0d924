package dev.colod.agent.vm;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * Written pages found by comparing guest RAM with a shadow copy of what the secondary has (vectorised
 * {@code mismatch}, 1 MiB at a time so the JVM can reach a safepoint between calls). Needs no kernel support,
 * but keeps a second copy of RAM and reads all of it at every checkpoint: the pause grows with the RAM size.
 * The fallback where kernel tracking is unavailable ({@code write-tracking: compare} or {@code auto}).
 */
public final class ShadowCompare implements WrittenPages
{
    private static final int SCAN = 1 << 20;

    private final GuestRam ram;
    private final ByteBuffer[] shadow;
    private long lastTrackNanos;

    ShadowCompare(final GuestRam ram)
    {
        this.ram = ram;
        this.shadow = new ByteBuffer[ram.chunkCount()];
        for (int i = 0; i < shadow.length; i++)
        {
            shadow[i] = ByteBuffer.allocateDirect(ram.chunk(i).capacity());
        }
    }

    @Override
    public String method()
    {
        return "compare";
    }

    @Override
    public void restart()
    {
        final long t0 = System.nanoTime();
        for (int i = 0; i < shadow.length; i++)
        {
            // 1 MiB at a time: one copy of a whole 1 GiB chunk would hold every other thread at a safepoint
            final ByteBuffer r = ram.chunk(i);
            for (int pos = 0; pos < r.capacity(); pos += SCAN)
            {
                final int len = Math.min(SCAN, r.capacity() - pos);
                shadow[i].put(pos, r, pos, len);
            }
        }
        lastTrackNanos = System.nanoTime() - t0;
    }

    @Override
    public long collect(final Regions out) throws IOException
    {
        final long t0 = System.nanoTime();
        long pages = 0;
        long reportNanos = 0;
        for (int i = 0; i < shadow.length; i++)
        {
            final ByteBuffer r = ram.chunk(i);
            final ByteBuffer s = shadow[i];
            final int size = r.capacity();
            int pos = 0;
            while (pos < size)
            {
                final int len = Math.min(SCAN, size - pos);
                final int m = r.slice(pos, len).mismatch(s.slice(pos, len));
                if (m < 0)
                {
                    pos += len;
                    continue;
                }
                final int inChunk = (pos + m) / GuestRam.PAGE;
                s.put(inChunk * GuestRam.PAGE, r, inChunk * GuestRam.PAGE, GuestRam.PAGE);
                final long r0 = System.nanoTime();
                out.region(i * (GuestRam.CHUNK / GuestRam.PAGE) + inChunk, 1);
                reportNanos += System.nanoTime() - r0;
                pages++;
                pos = (inChunk + 1) * GuestRam.PAGE;
            }
        }
        lastTrackNanos = System.nanoTime() - t0 - reportNanos;
        return pages;
    }

    /** Page {@code page} as the shadow holds it (what a live base sends, so the next compare is exact). */
    void copyShadowPage(final long page, final byte[] dst, final int off)
    {
        final long at = page * GuestRam.PAGE;
        shadow[(int)(at / GuestRam.CHUNK)].get((int)(at % GuestRam.CHUNK), dst, off, GuestRam.PAGE);
    }

    @Override
    public long lastTrackNanos()
    {
        return lastTrackNanos;
    }

    @Override
    public void close()
    {
        // direct buffers are released by the GC
    }
}
