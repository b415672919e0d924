package dev.colod.agent.checkpoint;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;

/** Whole checkpoints for tests, written by the one writer. */
public final class TestCheckpoints
{
    private TestCheckpoints()
    {
    }

    /**
     * A checkpoint of {@code ramBytes} of RAM carrying {@code device}, the pages {@code pages} (bytes in
     * {@code pageBytes}, each {@link CheckpointFormat#PAGE} long) and, for a disk of {@code diskBytes} (0: none),
     * the extents at {@code offsets}.
     */
    public static byte[] encode(final boolean full, final boolean base, final long ramBytes, final byte[] device,
        final long[] pages, final byte[][] pageBytes, final long diskBytes, final long[] offsets, final byte[][] extents)
    {
        return encode(full, base, ramBytes, device, pages, pageBytes, diskBytes == 0 ? new long[0] : new long[]{diskBytes},
            new int[offsets.length], offsets, extents);
    }

    /** As above, with the disks of sizes {@code diskSizes}; extent i is at {@code offsets[i]} of disk {@code disks[i]}. */
    public static byte[] encode(final boolean full, final boolean base, final long ramBytes, final byte[] device,
        final long[] pages, final byte[][] pageBytes, final long[] diskSizes, final int[] disks, final long[] offsets,
        final byte[][] extents)
    {
        final ByteBuffer records = ByteBuffer.allocate(pages.length * CheckpointFormat.PAGE_RECORD);
        for (int i = 0; i < pages.length; i++)
        {
            records.putLong(pages[i]).put(pageBytes[i]);
        }
        long disk = 0;
        for (final byte[] e : extents)
        {
            disk += CheckpointFormat.EXTENT_HEADER + e.length;
        }
        final ByteBuffer ext = ByteBuffer.allocate((int)disk);
        for (int i = 0; i < extents.length; i++)
        {
            CheckpointFormat.putExtentHeader(ext, disks[i], offsets[i], extents[i].length).put(extents[i]);
        }
        final long size = CheckpointFormat.size(device.length, pages.length, diskSizes.length, disk);
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        try
        {
            final long written = new CheckpointWriter(out, size, done -> { })
                .header(CheckpointFormat.Header.of(full, base, ramBytes, device.length, diskSizes), ByteBuffer.wrap(device),
                    pages.length)
                .pageRecords(records.flip()).disk(extents.length).extentRecords(ext.flip()).finish();
            if (written != size || out.size() != size)
            {
                throw new AssertionError("wrote " + out.size() + " bytes, announced " + size);
            }
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException(ex);
        }
        return out.toByteArray();
    }
}
