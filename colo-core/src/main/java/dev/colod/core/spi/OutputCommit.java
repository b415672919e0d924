package dev.colod.core.spi;

/**
 * Where guest output waits until it is safe to let out (network output commit), as the primary engine drives
 * it. One vocabulary from the engine down to each NIC's epoch ledger:
 * <ul>
 * <li>{@link #hold} — protection starts: hold every frame from now on;</li>
 * <li>{@link #seal} — the VM is paused for checkpoint N: what was held so far is epoch N;</li>
 * <li>{@link #release} — the secondary sent {@code vmstate-received} for N: epoch N (and older) leave, in order;</li>
 * <li>{@link #passThrough} — protection lost: everything held leaves, later frames pass unheld;</li>
 * <li>{@link #fence} — the secondary took the VM over: everything held and everything later is dropped.</li>
 * </ul>
 * Epoch N is the guest's run up to checkpoint N. Calls come from the engine's session thread; {@code hold},
 * {@code seal}, {@code passThrough} and {@code fence} return when they are in effect, {@code release} may
 * complete later but keeps the order of calls. The engine polls {@link #wantsCheckpoint()}: output never calls
 * up into the engine.
 */
public interface OutputCommit
{
    /** Output passes unheld: for an engine without output commit (benchmarks, control runs). */
    OutputCommit NONE = new OutputCommit()
    {
        @Override
        public void hold(final long firstEpoch)
        {
        }

        @Override
        public void seal(final long epoch)
        {
        }

        @Override
        public void release(final long epoch)
        {
        }

        @Override
        public void passThrough(final String reason)
        {
        }

        @Override
        public void fence(final String reason)
        {
        }
    };

    /** Protection (re)starts: hold output from now on; the first epoch is {@code firstEpoch}. */
    void hold(long firstEpoch);

    /** The VM is paused for checkpoint {@code epoch}: everything held so far belongs to that epoch. */
    void seal(long epoch);

    /** The secondary acknowledged {@code vmstate-received} for {@code epoch}: let it (and older epochs) out, in order. */
    void release(long epoch);

    /** No secondary any more: let everything held out, and pass output straight through until held again. */
    void passThrough(String reason);

    /**
     * The VM was taken over by the secondary: what is held must never leave, because the secondary runs from a
     * checkpoint that does not include it. Drop it all, counted, and drop everything after.
     */
    void fence(String reason);

    /**
     * True while the open epoch holds at least one frame: a checkpoint now would let it out (the output trigger).
     * Cheap; polled by the engine.
     */
    default boolean holdsOpenOutput()
    {
        return false;
    }

    /**
     * Registers what to run (on the output's own thread, quickly, without blocking) when the open epoch takes its
     * first frame, so that an engine waiting for output need not poll for it. At most one listener.
     */
    default void onOpenOutput(final Runnable wake)
    {
    }

    /**
     * Hybrid mode: why comparing the guests' output asks for a checkpoint now ("mismatch", "compare-timeout",
     * "secondary-ahead"), or null. Cleared by the next {@link #seal}; the {@link #onOpenOutput} listener is woken
     * when it is set.
     */
    default String comparisonWants()
    {
        return null;
    }

    /** True while held output nears its limit (high-water mark) in the open epoch: take a checkpoint early. */
    default boolean wantsCheckpoint()
    {
        return false;
    }
}
