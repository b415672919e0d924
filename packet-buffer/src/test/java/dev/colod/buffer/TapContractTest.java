package dev.colod.buffer;

import dev.colod.buffer.net.NicPlumbing;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.util.concurrent.TimeUnit;

/** The output-commit contract on the TAP backend. */
class TapContractTest extends OutputCommitContract
{
    @Override
    protected Backend install(final NetnsLab lab) throws Exception
    {
        final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final NicPlumbing p = NicPlumbing.install("vmA", null, lab.host, runDir);
        final TapNic nic = new TapNic("vmA", p.guestTap(), p.uplinkTap(), (IoEventLoop)group.next(),
            new BufferLimits().conclude(), () -> { }).start();
        return backend(nic, p, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }
}
