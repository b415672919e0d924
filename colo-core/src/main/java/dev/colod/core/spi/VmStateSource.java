package dev.colod.core.spi;

import java.io.IOException;

/**
 * The primary's VM: paused, captured and resumed by the checkpoint engine. Implemented by the agent
 * (QEMU over QMP) and, in tests, by an in-memory stand-in. Called from the engine's session thread only.
 */
public interface VmStateSource
{
    /**
     * A new session starts; its first checkpoint is {@code firstCheckpointId}. The next capture must be
     * complete on its own (e.g. all RAM pages), because the secondary's image may be anything.
     */
    void beginSession(long firstCheckpointId) throws IOException;

    /**
     * The live first synchronisation of a session, or null to make the first checkpoint carry everything with the
     * VM paused. Called once after {@link #beginSession}, with the VM running: the capture holds all of RAM, read
     * while the guest keeps writing, so it is not a consistent state on its own (the secondary must not resume
     * it); write tracking restarts before the first byte is read, so the next, paused checkpoint carries every
     * page written meanwhile and completes it. The pause at protection start is then a regular one.
     */
    default StateCapture liveBase(final long checkpointId) throws IOException
    {
        return null;
    }

    /**
     * After a live base: one more live round, or null when none is needed. A round carries the pages the guest wrote
     * since the base (or the previous round) started being read, read while it keeps running, so what the first
     * paused checkpoint must carry shrinks round by round, as live migration's iterations do (a 4 GiB base takes
     * seconds, and all the guest wrote meanwhile would otherwise be copied inside the first pause). Like the base
     * it is not a consistent state; the engine sends it as one more base transaction. The source decides when to
     * stop (what is left is small, or enough rounds were made).
     */
    default StateCapture liveRound(final long checkpointId) throws IOException
    {
        return null;
    }

    /** Stop the guest's vCPUs. After this returns, the guest sends no more frames until {@link #resume()}. */
    void pause() throws IOException;

    /**
     * Capture the paused guest's state for checkpoint {@code checkpointId}. The capture must stay valid after
     * {@link #resume()} (speculative mode resumes before it is sent).
     */
    StateCapture capture(long checkpointId) throws IOException;

    /** Let the guest run again. */
    void resume() throws IOException;

    /**
     * Whether the state written since the last checkpoint is large enough to take the next one early (so a pause
     * stays short for a guest that writes a lot). Polled by the engine between checkpoints, every millisecond:
     * must be cheap (rate-limit anything costly). Never called with the VM paused.
     */
    default boolean wantsCheckpoint()
    {
        return false;
    }

    /**
     * The session ended (after the VM was resumed, unless it is fenced): no checkpoint follows until the next
     * {@link #beginSession}. A source that holds the guest back until the next capture lets it go here.
     */
    default void endSession()
    {
    }

    /** Why the VM is gone for good (its process exited), or null while it exists. Asked when a checkpoint fails. */
    default String lostCause()
    {
        return null;
    }

    /**
     * A source that hands everything to {@code inner}: a wrapper (one that observes captures, say) extends it and
     * overrides only what it adds to, so a method added to this interface later is forwarded too.
     */
    abstract class Forwarding implements VmStateSource
    {
        protected final VmStateSource inner;

        protected Forwarding(final VmStateSource inner)
        {
            this.inner = inner;
        }

        @Override
        public void beginSession(final long firstCheckpointId) throws IOException
        {
            inner.beginSession(firstCheckpointId);
        }

        @Override
        public StateCapture liveBase(final long checkpointId) throws IOException
        {
            return inner.liveBase(checkpointId);
        }

        @Override
        public StateCapture liveRound(final long checkpointId) throws IOException
        {
            return inner.liveRound(checkpointId);
        }

        @Override
        public void pause() throws IOException
        {
            inner.pause();
        }

        @Override
        public StateCapture capture(final long checkpointId) throws IOException
        {
            return inner.capture(checkpointId);
        }

        @Override
        public void resume() throws IOException
        {
            inner.resume();
        }

        @Override
        public boolean wantsCheckpoint()
        {
            return inner.wantsCheckpoint();
        }

        @Override
        public void endSession()
        {
            inner.endSession();
        }

        @Override
        public String lostCause()
        {
            return inner.lostCause();
        }
    }
}
