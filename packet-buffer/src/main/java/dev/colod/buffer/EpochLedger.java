package dev.colod.buffer;

import dev.colod.buffer.hybrid.Comparer;
import dev.colod.buffer.hybrid.InboundSink;
import dev.colod.buffer.hybrid.PrimaryMirror;
import dev.colod.buffer.hybrid.TcpRewriter;
import dev.colod.core.spi.OutputCommit;
import io.netty.channel.IoEventLoop;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * The output-commit bookkeeping of one NIC, shared by every backend: the mode (pass-through, hold, fenced), the
 * ring of sealed epochs with the backend's mark, frame and byte counts and first-frame time of each, every
 * counter, the high-water mark that asks for an early checkpoint, and the handover of engine calls onto the
 * NIC's loop. The {@link Backend} only holds frames and lets them go.
 * <p>
 * Threads: the engine's session thread calls the {@link OutputCommit} methods (handed over to the loop);
 * the backend calls {@link #held}, {@link #passed}, {@link #dropped}, {@link #inbound} and {@link #stalled} on
 * the loop; anyone may read {@link #stats()}, {@link #mode()} and {@link #wantsCheckpoint()}: counters are
 * written on the loop only and published through volatile fields, epochs as an immutable list.
 */
public final class EpochLedger implements FrameLedger, OutputCommit, AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(EpochLedger.class);
    /** One checkpoint at a time keeps this at 1 or 2; more means releases stopped coming. */
    private static final int MAX_SEALED = 1024;

    private final String nic;
    private final NicLoop loop;
    private final BufferLimits limits;
    private Backend backend;
    private HeldRecord record;

    private final long[] sealedEpoch = new long[MAX_SEALED];
    private final long[] sealedMark = new long[MAX_SEALED];
    private final long[] sealedFrames = new long[MAX_SEALED];
    private final long[] sealedBytes = new long[MAX_SEALED];
    private final long[] sealedFirstNanos = new long[MAX_SEALED];
    private int sealedHead;
    private int sealedCount;
    private long openFrames;
    private long openBytes;
    private long openFirstNanos;
    private boolean highWaterSignalled;

    private volatile Mode mode = Mode.PASS_THROUGH;
    private volatile boolean wantsCheckpoint;
    /** The open epoch holds a frame (the output trigger's signal); written on the loop. */
    private volatile boolean openHeld;
    private volatile Runnable onOpenOutput = () -> { };
    private volatile long heldFrames;
    private volatile long heldBytes;
    private volatile long oldestNanos;
    private volatile long releasedFrames;
    private volatile long releasedBytes;
    private volatile long passedFrames;
    private volatile long inboundFrames;
    private volatile long inboundBytes;
    private volatile long backpressureStalls;
    private volatile long earlyCheckpointRequests;
    private volatile long lastReleaseNanos;
    private volatile long lastReleaseFrames;
    private final AtomicLongArray dropped = new AtomicLongArray(Drop.values().length);
    private volatile List<NicStats.EpochStats> epochView = List.of();
    /** Hybrid mode: the comparison of this NIC's output and where inbound frames are copied (loop only); null otherwise. */
    private Comparer comparer;
    private InboundSink inboundSink;
    private int nicIndex;
    private volatile Comparer.Cause comparisonWants;
    private volatile Comparer comparerView;
    /** After a hybrid failover: the running copy's sequence rewriter (loop only); null otherwise. */
    private TcpRewriter rewriter;
    private byte[] scratch = new byte[2048];

    private EpochLedger(final String nic, final NicLoop loop, final BufferLimits limits)
    {
        this.nic = nic;
        this.loop = loop;
        this.limits = limits;
    }

    /** A ledger for NIC {@code nic} on {@code eventLoop} with the backend {@code factory} opens; passes frames until {@link #hold}. */
    public static EpochLedger open(final String nic, final IoEventLoop eventLoop, final BufferLimits limits,
        final Backend.Factory factory) throws IOException
    {
        return open(nic, eventLoop, limits, factory, Mode.PASS_THROUGH);
    }

    /**
     * As above, starting in {@code initial}: {@link Mode#HOLD} for a VM that may not let output out before its
     * protection is settled (an adopted VM whose secondary may have taken over meanwhile).
     */
    public static EpochLedger open(final String nic, final IoEventLoop eventLoop, final BufferLimits limits,
        final Backend.Factory factory, final Mode initial) throws IOException
    {
        return open(nic, eventLoop, limits, factory, initial, null);
    }

    /**
     * As above, keeping how much is held in {@code record} (null: nowhere), so that an agent that follows a
     * crash of this one can count what died with it.
     */
    public static EpochLedger open(final String nic, final IoEventLoop eventLoop, final BufferLimits limits,
        final Backend.Factory factory, final Mode initial, final HeldRecord record) throws IOException
    {
        final EpochLedger ledger = new EpochLedger(nic, new NicLoop(eventLoop, nic), limits);
        ledger.mode = initial;
        ledger.record = record;
        ledger.backend = factory.open(ledger);
        return ledger;
    }

    /**
     * Counts {@code frames} that an earlier agent of this NIC lost when it crashed: those it held (never
     * released: they may belong to a checkpoint the secondary never acknowledged) and those the guest sent while
     * no agent ran (the kernel dropped them).
     */
    public void lostInAgentRestart(final long frames)
    {
        dropped.addAndGet(Drop.AGENT_RESTART.ordinal(), frames);
    }

    @Override
    public String name()
    {
        return nic;
    }

    /** The NIC's loop, for the backend's descriptors. */
    @Override
    public NicLoop loop()
    {
        return loop;
    }

    @Override
    public BufferLimits limits()
    {
        return limits;
    }

    @Override
    public Mode mode()
    {
        return mode;
    }

    /** The backend, for benchmarks and diagnostics. */
    public Backend backend()
    {
        return backend;
    }

    // ---- OutputCommit: from the engine's thread, handed over to the loop ----

    @Override
    public void hold(final long firstEpoch)
    {
        loop.call(() -> mode = Mode.HOLD);
    }

    /**
     * Synchronous: when this returns, every frame held so far is in {@code epoch} and anything later in the next
     * — required in speculative mode, where the VM resumes right after.
     */
    @Override
    public void seal(final long epoch)
    {
        loop.call(() ->
        {
            if (sealedCount == MAX_SEALED)
            {
                // cannot happen with the protocol's one transaction at a time; refuse loudly rather than mix epochs
                throw new IllegalStateException("nic " + nic + ": more than " + MAX_SEALED + " unreleased epochs");
            }
            final long mark = backend.mark(); // may take in frames already delivered: they are this epoch's
            final int i = (sealedHead + sealedCount) % MAX_SEALED;
            sealedEpoch[i] = epoch;
            sealedMark[i] = mark;
            sealedFrames[i] = openFrames;
            sealedBytes[i] = openBytes;
            sealedFirstNanos[i] = openFirstNanos;
            sealedCount++;
            openFrames = 0;
            openBytes = 0;
            openFirstNanos = 0;
            openHeld = false;
            highWaterSignalled = false;
            wantsCheckpoint = false;
            comparisonWants = null;
            publishEpochs();
            if (comparer != null)
            {
                comparer.sealed(epoch);
                inboundSink.era(nicIndex, epoch);
            }
        });
    }

    /** Asynchronous; releases keep the order of calls because the loop runs tasks in order. */
    @Override
    public void release(final long epoch)
    {
        loop.post(() ->
        {
            final long startNs = System.nanoTime();
            long frames = 0;
            long bytes = 0;
            long mark = -1;
            while (sealedCount > 0 && sealedEpoch[sealedHead] <= epoch)
            {
                frames += sealedFrames[sealedHead];
                bytes += sealedBytes[sealedHead];
                mark = sealedMark[sealedHead];
                sealedHead = (sealedHead + 1) % MAX_SEALED;
                sealedCount--;
            }
            if (frames > 0)
            {
                letGo(mark, frames, bytes);
                lastReleaseNanos = System.nanoTime() - startNs;
                lastReleaseFrames = frames;
            }
            publishEpochs();
            if (comparer != null)
            {
                comparer.released();
            }
        });
    }

    /** Synchronous: everything held leaves, in order, and later frames pass unheld. */
    @Override
    public void passThrough(final String reason)
    {
        loop.call(() ->
        {
            final long mark = backend.mark();
            final long frames = heldFrames;
            if (frames > 0)
            {
                letGo(mark, frames, heldBytes);
            }
            clear();
            mode = Mode.PASS_THROUGH;
        });
    }

    /** Synchronous: everything held is dropped, counted, and so is every later frame. */
    @Override
    public void fence(final String reason)
    {
        loop.call(() ->
        {
            final long mark = backend.mark();
            final long frames = heldFrames;
            if (frames > 0)
            {
                backend.drop(mark);
                dropped.addAndGet(Drop.FENCED.ordinal(), frames);
            }
            clear();
            mode = Mode.FENCED;
        });
    }

    @Override
    public boolean wantsCheckpoint()
    {
        return wantsCheckpoint;
    }

    @Override
    public boolean holdsOpenOutput()
    {
        return openHeld;
    }

    @Override
    public void onOpenOutput(final Runnable wake)
    {
        onOpenOutput = wake;
    }

    private void letGo(final long mark, final long frames, final long bytes)
    {
        letOut(backend.letGo(mark), frames, bytes);
    }

    /** {@code frames} held frames of {@code bytes} left, {@code refused} of them refused by the kernel: counted. */
    private void letOut(final int refused, final long frames, final long bytes)
    {
        releasedFrames += frames - refused;
        releasedBytes += bytes;
        dropped.addAndGet(Drop.WRITE_ERROR.ordinal(), refused);
        heldFrames -= frames;
        heldBytes -= bytes;
        oldestNanos = oldestHeld();
        recordHeld();
    }

    private void recordHeld()
    {
        if (record != null)
        {
            record.held(heldFrames, heldBytes);
        }
    }

    private void clear()
    {
        sealedCount = 0;
        openFrames = 0;
        openBytes = 0;
        openFirstNanos = 0;
        openHeld = false;
        heldFrames = 0;
        heldBytes = 0;
        oldestNanos = 0;
        recordHeld();
        highWaterSignalled = false;
        wantsCheckpoint = false;
        comparisonWants = null;
        publishEpochs();
        if (comparer != null)
        {
            comparer.detached();
        }
    }

    private long oldestHeld()
    {
        for (int k = 0; k < sealedCount; k++)
        {
            final int i = (sealedHead + k) % MAX_SEALED;
            if (sealedFrames[i] > 0)
            {
                return sealedFirstNanos[i];
            }
        }
        return openFrames > 0 ? openFirstNanos : 0;
    }

    // ---- hybrid mode ----

    /**
     * Hybrid mode: compare this NIC's output with the secondary's ({@code releaseMatched}: let matched frames out
     * before their checkpoint; {@code dateToleranceMs}: how far apart the guests' HTTP Date values may be, 0: byte
     * for byte) and copy what arrives for the guest to {@code sink} as NIC {@code index}.
     */
    public void compareWith(final int index, final InboundSink sink, final long timeoutNs, final boolean releaseMatched,
        final long dateToleranceMs)
    {
        loop.call(() ->
        {
            nicIndex = index;
            inboundSink = sink;
            comparer = new Comparer(new Comparer.Ledger()
            {
                @Override
                public boolean canReleaseOpen()
                {
                    return sealedCount == 0 && mode == Mode.HOLD;
                }

                @Override
                public void releaseOne(final long endMark, final int bytes)
                {
                    openFrames--;
                    openBytes -= bytes;
                    if (openFrames == 0)
                    {
                        openHeld = false;
                    }
                    letOut(backend.letGoOne(endMark - 1), 1, bytes);
                }

                @Override
                public void releaseSplit(final long endMark, final int bytes, final byte[] first, final byte[] rest)
                {
                    final int refused = backend.letGoSplit(endMark - 1, first, rest);
                    releasedFrames += 1 - refused;
                    releasedBytes += first.length;
                    dropped.addAndGet(Drop.WRITE_ERROR.ordinal(), refused);
                    heldBytes -= bytes - rest.length;
                    openBytes -= bytes - rest.length;
                    recordHeld();
                }

                @Override
                public void wantCheckpoint(final Comparer.Cause cause)
                {
                    comparisonWants = cause;
                    onOpenOutput.run();
                }

                @Override
                public void schedule(final Runnable r, final long delayNs)
                {
                    loop.schedule(r, delayNs);
                }
            }, timeoutNs, releaseMatched, dateToleranceMs);
            comparerView = comparer;
        });
    }

    /** Runs {@code action} on the loop with this NIC's comparer, if any; a fault in it asks for a checkpoint instead. */
    private void onLoopComparing(final Consumer<Comparer> action)
    {
        loop.post(() ->
        {
            if (comparer != null)
            {
                try
                {
                    action.accept(comparer);
                }
                catch (final RuntimeException ex)
                {
                    comparer.failed(ex);
                }
            }
        });
    }

    /** Where the frames channel hands this NIC's digests: onto the loop, in order. */
    public PrimaryMirror.NicSide mirrorSide()
    {
        return new PrimaryMirror.NicSide()
        {
            @Override
            public void secondaryEra(final long era, final long nowNs)
            {
                onLoopComparing(c -> c.secondaryEra(era, nowNs));
            }

            @Override
            public void digest(final long era, final byte[] body, final long nowNs)
            {
                onLoopComparing(c -> c.digest(era, body, nowNs));
            }

            @Override
            public void tcp(final long era, final byte[] body, final int length, final int window, final long nowNs)
            {
                onLoopComparing(c -> c.tcp(era, body, length, window, nowNs));
            }
        };
    }

    /** Why comparison asks for a checkpoint now (cleared when one seals the open epoch), or null. */
    @Override
    public String comparisonWants()
    {
        final Comparer.Cause c = comparisonWants;
        return c == null ? null : c.label();
    }

    /** What comparison did on this NIC; {@link Comparer.Stats#NONE} outside hybrid mode. */
    public Comparer.Stats comparison()
    {
        final Comparer c = comparerView;
        return c == null ? Comparer.Stats.NONE : c.stats();
    }

    /**
     * After a hybrid failover to the running copy: shift sequence numbers of connections opened since the last
     * checkpoint (docs/ARCHITECTURE.md, "Hybrid mode", failover), both ways, for as long as this NIC lives.
     */
    public void rewriteWith(final TcpRewriter r)
    {
        loop.call(() -> rewriter = r);
    }

    @Override
    public void rewriteOutbound(final ByteBuffer buf, final int at, final int len)
    {
        final TcpRewriter r = rewriter;
        if (r != null)
        {
            rewrite(buf, at, len, true, r);
        }
    }

    @Override
    public void rewriteInbound(final ByteBuffer buf, final int at, final int len)
    {
        final TcpRewriter r = rewriter;
        if (r != null)
        {
            rewrite(buf, at, len, false, r);
        }
    }

    private void rewrite(final ByteBuffer buf, final int at, final int len, final boolean out, final TcpRewriter r)
    {
        if (scratch.length < len)
        {
            scratch = new byte[len];
        }
        buf.get(at, scratch, 0, len);
        if (out ? r.relayOutbound(scratch, 0, len) : r.inbound(scratch, 0, len))
        {
            buf.put(at, scratch, 0, len);
        }
    }

    // ---- from the backend, on the loop ----

    /** As {@link #held(int, long)}, with the frame ({@code len} bytes at {@code at} of {@code buf}) for comparison. */
    @Override
    public void heldFrame(final ByteBuffer buf, final int at, final int len, final long endMark, final long nowNs)
    {
        held(len, nowNs);
        if (comparer != null)
        {
            try
            {
                comparer.primary(buf, at, len, endMark, nowNs);
            }
            catch (final RuntimeException ex)
            {
                comparer.failed(ex);
            }
        }
    }

    /** As {@link #inbound(int)}, with the frame, copied to the secondary in hybrid mode. */
    @Override
    public void inboundFrame(final ByteBuffer buf, final int off, final int len)
    {
        inbound(len);
        if (inboundSink != null)
        {
            inboundSink.inbound(nicIndex, buf, off, len);
        }
        if (comparer != null)
        {
            try
            {
                comparer.inbound(buf, off, len);
            }
            catch (final RuntimeException ex)
            {
                comparer.failed(ex);
            }
        }
    }

    /** A guest frame of {@code bytes} (0 if unknown) is held in the open epoch. */
    @Override
    public void held(final int bytes, final long nowNs)
    {
        if (openFrames == 0)
        {
            openFirstNanos = nowNs;
            openHeld = true;
            onOpenOutput.run();
        }
        if (heldFrames == 0)
        {
            oldestNanos = nowNs;
        }
        openFrames++;
        openBytes += bytes;
        heldFrames = heldFrames + 1;
        heldBytes = heldBytes + bytes;
        recordHeld();
        if (!highWaterSignalled && (heldFrames * 100 >= (long)limits.maxFrames() * limits.highWaterPercent() ||
            heldBytes * 100 >= limits.maxBytes() * limits.highWaterPercent()))
        {
            highWaterSignalled = true;
            earlyCheckpointRequests++;
            wantsCheckpoint = true;
        }
    }

    /** A guest frame passed unheld (unprotected). */
    @Override
    public void passed()
    {
        passedFrames++;
    }

    /** A guest frame was dropped for {@code why}. */
    @Override
    public void dropped(final Drop why)
    {
        dropped.incrementAndGet(why.ordinal());
    }

    /** A frame of {@code bytes} went to the guest (inbound is never held). */
    @Override
    public void inbound(final int bytes)
    {
        inboundFrames++;
        inboundBytes += bytes;
    }

    /** Reading the guest stopped at the limit (backpressure policy). */
    @Override
    public void stalled()
    {
        backpressureStalls++;
    }

    private void publishEpochs()
    {
        final List<NicStats.EpochStats> view = new ArrayList<>(sealedCount);
        for (int k = 0; k < sealedCount; k++)
        {
            final int i = (sealedHead + k) % MAX_SEALED;
            view.add(new NicStats.EpochStats(sealedEpoch[i], sealedFrames[i], sealedBytes[i]));
        }
        epochView = List.copyOf(view);
    }

    /** How long the last non-empty release took on the loop, and how many frames it let out. */
    public long lastReleaseNanos()
    {
        return lastReleaseNanos;
    }

    public long lastReleaseFrames()
    {
        return lastReleaseFrames;
    }

    /** Everything counted, as seen from any thread. */
    public NicStats stats()
    {
        final long held = heldFrames;
        final long heldB = heldBytes;
        final long oldest = oldestNanos;
        final Backend.KernelDrops k = backend.kernelDrops();
        final Backend.KernelInbound in = backend.kernelInbound();
        final NicStats.Builder b = NicStats.of(nic, mode.label())
            .held(held, heldB, held == 0 || oldest == 0 ? 0 : Math.max(0, System.nanoTime() - oldest))
            .epochs(NicStats.withOpenEpoch(epochView, held, heldB))
            .released(releasedFrames, releasedBytes)
            .passed(passedFrames)
            .inbound(inboundFrames + in.frames(), inboundBytes + in.bytes())
            .backpressureStalls(backpressureStalls)
            .earlyCheckpointRequests(earlyCheckpointRequests);
        for (final Drop why : Drop.values())
        {
            b.dropped(why, dropped.get(why.ordinal()));
        }
        // what only the kernel saw: a full queue counts as the frame limit, a failed send as a write error
        b.dropped(Drop.LIMIT_FRAMES, dropped.get(Drop.LIMIT_FRAMES.ordinal()) + k.queueFull());
        b.dropped(Drop.WRITE_ERROR, dropped.get(Drop.WRITE_ERROR.ordinal()) + k.failed());
        return b.build();
    }

    /** Closes the backend; held frames are not let out (that is {@link #passThrough}'s job). */
    @Override
    public void close()
    {
        if (heldFrames > 0)
        {
            LOG.info("nic={} closing with {} frames ({} bytes) held: not let out", nic, heldFrames, heldBytes);
        }
        backend.close();
        if (record != null)
        {
            try
            {
                record.close();
            }
            catch (final IOException ex)
            {
                LOG.warn("nic={} could not remove its held-frames record: {}", nic, ex.toString());
            }
        }
    }
}
