package dev.colod.os;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** What a host offers: commands on the PATH and device files, named the way an operator installs them. */
public final class HostTools
{
    private HostTools()
    {
    }

    /** Whether {@code command} is an executable file in a directory of {@code PATH} (or /usr/sbin, /sbin). */
    public static boolean onPath(final String command)
    {
        final String path = System.getenv().getOrDefault("PATH", "") + File.pathSeparator + "/usr/sbin" +
            File.pathSeparator + "/sbin";
        for (final String dir : path.split(File.pathSeparator))
        {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, command)))
            {
                return true;
            }
        }
        return false;
    }

    /**
     * One line per missing thing: each of {@code commands} given as "command:package" that is not on the PATH,
     * each of {@code files} that does not exist.
     */
    public static List<String> missing(final List<String> commands, final List<String> files)
    {
        final List<String> missing = new ArrayList<>();
        for (final String c : commands)
        {
            final String[] cp = c.split(":", 2);
            if (!onPath(cp[0]))
            {
                missing.add("command " + cp[0] + " (Debian package " + cp[1] + ")");
            }
        }
        for (final String f : files)
        {
            if (!Files.exists(Path.of(f)))
            {
                missing.add(f);
            }
        }
        return missing;
    }
}
