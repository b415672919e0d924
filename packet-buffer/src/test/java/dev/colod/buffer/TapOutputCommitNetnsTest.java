package dev.colod.buffer;

import dev.colod.buffer.net.PlumbingState;
import dev.colod.buffer.tap.TapBackend;
import dev.colod.buffer.tap.TapPlumbing;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Output commit on real TAP devices, tc redirects and a real bridge, inside network namespaces this test
 * creates and removes. The "VM tap" is a veth whose peer sits in a guest namespace.
 */
class TapOutputCommitNetnsTest
{
    private static MultiThreadIoEventLoopGroup group;
    private static IoEventLoop loop;

    @TempDir
    Path runDir;

    @BeforeAll
    static void startLoop()
    {
        if (dev.colod.buffer.tap.TapDevice.isAvailable())
        {
            group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
            loop = (IoEventLoop)group.next();
        }
    }

    @AfterAll
    static void stopLoop()
    {
        if (group != null)
        {
            group.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS).syncUninterruptibly();
        }
    }

    @BeforeEach
    void usable()
    {
        NetnsLab.requireUsable();
    }

    /** Everything one test needs: namespaces, plumbing and the NIC's buffer. */
    private final class Rig implements AutoCloseable
    {
        final NetnsLab lab;
        final TapPlumbing plumbing;
        final EpochLedger nic;
        final VmOutputCommit output;

        Rig(final boolean staticNeighbours, final BufferLimits limits) throws Exception
        {
            lab = new NetnsLab(staticNeighbours);
            TapPlumbing p = null;
            EpochLedger n = null;
            try
            {
                p = TapPlumbing.install("vmA", null, lab.host, runDir);
                n = EpochLedger.open("vmA", loop, limits.conclude(), TapBackend.on(p.guestTap(), p.uplinkTap(),
                    p::notRedirected));
            }
            catch (final Exception ex)
            {
                if (p != null)
                {
                    p.close();
                }
                lab.close();
                throw ex;
            }
            plumbing = p;
            nic = n;
            output = new VmOutputCommit("vm-test", List.of(nic));
        }

        DatagramSocket udp(final String ns, final String ip, final int port) throws Exception
        {
            return lab.in(ns, () ->
            {
                final DatagramSocket s = new DatagramSocket(new InetSocketAddress(InetAddress.getByName(ip), port));
                s.setSoTimeout(3_000);
                // a released epoch arrives as one burst: let the receiver's queue hold it
                s.setReceiveBufferSize(4 << 20);
                return s;
            });
        }

        @Override
        public void close()
        {
            nic.close();
            plumbing.close();
            lab.close();
        }
    }

    private static byte[] datagram(final int seq, final Random random)
    {
        final byte[] b = new byte[8 + random.nextInt(1400)];
        random.nextBytes(b);
        ByteBuffer.wrap(b).putInt(seq).putInt(b.length);
        return b;
    }

    private static void send(final DatagramSocket s, final byte[] b, final String ip, final int port) throws Exception
    {
        s.send(new DatagramPacket(b, b.length, InetAddress.getByName(ip), port));
    }

    private static byte[] receive(final DatagramSocket s) throws Exception
    {
        final DatagramPacket p = new DatagramPacket(new byte[2048], 2048);
        s.receive(p);
        return Arrays.copyOf(p.getData(), p.getLength());
    }

    private static void assertReceivesInOrder(final DatagramSocket s, final List<byte[]> expected) throws Exception
    {
        for (final byte[] want : expected)
        {
            final byte[] got = receive(s);
            final int wantSeq = ByteBuffer.wrap(want).getInt();
            assertThat(ByteBuffer.wrap(got).getInt()).as("sequence number").isEqualTo(wantSeq);
            assertThat(Arrays.equals(got, want)).as("datagram %d byte-identical", wantSeq).isTrue();
        }
    }

    private static void assertNothingArrives(final DatagramSocket s, final int ms) throws Exception
    {
        s.setSoTimeout(ms);
        try
        {
            final byte[] got = receive(s);
            throw new AssertionError("a held frame leaked out: datagram of " + got.length + " bytes");
        }
        catch (final SocketTimeoutException expected)
        {
            // nothing left the host while the epoch was held
        }
        finally
        {
            s.setSoTimeout(3_000);
        }
    }

    @Test
    void releasesHeldUdpOnlyAtVmstateReceivedAllInOrderByteIdentical() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits()))
        {
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = rig.udp(rig.lab.client, NetnsLab.CLIENT_IP, 9000);
            rig.output.hold(1);
            final Random random = new Random(1);
            final List<byte[]> epoch1 = new ArrayList<>();
            for (int i = 0; i < 120; i++)
            {
                final byte[] d = datagram(i, random);
                epoch1.add(d);
                send(guest, d, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> rig.nic.stats().heldFrames() == 120);
            assertNothingArrives(client, 300);

            rig.output.seal(1);
            final List<byte[]> epoch2 = new ArrayList<>();
            for (int i = 120; i < 170; i++)
            {
                final byte[] d = datagram(i, random);
                epoch2.add(d);
                send(guest, d, NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> rig.nic.stats().heldFrames() == 170);
            final NicStats sealed = rig.nic.stats();
            assertThat(sealed.epochs()).extracting(NicStats.EpochStats::epoch, NicStats.EpochStats::frames)
                .containsExactly(org.assertj.core.groups.Tuple.tuple(1L, 120L), org.assertj.core.groups.Tuple.tuple(-1L, 50L));
            assertThat(sealed.oldestHeldAgeNs()).isPositive();

            rig.output.release(1);
            assertReceivesInOrder(client, epoch1);
            assertNothingArrives(client, 300); // epoch 2 is still held
            rig.output.seal(2);
            rig.output.release(2);
            assertReceivesInOrder(client, epoch2);
            await().until(() -> rig.nic.stats().releasedFrames() == 170); // counted after the writes
            final NicStats s = rig.nic.stats();
            assertThat(s.heldFrames()).isZero();
            assertThat(s.releasedFrames()).isEqualTo(170);
            assertThat(s.droppedTotal()).isZero();
        }
    }

    @Test
    void inboundTrafficIsNeverDelayedByAHeldEpoch() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits()))
        {
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = rig.udp(rig.lab.client, NetnsLab.CLIENT_IP, 9000);
            rig.output.hold(1);
            send(guest, new byte[]{1, 2, 3}, NetnsLab.CLIENT_IP, 9000);
            await().until(() -> rig.nic.stats().heldFrames() == 1);
            final Random random = new Random(2);
            for (int i = 0; i < 100; i++)
            {
                final byte[] d = datagram(i, random);
                send(client, d, NetnsLab.GUEST_IP, 7000);
                assertThat(receive(guest)).isEqualTo(d);
            }
            // the loop counts a frame after its write returns, so the guest can read it first
            await().until(() -> rig.nic.stats().inboundFrames() >= 100);
            assertThat(rig.nic.stats().heldFrames()).isEqualTo(1);
            assertNothingArrives(client, 200);
        }
    }

    @Test
    void tcpAndArpWorkThroughPeriodicCheckpoints() throws Exception
    {
        try (Rig rig = new Rig(false, new BufferLimits()))
        {
            rig.output.hold(1);
            final AtomicLong epoch = new AtomicLong(1);
            final Thread checkpoints = new Thread(() ->
            {
                while (!Thread.currentThread().isInterrupted())
                {
                    final long e = epoch.getAndIncrement();
                    rig.output.seal(e);
                    rig.output.release(e);
                    try
                    {
                        Thread.sleep(10);
                    }
                    catch (final InterruptedException ex)
                    {
                        return;
                    }
                }
            });
            checkpoints.start();
            try
            {
                final ServerSocket server = rig.lab.in(rig.lab.client,
                    () -> new ServerSocket(9100, 1, InetAddress.getByName(NetnsLab.CLIENT_IP)));
                final byte[] data = new byte[2 << 20];
                new Random(3).nextBytes(data);
                final Thread sender = new Thread(() ->
                {
                    // the socket must be created and connected on the thread inside the guest namespace
                    try (Socket s = rig.lab.in(rig.lab.guest, () ->
                    {
                        final Socket c = new Socket();
                        c.connect(new InetSocketAddress(NetnsLab.CLIENT_IP, 9100), 10_000);
                        return c;
                    }))
                    {
                        final OutputStream out = s.getOutputStream();
                        out.write(data);
                        s.shutdownOutput();
                        s.getInputStream().read();
                    }
                    catch (final Exception ex)
                    {
                        throw new IllegalStateException(ex);
                    }
                });
                sender.start();
                server.setSoTimeout(20_000);
                try (Socket s = server.accept())
                {
                    s.setSoTimeout(20_000);
                    final InputStream in = s.getInputStream();
                    assertThat(Arrays.equals(in.readAllBytes(), data)).as("2 MiB arrived byte-identical").isTrue();
                }
                sender.join(20_000);
                server.close();
                // the guest resolved the client's MAC by ARP through the buffer: request held, reply inbound
                assertThat(new IpRoute(rig.lab.guest).ip("neigh", "show", NetnsLab.CLIENT_IP)).contains("lladdr");
                assertThat(rig.nic.stats().releasedFrames()).isGreaterThan(0);
            }
            finally
            {
                checkpoints.interrupt();
                checkpoints.join();
            }
        }
    }

    @Test
    void floodPastTheLimitAsksForAnEarlyCheckpointThenDropsCounted() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits().maxFrames(100).highWaterPercent(50)))
        {
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = rig.udp(rig.lab.client, NetnsLab.CLIENT_IP, 9000);
            rig.output.hold(1);
            final Random random = new Random(4);
            for (int i = 0; i < 1000; i++)
            {
                send(guest, datagram(i, random), NetnsLab.CLIENT_IP, 9000);
                if (i % 50 == 49)
                {
                    final long want = Math.min(i + 1, 100);
                    await().until(() -> rig.nic.stats().heldFrames() == want);
                }
            }
            await().until(() -> rig.nic.stats().droppedLimitFrames() == 900);
            final NicStats s = rig.nic.stats();
            assertThat(s.heldFrames()).isEqualTo(100);
            assertThat(s.earlyCheckpointRequests()).isEqualTo(1);
            assertThat(rig.output.wantsCheckpoint()).isTrue();
            assertNothingArrives(client, 200);
            rig.output.seal(1);
            rig.output.release(1);
            for (int i = 0; i < 100; i++)
            {
                assertThat(ByteBuffer.wrap(receive(client)).getInt()).isEqualTo(i);
            }
            await().until(() -> rig.nic.stats().releasedFrames() == 100); // counted after the writes
        }
    }

    @Test
    void backpressureStopsReadingAtTheLimitAndLeaksNothing() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits().maxFrames(100)
            .policy(BufferLimits.Policy.BACKPRESSURE)))
        {
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = rig.udp(rig.lab.client, NetnsLab.CLIENT_IP, 9000);
            rig.output.hold(1);
            final Random random = new Random(5);
            for (int i = 0; i < 300; i++)
            {
                send(guest, datagram(i, random), NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> rig.nic.stats().backpressureStalls() >= 1);
            assertThat(rig.nic.stats().heldFrames()).isEqualTo(100);
            assertThat(rig.nic.stats().droppedLimitFrames()).isZero();
            assertNothingArrives(client, 200);
            rig.output.seal(1);
            rig.output.release(1);
            // the 100 of epoch 1 leave in order; what waited in the kernel queue is read now, into epoch 2
            for (int i = 0; i < 100; i++)
            {
                assertThat(ByteBuffer.wrap(receive(client)).getInt()).isEqualTo(i);
            }
            await().untilAsserted(() -> assertThat(rig.nic.stats().heldFrames()).as("%s", rig.nic.stats()).isPositive());
            assertNothingArrives(client, 200);
            rig.output.seal(2);
            rig.output.release(2);
            assertThat(ByteBuffer.wrap(receive(client)).getInt()).isEqualTo(100);
        }
    }

    @Test
    void teardownLeavesTheHostAsFound() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            final IpRoute h = new IpRoute(lab.host);
            final String linksBefore = links(h);
            final TapPlumbing p = TapPlumbing.install("vmA", null, lab.host, runDir);
            assertThat(h.ip("-o", "link", "show", "dev", "vmA")).doesNotContain("master br0");
            assertThat(h.tc("filter", "show", "dev", "vmA", "ingress")).contains("mirred");
            p.close();
            assertHostAsFound(h, linksBefore);
        }
    }

    @Test
    void recoversWhatACrashedAgentLeftBehind() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            final IpRoute h = new IpRoute(lab.host);
            final String linksBefore = links(h);
            final TapPlumbing p = TapPlumbing.install("vmA", null, lab.host, runDir);
            // the agent "dies": its tap descriptors close, nothing else is undone
            p.guestTap().close();
            p.uplinkTap().close();
            assertThat(h.tc("filter", "show", "dev", "vmA", "ingress")).contains("mirred");
            final List<String> repaired = PlumbingState.recover(runDir);
            assertThat(repaired).anyMatch(s -> s.contains("stale tc ingress redirect on vmA"))
                .anyMatch(s -> s.contains("vmA back on bridge br0"));
            assertHostAsFound(h, linksBefore);
            assertThat(runDir.toFile().list()).isEmpty();
            // and the guest reaches the client directly again
            final DatagramSocket guest = lab.in(lab.guest, () -> new DatagramSocket(7000, InetAddress.getByName(NetnsLab.GUEST_IP)));
            final DatagramSocket client = lab.in(lab.client, () -> new DatagramSocket(9000, InetAddress.getByName(NetnsLab.CLIENT_IP)));
            client.setSoTimeout(3_000);
            send(guest, new byte[]{42}, NetnsLab.CLIENT_IP, 9000);
            assertThat(receive(client)).containsExactly(42);
        }
    }

    /**
     * What the guest sent before its VM paused belongs to the epoch sealed at that pause even if the agent's loop
     * had not read it yet: the seal takes in the guest tap's queue. (Else it waits one checkpoint longer, and in
     * hybrid mode it is compared against a copy whose state has it sent already: a compare timeout.)
     */
    @Test
    void framesQueuedForTheAgentAtTheSealBelongToTheSealedEpoch() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits()))
        {
            rig.output.hold(1);
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final IpRoute host = new IpRoute(rig.lab.host);
            final String g = TapPlumbing.guestTapName("vmA");
            final long before = queuedTo(host, g);
            final java.util.concurrent.CountDownLatch stalled = new java.util.concurrent.CountDownLatch(1);
            final java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
            rig.nic.loop().post(() ->
            {
                stalled.countDown();
                try
                {
                    go.await(); // the loop is busy: what the guest sends stays in the guest tap's queue
                }
                catch (final InterruptedException ex)
                {
                    Thread.currentThread().interrupt();
                }
                rig.output.seal(1); // runs next on this loop, before it looks at the guest tap again
            });
            stalled.await();
            try
            {
                for (int i = 0; i < 30; i++)
                {
                    send(guest, new byte[100], NetnsLab.CLIENT_IP, 9000);
                }
                // the kernel handed all 30 to the guest tap's queue (its qdisc counts what it passed on)
                await().until(() -> queuedTo(host, g) - before >= 30);
            }
            finally
            {
                go.countDown(); // also when the wait failed: a stuck loop would hang the class's teardown
            }
            await().untilAsserted(() -> assertThat(rig.nic.stats().epochs())
                .extracting(NicStats.EpochStats::epoch, NicStats.EpochStats::frames)
                .containsExactly(org.assertj.core.groups.Tuple.tuple(1L, 30L), org.assertj.core.groups.Tuple.tuple(-1L, 0L)));
            guest.close();
        }
    }

    /**
     * Packets the egress qdisc of {@code dev} passed on to it (for a tap: into its queue for the reader). Not the
     * ingress or clsact qdisc's: those count what is written into the tap (e.g. the client side's IPv6 announcements,
     * at moments of their own), which made this wait miss now and then when it took the largest count of all.
     */
    private static long queuedTo(final IpRoute net, final String dev) throws Exception
    {
        final String out = net.tc("-s", "-j", "qdisc", "show", "dev", dev);
        final java.util.regex.Pattern packets = java.util.regex.Pattern.compile("\"packets\":(\\d+)");
        long max = 0;
        for (final String qdisc : out.split("\\{\"kind\":"))
        {
            final java.util.regex.Matcher m = packets.matcher(qdisc);
            if (!qdisc.startsWith("\"ingress\"") && !qdisc.startsWith("\"clsact\"") && m.find())
            {
                max = Math.max(max, Long.parseLong(m.group(1)));
            }
        }
        return max;
    }

    @Test
    void guestFramesTheKernelCouldNotQueueForAStalledAgentAreCounted() throws Exception
    {
        try (Rig rig = new Rig(true, new BufferLimits()))
        {
            rig.output.hold(1);
            final DatagramSocket guest = rig.udp(rig.lab.guest, NetnsLab.GUEST_IP, 7000);
            final java.util.concurrent.CountDownLatch stalled = new java.util.concurrent.CountDownLatch(1);
            final java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
            rig.nic.loop().post(() ->
            {
                stalled.countDown();
                try
                {
                    go.await(); // the agent's loop is stuck: the guest tap's kernel queue fills up
                }
                catch (final InterruptedException ex)
                {
                    Thread.currentThread().interrupt();
                }
            });
            stalled.await();
            final int sent = 3000;
            for (int i = 0; i < sent; i++)
            {
                send(guest, new byte[100], NetnsLab.CLIENT_IP, 9000);
            }
            go.countDown();
            await().untilAsserted(() ->
            {
                final NicStats s = rig.nic.stats();
                assertThat(s.heldFrames() + s.droppedLimitFrames()).isEqualTo(sent);
                assertThat(s.droppedLimitFrames()).as("dropped by the kernel, queue full").isPositive();
            });
            guest.close();
        }
    }

    @Test
    void theAgentAfterACrashCountsWhatTheCrashedOneHeldAndWhatTheKernelDroppedMeanwhileAndReleasesNoneOfIt()
        throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            final Path held = HeldRecord.fileOf(runDir, "vmA");
            final MultiThreadIoEventLoopGroup crashing = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
            final TapPlumbing p = TapPlumbing.install("vmA", null, lab.host, runDir);
            final EpochLedger first = EpochLedger.open("vmA", (IoEventLoop)crashing.next(), new BufferLimits().conclude(),
                TapBackend.on(p.guestTap(), p.uplinkTap()), FrameLedger.Mode.HOLD, HeldRecord.create(held));
            final DatagramSocket guest = lab.in(lab.guest, () -> new DatagramSocket(7000, InetAddress.getByName(NetnsLab.GUEST_IP)));
            final DatagramSocket client = lab.in(lab.client, () -> new DatagramSocket(9000, InetAddress.getByName(NetnsLab.CLIENT_IP)));
            client.setSoTimeout(500);
            for (int i = 0; i < 3; i++)
            {
                send(guest, new byte[100], NetnsLab.CLIENT_IP, 9000);
            }
            await().until(() -> first.stats().heldFrames() == 3);
            // the agent dies: the kernel closes its taps (they vanish); its redirect on the VM tap stays
            first.backend().close();
            crashing.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS).syncUninterruptibly();
            for (int i = 0; i < 4; i++)
            {
                send(guest, new byte[100], NetnsLab.CLIENT_IP, 9000);
            }

            // the next agent: the record says 3 held (never released), the kernel's redirect dropped the 4 later ones
            final HeldRecord.Left left = HeldRecord.takeLeft(held).orElseThrow();
            assertThat(left).isEqualTo(new HeldRecord.Left(3, 3 * (14 + 20 + 8 + 100)));
            final TapPlumbing again = TapPlumbing.install("vmA", null, lab.host, runDir);
            assertThat(again.droppedByStaleRedirect()).isEqualTo(4);
            final EpochLedger next = EpochLedger.open("vmA", loop, new BufferLimits().conclude(),
                TapBackend.on(again.guestTap(), again.uplinkTap()), FrameLedger.Mode.HOLD, HeldRecord.create(held));
            next.lostInAgentRestart(left.frames() + again.droppedByStaleRedirect());
            assertThat(next.stats().droppedAgentRestart()).isEqualTo(7);
            next.passThrough("test");
            try
            {
                client.receive(new DatagramPacket(new byte[128], 128));
                throw new AssertionError("a frame the crashed agent held, or sent while no agent ran, got out");
            }
            catch (final java.net.SocketTimeoutException expected)
            {
                // none of the 7 exists any more
            }
            send(guest, new byte[]{42}, NetnsLab.CLIENT_IP, 9000);
            client.setSoTimeout(3_000);
            assertThat(receive(client)).containsExactly(42);
            next.close();
            assertThat(held).as("a clean stop leaves no record").doesNotExist();
            again.close();
            guest.close();
            client.close();
        }
    }

    private static String links(final IpRoute h) throws Exception
    {
        return h.ip("-o", "link", "show").replaceAll("\\s+state \\S+", "").replaceAll("qlen \\d+", "");
    }

    private static void assertHostAsFound(final IpRoute h, final String linksBefore) throws Exception
    {
        await().untilAsserted(() -> assertThat(h.ip("-o", "link", "show")).doesNotContain("cg-vmA").doesNotContain("cu-vmA"));
        assertThat(h.ip("-o", "link", "show", "dev", "vmA")).contains("master br0");
        assertThat(h.tc("qdisc", "show", "dev", "vmA")).doesNotContain("ingress");
        assertThat(h.ip("-o", "link", "show").lines().count()).isEqualTo(linksBefore.lines().count());
    }
}
