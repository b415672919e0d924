package dev.colod.agent.checkpoint;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The state stream of one VM checkpoint, as the primary sends it in {@code vmstate-size}'s bytes and the
 * secondary stages it (docs/PROTOCOL.md, "VM state stream"). Big-endian. The one place that knows the layout:
 * {@link CheckpointWriter} writes it, {@link CheckpointReader} reads it (whole or as it arrives); a format
 * version N+1 means editing this package only.
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
    /** The fixed header. */
    public static final int HEADER = 48;
    /** A count before the pages and before the disk extents. */
    public static final int COUNT = 8;
    /** One page record: its index and its bytes. */
    public static final int PAGE_RECORD = 8 + PAGE;
    /** Offset and length before an extent's bytes. */
    public static final int EXTENT_HEADER = 12;
    public static final int MAX_EXTENT = 1 << 20;
    public static final int CRC = 4;
    /** The smallest checkpoint: a header, two counts of zero and the CRC. */
    public static final int MIN_SIZE = HEADER + COUNT + COUNT + CRC;

    private CheckpointFormat()
    {
    }

    /** Size of a checkpoint with {@code diskStreamBytes} of disk extents (their headers included). */
    public static long size(final long deviceBytes, final long pages, final long diskStreamBytes)
    {
        return HEADER + deviceBytes + COUNT + pages * PAGE_RECORD + COUNT + diskStreamBytes + CRC;
    }

    /**
     * The fixed header: {@code diskBytes} 0 means the checkpoint carries no disk.
     */
    public record Header(int version, boolean full, boolean base, long ramBytes, long deviceLength, long diskBytes)
    {
        /** A header of this build's version. */
        public static Header of(final boolean full, final boolean base, final long ramBytes, final long deviceLength,
            final long diskBytes)
        {
            return new Header(VERSION, full, base, ramBytes, deviceLength, diskBytes);
        }

        /** Pages in this checkpoint's RAM. */
        public long ramPages()
        {
            return ramBytes / PAGE;
        }

        /** Writes the {@link #HEADER} bytes at {@code dst}'s position. */
        public ByteBuffer encode(final ByteBuffer dst)
        {
            return dst.putInt(MAGIC).putShort((short)version).putShort((short)((full ? FLAG_FULL : 0) | (base ? FLAG_BASE : 0)))
                .putLong(ramBytes).putInt(PAGE).putInt(0).putLong(deviceLength).putLong(diskBytes).putLong(0);
        }

        /**
         * Reads and checks the {@link #HEADER} bytes at {@code src}'s position (which it advances) of a checkpoint of
         * {@code size} bytes; names the field that is wrong, prefixed by {@code what}.
         */
        public static Header decode(final ByteBuffer src, final long size, final String what) throws IOException
        {
            if (size < MIN_SIZE)
            {
                throw new IOException(what + ": " + size + " bytes is shorter than any checkpoint");
            }
            final int magic = src.getInt();
            if (magic != MAGIC)
            {
                throw new IOException(what + ": bad magic 0x" + Integer.toHexString(magic));
            }
            final int version = Short.toUnsignedInt(src.getShort());
            if (version < OLDEST_READ || version > VERSION)
            {
                throw new IOException(what + ": unsupported version " + version + " (this build reads " + OLDEST_READ +
                    " to " + VERSION + "; upgrade the secondary before the primary)");
            }
            final int flags = Short.toUnsignedInt(src.getShort());
            final long ram = src.getLong();
            final int page = src.getInt();
            src.getInt();
            if (page != PAGE || ram <= 0 || ram % PAGE != 0)
            {
                throw new IOException(what + ": bad RAM size " + ram + " / page size " + page);
            }
            final long device = src.getLong();
            if (device < 0 || device > size - MIN_SIZE)
            {
                throw new IOException(what + ": bad device-state length " + device + " in " + size + " bytes");
            }
            final long disk = src.getLong();
            src.getLong();
            if (disk < 0)
            {
                throw new IOException(what + ": bad disk size " + disk);
            }
            return new Header(version, (flags & FLAG_FULL) != 0, (flags & FLAG_BASE) != 0, ram, device, disk);
        }
    }

    /** Writes one extent's header (its disk offset and length) at {@code dst}'s position. */
    public static ByteBuffer putExtentHeader(final ByteBuffer dst, final long offset, final int length)
    {
        return dst.putLong(offset).putInt(length);
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
}
