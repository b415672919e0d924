package dev.colod.core.testing;

import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSource;

import java.io.IOException;
import java.io.OutputStream;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.LockSupport;

/**
 * An in-memory VM stand-in: a byte array that a "vCPU" thread keeps mutating while the VM runs. Pausing
 * stops the mutation; a capture copies the array and remembers a copy per checkpoint id, so tests can check
 * what the secondary committed against what the primary had at that checkpoint.
 */
public final class MemoryVm implements VmStateSource, AutoCloseable
{
    private final byte[] memory;
    private final Map<Long, byte[]> captured = new ConcurrentHashMap<>();
    private final boolean remember;
    private final Thread vcpu;
    private volatile boolean running = true;
    private boolean paused;
    private long writes;

    public MemoryVm(final int sizeBytes, final boolean remember)
    {
        this.memory = new byte[sizeBytes];
        this.remember = remember;
        this.vcpu = new Thread(this::run, "memory-vm-vcpu");
        this.vcpu.setDaemon(true);
        this.vcpu.start();
    }

    private void run()
    {
        final SplittableRandom random = new SplittableRandom(42);
        while (running)
        {
            synchronized (this)
            {
                if (!paused && memory.length > 0)
                {
                    for (int i = 0; i < 16; i++)
                    {
                        memory[random.nextInt(memory.length)] = (byte)random.nextInt();
                    }
                    writes++;
                }
            }
            LockSupport.parkNanos(50_000);
        }
    }

    public synchronized long writes()
    {
        return writes;
    }

    public byte[] capturedAt(final long checkpointId)
    {
        return captured.get(checkpointId);
    }

    @Override
    public void beginSession(final long firstCheckpointId)
    {
    }

    @Override
    public synchronized void pause()
    {
        paused = true;
    }

    @Override
    public synchronized void resume()
    {
        paused = false;
    }

    public synchronized boolean paused()
    {
        return paused;
    }

    @Override
    public StateCapture capture(final long checkpointId) throws IOException
    {
        final byte[] copy;
        synchronized (this)
        {
            if (!paused)
            {
                throw new IOException("capture of a running VM");
            }
            copy = memory.clone();
        }
        if (remember)
        {
            captured.put(checkpointId, copy);
        }
        return new ArrayCapture(copy);
    }

    @Override
    public void close()
    {
        running = false;
    }

    /** Writes a byte array in chunks, reporting progress after each. */
    public static final class ArrayCapture implements StateCapture
    {
        private static final int CHUNK = 256 * 1024;
        private final byte[] bytes;

        public ArrayCapture(final byte[] bytes)
        {
            this.bytes = bytes;
        }

        @Override
        public long sizeBytes()
        {
            return bytes.length;
        }

        @Override
        public void writeTo(final OutputStream out, final Progress progress) throws IOException
        {
            int off = 0;
            while (off < bytes.length)
            {
                final int n = Math.min(CHUNK, bytes.length - off);
                out.write(bytes, off, n);
                off += n;
                progress.written(off);
            }
        }

        @Override
        public void close()
        {
        }
    }
}
