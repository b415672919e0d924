package dev.colod.agent;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The newest fencing token this host has seen for a VM, kept in {@code <state-dir>/<vm>/token} so that a restarted
 * secondary still refuses a primary whose token is older (docs/PROTOCOL.md, section 8). Written atomically.
 */
public final class TokenFile
{
    private TokenFile()
    {
    }

    /** The recorded token, 0 if none (or unreadable: the arbiter stays the first line). */
    public static long read(final Path stateDir, final String vm)
    {
        final Path f = stateDir.resolve(vm).resolve("token");
        try
        {
            return Files.exists(f) ? Long.parseLong(Files.readString(f).trim()) : 0;
        }
        catch (final IOException | NumberFormatException ex)
        {
            return 0;
        }
    }

    public static void write(final Path stateDir, final String vm, final long token)
    {
        final Path f = stateDir.resolve(vm).resolve("token");
        try
        {
            Files.createDirectories(f.getParent());
            final Path tmp = f.resolveSibling("token.tmp");
            Files.writeString(tmp, token + "\n");
            Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        catch (final IOException ex)
        {
            throw new UncheckedIOException(f + ": " + ex.getMessage(), ex);
        }
    }
}
