package dev.colod.netfilter;

import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.EpochLedger;
import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.NicStats;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** What only the kernel-side backend has: queue overflow, agent death, rules and sysctls restored as found. */
class NfqueueNetnsTest
{
    private static MultiThreadIoEventLoopGroup group;

    @TempDir
    Path runDir;

    @BeforeAll
    static void loop()
    {
        if (dev.colod.buffer.tap.TapDevice.isAvailable())
        {
            group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        }
    }

    @AfterAll
    static void stop()
    {
        if (group != null)
        {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
        }
    }

    @BeforeEach
    void usable()
    {
        NetnsLab.requireUsable();
        NfqueueContractTest.requireNfqueue();
    }

    private static DatagramSocket udp(final NetnsLab lab, final String ns, final String ip, final int port) throws Exception
    {
        return lab.in(ns, () ->
        {
            final DatagramSocket s = new DatagramSocket(new InetSocketAddress(InetAddress.getByName(ip), port));
            s.setSoTimeout(300);
            return s;
        });
    }

    private static void send(final DatagramSocket s, final int seq) throws Exception
    {
        final byte[] b = ByteBuffer.allocate(64).putInt(seq).array();
        s.send(new DatagramPacket(b, b.length, InetAddress.getByName(NetnsLab.CLIENT_IP), 9000));
    }

    private static int received(final DatagramSocket s) throws Exception
    {
        int n = 0;
        try
        {
            while (true)
            {
                s.receive(new DatagramPacket(new byte[2048], 2048));
                n++;
            }
        }
        catch (final SocketTimeoutException end)
        {
            return n;
        }
    }

    /**
     * Rules and sysctls. Empty built-in chains with policy ACCEPT are left out: the first iptables call creates
     * the filter table, and its empty default chains stay (they filter nothing) when our rules are removed.
     */
    private static String snapshot(final String ns) throws Exception
    {
        final String rules = IpRoute.exec(List.of("ip", "netns", "exec", ns, "iptables-save")) +
            IpRoute.exec(List.of("ip", "netns", "exec", ns, "ip6tables-save"));
        return rules.lines().filter(l -> !l.startsWith("#") && !l.startsWith("*") && !l.equals("COMMIT") &&
                !l.matches(":(INPUT|FORWARD|OUTPUT) ACCEPT \\[\\d+:\\d+\\]") && !l.isBlank())
            .collect(java.util.stream.Collectors.joining("\n")) + "\n" +
            IpRoute.exec(List.of("ip", "netns", "exec", ns, "sysctl", "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables"));
    }

    @Test
    void overflowIsDroppedByTheKernelNothingLeaksAndCountersMatch() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            try (NfqueueRules rules = NfqueueRules.install("vmA", 9, "t", lab.host, runDir);
                 EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(),
                     new BufferLimits().maxFrames(50).conclude(), NfqueueBackend.on(9, false, lab.host)))
            {
                final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
                final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
                nic.hold(1);
                for (int i = 0; i < 200; i++)
                {
                    send(guest, i);
                }
                await().until(() -> nic.stats().heldFrames() == 50);
                await().until(() -> ((NfqueueBackend)nic.backend()).kernelCounters()[1] == 150);
                assertThat(received(client)).as("nothing leaks past a full fail-closed queue").isZero();
                final long[] k = ((NfqueueBackend)nic.backend()).kernelCounters();
                final NicStats s = nic.stats();
                assertThat(k[0]).as("kernel queue_total").isEqualTo(s.heldFrames());
                assertThat(s.droppedLimitFrames()).as("our count of overflow drops = kernel queue_dropped").isEqualTo(k[1]);
                nic.seal(1);
                nic.release(1);
                client.setSoTimeout(2000);
                assertThat(received(client)).isEqualTo(50);
            }
        }
    }

    @Test
    void whenTheAgentDiesHeldFramesAreDroppedNotReleased() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            final String before = snapshot(lab.host);
            final NfqueueRules rules = NfqueueRules.install("vmA", 11, "t", lab.host, runDir);
            final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), new BufferLimits().conclude(),
                NfqueueBackend.on(11, false, lab.host));
            final DatagramSocket guest = udp(lab, lab.guest, NetnsLab.GUEST_IP, 7000);
            final DatagramSocket client = udp(lab, lab.client, NetnsLab.CLIENT_IP, 9000);
            nic.hold(1);
            for (int i = 0; i < 20; i++)
            {
                send(guest, i);
            }
            await().until(() -> nic.stats().heldFrames() == 20);
            nic.close(); // the agent's netlink socket is gone, as in a crash; the rules stay
            for (int i = 20; i < 30; i++)
            {
                send(guest, i);
            }
            client.setSoTimeout(1000);
            assertThat(received(client)).as("fail-closed: nothing held or later leaks without the agent").isZero();
            // recovery after the crash puts rules and sysctls back exactly
            assertThat(NfqueueRules.recover(runDir)).singleElement().asString().contains("removed NFQUEUE rules for vmA");
            assertThat(snapshot(lab.host)).isEqualTo(before);
            rules.close(); // idempotent
            send(guest, 99);
            assertThat(received(client)).as("traffic flows directly again").isEqualTo(1);
        }
    }

    @Test
    void rulesAndSysctlsAreRestoredExactlyAsFound() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            final String before = snapshot(lab.host);
            try (NfqueueRules rules = NfqueueRules.install("vmA", 12, "t", lab.host, runDir))
            {
                assertThat(snapshot(lab.host)).contains("colod:t").contains("NFQUEUE --queue-num 12")
                    .contains("bridge-nf-call-iptables = 1");
            }
            assertThat(snapshot(lab.host)).isEqualTo(before);
            assertThat(runDir.toFile().list()).isEmpty();
        }
    }
}
