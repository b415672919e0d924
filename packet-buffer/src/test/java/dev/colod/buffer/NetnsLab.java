package dev.colod.buffer;

import dev.colod.buffer.tap.TapDevice;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Network namespaces a test creates for itself, with addresses from 198.18.0.0/15, and removes again (also when
 * the test fails: use try-with-resources). Sockets are opened inside a namespace by a thread that entered it
 * with setns(2), so the test's JVM stays where it is.
 *
 * <pre>
 *   guest ns: vmB 198.18.0.2 ==veth== vmA (the "VM tap") ┐
 *                                                         host ns: bridge br0
 *   client ns: cB 198.18.0.3 ==veth== cA ────────────────┘
 * </pre>
 */
public final class NetnsLab implements AutoCloseable
{
    private static final AtomicInteger SEQ = new AtomicInteger();
    public static final String GUEST_IP = "198.18.0.2";
    public static final String CLIENT_IP = "198.18.0.3";

    public final String host;
    public final String guest;
    public final String client;
    private final List<String> namespaces = new ArrayList<>();

    /** Fails (as root) or skips (not root) the calling test, with the reason, unless namespaces, TAP and tc are usable. */
    public static void requireUsable()
    {
        Prerequisites.require("root network namespaces and TAP", unusableCause());
    }

    private static String unusableCause()
    {
        if (!"root".equals(System.getProperty("user.name")))
        {
            return "not running as root";
        }
        try
        {
            IpRoute.exec(List.of("tc", "-V"));
            IpRoute.exec(List.of("ip", "netns", "list"));
        }
        catch (final IOException ex)
        {
            return "iproute2 missing: " + ex.getMessage();
        }
        return TapDevice.unavailabilityCause();
    }

    public NetnsLab(final boolean staticNeighbours) throws IOException
    {
        final String id = ProcessHandle.current().pid() % 100000 + "-" + SEQ.incrementAndGet();
        host = "colot-h-" + id;
        guest = "colot-g-" + id;
        client = "colot-c-" + id;
        try
        {
            for (final String ns : List.of(host, guest, client))
            {
                Netns.add(ns);
                namespaces.add(ns);
                sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1");
                sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1");
                new IpRoute(ns).ip("link", "set", "lo", "up");
            }
            final IpRoute h = new IpRoute(host);
            h.ip("link", "add", "br0", "type", "bridge");
            h.ip("link", "set", "br0", "up");
            h.ip("link", "add", "vmA", "type", "veth", "peer", "name", "vmB", "netns", guest);
            h.ip("link", "add", "cA", "type", "veth", "peer", "name", "cB", "netns", client);
            h.ip("link", "set", "vmA", "master", "br0", "up");
            h.ip("link", "set", "cA", "master", "br0", "up");
            final IpRoute g = new IpRoute(guest);
            g.ip("addr", "add", GUEST_IP + "/24", "dev", "vmB");
            g.ip("link", "set", "vmB", "up");
            final IpRoute c = new IpRoute(client);
            c.ip("addr", "add", CLIENT_IP + "/24", "dev", "cB");
            c.ip("link", "set", "cB", "up");
            if (staticNeighbours)
            {
                g.ip("neigh", "replace", CLIENT_IP, "lladdr", mac(client, "cB"), "dev", "vmB", "nud", "permanent");
                c.ip("neigh", "replace", GUEST_IP, "lladdr", mac(guest, "vmB"), "dev", "cB", "nud", "permanent");
            }
        }
        catch (final IOException | RuntimeException ex)
        {
            close();
            throw ex;
        }
    }

    public static void sysctl(final String ns, final String setting) throws IOException
    {
        Netns.sysctl(ns, setting);
    }

    public static String mac(final String ns, final String dev) throws IOException
    {
        final String out = new IpRoute(ns).ip("-o", "link", "show", "dev", dev);
        final java.util.regex.Matcher m = java.util.regex.Pattern.compile("link/ether (\\S+)").matcher(out);
        if (!m.find())
        {
            throw new IOException("no MAC for " + dev + " in " + ns + ": " + out);
        }
        return m.group(1);
    }

    /** Runs {@code task} on a thread that has entered namespace {@code ns}; sockets it opens live there. */
    public <T> T in(final String ns, final Callable<T> task) throws Exception
    {
        return Netns.call(ns, task);
    }

    /** Moves the calling thread into namespace {@code ns}. */
    public static void enter(final String ns) throws IOException
    {
        Netns.enter(ns);
    }

    @Override
    public void close()
    {
        for (final String ns : namespaces)
        {
            final String err = Netns.delete(ns);
            if (err != null)
            {
                System.err.println("could not delete netns " + ns + ": " + err);
            }
        }
        namespaces.clear();
    }
}
