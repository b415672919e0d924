package dev.colod.agent.vm;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * The primary's VM as a checkpoint source: pauses QEMU over QMP, takes its device state with a
 * {@code migrate} (x-ignore-shared: devices only) into a unix socket this agent listens on, and finds dirty RAM
 * pages by comparing the shared RAM file with a shadow copy of what the secondary has. The first checkpoint of a
 * session carries every page.
 * <p>
 * Single-threaded: the checkpoint engine's session thread. Timing of each step is kept for metrics.
 */
public final class QemuStateSource implements VmStateSource, AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(QemuStateSource.class);
    private static final int PAGE = CheckpointFormat.PAGE;
    private static final int DEVICE_HEADROOM = 16 << 20;
    /** Compare at most this much per mismatch call, so the JVM can reach a safepoint between calls. */
    private static final int SCAN_CHUNK = 1 << 20;

    private final QemuProcess qemu;
    private final long ramBytes;
    private final MappedByteBuffer ram;
    private final ByteBuffer shadow;
    private final Path migSocket;
    private ByteBuffer capture;
    private boolean full = true;

    /** Per-step time of every checkpoint, microseconds: what the pause is made of. */
    public final org.HdrHistogram.Histogram stopMicros = new org.HdrHistogram.ConcurrentHistogram(60_000_000L, 2);
    public final org.HdrHistogram.Histogram deviceMicros = new org.HdrHistogram.ConcurrentHistogram(60_000_000L, 2);
    public final org.HdrHistogram.Histogram scanMicros = new org.HdrHistogram.ConcurrentHistogram(60_000_000L, 2);
    public final org.HdrHistogram.Histogram resumeMicros = new org.HdrHistogram.ConcurrentHistogram(60_000_000L, 2);
    public final org.HdrHistogram.Histogram dirtyPages = new org.HdrHistogram.ConcurrentHistogram(1L << 32, 2);

    /** Per-checkpoint timing, microseconds, of the last capture. */
    public volatile long lastStopMicros;
    public volatile long lastDeviceMicros;
    public volatile long lastScanMicros;
    public volatile long lastResumeMicros;
    public volatile long lastDirtyPages;
    public volatile long lastDeviceBytes;

    public QemuStateSource(final QemuProcess qemu) throws IOException
    {
        this.qemu = qemu;
        this.ramBytes = qemu.spec().memoryBytes();
        if (ramBytes > Integer.MAX_VALUE - PAGE)
        {
            throw new IOException("vm " + qemu.spec().name() + ": RAM above 2 GiB is not supported by this version");
        }
        try (FileChannel ch = FileChannel.open(qemu.ramFile(), StandardOpenOption.READ))
        {
            this.ram = ch.map(FileChannel.MapMode.READ_ONLY, 0, ramBytes);
        }
        this.shadow = ByteBuffer.allocateDirect((int)ramBytes);
        this.migSocket = qemu.runDir().resolve("checkpoint.sock");
        // sized once for a full checkpoint (every page) plus generous device state: growing it later would
        // allocate and copy hundreds of MiB in the middle of a pause
        this.capture = ByteBuffer.allocateDirect((int)Math.min(Integer.MAX_VALUE - 8,
            CheckpointFormat.size(DEVICE_HEADROOM, ramBytes / PAGE)));
    }

    @Override
    public void beginSession(final long firstCheckpointId)
    {
        full = true;
    }

    @Override
    public void pause() throws IOException
    {
        final long t0 = System.nanoTime();
        qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        lastStopMicros = (System.nanoTime() - t0) / 1000;
        stopMicros.recordValue(lastStopMicros);
    }

    @Override
    public void resume() throws IOException
    {
        final long t0 = System.nanoTime();
        qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        lastResumeMicros = (System.nanoTime() - t0) / 1000;
        resumeMicros.recordValue(lastResumeMicros);
    }

    @Override
    public StateCapture capture(final long checkpointId) throws IOException
    {
        final long t0 = System.nanoTime();
        final ByteBuffer device = deviceState();
        final long t1 = System.nanoTime();
        lastDeviceMicros = (t1 - t0) / 1000;
        lastDeviceBytes = device.remaining();

        // header and device state, then pages as the scan finds them
        ensure(CheckpointFormat.HEADER + device.remaining() + 8 + 4 + 64 * (8 + PAGE));
        final ByteBuffer c = capture.clear();
        c.putInt(CheckpointFormat.MAGIC).putShort((short)CheckpointFormat.VERSION)
            .putShort((short)(full ? CheckpointFormat.FLAG_FULL : 0)).putLong(ramBytes).putInt(PAGE).putInt(0)
            .putLong(device.remaining()).put(device);
        final int countAt = c.position();
        c.putLong(0);
        long pages = 0;
        if (full)
        {
            ensureMore((ramBytes / PAGE) * (8 + PAGE) + 4);
            for (long p = 0; p < ramBytes / PAGE; p++)
            {
                putPage(p);
            }
            pages = ramBytes / PAGE;
            shadow.clear().put(ram.duplicate().clear()).clear();
        }
        else
        {
            int pos = 0;
            final int size = (int)ramBytes;
            while (pos < size)
            {
                final int len = Math.min(SCAN_CHUNK, size - pos);
                final int m = ram.slice(pos, len).mismatch(shadow.slice(pos, len));
                if (m < 0)
                {
                    pos += len;
                    continue;
                }
                final int page = (pos + m) / PAGE;
                ensureMore(8 + PAGE + 4);
                putPage(page);
                shadow.put(page * PAGE, ram, page * PAGE, PAGE);
                pages++;
                pos = (page + 1) * PAGE;
            }
        }
        capture.putLong(countAt, pages);
        final CRC32C crc = new CRC32C();
        crc.update(capture.duplicate().flip());
        capture.putInt((int)crc.getValue());
        capture.flip();
        lastScanMicros = (System.nanoTime() - t1) / 1000;
        lastDirtyPages = pages;
        deviceMicros.recordValue(lastDeviceMicros);
        scanMicros.recordValue(lastScanMicros);
        dirtyPages.recordValue(pages);
        full = false;
        LOG.debug("vm={} checkpoint {}: device {} B in {} us, {} pages in {} us", qemu.spec().name(), checkpointId,
            lastDeviceBytes, lastDeviceMicros, pages, lastScanMicros);
        final ByteBuffer view = capture.asReadOnlyBuffer();
        return new StateCapture()
        {
            @Override
            public long sizeBytes()
            {
                return view.remaining();
            }

            @Override
            public void writeTo(final OutputStream out, final Progress progress) throws IOException
            {
                final byte[] chunk = new byte[256 * 1024];
                final ByteBuffer b = view.duplicate();
                long done = 0;
                while (b.hasRemaining())
                {
                    final int n = Math.min(chunk.length, b.remaining());
                    b.get(chunk, 0, n);
                    out.write(chunk, 0, n);
                    done += n;
                    progress.written(done);
                }
            }

            @Override
            public void close()
            {
            }
        };
    }

    private void putPage(final long page)
    {
        capture.putLong(page);
        capture.put(capture.position(), ram, (int)(page * PAGE), PAGE);
        capture.position(capture.position() + PAGE);
    }

    private void ensure(final long bytes)
    {
        if (capture.capacity() < bytes)
        {
            capture = ByteBuffer.allocateDirect((int)Math.min(Integer.MAX_VALUE - 8, Math.max(bytes, capture.capacity() * 2L)));
        }
    }

    private void ensureMore(final long bytes)
    {
        if (capture.remaining() < bytes)
        {
            final ByteBuffer bigger = ByteBuffer.allocateDirect(
                (int)Math.min(Integer.MAX_VALUE - 8, Math.max(capture.position() + bytes, capture.capacity() * 2L)));
            capture.flip();
            bigger.put(capture);
            capture = bigger;
        }
    }

    /** Runs {@code migrate} into our unix socket and returns what QEMU wrote: the device state. */
    private ByteBuffer deviceState() throws IOException
    {
        Files.deleteIfExists(migSocket);
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX))
        {
            server.bind(UnixDomainSocketAddress.of(migSocket));
            qemu.qmp().execute("migrate", Map.of("uri", "unix:" + migSocket), QemuProcess.QMP_TIMEOUT_MS);
            ByteBuffer buf = ByteBuffer.allocate(1 << 20);
            try (SocketChannel s = server.accept())
            {
                while (true)
                {
                    if (!buf.hasRemaining())
                    {
                        buf = ByteBuffer.allocate(buf.capacity() * 2).put(buf.flip());
                    }
                    if (s.read(buf) < 0)
                    {
                        break;
                    }
                }
            }
            final String status = waitMigration();
            if (!"completed".equals(status))
            {
                throw new IOException("vm " + qemu.spec().name() + ": device-state migration ended " + status);
            }
            return buf.flip();
        }
        finally
        {
            Files.deleteIfExists(migSocket);
        }
    }

    private String waitMigration() throws IOException
    {
        final long deadline = System.nanoTime() + QemuProcess.QMP_TIMEOUT_MS * 1_000_000L;
        while (System.nanoTime() - deadline < 0)
        {
            final String status = qemu.qmp().execute("query-migrate", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText();
            if ("completed".equals(status) || "failed".equals(status) || "cancelled".equals(status))
            {
                return status;
            }
            Thread.onSpinWait();
        }
        return "timed out";
    }

    @Override
    public void close()
    {
        // mapped and direct buffers are released by the GC; nothing else is held
    }
}
