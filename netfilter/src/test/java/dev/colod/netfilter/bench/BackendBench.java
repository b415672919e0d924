package dev.colod.netfilter.bench;

import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.EpochLedger;
import dev.colod.buffer.VmOutputCommit;
import dev.colod.buffer.bench.TapBench;
import dev.colod.buffer.tap.TapBackend;
import dev.colod.buffer.tap.TapDevice;
import dev.colod.buffer.tap.TapPlumbing;
import dev.colod.buffer.xdp.XdpBackend;
import dev.colod.buffer.xdp.XdpPlumbing;
import dev.colod.netfilter.NfqueueBackend;
import dev.colod.netfilter.NfqueueRules;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The three output-commit backends and the kernel bridge alone, side by side in one run inside a namespace it
 * creates: frames per second and process CPU per frame for 64 B and 1500 B IPv4/UDP frames with a release
 * every 25 ms, and the release latency of a 10 000-frame epoch (release call to the last frame at the sink).
 * Run as root: {@code mvn -q -pl netfilter exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.netfilter.bench.BackendBench}
 */
public final class BackendBench
{
    private static final String NS = "colob-n" + ProcessHandle.current().pid();

    private interface Install
    {
        Object[] install() throws Exception;
    }

    public static void main(final String[] args) throws Exception
    {
        final double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 3;
        final MultiThreadIoEventLoopGroup agent = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final MultiThreadIoEventLoopGroup sinkLoop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final IpRoute h = new IpRoute(NS);
        final Path run = Files.createTempDirectory("colob");
        IpRoute.exec(List.of("ip", "netns", "add", NS));
        try (TapDevice vm = TapDevice.open("bvm0"); TapDevice sink = TapDevice.open("bsink0"))
        {
            IpRoute.exec(List.of("ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"));
            h.ip("link", "add", "br0", "type", "bridge");
            h.ip("link", "set", "br0", "up");
            for (final String d : new String[]{"bvm0", "bsink0"})
            {
                new IpRoute(null).ip("link", "set", "dev", d, "netns", NS);
                h.ip("link", "set", "dev", d, "addrgenmode", "none");
                h.ip("link", "set", "dev", d, "master", "br0", "up");
            }
            final AtomicLong received = new AtomicLong();
            TapBench.startSink((IoEventLoop)sinkLoop.next(), sink, received);
            System.out.printf(Locale.ROOT, "# output-commit backends, %.0f s per point, %s, %d CPUs%n", seconds,
                Runtime.version(), Runtime.getRuntime().availableProcessors());
            final IoEventLoop loop = (IoEventLoop)agent.next();
            final String[] names = {"kernel bridge", "NFQUEUE", "TAP", "XDP"};
            final Install[] installs = {
                () -> new Object[]{null, null},
                () ->
                {
                    final NfqueueRules r = NfqueueRules.install("bvm0", 5, "bench", NS, run);
                    return new Object[]{r, EpochLedger.open("bvm0", loop, new BufferLimits().maxFrames(65_536).conclude(),
                        NfqueueBackend.on(5, false, NS))};
                },
                () ->
                {
                    final TapPlumbing p = TapPlumbing.install("bvm0", "br0", NS, run);
                    return new Object[]{p, EpochLedger.open("bvm0", loop,
                        new BufferLimits().maxFrames(65_536).maxBytes(256L << 20).conclude(),
                        TapBackend.on(p.guestTap(), p.uplinkTap()))};
                },
                () ->
                {
                    final XdpPlumbing p = XdpPlumbing.install("bvm0", "br0", NS, run);
                    return new Object[]{p, EpochLedger.open("bvm0", loop,
                        new BufferLimits().maxFrames(65_536).maxBytes(256L << 20).conclude(), XdpBackend.on(p))};
                }};
            for (int b = 0; b < names.length; b++)
            {
                final Object[] parts = installs[b].install();
                final EpochLedger nic = (EpochLedger)parts[1];
                final VmOutputCommit out = nic == null ? null : new VmOutputCommit("bench", List.of(nic));
                if (out != null)
                {
                    out.hold(1);
                }
                for (final int size : new int[]{64, 1500})
                {
                    final long cpu0 = cpu();
                    final long r0 = received.get();
                    final double fps = TapBench.blast(vm, size, seconds, received, out);
                    final long frames = Math.max(1, received.get() - r0);
                    final double cpuPerFrame = (cpu() - cpu0) / (double)frames;
                    String calls = "";
                    if (nic != null && nic.backend() instanceof XdpBackend x)
                    {
                        calls = String.format(Locale.ROOT, "; system calls per frame: %.4f to hold (epoll wake-ups), %.4f" +
                            " to release (sendto kicks); kernel drops %s, colod drops %d", (double)x.wakeups() / frames,
                            (double)x.kicks() / frames, x.kernelDrops(), nic.stats().droppedTotal());
                        x.resetCallCounts();
                    }
                    System.out.printf(Locale.ROOT, "%-13s %4d B: %9.0f frames/s, %6.0f ns process CPU per frame%s%n",
                        names[b], size, fps, cpuPerFrame, calls);
                }
                try
                {
                    if (out != null)
                    {
                        releaseLatency(names[b], vm, nic, out, received);
                        if (nic.backend() instanceof XdpBackend x)
                        {
                            holdOnly(vm, x, out);
                        }
                    }
                }
                catch (final Exception ex)
                {
                    System.out.println(names[b] + " release latency: failed: " + ex);
                }
                finally
                {
                    if (nic != null)
                    {
                        nic.close();
                    }
                    if (parts[0] != null)
                    {
                        ((AutoCloseable)parts[0]).close();
                    }
                }
            }
        }
        finally
        {
            agent.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
            sinkLoop.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
            IpRoute.exec(List.of("ip", "netns", "del", NS));
            try (var files = Files.list(run))
            {
                files.forEach(f -> f.toFile().delete());
            }
            Files.deleteIfExists(run);
        }
        System.exit(0);
    }

    /**
     * XDP's way in alone: 2 s of 1500 B frames into a NIC that holds and never releases (past the limit the
     * ledger drops them): process CPU per frame the backend took off the RX ring (generator's write, the hold
     * program, the kernel's copy into the UMEM, colod's drain and the chunk's return).
     */
    private static void holdOnly(final TapDevice vm, final XdpBackend x, final VmOutputCommit out) throws Exception
    {
        out.seal(2_000_000);
        final ByteBuffer f = TapBench.frame(1500, 0);
        final long cpu0 = cpu();
        final long taken0 = x.framesTaken();
        final long t0 = System.nanoTime();
        while (System.nanoTime() - t0 < 2_000_000_000L)
        {
            for (int i = 0; i < 64; i++)
            {
                vm.fd().write(f, 0, 1500);
            }
        }
        Thread.sleep(20);
        final long taken = x.framesTaken() - taken0;
        System.out.printf(Locale.ROOT, "XDP           hold only (1500 B, never released): %9.0f frames/s taken, %6.0f ns " +
            "process CPU per frame%n", taken / 2.0, (cpu() - cpu0) / (double)Math.max(1, taken));
    }

    private static long cpu()
    {
        return ((com.sun.management.OperatingSystemMXBean)ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
    }

    private static void releaseLatency(final String name, final TapDevice vm, final EpochLedger nic,
        final VmOutputCommit out, final AtomicLong received) throws Exception
    {
        final ByteBuffer f = TapBench.frame(1500, 0);
        final long[] ns = new long[10];
        long epoch = 1_000_000;
        for (int r = 0; r < ns.length; r++)
        {
            out.seal(epoch++);
            out.release(epoch - 1);
            Thread.sleep(50);
            while (nic.stats().heldFrames() < 10_000)
            {
                vm.fd().write(f, 0, 1500);
            }
            long last = -1;
            while (nic.stats().heldFrames() != last) // let every written frame reach the backend first
            {
                last = nic.stats().heldFrames();
                Thread.sleep(100);
            }
            out.seal(epoch);
            final long t0 = System.nanoTime();
            out.release(epoch++);
            // held drops to 0 once the last frame was handed to the kernel (TAP: written; NFQUEUE: the batch
            // verdict returned, and the kernel re-injects synchronously inside it)
            while (nic.stats().heldFrames() > 0)
            {
                Thread.onSpinWait();
                if (System.nanoTime() - t0 > 10_000_000_000L)
                {
                    throw new IllegalStateException(name + ": still " + nic.stats().heldFrames() + " held after 10 s");
                }
            }
            ns[r] = System.nanoTime() - t0;
        }
        java.util.Arrays.sort(ns);
        System.out.printf(Locale.ROOT, "%-13s release of a 10000-frame epoch (1500 B) call to last frame handed to the kernel:" +
            " median %.1f ms, max %.1f ms%n", name, ns[ns.length / 2] / 1e6, ns[ns.length - 1] / 1e6);
    }
}
