package dev.colod.os;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs iproute2 ({@code ip}, {@code tc}) against one network namespace (or the agent's own when netns is
 * null). Every failure names the command and what it printed.
 */
public final class IpRoute
{
    private final String netns;

    public IpRoute(final String netns)
    {
        this.netns = netns;
    }

    public String netns()
    {
        return netns;
    }

    public String ip(final String... args) throws IOException
    {
        return run("ip", args);
    }

    public String tc(final String... args) throws IOException
    {
        return run("tc", args);
    }

    /** {@code ethtool} in this namespace (device offloads). */
    public String ethtool(final String... args) throws IOException
    {
        final List<String> cmd = new ArrayList<>();
        if (netns != null)
        {
            cmd.addAll(List.of("ip", "netns", "exec", netns));
        }
        cmd.add("ethtool");
        cmd.addAll(Arrays.asList(args));
        return exec(cmd);
    }

    /** Like {@link #ip} but a failure only returns null (for probing and best-effort cleanup). */
    public String ipQuiet(final String... args)
    {
        try
        {
            return ip(args);
        }
        catch (final IOException ex)
        {
            return null;
        }
    }

    public String tcQuiet(final String... args)
    {
        try
        {
            return tc(args);
        }
        catch (final IOException ex)
        {
            return null;
        }
    }

    private String run(final String tool, final String... args) throws IOException
    {
        final List<String> cmd = new ArrayList<>();
        cmd.add(tool);
        if (netns != null)
        {
            cmd.add("-n");
            cmd.add(netns);
        }
        cmd.addAll(Arrays.asList(args));
        return exec(cmd);
    }

    public static String exec(final List<String> cmd) throws IOException
    {
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        final String out;
        try
        {
            out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(30, TimeUnit.SECONDS))
            {
                p.destroyForcibly();
                throw new IOException("'" + String.join(" ", cmd) + "' did not finish in 30 s");
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            p.destroyForcibly();
            throw new IOException("interrupted while running '" + String.join(" ", cmd) + "'", ex);
        }
        if (p.exitValue() != 0)
        {
            throw new IOException("'" + String.join(" ", cmd) + "' failed (exit " + p.exitValue() + "): " + out.trim());
        }
        return out;
    }
}
