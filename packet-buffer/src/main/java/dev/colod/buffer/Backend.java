package dev.colod.buffer;

import java.io.IOException;

/**
 * How one output-commit backend holds a NIC's guest frames and lets them go: the only part that differs
 * between TAP (frames in this process), NFQUEUE (frames in the kernel's queue) and any later backend. The
 * {@link EpochLedger} keeps everything else (modes, epochs, counters, limits' high-water mark, the handover
 * onto the NIC's loop) and calls these methods on that loop only.
 * <p>
 * A backend reports every guest frame to its ledger as it arrives, through the narrow {@link FrameLedger}:
 * {@link FrameLedger#mode()} says whether to hold it ({@link FrameLedger#held}), pass it
 * ({@link FrameLedger#passed}) or drop it ({@link FrameLedger#dropped}). Positions ("marks") are the backend's own, increasing with each held frame.
 */
public interface Backend extends AutoCloseable
{
    /** Opens a backend that reports to {@code ledger}. */
    interface Factory
    {
        Backend open(FrameLedger ledger) throws IOException;
    }

    /** Kernel-side drops the backend can only read, not see happen (e.g. a full kernel queue). */
    record KernelDrops(long queueFull, long failed)
    {
        public static final KernelDrops NONE = new KernelDrops(0, 0);
    }

    /**
     * The position just after the last frame held so far. A backend may first take in frames the kernel has
     * already delivered to it, so that they count in the epoch being sealed.
     */
    long mark();

    /** Lets every held frame up to {@code mark} out, in order. Returns how many of them the kernel refused. */
    int letGo(long mark);

    /**
     * Lets the held frame at position {@code seq} (the mark before it) out now, ahead of older frames still held; it
     * does not leave again with them. Returns 1 if the kernel refused it, else 0. Hybrid mode's release by
     * comparison; only backends that hold frames in user space can.
     */
    default int letGoOne(final long seq)
    {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " lets held frames out only in order");
    }

    /**
     * Lets {@code first} out now, a frame cut from the held frame at position {@code seq}, which becomes {@code rest}
     * (no longer than it was) and stays held. Returns 1 if the kernel refused {@code first}, else 0. Hybrid mode.
     */
    default int letGoSplit(final long seq, final byte[] first, final byte[] rest)
    {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " cannot change held frames");
    }

    /** Drops every held frame up to {@code mark}; none of them may ever leave. */
    void drop(long mark);

    /** Frames and bytes the kernel took to the guest itself (never through the backend); read from any thread. */
    record KernelInbound(long frames, long bytes)
    {
        public static final KernelInbound NONE = new KernelInbound(0, 0);
    }

    /** Inbound frames only the kernel sees (a backend whose inbound path is in the kernel); read from any thread. */
    default KernelInbound kernelInbound()
    {
        return KernelInbound.NONE;
    }

    /** Drops seen only by the kernel; read from any thread. */
    default KernelDrops kernelDrops()
    {
        return KernelDrops.NONE;
    }

    /** Releases the backend's descriptors. Held frames are not let out. */
    @Override
    void close();
}
