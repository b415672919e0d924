package dev.colod.agent;

import dev.colod.agent.config.ColodConfig;

import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.Properties;

/**
 * Which role this host plays for a VM now, kept across restarts in {@code <state-dir>/<vm>/role}: the YAML names
 * the two hosts and the role a host starts in the first time; after a failover the survivor is the primary and
 * the other host, when it comes back, the secondary, without anyone editing a file. Written atomically (rename).
 *
 * @param role      this host's role now
 * @param since     when it took that role
 * @param failovers failovers of this VM seen by this host
 */
public record RoleFile(ColodConfig.Role role, Instant since, long failovers)
{
    /** The role recorded for {@code vm} under {@code stateDir}, or null if this host never ran it. */
    public static RoleFile read(final Path stateDir, final String vm) throws IOException
    {
        final Path f = path(stateDir, vm);
        if (!Files.exists(f))
        {
            return null;
        }
        final Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(f))
        {
            p.load(r);
        }
        try
        {
            return new RoleFile(ColodConfig.Role.valueOf(p.getProperty("role", "").toUpperCase()),
                Instant.parse(p.getProperty("since", Instant.EPOCH.toString())),
                Long.parseLong(p.getProperty("failovers", "0")));
        }
        catch (final RuntimeException ex)
        {
            throw new IOException(f + ": not a role file of colod (" + ex.getMessage() + "); delete it to start from " +
                "the configured role", ex);
        }
    }

    public void write(final Path stateDir, final String vm) throws IOException
    {
        final Path f = path(stateDir, vm);
        Files.createDirectories(f.getParent());
        final Properties p = new Properties();
        p.setProperty("role", role.name().toLowerCase());
        p.setProperty("since", since.toString());
        p.setProperty("failovers", Long.toString(failovers));
        final Path tmp = f.resolveSibling("role.tmp");
        try (Writer w = Files.newBufferedWriter(tmp))
        {
            p.store(w, "colod: this host's role for vm " + vm + "; changes with failovers");
        }
        Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    public RoleFile as(final ColodConfig.Role newRole, final long newFailovers)
    {
        return new RoleFile(newRole, Instant.now(), newFailovers);
    }

    static Path path(final Path stateDir, final String vm)
    {
        return stateDir.resolve(vm).resolve("role");
    }
}
