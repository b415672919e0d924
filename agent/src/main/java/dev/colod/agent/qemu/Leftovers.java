package dev.colod.agent.qemu;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * What an earlier agent run left behind in a VM's runtime directory after a crash: a QEMU that still runs
 * (its pidfile names a live qemu process), a stale QMP or checkpoint socket, a stale pidfile. The agent
 * reports each at start-up and decides; {@link #removeStale(Path)} deletes only what is provably dead.
 */
public final class Leftovers
{
    private Leftovers()
    {
    }

    /** One line per leftover, naming the file and what it means. */
    public static List<String> scan(final Path runDir) throws IOException
    {
        final List<String> found = new ArrayList<>();
        if (!Files.isDirectory(runDir))
        {
            return found;
        }
        final Path pidFile = runDir.resolve("qemu.pid");
        if (Files.exists(pidFile))
        {
            final Optional<ProcessHandle> qemu = liveQemu(pidFile);
            found.add(qemu.isPresent()
                ? "QEMU pid " + qemu.get().pid() + " from an earlier run is still running (" + pidFile + ")"
                : "stale pidfile " + pidFile + " (no such QEMU process)");
        }
        for (final String sock : new String[]{"qmp.sock", "checkpoint.sock"})
        {
            final Path p = runDir.resolve(sock);
            if (Files.exists(p) && (!sock.equals("qmp.sock") || !Files.exists(pidFile) || liveQemu(pidFile).isEmpty()))
            {
                found.add("stale socket " + p);
            }
        }
        return found;
    }

    /** Deletes stale pidfile and sockets when no QEMU of that pidfile runs; returns what it removed. */
    public static List<String> removeStale(final Path runDir) throws IOException
    {
        final List<String> removed = new ArrayList<>();
        final Path pidFile = runDir.resolve("qemu.pid");
        if (Files.exists(pidFile) && liveQemu(pidFile).isPresent())
        {
            return removed; // a running VM: never touch its files
        }
        for (final String f : new String[]{"qemu.pid", "qmp.sock", "checkpoint.sock"})
        {
            if (Files.deleteIfExists(runDir.resolve(f)))
            {
                removed.add(runDir.resolve(f).toString());
            }
        }
        return removed;
    }

    static Optional<ProcessHandle> liveQemu(final Path pidFile) throws IOException
    {
        final String text = Files.readString(pidFile).trim();
        final long pid;
        try
        {
            pid = Long.parseLong(text);
        }
        catch (final NumberFormatException ex)
        {
            return Optional.empty();
        }
        return ProcessHandle.of(pid).filter(ProcessHandle::isAlive)
            .filter(p -> p.info().command().map(c -> c.contains("qemu")).orElse(false));
    }
}
