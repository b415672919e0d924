package dev.colod.agent.disk;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.HashMap;
import java.util.Map;

/**
 * Where a guest offset of a qcow2 image lies in its file, read from the image's own L1 and L2 tables: so that the
 * primary copies a paused VM's written clusters with a pread, as from a raw image, instead of through QEMU's NBD
 * server (about twice as slow). Only valid while nothing changes the image: QEMU's {@code stop} drains every
 * request and flushes qcow2's metadata cache into the file, and the map is made anew at each pause. It answers
 * only for a plain allocated cluster (a data offset) or a zero cluster; anything else (a cluster the backing file
 * holds, a compressed cluster) and images it does not understand (encrypted, an external data file, extended L2
 * entries, a corrupt flag) answer {@link #ELSEWHERE}: the caller reads those through QEMU.
 * <p>
 * The qcow2 header (big-endian): cluster bits (4) at 20, encryption method (4) at 32, L1 size (4) at 36, L1 table
 * offset (8) at 40, incompatible features (8) at 72 (version 3). An L1 or L2 entry's bits 9..55 are an offset; an L2
 * entry's bit 62 marks a compressed cluster, bit 0 a cluster that reads as zeros.
 */
final class Qcow2Map
{
    /** The cluster is not a plain data cluster of this file: read it through QEMU. */
    static final long ELSEWHERE = -1;
    /** The cluster reads as zeros. */
    static final long ZERO = -2;
    private static final long OFFSET_MASK = 0x00fffffffffffe00L;
    private static final long COMPRESSED = 1L << 62;
    /** Incompatible features it cannot map: corrupt (1), external data file (2), extended L2 entries (4). */
    private static final long UNSUPPORTED = 2 | 4 | 16;

    private final FileChannel file;
    private final int clusterBits;
    private final long[] l1;
    private final Map<Long, long[]> l2 = new HashMap<>();

    private Qcow2Map(final FileChannel file, final int clusterBits, final long[] l1)
    {
        this.file = file;
        this.clusterBits = clusterBits;
        this.l1 = l1;
    }

    /** The map of {@code file} as it is now, or null when this image's layout is one it does not map. */
    static Qcow2Map read(final FileChannel file) throws IOException
    {
        final ByteBuffer h = ByteBuffer.allocate(104);
        readFully(file, h, 0);
        final int version = h.getInt(4);
        final int clusterBits = h.getInt(20);
        final int crypt = h.getInt(32);
        final long l1Size = Integer.toUnsignedLong(h.getInt(36));
        final long l1Offset = h.getLong(40);
        final long incompatible = version >= 3 ? h.getLong(72) : 0;
        if (crypt != 0 || (incompatible & UNSUPPORTED) != 0 || clusterBits < 9 || clusterBits > 21 || l1Size > 1 << 24)
        {
            return null;
        }
        final ByteBuffer t = ByteBuffer.allocate((int)l1Size * 8);
        readFully(file, t, l1Offset);
        final long[] l1 = new long[(int)l1Size];
        for (int i = 0; i < l1.length; i++)
        {
            l1[i] = t.getLong(i * 8) & OFFSET_MASK;
        }
        return new Qcow2Map(file, clusterBits, l1);
    }

    int clusterSize()
    {
        return 1 << clusterBits;
    }

    /** The file offset of guest byte {@code guest}, or {@link #ZERO} or {@link #ELSEWHERE} for its whole cluster. */
    long fileOffset(final long guest) throws IOException
    {
        final int l2Bits = clusterBits - 3;
        final long l1Index = guest >>> (clusterBits + l2Bits);
        if (l1Index >= l1.length || l1[(int)l1Index] == 0)
        {
            return ELSEWHERE;
        }
        final long[] table = l2Table(l1[(int)l1Index]);
        final long entry = table[(int)((guest >>> clusterBits) & ((1L << l2Bits) - 1))];
        if ((entry & COMPRESSED) != 0)
        {
            return ELSEWHERE;
        }
        if ((entry & 1) != 0)
        {
            return ZERO;
        }
        final long at = entry & OFFSET_MASK;
        return at == 0 ? ELSEWHERE : at + (guest & (clusterSize() - 1));
    }

    private long[] l2Table(final long offset) throws IOException
    {
        long[] t = l2.get(offset);
        if (t == null)
        {
            final ByteBuffer b = ByteBuffer.allocate(clusterSize());
            readFully(file, b, offset);
            t = new long[clusterSize() / 8];
            b.asLongBuffer().get(t);
            l2.put(offset, t);
        }
        return t;
    }

    private static void readFully(final FileChannel f, final ByteBuffer b, final long at) throws IOException
    {
        while (b.hasRemaining())
        {
            if (f.read(b, at + b.position()) < 0)
            {
                throw new IOException("qcow2 image ends at " + (at + b.position()) + " inside its metadata");
            }
        }
        b.flip();
    }
}
