package dev.colod.agent.disk;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.QmpClient;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The write tracking of every disk of one VM ({@link DiskWrites} each) on one NBD server of its QEMU, and what
 * one checkpoint carries of them: at a pause the extents every disk's frozen bitmap marks, in disk order, in one
 * buffer; for a base, every disk's extents read as they are streamed. Single-threaded: the session's thread.
 */
public final class DiskSet implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(DiskSet.class);

    private final QmpClient qmp;
    private final String vm;
    private final List<DiskWrites> disks = new ArrayList<>();
    private ByteBuffer copy = ByteBuffer.allocateDirect(1 << 20);

    /** Per-checkpoint cost, microseconds: rotating the bitmaps, finding and reading the written extents. */
    public final Histogram diskMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Bytes of disk writes per checkpoint, all disks. */
    public final Histogram diskBytesPerCheckpoint = new ConcurrentHistogram(1L << 40, 2);
    public volatile long lastDiskMicros;
    public volatile long lastDiskBytes;

    private DiskSet(final QemuProcess qemu)
    {
        this.qmp = qemu.qmp();
        this.vm = qemu.spec().name();
    }

    /**
     * Starts QEMU's NBD server on a unix socket in the VM's runtime directory, after removing what an earlier agent
     * may have left in an adopted QEMU (its exports, bitmaps and server), and tracks every disk of the VM.
     */
    public static DiskSet open(final QemuProcess qemu) throws IOException
    {
        if (qemu.spec().disks().isEmpty())
        {
            throw new IllegalArgumentException("vm " + qemu.spec().name() + " has no disk");
        }
        final DiskSet s = new DiskSet(qemu);
        try
        {
            final Path socket = qemu.runDir().resolve("nbd.sock");
            s.startServer(socket);
            for (int i = 0; i < qemu.spec().disks().size(); i++)
            {
                s.disks.add(new DiskWrites(qemu, socket, i));
            }
        }
        catch (final IOException | RuntimeException ex)
        {
            s.close();
            throw ex;
        }
        return s;
    }

    /** QEMU's NBD server on {@code socket}, after removing what an earlier agent left (exports, server). */
    private void startServer(final Path socket) throws IOException
    {
        for (final JsonNode e : qmp.execute("query-block-exports", null, QemuProcess.QMP_TIMEOUT_MS))
        {
            if (e.path("id").asText().startsWith(DiskWrites.PREFIX))
            {
                qmp.execute("block-export-del", Map.of("id", e.path("id").asText(), "mode", "hard"), QemuProcess.QMP_TIMEOUT_MS);
            }
        }
        try
        {
            qmp.execute("nbd-server-stop", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException notRunning)
        {
            // the usual case: no server yet
        }
        Files.deleteIfExists(socket);
        qmp.execute("nbd-server-start", Map.of("addr", Map.of("type", "unix", "data", Map.of("path", socket.toString()))),
            QemuProcess.QMP_TIMEOUT_MS);
    }

    /** The tracked disks, in the VM's order. */
    public List<DiskWrites> disks()
    {
        return Collections.unmodifiableList(disks);
    }

    /** Each disk's size in bytes, in order: a checkpoint's disk table. */
    public long[] sizes()
    {
        final long[] s = new long[disks.size()];
        for (int i = 0; i < s.length; i++)
        {
            s[i] = disks.get(i).diskBytes();
        }
        return s;
    }

    /** Tracking starts over on every disk: every write from here on is in the next capture. */
    public void restart() throws IOException
    {
        for (final DiskWrites d : disks)
        {
            d.restart();
        }
    }

    /** Every disk's writes limited to {@code bytesPerSecond} (0: no limit); see {@link DiskWrites#throttleWrites}. */
    public void throttleWrites(final long bytesPerSecond) throws IOException
    {
        for (final DiskWrites d : disks)
        {
            d.throttleWrites(bytesPerSecond);
        }
    }

    /** Bytes every disk's recording bitmap marks now (one QMP round trip per disk). */
    public long writtenSinceCapture() throws IOException
    {
        long n = 0;
        for (final DiskWrites d : disks)
        {
            n += d.writtenSinceCapture();
        }
        return n;
    }

    /**
     * With the VM paused: every disk's written extents, copied as records into one buffer valid until the next call
     * (speculative mode resumes the VM before it is sent).
     */
    public Captured capturePaused() throws IOException
    {
        final long t0 = System.nanoTime();
        final long[] count = {0};
        long bytes = 0;
        copy.clear();
        for (final DiskWrites d : disks)
        {
            copy = d.capturePaused(copy, count);
            bytes += d.lastBytes;
        }
        copy.flip();
        lastDiskBytes = bytes;
        lastDiskMicros = (System.nanoTime() - t0) / 1000;
        diskMicros.recordValue(lastDiskMicros);
        diskBytesPerCheckpoint.recordValue(bytes);
        return new Captured(copy.asReadOnlyBuffer(), count[0]);
    }

    /** Removes the last capture's frozen bitmaps and exports; called once the VM runs again. */
    public void afterResume() throws IOException
    {
        for (final DiskWrites d : disks)
        {
            d.afterResume();
        }
    }

    /** Every disk whole, for a first synchronisation (tracking restarts on each, then its extents are listed). */
    public Base base() throws IOException
    {
        final List<DiskWrites.Base> bases = new ArrayList<>();
        for (final DiskWrites d : disks)
        {
            bases.add(d.base());
        }
        return new Base(bases);
    }

    /** Extent records copied at a pause, of every disk. */
    public record Captured(ByteBuffer records, long count)
    {
    }

    /** Every disk's base extents, streamed in disk order. */
    public static final class Base
    {
        private final List<DiskWrites.Base> bases;

        private Base(final List<DiskWrites.Base> bases)
        {
            this.bases = bases;
        }

        public long count()
        {
            return bases.stream().mapToLong(b -> b.extents().count()).sum();
        }

        public long dataBytes()
        {
            return bases.stream().mapToLong(b -> b.extents().dataBytes()).sum();
        }

        public long streamBytes()
        {
            return bases.stream().mapToLong(b -> b.extents().streamBytes()).sum();
        }

        public void stream(final DiskWrites.RecordSink sink) throws IOException
        {
            for (final DiskWrites.Base b : bases)
            {
                b.stream(sink);
            }
        }
    }

    /** Stops tracking every disk and the NBD server; the guest's disks are untouched. */
    @Override
    public void close()
    {
        for (final DiskWrites d : disks)
        {
            d.close();
        }
        try
        {
            qmp.execute("nbd-server-stop", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} stopping QEMU's NBD server: {}", vm, ex.toString());
        }
    }
}
