package dev.colod.agent.vm;

import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.checkpoint.CheckpointReader;
import dev.colod.agent.disk.StandbyDisk;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.core.spi.VmStateSink;
import dev.colod.os.LibC;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/**
 * The secondary's committed image of one VM, in a directory (best on tmpfs, e.g. /dev/shm/colod/VM):
 * <pre>
 *   ram            the RAM file a failover QEMU maps (shared memory-backend file)
 *   device.state   QEMU device state of the committed checkpoint
 *   committed      the committed checkpoint id, as text; "ID base" while it is only a live base image
 *   staging.ckpt   a checkpoint being received
 *   pending.ckpt   a wholly received, verified checkpoint being applied (redo log)
 * </pre>
 * and, for a VM with disks, the disk image files named in its configuration (raw or qcow2, {@link StandbyDisk}). A
 * checkpoint's disk extents are written into them only when the checkpoint is applied, after its RAM pages and
 * before {@code committed} changes (not fsynced: as durable as the RAM image on tmpfs they go with). A base image
 * starts each disk from an empty image first and then writes every extent the primary's disk holds itself.
 * Commit is crash-safe by redo: the staged checkpoint is verified (CRC32C) and renamed to pending.ckpt
 * (atomic), then its pages are written into ram, device.state and committed are replaced by rename, and
 * pending.ckpt is removed. If the agent dies in between, opening the image applies pending.ckpt again (pages
 * are absolute, so re-applying is harmless) before anything reads it. A partly received checkpoint is only
 * ever staging.ckpt, which is discarded.
 */
public final class StandbyImage implements VmStateSink
{
    private static final Logger LOG = LoggerFactory.getLogger(StandbyImage.class);

    /** What failover does with the committed image: start the VM from it. */
    public interface Activation
    {
        void activate(StandbyImage image, long checkpointId) throws Exception;

        /**
         * {@code vmstate-loaded} was sent for a committed checkpoint: the primary no longer waits, so slow work
         * (pre-starting a hot-standby QEMU) may begin. Must not throw and must not block the session.
         */
        default void loaded(final StandbyImage image, final long checkpointId)
        {
        }

        /** Hybrid mode: stop the running copy of the VM (checkpoint-request arrived). */
        default void suspendRunning(final StandbyImage image, final long checkpointId) throws IOException
        {
        }

        /** Hybrid mode: run the copy from the committed checkpoint {@code checkpointId} (vmstate-loaded was sent). */
        default void resumeRunning(final StandbyImage image, final long checkpointId) throws IOException
        {
        }
    }

    private final Path dir;
    private final String vm;
    private final Activation activation;
    private static final long RAM_CHUNK = 1L << 30;

    /** The VM's disks here, in order (empty: a diskless VM). */
    private List<StandbyDisk> disks = List.of();
    /** Whether every checkpoint must carry the disk (false only for control runs without disk replication). */
    private boolean diskRequired;
    private FileChannel staging;
    private DirectBase base;
    private long stagedBytes;
    private long stagingId = -1;
    private long stagingSize;
    /** Whether the staged checkpoint's header (with its disk table) was checked. */
    private boolean headerChecked;
    private volatile long lastCommitted;
    private volatile boolean resumable;

    public StandbyImage(final Path dir, final String vm, final Activation activation) throws IOException
    {
        this.dir = dir;
        this.vm = vm;
        this.activation = activation;
        Files.createDirectories(dir);
        Files.deleteIfExists(dir.resolve("staging.ckpt"));
        if (Files.exists(pending()))
        {
            LOG.warn("vm={} finishing a commit that an earlier run left half done ({})", vm, pending());
            apply(readPendingId());
        }
        final Path c = dir.resolve("committed");
        final String[] committed = Files.exists(c) ? Files.readString(c).trim().split(" ") : new String[]{"0"};
        lastCommitted = Long.parseLong(committed[0]);
        resumable = lastCommitted > 0 && committed.length == 1;
    }

    /**
     * The VM's disk image on this host (raw, the size of the primary's); {@code required}: a checkpoint without
     * the disk is refused (false only for control runs where the primary does not replicate it).
     */
    public StandbyImage disk(final Path image, final boolean required)
    {
        return disks(List.of(new VmSpec.Disk(image, VmSpec.DiskFormat.RAW)), required);
    }

    /** The VM's disks on this host, in the order of its configuration; {@code required} as above. */
    public StandbyImage disks(final List<VmSpec.Disk> list, final boolean required)
    {
        final List<StandbyDisk> d = new ArrayList<>();
        for (int i = 0; i < list.size(); i++)
        {
            d.add(new StandbyDisk(vm, i, list.get(i), dir));
        }
        this.disks = List.copyOf(d);
        this.diskRequired = required;
        return this;
    }

    /** The disk images here, in order. */
    public List<Path> diskImages()
    {
        return disks.stream().map(StandbyDisk::image).toList();
    }

    /** Stops what serves the disks (a qcow2 disk's qemu-nbd) so that a QEMU may open them: before a failover starts one. */
    public void releaseDisks()
    {
        for (final StandbyDisk d : disks)
        {
            d.release();
        }
    }

    public Path ramFile()
    {
        return ramFileIn(dir);
    }

    /** The RAM file of the standby image in {@code dir}. */
    public static Path ramFileIn(final Path dir)
    {
        return dir.resolve("ram");
    }

    public Path deviceStateFile()
    {
        return dir.resolve("device.state");
    }

    private Path pending()
    {
        return dir.resolve("pending.ckpt");
    }

    @Override
    public long lastCommitted()
    {
        return lastCommitted;
    }

    /** False while the image is a live base without the paused checkpoint that completes it. */
    @Override
    public boolean resumable()
    {
        return resumable;
    }

    @Override
    public void stage(final long checkpointId, final long sizeBytes) throws IOException
    {
        discard(stagingId);
        staging = FileChannel.open(dir.resolve("staging.ckpt"), StandardOpenOption.CREATE, StandardOpenOption.READ,
            StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
        stagingId = checkpointId;
        stagingSize = sizeBytes;
        stagedBytes = 0;
        headerChecked = false;
        base = null;
    }

    @Override
    public void stageWrite(final byte[] buf, final int off, final int len) throws IOException
    {
        if (base != null)
        {
            base.reader.feed(ByteBuffer.wrap(buf, off, len));
            stagedBytes += len;
            return;
        }
        final ByteBuffer b = ByteBuffer.wrap(buf, off, len);
        try
        {
            while (b.hasRemaining())
            {
                staging.write(b);
            }
        }
        catch (final IOException ex)
        {
            throw new IOException("vm " + vm + ": staging area " + dir + " could not take checkpoint " + stagingId +
                " (" + stagingSize + " bytes) at byte " + stagedBytes + ": " + ex.getMessage(), ex);
        }
        stagedBytes += len;
        if (!headerChecked && stagedBytes >= CheckpointFormat.HEADER)
        {
            // the header is here: a bad one, or disks that do not match, are refused before any state moves
            final String what = "vm " + vm + " checkpoint " + stagingId;
            final int headerBytes = CheckpointFormat.HEADER + CheckpointFormat.Header.tableBytes(readStaged(
                CheckpointFormat.HEADER), what);
            if (stagedBytes < headerBytes)
            {
                return;
            }
            headerChecked = true;
            final CheckpointFormat.Header header = CheckpointFormat.Header.decode(readStaged(headerBytes), stagingSize, what);
            checkDisks(header, stagingId);
            if (header.base() && header.deviceLength() == 0)
            {
                startDirectBase();
            }
            else
            {
                checkStagingSpace();
            }
        }
    }

    /** The first {@code n} staged bytes. */
    private ByteBuffer readStaged(final int n) throws IOException
    {
        final ByteBuffer h = ByteBuffer.allocate(n);
        while (h.hasRemaining())
        {
            staging.read(h, h.position());
        }
        return h.flip();
    }

    /** A checkpoint that cannot fit the staging area is refused before it fills it, naming the place and the numbers. */
    private void checkStagingSpace() throws IOException
    {
        final long free = Files.getFileStore(dir).getUsableSpace();
        if (free < stagingSize - stagedBytes)
        {
            throw new IOException("vm " + vm + ": staging area " + dir + " is full: checkpoint " + stagingId + " needs " +
                stagingSize + " bytes, " + (free + stagedBytes) + " are free");
        }
    }

    /**
     * A live base image is not a consistent state, so it needs no atomic commit: its pages go straight into the
     * RAM image as they arrive (no staging copy of all of RAM), after the image is marked not resumable.
     */
    private void startDirectBase() throws IOException
    {
        markNotResumable();
        base = new DirectBase(stagingId, stagingSize);
        final ByteBuffer staged = ByteBuffer.allocate((int)stagedBytes);
        while (staged.hasRemaining())
        {
            staging.read(staged, staged.position());
        }
        staging.close();
        staging = null;
        Files.deleteIfExists(dir.resolve("staging.ckpt"));
        base.reader.feed(staged.flip());
    }

    private void markNotResumable() throws IOException
    {
        final Path idTmp = dir.resolve("committed.tmp");
        Files.writeString(idTmp, lastCommitted + " base", StandardCharsets.US_ASCII);
        Files.move(idTmp, dir.resolve("committed"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        resumable = false;
    }

    /** Writes what a checkpoint carries where it belongs: pages into the RAM image, extents into the disk, device state into a file. */
    private static class Applier implements CheckpointReader.Visitor
    {
        MappedByteBuffer[] ram;
        DiskWriters disk;
        private final FileChannel device;
        private long deviceAt;

        Applier(final MappedByteBuffer[] ram, final DiskWriters disk, final FileChannel device)
        {
            this.ram = ram;
            this.disk = disk;
            this.device = device;
        }

        @Override
        public void device(final ByteBuffer piece) throws IOException
        {
            final int n = piece.remaining();
            writeFully(device, piece, deviceAt);
            deviceAt += n;
        }

        @Override
        public void page(final long index, final ByteBuffer src, final int offset)
        {
            putPage(ram, index, src, offset);
        }

        @Override
        public void extentData(final int index, final long offset, final ByteBuffer piece) throws IOException
        {
            disk.write(index, offset, piece);
        }
    }

    /**
     * A base image written into the RAM image and the disk image as it arrives (pages, then the disk's extents);
     * its length and CRC are checked at commit. It has no device state.
     */
    private final class DirectBase extends Applier
    {
        private final long id;
        private final CheckpointReader reader;

        DirectBase(final long id, final long size)
        {
            super(null, null, null);
            this.id = id;
            this.reader = new CheckpointReader(size, "vm " + vm + ": base image " + id, this);
        }

        @Override
        public void header(final CheckpointFormat.Header header, final long pages) throws IOException
        {
            ram = mapRam(header.ramBytes());
            // a base (FULL) starts every disk empty; a live round after it (BASE alone) adds to what is there
            disk = openDisks(header, header.full(), id);
        }

        void finish() throws IOException
        {
            reader.finish();
            for (final MappedByteBuffer m : ram)
            {
                m.force();
            }
            close();
        }

        void close() throws IOException
        {
            if (disk != null)
            {
                disk.close(); // not synced: see apply
                disk = null;
            }
        }
    }

    private static void writeFully(final FileChannel ch, final ByteBuffer b, final long at) throws IOException
    {
        for (long p = at; b.hasRemaining(); )
        {
            p += ch.write(b, p);
        }
    }

    /** The disks one apply writes, each opened for it; closing them ends the apply's writes (a qcow2 disk flushes). */
    private static final class DiskWriters implements AutoCloseable
    {
        private final StandbyDisk.Writer[] writers;

        DiskWriters(final StandbyDisk.Writer[] writers)
        {
            this.writers = writers;
        }

        void write(final int index, final long offset, final ByteBuffer piece) throws IOException
        {
            writers[index].write(offset, piece);
        }

        @Override
        public void close() throws IOException
        {
            IOException first = null;
            for (final StandbyDisk.Writer w : writers)
            {
                try
                {
                    if (w != null)
                    {
                        w.close();
                    }
                }
                catch (final IOException ex)
                {
                    first = first == null ? ex : first;
                }
            }
            if (first != null)
            {
                throw first;
            }
        }
    }

    /**
     * The disks, checked against the checkpoint's disk table and opened for writing, or null when it carries none.
     * {@code zeroFirst}: a base; each disk starts from an empty image before the primary's extents arrive.
     */
    private DiskWriters openDisks(final CheckpointFormat.Header header, final boolean zeroFirst, final long id)
        throws IOException
    {
        if (!checkDisks(header, id))
        {
            return null;
        }
        final StandbyDisk.Writer[] w = new StandbyDisk.Writer[disks.size()];
        final DiskWriters all = new DiskWriters(w);
        try
        {
            for (int i = 0; i < w.length; i++)
            {
                w[i] = disks.get(i).open(header.diskBytes(i), zeroFirst);
            }
            return all;
        }
        catch (final IOException | RuntimeException ex)
        {
            try
            {
                all.close();
            }
            catch (final IOException suppressed)
            {
                ex.addSuppressed(suppressed);
            }
            throw ex;
        }
    }

    /**
     * Whether checkpoint {@code id} has disks to write here; refuses, naming the file and what is wrong, a missing
     * image, one of another size, another number of disks, or disks on one side only.
     */
    private boolean checkDisks(final CheckpointFormat.Header header, final long id) throws IOException
    {
        if (header.disks() == 0)
        {
            if (!disks.isEmpty() && diskRequired)
            {
                throw new IOException("vm " + vm + ": checkpoint " + id + " carries no disk, but disk image " +
                    disks.get(0).image() + " is configured here; the primary does not replicate the disk " +
                    "(disk.replicate: false there?)");
            }
            return false;
        }
        if (disks.size() != header.disks())
        {
            throw new IOException("vm " + vm + ": the primary replicates " + header.disks() + " disk(s) but " +
                (disks.isEmpty() ? "no disk is" : disks.size() + " are") + " configured for this VM here (vms[].disks)");
        }
        for (int i = 0; i < disks.size(); i++)
        {
            disks.get(i).check(header.diskBytes(i), id);
        }
        return true;
    }

    @Override
    public void commit(final long checkpointId) throws IOException
    {
        if (base != null && checkpointId == stagingId)
        {
            base.finish();
            base = null;
            stagingId = -1;
            final Path idTmp = dir.resolve("committed.tmp");
            Files.writeString(idTmp, checkpointId + " base", StandardCharsets.US_ASCII);
            Files.move(idTmp, dir.resolve("committed"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            lastCommitted = checkpointId;
            resumable = false;
            LOG.info("vm={} base image {} in place; resumable after the next checkpoint", vm, checkpointId);
            return;
        }
        if (checkpointId != stagingId || staging == null || staging.size() != stagingSize)
        {
            throw new IOException("vm " + vm + ": commit of checkpoint " + checkpointId + " but staging holds " +
                stagingId + " with " + (staging == null ? 0 : staging.size()) + " of " + stagingSize + " bytes");
        }
        staging.force(false);
        staging.close();
        staging = null;
        // the id travels with the redo log so recovery knows what it commits
        Files.writeString(dir.resolve("pending.id"), Long.toString(checkpointId), StandardCharsets.US_ASCII);
        Files.move(dir.resolve("staging.ckpt"), pending(), StandardCopyOption.ATOMIC_MOVE);
        stagingId = -1;
        apply(checkpointId);
    }

    /** The size and file (inode) whose blocks {@link #reserve} took in this process, or null. */
    private volatile String reserved;

    /** The RAM image sized to {@code ramBytes} and mapped read-write in 1 GiB chunks (a page never straddles two). */
    private MappedByteBuffer[] mapRam(final long ramBytes) throws IOException
    {
        try (FileChannel f = FileChannel.open(ramFile(), StandardOpenOption.CREATE, StandardOpenOption.READ,
            StandardOpenOption.WRITE))
        {
            if (f.size() != ramBytes)
            {
                f.truncate(ramBytes);
            }
            final Object file = Files.readAttributes(ramFile(), java.nio.file.attribute.BasicFileAttributes.class).fileKey();
            if (!(ramBytes + " " + file).equals(reserved))
            {
                // once per file and size, not per commit: fallocate of an allocated tmpfs file still visits every
                // page (~140 ms at 4 GiB, which a strict checkpoint's commit put inside the pause)
                reserve(ramFile(), ramBytes);
                reserved = ramBytes + " " + file;
            }
            final MappedByteBuffer[] ram = new MappedByteBuffer[(int)((ramBytes + RAM_CHUNK - 1) / RAM_CHUNK)];
            for (int i = 0; i < ram.length; i++)
            {
                ram[i] = f.map(FileChannel.MapMode.READ_WRITE, i * RAM_CHUNK, Math.min(RAM_CHUNK, ramBytes - i * RAM_CHUNK));
            }
            return ram;
        }
    }

    /**
     * Reserves all of the RAM image's blocks now: pages are written into it through a mapping, where a full file
     * system (tmpfs shared with other things) would be a SIGBUS in the middle of applying a checkpoint. So the space
     * is taken once, when the image is made, and a lack of it is a clear error then.
     */
    private void reserve(final Path file, final long bytes) throws IOException
    {
        final int fd = LibC.open(file.toString(), LibC.O_RDWR | LibC.O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException("vm " + vm + ": cannot open " + file + ": " + LibC.lastError());
        }
        try
        {
            if (LibC.fallocate(fd, 0, 0, bytes) != 0)
            {
                throw new IOException("vm " + vm + ": the standby image's RAM file " + file + " cannot reserve its " +
                    bytes + " bytes (" + LibC.lastError() + "; " + Files.getFileStore(file).getUsableSpace() +
                    " bytes free there)");
            }
        }
        finally
        {
            LibC.close(fd);
        }
    }

    private static void putPage(final MappedByteBuffer[] ram, final long page, final ByteBuffer src, final int offset)
    {
        final long at = page * CheckpointFormat.PAGE;
        ram[(int)(at / RAM_CHUNK)].put((int)(at % RAM_CHUNK), src, offset, CheckpointFormat.PAGE);
    }

    private long readPendingId() throws IOException
    {
        return Long.parseLong(Files.readString(dir.resolve("pending.id")).trim());
    }

    /**
     * Applies pending.ckpt to the image and makes it the committed checkpoint. Idempotent (pages and extents are
     * absolute). Verifies the whole checkpoint first, then streams it again into 1 GiB mappings of the RAM file,
     * the disk image and a new device-state file, so none of it needs to fit one buffer. The disk is not fsynced:
     * it is as durable as the RAM image it goes with (tmpfs). An agent crash keeps both (page cache) and the redo
     * log finishes the commit; a host crash loses the RAM image, and the next session resynchronises the disk.
     */
    private void apply(final long checkpointId) throws IOException
    {
        final String what = "vm " + vm + " checkpoint " + checkpointId;
        final CheckpointFormat.Header h;
        final Path devTmp = dir.resolve("device.state.tmp");
        try (FileChannel p = FileChannel.open(pending(), StandardOpenOption.READ))
        {
            h = CheckpointReader.verify(p, what);
            if (!h.full() && !Files.exists(ramFile()))
            {
                throw new IOException("vm " + vm + ": checkpoint " + checkpointId +
                    " is incremental but there is no base image in " + dir);
            }
            final MappedByteBuffer[] r = mapRam(h.ramBytes());
            try (DiskWriters d = openDisks(h, h.base() && h.full(), checkpointId);
                 FileChannel dev = FileChannel.open(devTmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                     StandardOpenOption.TRUNCATE_EXISTING))
            {
                CheckpointReader.read(p, what, new Applier(r, d, dev));
                for (final MappedByteBuffer m : r)
                {
                    m.force();
                }
                dev.force(false);
            }
        }
        if (h.base())
        {
            Files.deleteIfExists(devTmp);
        }
        else
        {
            Files.move(devTmp, deviceStateFile(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        final Path idTmp = dir.resolve("committed.tmp");
        Files.writeString(idTmp, checkpointId + (h.base() ? " base" : ""), StandardCharsets.US_ASCII);
        Files.move(idTmp, dir.resolve("committed"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        Files.deleteIfExists(pending());
        Files.deleteIfExists(dir.resolve("pending.id"));
        lastCommitted = checkpointId;
        resumable = !h.base();
    }

    /** Tells the activation once the primary has been answered; kept out of {@link #apply(long)} so recovery stays side-effect free. */
    @Override
    public void loaded(final long checkpointId)
    {
        activation.loaded(this, checkpointId);
    }

    @Override
    public void suspendRunning(final long checkpointId) throws IOException
    {
        activation.suspendRunning(this, checkpointId);
    }

    @Override
    public void resumeRunning(final long checkpointId) throws IOException
    {
        activation.resumeRunning(this, checkpointId);
    }

    @Override
    public void discard(final long checkpointId)
    {
        try
        {
            if (staging != null)
            {
                staging.close();
            }
            staging = null;
            if (base != null)
            {
                base.close();
            }
            base = null; // pages already written stay; the image was marked not resumable before the first
            stagingId = -1;
            Files.deleteIfExists(dir.resolve("staging.ckpt"));
        }
        catch (final IOException ex)
        {
            LOG.warn("vm={} could not discard staged checkpoint {}: {}", vm, checkpointId, ex.toString());
        }
    }

    @Override
    public void activate(final long checkpointId) throws Exception
    {
        releaseDisks();
        activation.activate(this, checkpointId);
    }
}
