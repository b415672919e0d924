package dev.colod.agent.vm;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.zip.CRC32C;

/**
 * The state stream of one VM checkpoint, as the primary sends it in {@code vmstate-size}'s bytes and the
 * secondary stages it (docs/PROTOCOL.md, "VM state stream"). Big-endian.
 * <pre>
 *  off size field
 *   0   4   magic 0x434C434B ("CLCK")
 *   4   2   version 3 (2 is still read: its device state is a whole migration stream)
 *   6   2   flags: bit 0 FULL (every page of RAM follows); bit 1 BASE (a live first synchronisation: every
 *           page, read while the guest ran, no device state; not resumable until a later checkpoint commits)
 *   8   8   RAM size in bytes
 *  16   4   page size (4096)
 *  20   4   reserved, 0
 *  24   8   device-state length D
 *  32   8   disk size S in bytes (0: this checkpoint carries no disk)
 *  40   8   reserved, 0
 *  48   D   QEMU device state: version 3, the devices alone as {@code xen-save-devices-state} writes them (no
 *           configuration section: loaded by a QEMU started with migration.send-configuration=off); version 2, a
 *           migration stream with x-ignore-shared (configuration section, devices, ROM pages)
 *  48+D 8   page count P
 *  ...  P x (8 page index, 4096 page bytes)
 *  ...  8   disk extent count E (0 when S is 0)
 *  ...  E x (8 byte offset, 4 length L (1..1 MiB), L bytes): what the guest wrote to its disk since the last
 *           checkpoint (BASE: every allocated extent; the rest of the disk reads as zeros)
 *  end  4   CRC32C of every byte before it
 * </pre>
 */
public final class CheckpointFormat
{
    public static final int MAGIC = 0x434C434B;
    public static final int VERSION = 3;
    /** The oldest version still read (an older primary's, during a rolling upgrade that began with the secondary). */
    public static final int OLDEST_READ = 2;
    public static final int FLAG_FULL = 1;
    public static final int FLAG_BASE = 2;
    public static final int PAGE = 4096;
    public static final int HEADER = 48;
    /** The disk extent count. */
    public static final int DISK_HEADER = 8;
    /** Offset and length before an extent's bytes. */
    public static final int EXTENT_HEADER = 12;
    public static final int MAX_EXTENT = 1 << 20;

    private CheckpointFormat()
    {
    }

    /** Size of a checkpoint with {@code diskBytes} of disk extents (their headers included). */
    public static long size(final long deviceBytes, final long pages, final long diskBytes)
    {
        return HEADER + deviceBytes + 8 + pages * (8 + PAGE) + DISK_HEADER + diskBytes + 4;
    }

    /** A verified checkpoint: where its parts are, in bytes from its start. */
    public record Parsed(boolean full, boolean base, long ramBytes, long deviceOffset, long deviceLength, long pages,
                         long pagesOffset, long diskBytes, long extents, long extentsOffset)
    {
    }

    /**
     * Checks magic, version, lengths, every disk extent's place and the CRC of a whole checkpoint in {@code ch}
     * (read in 1 MiB pieces, so any size works); names the field that is wrong.
     */
    public static Parsed verify(final FileChannel ch, final String what) throws IOException
    {
        final long n = ch.size();
        if (n < HEADER + 8 + DISK_HEADER + 4)
        {
            throw new IOException(what + ": " + n + " bytes is shorter than any checkpoint");
        }
        final ByteBuffer h = read(ch, 0, HEADER);
        if (h.getInt(0) != MAGIC)
        {
            throw new IOException(what + ": bad magic 0x" + Integer.toHexString(h.getInt(0)));
        }
        final int version = Short.toUnsignedInt(h.getShort(4));
        if (version < OLDEST_READ || version > VERSION)
        {
            throw new IOException(what + ": unsupported version " + version + " (this build reads " + OLDEST_READ +
                " to " + VERSION + "; upgrade the secondary before the primary)");
        }
        final boolean full = (h.getShort(6) & FLAG_FULL) != 0;
        final boolean base = (h.getShort(6) & FLAG_BASE) != 0;
        final long ram = h.getLong(8);
        if (h.getInt(16) != PAGE || ram <= 0 || ram % PAGE != 0)
        {
            throw new IOException(what + ": bad RAM size " + ram + " / page size " + h.getInt(16));
        }
        final long dev = h.getLong(24);
        if (dev < 0 || dev > n - HEADER - 8 - DISK_HEADER - 4)
        {
            throw new IOException(what + ": bad device-state length " + dev);
        }
        final long pages = read(ch, HEADER + dev, 8).getLong(0);
        final long diskAt = HEADER + dev + 8 + pages * (8 + PAGE);
        if (pages < 0 || pages > ram / PAGE || diskAt + DISK_HEADER + 4 > n)
        {
            throw new IOException(what + ": page count " + pages + " does not fit its " + n + " bytes");
        }
        final long disk = h.getLong(32);
        final long extents = read(ch, diskAt, DISK_HEADER).getLong(0);
        if (disk < 0 || extents < 0 || extents > 0 && disk == 0)
        {
            throw new IOException(what + ": bad disk size " + disk + " / extent count " + extents);
        }
        long at = diskAt + DISK_HEADER;
        for (long e = 0; e < extents; e++)
        {
            if (at + EXTENT_HEADER > n - 4)
            {
                throw new IOException(what + ": disk extent " + e + " of " + extents + " starts beyond its " + n + " bytes");
            }
            final ByteBuffer x = read(ch, at, EXTENT_HEADER);
            checkExtent(x.getLong(0), x.getInt(8), disk, what + ": disk extent " + e);
            at += EXTENT_HEADER + x.getInt(8);
        }
        if (at != n - 4)
        {
            throw new IOException(what + ": its disk extents end at " + at + ", not at " + (n - 4));
        }
        final CRC32C crc = new CRC32C();
        final ByteBuffer buf = ByteBuffer.allocateDirect(1 << 20);
        for (long p = 0; p < n - 4; )
        {
            buf.clear().limit((int)Math.min(buf.capacity(), n - 4 - p));
            final int r = ch.read(buf, p);
            if (r <= 0)
            {
                throw new IOException(what + ": short read at " + p);
            }
            crc.update(buf.flip());
            p += r;
        }
        if ((int)crc.getValue() != read(ch, n - 4, 4).getInt(0))
        {
            throw new IOException(what + ": CRC32C mismatch");
        }
        return new Parsed(full, base, ram, HEADER, dev, pages, HEADER + dev + 8, disk, extents, diskAt + DISK_HEADER);
    }

    /** An extent lies inside the disk and is 1..{@link #MAX_EXTENT} bytes long. */
    public static void checkExtent(final long offset, final int length, final long diskBytes, final String what)
        throws IOException
    {
        if (length <= 0 || length > MAX_EXTENT || offset < 0 || offset > diskBytes - length)
        {
            throw new IOException(what + " [" + offset + ", +" + length + ") is outside the " + diskBytes +
                "-byte disk or longer than " + MAX_EXTENT + " bytes");
        }
    }

    /** Exactly {@code len} bytes at {@code at}. */
    static ByteBuffer read(final FileChannel ch, final long at, final int len) throws IOException
    {
        final ByteBuffer b = ByteBuffer.allocate(len);
        while (b.hasRemaining())
        {
            if (ch.read(b, at + b.position()) < 0)
            {
                throw new IOException("unexpected end of checkpoint at " + (at + b.position()));
            }
        }
        return b.flip();
    }
}
