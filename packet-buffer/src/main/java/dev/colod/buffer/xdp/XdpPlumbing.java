package dev.colod.buffer.xdp;

import dev.colod.buffer.net.PlumbingState;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * Puts the XDP data path on one VM NIC (docs/ARCHITECTURE.md, "Data path (XDP backend)"):
 * <pre>
 *   guest -> vm tap --XDP hold: redirect into the AF_XDP socket--> UMEM (held) => release: AF_XDP TX on xu
 *            -> veth peer xb (bridge port) -> bridge
 *   bridge -> xb -> xu --XDP inbound: bpf_redirect--> vm tap -> guest          (in the kernel, never held)
 * </pre>
 * The VM's tap leaves the bridge and {@code xb} takes its place. Both programs are attached through BPF links
 * this process owns: if it dies they detach, and the VM's tap, on no bridge, lets nothing out. What was changed
 * is written first to a state file that {@link dev.colod.buffer.net.TapPlumbing#recover} understands (it deletes
 * the veth pair and puts the VM's tap back on its bridge), like the TAP backend's.
 */
public final class XdpPlumbing implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(XdpPlumbing.class);
    /** The UMEM's chunk: a frame of up to this size minus the kernel's headroom fits; MTU 1500 does. */
    public static final int MAX_MTU = 1500;

    public final String vmTap;
    public final String uplink;
    public final String bridgePort;
    public final String netns;
    public final int vmTapIfindex;
    public final int uplinkIfindex;
    /** The XSKMAP the hold program redirects into (queue index to AF_XDP socket). */
    public final int xskMap;
    /** How the programs are attached: "native" (driver) or "generic". */
    public final String mode;
    private final String bridge;
    private final IpRoute net;
    private final Path stateFile;
    private final int holdProg;
    private final int inboundProg;
    private final int holdLink;
    private final int inboundLink;
    private final int inboundCounters;
    private volatile boolean closed;

    private XdpPlumbing(final String vmTap, final String bridge, final String netns, final IpRoute net,
        final Path stateFile, final int[] fds, final String mode) throws IOException
    {
        this.vmTap = vmTap;
        this.bridge = bridge;
        this.netns = netns;
        this.net = net;
        this.stateFile = stateFile;
        this.uplink = uplinkName(vmTap);
        this.bridgePort = bridgePortName(vmTap);
        this.vmTapIfindex = fds[0];
        this.uplinkIfindex = fds[1];
        this.xskMap = fds[2];
        this.holdProg = fds[3];
        this.inboundProg = fds[4];
        this.holdLink = fds[5];
        this.inboundLink = fds[6];
        this.inboundCounters = fds[7];
        this.mode = mode;
    }

    public static String uplinkName(final String vmTap)
    {
        return PlumbingState.deviceName("xu-", vmTap);
    }

    public static String bridgePortName(final String vmTap)
    {
        return PlumbingState.deviceName("xb-", vmTap);
    }

    /** The interface index of {@code dev} in {@code net}'s namespace. */
    static int ifindex(final IpRoute net, final String dev) throws IOException
    {
        return Integer.parseInt(net.ip("-o", "link", "show", "dev", dev).split(":")[0].trim());
    }

    /**
     * Steers {@code vmTap} (in {@code netns}, null for the agent's own) through the XDP data path. {@code bridge}:
     * the bridge for the uplink; null to take the VM tap's current master.
     */
    public static XdpPlumbing install(final String vmTap, final String bridge, final String netns, final Path runDir)
        throws IOException
    {
        final PlumbingState.Site site = PlumbingState.locate(vmTap, bridge, netns, runDir);
        final IpRoute net = site.net();
        final int mtuValue = site.mtu();
        final String br = site.bridge();
        if (mtuValue > MAX_MTU)
        {
            throw new IOException("vm tap " + vmTap + " has MTU " + mtuValue + "; the xdp backend carries frames of MTU " +
                MAX_MTU + " at most (use buffer: tap for jumbo frames)");
        }
        final String u = uplinkName(vmTap);
        final String b = bridgePortName(vmTap);
        // deleting one end of the veth deletes both
        final Path state = PlumbingState.writeState(runDir, site, vmTap, Map.of("uplink-tap", u, "backend", "xdp"));
        final int[] fds = {-1, -1, -1, -1, -1, -1, -1, -1};
        try
        {
            net.ipQuiet("link", "del", "dev", u); // a crashed agent's, if recovery did not run
            net.ip("link", "add", u, "type", "veth", "peer", "name", b);
            for (final String d : new String[]{u, b})
            {
                net.ip("link", "set", "dev", d, "addrgenmode", "none");
                net.ip("link", "set", "dev", d, "mtu", Integer.toString(mtuValue));
            }
            // XDP carries frames without the kernel's checksum-offload state: what the bridge sends the guest must
            // have its checksums (and segments) made before it leaves xb, so xb offers no offload to compute them
            net.ethtool("-K", b, "tx", "off");
            net.ip("link", "set", "dev", vmTap, "nomaster");
            net.ip("link", "set", "dev", b, "master", br, "up");
            net.ip("link", "set", "dev", u, "up");
            fds[0] = ifindex(net, vmTap);
            fds[1] = ifindex(net, u);
            fds[2] = Bpf.mapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, 1, "colod_xsks");
            fds[3] = Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_hold", XdpPrograms.holdEgress(fds[2]));
            fds[7] = Bpf.mapCreate(Bpf.BPF_MAP_TYPE_ARRAY, 4, 16, 1, "colod_inbound");
            fds[4] = Bpf.progLoad(Bpf.BPF_PROG_TYPE_XDP, Bpf.BPF_XDP, "colod_inbound",
                XdpPrograms.redirectInbound(fds[0], fds[7]));
            final String[] mode = {"native"};
            fds[5] = attach(netns, fds[3], fds[0], vmTap, mode);
            fds[6] = attach(netns, fds[4], fds[1], u, mode);
            LOG.info("nic {}: XDP data path ({}): egress held in AF_XDP, released through {} (bridge {} via {}), inbound " +
                "redirected in the kernel", vmTap, mode[0], u, br, b);
            return new XdpPlumbing(vmTap, br, netns, net, state, fds, mode[0]);
        }
        catch (final IOException | RuntimeException ex)
        {
            for (int i = fds.length - 1; i >= 2; i--)
            {
                closeQuietly(fds[i]);
            }
            net.ipQuiet("link", "del", "dev", u);
            net.ipQuiet("link", "set", "dev", vmTap, "master", br);
            Files.deleteIfExists(state);
            throw new IOException("setting up the xdp data path on " + vmTap + " failed: " + ex.getMessage(), ex);
        }
    }

    /** Native (driver) mode if the device has it, else generic; {@code mode[0]} says which one every attach got. */
    private static int attach(final String netns, final int prog, final int ifindex, final String dev, final String[] mode)
        throws IOException
    {
        try
        {
            return in(netns, () -> Bpf.attachXdp(prog, ifindex, Bpf.XDP_FLAGS_DRV_MODE, dev));
        }
        catch (final IOException native_)
        {
            try
            {
                final int l = in(netns, () -> Bpf.attachXdp(prog, ifindex, Bpf.XDP_FLAGS_SKB_MODE, dev));
                mode[0] = "generic";
                return l;
            }
            catch (final IOException generic)
            {
                generic.addSuppressed(native_);
                throw new IOException("XDP cannot attach to " + dev + " in native or generic mode (kernel needs " +
                    "CONFIG_XDP_SOCKETS and BPF links, Linux 5.9+): " + generic.getMessage(), generic);
            }
        }
    }

    /** Frames and bytes the inbound program has redirected to the VM's tap so far. */
    public long[] inbound() throws IOException
    {
        return closed ? new long[2] : Bpf.mapLookupLongs(inboundCounters, 0, 16);
    }

    /** Runs {@code task} in {@code netns} (null: right here, in this process's namespace). */
    static <T> T in(final String netns, final Callable<T> task) throws IOException
    {
        if (netns != null)
        {
            return Netns.call(netns, task);
        }
        try
        {
            return task.call();
        }
        catch (final IOException | RuntimeException ex)
        {
            throw ex;
        }
        catch (final Exception ex)
        {
            throw new IOException(ex);
        }
    }

    private static void closeQuietly(final int fd)
    {
        if (fd >= 0)
        {
            try
            {
                Bpf.close(fd, "bpf object");
            }
            catch (final IOException ignore)
            {
                // already gone
            }
        }
    }

    /**
     * What the kernel does when this process dies: its BPF descriptors close (the programs detach), the devices
     * and the state file stay as they are. For tests of crash behaviour and recovery.
     */
    public void abandon()
    {
        closed = true;
        for (final int fd : new int[]{holdLink, inboundLink, holdProg, inboundProg, xskMap, inboundCounters})
        {
            closeQuietly(fd);
        }
    }

    /** Puts the host back: programs detached, veth pair gone, the VM tap back on its bridge. */
    @Override
    public void close()
    {
        if (closed)
        {
            return;
        }
        closed = true;
        for (final int fd : new int[]{holdLink, inboundLink, holdProg, inboundProg, xskMap, inboundCounters})
        {
            closeQuietly(fd);
        }
        net.ipQuiet("link", "del", "dev", uplink);
        if (net.ipQuiet("-o", "link", "show", "dev", bridge) != null)
        {
            net.ipQuiet("link", "set", "dev", vmTap, "master", bridge);
        }
        try
        {
            Files.deleteIfExists(stateFile);
        }
        catch (final IOException ex)
        {
            LOG.warn("could not remove {}: {}", stateFile, ex.toString());
        }
        LOG.info("nic {}: xdp data path removed, {} back on bridge {}", vmTap, vmTap, bridge);
    }
}
