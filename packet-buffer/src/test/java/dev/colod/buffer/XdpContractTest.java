package dev.colod.buffer;

import dev.colod.buffer.xdp.XdpBackend;
import dev.colod.buffer.xdp.XdpPlumbing;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.util.concurrent.TimeUnit;

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
        new dev.colod.buffer.net.IpRoute(lab.guest).ethtool("-K", "vmB", "gro", "on", "tx", "off");
        final XdpPlumbing p = XdpPlumbing.install("vmA", null, lab.host, runDir);
        final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), limits, XdpBackend.on(p));
        return installed(nic, p, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }
}
