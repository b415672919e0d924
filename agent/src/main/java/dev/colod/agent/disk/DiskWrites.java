package dev.colod.agent.disk;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.QmpClient;
import dev.colod.agent.qemu.VmSpec;
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
 * What the primary's guest wrote to one of its disks, found by QEMU's own block layer: a dirty bitmap on the disk's
 * node records every completed write, and at each checkpoint (VM paused, so QEMU has drained the guest's
 * requests) one QMP {@code transaction} starts the next bitmap and freezes the current one; the frozen one is
 * exported read-only over QEMU's NBD server on a unix socket, its dirty extents are asked with
 * {@code NBD_CMD_BLOCK_STATUS} ({@code qemu:dirty-bitmap:NAME}), and their bytes are read while the VM is still
 * paused: from a raw image file directly (QEMU's {@code stop} drained and flushed the guest's requests, so the file
 * is the disk; a pread from the page cache is several times faster than NBD_CMD_READ), from a qcow2 image through
 * QEMU's block layer ({@code NBD_CMD_READ} on a read-only export of the disk's node, since its file offsets are not
 * the disk's). Each extent is addressed by the disk's index and its offset ({@link CheckpointFormat#address}). So a checkpoint carries exactly the writes completed before its pause, and writes after it land
 * in the next bitmap. Granularity {@value #GRANULARITY} bytes. The guest's own I/O never passes through colod.
 * <p>
 * Single-threaded: the checkpoint engine's session thread. Made by {@link DiskSet}, which owns the NBD server.
 */
public final class DiskWrites implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(DiskWrites.class);
    public static final int GRANULARITY = 4096;
    static final String PREFIX = "colod-";
    private static final String ALLOCATION = "base:allocation";
    private static final String DEPTH = "qemu:allocation-depth";

    private final QmpClient qmp;
    private final String vm;
    private final Path socket;
    private final int index;
    private final String node;
    /** Names of this disk's bitmaps and exports: {@value #PREFIX}, or {@value #PREFIX}dN- for disk N > 0. */
    private final String prefix;
    private final VmSpec.DiskFormat format;
    private final long diskBytes;
    /** A raw image: with the VM paused QEMU has drained and flushed the guest's writes into it, so it reads as the disk. */
    private final FileChannel image;
    /** A qcow2 disk: its node read through QEMU's NBD server (a read-only export for the life of this object). */
    private NbdClient reader;
    /** A qcow2 disk: its file, read directly where {@link Qcow2Map} maps a paused VM's cluster. */
    private FileChannel qcow2File;
    /** Bytes of the last capture read from the qcow2 file directly, and through QEMU. */
    private long lastDirectBytes;
    private long lastQemuBytes;
    /** The frozen bitmap and export of the last capture, removed after the VM resumed (out of the pause). */
    private String frozenLeft;
    private long generation;
    /** Read by the write governor's thread too (writtenSinceCapture). */
    private volatile String recording;

    /**
     * Disk {@code index} of {@code qemu}'s VM, on the NBD server at {@code socket} (started by {@link DiskSet}); removes
     * the bitmaps an earlier agent left on its node.
     */
    DiskWrites(final QemuProcess qemu, final Path socket, final int index) throws IOException
    {
        final VmSpec.Disk disk = qemu.spec().disks().get(index);
        this.qmp = qemu.qmp();
        this.vm = qemu.spec().name();
        this.socket = socket;
        this.index = index;
        this.node = VmSpec.diskNode(index);
        this.prefix = index == 0 ? PREFIX : PREFIX + "d" + index + "-";
        this.format = disk.format();
        if (format == VmSpec.DiskFormat.RAW)
        {
            this.image = FileChannel.open(disk.image(), StandardOpenOption.READ);
            this.diskBytes = image.size();
        }
        else
        {
            this.image = null;
            final String export = prefix + "read";
            qmp.execute("block-export-add", Map.of("type", "nbd", "id", export, "node-name", node, "name", export),
                QemuProcess.QMP_TIMEOUT_MS);
            this.reader = NbdClient.connect(socket, export, List.of());
            this.diskBytes = reader.size();
            this.qcow2File = FileChannel.open(disk.image(), StandardOpenOption.READ);
        }
        removeOurBitmaps();
    }

    /** Of a qcow2 disk's last capture: bytes read from its file directly (mapped by its own tables). */
    public long lastDirectBytes()
    {
        return lastDirectBytes;
    }

    /** Of a qcow2 disk's last capture: bytes read through QEMU (backing file, compressed, or unmapped). */
    public long lastQemuBytes()
    {
        return lastQemuBytes;
    }

    /** Disk {@code index}'s place in the VM's {@code disks:}. */
    public int index()
    {
        return index;
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
            if (node.equals(n.path("node-name").asText()))
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
                removeBitmap(name); // bitmaps are per node: every colod bitmap on this disk's node is ours
            }
        }
        recording = null;
        frozenLeft = null;
    }

    private void removeBitmap(final String name) throws IOException
    {
        qmp.execute("block-dirty-bitmap-remove", Map.of("node", node, "name", name), QemuProcess.QMP_TIMEOUT_MS);
    }

    private void deleteExport(final String id) throws IOException
    {
        qmp.execute("block-export-del", Map.of("id", id, "mode", "hard"), QemuProcess.QMP_TIMEOUT_MS);
    }

    /**
     * Bytes the recording bitmap marks now (whole granules), asked from QEMU ({@code query-named-block-nodes}). The
     * VM may be running. Costs one QMP round trip.
     */
    /**
     * Limits the guest's writes to this disk to {@code bytesPerSecond} (0: no limit), through QEMU's own I/O throttling
     * of the disk's device: requests beyond it wait in QEMU, and run as soon as the limit is lifted.
     */
    void throttleWrites(final long bytesPerSecond) throws IOException
    {
        final Map<String, Object> a = new java.util.LinkedHashMap<>();
        a.put("id", node + "-dev/virtio-backend"); // virtio-blk-pci's block backend is its virtio child's
        for (final String k : List.of("bps", "bps_rd", "iops", "iops_rd", "iops_wr"))
        {
            a.put(k, 0);
        }
        a.put("bps_wr", bytesPerSecond);
        qmp.execute("block_set_io_throttle", a, QemuProcess.QMP_TIMEOUT_MS);
    }

    long writtenSinceCapture() throws IOException
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
    void restart() throws IOException
    {
        if (recording != null)
        {
            removeBitmap(recording);
            recording = null;
        }
        final String next = prefix + (++generation);
        qmp.execute("block-dirty-bitmap-add", bitmap(next), QemuProcess.QMP_TIMEOUT_MS);
        recording = next;
    }

    private Map<String, Object> bitmap(final String name)
    {
        return Map.of("node", node, "name", name, "granularity", GRANULARITY);
    }

    /** Extents of one disk as (offset, length) pairs of at most {@link CheckpointFormat#MAX_EXTENT} bytes, and their total size. */
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
     * server which extents the frozen one marks, and appends them to {@code out} as (address, length, bytes)
     * records, growing it as needed (the returned buffer, positioned after them). Returns the extent count through
     * {@code count}. The frozen bitmap and its export are removed by {@link #afterResume()}, out of the pause.
     */
    ByteBuffer capturePaused(final ByteBuffer out, final long[] count) throws IOException
    {
        if (recording == null)
        {
            throw new IllegalStateException("vm " + vm + ": tracking of disk " + index + " was not started");
        }
        afterResume(); // normally done already
        final String frozen = recording;
        final String next = prefix + (++generation);
        qmp.execute("transaction", Map.of("actions", List.of(
            Map.of("type", "block-dirty-bitmap-add", "data", bitmap(next)),
            Map.of("type", "block-dirty-bitmap-disable", "data", Map.of("node", node, "name", frozen)))),
            QemuProcess.QMP_TIMEOUT_MS);
        recording = next;
        frozenLeft = frozen;
        addExport(frozen, List.of(frozen), false);
        final Extents dirty = extents(frozen, "qemu:dirty-bitmap:" + frozen, flags -> (flags & NbdClient.STATE_DIRTY) != 0);
        final ByteBuffer b = ensure(out, dirty.streamBytes());
        // paused: QEMU flushed qcow2's metadata into the file, so its own tables say where each cluster is
        final Qcow2Map map = qcow2File == null ? null : Qcow2Map.read(qcow2File);
        lastDirectBytes = 0;
        lastQemuBytes = 0;
        for (final long[] x : dirty.list)
        {
            CheckpointFormat.putExtentHeader(b, index, x[0], (int)x[1]);
            if (map == null)
            {
                readDisk(x[0], (int)x[1], b);
            }
            else
            {
                readMapped(map, x[0], (int)x[1], b);
            }
        }
        count[0] += dirty.count();
        lastBytes = dirty.dataBytes();
        return b;
    }

    /** Bytes of data this disk's last capture carried. */
    long lastBytes;

    /** {@code out}, or a larger copy of it (its records kept) with room for {@code more} bytes. */
    private ByteBuffer ensure(final ByteBuffer out, final long more)
    {
        final long need = out.position() + more;
        if (out.capacity() >= need)
        {
            return out;
        }
        if (need > Integer.MAX_VALUE - 8)
        {
            throw new IllegalStateException("vm " + vm + ": more than 2 GiB written to disk in one checkpoint; " +
                "checkpoint more often");
        }
        final ByteBuffer bigger = ByteBuffer.allocateDirect((int)Math.max(need, Math.min(Integer.MAX_VALUE - 8L,
            out.capacity() * 2L)));
        return bigger.put(out.flip());
    }

    /** Removes the last capture's frozen bitmap and its export; called once the VM runs again. */
    void afterResume() throws IOException
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

    /**
     * Exports the disk's node, read-only, on QEMU's NBD server as {@code export}, with {@code bitmaps} and, with
     * {@code depth}, the {@value #DEPTH} context (which layer of a qcow2 chain holds each extent).
     */
    private void addExport(final String export, final List<String> bitmaps, final boolean depth) throws IOException
    {
        qmp.execute("block-export-add", Map.of("type", "nbd", "id", export, "node-name", node, "name", export,
            "bitmaps", bitmaps, "allocation-depth", depth), QemuProcess.QMP_TIMEOUT_MS);
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
                throw new IOException("vm " + vm + ": QEMU's disk " + index + " is " + c.size() + " bytes, it was " +
                    diskBytes + " (resized while running?)");
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

    /**
     * Exactly {@code len} bytes of a paused qcow2 disk at {@code offset} into {@code dst}, cluster by cluster: a data
     * cluster from the file, a zero cluster as zeros, anything else (the backing file's, compressed) through QEMU.
     */
    private void readMapped(final Qcow2Map map, final long offset, final int len, final ByteBuffer dst) throws IOException
    {
        final int cluster = map.clusterSize();
        long runFile = -1; // a run of clusters that lie one after the other in the file: one pread
        int runBytes = 0;
        for (long at = offset; at < offset + len; )
        {
            final int n = (int)Math.min(offset + len - at, cluster - (at & (cluster - 1)));
            final long where = map.fileOffset(at);
            if (where >= 0 && runBytes > 0 && where == runFile + runBytes)
            {
                runBytes += n;
                at += n;
                continue;
            }
            if (runBytes > 0)
            {
                readFile(runFile, runBytes, dst);
                runBytes = 0;
            }
            if (where == Qcow2Map.ZERO)
            {
                for (int k = 0; k < n; k++)
                {
                    dst.put((byte)0);
                }
            }
            else if (where == Qcow2Map.ELSEWHERE)
            {
                reader.read(at, n, dst);
                lastQemuBytes += n;
            }
            else
            {
                runFile = where;
                runBytes = n;
            }
            at += n;
        }
        if (runBytes > 0)
        {
            readFile(runFile, runBytes, dst);
        }
    }

    /** {@code n} bytes of the qcow2 file at {@code at} into {@code dst}. */
    private void readFile(final long at, final int n, final ByteBuffer dst) throws IOException
    {
        final ByteBuffer slice = dst.duplicate().limit(dst.position() + n);
        while (slice.hasRemaining())
        {
            if (qcow2File.read(slice, at + slice.position() - dst.position()) < 0)
            {
                throw new IOException("vm " + vm + ": disk " + index + "'s qcow2 file ends inside a cluster at " + at);
            }
        }
        dst.position(dst.position() + n);
        lastDirectBytes += n;
    }

    /** Exactly {@code len} bytes of the disk at {@code offset} into {@code dst}: from a raw file, or through QEMU. */
    private void readDisk(final long offset, final int len, final ByteBuffer dst) throws IOException
    {
        if (image == null)
        {
            reader.read(offset, len, dst);
            return;
        }
        final int end = dst.position() + len;
        final ByteBuffer slice = dst.duplicate().limit(end);
        while (slice.hasRemaining())
        {
            if (image.read(slice, offset + slice.position() - (end - len)) < 0)
            {
                throw new IOException("vm " + vm + ": disk image " + index + " ends before " + (offset + len) +
                    " (resized while running?)");
            }
        }
        dst.position(end);
    }

    /**
     * The whole disk for a first synchronisation: tracking restarts first (so every write from here on is in the
     * next checkpoint), then the extents to send are listed; their bytes are read when streamed (while the guest
     * runs for a live base: what changes meanwhile is in the bitmap). A raw disk sends its allocated extents
     * ({@code base:allocation}; the rest reads as zeros on both sides). A qcow2 disk sends what its top image holds
     * ({@value #DEPTH} 1); the rest is its backing file's, the same on both hosts (checked at session start), or
     * unallocated in the whole chain (zeros on both sides), since the standby starts a base from an empty image on
     * the same backing file.
     */
    Base base() throws IOException
    {
        restart();
        final String export = prefix + "base-" + generation;
        final Extents data;
        final boolean qcow2 = format == VmSpec.DiskFormat.QCOW2;
        addExport(export, List.of(), qcow2);
        try
        {
            data = qcow2 ? extents(export, DEPTH, depth -> depth == 1)
                : extents(export, ALLOCATION, flags -> (flags & NbdClient.STATE_ZERO) == 0);
        }
        finally
        {
            deleteExport(export);
        }
        return new Base(data);
    }

    /** The extents of the whole disk a base sends, read as they are streamed. */
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
                CheckpointFormat.putExtentHeader(b, index, x[0], (int)x[1]);
                readDisk(x[0], (int)x[1], b);
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

    /** Removes this agent's bitmaps and exports of the disk; the guest's disk is untouched. */
    @Override
    public void close()
    {
        try
        {
            afterResume();
            removeOurBitmaps();
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} disk {} tracking cleanup: {}", vm, index, ex.toString());
        }
        try
        {
            if (image != null)
            {
                image.close();
            }
            if (reader != null)
            {
                reader.close();
                qcow2File.close();
                deleteExport(prefix + "read");
            }
        }
        catch (final IOException ex)
        {
            LOG.debug("vm={} closing disk {}: {}", vm, index, ex.toString());
        }
    }
}
