package dev.colod.buffer;

import dev.colod.buffer.net.PlumbingState;
import dev.colod.buffer.xdp.XdpBackend;
import dev.colod.buffer.xdp.XdpPlumbing;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.junit.jupiter.api.Test;

import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The output-commit contract on the XDP backend: XDP hold program, AF_XDP rings, release through a veth. */
class XdpContractTest extends OutputCommitContract
{
    @Override
    protected Installed install(final NetnsLab lab, final BufferLimits limits) throws Exception
    {
        final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        // the lab's "VM tap" is a veth: its peer (the guest's NIC) takes XDP-redirected frames only with NAPI on
        // (GRO), and, like a QEMU NIC without vnet_hdr, the guest computes its checksums (no tx offload); a real
        // VM's tap (tun) takes redirected frames as it is
        new dev.colod.os.IpRoute(lab.guest).ethtool("-K", "vmB", "gro", "on", "tx", "off");
        final XdpPlumbing p = XdpPlumbing.install("vmA", null, lab.host, runDir);
        final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), limits, XdpBackend.on(p));
        return installed(nic, p, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }

    @Test
    void withTheAgentDeadTheGuestsEgressIsDroppedAndRecoveryPutsTheHostBack() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true))
        {
            new IpRoute(lab.guest).ethtool("-K", "vmB", "gro", "on", "tx", "off");
            final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
            final XdpPlumbing p = XdpPlumbing.install("vmA", null, lab.host, runDir);
            final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), new BufferLimits().conclude(),
                XdpBackend.on(p), FrameLedger.Mode.PASS_THROUGH, HeldRecord.create(HeldRecord.fileOf(runDir, "vmA")));
            final DatagramSocket guest = lab.in(lab.guest, () -> new DatagramSocket(
                new InetSocketAddress(InetAddress.getByName(NetnsLab.GUEST_IP), 7000)));
            final DatagramSocket client = lab.in(lab.client, () -> new DatagramSocket(
                new InetSocketAddress(InetAddress.getByName(NetnsLab.CLIENT_IP), 9000)));
            client.setSoTimeout(500);
            nic.hold(1);
            guest.send(new DatagramPacket(new byte[64], 64, InetAddress.getByName(NetnsLab.CLIENT_IP), 9000));
            org.awaitility.Awaitility.await().until(() -> nic.stats().heldFrames() == 1);
            // the agent dies: the kernel closes its descriptors (sockets, programs, links); devices stay
            nic.backend().close();
            p.abandon();
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
            for (int i = 0; i < 5; i++)
            {
                guest.send(new DatagramPacket(new byte[64], 64, InetAddress.getByName(NetnsLab.CLIENT_IP), 9000));
            }
            try
            {
                client.receive(new DatagramPacket(new byte[128], 128));
                throw new AssertionError("a frame left while the agent was dead");
            }
            catch (final SocketTimeoutException expected)
            {
                // dropped: no program, and the VM tap is on no bridge
            }
            assertThat(new IpRoute(lab.host).ip("-o", "link", "show", "dev", "vmA")).doesNotContain("master");
            assertThat(HeldRecord.takeLeft(HeldRecord.fileOf(runDir, "vmA"))).as("what died with the agent")
                .contains(new HeldRecord.Left(1, 14 + 20 + 8 + 64));

            assertThat(PlumbingState.recover(runDir)).contains("deleted stale agent tap " + XdpPlumbing.uplinkName("vmA"))
                .contains("put vmA back on bridge br0");
            assertThat(new IpRoute(lab.host).ip("-o", "link", "show", "dev", "vmA")).contains("master br0");
            guest.send(new DatagramPacket(new byte[64], 64, InetAddress.getByName(NetnsLab.CLIENT_IP), 9000));
            client.setSoTimeout(3_000);
            client.receive(new DatagramPacket(new byte[128], 128)); // the host is as it was: the bridge forwards
            guest.close();
            client.close();
        }
    }

    @Test
    void inboundFramesTheKernelRedirectsAreCountedByTheInboundProgram() throws Exception
    {
        try (NetnsLab lab = new NetnsLab(true); Installed b = install(lab, new BufferLimits().conclude()))
        {
            final DatagramSocket guest = lab.in(lab.guest, () -> new DatagramSocket(
                new InetSocketAddress(InetAddress.getByName(NetnsLab.GUEST_IP), 7000)));
            final DatagramSocket client = lab.in(lab.client, () -> new DatagramSocket(
                new InetSocketAddress(InetAddress.getByName(NetnsLab.CLIENT_IP), 9000)));
            guest.setSoTimeout(3_000);
            final long before = b.nic().stats().inboundFrames();
            for (int i = 0; i < 10; i++)
            {
                client.send(new DatagramPacket(new byte[100], 100, InetAddress.getByName(NetnsLab.GUEST_IP), 7000));
                guest.receive(new DatagramPacket(new byte[200], 200));
            }
            assertThat(b.nic().stats().inboundFrames() - before).isGreaterThanOrEqualTo(10);
            assertThat(b.nic().stats().inboundBytes()).isGreaterThanOrEqualTo(10 * (100 + 42));
            guest.close();
            client.close();
        }
    }
}
