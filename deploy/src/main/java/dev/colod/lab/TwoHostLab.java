package dev.colod.lab;

import dev.colod.agent.Closers;
import dev.colod.agent.ProtectedVm;
import dev.colod.buffer.hybrid.Comparer;
import dev.colod.agent.arbiter.EtcdGateway;
import dev.colod.agent.arbiter.LocalEtcd;
import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.config.ConfigLoader;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.buffer.NicStats;
import dev.colod.core.ColoConfig;
import dev.colod.core.ExitEvent;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.os.IpRoute;
import dev.colod.os.Netns;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.function.UnaryOperator;

/**
 * Two hosts, a switch and a client on one machine, as network namespaces, with the real test guest: what the
 * demo runs and what the end-to-end tests drive. Each host's side of the VM is colod's own wiring
 * ({@link ProtectedVm}) from a colod.yaml the lab writes, so what the tests prove is what the daemon runs; the
 * lab only adds namespaced sockets and, for tests, observers of checkpoints or a control run without output
 * commit. Test scaffolding: not part of what install.sh ships.
 * <pre>
 *   pri: vt0 (QEMU tap) -> [colod output commit] -> br0 -> p-up ==veth== s-p ┐
 *   sec: vt0 (failover QEMU tap) ----------------> br0 -> s-up ==veth== s-s ┤ sw: sw0
 *   cli: c0 198.18.0.100 ================================================ s-c ┘
 *   replication: pri rp 198.19.0.1 ==veth== rs 198.19.0.2 sec
 *   arbiter: etcd in arb on 198.19.1.1 (pri p-a 198.19.1.2) and 198.19.2.1 (sec s-a 198.19.2.2)
 * </pre>
 */
public final class TwoHostLab
{
    public static final String GUEST_IP = "198.18.0.10";
    public static final int PORT = 7600;

    private TwoHostLab()
    {
    }

    /** How a run protects the VM. */
    public record Protection(boolean outputCommit, long checkpointDelayMs, boolean hotStandby, ColoConfig.Mode mode,
                             ColodConfig.WriteTracking tracking, UnaryOperator<VmStateSource> source,
                             Function<StandbyImage, VmStateSink> sink, boolean replicateDisk)
    {
        /**
         * Strict mode, kernel write tracking, output commit on, checkpoints every {@code checkpointDelayMs}, cold
         * standby, nothing observed.
         */
        public static Protection of(final long checkpointDelayMs)
        {
            return new Protection(true, checkpointDelayMs, false, ColoConfig.Mode.STRICT, ColodConfig.WriteTracking.KERNEL,
                s -> s, i -> i, true);
        }

        public Protection withoutOutputCommit()
        {
            return new Protection(false, checkpointDelayMs, hotStandby, mode, tracking, source, sink, replicateDisk);
        }

        public Protection hot()
        {
            return new Protection(outputCommit, checkpointDelayMs, true, mode, tracking, source, sink, replicateDisk);
        }

        public Protection in(final ColoConfig.Mode m)
        {
            return new Protection(outputCommit, checkpointDelayMs, hotStandby, m, tracking, source, sink, replicateDisk);
        }

        public Protection tracking(final ColodConfig.WriteTracking t)
        {
            return new Protection(outputCommit, checkpointDelayMs, hotStandby, mode, t, source, sink, replicateDisk);
        }

        /** A control run: the guest's disk is not replicated (both hosts configure it with replicate: false). */
        public Protection withoutDiskReplication()
        {
            return new Protection(outputCommit, checkpointDelayMs, hotStandby, mode, tracking, source, sink, false);
        }

        public Protection observed(final UnaryOperator<VmStateSource> src, final Function<StandbyImage, VmStateSink> snk)
        {
            return new Protection(outputCommit, checkpointDelayMs, hotStandby, mode, tracking, src, snk, replicateDisk);
        }
    }

    /** Namespaces, VMs and engines of one run; closing removes all of it, also after a failure. */
    public static final class Lab implements AutoCloseable
    {
        private final String id = "e" + ProcessHandle.current().pid() % 100000 + "-" + System.nanoTime() % 10000;
        public final String sw = "colot-sw-" + id;
        public final String pri = "colot-p-" + id;
        public final String sec = "colot-s-" + id;
        public final String cli = "colot-c-" + id;
        public final String arb = "colot-a-" + id;
        public final Path runDir;
        private final Path guest;
        private final int memoryMiB;
        private final List<String> namespaces = new ArrayList<>();
        private final Closers closers = new Closers(ex -> System.err.println("cleanup: " + ex));
        private final MultiThreadIoEventLoopGroup loops = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        private final LinkedBlockingQueue<ExitEvent> secondaryExits = new LinkedBlockingQueue<>();
        private ProtectedVm primary;
        private ProtectedVm secondary;
        private boolean outputCommit = true;
        private final boolean arbitrated;
        /** The guest's disk size in MiB, 0 for a diskless guest. */
        private int diskMiB;
        /** Replication without TLS (benchmarks that separate the link's crypto from the rest). */
        private boolean plaintext;
        /** The output-commit backend of the VM's NIC. */
        private ColodConfig.Buffer buffer = ColodConfig.Buffer.TAP;
        /** Null: the default (on); else the primary's output-trigger setting. */
        private Boolean outputTrigger;
        /** More settings of the VM, as YAML lines (e.g. "output-linger-us: 500"). */
        private final List<String> vmOptions = new ArrayList<>();
        private boolean diskBoot;
        /** The data disk ({@link #diskImage}) is qcow2, not raw. */
        private boolean dataQcow2;
        /** UEFI firmware (OVMF) with a variable store per host ({@link #uefiVars}). */
        private boolean uefi;
        /** The format of a system disk that comes first, before the data disk; null: none. */
        private ColodConfig.DiskFormat systemDisk;
        private final java.util.Set<String> offline = java.util.concurrent.ConcurrentHashMap.newKeySet();
        private LocalEtcd etcd;
        /** {@code ram-page-size: 2m}: the hugetlbfs mount this lab made for the primary's RAM, else null. */
        private Path hugepageDir;

        public Lab(final Path guest) throws Exception
        {
            this(guest, 128);
        }

        public Lab(final Path guest, final int memoryMiB) throws Exception
        {
            this(guest, memoryMiB, true);
        }

        /** {@code arbitrated}: etcd runs in its own namespace and both hosts' colod use it; else {@code arbiter: none}. */
        public Lab(final Path guest, final int memoryMiB, final boolean arbitrated) throws Exception
        {
            this.guest = guest;
            this.memoryMiB = memoryMiB;
            this.arbitrated = arbitrated;
            // an earlier lab's RAM files stay mapped (colod's MappedByteBuffers), their tmpfs pages with them, until a
            // GC: a JVM that runs labs of several GiB in turn (VmBench) would run out of memory without this
            System.gc();
            runDir = Files.createTempDirectory("colot-" + id);
            closers.add(() -> deleteTree(runDir));
            closers.add(() -> loops.shutdownGracefully(0, 1, TimeUnit.SECONDS));
            try
            {
                for (final String ns : List.of(sw, pri, sec, cli, arb))
                {
                    Netns.add(ns);
                    namespaces.add(ns);
                    Netns.sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1");
                    Netns.sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1");
                    new IpRoute(ns).ip("link", "set", "lo", "up");
                }
                final IpRoute s = new IpRoute(sw);
                s.ip("link", "add", "sw0", "type", "bridge");
                s.ip("link", "set", "sw0", "up");
                for (final String role : List.of("primary", "secondary"))
                {
                    final IpRoute h = new IpRoute(ns(role));
                    h.ip("link", "add", "br0", "type", "bridge");
                    h.ip("link", "set", "br0", "up");
                    h.ip("tuntap", "add", "dev", "vt0", "mode", "tap");
                    h.ip("link", "set", "vt0", "master", "br0", "up");
                    linkUplink(role);
                }
                final IpRoute c = new IpRoute(cli);
                c.ip("link", "add", "c0", "type", "veth", "peer", "name", "s-c", "netns", sw);
                c.ip("addr", "add", "198.18.0.100/24", "dev", "c0");
                c.ip("link", "set", "c0", "up");
                s.ip("link", "set", "s-c", "master", "sw0", "up");
                // conntrack counts bytes of every connection from its start (resetStreamAfter's connbytes match
                // needs it on entries made before its rule)
                exec(List.of("ip", "netns", "exec", pri, "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"));
                linkReplication();
                // mutual TLS: a lab CA and one certificate per host, named by its replication address
                final dev.colod.agent.tls.Certs.Issued ca = dev.colod.agent.tls.Certs.authority("colod lab CA",
                    java.time.Duration.ofDays(1));
                ca.write(runDir.resolve("tls"), "ca");
                for (final String role : List.of("primary", "secondary"))
                {
                    dev.colod.agent.tls.Certs.host(ca, ip(role), java.time.Duration.ofDays(1)).write(runDir.resolve("tls"),
                        role);
                }
                if (arbitrated)
                {
                    linkArbiter("primary");
                    linkArbiter("secondary");
                    startEtcd();
                }
            }
            catch (final Exception ex)
            {
                close();
                throw ex;
            }
        }

        /** The link from the host that starts as {@code role} to the etcd namespace. */
        private void linkArbiter(final String role) throws IOException
        {
            final int net = "primary".equals(role) ? 1 : 2;
            final String here = "primary".equals(role) ? "p-a" : "s-a";
            final String there = "primary".equals(role) ? "a-p" : "a-s";
            final IpRoute a = new IpRoute(arb);
            a.ip("link", "add", there, "type", "veth", "peer", "name", here, "netns", ns(role));
            a.ip("addr", "add", "198.19." + net + ".1/24", "dev", there);
            a.ip("link", "set", there, "up");
            final IpRoute h = new IpRoute(ns(role));
            h.ip("addr", "add", "198.19." + net + ".2/24", "dev", here);
            h.ip("link", "set", here, "up");
        }

        /** Starts (or restarts, on the same data) the lab's etcd. */
        public void startEtcd() throws Exception
        {
            final LocalEtcd e = LocalEtcd.start(List.of("198.19.1.1", "198.19.2.1"), 2379, 2380, arb,
                runDir.resolve("etcd"), runDir.resolve("etcd.log"));
            if (etcd == null)
            {
                closers.add(() -> etcd.close()); // the last one started
            }
            etcd = e;
        }

        /** etcd dies (SIGKILL). */
        public void killEtcd()
        {
            etcd.close();
        }

        /** Cuts (or, with {@code cut} false, heals) the link between the host that starts as {@code role} and etcd. */
        public void cutFromEtcd(final String role, final boolean cut) throws IOException
        {
            new IpRoute(ns(role)).ip("link", "set", "primary".equals(role) ? "p-a" : "s-a", cut ? "down" : "up");
        }

        /**
         * Cuts (or heals) the replication link: both ways (link down), or only what the host that starts as
         * {@code from} sends (dropped by iptables in its namespace).
         */
        public void cutReplication(final String from, final boolean bothWays, final boolean cut) throws IOException
        {
            if (bothWays)
            {
                new IpRoute(pri).ip("link", "set", "rp", cut ? "down" : "up");
                return;
            }
            iptables(ns(from), cut ? "-I" : "-D", List.of("OUTPUT", "-o", "primary".equals(from) ? "rp" : "rs", "-j",
                "DROP"));
        }

        /**
         * Resets the replication stream at a chosen byte: once the primary's replication connection has carried
         * {@code bytes} (both directions, counted by conntrack since it first saw the connection), whatever the
         * primary sends on it is answered with a TCP reset (iptables connbytes + REJECT in its namespace); the rule
         * goes as soon as it hit, so the next connection is not cut. Returns false if nothing hit it within 60 s.
         */
        public boolean resetStreamAfter(final long bytes) throws IOException, InterruptedException
        {
            final List<String> rule = List.of("OUTPUT", "-o", "rp", "-p", "tcp", "--dport", Integer.toString(PORT),
                "-m", "connbytes", "--connbytes", bytes + ":", "--connbytes-dir", "both", "--connbytes-mode", "bytes",
                "-j", "REJECT", "--reject-with", "tcp-reset");
            iptables(pri, "-I", rule);
            try
            {
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (System.nanoTime() - deadline < 0)
                {
                    // the first rule's packet count: "Chain OUTPUT ...", the header, then our rule
                    final String[] lines = iptables(pri, "-L", List.of("OUTPUT", "-v", "-x", "-n")).split("\n");
                    if (lines.length > 2 && Long.parseLong(lines[2].trim().split("\\s+")[0]) > 0)
                    {
                        return true;
                    }
                    Thread.sleep(2);
                }
                return false;
            }
            finally
            {
                iptables(pri, "-D", rule);
            }
        }

        /**
         * The primary's replication link limited to {@code rate} (tc's notation, e.g. {@code 400mbit}; null: no limit)
         * by a token bucket on its side (a short queue: heartbeats wait at most ~100 ms behind checkpoint bytes).
         */
        public void limitReplication(final String rate) throws IOException
        {
            if (rate == null)
            {
                exec(List.of("tc", "-n", pri, "qdisc", "del", "dev", "rp", "root"));
                return;
            }
            exec(List.of("tc", "-n", pri, "qdisc", "replace", "dev", "rp", "root", "tbf", "rate", rate, "burst", "256kb",
                "latency", "100ms"));
        }

        private static String iptables(final String ns, final String op, final List<String> rule) throws IOException
        {
            final List<String> cmd = new ArrayList<>(List.of("ip", "netns", "exec", ns, "iptables", op));
            cmd.addAll(rule);
            return exec(cmd);
        }

        /** Runs {@code cmd} (a tool this lab drives), returning its output; a non-zero exit is an error with it. */
        private static String exec(final List<String> cmd) throws IOException
        {
            try
            {
                final Process pr = new ProcessBuilder(cmd).redirectErrorStream(true).start();
                final String out = new String(pr.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
                if (pr.waitFor() != 0)
                {
                    throw new IOException(String.join(" ", cmd) + " failed: " + out.trim());
                }
                return out;
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", ex);
            }
        }

        /**
         * The standby host's RAM dir (its RAM image, staging area, device state) on a tmpfs of its own of {@code mib}
         * MiB, so a test can fill it. Before {@link #protect}.
         */
        public void standbySpace(final long mib) throws IOException
        {
            final Path d = ramDir("secondary");
            Files.createDirectories(d);
            exec(List.of("mount", "-t", "tmpfs", "-o", "size=" + mib + "m", "colot-standby", d.toString()));
            closers.add(() ->
            {
                exec(List.of("umount", "-l", d.toString()));
                Files.deleteIfExists(d);
            });
        }

        /** Fills the file system of {@code file} with it, 1 MiB at a time, until it is full; returns the bytes written. */
        public static long fill(final Path file) throws IOException
        {
            long written = 0;
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(file,
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.WRITE))
            {
                final java.nio.ByteBuffer mib = java.nio.ByteBuffer.allocate(1 << 20);
                while (true)
                {
                    mib.clear();
                    written += ch.write(mib);
                }
            }
            catch (final IOException full)
            {
                if (!String.valueOf(full.getMessage()).contains("No space left"))
                {
                    throw full;
                }
                return written;
            }
        }

        public boolean arbitrated()
        {
            return arbitrated;
        }

        /** Whether the host that started as {@code role} is on the network (not killed, not isolated). */
        public boolean online(final String role)
        {
            return !offline.contains(role);
        }

        /**
         * The host that started as {@code role} is cut from everything (uplink, replication link, etcd) with its
         * processes left running, or (with {@code cut} false) comes back.
         */
        public void isolate(final String role, final boolean cut) throws IOException
        {
            final IpRoute h = new IpRoute(ns(role));
            final boolean p = "primary".equals(role);
            if (cut)
            {
                offline.add(role);
            }
            for (final String dev : arbitrated ? List.of(p ? "p-up" : "s-up", p ? "rp" : "rs", p ? "p-a" : "s-a")
                : List.of(p ? "p-up" : "s-up", p ? "rp" : "rs"))
            {
                h.ip("link", "set", dev, cut ? "down" : "up");
            }
            if (!cut)
            {
                offline.remove(role);
            }
        }

        /** The uplink of the host that starts as {@code role}: its bridge to the switch. */
        private void linkUplink(final String role) throws IOException
        {
            final String up = "primary".equals(role) ? "p-up" : "s-up";
            final String swPort = "primary".equals(role) ? "s-p" : "s-s";
            final IpRoute h = new IpRoute(ns(role));
            h.ip("link", "add", up, "type", "veth", "peer", "name", swPort, "netns", sw);
            h.ip("link", "set", up, "master", "br0", "up");
            new IpRoute(sw).ip("link", "set", swPort, "master", "sw0", "up");
        }

        /** The replication link between the two hosts. */
        private void linkReplication() throws IOException
        {
            final IpRoute p = new IpRoute(pri);
            p.ip("link", "add", "rp", "type", "veth", "peer", "name", "rs", "netns", sec);
            p.ip("addr", "add", ip("primary") + "/24", "dev", "rp");
            p.ip("link", "set", "rp", "up");
            final IpRoute q = new IpRoute(sec);
            q.ip("addr", "add", ip("secondary") + "/24", "dev", "rs");
            q.ip("link", "set", "rs", "up");
        }

        /**
         * The guest boots from its own disk (the test guest's {@code boot-disk.img}: partition table, filesystem,
         * syslinux), no kernel, initrd or append in the configuration; the disk is replicated like any other.
         */
        public Lab bootFromDisk() throws IOException
        {
            diskBoot = true;
            diskMiB = 64;
            for (final String role : List.of("primary", "secondary"))
            {
                Files.copy(guest.resolve("boot-disk.img"), diskImage(role), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
            return this;
        }

        /**
         * Gives the guest a disk of {@code mib} MiB: an empty (sparse) raw image on each host, before the VM boots.
         * The guest sees it as /dev/vda.
         */
        public Lab withDisk(final int mib) throws IOException
        {
            diskMiB = mib;
            for (final String role : List.of("primary", "secondary"))
            {
                try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(diskImage(role).toFile(), "rw"))
                {
                    f.setLength((long)mib << 20);
                }
            }
            return this;
        }

        /** As {@link #withDisk}, the disk an empty qcow2 image ({@code qemu-img create}) on each host. */
        public Lab withQcow2Disk(final int mib) throws IOException
        {
            diskMiB = mib;
            dataQcow2 = true;
            for (final String role : List.of("primary", "secondary"))
            {
                qemuImg("create", "-q", "-f", "qcow2", diskImage(role).toString(), mib + "M");
            }
            return this;
        }

        /**
         * The VM as operators have them (issue 22): it boots from a system disk (/dev/vda) and keeps its counter on a
         * raw data disk of {@code dataMib} MiB (/dev/vdb, {@link #diskImage}). {@code qcow2}: the system disk is a
         * qcow2 image whose backing file is the test guest's installed system ({@code boot-disk.img}, copied to each
         * host: same content, two files); else a raw copy of it.
         */
        public Lab bootFromSystemDiskWithDataDisk(final int dataMib, final boolean qcow2) throws IOException
        {
            withDisk(dataMib);
            diskBoot = true;
            systemDisk = qcow2 ? ColodConfig.DiskFormat.QCOW2 : ColodConfig.DiskFormat.RAW;
            for (final String role : List.of("primary", "secondary"))
            {
                if (!qcow2)
                {
                    Files.copy(guest.resolve("boot-disk.img"), systemImage(role), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                    continue;
                }
                final Path base = runDir.resolve(role + "-system-base.raw");
                Files.copy(guest.resolve("boot-disk.img"), base, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                qemuImg("create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.toString(), systemImage(role).toString());
            }
            return this;
        }

        /**
         * The VM boots with UEFI (OVMF's code, a variable store per host copied from OVMF's template); with
         * {@link #bootFromDisk} it boots the test guest's disk through its GRUB at \EFI\BOOT\BOOTX64.EFI.
         */
        public Lab uefi() throws IOException
        {
            uefi = true;
            for (final String role : List.of("primary", "secondary"))
            {
                Files.copy(Path.of("/usr/share/OVMF/OVMF_VARS_4M.fd"), uefiVars(role),
                    java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
            return this;
        }

        /** The UEFI variable store of the host that starts as {@code role} ({@link #uefi}). */
        public Path uefiVars(final String role)
        {
            return runDir.resolve(role + "-uefi-vars.fd");
        }

        /** The system disk of the host that starts as {@code role} ({@link #bootFromSystemDiskWithDataDisk}). */
        public Path systemImage(final String role)
        {
            return runDir.resolve(role + "-system." + (systemDisk == ColodConfig.DiskFormat.QCOW2 ? "qcow2" : "raw"));
        }

        private static void qemuImg(final String... args) throws IOException
        {
            final List<String> cmd = new ArrayList<>(List.of("qemu-img"));
            cmd.addAll(List.of(args));
            final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            try
            {
                if (p.waitFor() != 0)
                {
                    throw new IOException(String.join(" ", cmd) + " failed: " + out.strip());
                }
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted: " + String.join(" ", cmd), ex);
            }
        }

        /** The VM NIC's output-commit backend ({@code buffer:}); before the VM boots. */
        public Lab buffer(final ColodConfig.Buffer b)
        {
            buffer = b;
            return this;
        }

        /**
         * The guest's RAM on 2 MiB pages ({@code ram-page-size: 2m}); before the VM boots. Mounts a hugetlbfs of its
         * own and reserves as many more 2 MiB pages as the guest needs (vm.nr_hugepages); at close both are undone
         * after the VM is gone.
         */
        public Lab hugePages() throws IOException, InterruptedException
        {
            final Path pool = Path.of("/sys/kernel/mm/hugepages/hugepages-2048kB");
            final Path nr = pool.resolve("nr_hugepages");
            // an earlier lab's RAM file stays mapped (colod's MappedByteBuffers) until a GC: let it go first
            System.gc();
            for (int i = 0; i < 50 && sysctlValue(pool.resolve("surplus_hugepages")) > 0; i++)
            {
                Thread.sleep(100);
            }
            final long before = sysctlValue(nr);
            final long need = memoryMiB / 2 + 1;
            // undone at close down to the host's own count plus what labs still open need; pages of a closed lab's
            // RAM file still mapped (until a GC) stay as surplus pages and go back to the kernel once unmapped
            synchronized (HUGE_PAGES)
            {
                if (HUGE_PAGES[0] < 0)
                {
                    HUGE_PAGES[0] = before;
                }
                HUGE_PAGES[1] += need;
            }
            closers.add(() ->
            {
                synchronized (HUGE_PAGES)
                {
                    HUGE_PAGES[1] -= need;
                    Files.writeString(nr, Long.toString(HUGE_PAGES[0] + HUGE_PAGES[1]));
                }
            });
            // free ones, not more than before: pages of an earlier lab's RAM file may still be mapped (until a GC)
            long free = sysctlValue(pool.resolve("free_hugepages"));
            for (int attempt = 0; attempt < 5 && free < need; attempt++)
            {
                // free 2 MiB blocks may be scattered (a fresh boot has them; a machine that ran for a while less so)
                Files.writeString(Path.of("/proc/sys/vm/compact_memory"), "1");
                Files.writeString(nr, Long.toString(sysctlValue(nr) + need - free));
                free = sysctlValue(pool.resolve("free_hugepages"));
            }
            if (free < need)
            {
                throw new IOException("the kernel has " + free + " of the " + need + " free 2 MiB pages this guest " +
                    "needs (memory too fragmented?)");
            }
            final Path dir = runDir.resolve("hugepages");
            Files.createDirectories(dir);
            IpRoute.exec(List.of("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", dir.toString()));
            closers.add(() ->
            {
                deleteSettled(dir.resolve("e2e.ram"));
                // lazily: a mapping of the RAM file (colod's, a test's MappedByteBuffer) lives until a GC, and with it
                // the mount and the file's pages
                IpRoute.exec(List.of("umount", "-l", dir.toString()));
            });
            hugepageDir = dir;
            vmOptions.add("ram-page-size: 2m");
            return this;
        }

        /** The host's 2 MiB pages before the first lab of this JVM took some, and what open labs took since. */
        private static final long[] HUGE_PAGES = {-1, 0};

        /**
         * A sysctl's (or sysfs attribute's) number. Not {@code Files.readString}: it reads one byte first and then the
         * rest from offset 1, where a sysctl file says end of file ("65" read as "6").
         */
        private static long sysctlValue(final Path p) throws IOException
        {
            return Long.parseLong(Files.readAllLines(p).get(0).trim());
        }

        /** One more setting of the VM in both hosts' colod.yaml, e.g. {@code "output-linger-us: 500"}. */
        public Lab vmOption(final String yamlLine)
        {
            vmOptions.add(yamlLine);
            return this;
        }

        /** The primary's output trigger on or off (default: colod's default, on). */
        public Lab outputTrigger(final boolean on)
        {
            outputTrigger = on;
            return this;
        }

        public Lab plaintext()
        {
            plaintext = true;
            return this;
        }

        /** The disk image of the host that starts as {@code role}. */
        public Path diskImage(final String role)
        {
            return runDir.resolve(role + "-disk.raw");
        }

        /** Where a host's VM RAM files and standby image live (tmpfs). */
        public Path ramDir(final String role)
        {
            return Path.of("/dev/shm/colot-" + id + "-" + role);
        }

        /**
         * The colod.yaml of one host. {@code inProcess}: for {@link ProtectedVm} in this JVM (QEMU and taps in the
         * host's namespace, QEMU quit at close); otherwise for a colod process started inside the namespace.
         */
        public String yaml(final String role, final Path runtime, final long checkpointDelayMs, final boolean hot,
            final boolean inProcess)
        {
            return yaml(role, runtime, Protection.of(checkpointDelayMs), hot, inProcess);
        }

        public String yaml(final String role, final Path runtime, final Protection how, final boolean hot,
            final boolean inProcess)
        {
            return String.join("\n",
                "runtime-dir: " + runtime,
                "ram-dir: " + ramDir(role),
                hugepageDir == null ? "" : "hugepage-dir: " + hugepageDir,
                "log-level: info",
                "on-stop: " + (inProcess ? "stop" : "leave-running"),
                "state-dir: " + runDir.resolve(role + "-state"),
                "host-name: host-" + role,
                plaintext ? "insecure: true" : "tls:\n  ca: " + runDir.resolve("tls/ca.pem") + "\n  cert: " +
                    runDir.resolve("tls/" + role + ".pem") + "\n  key: " + runDir.resolve("tls/" + role + ".key"),
                arbitrated ? "arbiter:\n  etcd: [http://198.19." + ("primary".equals(role) ? 1 : 2) + ".1:2379]\n" +
                    "  lease-ttl-ms: 2000\n  safety-margin-ms: 500" : "arbiter: none",
                "vms:",
                "  - name: e2e",
                "    role: " + role,
                // in process: roles follow the VM (listen + the other host as peer, role kept in state-dir)
                inProcess ? "    listen: " + ip(role) + ":" + PORT : "",
                "    peer: " + (inProcess ? ip("primary".equals(role) ? "secondary" : "primary") : "198.19.0.2") + ":" + PORT,
                inProcess ? "    netns: " + ns(role) : "    peer-name: " + ip("primary".equals(role) ? "secondary" : "primary"),
                "    standby: " + (hot ? "hot" : "cold"),
                "    mode: " + how.mode().name().toLowerCase(),
                "    write-tracking: " + how.tracking().name().toLowerCase(),
                "    checkpoint-delay-ms: " + how.checkpointDelayMs(),
                outputTrigger == null ? "" : "    output-trigger: " + outputTrigger,
                vmOptions.stream().map(o -> "    " + o).collect(java.util.stream.Collectors.joining("\n")),
                "    heartbeat-timeout-ms: 1000",
                "    memory-mib: " + memoryMiB,
                "    accel: tcg",
                uefi ? "    firmware: uefi\n    uefi-vars: " + uefiVars(role) : "",
                diskBoot ? "" : "    kernel: " + guest.resolve("vmlinuz"),
                diskBoot ? "" : "    initrd: " + guest.resolve("initrd.img"),
                diskBoot ? "" : "    append: \"console=ttyS0 quiet colo.ip=" + GUEST_IP + "/24\"",
                diskMiB == 0 ? "" : "    disks:" +
                    (systemDisk == null ? "" : "\n      - image: " + systemImage(role) + "\n        format: " +
                        systemDisk.name().toLowerCase() + "\n        replicate: " + how.replicateDisk()) +
                    "\n      - image: " + diskImage(role) + (dataQcow2 ? "\n        format: qcow2" : "") +
                    "\n        replicate: " + how.replicateDisk(),
                "    nics:",
                "      - tap: vt0",
                "        mac: 52:54:00:c0:10:01",
                "        bridge: br0",
                "        buffer: " + buffer.name().toLowerCase(),
                buffer == ColodConfig.Buffer.NFQUEUE ? "        queue-num: " + (7000 + ("primary".equals(role) ? 1 : 2)) : "",
                "");
        }

        /**
         * A colod process's colod.yaml where roles follow the VM, as production runs it: {@code listen} and the other
         * host as {@code peer} on both hosts, the role kept in state-dir; {@code reprotect: manual} if asked.
         */
        public String daemonYaml(final String role, final Path runtime, final Protection how, final boolean manualReprotect)
        {
            final String other = "primary".equals(role) ? "secondary" : "primary";
            return yaml(role, runtime, how, false, false).replace("    peer: 198.19.0.2:" + PORT + "\n",
                "    listen: " + ip(role) + ":" + PORT + "\n    peer: " + ip(other) + ":" + PORT + "\n" +
                    (manualReprotect ? "    reprotect: manual\n" : ""));
        }

        private ColodConfig config(final String role, final Protection how, final boolean hot) throws Exception
        {
            final Path file = runDir.resolve(role + ".yaml");
            Files.writeString(file, yaml(role, runDir.resolve(role + "-run"), how, hot, true));
            return ConfigLoader.load(file);
        }

        private ProtectedVm open(final ColodConfig c, final ProtectedVm.Hooks hooks) throws Exception
        {
            return ProtectedVm.open(c, c.vms.get(0), loops, hooks);
        }

        /** The namespace of the host that starts as {@code role}. */
        String ns(final String role)
        {
            return "primary".equals(role) ? pri : sec;
        }

        /** The replication address of the host that starts as {@code role}. */
        static String ip(final String role)
        {
            return "primary".equals(role) ? "198.19.0.1" : "198.19.0.2";
        }

        /** The arbiter client's sockets of {@code role}'s host: made in its namespace, bound to its address. */
        private EtcdGateway.SocketFactory arbiterSockets(final String role)
        {
            final String ns = ns(role);
            return () -> Netns.call(ns, LocalEtcd::boundSocket);
        }

        /** Sockets of the host that starts as {@code role}, made inside its namespace, from its own address. */
        private Transport transport(final String role)
        {
            final String ns = ns(role);
            final String ip = ip(role);
            return new Transport()
            {
                @Override
                public Socket newSocket() throws IOException
                {
                    return Netns.call(ns, () ->
                    {
                        final Socket so = new Socket();
                        so.bind(new InetSocketAddress(ip, 0));
                        return so;
                    });
                }

                @Override
                public ServerSocket newServerSocket() throws IOException
                {
                    return Netns.call(ns, () ->
                    {
                        final ServerSocket ss = new ServerSocket();
                        ss.setReuseAddress(true);
                        ss.bind(new InetSocketAddress(ip, PORT));
                        return ss;
                    });
                }
            };
        }

        /** Boots the guest on the primary host (unprotected) and waits until its HTTP counter answers. */
        public void bootPrimary(final Protection how) throws Exception
        {
            outputCommit = how.outputCommit();
            closers.add(() -> deleteSettled(ramDir("primary"))); // after the VM is gone: closers run in reverse
            primary = open(config("primary", how, false),
                new ProtectedVm.Hooks(transport("primary"), arbiterSockets("primary"), how.source(), i -> i, how.outputCommit()));
            closers.add(primary);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            while (Netns.call(cli, () -> Http.count(GUEST_IP, 1000)) < 0)
            {
                if (System.nanoTime() - deadline > 0)
                {
                    throw new IOException("guest did not answer within 90 s; serial log: " +
                        Files.readString(runDir.resolve("primary-run/e2e/serial.log")));
                }
                Thread.sleep(200);
            }
        }

        /** Starts the secondary, then protection, and waits for two checkpoints. */
        public void protect(final Protection how) throws Exception
        {
            startProtecting(how);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (primary.primary().counters().checkpointsCompleted.get() < 2)
            {
                if (System.nanoTime() - deadline > 0)
                {
                    throw new IOException("no protection within 60 s: " + primary.primary().state() + " " +
                        primary.primary().lastError());
                }
                Thread.sleep(50);
            }
        }

        /** Starts the secondary host's colod and both engines, without waiting for protection. */
        public void startProtecting(final Protection how) throws Exception
        {
            closers.add(() -> deleteSettled(ramDir("secondary")));
            secondary = open(config("secondary", how, how.hotStandby()),
                new ProtectedVm.Hooks(transport("secondary"), arbiterSockets("secondary"), s -> s, how.sink(), true));
            closers.add(secondary);
            secondary.secondary().addExitListener(secondaryExits::add);
            secondary.protect();
            primary.protect();
        }

        /**
         * The primary host dies: it drops off the network (its uplink first, so nothing it still holds reaches a
         * client, then the replication link), and its QEMU is killed. Its colod, cut off, is removed at close.
         */
        public void killPrimary() throws IOException
        {
            final IpRoute p = new IpRoute(pri);
            p.ip("link", "del", "p-up");
            p.ip("link", "del", "rp");
            if (arbitrated)
            {
                p.ip("link", "del", "p-a");
            }
            primary.qemu().kill();
        }

        /**
         * The host that started as {@code role} dies: off the network (uplink, then replication link) and whatever
         * QEMU runs the VM there killed. Its colod, cut off, stays until {@link #revive}.
         */
        public void kill(final String role) throws IOException
        {
            final ProtectedVm host = "primary".equals(role) ? primary : secondary;
            offline.add(role);
            final IpRoute h = new IpRoute(ns(role));
            h.ip("link", "del", "primary".equals(role) ? "p-up" : "s-up");
            h.ip("link", "del", "primary".equals(role) ? "rp" : "rs");
            if (arbitrated)
            {
                h.ip("link", "del", "primary".equals(role) ? "p-a" : "s-a");
            }
            final dev.colod.agent.qemu.QemuProcess q = host.qemu();
            if (q != null)
            {
                q.kill();
            }
        }

        /**
         * The host that started as {@code role} comes back: its old colod is gone for good (closed while the host is
         * still off the network), its links come back, and colod starts again from the same colod.yaml and
         * state-dir: its recorded role decides what it does.
         */
        public ProtectedVm revive(final String role, final Protection how) throws Exception
        {
            host(role).close();
            offline.remove(role);
            linkUplink(role);
            linkReplication();
            if (arbitrated)
            {
                linkArbiter(role);
            }
            return start(role, how);
        }

        /** colod of the host that started as {@code role} is stopped (on-stop: stop) and started again. */
        public ProtectedVm restart(final String role, final Protection how) throws Exception
        {
            host(role).close();
            return start(role, how);
        }

        private ProtectedVm start(final String role, final Protection how) throws Exception
        {
            final ProtectedVm back = open(config(role, how, how.hotStandby()),
                new ProtectedVm.Hooks(transport(role), arbiterSockets(role), s2 -> s2, i -> i, how.outputCommit()));
            closers.add(back);
            if ("primary".equals(role))
            {
                primary = back;
            }
            else
            {
                secondary = back;
            }
            if (back.secondary() != null)
            {
                back.secondary().addExitListener(secondaryExits::add);
            }
            return back.protect();
        }

        /** The colod of the host that started as {@code role}. */
        public ProtectedVm host(final String role)
        {
            return "primary".equals(role) ? primary : secondary;
        }

        public PrimaryEngine primary()
        {
            return primary.primary();
        }

        public SecondaryEngine secondary()
        {
            return secondary.secondary();
        }

        /** The primary's QEMU. */
        public QemuProcess qemu()
        {
            return primary.qemu();
        }

        public QemuStateSource stateSource()
        {
            return primary.stateSource();
        }

        public QemuFailover failover()
        {
            return secondary.failover();
        }

        /** The primary's RAM file (colod puts it at ram-dir/VM.ram, or hugepage-dir/VM.ram on 2 MiB pages). */
        public Path primaryRam()
        {
            return (hugepageDir != null ? hugepageDir : ramDir("primary")).resolve("e2e.ram");
        }

        /** The primary's first NIC's output commit, as {@code coloctl buffers} shows it. */
        public NicStats nic()
        {
            if (!outputCommit)
            {
                throw new IllegalStateException("a control run has no output commit");
            }
            return primary.output().stats().get(0);
        }

        /** Hybrid mode: what comparison did on the primary's first NIC. */
        public Comparer.Stats comparison()
        {
            return primary.output().ledgers().get(0).comparison();
        }

        /** Hybrid mode: the primary's frames channel (inbound copied, dropped, replayed after a seal). */
        public dev.colod.buffer.hybrid.PrimaryMirror.Stats framesChannel()
        {
            return primary.framesChannel();
        }

        /** The secondary's exit events (failover or not), in order. */
        public BlockingQueue<ExitEvent> secondaryExits()
        {
            return secondaryExits;
        }

        @Override
        public void close()
        {
            closers.close();
            for (final String ns : namespaces)
            {
                final String err = Netns.delete(ns);
                if (err != null)
                {
                    System.err.println("could not delete netns " + ns + ": " + err);
                }
            }
        }
    }

    /** A client in the client namespace that increments the counter in a loop and retries on errors. */
    public static final class Client implements AutoCloseable
    {
        /** One answer: when it came, its first number, and the whole body. */
        public record Reading(long atNanos, long value, String body)
        {
        }

        private final List<Reading> readings = Collections.synchronizedList(new ArrayList<>());
        private final Thread thread;
        private volatile boolean running = true;

        /** Asks the counter CGI (RAM) over and over, from namespace {@code ns}. */
        public Client(final String ns)
        {
            this(ns, "/cgi-bin/count");
        }

        /** Asks {@code path} (a CGI whose answer starts with a number) over and over, from namespace {@code ns}. */
        public Client(final String ns, final String path)
        {
            thread = new Thread(() ->
            {
                try
                {
                    Netns.enter(ns);
                }
                catch (final IOException ex)
                {
                    throw new IllegalStateException(ex);
                }
                while (running)
                {
                    final String body = Http.answer(GUEST_IP, path, 3000);
                    if (body != null)
                    {
                        readings.add(new Reading(System.nanoTime(), Long.parseLong(body.split(" ")[0]), body));
                    }
                    else
                    {
                        try
                        {
                            Thread.sleep(50);
                        }
                        catch (final InterruptedException ex)
                        {
                            return;
                        }
                    }
                }
            }, "http-client");
            thread.setDaemon(true);
            thread.start();
        }

        public List<Long> values()
        {
            synchronized (readings)
            {
                return readings.stream().map(Reading::value).toList();
            }
        }

        public List<Reading> readings()
        {
            synchronized (readings)
            {
                return List.copyOf(readings);
            }
        }

        public long countSince(final long nanos)
        {
            synchronized (readings)
            {
                return readings.stream().filter(r -> r.atNanos() > nanos).count();
            }
        }

        /** Milliseconds from {@code nanos} to the first answer after it, or -1. */
        public long firstAfterMs(final long nanos)
        {
            synchronized (readings)
            {
                return readings.stream().filter(r -> r.atNanos() > nanos).findFirst()
                    .map(r -> (r.atNanos() - nanos) / 1_000_000).orElse(-1L);
            }
        }

        @Override
        public void close() throws InterruptedException
        {
            running = false;
            thread.join(10_000);
        }
    }

    /** Minimal HTTP/1.0 GETs of the guest's CGIs. */
    public static final class Http
    {
        private Http()
        {
        }

        /** The counter CGI: increments the counter in guest RAM and returns it, or -1 on any failure. */
        public static long count(final String ip, final int timeoutMs)
        {
            final String body = answer(ip, "/cgi-bin/count", timeoutMs);
            return body == null ? -1 : Long.parseLong(body);
        }

        /** The trimmed body of a 200 answer to GET {@code path} that starts with a number, or null on any failure. */
        public static String answer(final String ip, final String path, final int timeoutMs)
        {
            try
            {
                final String body = get(ip, path, timeoutMs).trim();
                Long.parseLong(body.split(" ")[0]);
                return body;
            }
            catch (final IOException | NumberFormatException ex)
            {
                return null;
            }
        }

        /** The body of a 200 answer to GET {@code path}. */
        public static String get(final String ip, final String path, final int timeoutMs) throws IOException
        {
            try (Socket s = new Socket())
            {
                s.connect(new InetSocketAddress(ip, 80), timeoutMs);
                s.setSoTimeout(timeoutMs);
                final OutputStream out = s.getOutputStream();
                out.write(("GET " + path + " HTTP/1.0\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                out.flush();
                final InputStream in = s.getInputStream();
                final String reply = new String(in.readAllBytes(), StandardCharsets.US_ASCII);
                if (!reply.startsWith("HTTP/1.") || !reply.contains(" 200 "))
                {
                    throw new IOException("GET " + path + ": " + reply.lines().findFirst().orElse("no answer"));
                }
                return reply.substring(reply.indexOf("\r\n\r\n") + 4);
            }
        }
    }

    /**
     * Deletes {@code p} and, if something still being shut down wrote into it meanwhile (a standby commit in
     * flight when its engine closed), again, for up to a second.
     */
    static void deleteSettled(final Path p)
    {
        // watched for half a second after it is gone too: a closing standby may create it again a little later
        // (seen once in 180 fault-matrix runs with a 100 ms window)
        long goneSince = 0;
        for (int i = 0; i < 40; i++)
        {
            if (Files.exists(p))
            {
                deleteTree(p);
                goneSince = 0;
            }
            else if (goneSince == 0)
            {
                goneSince = System.nanoTime();
            }
            else if (System.nanoTime() - goneSince > 500_000_000L)
            {
                return;
            }
            try
            {
                Thread.sleep(50);
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    public static void deleteTree(final Path p)
    {
        try
        {
            if (Files.exists(p))
            {
                try (var s = Files.walk(p))
                {
                    s.sorted(java.util.Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
                }
            }
        }
        catch (final IOException ex)
        {
            System.err.println("cleanup: " + ex);
        }
    }
}
