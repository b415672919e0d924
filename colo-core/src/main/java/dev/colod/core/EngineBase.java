package dev.colod.core;

import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.status.ColoCounters;

import java.util.function.Consumer;

/**
 * What both engines hold the same way: configuration, counters, the protocol tap and clock, the failover
 * request, exit listeners, the deadline watchdog, where sockets come from and who arbitrates. {@code E} is the
 * engine's own type, so the builder-style setters return it.
 */
abstract class EngineBase<E extends EngineBase<E>> implements Engine
{
    protected final ColoConfig config;
    protected final ColoCounters counters;
    protected final ProtocolTap tap;
    protected final NanoClock clock;
    protected final FailoverState failover = new FailoverState();
    protected final ExitListeners exitListeners = new ExitListeners();
    protected final Watchdog watchdog;
    protected volatile Transport transport = Transport.DEFAULT;
    protected volatile Arbiter arbiter = Arbiter.NONE;
    protected volatile FrameMirror frames = FrameMirror.NONE;
    protected volatile String lastError = "";

    EngineBase(final Role role, final ColoConfig config, final ColoCounters counters, final ProtocolTap tap,
        final NanoClock clock)
    {
        this.config = config;
        this.counters = counters;
        this.tap = tap;
        this.clock = clock;
        this.watchdog = new Watchdog("colo-" + role.label() + "-" + config.vmName() + "-watchdog", clock);
    }

    @SuppressWarnings("unchecked")
    private E self()
    {
        return (E)this;
    }

    /** Where sockets come from (before {@code start()}). */
    public E transport(final Transport t)
    {
        transport = t;
        return self();
    }

    /** Who decides which host may serve the VM (before {@code start()}); default {@link Arbiter#NONE}. */
    public E arbiter(final Arbiter a)
    {
        arbiter = a;
        return self();
    }

    /** Hybrid mode: this host's side of the frames channel (before {@code start()}); default none. */
    public E frames(final FrameMirror f)
    {
        frames = f;
        return self();
    }

    @Override
    public Arbiter arbiter()
    {
        return arbiter;
    }

    @Override
    public void addExitListener(final Consumer<ExitEvent> listener)
    {
        exitListeners.add(listener);
    }

    @Override
    public FailoverState failoverState()
    {
        return failover;
    }

    @Override
    public ColoCounters counters()
    {
        return counters;
    }

    @Override
    public String lastError()
    {
        return lastError;
    }
}
