package dev.colod.core.testing;

import dev.colod.core.ColoConfig;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.ExitEvent;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.status.ColoCounters;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/** A primary and a secondary engine over real loopback TCP, with an in-memory VM and standby image. */
public final class EnginePair implements AutoCloseable
{
    public final MemoryVm vm;
    public final MemorySink sink = new MemorySink();
    public final RecordingOutputCommit output = new RecordingOutputCommit();
    public final SecondaryEngine secondary;
    public final PrimaryEngine primary;
    public final LinkedBlockingQueue<ExitEvent> primaryExits = new LinkedBlockingQueue<>();
    public final LinkedBlockingQueue<ExitEvent> secondaryExits = new LinkedBlockingQueue<>();

    public EnginePair(final Supplier<ColoConfig> config, final int vmBytes, final ProtocolTap primaryTap,
        final ProtocolTap secondaryTap) throws IOException
    {
        this(config, vmBytes, primaryTap, secondaryTap, Arbiter.NONE, Arbiter.NONE, 0);
    }

    /** A pair whose engines ask the given arbiters; the secondary already knows {@code knownToken}. */
    public EnginePair(final Supplier<ColoConfig> config, final int vmBytes, final ProtocolTap primaryTap,
        final ProtocolTap secondaryTap, final Arbiter primaryArbiter, final Arbiter secondaryArbiter,
        final long knownToken) throws IOException
    {
        this(config, vmBytes, primaryTap, secondaryTap, primaryArbiter, secondaryArbiter, knownToken, FrameMirror.NONE);
    }

    /** As above, with the secondary's side of hybrid mode's frames channel ({@code secondaryFrames}) set before it starts. */
    public EnginePair(final Supplier<ColoConfig> config, final int vmBytes, final ProtocolTap primaryTap,
        final ProtocolTap secondaryTap, final Arbiter primaryArbiter, final Arbiter secondaryArbiter,
        final long knownToken, final FrameMirror secondaryFrames) throws IOException
    {
        vm = new MemoryVm(vmBytes, true);
        secondary = new SecondaryEngine(config.get().conclude(), new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            sink, new ColoCounters(), secondaryTap, NanoClock.SYSTEM).arbiter(secondaryArbiter).knownToken(knownToken)
            .frames(secondaryFrames).start();
        secondary.addExitListener(secondaryExits::add);
        primary = new PrimaryEngine(config.get().conclude(), secondary.localAddress(), vm, output, new ColoCounters(),
            primaryTap, NanoClock.SYSTEM).arbiter(primaryArbiter);
        primary.addExitListener(primaryExits::add);
        primary.start();
    }

    public static ColoConfig fastConfig(final ColoConfig.Mode mode)
    {
        return new ColoConfig().vmName("vm-test").mode(mode).checkpointDelayMs(5).heartbeatIntervalMs(50)
            .heartbeatTimeoutMs(500).syncTimeoutMs(3_000).transferTimeoutMs(10_000).reconnectIntervalMs(100)
            .maxStateBytes(8L << 20).peerRestartGraceMs(0);
    }

    public void awaitCheckpoints(final long n) throws InterruptedException
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (primary.counters().checkpointsCompleted.get() < n)
        {
            if (System.nanoTime() - deadline > 0)
            {
                throw new AssertionError("only " + primary.counters().checkpointsCompleted.get() + " of " + n +
                    " checkpoints in 30 s; primary: " + primary.state() + " " + primary.lastError() + "; secondary: " +
                    secondary.state() + " " + secondary.lastError());
            }
            Thread.sleep(2);
        }
    }

    public static ExitEvent next(final LinkedBlockingQueue<ExitEvent> q, final String what) throws InterruptedException
    {
        final ExitEvent e = q.poll(20, TimeUnit.SECONDS);
        if (e == null)
        {
            throw new AssertionError("no " + what + " exit event within 20 s");
        }
        return e;
    }

    @Override
    public void close()
    {
        primary.close();
        secondary.close();
        vm.close();
    }
}
