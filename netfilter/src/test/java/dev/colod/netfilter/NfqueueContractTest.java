package dev.colod.netfilter;

import dev.colod.buffer.BufferLimits;
import dev.colod.buffer.EpochLedger;
import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.OutputCommitContract;
import dev.colod.buffer.Prerequisites;
import dev.colod.os.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.io.IOException;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** The output-commit contract on the NFQUEUE backend. */
class NfqueueContractTest extends OutputCommitContract
{
    static String unusableCause()
    {
        try
        {
            IpRoute.exec(List.of("iptables", "-V"));
            IpRoute.exec(List.of("ip6tables", "-V"));
            return null;
        }
        catch (final IOException ex)
        {
            return "iptables/ip6tables missing (apt-get install iptables): " + ex.getMessage();
        }
    }

    static void requireNfqueue()
    {
        Prerequisites.require("NFQUEUE backend", unusableCause());
    }

    @Override
    protected void requireBackend()
    {
        requireNfqueue();
    }

    @Override
    protected Installed install(final NetnsLab lab, final BufferLimits limits) throws Exception
    {
        final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final NfqueueRules rules = NfqueueRules.install("vmA", 7, "test", lab.host, runDir);
        final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), limits,
            NfqueueBackend.on(7, false, lab.host));
        return installed(nic, rules, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }
}
