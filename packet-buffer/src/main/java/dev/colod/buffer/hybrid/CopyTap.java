package dev.colod.buffer.hybrid;

import dev.colod.buffer.net.PlumbingState;
import dev.colod.buffer.tap.TapDevice;
import dev.colod.os.IpRoute;

import java.io.IOException;

/**
 * One NIC of the secondary's running copy, wired to this process only (docs/ARCHITECTURE.md, "Hybrid mode"):
 * <pre>
 *   copy's guest -> QEMU -> copy tap --tc ingress mirred--> agent tap (read here: digested, never sent on)
 *   frames channel => written to the agent tap --tc ingress mirred--> copy tap -> QEMU -> copy's guest
 * </pre>
 * The copy tap is on no bridge, so nothing the copy sends reaches a network. Going through an agent tap without
 * offloads (as the TAP backend's {@code g}) makes the kernel segment the copy's large (GSO) frames as it does the
 * primary's, so both guests' output is compared in the same pieces. The agent tap is not persistent; the copy tap
 * goes with its QEMU, and the filters with the devices.
 */
public final class CopyTap implements AutoCloseable
{
    private final String name;
    private final IpRoute net;
    private final TapDevice agentTap;
    private volatile String copyTap;

    private CopyTap(final String name, final IpRoute net, final TapDevice agentTap)
    {
        this.name = name;
        this.net = net;
        this.agentTap = agentTap;
    }

    /** The agent tap of copy tap {@code copyTap}: at most 15 characters. */
    public static String agentTapName(final String copyTap)
    {
        return PlumbingState.deviceName("ch-", copyTap);
    }

    /**
     * Opens the agent tap for the copies whose NIC is tap {@code copyTap} (in {@code netns}: null for this
     * process's). It stays while copies come and go on that tap name; {@link #wire} each new one.
     */
    public static CopyTap open(final String copyTap, final String netns) throws IOException
    {
        final IpRoute net = new IpRoute(netns);
        final String h = agentTapName(copyTap);
        TapDevice t = null;
        try
        {
            t = TapDevice.open(h);
            if (netns != null)
            {
                new IpRoute(null).ip("link", "set", "dev", h, "netns", netns);
            }
            // no IPv6 link-local: the host must not send frames of its own into the copy's guest
            net.ip("link", "set", "dev", h, "addrgenmode", "none");
            net.ip("link", "set", "dev", h, "up");
            return new CopyTap(h, net, t);
        }
        catch (final IOException | RuntimeException ex)
        {
            if (t != null)
            {
                t.close();
            }
            throw new IOException("opening the running copy's agent tap " + h + " failed: " + ex.getMessage(), ex);
        }
    }

    /** A new copy's QEMU made tap {@code tap}: steer it both ways through the agent tap. */
    public void wire(final String tap) throws IOException
    {
        try
        {
            net.ip("link", "set", "dev", tap, "addrgenmode", "none");
            net.ip("link", "set", "dev", tap, "up");
            net.tcQuiet("qdisc", "del", "dev", name, "ingress");
            PlumbingState.redirect(net, tap, name);
            PlumbingState.redirect(net, name, tap);
            copyTap = tap;
        }
        catch (final IOException | RuntimeException ex)
        {
            throw new IOException("wiring the running copy's tap " + tap + " to " + name + " failed: " +
                ex.getMessage(), ex);
        }
    }

    /** The copy tap last wired, or null. */
    public String copyTap()
    {
        return copyTap;
    }

    /** The agent tap: read what the copy's guest sends, write what it is to receive. */
    public TapDevice agentTap()
    {
        return agentTap;
    }

    @Override
    public void close()
    {
        agentTap.close();
    }
}
