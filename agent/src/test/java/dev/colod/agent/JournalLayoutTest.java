package dev.colod.agent;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.spi.LoggingEvent;
import org.junit.jupiter.api.Test;

import java.io.IOException;

import static org.assertj.core.api.Assertions.assertThat;

/** Log lines under the journal: the level as syslog priority, one entry per event even with a stack trace. */
class JournalLayoutTest
{
    private static LoggingEvent event(final Level level, final String msg, final Throwable t)
    {
        final LoggerContext ctx = new LoggerContext();
        return new LoggingEvent("x", ctx.getLogger("dev.colod.agent.ProtectedVm"), level, msg, t, null);
    }

    @Test
    void underTheJournalEachLevelIsItsPriorityAndAStackTraceStaysInOneEntry()
    {
        final JournalLayout j = new JournalLayout(true);
        assertThat(j.doLayout(event(Level.ERROR, "vm=web1 failed", new IOException("disk gone"))))
            .startsWith("<3>ERROR [").contains("ProtectedVm - vm=web1 failed | java.io.IOException: disk gone | \tat ")
            .endsWith(System.lineSeparator()).containsOnlyOnce("\n");
        assertThat(j.doLayout(event(Level.WARN, "two\nlines", null))).startsWith("<4>WARN").contains("two | lines");
        assertThat(j.doLayout(event(Level.INFO, "started", null))).startsWith("<6>INFO");
        assertThat(j.doLayout(event(Level.DEBUG, "detail", null))).startsWith("<7>DEBUG");
    }

    @Test
    void onATerminalThereIsNoPrefixAndTracesKeepTheirLines()
    {
        final String s = new JournalLayout(false).doLayout(event(Level.ERROR, "boom", new IOException("x")));
        assertThat(s).startsWith("ERROR [").contains("ProtectedVm - boom").contains(System.lineSeparator() + "java.io.IOException: x");
    }
}
