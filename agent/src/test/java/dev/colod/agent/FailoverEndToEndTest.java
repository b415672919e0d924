package dev.colod.agent;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.TapNic;
import dev.colod.buffer.TapOutputCommit;
import dev.colod.buffer.net.IpRoute;
import dev.colod.buffer.net.NicPlumbing;
import dev.colod.core.ColoConfig;
import dev.colod.core.ExitEvent;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.ProtectionState;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.OutputCommitListener;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.zip.CRC32C;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The whole story with a real QEMU guest (TCG) whose HTTP counter lives in guest RAM, in network namespaces
 * this test creates: a primary host, a secondary host, a switch and a client. The primary is killed (QEMU and
 * agent) while a client increments the counter; the secondary resumes the guest from its last committed
 * checkpoint. With output commit the client never sees a value twice; the control run without it does.
 * <pre>
 *   pri: vt0 (QEMU tap) -> [colod output commit] -> br0 -> p-up ==veth== s-p ┐
 *   sec: vt0 (failover QEMU tap) ----------------> br0 -> s-up ==veth== s-s ┤ sw: sw0
 *   cli: c0 198.18.0.100 ================================================ s-c ┘
 *   replication: pri rp 198.19.0.1 ==veth== rs 198.19.0.2 sec
 * </pre>
 */
class FailoverEndToEndTest
{
    static final Path GUEST = Path.of(System.getProperty("colod.guest.dir", "../build/guest")).toAbsolutePath().normalize();
    static final String GUEST_IP = "198.18.0.10";
    static final int PORT = 7600;

    @BeforeEach
    void usable()
    {
        NetnsLab.assumeUsable();
        final boolean qemu = Files.isExecutable(Path.of("/usr/bin/qemu-system-x86_64"));
        if (!qemu)
        {
            System.out.println("SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        }
        assumeTrue(qemu, "qemu-system-x86_64 is not installed");
        final boolean guest = Files.exists(GUEST.resolve("vmlinuz")) && Files.exists(GUEST.resolve("initrd.img"));
        if (!guest)
        {
            System.out.println("SKIPPED: no test guest in " + GUEST + " (run deploy/guest/build-guest.sh)");
        }
        assumeTrue(guest, "no test guest in " + GUEST);
    }

    /** Namespaces, VMs and engines of one run; closing removes all of it, also after a failure. */
    static final class Rig implements AutoCloseable
    {
        final String id = "e" + ProcessHandle.current().pid() % 100000 + "-" + System.nanoTime() % 10000;
        final String sw = "colot-sw-" + id;
        final String pri = "colot-p-" + id;
        final String sec = "colot-s-" + id;
        final String cli = "colot-c-" + id;
        final Path runDir;
        final List<String> namespaces = new ArrayList<>();
        final List<AutoCloseable> closers = Collections.synchronizedList(new ArrayList<>());
        final VmSpec spec;
        QemuProcess primaryQemu;
        QemuFailover failover;
        PrimaryEngine primary;
        SecondaryEngine secondary;
        TapNic nic;
        final LinkedBlockingQueue<ExitEvent> secondaryExits = new LinkedBlockingQueue<>();

        QemuStateSource stateSource;

        Rig() throws Exception
        {
            this(128);
        }

        Rig(final int memoryMiB) throws Exception
        {
            runDir = Files.createTempDirectory("colot-" + id);
            spec = new VmSpec("e2e", memoryMiB, 1, GUEST.resolve("vmlinuz"), GUEST.resolve("initrd.img"),
                "console=ttyS0 quiet colo.ip=" + GUEST_IP + "/24", List.of(new VmSpec.Nic("vt0", "52:54:00:c0:10:01")),
                "tcg", Path.of("/dev/shm"), List.of()).check();
            try
            {
                for (final String ns : List.of(sw, pri, sec, cli))
                {
                    IpRoute.exec(List.of("ip", "netns", "add", ns));
                    namespaces.add(ns);
                    NetnsLab.sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1");
                    NetnsLab.sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1");
                    new IpRoute(ns).ip("link", "set", "lo", "up");
                }
                final IpRoute s = new IpRoute(sw);
                s.ip("link", "add", "sw0", "type", "bridge");
                s.ip("link", "set", "sw0", "up");
                for (final String[] host : new String[][]{{pri, "p-up", "s-p"}, {sec, "s-up", "s-s"}})
                {
                    final IpRoute h = new IpRoute(host[0]);
                    h.ip("link", "add", "br0", "type", "bridge");
                    h.ip("link", "set", "br0", "up");
                    h.ip("tuntap", "add", "dev", "vt0", "mode", "tap");
                    h.ip("link", "set", "vt0", "master", "br0", "up");
                    h.ip("link", "add", host[1], "type", "veth", "peer", "name", host[2], "netns", sw);
                    h.ip("link", "set", host[1], "master", "br0", "up");
                    s.ip("link", "set", host[2], "master", "sw0", "up");
                }
                final IpRoute c = new IpRoute(cli);
                c.ip("link", "add", "c0", "type", "veth", "peer", "name", "s-c", "netns", sw);
                c.ip("addr", "add", "198.18.0.100/24", "dev", "c0");
                c.ip("link", "set", "c0", "up");
                s.ip("link", "set", "s-c", "master", "sw0", "up");
                final IpRoute p = new IpRoute(pri);
                p.ip("link", "add", "rp", "type", "veth", "peer", "name", "rs", "netns", sec);
                p.ip("addr", "add", "198.19.0.1/24", "dev", "rp");
                p.ip("link", "set", "rp", "up");
                final IpRoute q = new IpRoute(sec);
                q.ip("addr", "add", "198.19.0.2/24", "dev", "rs");
                q.ip("link", "set", "rs", "up");
            }
            catch (final Exception ex)
            {
                close();
                throw ex;
            }
        }

        Path primaryRam()
        {
            return Path.of("/dev/shm/colot-" + id + "-pri.ram");
        }

        Path imageDir()
        {
            return Path.of("/dev/shm/colot-" + id + "-img");
        }

        /** Boots the guest on the primary host and waits until its HTTP counter answers. */
        void bootPrimary() throws Exception
        {
            primaryQemu = QemuProcess.start(spec, runDir.resolve("pri"), primaryRam(), false, pri);
            closers.add(primaryQemu::kill);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            while (inNs(cli, () -> Http.count(GUEST_IP, 1000)) < 0)
            {
                if (System.nanoTime() - deadline > 0)
                {
                    throw new AssertionError("guest did not answer within 90 s; serial log: " +
                        Files.readString(runDir.resolve("pri/serial.log")));
                }
                Thread.sleep(200);
            }
        }

        /** Starts both engines; {@code outputCommit} false is the control run (frames pass unheld). */
        void protect(final boolean outputCommit, final long checkpointDelayMs, final Hashes hashes) throws Exception
        {
            final ColoConfig cfg = new ColoConfig().vmName("e2e").mode(ColoConfig.Mode.STRICT)
                .checkpointDelayMs(checkpointDelayMs).heartbeatIntervalMs(100).heartbeatTimeoutMs(1_000)
                .syncTimeoutMs(10_000).transferTimeoutMs(60_000).maxStateBytes(spec.memoryBytes() + (64L << 20)).reconnectIntervalMs(60_000);
            failover = new QemuFailover(spec, runDir.resolve("sec"), sec);
            final VmStateSink image = hashes.sink(new StandbyImage(imageDir(), "e2e", failover));
            closers.add(() -> deleteTree(imageDir()));
            secondary = new SecondaryEngine(cfg.conclude(), new InetSocketAddress("198.19.0.2", PORT), image,
                new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM);
            secondary.transport(new Transport()
            {
                @Override
                public ServerSocket newServerSocket() throws IOException
                {
                    return inNsIo(sec, () ->
                    {
                        final ServerSocket ss = new ServerSocket();
                        ss.setReuseAddress(true);
                        ss.bind(new InetSocketAddress("198.19.0.2", PORT));
                        return ss;
                    });
                }
            });
            secondary.addExitListener(secondaryExits::add);
            secondary.start();
            closers.add(secondary::close);
            closers.add(() ->
            {
                if (failover.running() != null)
                {
                    failover.running().kill();
                }
            });

            OutputCommitListener output = OutputCommitListener.NONE;
            final AtomicReference<PrimaryEngine> engine = new AtomicReference<>();
            if (outputCommit)
            {
                final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
                closers.add(() -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
                final NicPlumbing plumbing = NicPlumbing.install("vt0", "br0", pri, runDir.resolve("plumbing"));
                closers.add(plumbing::close);
                nic = new TapNic("vt0", plumbing.guestTap(), plumbing.uplinkTap(), (IoEventLoop)group.next(),
                    new BufferLimits().conclude(), () ->
                    {
                        final PrimaryEngine e = engine.get();
                        if (e != null)
                        {
                            e.requestCheckpoint();
                        }
                    }).start();
                output = new TapOutputCommit("e2e", List.of(nic));
            }
            stateSource = new QemuStateSource(primaryQemu);
            final VmStateSource source = hashes.source(stateSource, primaryRam());
            primary = new PrimaryEngine(cfg.conclude(), new InetSocketAddress("198.19.0.2", PORT), source, output,
                new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM);
            primary.transport(new Transport()
            {
                @Override
                public Socket newSocket() throws IOException
                {
                    return inNsIo(pri, () ->
                    {
                        final Socket so = new Socket();
                        so.bind(new InetSocketAddress("198.19.0.1", 0));
                        return so;
                    });
                }
            });
            engine.set(primary);
            primary.start();
            closers.add(primary::close);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (primary.counters().checkpointsCompleted.get() < 2)
            {
                if (System.nanoTime() - deadline > 0)
                {
                    throw new AssertionError("no protection within 60 s: " + primary.state() + " " + primary.lastError());
                }
                Thread.sleep(50);
            }
        }

        /** The primary host dies: QEMU and agent at once, its output-commit taps vanish with the agent. */
        void killPrimary()
        {
            primary.kill();
            primaryQemu.kill();
            if (nic != null)
            {
                nic.close();
            }
        }

        @Override
        public void close()
        {
            final List<AutoCloseable> all = new ArrayList<>(closers);
            Collections.reverse(all);
            for (final AutoCloseable c : all)
            {
                try
                {
                    c.close();
                }
                catch (final Exception ex)
                {
                    System.err.println("cleanup: " + ex);
                }
            }
            for (final String ns : namespaces)
            {
                try
                {
                    IpRoute.exec(List.of("ip", "netns", "del", ns));
                }
                catch (final IOException ex)
                {
                    System.err.println("could not delete netns " + ns + ": " + ex.getMessage());
                }
            }
            try
            {
                Files.deleteIfExists(primaryRam());
            }
            catch (final IOException ex)
            {
                System.err.println("cleanup: " + ex);
            }
            deleteTree(runDir);
        }
    }

    /** A client in the client namespace that increments the counter in a loop and retries on errors. */
    static final class Client implements AutoCloseable
    {
        record Reading(long atNanos, long value)
        {
        }

        final List<Reading> readings = Collections.synchronizedList(new ArrayList<>());
        final Thread thread;
        volatile boolean running = true;
        volatile long errors;

        Client(final String ns)
        {
            thread = new Thread(() ->
            {
                try
                {
                    NetnsLab.enter(ns);
                }
                catch (final IOException ex)
                {
                    throw new IllegalStateException(ex);
                }
                while (running)
                {
                    final long v = Http.count(GUEST_IP, 3000);
                    if (v >= 0)
                    {
                        readings.add(new Reading(System.nanoTime(), v));
                    }
                    else
                    {
                        errors++;
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

        List<Long> values()
        {
            synchronized (readings)
            {
                return readings.stream().map(Reading::value).toList();
            }
        }

        long countSince(final long nanos)
        {
            synchronized (readings)
            {
                return readings.stream().filter(r -> r.atNanos() > nanos).count();
            }
        }

        @Override
        public void close() throws InterruptedException
        {
            running = false;
            thread.join(10_000);
        }
    }

    /** Minimal HTTP/1.0 GET of the guest's counter CGI. */
    static final class Http
    {
        static long count(final String ip, final int timeoutMs)
        {
            try (Socket s = new Socket())
            {
                s.connect(new InetSocketAddress(ip, 80), timeoutMs);
                s.setSoTimeout(timeoutMs);
                final OutputStream out = s.getOutputStream();
                out.write("GET /cgi-bin/count HTTP/1.0\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                out.flush();
                final InputStream in = s.getInputStream();
                final String reply = new String(in.readAllBytes(), StandardCharsets.US_ASCII);
                if (!reply.startsWith("HTTP/1.") || !reply.contains(" 200 "))
                {
                    return -1;
                }
                final String body = reply.substring(reply.indexOf("\r\n\r\n") + 4).trim();
                return Long.parseLong(body);
            }
            catch (final IOException | NumberFormatException ex)
            {
                return -1;
            }
        }
    }

    /** Page CRCs of the primary's RAM at capture and of the secondary's image at commit, per checkpoint. */
    static final class Hashes
    {
        final Map<Long, int[]> primary = new ConcurrentHashMap<>();
        final Map<Long, int[]> secondary = new ConcurrentHashMap<>();
        final long from;
        final long to;

        Hashes(final long from, final long to)
        {
            this.from = from;
            this.to = to;
        }

        static int[] pageCrcs(final Path file) throws IOException
        {
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ))
            {
                final MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
                final int[] out = new int[(int)(ch.size() / 4096)];
                final CRC32C crc = new CRC32C();
                for (int i = 0; i < out.length; i++)
                {
                    crc.reset();
                    crc.update(m.slice(i * 4096, 4096));
                    out[i] = (int)crc.getValue();
                }
                return out;
            }
        }

        VmStateSource source(final VmStateSource inner, final Path ram)
        {
            return new VmStateSource()
            {
                @Override
                public void beginSession(final long id) throws IOException
                {
                    inner.beginSession(id);
                }

                @Override
                public void pause() throws IOException
                {
                    inner.pause();
                }

                @Override
                public StateCapture capture(final long id) throws IOException
                {
                    final StateCapture c = inner.capture(id);
                    if (id >= from && id <= to)
                    {
                        primary.put(id, pageCrcs(ram)); // the VM is still paused here
                    }
                    return c;
                }

                @Override
                public void resume() throws IOException
                {
                    inner.resume();
                }
            };
        }

        VmStateSink sink(final StandbyImage inner)
        {
            return new VmStateSink()
            {
                @Override
                public long lastCommitted()
                {
                    return inner.lastCommitted();
                }

                @Override
                public void stage(final long id, final long size) throws IOException
                {
                    inner.stage(id, size);
                }

                @Override
                public void stageWrite(final byte[] b, final int off, final int len) throws IOException
                {
                    inner.stageWrite(b, off, len);
                }

                @Override
                public void commit(final long id) throws IOException
                {
                    inner.commit(id);
                    if (id >= from && id <= to)
                    {
                        secondary.put(id, pageCrcs(inner.ramFile()));
                    }
                }

                @Override
                public void discard(final long id)
                {
                    inner.discard(id);
                }

                @Override
                public void activate(final long id) throws Exception
                {
                    inner.activate(id);
                }
            };
        }
    }

    @Test
    void clientSeesStrictlyIncreasingCounterThroughFailoverWithOutputCommit() throws Exception
    {
        try (Rig rig = new Rig())
        {
            rig.bootPrimary();
            final Hashes hashes = new Hashes(3, 5);
            rig.protect(true, 200, hashes);
            try (Client client = new Client(rig.cli))
            {
                // checkpoint content: the standby image equals the primary's RAM at checkpoints 3..5
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (hashes.secondary.size() < 3)
                {
                    assertThat(System.nanoTime() - deadline).as("checkpoints 3..5 committed in time").isNegative();
                    Thread.sleep(20);
                }
                for (long id = 3; id <= 5; id++)
                {
                    final int[] p = hashes.primary.get(id);
                    final int[] s = hashes.secondary.get(id);
                    assertThat(s.length).isEqualTo(p.length);
                    final int differing = firstDifference(p, s);
                    assertThat(differing).as("first differing page of checkpoint %d", id).isEqualTo(-1);
                }

                // a random moment, once the client has been counting for a while
                while (client.values().size() < 5)
                {
                    Thread.sleep(20);
                }
                Thread.sleep(new Random().nextInt(2_000));
                final long before = client.values().size();
                final long killedAt = System.nanoTime();
                rig.killPrimary();
                final ExitEvent e = rig.secondaryExits.poll(60, TimeUnit.SECONDS);
                assertThat(e).as("secondary exit event").isNotNull();
                assertThat(e.failedOver()).as(e.detail()).isTrue();
                assertThat(rig.secondary.state()).isEqualTo(ProtectionState.FAILED_OVER);
                final long deadline2 = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (client.countSince(killedAt) < 3)
                {
                    assertThat(System.nanoTime() - deadline2).as("client answered after failover").isNegative();
                    Thread.sleep(50);
                }
                client.close();
                final List<Long> values = client.values();
                System.out.printf("output commit on: %d values before the kill, %d after; failover: QEMU start %d ms," +
                    " load+cont %d ms; values %s%n", before, values.size() - before, rig.failover.lastStartMicros / 1000,
                    rig.failover.lastLoadMicros / 1000, values);
                assertStrictlyIncreasing(values);
                assertThat(rig.nic.stats().releasedFrames()).as("frames were held and released").isPositive();
            }
        }
    }

    @Test
    void controlRunWithoutOutputCommitShowsTheClientARepeatedValue() throws Exception
    {
        try (Rig rig = new Rig())
        {
            rig.bootPrimary();
            rig.protect(false, 1_000, new Hashes(0, -1));
            try (Client client = new Client(rig.cli))
            {
                // kill late in an epoch, once the client has seen answers produced after the last checkpoint:
                // those answers come from state the secondary never gets
                while (true)
                {
                    final long last = rig.primary.counters().lastCheckpointNanos.get();
                    final long sinceMs = (System.nanoTime() - last) / 1_000_000;
                    if (client.values().size() >= 3 && sinceMs > 600 && sinceMs < 900 && client.countSince(last) >= 2)
                    {
                        break;
                    }
                    Thread.sleep(5);
                }
                final long killedAt = System.nanoTime();
                rig.killPrimary();
                final ExitEvent e = rig.secondaryExits.poll(60, TimeUnit.SECONDS);
                assertThat(e).isNotNull();
                assertThat(e.failedOver()).as(e.detail()).isTrue();
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (client.countSince(killedAt) < 3)
                {
                    assertThat(System.nanoTime() - deadline).as("client answered after failover").isNegative();
                    Thread.sleep(50);
                }
                client.close();
                final List<Long> values = client.values();
                System.out.println("output commit off (control): values " + values);
                boolean violated = false;
                for (int i = 1; i < values.size(); i++)
                {
                    violated |= values.get(i) <= values.get(i - 1);
                }
                assertThat(violated).as("without output commit the client sees a repeated or smaller value: %s", values)
                    .isTrue();
            }
        }
    }

    static void assertStrictlyIncreasing(final List<Long> values)
    {
        for (int i = 1; i < values.size(); i++)
        {
            assertThat(values.get(i)).as("value %d of %s", i, values).isGreaterThan(values.get(i - 1));
        }
    }

    static int firstDifference(final int[] a, final int[] b)
    {
        for (int i = 0; i < a.length; i++)
        {
            if (a[i] != b[i])
            {
                return i;
            }
        }
        return -1;
    }

    interface IoCallable<T>
    {
        T call() throws IOException;
    }

    static <T> T inNsIo(final String ns, final IoCallable<T> task) throws IOException
    {
        try
        {
            return inNs(ns, task::call);
        }
        catch (final IOException ex)
        {
            throw ex;
        }
        catch (final Exception ex)
        {
            throw new IOException(ex);
        }
    }

    static <T> T inNs(final String ns, final java.util.concurrent.Callable<T> task) throws Exception
    {
        final java.util.concurrent.FutureTask<T> f = new java.util.concurrent.FutureTask<>(() ->
        {
            NetnsLab.enter(ns);
            return task.call();
        });
        final Thread t = new Thread(f, "netns-" + ns);
        t.setDaemon(true);
        t.start();
        try
        {
            return f.get(30, TimeUnit.SECONDS);
        }
        catch (final java.util.concurrent.ExecutionException ex)
        {
            if (ex.getCause() instanceof Exception c)
            {
                throw c;
            }
            throw ex;
        }
    }

    static void deleteTree(final Path p)
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
