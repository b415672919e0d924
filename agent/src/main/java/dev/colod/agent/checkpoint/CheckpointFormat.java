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
 *   4   2   version 4 (2 and 3 are still read: 3 has field 32 the size of its one disk and no disk table; 2's
 *           device state is a whole migration stream)
 *   6   2   flags: bit 0 FULL (every page of RAM follows); bit 1 BASE (a live first synchronisation: every
 *           page, read while the guest ran, no device state; not resumable until a later checkpoint commits)
 *   8   8   RAM size in bytes
 *  16   4   page size (4096)
 *  20   4   reserved, 0
 *  24   8   device-state length D
 *  32   8   disk count K (0: this checkpoint carries no disk), at most {@value #MAX_DISKS}
 *  40   8   reserved, 0
 *  48   8K  disk table: each disk's size in bytes, in the VM's order (disk i is the i-th of vms[].disks)
 *  ...  D   QEMU device state: version 3, the devices alone as {@code xen-save-devices-state} writes them (no
 *           configuration section: loaded by a QEMU started with migration.send-configuration=off); version 2, a
 *           migration stream with x-ignore-shared (configuration section, devices, ROM pages)
 *  ...  8   page count P
 *  ...  P x (8 page index, 4096 page bytes)
 *  ...  8   disk extent count E (0 when K is 0)
 *  ...  E x (8 address, 4 length L (1..1 MiB), L bytes): what the guest wrote to its disks since the last
 *           checkpoint; the address is the disk's index in bits 63..48 and the byte offset in that disk in bits
 *           47..0. BASE: every extent the primary's disk holds itself (raw: every allocated extent, the rest reads
 *           as zeros; qcow2: every extent of its top image, the rest is its backing file's or zeros)
 *  end  4   CRC32C of every byte before it
 * </pre>
 */
public final class CheckpointFormat
{
    public static final int MAGIC = 0x434C434B;
    public static final int VERSION = 4;
    /** The first version with a disk table (and so several disks). */
    public static final int DISK_TABLE_VERSION = 4;
    public static final int MAX_DISKS = 16;
    /** Bits of an extent's address that hold the byte offset; the disk's index is above them. */
    public static final int OFFSET_BITS = 48;
    /** The oldest version still read (an older primary's, during a rolling upgrade that began with the secondary). */
    public static final int OLDEST_READ = 2;
    public static final int FLAG_FULL = 1;
    public static final int FLAG_BASE = 2;
    public static final int PAGE = 4096;
    /** The fixed header (the disk table follows it). */
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

    /**
     * Size of a checkpoint of this version with {@code disks} disks and {@code diskStreamBytes} of disk extents (their
     * headers included).
     */
    public static long size(final long deviceBytes, final long pages, final int disks, final long diskStreamBytes)
    {
        return HEADER + 8L * disks + deviceBytes + COUNT + pages * PAGE_RECORD + COUNT + diskStreamBytes + CRC;
    }

    /** An extent's address: disk {@code disk}'s byte {@code offset}. */
    public static long address(final int disk, final long offset)
    {
        return (long)disk << OFFSET_BITS | offset;
    }

    /** The disk index of an extent address. */
    public static int diskOf(final long address)
    {
        return (int)(address >>> OFFSET_BITS);
    }

    /** The byte offset in its disk of an extent address. */
    public static long offsetOf(final long address)
    {
        return address & ((1L << OFFSET_BITS) - 1);
    }

    /**
     * The header: {@code diskSizes} has one size per disk the checkpoint carries (empty: none).
     */
    public record Header(int version, boolean full, boolean base, long ramBytes, long deviceLength, long[] diskSizes)
    {
        /** A header of this build's version. */
        public static Header of(final boolean full, final boolean base, final long ramBytes, final long deviceLength,
            final long... diskSizes)
        {
            return new Header(VERSION, full, base, ramBytes, deviceLength, diskSizes.clone());
        }

        /** How many disks the checkpoint carries. */
        public int disks()
        {
            return diskSizes.length;
        }

        /** Disk {@code i}'s size in bytes. */
        public long diskBytes(final int i)
        {
            return diskSizes[i];
        }

        /** Bytes of the header with its disk table. */
        public int length()
        {
            return HEADER + (version >= DISK_TABLE_VERSION ? 8 * diskSizes.length : 0);
        }

        /**
         * The bytes of the disk table that follow the fixed header whose {@link #HEADER} bytes lie at {@code src}'s
         * position (not advanced): 8 per disk from version {@value #DISK_TABLE_VERSION} on; 0 before. A count over
         * {@value #MAX_DISKS} is refused.
         */
        public static int tableBytes(final ByteBuffer src, final String what) throws IOException
        {
            final int version = Short.toUnsignedInt(src.getShort(src.position() + 4));
            if (version < DISK_TABLE_VERSION)
            {
                return 0;
            }
            final long disks = src.getLong(src.position() + 32);
            if (disks < 0 || disks > MAX_DISKS)
            {
                throw new IOException(what + ": bad disk count " + disks + " (at most " + MAX_DISKS + ")");
            }
            return 8 * (int)disks;
        }

        @Override
        public boolean equals(final Object o)
        {
            return o instanceof Header h && h.version == version && h.full == full && h.base == base &&
                h.ramBytes == ramBytes && h.deviceLength == deviceLength && java.util.Arrays.equals(h.diskSizes, diskSizes);
        }

        @Override
        public int hashCode()
        {
            return java.util.Objects.hash(version, full, base, ramBytes, deviceLength, java.util.Arrays.hashCode(diskSizes));
        }

        @Override
        public String toString()
        {
            return "Header[version=" + version + ", full=" + full + ", base=" + base + ", ramBytes=" + ramBytes +
                ", deviceLength=" + deviceLength + ", diskSizes=" + java.util.Arrays.toString(diskSizes) + "]";
        }

        /** Pages in this checkpoint's RAM. */
        public long ramPages()
        {
            return ramBytes / PAGE;
        }

        /** Writes the {@link #length()} bytes at {@code dst}'s position (this build writes its own version only). */
        public ByteBuffer encode(final ByteBuffer dst)
        {
            if (version != VERSION)
            {
                throw new IllegalStateException("this build writes version " + VERSION + " only, not " + version);
            }
            dst.putInt(MAGIC).putShort((short)version).putShort((short)((full ? FLAG_FULL : 0) | (base ? FLAG_BASE : 0)))
                .putLong(ramBytes).putInt(PAGE).putInt(0).putLong(deviceLength).putLong(diskSizes.length).putLong(0);
            for (final long d : diskSizes)
            {
                dst.putLong(d);
            }
            return dst;
        }

        /**
         * Reads and checks the header and its disk table ({@link #HEADER} + {@link #tableBytes} bytes) at {@code src}'s
         * position (which it advances) of a checkpoint of {@code size} bytes; names the field that is wrong, prefixed
         * by {@code what}.
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
            final long[] sizes;
            if (version < DISK_TABLE_VERSION)
            {
                if (disk < 0)
                {
                    throw new IOException(what + ": bad disk size " + disk);
                }
                sizes = disk == 0 ? new long[0] : new long[]{disk};
            }
            else
            {
                if (disk < 0 || disk > MAX_DISKS)
                {
                    throw new IOException(what + ": bad disk count " + disk + " (at most " + MAX_DISKS + ")");
                }
                sizes = new long[(int)disk];
                for (int i = 0; i < sizes.length; i++)
                {
                    sizes[i] = src.getLong();
                    if (sizes[i] <= 0 || sizes[i] >= 1L << OFFSET_BITS)
                    {
                        throw new IOException(what + ": bad size " + sizes[i] + " of disk " + i);
                    }
                }
            }
            return new Header(version, (flags & FLAG_FULL) != 0, (flags & FLAG_BASE) != 0, ram, device, sizes);
        }
    }

    /** Writes one extent's header (disk {@code disk}'s byte {@code offset} and the length) at {@code dst}'s position. */
    public static ByteBuffer putExtentHeader(final ByteBuffer dst, final int disk, final long offset, final int length)
    {
        return dst.putLong(address(disk, offset)).putInt(length);
    }

    /** An extent names a disk of the header, lies inside it and is 1..{@link #MAX_EXTENT} bytes long. */
    public static void checkExtent(final long address, final int length, final Header header, final String what)
        throws IOException
    {
        final int disk = diskOf(address);
        final long offset = offsetOf(address);
        if (disk >= header.disks())
        {
            throw new IOException(what + " names disk " + disk + " of a checkpoint with " + header.disks());
        }
        final long diskBytes = header.diskBytes(disk);
        if (length <= 0 || length > MAX_EXTENT || offset > diskBytes - length)
        {
            throw new IOException(what + " [" + offset + ", +" + length + ") is outside the " + diskBytes +
                "-byte disk " + disk + " or longer than " + MAX_EXTENT + " bytes");
        }
    }
}
