package dev.colod.agent;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Fencing tokens kept in the state directory, written atomically: {@code <state-dir>/<vm>/token}, the newest token this
 * host has seen (so that a restarted secondary still refuses a primary whose token is older, docs/PROTOCOL.md,
 * section 8), and {@code <state-dir>/<vm>/held-token}, the newest token this host itself held (so that a restarted
 * primary never says HELLO with an older one than its own earlier hold).
 */
public final class TokenFile
{
    private static final String SEEN = "token";
    private static final String HELD = "held-token";

    private TokenFile()
    {
    }

    /** The recorded token, 0 if none (or unreadable: the arbiter stays the first line). */
    public static long read(final Path stateDir, final String vm)
    {
        return read(stateDir, vm, SEEN);
    }

    public static void write(final Path stateDir, final String vm, final long token)
    {
        write(stateDir, vm, SEEN, token);
    }

    /** The newest token this host held, 0 if none recorded. */
    public static long readHeld(final Path stateDir, final String vm)
    {
        return read(stateDir, vm, HELD);
    }

    /** Records {@code token} as held here unless a newer one is recorded already. */
    public static synchronized void writeHeld(final Path stateDir, final String vm, final long token)
    {
        if (token > read(stateDir, vm, HELD))
        {
            write(stateDir, vm, HELD, token);
        }
    }

    private static long read(final Path stateDir, final String vm, final String name)
    {
        final Path f = stateDir.resolve(vm).resolve(name);
        try
        {
            return Files.exists(f) ? Long.parseLong(Files.readString(f).trim()) : 0;
        }
        catch (final IOException | NumberFormatException ex)
        {
            return 0;
        }
    }

    private static void write(final Path stateDir, final String vm, final String name, final long token)
    {
        final Path f = stateDir.resolve(vm).resolve(name);
        try
        {
            replace(f, token + "\n");
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException(f + ": " + ex.getMessage(), ex);
        }
    }

    /** Writes {@code text} to {@code f} whole or not at all (a sibling .tmp, then an atomic rename). */
    static void replace(final Path f, final String text) throws IOException
    {
        Files.createDirectories(f.getParent());
        final Path tmp = f.resolveSibling(f.getFileName() + ".tmp");
        Files.writeString(tmp, text);
        Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
