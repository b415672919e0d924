package dev.colod.netfilter;

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
import java.util.Properties;

/**
 * Steers a VM tap's bridged IPv4 and IPv6 frames into an NFQUEUE: bridge netfilter on, then
 * {@code iptables/ip6tables -I FORWARD -m physdev --physdev-in TAP -m comment --comment colod:TAG -j NFQUEUE
 * --queue-num N} (no --queue-bypass: fail-closed). The sysctls' old values and the rules are written to a state
 * file first; {@link #close()} and, after a crash, {@link #recover(Path)} put everything back as found.
 */
public final class NfqueueRules implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(NfqueueRules.class);
    private static final String[] SYSCTLS = {"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"};

    private final String netns;
    private final List<String> rule;
    private final Properties saved;
    private final Path stateFile;
    private boolean closed;

    private NfqueueRules(final String netns, final List<String> rule, final Properties saved, final Path stateFile)
    {
        this.netns = netns;
        this.rule = rule;
        this.saved = saved;
        this.stateFile = stateFile;
    }

    static List<String> rule(final String vmTap, final int queue, final String tag)
    {
        return List.of("FORWARD", "-m", "physdev", "--physdev-in", vmTap, "-m", "comment", "--comment", "colod:" + tag,
            "-j", "NFQUEUE", "--queue-num", Integer.toString(queue));
    }

    private static List<String> cmd(final String netns, final String tool, final String op, final List<String> rule)
    {
        final List<String> c = new ArrayList<>();
        if (netns != null)
        {
            c.addAll(List.of("ip", "netns", "exec", netns));
        }
        c.add(tool);
        c.add("-w");
        c.add(op);
        c.addAll(rule);
        return c;
    }

    private static String sysctl(final String netns, final String key) throws IOException
    {
        final List<String> c = new ArrayList<>();
        if (netns != null)
        {
            c.addAll(List.of("ip", "netns", "exec", netns));
        }
        c.addAll(List.of("sysctl", "-n", key));
        return IpRoute.exec(c).trim();
    }

    private static void setSysctl(final String netns, final String key, final String value) throws IOException
    {
        final List<String> c = new ArrayList<>();
        if (netns != null)
        {
            c.addAll(List.of("ip", "netns", "exec", netns));
        }
        c.addAll(List.of("sysctl", "-qw", key + "=" + value));
        IpRoute.exec(c);
    }

    public static NfqueueRules install(final String vmTap, final int queue, final String tag, final String netns,
        final Path runDir) throws IOException
    {
        final Properties p = new Properties();
        p.setProperty("netns", netns == null ? "" : netns);
        p.setProperty("vm-tap", vmTap);
        p.setProperty("queue", Integer.toString(queue));
        p.setProperty("tag", tag);
        for (final String s : SYSCTLS)
        {
            p.setProperty(s, sysctl(netns, s));
        }
        Files.createDirectories(runDir);
        final Path state = runDir.resolve("nfqueue-" + vmTap + ".state");
        try (Writer w = Files.newBufferedWriter(state))
        {
            p.store(w, "colod NFQUEUE rules; removed on clean stop, undone by recovery after a crash");
        }
        final List<String> rule = rule(vmTap, queue, tag);
        final NfqueueRules r = new NfqueueRules(netns, rule, p, state);
        try
        {
            for (final String s : SYSCTLS)
            {
                setSysctl(netns, s, "1");
            }
            deleteRules(netns, rule); // idempotent: a copy left by an earlier run is replaced, never doubled
            IpRoute.exec(cmd(netns, "iptables", "-I", rule));
            IpRoute.exec(cmd(netns, "ip6tables", "-I", rule));
        }
        catch (final IOException ex)
        {
            r.close();
            throw new IOException("steering " + vmTap + " into NFQUEUE " + queue + " failed: " + ex.getMessage(), ex);
        }
        LOG.info("nic {}: IPv4/IPv6 frames from {} go to NFQUEUE {}", vmTap, vmTap, queue);
        return r;
    }

    @Override
    public void close()
    {
        if (closed)
        {
            return;
        }
        closed = true;
        undo(netns, rule, saved);
        try
        {
            Files.deleteIfExists(stateFile);
        }
        catch (final IOException ex)
        {
            LOG.warn("could not remove {}: {}", stateFile, ex.toString());
        }
    }

    private static void undo(final String netns, final List<String> rule, final Properties saved)
    {
        deleteRules(netns, rule);
        restoreSysctls(netns, saved);
    }

    private static void deleteRules(final String netns, final List<String> rule)
    {
        for (final String tool : new String[]{"iptables", "ip6tables"})
        {
            try
            {
                // delete every copy (an earlier crash may have left one)
                while (true)
                {
                    IpRoute.exec(cmd(netns, tool, "-D", rule));
                }
            }
            catch (final IOException done)
            {
                // no (more) such rule
            }
        }
    }

    private static void restoreSysctls(final String netns, final Properties saved)
    {
        for (final String s : SYSCTLS)
        {
            final String v = saved.getProperty(s);
            if (v != null)
            {
                try
                {
                    setSysctl(netns, s, v);
                }
                catch (final IOException ex)
                {
                    LOG.warn("could not restore {}={}: {}", s, v, ex.getMessage());
                }
            }
        }
    }

    /** Undoes what a crashed agent left (rules, sysctls); returns one line per thing repaired. */
    public static List<String> recover(final Path runDir) throws IOException
    {
        final List<String> done = new ArrayList<>();
        if (!Files.isDirectory(runDir))
        {
            return done;
        }
        try (var files = Files.list(runDir))
        {
            for (final Path f : (Iterable<Path>)files.filter(x -> x.getFileName().toString().startsWith("nfqueue-"))::iterator)
            {
                final Properties p = new Properties();
                try (Reader r = Files.newBufferedReader(f))
                {
                    p.load(r);
                }
                final String ns = p.getProperty("netns", "").isEmpty() ? null : p.getProperty("netns");
                undo(ns, rule(p.getProperty("vm-tap"), Integer.parseInt(p.getProperty("queue")), p.getProperty("tag")), p);
                done.add("removed NFQUEUE rules for " + p.getProperty("vm-tap") + " and restored bridge netfilter sysctls");
                Files.deleteIfExists(f);
            }
        }
        return done;
    }
}
