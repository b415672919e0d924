package dev.colod.core.protocol;

import java.io.IOException;

/**
 * The peer sent something the protocol does not allow. Ends the session (never the VM). The message names
 * what was wrong: the offending id or field, and what was expected.
 */
public final class ProtocolException extends IOException
{
    private final String field;

    public ProtocolException(final String field, final String message)
    {
        super(message);
        this.field = field;
    }

    /** The wire element that was wrong: {@code "command"}, {@code "vmstate-size"}, {@code "hello.version"}... */
    public String field()
    {
        return field;
    }

    static ProtocolException invalidCommand(final long unsignedId)
    {
        return new ProtocolException("command",
            "invalid command " + unsignedId + " (0x" + Long.toHexString(unsignedId) + "): valid ids are 0..6");
    }

    public static ProtocolException unexpected(final ColoCommand received, final ColoCommand expected)
    {
        // received first, expected second, as the message reads
        return new ProtocolException("command",
            "unexpected command " + received + ", expected " + expected);
    }

    public static ProtocolException stateTooLarge(final long unsignedSize, final long limit, final long checkpointId)
    {
        return new ProtocolException("vmstate-size",
            "vmstate-size " + Long.toUnsignedString(unsignedSize) + " bytes for checkpoint " + checkpointId +
            " exceeds the limit of " + limit + " bytes");
    }
}
