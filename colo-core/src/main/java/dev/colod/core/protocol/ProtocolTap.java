package dev.colod.core.protocol;

/**
 * Observes every message a {@link ColoChannel} sends or receives, before it happens (send) or right after it
 * was decoded (receive). Used for tracing and, in tests, to inject faults at exact sync points: a tap that
 * throws makes the engine take its single failure exit.
 */
public interface ProtocolTap
{
    ProtocolTap NONE = new ProtocolTap()
    {
    };

    default void beforeSend(final ColoCommand command, final long checkpointId) throws java.io.IOException
    {
    }

    default void afterReceive(final ColoCommand command, final long checkpointId) throws java.io.IOException
    {
    }

    /** Called as state bytes go out or come in: {@code done} of {@code total} bytes so far. */
    default void stateProgress(final long done, final long total, final long checkpointId) throws java.io.IOException
    {
    }
}
