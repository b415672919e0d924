package dev.colod.buffer;

import dev.colod.buffer.tap.TapBackend;
import dev.colod.buffer.tap.TapPlumbing;
import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;

import java.util.concurrent.TimeUnit;

/** The output-commit contract on the TAP backend. */
class TapContractTest extends OutputCommitContract
{
    @Override
    protected Installed install(final NetnsLab lab, final BufferLimits limits) throws Exception
    {
        final MultiThreadIoEventLoopGroup group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        final TapPlumbing p = TapPlumbing.install("vmA", null, lab.host, runDir);
        final EpochLedger nic = EpochLedger.open("vmA", (IoEventLoop)group.next(), limits,
            TapBackend.on(p.guestTap(), p.uplinkTap()));
        return installed(nic, p, () -> group.shutdownGracefully(0, 1, TimeUnit.SECONDS));
    }
}
