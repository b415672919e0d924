package dev.colod.buffer;

import dev.colod.core.InvalidSettingException;

/**
 * Per-NIC bounds of held output, with defaults (the only place they are declared), validated once in
 * {@link #conclude()}, which names a refused field by its YAML key. For the NFQUEUE backend {@code max-frames} is
 * the kernel queue's length.
 */
public final class BufferLimits
{
    /** What happens to a guest frame that arrives when the buffer is at its limit. */
    public enum Policy
    {
        /** Drop the arriving frame, counted as dropped (limit-frames / limit-bytes): a full NIC queue. */
        DROP,
        /**
         * Stop reading the guest's frames until a release frees room: they wait in the kernel's queue of the
         * agent tap (txqueuelen), where the kernel drops once that is full too. Nothing leaves unreleased.
         */
        BACKPRESSURE
    }

    private int maxFrames = 16_384;
    private long maxBytes = 16L << 20;
    private int maxFrameBytes = 9_216;
    private int highWaterPercent = 75;
    private Policy policy = Policy.DROP;

    public BufferLimits conclude()
    {
        check(maxFrames > 0, "max-frames", "must be > 0, was " + maxFrames);
        check(maxFrameBytes >= 64 && maxFrameBytes <= 65_535, "max-frame-bytes", "must be 64..65535, was " + maxFrameBytes);
        check(maxBytes >= maxFrameBytes && maxBytes <= (1L << 30), "max-bytes",
            "must be " + maxFrameBytes + " (max-frame-bytes)..1073741824, was " + maxBytes);
        check(highWaterPercent > 0 && highWaterPercent <= 100, "high-water-percent", "must be 1..100, was " + highWaterPercent);
        check(policy != null, "policy", "must be drop or backpressure");
        return this;
    }

    private static void check(final boolean ok, final String field, final String why)
    {
        InvalidSettingException.require(ok, field, why);
    }

    public int maxFrames() { return maxFrames; }
    public long maxBytes() { return maxBytes; }
    public int maxFrameBytes() { return maxFrameBytes; }
    public int highWaterPercent() { return highWaterPercent; }
    public Policy policy() { return policy; }

    public BufferLimits maxFrames(final int v) { maxFrames = v; return this; }
    public BufferLimits maxBytes(final long v) { maxBytes = v; return this; }
    public BufferLimits maxFrameBytes(final int v) { maxFrameBytes = v; return this; }
    public BufferLimits highWaterPercent(final int v) { highWaterPercent = v; return this; }
    public BufferLimits policy(final Policy v) { policy = v; return this; }
}
