package dev.colod.agent.disk;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.QmpClient;
import dev.colod.agent.qemu.VmSpec;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.IntPredicate;

/**
 * What the primary's guest wrote to its disk, found by QEMU's own block layer: a dirty bitmap on the disk's
 * node records every completed write, and at each checkpoint (VM paused, so QEMU has drained the guest's
 * requests) one QMP {@code transaction} starts the next bitmap and freezes the current one; the frozen one is
 * exported read-only over QEMU's NBD server on a unix socket, its dirty extents are asked with
 * {@code NBD_CMD_BLOCK_STATUS} ({@code qemu:dirty-bitmap:NAME}), and their bytes are read from the raw image file
 * while the VM is still paused (QEMU's {@code stop} drained and flushed the guest's requests, so the file is the
 * disk; a pread from the page cache is several times faster than NBD_CMD_READ). So a checkpoint carries exactly the writes completed before its pause, and writes after it land
 * in the next bitmap. Granularity {@value #GRANULARITY} bytes. The guest's own I/O never passes through colod.
 * <p>
 * Single-threaded: the checkpoint engine's session thread.
 */
public final class DiskWrites implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(DiskWrites.class);
    public static final int GRANULARITY = 4096;
    private static final String PREFIX = "colod-";
    private static final String ALLOCATION = "base:allocation";

    private final QmpClient qmp;
    private final String vm;
    private final Path socket;
    private final long diskBytes;
    /** The raw image: with the VM paused QEMU has drained and flushed the guest's writes into it, so it reads as the disk. */
    private final FileChannel image;
    /** The frozen bitmap and export of the last capture, removed after the VM resumed (out of the pause). */
    private String frozenLeft;
    private long generation;
    private String recording;
    private ByteBuffer copy = ByteBuffer.allocateDirect(1 << 20);

    /** Per-checkpoint cost, microseconds: rotating the bitmap, finding and reading the written extents. */
    public final Histogram diskMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Bytes of disk writes per checkpoint. */
    public final Histogram diskBytesPerCheckpoint = new ConcurrentHistogram(1L << 40, 2);
    public volatile long lastDiskMicros;
    public volatile long lastDiskBytes;

    private DiskWrites(final QmpClient qmp, final String vm, final Path socket, final Path image) throws IOException
    {
        this.qmp = qmp;
        this.vm = vm;
        this.socket = socket;
        this.image = FileChannel.open(image, StandardOpenOption.READ);
        this.diskBytes = this.image.size();
    }

    /**
     * Starts QEMU's NBD server on a unix socket in the VM's runtime directory, after removing what an earlier
     * agent may have left in an adopted QEMU (its exports, bitmaps and server).
     */
    public static DiskWrites open(final QemuProcess qemu) throws IOException
    {
        final VmSpec spec = qemu.spec();
        if (spec.disk() == null)
        {
            throw new IllegalArgumentException("vm " + spec.name() + " has no disk");
        }
        final QmpClient q = qemu.qmp();
        final Path sock = qemu.runDir().resolve("nbd.sock");
        final DiskWrites d = new DiskWrites(q, spec.name(), sock, spec.disk());
        try
        {
            d.startServer();
        }
        catch (final IOException | RuntimeException ex)
        {
            d.image.close();
            throw ex;
        }
        return d;
    }

    /** QEMU's NBD server on our socket, after removing what an earlier agent left (exports, server, bitmaps). */
    private void startServer() throws IOException
    {
        for (final JsonNode e : qmp.execute("query-block-exports", null, QemuProcess.QMP_TIMEOUT_MS))
        {
            if (e.path("id").asText().startsWith(PREFIX))
            {
                deleteExport(e.path("id").asText());
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
        removeOurBitmaps();
    }

    public long diskBytes()
    {
        return diskBytes;
    }

    /** The dirty bitmaps QEMU has on the disk's node (name, count, ...). */
    private List<JsonNode> diskBitmaps() throws IOException
    {
        final List<JsonNode> out = new ArrayList<>();
        for (final JsonNode n : qmp.execute("query-named-block-nodes", Map.of("flat", true), QemuProcess.QMP_TIMEOUT_MS))
        {
            if (VmSpec.DISK_NODE.equals(n.path("node-name").asText()))
            {
                n.path("dirty-bitmaps").forEach(out::add);
            }
        }
        return out;
    }

    private void removeOurBitmaps() throws IOException
    {
        for (final JsonNode b : diskBitmaps())
        {
            final String name = b.path("name").asText();
            if (name.startsWith(PREFIX))
            {
                removeBitmap(name);
            }
        }
        recording = null;
        frozenLeft = null;
    }

    private void removeBitmap(final String name) throws IOException
    {
        qmp.execute("block-dirty-bitmap-remove", Map.of("node", VmSpec.DISK_NODE, "name", name), QemuProcess.QMP_TIMEOUT_MS);
    }

    private void deleteExport(final String id) throws IOException
    {
        qmp.execute("block-export-del", Map.of("id", id, "mode", "hard"), QemuProcess.QMP_TIMEOUT_MS);
    }

    /**
     * Bytes the recording bitmap marks now (whole granules), asked from QEMU ({@code query-named-block-nodes}). The
     * VM may be running. Costs one QMP round trip.
     */
    public long writtenSinceCapture() throws IOException
    {
        final String r = recording;
        if (r != null)
        {
            for (final JsonNode b : diskBitmaps())
            {
                if (r.equals(b.path("name").asText()))
                {
                    return b.path("count").asLong();
                }
            }
        }
        return 0;
    }

    /** Tracking starts over with a fresh bitmap: every write from here on is in the next capture. */
    public void restart() throws IOException
    {
        if (recording != null)
        {
            removeBitmap(recording);
            recording = null;
        }
        final String next = PREFIX + (++generation);
        qmp.execute("block-dirty-bitmap-add", bitmap(next), QemuProcess.QMP_TIMEOUT_MS);
        recording = next;
    }

    private static Map<String, Object> bitmap(final String name)
    {
        return Map.of("node", VmSpec.DISK_NODE, "name", name, "granularity", GRANULARITY);
    }

    /** Extents as (offset, length) pairs of at most {@link CheckpointFormat#MAX_EXTENT} bytes, and their total size. */
    public static final class Extents
    {
        private final List<long[]> list = new ArrayList<>();
        private long bytes;

        void add(final long offset, final long length)
        {
            for (long at = offset; at < offset + length; at += CheckpointFormat.MAX_EXTENT)
            {
                final long n = Math.min(CheckpointFormat.MAX_EXTENT, offset + length - at);
                list.add(new long[]{at, n});
                bytes += n;
            }
        }

        public int count()
        {
            return list.size();
        }

        /** Bytes in the stream: each extent's header and data. */
        public long streamBytes()
        {
            return bytes + (long)list.size() * CheckpointFormat.EXTENT_HEADER;
        }

        public long dataBytes()
        {
            return bytes;
        }
    }

    /**
     * With the VM paused: freezes the recording bitmap and starts the next in one transaction, asks QEMU's NBD
     * server which extents the frozen one marks, and copies them from the image as (offset, length, bytes) records.
     * The returned buffer stays valid until the next call (speculative mode resumes the VM before it is sent).
     * The frozen bitmap and its export are removed by {@link #afterResume()}, out of the pause.
     */
    public Captured capturePaused() throws IOException
    {
        final long t0 = System.nanoTime();
        if (recording == null)
        {
            throw new IllegalStateException("vm " + vm + ": disk tracking was not started");
        }
        afterResume(); // normally done already
        final String frozen = recording;
        final String next = PREFIX + (++generation);
        qmp.execute("transaction", Map.of("actions", List.of(
            Map.of("type", "block-dirty-bitmap-add", "data", bitmap(next)),
            Map.of("type", "block-dirty-bitmap-disable", "data", Map.of("node", VmSpec.DISK_NODE, "name", frozen)))),
            QemuProcess.QMP_TIMEOUT_MS);
        recording = next;
        frozenLeft = frozen;
        addExport(frozen, List.of(frozen));
        final Extents dirty = extents(frozen, "qemu:dirty-bitmap:" + frozen, flags -> (flags & NbdClient.STATE_DIRTY) != 0);
        copy.clear();
        ensureCopy(dirty.streamBytes());
        for (final long[] x : dirty.list)
        {
            CheckpointFormat.putExtentHeader(copy, x[0], (int)x[1]);
            readImage(x[0], (int)x[1], copy);
        }
        copy.flip();
        lastDiskBytes = dirty.dataBytes();
        lastDiskMicros = (System.nanoTime() - t0) / 1000;
        diskMicros.recordValue(lastDiskMicros);
        diskBytesPerCheckpoint.recordValue(lastDiskBytes);
        return new Captured(copy.asReadOnlyBuffer(), dirty.count());
    }

    /** Removes the last capture's frozen bitmap and its export; called once the VM runs again. */
    public void afterResume() throws IOException
    {
        final String f = frozenLeft;
        if (f == null)
        {
            return;
        }
        frozenLeft = null;
        deleteExport(f);
        removeBitmap(f);
    }

    /** Exports the disk's node, read-only, on QEMU's NBD server as {@code export}, with {@code bitmaps}. */
    private void addExport(final String export, final List<String> bitmaps) throws IOException
    {
        qmp.execute("block-export-add", Map.of("type", "nbd", "id", export, "node-name", VmSpec.DISK_NODE, "name", export,
            "bitmaps", bitmaps), QemuProcess.QMP_TIMEOUT_MS);
    }

    /** The extents of meta context {@code context} of {@code export} whose flags {@code wanted} accepts. */
    private Extents extents(final String export, final String context, final IntPredicate wanted)
        throws IOException
    {
        final Extents out = new Extents();
        try (NbdClient c = NbdClient.connect(socket, export, List.of(context)))
        {
            if (c.size() != diskBytes)
            {
                throw new IOException("vm " + vm + ": QEMU's disk is " + c.size() + " bytes, its image file " + diskBytes +
                    " (resized while running?)");
            }
            c.blockStatus(context, 0, diskBytes, e ->
            {
                if (wanted.test(e.flags()))
                {
                    out.add(e.offset(), e.length());
                }
            });
        }
        return out;
    }

    /** Exactly {@code len} bytes of the image at {@code offset} into {@code dst}. */
    private void readImage(final long offset, final int len, final ByteBuffer dst) throws IOException
    {
        final int end = dst.position() + len;
        final ByteBuffer slice = dst.duplicate().limit(end);
        while (slice.hasRemaining())
        {
            if (image.read(slice, offset + slice.position() - (end - len)) < 0)
            {
                throw new IOException("vm " + vm + ": disk image ends before " + (offset + len) + " (resized while running?)");
            }
        }
        dst.position(end);
    }

    /** Extent records copied at a pause. */
    public record Captured(ByteBuffer records, long count)
    {
    }

    private void ensureCopy(final long need)
    {
        if (copy.capacity() < need)
        {
            if (need > Integer.MAX_VALUE - 8)
            {
                throw new IllegalStateException("vm " + vm + ": more than 2 GiB written to disk in one checkpoint; " +
                    "checkpoint more often");
            }
            copy = ByteBuffer.allocateDirect((int)Math.max(need, Math.min(Integer.MAX_VALUE - 8L, copy.capacity() * 2L)));
        }
    }

    /**
     * The whole disk for a first synchronisation: tracking restarts first (so every write from here on is in the
     * next checkpoint), then the allocated extents are listed ({@code base:allocation}); their bytes are read when
     * streamed (while the guest runs for a live base: what changes meanwhile is in the bitmap). Unallocated ranges
     * read as zeros on both sides.
     */
    public Base base() throws IOException
    {
        restart();
        final String export = PREFIX + "base-" + generation;
        final Extents data;
        addExport(export, List.of());
        try
        {
            data = extents(export, ALLOCATION, flags -> (flags & NbdClient.STATE_ZERO) == 0);
        }
        finally
        {
            deleteExport(export);
        }
        return new Base(data);
    }

    /** The allocated extents of the whole disk, read as they are streamed. */
    public final class Base
    {
        private final Extents extents;

        private Base(final Extents extents)
        {
            this.extents = extents;
        }

        public Extents extents()
        {
            return extents;
        }

        /** Each extent as a record, read now, handed to {@code sink} in pieces of at most 1 MiB + its header. */
        public void stream(final RecordSink sink) throws IOException
        {
            final ByteBuffer b = ByteBuffer.allocate(CheckpointFormat.EXTENT_HEADER + CheckpointFormat.MAX_EXTENT);
            for (final long[] x : extents.list)
            {
                b.clear();
                CheckpointFormat.putExtentHeader(b, x[0], (int)x[1]);
                readImage(x[0], (int)x[1], b);
                b.flip();
                sink.accept(b);
            }
        }
    }

    /** Receives records of a streamed base. */
    public interface RecordSink
    {
        void accept(ByteBuffer record) throws IOException;
    }

    /** Stops the NBD server and removes this agent's bitmaps; the guest's disk is untouched. */
    @Override
    public void close()
    {
        try
        {
            afterResume();
            removeOurBitmaps();
            qmp.execute("nbd-server-stop", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} disk tracking cleanup: {}", vm, ex.toString());
        }
        try
        {
            image.close();
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} closing {}: {}", vm, "the disk image", ex.toString());
        }
    }
}
