package dev.colod.buffer;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * How many frames and bytes one NIC holds right now, kept in a small shared memory-mapped file in the runtime
 * directory so that it outlives the agent: after a crash (kill -9, OOM) the frames the agent held die with it,
 * never released, and the next agent reads from here how many that were, logs and counts them.
 * <p>
 * Layout (native byte order, 24 bytes): magic {@code "COLOHELD"}, held frames, held bytes. Written only by the
 * NIC's event-loop thread with two plain stores per change: a store into a shared mapping is in the page cache
 * as soon as it is made, so a killed process loses none of it; a reader after the writer's death sees the last
 * pair written (a torn pair is possible only if the process died between the two stores of one update, and then
 * the bytes are at most one frame off).
 */
public final class HeldRecord implements AutoCloseable
{
    private static final long MAGIC = 0x434f4c4f48454c44L; // "COLOHELD"
    private static final int SIZE = 24;

    private final Path file;
    private final MappedByteBuffer map;

    /** What an earlier agent held when it ended. */
    public record Left(long frames, long bytes)
    {
    }

    private HeldRecord(final Path file, final MappedByteBuffer map)
    {
        this.file = file;
        this.map = map;
    }

    private static final String PREFIX = "held-";

    /** The record of the NIC {@code vmTap} in {@code dir}. */
    public static Path fileOf(final Path dir, final String vmTap)
    {
        return dir.resolve(PREFIX + vmTap);
    }

    /** Whether {@code file} is some NIC's record (by its name). */
    public static boolean isRecord(final Path file)
    {
        return file.getFileName().toString().startsWith(PREFIX);
    }

    /**
     * What the agent that wrote {@code file} held when it ended, if it left a record (a clean stop leaves none);
     * the record is deleted.
     */
    public static Optional<Left> takeLeft(final Path file) throws IOException
    {
        if (!Files.exists(file))
        {
            return Optional.empty();
        }
        final byte[] b = Files.readAllBytes(file);
        Files.delete(file);
        final ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.nativeOrder());
        if (b.length != SIZE || bb.getLong(0) != MAGIC)
        {
            throw new IOException(file + ": not a held-frames record (" + b.length + " bytes); deleted");
        }
        return Optional.of(new Left(bb.getLong(8), bb.getLong(16)));
    }

    /** A fresh record at {@code file} (created or overwritten), saying nothing held. */
    public static HeldRecord create(final Path file) throws IOException
    {
        Files.createDirectories(file.getParent());
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw"))
        {
            raf.setLength(SIZE);
            final MappedByteBuffer map = raf.getChannel().map(FileChannel.MapMode.READ_WRITE, 0, SIZE);
            map.order(ByteOrder.nativeOrder());
            map.putLong(8, 0).putLong(16, 0).putLong(0, MAGIC);
            return new HeldRecord(file, map);
        }
    }

    /** Now held: {@code frames} frames of {@code bytes} bytes. Event-loop thread only. */
    public void held(final long frames, final long bytes)
    {
        map.putLong(8, frames);
        map.putLong(16, bytes);
    }

    /** A clean end: the record goes (nothing is left to report; what was still held was counted by its owner). */
    @Override
    public void close() throws IOException
    {
        Files.deleteIfExists(file);
    }
}
