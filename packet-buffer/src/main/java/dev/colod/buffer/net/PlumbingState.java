package dev.colod.buffer.net;

import dev.colod.os.IpRoute;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What every backend that changes the host around a VM tap shares: where the tap is ({@link Site}), the state
 * file written before anything changes, the names of agent devices, and {@link #recover}, which puts the host
 * back after an agent that died without a clean stop, whatever backend it ran (its tc filters, agent devices and
 * the VM tap's bridge).
 */
public final class PlumbingState
{
    private static final Logger LOG = LoggerFactory.getLogger(PlumbingState.class);
    /** tc action cookie that marks our filters (shown by {@code tc filter show}). */
    public static final String COOKIE = "c01dc01d";
    private static final Pattern MTU = Pattern.compile("\\bmtu (\\d+)");
    private static final Pattern MASTER = Pattern.compile("\\bmaster (\\S+)");
    /** In {@code tc -s filter show}: what one action could not do (mirred: its target was gone or full). */
    private static final Pattern NOT_DONE = Pattern.compile("\\(dropped (\\d+), overlimits (\\d+)");

    private PlumbingState()
    {
    }

    /** An agent device's name: {@code prefix} and the VM tap's, at most 15 characters (IFNAMSIZ). */
    public static String deviceName(final String prefix, final String vmTap)
    {
        final String s = prefix + vmTap;
        return s.length() <= 15 ? s : s.substring(0, 15);
    }

    /** Steers everything that enters {@code from} to leave by {@code to} (tc ingress, u32 match-all, mirred redirect). */
    public static void redirect(final IpRoute net, final String from, final String to) throws IOException
    {
        net.tc("qdisc", "add", "dev", from, "ingress");
        net.tc("filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to, "cookie", COOKIE);
    }

    /** Where a VM tap is: its namespace, its MTU, and the bridge its traffic goes to. */
    public record Site(IpRoute net, int mtu, String bridge)
    {
    }

    /**
     * The VM tap {@code vmTap} in {@code netns} (null: this process's): its MTU and {@code bridge}; when that is
     * null, its current master, or else the bridge the state file in {@code runDir} recorded (a crashed agent
     * left the tap off its bridge); refused when it has none of them.
     */
    public static Site locate(final String vmTap, final String bridge, final String netns, final Path runDir)
        throws IOException
    {
        final IpRoute net = new IpRoute(netns);
        final String link = net.ip("-o", "link", "show", "dev", vmTap);
        final Matcher mtu = MTU.matcher(link);
        final Matcher master = MASTER.matcher(link);
        final String br = bridge != null ? bridge : master.find() ? master.group(1) : recordedBridge(runDir, vmTap);
        if (br == null)
        {
            throw new IOException("vm tap " + vmTap + (netns == null ? "" : " in netns " + netns) +
                " is on no bridge and none is configured: where should its traffic go?");
        }
        return new Site(net, mtu.find() ? Integer.parseInt(mtu.group(1)) : 1500, br);
    }

    /** The bridge that {@code vmTap}'s state file in {@code runDir} names, null without one. */
    private static String recordedBridge(final Path runDir, final String vmTap) throws IOException
    {
        final Path state = stateFileOf(runDir, vmTap);
        return Files.exists(state) ? readState(state).getProperty("bridge") : null;
    }

    /** Where the state file of {@code vmTap} lives in {@code runDir}. */
    private static Path stateFileOf(final Path runDir, final String vmTap)
    {
        return runDir.resolve("plumbing-" + vmTap + ".state");
    }

    private static Properties readState(final Path state) throws IOException
    {
        final Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(state))
        {
            p.load(r);
        }
        return p;
    }

    /**
     * Writes the state file {@link #recover} reads, before anything changes: namespace, VM tap, bridge, and the
     * agent devices in {@code devices} ({@code guest-tap}, {@code uplink-tap}: deleted by recovery).
     */
    public static Path writeState(final Path runDir, final Site site, final String vmTap,
        final Map<String, String> devices) throws IOException
    {
        Files.createDirectories(runDir);
        final Path state = stateFileOf(runDir, vmTap);
        final Properties p = new Properties();
        p.setProperty("netns", site.net().netns() == null ? "" : site.net().netns());
        p.setProperty("vm-tap", vmTap);
        p.setProperty("bridge", site.bridge());
        devices.forEach(p::setProperty);
        try (Writer w = Files.newBufferedWriter(state))
        {
            p.store(w, "colod NIC plumbing; removed on clean stop, undone by recovery after a crash");
        }
        return state;
    }

    /**
     * The guest frames that the redirect on {@code vmTap}'s ingress (if one is there) could not hand to its agent
     * tap: that tap was gone (its agent crashed) or its queue full. 0 without a redirect.
     */
    public static long notRedirected(final IpRoute net, final String vmTap)
    {
        final String out = net.tcQuiet("-s", "filter", "show", "dev", vmTap, "ingress");
        long n = 0;
        if (out != null)
        {
            final Matcher m = NOT_DONE.matcher(out);
            while (m.find())
            {
                n += Long.parseLong(m.group(1)) + Long.parseLong(m.group(2));
            }
        }
        return n;
    }

    /** Removes colod's ingress filters from {@code vmTap} and puts it back on {@code bridge} (if that still exists). */
    public static void undo(final IpRoute net, final String vmTap, final String bridge)
    {
        net.tcQuiet("qdisc", "del", "dev", vmTap, "ingress");
        if (bridge != null && net.ipQuiet("-o", "link", "show", "dev", bridge) != null)
        {
            net.ipQuiet("link", "set", "dev", vmTap, "master", bridge);
        }
    }

    /**
     * Undo what a crashed agent left: for every state file in {@code runDir}, remove the filters, delete agent
     * taps that somehow survived, put the VM tap back on its bridge. Returns one line per thing repaired.
     */
    public static List<String> recover(final Path runDir) throws IOException
    {
        final List<String> repaired = new ArrayList<>();
        if (!Files.isDirectory(runDir))
        {
            return repaired;
        }
        try (var files = Files.list(runDir))
        {
            for (final Path f : (Iterable<Path>)files.filter(x -> x.getFileName().toString().startsWith("plumbing-")
                && x.getFileName().toString().endsWith(".state"))::iterator)
            {
                final Properties p = readState(f);
                final String ns = p.getProperty("netns", "");
                final IpRoute net = new IpRoute(ns.isEmpty() ? null : ns);
                final String vmTap = p.getProperty("vm-tap");
                if (net.ipQuiet("-o", "link", "show", "dev", vmTap) != null)
                {
                    for (final String t : new String[]{p.getProperty("guest-tap"), p.getProperty("uplink-tap")})
                    {
                        if (t != null && net.ipQuiet("link", "del", "dev", t) != null)
                        {
                            repaired.add("deleted stale agent tap " + t);
                        }
                    }
                    final String filters = net.tcQuiet("filter", "show", "dev", vmTap, "ingress");
                    if (filters != null && !filters.isBlank())
                    {
                        repaired.add("removed stale tc ingress redirect on " + vmTap + " (it had dropped "
                            + notRedirected(net, vmTap) + " guest frames: its agent tap gone or full)");
                    }
                    undo(net, vmTap, p.getProperty("bridge"));
                    repaired.add("put " + vmTap + " back on bridge " + p.getProperty("bridge"));
                }
                Files.deleteIfExists(f);
                LOG.warn("recovered after an unclean stop: {}", repaired);
            }
        }
        return repaired;
    }
}
