package dev.colod.agent.vm;

import dev.colod.agent.checkpoint.CheckpointFormat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * A guest's RAM file mapped read-only in chunks of 1 GiB, so that any size works (a single ByteBuffer stops at
 * 2 GiB). Pages never straddle chunks.
 */
final class GuestRam
{
    static final int PAGE = CheckpointFormat.PAGE;
    static final long CHUNK = 1L << 30;

    private final MappedByteBuffer[] chunks;
    private final long bytes;

    GuestRam(final Path file, final long bytes) throws IOException
    {
        this.bytes = bytes;
        this.chunks = new MappedByteBuffer[(int)((bytes + CHUNK - 1) / CHUNK)];
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ))
        {
            if (ch.size() < bytes)
            {
                throw new IOException("RAM file " + file + " has " + ch.size() + " bytes, the VM " + bytes);
            }
            for (int i = 0; i < chunks.length; i++)
            {
                chunks[i] = ch.map(FileChannel.MapMode.READ_ONLY, i * CHUNK, Math.min(CHUNK, bytes - i * CHUNK));
            }
        }
    }

    long bytes()
    {
        return bytes;
    }

    long pages()
    {
        return bytes / PAGE;
    }

    int chunkCount()
    {
        return chunks.length;
    }

    /** Chunk {@code i} (a fresh view, position 0). */
    ByteBuffer chunk(final int i)
    {
        return chunks[i].duplicate().clear();
    }

    /** Copies page {@code page} into {@code dst} at its position and advances it. */
    void copyPage(final long page, final ByteBuffer dst)
    {
        final long at = page * PAGE;
        dst.put(dst.position(), chunks[(int)(at / CHUNK)], (int)(at % CHUNK), PAGE);
        dst.position(dst.position() + PAGE);
    }

    /** Copies page {@code page} into {@code dst} at {@code off}. */
    void copyPage(final long page, final byte[] dst, final int off)
    {
        final long at = page * PAGE;
        chunks[(int)(at / CHUNK)].get((int)(at % CHUNK), dst, off, PAGE);
    }
}
