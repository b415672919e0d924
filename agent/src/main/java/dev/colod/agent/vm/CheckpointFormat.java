package dev.colod.agent.vm;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.zip.CRC32C;

/**
 * The state stream of one VM checkpoint, as the primary sends it in {@code vmstate-size}'s bytes and the
 * secondary stages it (docs/PROTOCOL.md, "VM state stream"). Big-endian.
 * <pre>
 *  off size field
 *   0   4   magic 0x434C434B ("CLCK")
 *   4   2   version 1
 *   6   2   flags: bit 0 FULL (every page of RAM follows)
 *   8   8   RAM size in bytes
 *  16   4   page size (4096)
 *  20   4   reserved, 0
 *  24   8   device-state length D
 *  32   D   QEMU device state (a migration stream with x-ignore-shared: devices only)
 *  32+D 8   page count P
 *  ...  P x (8 page index, 4096 page bytes)
 *  end  4   CRC32C of every byte before it
 * </pre>
 */
public final class CheckpointFormat
{
    public static final int MAGIC = 0x434C434B;
    public static final int VERSION = 1;
    public static final int FLAG_FULL = 1;
    public static final int PAGE = 4096;
    public static final int HEADER = 32;

    private CheckpointFormat()
    {
    }

    public static long size(final long deviceBytes, final long pages)
    {
        return HEADER + deviceBytes + 8 + pages * (8 + PAGE) + 4;
    }

    /** A parsed and verified checkpoint in a buffer. */
    public record Parsed(boolean full, long ramBytes, int deviceOffset, int deviceLength, long pages, int pagesOffset)
    {
    }

    /** Checks magic, version, lengths and the CRC of a whole checkpoint; names the field that is wrong. */
    public static Parsed verify(final ByteBuffer b, final String what) throws IOException
    {
        final int n = b.limit();
        if (n < HEADER + 8 + 4)
        {
            throw new IOException(what + ": " + n + " bytes is shorter than any checkpoint");
        }
        if (b.getInt(0) != MAGIC)
        {
            throw new IOException(what + ": bad magic 0x" + Integer.toHexString(b.getInt(0)));
        }
        if (Short.toUnsignedInt(b.getShort(4)) != VERSION)
        {
            throw new IOException(what + ": unsupported version " + Short.toUnsignedInt(b.getShort(4)));
        }
        final boolean full = (b.getShort(6) & FLAG_FULL) != 0;
        final long ram = b.getLong(8);
        if (b.getInt(16) != PAGE || ram <= 0 || ram % PAGE != 0)
        {
            throw new IOException(what + ": bad RAM size " + ram + " / page size " + b.getInt(16));
        }
        final long dev = b.getLong(24);
        if (dev < 0 || dev > n - HEADER - 12)
        {
            throw new IOException(what + ": bad device-state length " + dev);
        }
        final long pages = b.getLong(HEADER + (int)dev);
        if (pages < 0 || pages > ram / PAGE || size(dev, pages) != n)
        {
            throw new IOException(what + ": page count " + pages + " does not match its " + n + " bytes");
        }
        final CRC32C crc = new CRC32C();
        crc.update(b.duplicate().position(0).limit(n - 4));
        if ((int)crc.getValue() != b.getInt(n - 4))
        {
            throw new IOException(what + ": CRC32C mismatch");
        }
        return new Parsed(full, ram, HEADER, (int)dev, pages, HEADER + (int)dev + 8);
    }
}
