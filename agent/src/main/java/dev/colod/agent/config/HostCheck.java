package dev.colod.agent.config;

import dev.colod.agent.vm.HugePages;
import dev.colod.buffer.BackendProvider;
import dev.colod.os.HostTools;
import dev.colod.os.IpRoute;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What this host must have for a valid configuration to run ({@code coloctl config check --host}): commands,
 * device files, the files the YAML names, network namespaces, bridges, each backend's tools, directories colod
 * writes, and the arbiter's endpoints. Every problem is one line naming the key it comes from and what is
 * missing; nothing is changed.
 */
public final class HostCheck
{
    private static final int CONNECT_TIMEOUT_MS = 1000;

    private HostCheck()
    {
    }

    /** Every problem of this host for {@code c}, one line each; empty when it has everything. */
    public static List<String> problems(final ColodConfig c)
    {
        final List<String> p = new ArrayList<>();
        for (final String m : HostTools.missing(List.of("qemu-system-x86_64:qemu-system-x86", "ip:iproute2"), List.of()))
        {
            p.add("this host: " + m);
        }
        directory(p, "runtime-dir", c.runtimeDir);
        directory(p, "ram-dir", c.ramDir);
        directory(p, "state-dir", c.stateDir);
        if (!c.insecure && c.tls != null)
        {
            readable(p, "tls.ca", c.tls.ca);
            readable(p, "tls.cert", c.tls.cert);
            readable(p, "tls.key", c.tls.key);
        }
        if (c.arbiter != null && !c.arbiter.none())
        {
            readable(p, "arbiter.ca", c.arbiter.ca);
            readable(p, "arbiter.cert", c.arbiter.cert);
            readable(p, "arbiter.key", c.arbiter.key);
            final List<String> down = new ArrayList<>();
            for (final String e : c.arbiter.etcd)
            {
                final String why = unreachable(e);
                if (why != null)
                {
                    down.add(e + " (" + why + ")");
                }
            }
            if (!c.arbiter.etcd.isEmpty() && down.size() == c.arbiter.etcd.size())
            {
                p.add("arbiter.etcd: no endpoint answers: " + String.join(", ", down));
            }
        }
        for (int i = 0; i < c.vms.size(); i++)
        {
            vm(p, c, "vms[" + i + "]", c.vms.get(i));
        }
        return p;
    }

    private static void vm(final List<String> p, final ColodConfig c, final String at, final ColodConfig.Vm v)
    {
        if (v.accel == ColodConfig.Accel.KVM && !Files.exists(Path.of("/dev/kvm")))
        {
            p.add(at + ".accel: kvm, but /dev/kvm does not exist on this host (no KVM module, or a VM without nesting)");
        }
        if (v.ramPageSize == ColodConfig.RamPageSize.PAGE_2M) // either host: roles change at failovers
        {
            final String why = HugePages.problem(at + ".ram-page-size: 2m, hugepage-dir",
                Path.of(c.hugepageDir), Path.of(c.hugepageDir).resolve(v.name + ".ram"), (long)v.memoryMib << 20);
            if (why != null)
            {
                p.add(why);
            }
        }
        readable(p, at + ".kernel", v.kernel);
        readable(p, at + ".initrd", v.initrd);
        for (int i = 0; i < v.disks.size(); i++)
        {
            final ColodConfig.Disk d = v.disks.get(i);
            if (d != null && d.image != null && !Files.isRegularFile(Path.of(d.image)))
            {
                p.add(at + ".disks[" + i + "].image: " + d.image + " is not a regular file here");
            }
            if (d != null && d.format == ColodConfig.DiskFormat.QCOW2)
            {
                // the standby applies a qcow2 disk's extents through qemu-nbd, and a base recreates it with qemu-img
                for (final String m : HostTools.missing(List.of("qemu-nbd:qemu-utils", "qemu-img:qemu-utils"), List.of()))
                {
                    p.add(at + ".disks[" + i + "].format: qcow2: " + m);
                }
            }
        }
        if (!v.disks.isEmpty() && v.mode == dev.colod.core.ColoConfig.Mode.HYBRID)
        {
            // the secondary's running copy writes to a qcow2 overlay per copy, made with qemu-img
            for (final String m : HostTools.missing(List.of("qemu-img:qemu-utils"), List.of()))
            {
                p.add(at + ".mode: hybrid with a disk: " + m);
            }
        }
        if (v.netns != null && !Files.exists(Path.of("/run/netns", v.netns)))
        {
            p.add(at + ".netns: network namespace " + v.netns + " does not exist (ip netns add " + v.netns + ")");
            return; // its bridges cannot be looked for
        }
        for (int n = 0; n < v.nics.size(); n++)
        {
            final ColodConfig.Nic nic = v.nics.get(n);
            final String q = at + ".nics[" + n + "]";
            if (nic.bridge != null && new IpRoute(v.netns).ipQuiet("-o", "link", "show", "dev", nic.bridge) == null)
            {
                p.add(q + ".bridge: " + nic.bridge + " does not exist" + (v.netns == null ? "" : " in netns " + v.netns));
            }
            final BackendProvider backend;
            try
            {
                backend = nic.backend();
            }
            catch (final IllegalArgumentException ex)
            {
                p.add(q + ".buffer: " + ex.getMessage());
                continue;
            }
            for (final String m : backend.missing())
            {
                p.add(q + ".buffer: " + backend.name() + " needs " + m);
            }
        }
    }

    private static void readable(final List<String> p, final String key, final String file)
    {
        if (file != null && !Files.isReadable(Path.of(file)))
        {
            p.add(key + ": " + file + (Files.exists(Path.of(file)) ? " is not readable" : " does not exist"));
        }
    }

    /** A directory colod creates and writes: it, or its nearest existing parent, must be writable. */
    private static void directory(final List<String> p, final String key, final String dir)
    {
        Path d = Path.of(dir).toAbsolutePath();
        while (d != null && !Files.exists(d))
        {
            d = d.getParent();
        }
        if (d == null || !Files.isDirectory(d) || !Files.isWritable(d))
        {
            p.add(key + ": " + dir + " cannot be created or written here" + (d == null ? "" : " (" + d + " is not a " +
                "writable directory)"));
        }
    }

    /** Why nothing accepts a TCP connection at {@code url}'s host and port, or null when something does. */
    private static String unreachable(final String url)
    {
        try
        {
            final URI u = URI.create(url);
            final int port = u.getPort() > 0 ? u.getPort() : "https".equals(u.getScheme()) ? 443 : 80;
            try (Socket s = new Socket())
            {
                s.connect(new InetSocketAddress(u.getHost(), port), CONNECT_TIMEOUT_MS);
                return null;
            }
        }
        catch (final IOException | IllegalArgumentException ex)
        {
            return ex.getMessage() == null ? ex.toString() : ex.getMessage();
        }
    }
}
