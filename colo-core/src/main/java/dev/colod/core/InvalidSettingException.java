package dev.colod.core;

/**
 * A configuration value that {@code conclude()} refuses, naming the field by its configuration key (e.g.
 * {@code checkpoint-delay-ms}) so that whoever bound it (the agent's YAML loader) can point at the line.
 */
public final class InvalidSettingException extends IllegalArgumentException
{
    private final String field;
    private final String reason;

    public InvalidSettingException(final String field, final String reason)
    {
        super("invalid " + field + ": " + reason);
        this.field = field;
        this.reason = reason;
    }

    /** The configuration key, e.g. {@code heartbeat-timeout-ms}. */
    public String field()
    {
        return field;
    }

    /** Why, e.g. {@code must be > 0, was -1}. */
    public String reason()
    {
        return reason;
    }

    /** Throws for {@code field} unless {@code ok}. */
    public static void require(final boolean ok, final String field, final String reason)
    {
        if (!ok)
        {
            throw new InvalidSettingException(field, reason);
        }
    }
}
