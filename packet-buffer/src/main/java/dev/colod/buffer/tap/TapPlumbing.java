package dev.colod.buffer.tap;

import dev.colod.buffer.net.PlumbingState;
import dev.colod.os.IpRoute;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Puts the agent in the path of one VM NIC without touching QEMU (docs/ARCHITECTURE.md, "data path"):
 * <pre>
 *   guest -> vm tap --tc ingress mirred--> g (agent tap) => agent holds => u (agent tap, bridge port) -> bridge
 *   bridge -> u => agent passes => g --tc ingress mirred--> vm tap -> guest
 * </pre>
 * The VM's tap leaves the bridge, {@code u} takes its place. What was changed is written to a state file in
 * the runtime directory before it is changed ({@link PlumbingState}), so that after a crash of the agent
 * {@link PlumbingState#recover(Path)} can put the host back as it was. The agent taps themselves are not
 * persistent: the kernel removes them when the agent's descriptors close, also on a crash.
 */
public final class TapPlumbing implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(TapPlumbing.class);
    /** In {@code ip -s -j link show}: a device's transmit drops (for a tap: its queue to the reader was full). */
    private static final Pattern TX_DROPPED = Pattern.compile(
        "\"tx\":\\{\"bytes\":\\d+,\"packets\":\\d+,\"errors\":\\d+,\"dropped\":(\\d+)");

    private final String vmTap;
    private final String bridge;
    private final IpRoute net;
    private final Path stateFile;
    private final TapDevice guestTap;
    private final TapDevice uplinkTap;
    private final long droppedByStaleRedirect;
    /** Read by {@link #notRedirected()} from the threads that ask for statistics. */
    private volatile boolean closed;

    private TapPlumbing(final String vmTap, final String bridge, final IpRoute net, final Path stateFile,
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
        return PlumbingState.deviceName("cg-", vmTap);
    }

    public static String uplinkTapName(final String vmTap)
    {
        return PlumbingState.deviceName("cu-", vmTap);
    }

    /**
     * Steers {@code vmTap} (in {@code netns}, null for the agent's own) through two new agent taps.
     * {@code bridge}: the bridge to put the uplink tap on; null to take the VM tap's current master.
     */
    public static TapPlumbing install(final String vmTap, final String bridge, final String netns, final Path runDir)
        throws IOException
    {
        final PlumbingState.Site site = PlumbingState.locate(vmTap, bridge, netns, runDir);
        final IpRoute net = site.net();
        final int mtuValue = site.mtu();
        final String br = site.bridge();
        final String g = guestTapName(vmTap);
        final String u = uplinkTapName(vmTap);
        final Path state = PlumbingState.writeState(runDir, site, vmTap, Map.of("guest-tap", g, "uplink-tap", u));

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
            final long stale = PlumbingState.notRedirected(net, vmTap);
            net.tcQuiet("qdisc", "del", "dev", vmTap, "ingress");
            net.ip("link", "set", "dev", u, "mtu", Integer.toString(mtuValue), "master", br, "up");
            PlumbingState.redirect(net, vmTap, g);
            PlumbingState.redirect(net, g, vmTap);
            LOG.info("nic {}: steering {} through {} (held) and {} (bridge {})", vmTap, vmTap, g, u, br);
            return new TapPlumbing(vmTap, br, net, state, gt, ut, stale);
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
            PlumbingState.undo(net, vmTap, br);
            Files.deleteIfExists(state);
            throw new IOException("setting up output commit on " + vmTap + " failed: " + ex.getMessage(), ex);
        }
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
        return PlumbingState.notRedirected(net, vmTap) + (m != null && m.find() ? Long.parseLong(m.group(1)) : 0);
    }

    /**
     * Guest frames the kernel dropped at the redirect an earlier (crashed) agent left on the VM tap, found when
     * this plumbing replaced it: they never reached an agent. 0 when there was none.
     */
    public long droppedByStaleRedirect()
    {
        return droppedByStaleRedirect;
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
        PlumbingState.undo(net, vmTap, bridge);
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

}
