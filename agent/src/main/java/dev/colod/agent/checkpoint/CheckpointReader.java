package dev.colod.agent.checkpoint;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.zip.CRC32C;

import static dev.colod.agent.checkpoint.CheckpointFormat.COUNT;
import static dev.colod.agent.checkpoint.CheckpointFormat.CRC;
import static dev.colod.agent.checkpoint.CheckpointFormat.EXTENT_HEADER;
import static dev.colod.agent.checkpoint.CheckpointFormat.HEADER;
import static dev.colod.agent.checkpoint.CheckpointFormat.PAGE_RECORD;

/**
 * Reads one checkpoint of a known size incrementally: bytes are {@link #feed fed} in pieces of any size as they
 * arrive (from the network or a file), each part is checked as soon as it is complete and handed to a
 * {@link Visitor}, and {@link #finish} checks that everything announced arrived and the CRC32C matches (only
 * there: a checkpoint is judged whole). Every
 * error names the part that is wrong, prefixed by the {@code what} given (e.g. "vm web1 checkpoint 7"). Page
 * indices and extents are checked against the header before a visitor sees them, so visitors need not.
 * A visitor that changes state must not trust the checkpoint before {@link #finish}: either it writes where a
 * half-written checkpoint does no harm (a base image, marked not resumable first) or the bytes are verified
 * first ({@link #verify}) and read again.
 */
public final class CheckpointReader
{
    /** What a reader hands out, in stream order. Every method may throw to stop reading. */
    public interface Visitor
    {
        Visitor NONE = new Visitor()
        {
        };

        /** The header and the page count, before any device state. */
        default void header(CheckpointFormat.Header header, long pages) throws IOException
        {
        }

        /** A piece of the device state, in order. */
        default void device(ByteBuffer piece) throws IOException
        {
        }

        /** Page {@code index}'s bytes at {@code src}'s absolute {@code offset} ({@link CheckpointFormat#PAGE} bytes). */
        default void page(long index, ByteBuffer src, int offset) throws IOException
        {
        }

        /** The disk section's extent count. */
        default void extents(long count) throws IOException
        {
        }

        /** A piece of an extent's bytes, to be written at byte {@code offset} of disk {@code disk}. */
        default void extentData(int disk, long offset, ByteBuffer piece) throws IOException
        {
        }
    }

    private enum Part
    {
        HEADER, DISK_TABLE, DEVICE, PAGE_COUNT, PAGE, DISK_COUNT, EXTENT_HEADER, EXTENT_DATA, CRC, DONE
    }

    private final long size;
    private final String what;
    private final Visitor visitor;
    private final CRC32C crc = new CRC32C();
    /** A fixed-size part being assembled across pieces. */
    private final ByteBuffer item = ByteBuffer.allocate(PAGE_RECORD);
    private Part part;
    private long at;
    private CheckpointFormat.Header header;
    private long pages;
    private long pagesDone;
    private long extents;
    private long extentsDone;
    /** Bytes left of the device state or of the current extent. */
    private long left;
    private long extentAt;
    private boolean crcMatches;

    public CheckpointReader(final long size, final String what, final Visitor visitor)
    {
        this.size = size;
        this.what = what;
        this.visitor = visitor;
        next(Part.HEADER, HEADER);
    }

    /** Reads a whole checkpoint file: every check, the CRC included. Returns its header. */
    public static CheckpointFormat.Header verify(final FileChannel ch, final String what) throws IOException
    {
        return read(ch, what, Visitor.NONE);
    }

    /** Reads a whole checkpoint file in 1 MiB pieces into {@code visitor}; returns its header. */
    public static CheckpointFormat.Header read(final FileChannel ch, final String what, final Visitor visitor)
        throws IOException
    {
        final long n = ch.size();
        final CheckpointReader r = new CheckpointReader(n, what, visitor);
        final ByteBuffer buf = ByteBuffer.allocateDirect(1 << 20);
        for (long p = 0; p < n; )
        {
            buf.clear().limit((int)Math.min(buf.capacity(), n - p));
            final int got = ch.read(buf, p);
            if (got <= 0)
            {
                throw new IOException(what + ": short read at " + p + " of " + n + " bytes");
            }
            r.feed(buf.flip());
            p += got;
        }
        r.finish();
        return r.header;
    }

    /** The header, once read (null before). */
    public CheckpointFormat.Header header()
    {
        return header;
    }

    /** Bytes read so far. */
    public long position()
    {
        return at;
    }

    /** Feeds the bytes between {@code b}'s position and limit (consumed). */
    public void feed(final ByteBuffer b) throws IOException
    {
        while (b.hasRemaining())
        {
            if (part == Part.DONE)
            {
                throw new IOException(what + ": more bytes than the " + size + " announced");
            }
            if (part == Part.DEVICE || part == Part.EXTENT_DATA)
            {
                final int n = (int)Math.min(b.remaining(), left);
                final ByteBuffer piece = b.slice(b.position(), n);
                crc.update(piece.duplicate());
                if (part == Part.DEVICE)
                {
                    visitor.device(piece);
                }
                else
                {
                    visitor.extentData(CheckpointFormat.diskOf(extentAt), CheckpointFormat.offsetOf(extentAt), piece);
                    extentAt += n;
                }
                b.position(b.position() + n);
                at += n;
                left -= n;
                if (left == 0)
                {
                    partComplete(null, 0);
                }
                continue;
            }
            if (part == Part.PAGE && item.position() == 0 && b.remaining() >= PAGE_RECORD)
            {
                // a whole record in the piece: handed out where it lies, no copy
                final int p = b.position();
                crc.update(b.slice(p, PAGE_RECORD));
                b.position(p + PAGE_RECORD);
                at += PAGE_RECORD;
                partComplete(b, p);
                continue;
            }
            final int n = Math.min(b.remaining(), item.remaining());
            final ByteBuffer piece = b.slice(b.position(), n);
            if (part != Part.CRC)
            {
                crc.update(piece.duplicate());
            }
            item.put(piece);
            b.position(b.position() + n);
            at += n;
            if (!item.hasRemaining())
            {
                partComplete(item, 0);
            }
        }
    }

    /** Everything announced arrived and the CRC matches. */
    public void finish() throws IOException
    {
        if (part != Part.DONE)
        {
            throw new IOException(what + ": incomplete: " + at + " of " + size + " bytes (in its " + describe() + ")");
        }
        if (!crcMatches)
        {
            throw new IOException(what + ": CRC mismatch (the CRC32C of its bytes is not the one it carries)");
        }
    }

    private String describe()
    {
        return switch (part)
        {
            case HEADER, DISK_TABLE -> "header";
            case DEVICE -> "device state";
            case PAGE_COUNT -> "page count";
            case PAGE -> "pages, " + pagesDone + " of " + pages;
            case DISK_COUNT -> "disk extent count";
            case EXTENT_HEADER, EXTENT_DATA -> "disk extents, " + extentsDone + " of " + extents;
            case CRC -> "CRC";
            case DONE -> "end";
        };
    }

    /** {@code src} holds the completed fixed-size part at absolute {@code offset} (null for a streamed part). */
    private void partComplete(final ByteBuffer src, final int offset) throws IOException
    {
        switch (part)
        {
            case HEADER, DISK_TABLE ->
            {
                final int table = part == Part.HEADER ? CheckpointFormat.Header.tableBytes(src.duplicate().flip(), what) : 0;
                if (table > 0)
                {
                    item.limit(HEADER + table); // the fixed header stays in the item: decoded with its table
                    part = Part.DISK_TABLE;
                    return;
                }
                header = CheckpointFormat.Header.decode(src.flip(), size, what);
                if (header.deviceLength() > 0)
                {
                    left = header.deviceLength();
                    next(Part.DEVICE, 0);
                }
                else
                {
                    next(Part.PAGE_COUNT, COUNT);
                }
            }
            case DEVICE -> next(Part.PAGE_COUNT, COUNT);
            case PAGE_COUNT ->
            {
                pages = src.getLong(0);
                if (pages < 0 || pages > header.ramPages() || at + pages * PAGE_RECORD + COUNT + CRC > size)
                {
                    throw new IOException(what + ": page count " + pages + " does not fit its " + size + " bytes");
                }
                visitor.header(header, pages);
                nextPageOrDisk();
            }
            case PAGE ->
            {
                final long index = src.getLong(offset);
                if (index < 0 || index >= header.ramPages())
                {
                    throw new IOException(what + ": names page " + index + " outside " + header.ramBytes() +
                        " bytes of RAM");
                }
                visitor.page(index, src, offset + 8);
                pagesDone++;
                nextPageOrDisk();
            }
            case DISK_COUNT ->
            {
                extents = src.getLong(0);
                if (extents < 0 || extents > 0 && header.disks() == 0 || extents > (size - CRC - at) / (EXTENT_HEADER + 1))
                {
                    throw new IOException(what + ": bad disk count " + header.disks() + " / extent count " + extents);
                }
                visitor.extents(extents);
                nextExtentOrCrc();
            }
            case EXTENT_HEADER ->
            {
                extentAt = src.getLong(0);
                final int length = src.getInt(8);
                final String which = what + ": disk extent " + extentsDone + " of " + extents;
                CheckpointFormat.checkExtent(extentAt, length, header, which);
                if (at + length > size - CRC)
                {
                    throw new IOException(which + " ends beyond its " + size + " bytes");
                }
                left = length;
                next(Part.EXTENT_DATA, 0);
            }
            case EXTENT_DATA ->
            {
                extentsDone++;
                nextExtentOrCrc();
            }
            case CRC ->
            {
                crcMatches = src.getInt(0) == (int)crc.getValue();
                next(Part.DONE, 0);
            }
            case DONE -> throw new IllegalStateException();
        }
    }

    private void nextPageOrDisk()
    {
        if (pagesDone < pages)
        {
            next(Part.PAGE, PAGE_RECORD);
        }
        else
        {
            next(Part.DISK_COUNT, COUNT);
        }
    }

    private void nextExtentOrCrc() throws IOException
    {
        if (extentsDone < extents)
        {
            if (at + EXTENT_HEADER > size - CRC)
            {
                throw new IOException(what + ": disk extent " + extentsDone + " of " + extents + " starts beyond its " +
                    size + " bytes");
            }
            next(Part.EXTENT_HEADER, EXTENT_HEADER);
        }
        else if (at != size - CRC)
        {
            throw new IOException(what + ": its disk extents end at " + at + ", not at " + (size - CRC));
        }
        else
        {
            next(Part.CRC, CRC);
        }
    }

    private void next(final Part p, final int itemBytes)
    {
        part = p;
        item.clear().limit(itemBytes);
    }
}
