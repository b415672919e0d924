package dev.colod.core.spi;

/**
 * Told by the primary engine where epochs begin and end, so guest output is held until it is safe.
 * Epoch N is the guest's run up to checkpoint N; frames the guest sends after checkpoint N's pause belong to
 * epoch N+1. Calls come from the engine's session thread and must not block for long.
 */
public interface OutputCommitListener
{
    OutputCommitListener NONE = new OutputCommitListener()
    {
        @Override
        public void epochSealed(final long checkpointId)
        {
        }

        @Override
        public void epochCommitted(final long checkpointId)
        {
        }

        @Override
        public void protectionLost(final String reason)
        {
        }

        @Override
        public void fenced(final String reason)
        {
        }
    };

    /** The VM is paused for checkpoint {@code checkpointId}: everything held so far belongs to that epoch. */
    void epochSealed(long checkpointId);

    /** The secondary acknowledged {@code vmstate-received} for this checkpoint: release its epoch, in order. */
    void epochCommitted(long checkpointId);

    /** No secondary any more: release everything held, and pass output straight through until protected again. */
    void protectionLost(String reason);

    /**
     * The VM was taken over by the secondary (fenced here): what is held must never leave, because the
     * secondary runs from a checkpoint that does not include it. Drop it all, counted; hold everything after.
     */
    void fenced(String reason);

    /** Protection (re)starts: hold output again from now on. */
    default void protectionStarted(final long firstCheckpointId)
    {
    }
}
