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

    private ConfigException(final String message, final int line, final int column)
    {
        super(message);
        this.line = line;
        this.column = column;
    }

    /** Several problems as one: the first's position; the message has one {@code file:line:column: ...} line each. */
    public static ConfigException all(final java.util.List<ConfigException> problems)
    {
        if (problems.size() == 1)
        {
            return problems.get(0);
        }
        final StringBuilder b = new StringBuilder();
        for (final ConfigException p : problems)
        {
            b.append(b.length() == 0 ? "" : "\n").append(p.getMessage());
        }
        return new ConfigException(b.toString(), problems.get(0).line, problems.get(0).column);
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
