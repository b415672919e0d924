package dev.colod.netfilter;

import dev.colod.buffer.NetnsLab;
import dev.colod.buffer.OutputCommitContract;
import dev.colod.buffer.net.IpRoute;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.io.IOException;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

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

    static void assumeNfqueue()
    {
        final String why = unusableCause();
        if (why != null)
        {
            System.out.println("SKIPPED (NFQUEUE backend): " + why);
        }
        assumeTrue(why == null, why);
    }

    @Override
    protected void assumeBackendUsable()
    {
        assumeNfqueue();
    }

    @Override
    protected Backend install(final NetnsLab lab) throws Exception
    {
        final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final NfqueueRules rules = NfqueueRules.install("vmA", 7, "test", lab.host, runDir);
        final NfqueueNic nic = NfqueueNic.open("vmA", 7, 1024, false, lab.host, (IoEventLoop)group.next());
        return backend(nic, rules, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }
}
