package dev.colod.agent.demo;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.TapNic;
import dev.colod.buffer.NicOutputCommit;
import dev.colod.buffer.net.IpRoute;
import dev.colod.buffer.net.Netns;
import dev.colod.buffer.net.NicPlumbing;
import dev.colod.core.ColoConfig;
import dev.colod.core.ExitEvent;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.OutputCommitListener;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import io.netty.channel.IoEventLoop;
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
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Two hosts, a switch and a client on one machine, as network namespaces, with the real test guest: what the
 * demo runs and what the end-to-end tests drive.
 * <pre>
 *   pri: vt0 (QEMU tap) -> [colod output commit] -> br0 -> p-up ==veth== s-p ┐
 *   sec: vt0 (failover QEMU tap) ----------------> br0 -> s-up ==veth== s-s ┤ sw: sw0
 *   cli: c0 198.18.0.100 ================================================ s-c ┘
 *   replication: pri rp 198.19.0.1 ==veth== rs 198.19.0.2 sec
 * </pre>
 */
public final class TwoHostLab
{
    public static final String GUEST_IP = "198.18.0.10";
    public static final int PORT = 7600;

    private TwoHostLab()
    {
    }

    /** Namespaces, VMs and engines of one run; closing removes all of it, also after a failure. */
    public static final class Lab implements AutoCloseable
    {
        final String id = "e" + ProcessHandle.current().pid() % 100000 + "-" + System.nanoTime() % 10000;
        public final String sw = "colot-sw-" + id;
        public final String pri = "colot-p-" + id;
        public final String sec = "colot-s-" + id;
        public final String cli = "colot-c-" + id;
        public final Path runDir;
        final List<String> namespaces = new ArrayList<>();
        final dev.colod.agent.Closers closers = new dev.colod.agent.Closers(ex -> System.err.println("cleanup: " + ex));
        public final VmSpec spec;
        public QemuProcess primaryQemu;
        public QemuFailover failover;
        public PrimaryEngine primary;
        public SecondaryEngine secondary;
        public TapNic nic;
        public final LinkedBlockingQueue<ExitEvent> secondaryExits = new LinkedBlockingQueue<>();

        public QemuStateSource stateSource;

        public Lab(final Path guest) throws Exception
        {
            this(guest, 128);
        }

        public Lab(final Path guest, final int memoryMiB) throws Exception
        {
            runDir = Files.createTempDirectory("colot-" + id);
            spec = new VmSpec("e2e", memoryMiB, 1, guest.resolve("vmlinuz"), guest.resolve("initrd.img"),
                "console=ttyS0 quiet colo.ip=" + GUEST_IP + "/24", List.of(new VmSpec.Nic("vt0", "52:54:00:c0:10:01")),
                "tcg", Path.of("/dev/shm"), List.of()).check();
            try
            {
                for (final String ns : List.of(sw, pri, sec, cli))
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

        public Path primaryRam()
        {
            return Path.of("/dev/shm/colot-" + id + "-pri.ram");
        }

        public Path imageDir()
        {
            return Path.of("/dev/shm/colot-" + id + "-img");
        }

        /** Boots the guest on the primary host and waits until its HTTP counter answers. */
        public void bootPrimary() throws Exception
        {
            primaryQemu = QemuProcess.start(spec, runDir.resolve("pri"), primaryRam(), false, pri);
            closers.add(primaryQemu::kill);
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            while (Netns.call(cli, () -> Http.count(GUEST_IP, 1000)) < 0)
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
        public boolean hotStandby;

        public void protect(final boolean outputCommit, final long checkpointDelayMs,
            final java.util.function.UnaryOperator<VmStateSource> wrapSource,
            final java.util.function.Function<StandbyImage, VmStateSink> wrapSink) throws Exception
        {
            final ColoConfig cfg = new ColoConfig().vmName("e2e").mode(ColoConfig.Mode.STRICT)
                .checkpointDelayMs(checkpointDelayMs).heartbeatIntervalMs(100).heartbeatTimeoutMs(1_000)
                .syncTimeoutMs(10_000).transferTimeoutMs(60_000).maxStateBytes(spec.memoryBytes() + (64L << 20)).reconnectIntervalMs(60_000);
            failover = new QemuFailover(spec, runDir.resolve("sec"), sec, hotStandby);
            closers.add(failover);
            final VmStateSink image = wrapSink.apply(new StandbyImage(imageDir(), "e2e", failover));
            closers.add(() -> deleteTree(imageDir()));
            secondary = new SecondaryEngine(cfg.conclude(), new InetSocketAddress("198.19.0.2", PORT), image,
                new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM);
            secondary.transport(new Transport()
            {
                @Override
                public ServerSocket newServerSocket() throws IOException
                {
                    return Netns.call(sec, () ->
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
                output = new NicOutputCommit("e2e", List.of(nic));
            }
            stateSource = new QemuStateSource(primaryQemu);
            final VmStateSource source = wrapSource.apply(stateSource);
            primary = new PrimaryEngine(cfg.conclude(), new InetSocketAddress("198.19.0.2", PORT), source, output,
                new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM);
            primary.transport(new Transport()
            {
                @Override
                public Socket newSocket() throws IOException
                {
                    return Netns.call(pri, () ->
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
        public void killPrimary()
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
            closers.close();
            for (final String ns : namespaces)
            {
                final String err = Netns.delete(ns);
                if (err != null)
                {
                    System.err.println("could not delete netns " + ns + ": " + err);
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
    public static final class Client implements AutoCloseable
    {
        public record Reading(long atNanos, long value)
        {
        }

        public final List<Reading> readings = Collections.synchronizedList(new ArrayList<>());
        final Thread thread;
        volatile boolean running = true;
        public volatile long errors;

        public Client(final String ns)
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

        public List<Long> values()
        {
            synchronized (readings)
            {
                return readings.stream().map(Reading::value).toList();
            }
        }

        public long countSince(final long nanos)
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
    public static final class Http
    {
        public static long count(final String ip, final int timeoutMs)
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
