package dev.colod.agent;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.classic.spi.IThrowableProxy;
import ch.qos.logback.classic.spi.ThrowableProxyUtil;
import ch.qos.logback.core.LayoutBase;

/**
 * colod's log lines: {@code LEVEL [thread] Logger - message}, one line per event on stdout. Under systemd (stdout
 * connected to the journal, {@code $JOURNAL_STREAM} set) each line starts with its syslog priority ({@code <3>}
 * error, {@code <4>} warning, {@code <6>} info, {@code <7>} debug: the journal's {@code SyslogLevelPrefix}), and
 * a message or stack trace that spans lines is kept in one entry (its line breaks written as " | "), so
 * {@code journalctl -p warning} shows colod's warnings and a stack trace is not scattered over entries at info.
 * Elsewhere (a terminal, a test) stack traces keep their lines and there is no prefix.
 */
public final class JournalLayout extends LayoutBase<ILoggingEvent>
{
    private final boolean journal;

    public JournalLayout()
    {
        this(System.getenv("JOURNAL_STREAM") != null);
    }

    JournalLayout(final boolean journal)
    {
        this.journal = journal;
    }

    /** The syslog priority of a logback level. */
    static int priority(final Level level)
    {
        return switch (level.toInt())
        {
            case Level.ERROR_INT -> 3;
            case Level.WARN_INT -> 4;
            case Level.INFO_INT -> 6;
            default -> 7;
        };
    }

    @Override
    public String doLayout(final ILoggingEvent e)
    {
        final StringBuilder b = new StringBuilder(160);
        if (journal)
        {
            b.append('<').append(priority(e.getLevel())).append('>');
        }
        final String level = e.getLevel().toString();
        b.append(level).append(" ".repeat(Math.max(1, 6 - level.length()))).append('[').append(e.getThreadName())
            .append("] ").append(shortName(e.getLoggerName())).append(" - ").append(oneEntry(e.getFormattedMessage()));
        final IThrowableProxy t = e.getThrowableProxy();
        if (t != null)
        {
            final String trace = ThrowableProxyUtil.asString(t);
            b.append(journal ? " | " + oneEntry(trace) : System.lineSeparator() + trace);
        }
        return b.append(System.lineSeparator()).toString();
    }

    private String oneEntry(final String s)
    {
        return journal && s != null ? s.replace("\r", "").replace("\n", " | ") : s;
    }

    private static String shortName(final String logger)
    {
        final int dot = logger.lastIndexOf('.');
        return dot < 0 ? logger : logger.substring(dot + 1);
    }
}
