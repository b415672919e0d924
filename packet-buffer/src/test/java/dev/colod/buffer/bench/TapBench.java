package dev.colod.buffer.bench;

import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.EpochLedger;
import dev.colod.buffer.VmOutputCommit;
import dev.colod.buffer.tap.TapBackend;
import dev.colod.buffer.tap.TapDevice;
import dev.colod.buffer.tap.TapPlumbing;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEvent;
import io.netty.channel.IoEventLoop;
import io.netty.channel.IoRegistration;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandle;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollIoOps;
import io.netty.channel.unix.FileDescriptor;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Frames per second through the TAP output-commit path against the kernel bridge alone, release latency of a
 * 10 000-frame epoch, and allocation per frame, all in one run inside a network namespace it creates.
 * A "VM" writes Ethernet frames into its tap (as QEMU does); a sink tap on the same bridge counts what arrives.
 * Run as root: {@code mvn -q -pl packet-buffer exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.buffer.bench.TapBench}
 */
public final class TapBench
{
    private static final String NS = "colob-" + ProcessHandle.current().pid();

    public static void main(final String[] args) throws Exception
    {
        final double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 3;
        final MultiThreadIoEventLoopGroup agentGroup = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final MultiThreadIoEventLoopGroup sinkGroup = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final IpRoute h = new IpRoute(NS);
        IpRoute.exec(List.of("ip", "netns", "add", NS));
        try
        {
            IpRoute.exec(List.of("ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"));
            IpRoute.exec(List.of("ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"));
            h.ip("link", "add", "br0", "type", "bridge");
            h.ip("link", "set", "br0", "up");
            try (TapDevice vm = TapDevice.open("bvm0"); TapDevice sink = TapDevice.open("bsink0"))
            {
                for (final String d : new String[]{"bvm0", "bsink0"})
                {
                    new IpRoute(null).ip("link", "set", "dev", d, "netns", NS);
                    h.ip("link", "set", "dev", d, "addrgenmode", "none");
                    h.ip("link", "set", "dev", d, "master", "br0", "up");
                }
                final AtomicLong received = new AtomicLong();
                startSink((IoEventLoop)sinkGroup.next(), sink, received);
                System.out.printf(Locale.ROOT, "# packet-buffer benchmark, %.0f s per point, %s, %d CPUs%n", seconds,
                    Runtime.version(), Runtime.getRuntime().availableProcessors());
                final double[] bridge = new double[2];
                final double[] agent = new double[2];
                final int[] sizes = {64, 1500};
                for (int i = 0; i < sizes.length; i++)
                {
                    bridge[i] = blast(vm, sizes[i], seconds, received, null);
                }
                final java.nio.file.Path run = java.nio.file.Files.createTempDirectory("colob");
                try (TapPlumbing p = TapPlumbing.install("bvm0", "br0", NS, run))
                {
                    final IoEventLoop loop = (IoEventLoop)agentGroup.next();
                    final EpochLedger nic = EpochLedger.open("bvm0", loop,
                        new BufferLimits().maxFrames(65_536).maxBytes(256L << 20).conclude(),
                        TapBackend.on(p.guestTap(), p.uplinkTap()));
                    final VmOutputCommit out = new VmOutputCommit("bench", List.of(nic));
                    out.hold(1);
                    final long loopThread = loop.submit(() -> Thread.currentThread().getId()).get();
                    for (int i = 0; i < sizes.length; i++)
                    {
                        final long alloc0 = allocated(loopThread);
                        final long frames0 = nic.stats().releasedFrames();
                        agent[i] = blast(vm, sizes[i], seconds, received, out);
                        final long alloc = allocated(loopThread) - alloc0;
                        final long frames = nic.stats().releasedFrames() - frames0;
                        System.out.printf(Locale.ROOT,
                            "%4d B frames: kernel bridge %9.0f frames/s, through colod (release every 25 ms) %9.0f frames/s = %.2fx;" +
                            " loop thread allocated %.3f B/frame (%d B over %d frames, %d epochs)%n",
                            sizes[i], bridge[i], agent[i], agent[i] / bridge[i], (double)alloc / frames, alloc, frames,
                            (long)(seconds * 40));
                    }
                    releaseLatency(vm, nic, out);
                    nic.close();
                }
            }
        }
        finally
        {
            agentGroup.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
            sinkGroup.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
            IpRoute.exec(List.of("ip", "netns", "del", NS));
        }
        System.exit(0);
    }

    public static long allocated(final long threadId)
    {
        return ((com.sun.management.ThreadMXBean)ManagementFactory.getThreadMXBean()).getThreadAllocatedBytes(threadId);
    }

    /**
     * An Ethernet frame of {@code size} bytes carrying a valid IPv4/UDP packet 198.18.0.2 -> 198.18.0.3 (so that
     * bridge netfilter and NFQUEUE see it too) to an unknown unicast MAC, which the bridge floods to the sink.
     */
    public static ByteBuffer frame(final int size, final int seq)
    {
        final ByteBuffer f = ByteBuffer.allocateDirect(size);
        f.put(new byte[]{0x02, 0, 0, 0, 0, 0x02});
        f.put(new byte[]{0x02, 0, 0, 0, 0, 0x01});
        f.putShort((short)0x0800);
        final int ipLen = size - 14;
        final int ip = f.position();
        f.put((byte)0x45).put((byte)0).putShort((short)ipLen).putShort((short)seq).putShort((short)0x4000)
            .put((byte)64).put((byte)17).putShort((short)0).put(new byte[]{(byte)198, 18, 0, 2})
            .put(new byte[]{(byte)198, 18, 0, 3});
        int sum = 0;
        for (int i = 0; i < 20; i += 2)
        {
            sum += f.getShort(ip + i) & 0xffff;
        }
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f.putShort(ip + 10, (short)~sum);
        f.putShort((short)7000).putShort((short)9000).putShort((short)(ipLen - 20)).putShort((short)0);
        f.putInt(seq);
        return f;
    }

    /** Writes frames into the VM's tap for {@code seconds}; returns frames per second that reached the sink. */
    public static double blast(final TapDevice vm, final int size, final double seconds, final AtomicLong received,
        final VmOutputCommit out) throws Exception
    {
        final ByteBuffer f = frame(size, 0);
        final FileDescriptor fd = vm.fd();
        final Thread checkpoints = out == null ? null : new Thread(() ->
        {
            long epoch = 1;
            while (!Thread.currentThread().isInterrupted())
            {
                out.seal(epoch);
                out.release(epoch);
                epoch++;
                try
                {
                    Thread.sleep(25);
                }
                catch (final InterruptedException ex)
                {
                    return;
                }
            }
        });
        if (checkpoints != null)
        {
            checkpoints.start();
        }
        // warm up, then measure what arrives at the sink over the window
        final long warmEnd = System.nanoTime() + 500_000_000L;
        while (System.nanoTime() < warmEnd)
        {
            fd.write(f, 0, size);
        }
        final long r0 = received.get();
        final long t0 = System.nanoTime();
        final long end = t0 + (long)(seconds * 1e9);
        while (System.nanoTime() < end)
        {
            for (int i = 0; i < 64; i++)
            {
                fd.write(f, 0, size);
            }
        }
        Thread.sleep(60); // the last epoch's release
        final long r1 = received.get();
        final long t1 = System.nanoTime();
        if (checkpoints != null)
        {
            checkpoints.interrupt();
            checkpoints.join();
        }
        Thread.sleep(100);
        return (r1 - r0) / ((t1 - t0) / 1e9);
    }

    private static void releaseLatency(final TapDevice vm, final EpochLedger nic, final VmOutputCommit out) throws Exception
    {
        final ByteBuffer f = frame(1500, 0);
        long epoch = 1_000_000;
        final long[] ns = new long[20];
        for (int r = 0; r < ns.length; r++)
        {
            out.seal(epoch++); // start an empty epoch
            while (nic.stats().heldFrames() < 10_000)
            {
                vm.fd().write(f, 0, 1500);
                if (nic.stats().heldFrames() == 0)
                {
                    Thread.onSpinWait();
                }
            }
            out.seal(epoch);
            out.release(epoch);
            epoch++;
            while (nic.stats().heldFrames() > 0)
            {
                Thread.sleep(1);
            }
            ns[r] = nic.lastReleaseNanos();
            final long frames = nic.lastReleaseFrames();
            if (frames < 10_000)
            {
                throw new IllegalStateException("released only " + frames + " frames");
            }
        }
        java.util.Arrays.sort(ns);
        System.out.printf(Locale.ROOT, "release of a 10000-frame epoch (1500 B): median %.3f ms, max %.3f ms over %d runs" +
            " (%.0f ns per frame)%n", ns[ns.length / 2] / 1e6, ns[ns.length - 1] / 1e6, ns.length, ns[ns.length / 2] / 10_000.0);
    }

    public static void startSink(final IoEventLoop loop, final TapDevice sink, final AtomicLong received) throws Exception
    {
        final ByteBuffer buf = ByteBuffer.allocateDirect(65_536);
        final IoRegistration reg = loop.register(new EpollIoHandle()
        {
            @Override
            public FileDescriptor fd()
            {
                return sink.fd();
            }

            @Override
            public void handle(final IoRegistration registration, final IoEvent event)
            {
                try
                {
                    long n = 0;
                    while (sink.fd().read(buf, 0, buf.capacity()) > 0)
                    {
                        n++;
                    }
                    received.addAndGet(n);
                }
                catch (final java.io.IOException ex)
                {
                    throw new java.io.UncheckedIOException(ex);
                }
            }

            @Override
            public void close()
            {
            }
        }).get();
        reg.submit(EpollIoOps.EPOLLIN);
    }
}
