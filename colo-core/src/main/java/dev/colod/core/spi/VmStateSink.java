package dev.colod.core.spi;

import java.io.IOException;

/**
 * The secondary's standby image. A checkpoint is staged while its bytes arrive and becomes the committed
 * image only by {@link #commit(long)}, atomically: a crash at any point leaves either the old or the new
 * committed image, never a mix. A checkpoint that is not wholly received is discarded whole.
 * Called from the secondary engine's session thread, and {@link #activate(long)} from the failover path.
 */
public interface VmStateSink
{
    /** Id of the newest committed checkpoint, 0 if none. */
    long lastCommitted();

    /** Start staging checkpoint {@code checkpointId} of exactly {@code sizeBytes} (already checked against the limit). */
    void stage(long checkpointId, long sizeBytes) throws IOException;

    /** Append received bytes to the staged checkpoint. */
    void stageWrite(byte[] buf, int off, int len) throws IOException;

    /** Make the wholly received staged checkpoint the committed image (atomically). */
    void commit(long checkpointId) throws IOException;

    /** Throw away a partly received checkpoint. Never fails; the committed image is untouched. */
    void discard(long checkpointId);

    /**
     * {@code vmstate-loaded} for {@code checkpointId} has been sent: the primary no longer waits. Work that may
     * take long (e.g. pre-starting a hot-standby VM) starts here, never inside {@link #commit(long)}. Must not throw.
     */
    default void loaded(final long checkpointId)
    {
    }

    /**
     * Whether the committed image is a consistent state the VM can resume from. False before any checkpoint and
     * while a live first synchronisation is only partly completed (a base image without its paused checkpoint).
     */
    /**
     * Hybrid mode: {@code checkpoint-request} for {@code checkpointId} arrived; the running copy of the VM stops
     * before the reply (PROTOCOL.md section 10). A failure is logged and counted; it does not end the session.
     */
    default void suspendRunning(final long checkpointId) throws IOException
    {
    }

    /**
     * Hybrid mode: {@code vmstate-loaded} was sent for {@code checkpointId}; the running copy resumes from the
     * committed checkpoint. A failure is logged and counted; it does not end the session.
     */
    default void resumeRunning(final long checkpointId) throws IOException
    {
    }

    default boolean resumable()
    {
        return lastCommitted() > 0;
    }

    /** Failover: resume the VM from the committed checkpoint {@code checkpointId}. */
    void activate(long checkpointId) throws Exception;

    /**
     * A sink that hands everything to {@code inner}: a wrapper (one that observes commits, say) extends it and
     * overrides only what it adds to, so a method added to this interface later is forwarded too.
     */
    abstract class Forwarding implements VmStateSink
    {
        protected final VmStateSink inner;

        protected Forwarding(final VmStateSink inner)
        {
            this.inner = inner;
        }

        @Override
        public long lastCommitted()
        {
            return inner.lastCommitted();
        }

        @Override
        public void stage(final long checkpointId, final long sizeBytes) throws IOException
        {
            inner.stage(checkpointId, sizeBytes);
        }

        @Override
        public void stageWrite(final byte[] buf, final int off, final int len) throws IOException
        {
            inner.stageWrite(buf, off, len);
        }

        @Override
        public void commit(final long checkpointId) throws IOException
        {
            inner.commit(checkpointId);
        }

        @Override
        public void discard(final long checkpointId)
        {
            inner.discard(checkpointId);
        }

        @Override
        public void loaded(final long checkpointId)
        {
            inner.loaded(checkpointId);
        }

        @Override
        public void suspendRunning(final long checkpointId) throws IOException
        {
            inner.suspendRunning(checkpointId);
        }

        @Override
        public void resumeRunning(final long checkpointId) throws IOException
        {
            inner.resumeRunning(checkpointId);
        }

        @Override
        public boolean resumable()
        {
            return inner.resumable();
        }

        @Override
        public void activate(final long checkpointId) throws Exception
        {
            inner.activate(checkpointId);
        }
    }
}
