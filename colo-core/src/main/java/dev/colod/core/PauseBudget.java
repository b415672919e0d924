package dev.colod.core;

/**
 * How much the guest may be paused by checkpoints that output asks for (docs/ARCHITECTURE.md, "When a checkpoint
 * starts"): a bucket of pause time that fills while the guest runs, at {@code percent / (100 - percent)} of the
 * time it ran, up to a cap, and empties by every pause. An output-triggered checkpoint starts only while the bucket
 * is not empty, so over any long stretch the guest is paused at most {@code percent} of the time, while a burst
 * (the SYN-ACK, the answer and the FIN of one request) still gets a checkpoint per frame at once. Timer
 * checkpoints (the configured interval) do not wait for it. Session thread only.
 */
final class PauseBudget
{
    private final int percent;
    private final long capNs;
    private long budgetNs;
    private long atNs;

    PauseBudget(final int percent, final long capNs, final long nowNs)
    {
        this.percent = percent;
        this.capNs = capNs;
        this.budgetNs = capNs;
        this.atNs = nowNs;
    }

    /** The guest was paused for {@code pausedNs}, up to {@code nowNs}. */
    void paused(final long pausedNs, final long nowNs)
    {
        refill(nowNs - pausedNs);
        budgetNs -= pausedNs;
        atNs = Math.max(atNs, nowNs);
    }

    /** The earliest time an output-triggered pause may start: {@code nowNs} while the bucket is not empty. */
    long earliestNs(final long nowNs)
    {
        if (percent >= 100)
        {
            return nowNs;
        }
        refill(nowNs);
        return budgetNs > 0 ? nowNs : nowNs + (-budgetNs + 1) * (100 - percent) / percent;
    }

    /** Pause time left in the bucket, ns (negative: owed). */
    long budgetNs()
    {
        return budgetNs;
    }

    private void refill(final long nowNs)
    {
        final long ran = nowNs - atNs;
        if (ran > 0 && percent < 100)
        {
            budgetNs = Math.min(capNs, budgetNs + ran * percent / (100 - percent));
            atNs = nowNs;
        }
    }
}
