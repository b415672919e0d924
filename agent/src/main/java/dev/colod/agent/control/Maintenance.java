package dev.colod.agent.control;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;

/**
 * A host's maintenance mode ({@code coloctl maintenance on|off}), kept as {@code <state-dir>/maintenance} so that it
 * outlasts a restart of colod and a reboot: the first line is when it began, the second the operator's reason.
 * While it is on, colod starts no failover on its own on this host (a lost primary is not taken over: the
 * secondary stands by); what an operator asks for still happens (docs/OPERATIONS.md, "Maintenance").
 */
public final class Maintenance
{
    private final Path file;

    public Maintenance(final Path stateDir)
    {
        this.file = stateDir.resolve("maintenance");
    }

    public Path file()
    {
        return file;
    }

    /** Null when the host is not in maintenance; else what status and the logs say about it. */
    public String why()
    {
        final String text;
        try
        {
            text = Files.readString(file);
        }
        catch (final NoSuchFileException ex)
        {
            return null;
        }
        catch (final IOException ex)
        {
            // it exists but cannot be read: the operator meant it, hold on the side that runs no second copy
            return "this host is in maintenance (" + file + " unreadable: " + ex.getMessage() + ")";
        }
        final String[] lines = text.split("\n", 2);
        final String reason = lines.length > 1 ? lines[1].trim() : "";
        return "this host is in maintenance since " + lines[0].trim() + (reason.isEmpty() ? "" : " (" + reason + ")") +
            ": no failover starts here on its own (coloctl maintenance off ends it)";
    }

    /** Puts the host in maintenance (again: the new reason and time replace the old); returns {@link #why()}. */
    public synchronized String on(final String reason)
    {
        final String oneLine = reason == null ? "" : reason.replaceAll("\\p{Cntrl}", " ").trim();
        try
        {
            Files.createDirectories(file.getParent());
            final Path tmp = file.resolveSibling("maintenance.tmp");
            Files.writeString(tmp, Instant.now() + "\n" + oneLine + "\n");
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException("cannot record maintenance in " + file + ": " + ex.getMessage(), ex);
        }
        return why();
    }

    /** Ends maintenance; false when the host was not in it. */
    public synchronized boolean off()
    {
        try
        {
            return Files.deleteIfExists(file);
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException("cannot end maintenance: " + file + ": " + ex.getMessage(), ex);
        }
    }
}
