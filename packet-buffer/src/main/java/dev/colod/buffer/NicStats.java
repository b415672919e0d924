package dev.colod.buffer;

import java.util.ArrayList;
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
        final List<EpochStats> all = new ArrayList<>(sealed);
        all.add(new EpochStats(-1, Math.max(0, heldFrames - frames), Math.max(0, heldBytes - bytes)));
        return all;
    }

    /** A NIC's stats by name: what is not set is 0 (or no epochs). */
    public static Builder of(final String nic, final String mode)
    {
        return new Builder(nic, mode);
    }

    /** Builds {@link NicStats} field by named field instead of nineteen positions. */
    public static final class Builder
    {
        private final String nic;
        private final String mode;
        private long heldFrames;
        private long heldBytes;
        private long oldestHeldAgeNs;
        private List<EpochStats> epochs = List.of();
        private long releasedFrames;
        private long releasedBytes;
        private long passedFrames;
        private long inboundFrames;
        private long inboundBytes;
        private final long[] dropped = new long[FrameLedger.Drop.values().length];
        private long backpressureStalls;
        private long earlyCheckpointRequests;

        private Builder(final String nic, final String mode)
        {
            this.nic = nic;
            this.mode = mode;
        }

        public Builder held(final long frames, final long bytes, final long oldestAgeNs)
        {
            heldFrames = frames;
            heldBytes = bytes;
            oldestHeldAgeNs = oldestAgeNs;
            return this;
        }

        public Builder epochs(final List<EpochStats> e)
        {
            epochs = e;
            return this;
        }

        public Builder released(final long frames, final long bytes)
        {
            releasedFrames = frames;
            releasedBytes = bytes;
            return this;
        }

        public Builder passed(final long frames)
        {
            passedFrames = frames;
            return this;
        }

        public Builder inbound(final long frames, final long bytes)
        {
            inboundFrames = frames;
            inboundBytes = bytes;
            return this;
        }

        public Builder dropped(final FrameLedger.Drop why, final long frames)
        {
            dropped[why.ordinal()] = frames;
            return this;
        }

        public Builder backpressureStalls(final long n)
        {
            backpressureStalls = n;
            return this;
        }

        public Builder earlyCheckpointRequests(final long n)
        {
            earlyCheckpointRequests = n;
            return this;
        }

        public NicStats build()
        {
            return new NicStats(nic, mode, heldFrames, heldBytes, oldestHeldAgeNs, epochs, releasedFrames, releasedBytes,
                passedFrames, inboundFrames, inboundBytes, dropped[FrameLedger.Drop.LIMIT_FRAMES.ordinal()],
                dropped[FrameLedger.Drop.LIMIT_BYTES.ordinal()], dropped[FrameLedger.Drop.OVERSIZE.ordinal()],
                dropped[FrameLedger.Drop.FENCED.ordinal()], dropped[FrameLedger.Drop.WRITE_ERROR.ordinal()],
                dropped[FrameLedger.Drop.AGENT_RESTART.ordinal()], backpressureStalls, earlyCheckpointRequests);
        }
    }

    public long droppedTotal()
    {
        return droppedLimitFrames + droppedLimitBytes + droppedOversize + droppedFenced + droppedWriteError
            + droppedAgentRestart;
    }
}
