package dev.colod.agent.vm;

import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.checkpoint.CheckpointWriter;
import dev.colod.agent.disk.DiskSet;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSource;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.UnaryOperator;
import java.util.zip.CRC32C;

/**
 * The primary's VM as a checkpoint source: pauses QEMU over QMP, takes its device state (devices only, {@code
 * xen-save-devices-state}), and asks {@link WrittenPages} which
 * RAM pages the guest wrote since the last checkpoint (the kernel's write tracking, or a compare with a shadow
 * copy). The first checkpoint of a session carries every page, streamed straight from the RAM file while the
 * VM stays paused; later ones copy only the written pages, so the VM can resume before they are sent.
 * Memory beyond the guest's RAM: the written pages of one checkpoint (kernel tracking), plus a copy of RAM
 * (compare). RAM of any size: mapped in 1 GiB chunks.
 * <p>
 * Single-threaded: the checkpoint engine's session thread. Timing of each step is kept for metrics.
 */
public final class QemuStateSource implements VmStateSource, AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(QemuStateSource.class);
    private static final int PAGE = CheckpointFormat.PAGE;
    private static final int RECORD = CheckpointFormat.PAGE_RECORD;

    private final QemuProcess qemu;
    private final long ramBytes;
    private final GuestRam ram;
    private final long ramPageBytes;
    private final WrittenPages written;
    /** Where QEMU saves its device state at each checkpoint. */
    private final Path deviceFile;
    /**
     * The audit of write tracking: CRC32C of every page as the secondary has it, and a window of pages re-read at
     * each checkpoint; a page whose bytes changed but was not reported is a miss (counted, logged, and sent).
     */
    private final int[] pageCrcs;
    private final int auditPagesPerCheckpoint;
    private final CRC32C auditCrc = new CRC32C();
    /** The audit's own views of RAM's chunks (it runs on the helper thread only). */
    private ByteBuffer[] auditViews;
    private boolean crcsValid;
    private long auditCursor;
    /** Pages the audit re-read, and pages it found changed without having been reported. */
    private final AtomicLong auditedPages = new AtomicLong();
    private final AtomicLong auditMisses = new AtomicLong();
    /** Finds and copies written pages while QEMU saves its device state. */
    private final ExecutorService helper;
    private ByteBuffer pagesCopy = ByteBuffer.allocateDirect(1 << 20);
    private boolean full = true;

    /** Per-step time of every checkpoint, microseconds: what the pause is made of. */
    private final Histogram stopMicros = new ConcurrentHistogram(60_000_000L, 2);
    private final Histogram deviceMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Of the device state: QEMU's part, the {@code xen-save-devices-state} command. */
    private final Histogram deviceQemuMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Finding the written pages (PAGEMAP_SCAN, or the compare). */
    private final Histogram trackMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Copying the written pages out of guest RAM. */
    private final Histogram copyMicros = new ConcurrentHistogram(60_000_000L, 2);
    private final Histogram resumeMicros = new ConcurrentHistogram(60_000_000L, 2);
    private final Histogram dirtyPages = new ConcurrentHistogram(1L << 40, 2);

    /** Timing, microseconds, of the last capture (for its log line). */
    private volatile long lastStopMicros;
    private volatile long lastDeviceMicros;
    private volatile long lastTrackMicros;
    private volatile long lastCopyMicros;
    private volatile long lastResumeMicros;
    private volatile long lastDirtyPages;
    private volatile long lastDeviceBytes;

    /**
     * What the checkpoints so far cost, step by step: copies of the histograms (microseconds; written pages per
     * checkpoint), so a reader never sees one change under it.
     */
    public record Timings(Histogram stop, Histogram device, Histogram deviceQemu, Histogram tracking, Histogram copy,
                          Histogram resume, Histogram dirtyPages)
    {
    }

    /** A snapshot of the per-step timings. */
    public Timings timings()
    {
        return new Timings(stopMicros.copy(), deviceMicros.copy(), deviceQemuMicros.copy(), trackMicros.copy(),
            copyMicros.copy(), resumeMicros.copy(), dirtyPages.copy());
    }

    /** Pages the write-tracking audit re-read so far. */
    public long auditedPages()
    {
        return auditedPages.get();
    }

    /** Pages the audit found changed without having been reported (each was sent then). */
    public long auditMisses()
    {
        return auditMisses.get();
    }

    /** The guest's disk writes, or null (no disk, or its replication is off). */
    private final DiskSet disk;
    private static final long DISK_POLL_MS = 20;
    private volatile long earlyCheckpointDiskBytes = 16L << 20;
    private long lastDiskPollNs;
    /**
     * The write governor (with a disk): a guest that writes more than twice the early-checkpoint size ahead of the
     * last capture — which happens while a speculative checkpoint is still on the link, when the next one cannot start
     * yet — has its disk writes held back by QEMU's throttling until the next capture, so one checkpoint's disk part
     * stays bounded (a pause and a transfer that grow with how far the guest ran ahead) and the guest writes at the
     * link's pace. docs/ARCHITECTURE.md, "Disk".
     */
    private final ScheduledExecutorService governor;
    /** Between resume and the next pause: the governor looks only then. */
    private volatile boolean guestRuns;
    private volatile boolean throttled;
    private volatile String governorError;
    /** Orders the governor's throttle against lifting it (resume, end of session): none is left behind. */
    private final Object governLock = new Object();
    private volatile long throttledSinceNs;
    /** While throttled, what a disk may still take (bytes/s): a trickle, so QEMU's queue moves but the guest waits. */
    static final long THROTTLED_BPS = 1L << 20;
    public final AtomicLong diskThrottles = new AtomicLong();
    public final AtomicLong diskThrottledMicros = new AtomicLong();

    /** A source whose written pages come from {@code tracking}, with no audit. */
    public QemuStateSource(final QemuProcess qemu, final Tracking tracking) throws IOException
    {
        this(qemu, tracking, 0);
    }

    /**
     * A source whose written pages come from {@code tracking}; {@code auditPagesPerCheckpoint} pages (0: none)
     * are re-read at each checkpoint, in turn, to check that tracking reported every change.
     */
    public QemuStateSource(final QemuProcess qemu, final Tracking tracking, final int auditPagesPerCheckpoint)
        throws IOException
    {
        this(qemu, tracking, auditPagesPerCheckpoint, false);
    }

    /**
     * As above; {@code replicateDisk}: the VM's disks (it must have one) go with each checkpoint, their writes found
     * by {@link DiskSet}.
     */
    public QemuStateSource(final QemuProcess qemu, final Tracking tracking, final int auditPagesPerCheckpoint,
        final boolean replicateDisk) throws IOException
    {
        if (!qemu.sharedRam())
        {
            // its RAM file is the standby image it started from; reading it would checkpoint that, not the guest
            throw new IOException("vm " + qemu.spec().name() + ": QEMU pid " + qemu.pid() + " maps its RAM privately " +
                "(the running copy of hybrid mode that took over): colod cannot read the guest's RAM to checkpoint " +
                "it (it moves to a shared RAM file first: docs/ARCHITECTURE.md, \"Protecting it again\")");
        }
        this.qemu = qemu;
        this.ramBytes = qemu.spec().memoryBytes();
        this.ram = new GuestRam(qemu.ramFile(), ramBytes);
        this.ramPageBytes = HugePages.pageBytes(qemu.ramFile());
        this.written = tracking.open(qemu, ram);
        try
        {
            // after the write tracking, which may refuse (and write-tracking: auto then tries again with compare)
            this.disk = replicateDisk ? DiskSet.open(qemu) : null;
        }
        catch (final IOException | RuntimeException ex)
        {
            written.close();
            throw ex;
        }
        this.auditPagesPerCheckpoint = (int)Math.min(auditPagesPerCheckpoint, ram.pages());
        this.pageCrcs = auditPagesPerCheckpoint > 0 ? new int[(int)Math.min(Integer.MAX_VALUE - 8, ram.pages())] : null;
        this.deviceFile = qemu.runDir().resolve("device.state");
        this.helper = Executors.newSingleThreadExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-" + qemu.spec().name() + "-pages");
            t.setDaemon(true);
            return t;
        });
        this.governor = disk == null ? null : Executors.newSingleThreadScheduledExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-" + qemu.spec().name() + "-writes");
            t.setDaemon(true);
            return t;
        });
        if (governor != null)
        {
            governor.scheduleWithFixedDelay(this::governWrites, DISK_POLL_MS, DISK_POLL_MS, TimeUnit.MILLISECONDS);
        }
        LOG.info("vm={} written pages found by {}", qemu.spec().name(), written.method());
    }

    /** How written pages are found; {@link #KERNEL} needs QEMU started with {@link WriteTrackingPreload}. */
    public interface Tracking
    {
        Tracking KERNEL = (q, ram) -> KernelWriteTracker.attach(q.spec().name(), q.pid(),
            WriteTrackingPreload.statusFile(q.runDir()), ram.bytes());
        Tracking COMPARE = (q, ram) -> new ShadowCompare(ram);

        WrittenPages open(QemuProcess qemu, GuestRam ram) throws IOException;

        /** This tracking, each region it reports passed through {@code filter} first (for tests that audit it). */
        default Tracking filtered(final UnaryOperator<WrittenPages.Regions> filter)
        {
            final Tracking inner = this;
            return (q, ram) ->
            {
                final WrittenPages w = inner.open(q, ram);
                return new WrittenPages()
                {
                    @Override
                    public String method()
                    {
                        return w.method();
                    }

                    @Override
                    public void restart() throws IOException
                    {
                        w.restart();
                    }

                    @Override
                    public long collect(final Regions out) throws IOException
                    {
                        return w.collect(filter.apply(out));
                    }

                    @Override
                    public long lastTrackNanos()
                    {
                        return w.lastTrackNanos();
                    }

                    @Override
                    public void close()
                    {
                        w.close();
                    }
                };
            };
        }
    }

    /**
     * The page size of the guest's RAM: 4096, or the hugetlbfs page size (2 MiB) with {@code ram-page-size: 2m}, where
     * write tracking finds written pages in that unit and each is copied whole.
     */
    public long ramPageBytes()
    {
        return ramPageBytes;
    }

    /** "kernel" or "compare". */
    public String writeTracking()
    {
        return written.method();
    }

    @Override
    public void beginSession(final long firstCheckpointId)
    {
        full = true;
        roundsLeft = 0;
    }

    /**
     * All of RAM while the guest runs (kernel tracking restarts first, so every page written from here on is in the
     * next checkpoint); with compare tracking the shadow is refreshed first and the base is read from it, so the
     * next compare finds exactly what the secondary lacks. No device state (that needs a pause).
     */
    @Override
    public StateCapture liveBase(final long checkpointId) throws IOException
    {
        if (!full)
        {
            return null;
        }
        final long t0 = System.nanoTime();
        written.restart();
        full = false;
        lastTrackMicros = written.lastTrackNanos() / 1000;
        LOG.info("vm={} base image {}: {} MiB read live ({}; tracking restarted in {} us)", qemu.spec().name(),
            checkpointId, ramBytes >> 20, written.method(), (System.nanoTime() - t0) / 1000);
        final CheckpointWriter.PageSource pages = written instanceof ShadowCompare ? ((ShadowCompare)written)::copyShadowPage
            : ram::copyPage;
        final DiskSet.Base diskBase = disk == null ? null : disk.base();
        roundsLeft = MAX_LIVE_ROUNDS;
        return stream(true, true, ByteBuffer.allocate(0), ram.pages(), null, pages, false, DiskPart.of(disk, null, diskBase));
    }

    /** Live rounds after a base, at most; and the written size below which a round is the last. */
    static final int MAX_LIVE_ROUNDS = 4;
    static final long LAST_ROUND_PAGES = 4096; // 16 MiB
    private int roundsLeft;

    /**
     * The pages written since the base (or the last round) began, collected and copied while the guest runs (a
     * page written after it was collected is tracked again and goes in the next round or the first pause; its CRC
     * for the audit is what was copied, which is what the secondary gets). Rounds stop after
     * {@value #MAX_LIVE_ROUNDS}, or after one that carried fewer than {@value #LAST_ROUND_PAGES} pages. Disks are
     * left to the first paused checkpoint (the round carries their table, no extents): reading a running qcow2
     * image's clusters by its tables is not safe.
     */
    @Override
    public StateCapture liveRound(final long checkpointId) throws IOException
    {
        if (roundsLeft <= 0)
        {
            return null;
        }
        roundsLeft--;
        final long t0 = System.nanoTime();
        pagesCopy.clear();
        final long pages = written.collect(this::copyRegion);
        pagesCopy.flip();
        if (pages < LAST_ROUND_PAGES)
        {
            roundsLeft = 0;
        }
        LOG.info("vm={} live round {}: {} pages written meanwhile, collected and copied in {} ms{}", qemu.spec().name(),
            checkpointId, pages, (System.nanoTime() - t0) / 1_000_000, roundsLeft == 0 ? " (the last)" : "");
        final long records = pagesCopy.remaining() / RECORD;
        return stream(false, true, ByteBuffer.allocate(0), records, pagesCopy.asReadOnlyBuffer(), ram::copyPage, false,
            DiskPart.of(disk, disk == null ? null : new DiskSet.Captured(ByteBuffer.allocate(0), 0), null));
    }

    /** The governor's look: throttle the guest's writes once it ran more than twice the early size ahead. */
    private void governWrites()
    {
        final long early = earlyCheckpointDiskBytes;
        if (!guestRuns || throttled || early <= 0)
        {
            return;
        }
        try
        {
            final long ahead = disk.writtenSinceCapture();
            synchronized (governLock)
            {
                // looked at again under the lock: a session that ended meanwhile must not be left throttled
                if (ahead >= 2 * early && guestRuns)
                {
                    disk.throttleWrites(THROTTLED_BPS);
                    throttled = true;
                    throttledSinceNs = System.nanoTime();
                    diskThrottles.incrementAndGet();
                    LOG.debug("vm={} the guest wrote {} bytes since the last checkpoint: its disk writes wait for the next",
                        qemu.spec().name(), ahead);
                }
            }
        }
        catch (final IOException | RuntimeException ex)
        {
            // said once per different error: the governor keeps trying every poll; a QEMU that is gone is the
            // session's end to report (it stops the governor), not the governor's
            if (!qemu.qmp().isBroken() && qemu.isAlive() && !ex.toString().equals(governorError))
            {
                governorError = ex.toString();
                LOG.warn("vm={} write governor cannot look or throttle: {}", qemu.spec().name(), ex.toString());
            }
        }
    }

    /** After a capture, with the guest running again: its writes go at full speed into the next checkpoint. Under {@link #governLock}. */
    private void unthrottle()
    {
        if (!throttled)
        {
            return;
        }
        try
        {
            disk.throttleWrites(0);
        }
        catch (final IOException ex)
        {
            LOG.warn("vm={} could not lift the throttle of the guest's disk writes: {}", qemu.spec().name(), ex.toString());
            return; // tried again after the next capture
        }
        throttled = false;
        diskThrottledMicros.addAndGet((System.nanoTime() - throttledSinceNs) / 1000);
    }

    @Override
    public void endSession()
    {
        // unprotected from here: nothing would lift a throttle, and nothing needs one
        guestRuns = false;
        if (disk != null)
        {
            synchronized (governLock)
            {
                unthrottle();
            }
        }
    }

    @Override
    public void pause() throws IOException
    {
        guestRuns = false;
        final long t0 = System.nanoTime();
        qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        lastStopMicros = (System.nanoTime() - t0) / 1000;
        stopMicros.recordValue(lastStopMicros);
    }

    @Override
    public String lostCause()
    {
        return qemu.exited(2_000) ? "QEMU pid " + qemu.pid() + " exited" : null;
    }

    @Override
    public void resume() throws IOException
    {
        final long t0 = System.nanoTime();
        qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        lastResumeMicros = (System.nanoTime() - t0) / 1000;
        resumeMicros.recordValue(lastResumeMicros);
        if (disk != null)
        {
            disk.afterResume(); // the frozen bitmap of this checkpoint, now that the guest runs
            synchronized (governLock)
            {
                unthrottle();
                guestRuns = true;
            }
        }
    }

    @Override
    public StateCapture capture(final long checkpointId) throws IOException
    {
        final long t0 = System.nanoTime();
        final boolean wasFull = full;
        // QEMU serialises its devices while we find and copy the written pages: both need the VM paused, and
        // neither touches what the other reads, so the pause holds the longer of the two, not their sum
        // the disk first: its bitmap is frozen and its written extents copied before QEMU's device state is taken
        final DiskPart diskPart;
        if (disk == null)
        {
            diskPart = DiskPart.of(null, null, null);
        }
        else
        {
            diskPart = wasFull ? DiskPart.of(disk, null, disk.base()) : DiskPart.of(disk, disk.capturePaused(), null);
        }
        final Future<Long> collected = wasFull ? null : helper.submit(() ->
        {
            final long c0 = System.nanoTime();
            pagesCopy.clear();
            long n = written.collect(this::copyRegion);
            n += audit();
            pagesCopy.flip();
            lastCopyMicros = Math.max(0, (System.nanoTime() - c0 - written.lastTrackNanos()) / 1000);
            return n;
        });
        final ByteBuffer device;
        try
        {
            device = deviceState();
        }
        catch (final IOException | RuntimeException ex)
        {
            if (collected != null)
            {
                try
                {
                    awaitCollect(collected);
                }
                catch (final IOException also)
                {
                    ex.addSuppressed(also);
                }
            }
            throw ex;
        }
        final long t1 = System.nanoTime();
        lastDeviceMicros = (t1 - t0) / 1000;
        lastDeviceBytes = device.remaining();

        final long pages;
        if (wasFull)
        {
            written.restart(); // everything goes now; track writes from this pause on
            pages = ram.pages();
            lastCopyMicros = 0;
        }
        else
        {
            awaitCollect(collected);
            // what was copied, whatever a tracker reported: the header must announce exactly the records that follow
            pages = pagesCopy.remaining() / RECORD;
        }
        lastTrackMicros = written.lastTrackNanos() / 1000;
        full = false;
        lastDirtyPages = pages;
        deviceMicros.recordValue(lastDeviceMicros);
        trackMicros.recordValue(lastTrackMicros);
        copyMicros.recordValue(lastCopyMicros);
        dirtyPages.recordValue(pages);
        LOG.debug("vm={} checkpoint {}: device {} B in {} us, {} pages ({}) tracked in {} us, copied in {} us",
            qemu.spec().name(), checkpointId, lastDeviceBytes, lastDeviceMicros, pages, wasFull ? "full" : "written",
            lastTrackMicros, lastCopyMicros);

        return stream(wasFull, false, device, pages, wasFull ? null : pagesCopy.asReadOnlyBuffer(), ram::copyPage, wasFull,
            diskPart);
    }

    /**
     * A state stream: header, device state, page count, then either the copied records or every page read by
     * {@code reader} as it is written (their audit CRCs taken on the way), then the disk part and the CRC.
     */
    private StateCapture stream(final boolean full, final boolean base, final ByteBuffer device, final long pages,
        final ByteBuffer copied, final CheckpointWriter.PageSource reader, final boolean needsPausedVm,
        final DiskPart diskPart)
    {
        final CheckpointFormat.Header header = CheckpointFormat.Header.of(full, base, ramBytes, device.remaining(),
            diskPart.diskSizes());
        final long size = CheckpointFormat.size(device.remaining(), pages, diskPart.diskSizes().length,
            diskPart.streamBytes());
        return new StateCapture()
        {
            @Override
            public long sizeBytes()
            {
                return size;
            }

            @Override
            public boolean needsPausedVm()
            {
                return needsPausedVm;
            }

            @Override
            public void writeTo(final OutputStream out, final Progress progress) throws IOException
            {
                final CheckpointWriter w = new CheckpointWriter(out, size, progress).header(header, device, pages);
                if (copied != null)
                {
                    w.pageRecords(copied);
                }
                else
                {
                    final CRC32C pc = new CRC32C();
                    w.everyPage((p, dst, off) ->
                    {
                        reader.copyPage(p, dst, off);
                        if (pageCrcs != null)
                        {
                            pc.reset();
                            pc.update(dst, off, PAGE);
                            pageCrcs[(int)p] = (int)pc.getValue();
                        }
                    });
                    crcsValid = pageCrcs != null;
                }
                diskPart.writeTo(w);
                w.finish();
            }

            @Override
            public void close()
            {
            }
        };
    }

    /** The disk section of one checkpoint: copied extents (a pause), a whole disk read as it goes (a base), or none. */
    private record DiskPart(long[] diskSizes, long count, long streamBytes, ByteBuffer copied, DiskSet.Base base)
    {
        static DiskPart of(final DiskSet disk, final DiskSet.Captured captured, final DiskSet.Base base)
        {
            if (disk == null)
            {
                return new DiskPart(new long[0], 0, 0, null, null);
            }
            if (base != null)
            {
                return new DiskPart(disk.sizes(), base.count(), base.streamBytes(), null, base);
            }
            return new DiskPart(disk.sizes(), captured.count(), captured.records().remaining(), captured.records(), null);
        }

        void writeTo(final CheckpointWriter w) throws IOException
        {
            w.disk(count);
            if (copied != null)
            {
                w.extentRecords(copied);
            }
            else if (base != null)
            {
                base.stream(w::extentRecords);
            }
        }
    }

    /** Copies a run of written pages into {@link #pagesCopy} as (index, bytes) records, growing it if needed. */
    private void copyRegion(final long first, final long count)
    {
        final long need = count * RECORD;
        if (pagesCopy.remaining() < need)
        {
            // grows by doubling: the buffer ends up as large as the largest checkpoint's written pages
            final long cap = Math.max(pagesCopy.position() + need, pagesCopy.capacity() * 2L);
            if (cap > Integer.MAX_VALUE - 8)
            {
                throw new IllegalStateException("vm " + qemu.spec().name() + ": more than 2 GiB of pages written in one " +
                    "checkpoint; checkpoint more often");
            }
            final ByteBuffer bigger = ByteBuffer.allocateDirect((int)cap);
            pagesCopy.flip();
            bigger.put(pagesCopy);
            pagesCopy = bigger;
        }
        for (long p = first; p < first + count; p++)
        {
            pagesCopy.putLong(p);
            final int at = pagesCopy.position();
            ram.copyPage(p, pagesCopy);
            if (pageCrcs != null)
            {
                auditCrc.reset();
                auditCrc.update(pagesCopy.slice(at, PAGE));
                pageCrcs[(int)p] = (int)auditCrc.getValue();
            }
        }
    }

    /**
     * Re-reads the next window of pages (the VM is paused; this checkpoint's written pages are already copied, so
     * their CRCs are fresh): a page whose CRC differs from what the secondary has was written without being
     * reported. It is counted, logged and sent with this checkpoint. Returns the pages it added.
     */
    private long audit()
    {
        if (pageCrcs == null || !crcsValid)
        {
            return 0;
        }
        long missed = 0;
        if (auditViews == null)
        {
            auditViews = new ByteBuffer[ram.chunkCount()];
            for (int i = 0; i < auditViews.length; i++)
            {
                auditViews[i] = ram.chunk(i);
            }
        }
        for (int k = 0; k < auditPagesPerCheckpoint; k++)
        {
            final long p = auditCursor;
            auditCursor = (auditCursor + 1) % ram.pages();
            // straight from the mapping, no copy: the CRC reads the page where it is
            final long at = p * PAGE;
            final ByteBuffer v = auditViews[(int)(at / GuestRam.CHUNK)];
            final int off = (int)(at % GuestRam.CHUNK);
            v.limit(off + PAGE).position(off);
            auditCrc.reset();
            auditCrc.update(v);
            if ((int)auditCrc.getValue() != pageCrcs[(int)p])
            {
                missed++;
                LOG.error("vm={} WRITE TRACKING MISSED page {}: its bytes changed but {} did not report it; sending it now",
                    qemu.spec().name(), p, written.method());
                copyRegion(p, 1);
            }
        }
        auditedPages.addAndGet(auditPagesPerCheckpoint);
        auditMisses.addAndGet(missed);
        return missed;
    }

    /**
     * QEMU's device state, saved by {@code xen-save-devices-state} into a file of this VM's runtime directory: the
     * devices alone (no RAM, no configuration section), written on QEMU's main thread in one QMP command. A
     * {@code migrate} (x-ignore-shared) would carry the same devices but costs a migration thread, dirty logging
     * switched on and off, the ROM blocks' pages and a {@code query-migrate} (4.6 vs 1.1 ms for the test guest).
     * {@code live: false}: the VM is paused by us and resumes here, so QEMU must keep its disks active.
     */
    private ByteBuffer deviceState() throws IOException
    {
        Files.deleteIfExists(deviceFile);
        try
        {
            final long sentNs = System.nanoTime();
            qemu.qmp().execute("xen-save-devices-state", Map.of("filename", deviceFile.toString(), "live", false),
                QemuProcess.QMP_TIMEOUT_MS);
            deviceQemuMicros.recordValue((System.nanoTime() - sentNs) / 1000);
            return ByteBuffer.wrap(Files.readAllBytes(deviceFile));
        }
        finally
        {
            Files.deleteIfExists(deviceFile);
        }
    }

    private long awaitCollect(final Future<Long> f) throws IOException
    {
        try
        {
            return f.get();
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IOException("vm " + qemu.spec().name() + ": interrupted while finding written pages", ex);
        }
        catch (final ExecutionException ex)
        {
            final Throwable c = ex.getCause();
            throw c instanceof IOException ? (IOException)c
                : new IOException("vm " + qemu.spec().name() + ": finding written pages failed: " + c, c);
        }
    }

    /**
     * With a disk: true once the guest wrote {@link #earlyCheckpointDiskBytes} or more since the last checkpoint, so
     * that one checkpoint's disk copy (made while paused) stays bounded. Asks QEMU at most every
     * {@value #DISK_POLL_MS} ms.
     */
    @Override
    public boolean wantsCheckpoint()
    {
        if (disk == null || earlyCheckpointDiskBytes <= 0)
        {
            return false;
        }
        final long now = System.nanoTime();
        if (now - lastDiskPollNs < DISK_POLL_MS * 1_000_000L)
        {
            return false;
        }
        lastDiskPollNs = now;
        try
        {
            return disk.writtenSinceCapture() >= earlyCheckpointDiskBytes;
        }
        catch (final IOException ex)
        {
            return false; // the checkpoint itself will say what is wrong with QEMU
        }
    }

    /** Take a checkpoint early once this many bytes were written to the disk since the last one (0: never). */
    public QemuStateSource earlyCheckpointDiskBytes(final long bytes)
    {
        earlyCheckpointDiskBytes = bytes;
        return this;
    }

    /** The disks' write tracking, or null without disk replication. */
    public DiskSet disk()
    {
        return disk;
    }

    @Override
    public void close()
    {
        if (governor != null)
        {
            governor.shutdownNow();
        }
        if (disk != null)
        {
            disk.close();
        }
        helper.shutdownNow();
        written.close(); // mapped and direct buffers are released by the GC
    }
}
