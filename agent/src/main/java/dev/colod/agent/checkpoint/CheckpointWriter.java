package dev.colod.agent.checkpoint;

import dev.colod.core.spi.StateCapture;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.util.zip.CRC32C;

import static dev.colod.agent.checkpoint.CheckpointFormat.COUNT;
import static dev.colod.agent.checkpoint.CheckpointFormat.PAGE;
import static dev.colod.agent.checkpoint.CheckpointFormat.PAGE_RECORD;

/**
 * Writes one checkpoint of a size announced beforehand, part by part in the format's order: {@link #header},
 * the pages ({@link #pageRecords} or {@link #everyPage}), {@link #disk} and its {@link #extentRecords}, then
 * {@link #finish} appends the CRC32C, computed as the bytes go out. Bytes go out through one reusable chunk, so
 * a stream of any size needs no buffer of its size. Writing parts out of order, or a count of pages or bytes that
 * differs from what the header announced, is a bug of the caller: {@link IllegalStateException}.
 */
public final class CheckpointWriter
{
    /** Reads page {@code page} into {@code dst} at {@code off} ({@link CheckpointFormat#PAGE} bytes). */
    public interface PageSource
    {
        void copyPage(long page, byte[] dst, int off);
    }

    /** Records per chunk: 64 pages (264 KiB). */
    private static final int CHUNK = 64 * PAGE_RECORD;

    private final OutputStream out;
    private final long size;
    private final StateCapture.Progress progress;
    private final byte[] chunk = new byte[CHUNK];
    private final CRC32C crc = new CRC32C();
    private long done;
    private long pagesLeft = -1;
    private boolean diskStarted;

    /** A writer of a checkpoint of exactly {@code size} bytes to {@code out}; {@code progress} hears every chunk. */
    public CheckpointWriter(final OutputStream out, final long size, final StateCapture.Progress progress)
    {
        this.out = out;
        this.size = size;
        this.progress = progress;
    }

    /** The header, the device state ({@code header.deviceLength()} bytes) and the page count. */
    public CheckpointWriter header(final CheckpointFormat.Header header, final ByteBuffer device, final long pages)
        throws IOException
    {
        check(done == 0 && device.remaining() == header.deviceLength() && pages >= 0 && pages <= header.ramPages(),
            "header");
        final ByteBuffer b = ByteBuffer.allocate(header.length() + device.remaining() + COUNT);
        header.encode(b).put(device.duplicate()).putLong(pages).flip();
        send(b);
        pagesLeft = pages;
        return this;
    }

    /** Page records (index, bytes) as they already lie in {@code records}. */
    public CheckpointWriter pageRecords(final ByteBuffer records) throws IOException
    {
        final long n = records.remaining() / PAGE_RECORD;
        check(pagesLeft >= n && records.remaining() % PAGE_RECORD == 0, "page records");
        send(records.duplicate());
        pagesLeft -= n;
        return this;
    }

    /** Every page left to write, index 0 upwards, read by {@code source} straight into the outgoing chunk. */
    public CheckpointWriter everyPage(final PageSource source) throws IOException
    {
        check(pagesLeft >= 0, "pages");
        final ByteBuffer records = ByteBuffer.wrap(chunk);
        for (long p = 0; p < pagesLeft; p++)
        {
            if (records.remaining() < PAGE_RECORD)
            {
                flush(records.position());
                records.clear();
            }
            records.putLong(p);
            source.copyPage(p, chunk, records.position());
            records.position(records.position() + PAGE);
        }
        flush(records.position());
        pagesLeft = 0;
        return this;
    }

    /** The disk section's extent count (0 for a checkpoint without a disk). */
    public CheckpointWriter disk(final long extents) throws IOException
    {
        check(pagesLeft == 0 && !diskStarted && extents >= 0, "disk");
        diskStarted = true;
        send(ByteBuffer.allocate(COUNT).putLong(extents).flip());
        return this;
    }

    /** Extent records (offset, length, bytes) as they already lie in {@code records}. */
    public CheckpointWriter extentRecords(final ByteBuffer records) throws IOException
    {
        check(diskStarted, "extent records");
        send(records.duplicate());
        return this;
    }

    /** Appends the CRC; the stream must then be exactly the announced size. Returns that size. */
    public long finish() throws IOException
    {
        check(diskStarted && done + CheckpointFormat.CRC == size, "finish (" + done + " + CRC of " + size + " bytes)");
        final int c = (int)crc.getValue();
        out.write(new byte[]{(byte)(c >>> 24), (byte)(c >>> 16), (byte)(c >>> 8), (byte)c});
        done += CheckpointFormat.CRC;
        progress.written(done);
        return done;
    }

    private void send(final ByteBuffer b) throws IOException
    {
        while (b.hasRemaining())
        {
            final int n = Math.min(chunk.length, b.remaining());
            b.get(chunk, 0, n);
            flush(n);
        }
    }

    private void flush(final int n) throws IOException
    {
        if (n == 0)
        {
            return;
        }
        check(done + n <= size - CheckpointFormat.CRC, "more bytes than announced");
        crc.update(chunk, 0, n);
        out.write(chunk, 0, n);
        done += n;
        progress.written(done);
    }

    private static void check(final boolean ok, final String step)
    {
        if (!ok)
        {
            throw new IllegalStateException("checkpoint written out of order or with wrong counts at " + step);
        }
    }
}
