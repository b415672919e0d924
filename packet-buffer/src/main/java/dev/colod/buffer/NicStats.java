package dev.colod.buffer;

import java.util.List;

/**
 * What one NIC's output-commit buffer holds and has done, read from any thread without locks. Counters are
 * written only by the NIC's event-loop thread.
 *
 * @param nic              NIC name (the VM's tap)
 * @param mode             hold, pass-through (unprotected) or fenced
 * @param heldFrames       frames held now
 * @param heldBytes        bytes held now
 * @param oldestHeldAgeNs  age of the oldest held frame, 0 if none
 * @param epochs           per sealed-or-open epoch: id, frames, bytes (the open one has id -1)
 * @param releasedFrames   total released after vmstate-received
 * @param releasedBytes    total bytes released
 * @param passedFrames     guest frames passed without holding while unprotected
 * @param inboundFrames    frames passed to the guest (never held)
 * @param inboundBytes     bytes passed to the guest
 * @param droppedLimitFrames dropped: frame limit reached
 * @param droppedLimitBytes  dropped: byte limit reached
 * @param droppedOversize    dropped: longer than max-frame-bytes
 * @param droppedFenced      dropped: the VM was taken over by the secondary
 * @param droppedWriteError  dropped: the kernel refused the write on release or pass
 * @param droppedAgentRestart dropped: held by an earlier agent of this NIC that crashed, or sent by the guest while
 *                           no agent ran (counted by the agent that followed)
 * @param backpressureStalls times reading the guest stopped at the limit (backpressure policy)
 * @param earlyCheckpointRequests times the high-water mark asked for an early checkpoint
 */
public record NicStats(String nic, String mode, long heldFrames, long heldBytes, long oldestHeldAgeNs,
                       List<EpochStats> epochs, long releasedFrames, long releasedBytes, long passedFrames,
                       long inboundFrames, long inboundBytes, long droppedLimitFrames, long droppedLimitBytes,
                       long droppedOversize, long droppedFenced, long droppedWriteError, long droppedAgentRestart,
                       long backpressureStalls,
                       long earlyCheckpointRequests)
{
    public record EpochStats(long epoch, long frames, long bytes)
    {
    }

    /** The sealed epochs plus the open one (id -1), which holds whatever is held beyond the sealed ones. */
    public static List<EpochStats> withOpenEpoch(final List<EpochStats> sealed, final long heldFrames, final long heldBytes)
    {
        long frames = 0;
        long bytes = 0;
        for (final EpochStats e : sealed)
        {
            frames += e.frames();
            bytes += e.bytes();
        }
        final java.util.ArrayList<EpochStats> all = new java.util.ArrayList<>(sealed);
        all.add(new EpochStats(-1, Math.max(0, heldFrames - frames), Math.max(0, heldBytes - bytes)));
        return all;
    }

    public long droppedTotal()
    {
        return droppedLimitFrames + droppedLimitBytes + droppedOversize + droppedFenced + droppedWriteError
            + droppedAgentRestart;
    }
}
