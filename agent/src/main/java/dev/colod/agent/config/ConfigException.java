package dev.colod.agent.config;

/** A configuration file that cannot be used; the message starts with {@code file:line:column:}. */
public final class ConfigException extends Exception
{
    private final int line;
    private final int column;

    public ConfigException(final String file, final int line, final int column, final String message)
    {
        super(file + ":" + line + ":" + column + ": " + message);
        this.line = line;
        this.column = column;
    }

    public int line()
    {
        return line;
    }

    public int column()
    {
        return column;
    }
}
