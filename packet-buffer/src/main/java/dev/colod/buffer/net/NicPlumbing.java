package dev.colod.buffer.net;

import dev.colod.buffer.tap.TapDevice;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Puts the agent in the path of one VM NIC without touching QEMU (docs/ARCHITECTURE.md, "data path"):
 * <pre>
 *   guest -> vm tap --tc ingress mirred--> g (agent tap) => agent holds => u (agent tap, bridge port) -> bridge
 *   bridge -> u => agent passes => g --tc ingress mirred--> vm tap -> guest
 * </pre>
 * The VM's tap leaves the bridge, {@code u} takes its place. What was changed is written to a state file in
 * the runtime directory before it is changed, so that after a crash of the agent {@link #recover(Path)} can put
 * the host back as it was. The agent taps themselves are not persistent: the kernel removes them when the
 * agent's descriptors close, also on a crash.
 */
public final class NicPlumbing implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(NicPlumbing.class);
    /** tc action cookie that marks our filters (shown by {@code tc filter show}). */
    public static final String COOKIE = "c01dc01d";
    private static final Pattern MTU = Pattern.compile("\\bmtu (\\d+)");
    private static final Pattern MASTER = Pattern.compile("\\bmaster (\\S+)");
    /** In {@code ip -s -j link show}: a device's transmit drops (for a tap: its queue to the reader was full). */
    private static final Pattern TX_DROPPED = Pattern.compile(
        "\"tx\":\\{\"bytes\":\\d+,\"packets\":\\d+,\"errors\":\\d+,\"dropped\":(\\d+)");
    /** In {@code tc -s filter show}: what one action could not do (mirred: its target was gone or full). */
    private static final Pattern NOT_DONE = Pattern.compile("\\(dropped (\\d+), overlimits (\\d+)");

    private final String vmTap;
    private final String bridge;
    private final IpRoute net;
    private final Path stateFile;
    private final TapDevice guestTap;
    private final TapDevice uplinkTap;
    private final long droppedByStaleRedirect;
    /** Read by {@link #notRedirected()} from the threads that ask for statistics. */
    private volatile boolean closed;

    private NicPlumbing(final String vmTap, final String bridge, final IpRoute net, final Path stateFile,
        final TapDevice guestTap, final TapDevice uplinkTap, final long droppedByStaleRedirect)
    {
        this.vmTap = vmTap;
        this.bridge = bridge;
        this.net = net;
        this.stateFile = stateFile;
        this.guestTap = guestTap;
        this.uplinkTap = uplinkTap;
        this.droppedByStaleRedirect = droppedByStaleRedirect;
    }

    /** Agent tap names derived from the VM tap's: at most 15 characters. */
    public static String guestTapName(final String vmTap)
    {
        return deviceName("cg-", vmTap);
    }

    public static String uplinkTapName(final String vmTap)
    {
        return deviceName("cu-", vmTap);
    }

    /** An agent device's name: {@code prefix} and the VM tap's, at most 15 characters (IFNAMSIZ). */
    public static String deviceName(final String prefix, final String vmTap)
    {
        final String s = prefix + vmTap;
        return s.length() <= 15 ? s : s.substring(0, 15);
    }

    /**
     * Steers {@code vmTap} (in {@code netns}, null for the agent's own) through two new agent taps.
     * {@code bridge}: the bridge to put the uplink tap on; null to take the VM tap's current master.
     */
    public static NicPlumbing install(final String vmTap, final String bridge, final String netns, final Path runDir)
        throws IOException
    {
        final Site site = locate(vmTap, bridge, netns, runDir);
        final IpRoute net = site.net();
        final int mtuValue = site.mtu();
        final String br = site.bridge();
        final String g = guestTapName(vmTap);
        final String u = uplinkTapName(vmTap);
        final Path state = writeState(runDir, site, vmTap, java.util.Map.of("guest-tap", g, "uplink-tap", u));

        TapDevice gt = null;
        TapDevice ut = null;
        try
        {
            gt = TapDevice.open(g);
            ut = TapDevice.open(u);
            if (netns != null)
            {
                final IpRoute here = new IpRoute(null);
                here.ip("link", "set", "dev", g, "netns", netns);
                here.ip("link", "set", "dev", u, "netns", netns);
            }
            // no IPv6 link-local on agent taps: the kernel must not send its own frames through them
            net.ip("link", "set", "dev", g, "addrgenmode", "none");
            net.ip("link", "set", "dev", u, "addrgenmode", "none");
            net.ip("link", "set", "dev", g, "mtu", Integer.toString(mtuValue), "up");
            net.ip("link", "set", "dev", vmTap, "nomaster");
            // a crashed agent's redirect (to its vanished tap) may still be there: the VM tap stays off the
            // bridge meanwhile, so its frames go nowhere until the new redirect is in place; what the kernel
            // dropped there is counted before the redirect goes
            final long stale = notRedirected(net, vmTap);
            net.tcQuiet("qdisc", "del", "dev", vmTap, "ingress");
            net.ip("link", "set", "dev", u, "mtu", Integer.toString(mtuValue), "master", br, "up");
            redirect(net, vmTap, g);
            redirect(net, g, vmTap);
            LOG.info("nic {}: steering {} through {} (held) and {} (bridge {})", vmTap, vmTap, g, u, br);
            return new NicPlumbing(vmTap, br, net, state, gt, ut, stale);
        }
        catch (final IOException | RuntimeException ex)
        {
            if (gt != null)
            {
                gt.close();
            }
            if (ut != null)
            {
                ut.close();
            }
            undo(net, vmTap, br);
            Files.deleteIfExists(state);
            throw new IOException("setting up output commit on " + vmTap + " failed: " + ex.getMessage(), ex);
        }
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
        final java.util.Map<String, String> devices) throws IOException
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

    private static void redirect(final IpRoute net, final String from, final String to) throws IOException
    {
        net.tc("qdisc", "add", "dev", from, "ingress");
        net.tc("filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to, "cookie", COOKIE);
    }

    /**
     * The guest frames that the redirect on {@code vmTap}'s ingress (if one is there) could not hand to its agent
     * tap: that tap was gone (its agent crashed) or its queue full. 0 without a redirect.
     */
    static long notRedirected(final IpRoute net, final String vmTap)
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

    /**
     * Guest frames the kernel dropped on their way to the agent since this plumbing was set up: the guest tap's
     * queue was full (its transmit drops) or the redirect could not reach it. Runs {@code ip} and {@code tc}.
     */
    public long notRedirected()
    {
        if (closed)
        {
            return 0;
        }
        final String link = net.ipQuiet("-s", "-j", "link", "show", "dev", guestTapName(vmTap));
        final Matcher m = link == null ? null : TX_DROPPED.matcher(link);
        return notRedirected(net, vmTap) + (m != null && m.find() ? Long.parseLong(m.group(1)) : 0);
    }

    /**
     * Guest frames the kernel dropped at the redirect an earlier (crashed) agent left on the VM tap, found when
     * this plumbing replaced it: they never reached an agent. 0 when there was none.
     */
    public long droppedByStaleRedirect()
    {
        return droppedByStaleRedirect;
    }

    private static void undo(final IpRoute net, final String vmTap, final String bridge)
    {
        net.tcQuiet("qdisc", "del", "dev", vmTap, "ingress");
        if (bridge != null && net.ipQuiet("-o", "link", "show", "dev", bridge) != null)
        {
            net.ipQuiet("link", "set", "dev", vmTap, "master", bridge);
        }
    }

    public TapDevice guestTap()
    {
        return guestTap;
    }

    public TapDevice uplinkTap()
    {
        return uplinkTap;
    }

    public String vmTap()
    {
        return vmTap;
    }

    /** Puts the host back: filters removed, the VM tap back on its bridge, agent taps gone. */
    @Override
    public void close()
    {
        if (closed)
        {
            return;
        }
        closed = true;
        guestTap.close();
        uplinkTap.close();
        undo(net, vmTap, bridge);
        try
        {
            Files.deleteIfExists(stateFile);
        }
        catch (final IOException ex)
        {
            LOG.warn("could not remove {}: {}", stateFile, ex.toString());
        }
        LOG.info("nic {}: output commit removed, {} back on bridge {}", vmTap, vmTap, bridge);
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
