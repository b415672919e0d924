package dev.colod.agent;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * One colod per runtime directory: {@code <runtime-dir>/colod.lock}, locked (fcntl) for the daemon's life and
 * holding its pid. A second colod refuses before it touches anything, naming the first's pid; the kernel drops
 * the lock when its holder dies, so a crashed colod never blocks the next.
 */
public final class InstanceLock implements AutoCloseable
{
    private final FileChannel channel;
    private final FileLock lock;

    private InstanceLock(final FileChannel channel, final FileLock lock)
    {
        this.channel = channel;
        this.lock = lock;
    }

    /** Takes the lock of {@code runtimeDir} for this process, or refuses naming who holds it. */
    public static InstanceLock acquire(final Path runtimeDir) throws IOException
    {
        Files.createDirectories(runtimeDir);
        final Path file = runtimeDir.resolve("colod.lock");
        final FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
            StandardOpenOption.WRITE);
        FileLock l;
        try
        {
            l = ch.tryLock();
        }
        catch (final OverlappingFileLockException ex)
        {
            l = null; // this very process holds it already
        }
        if (l == null)
        {
            final String holder = holder(ch);
            ch.close();
            throw new IOException("another colod (" + holder + ") already runs with runtime-dir " + runtimeDir +
                " (it holds " + file + "); stop it first, or give this one its own runtime-dir");
        }
        ch.truncate(0);
        ch.write(ByteBuffer.wrap((ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII)), 0);
        ch.force(false);
        return new InstanceLock(ch, l);
    }

    private static String holder(final FileChannel ch)
    {
        try
        {
            final ByteBuffer b = ByteBuffer.allocate(32);
            ch.read(b, 0);
            final String pid = new String(b.array(), 0, b.position(), StandardCharsets.US_ASCII).trim();
            return pid.isEmpty() ? "pid unknown" : "pid " + pid;
        }
        catch (final IOException ex)
        {
            return "pid unknown";
        }
    }

    /** Releases the lock (the file stays: its pid is stale then, and a new holder rewrites it). */
    @Override
    public void close() throws IOException
    {
        lock.release();
        channel.close();
    }
}
