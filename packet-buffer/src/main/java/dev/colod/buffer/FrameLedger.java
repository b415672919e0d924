package dev.colod.buffer;

import java.nio.ByteBuffer;

/**
 * What a {@link Backend} sees of its NIC's ledger: where it runs, its limits, whether to hold, pass or drop a
 * guest frame now, and where to count what it did. Called on the NIC's loop only ({@link #loop()}). The ledger
 * itself ({@link EpochLedger}) keeps epochs, marks and modes; a backend never drives them.
 */
public interface FrameLedger
{
    /** What happens to a guest frame now. */
    enum Mode
    {
        PASS_THROUGH, HOLD, FENCED;

        /** As {@code coloctl buffers} shows it. */
        public String label()
        {
            return name().toLowerCase().replace('_', '-');
        }
    }

    /** Why a guest frame was dropped, as counted in {@link NicStats}. */
    enum Drop
    {
        LIMIT_FRAMES, LIMIT_BYTES, OVERSIZE, FENCED, WRITE_ERROR,
        /** Held by an agent that crashed (never released), or sent by the guest while no agent ran. */
        AGENT_RESTART
    }

    /** The NIC (its VM tap's name). */
    String name();

    /** The loop every call runs on. */
    NicLoop loop();

    BufferLimits limits();

    Mode mode();

    /** A guest frame of {@code bytes} (0 if unknown) is held in the open epoch. */
    void held(int bytes, long nowNs);

    /** A guest frame passed unheld (unprotected). */
    void passed();

    /** A guest frame was dropped for {@code why}. */
    void dropped(Drop why);

    /** A frame of {@code bytes} went to the guest (inbound is never held). */
    void inbound(int bytes);

    /**
     * As {@link #held(int, long)} for a backend that has the frame's bytes ({@code len} at {@code at} of {@code buf};
     * {@code endMark} is the backend's mark right after it): hybrid mode compares them.
     */
    default void heldFrame(final ByteBuffer buf, final int at, final int len, final long endMark, final long nowNs)
    {
        held(len, nowNs);
    }

    /**
     * A frame the guest sent ({@code len} bytes at {@code at} of {@code buf}), before it is held or passed: rewritten
     * in place if this NIC rewrites (after a hybrid failover). Backends that have the bytes call it.
     */
    default void rewriteOutbound(final ByteBuffer buf, final int at, final int len)
    {
    }

    /** A frame for the guest, before it is written to it: rewritten in place if this NIC rewrites. */
    default void rewriteInbound(final ByteBuffer buf, final int at, final int len)
    {
    }

    /** As {@link #inbound(int)} for a backend that has the frame's bytes: hybrid mode copies them to the secondary. */
    default void inboundFrame(final ByteBuffer buf, final int off, final int len)
    {
        inbound(len);
    }

    /** Reading the guest stopped at the limit (backpressure policy). */
    void stalled();
}
