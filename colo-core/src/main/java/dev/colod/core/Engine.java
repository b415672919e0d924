package dev.colod.core;

import dev.colod.core.spi.Arbiter;
import dev.colod.core.status.ColoCounters;

import java.util.function.Consumer;

/**
 * What both sides of the checkpoint protocol answer for one VM, so that status, control and the role switch see
 * one type. The primary ({@link PrimaryEngine}) takes checkpoints; the secondary ({@link SecondaryEngine})
 * receives them and fails over.
 */
public interface Engine extends AutoCloseable
{
    /** Which side of the protocol an engine runs. */
    enum Role
    {
        PRIMARY, SECONDARY;

        /** As status shows it. */
        public String label()
        {
            return name().toLowerCase();
        }
    }

    Role role();

    /** The engine's protection state now. */
    ProtectionState state();

    FailoverState failoverState();

    ColoCounters counters();

    /** The peer, as {@code host:port} (empty on a secondary before its first session). */
    String peer();

    /** The last error that ended a session or stopped protection (empty when none). */
    String lastError();

    /** Who decides which host may serve the VM. */
    Arbiter arbiter();

    /** Told once per session end or role change, on the thread that saw it. */
    void addExitListener(Consumer<ExitEvent> listener);

    /** An operator's failover: the primary stops protecting; the secondary takes the VM over. */
    void requestFailover();

    /** An operator's checkpoint now; only a primary takes checkpoints, a secondary refuses with why. */
    void requestCheckpoint();

    /** Stops the engine; the VM keeps running on a primary, the standby stays on a secondary. */
    @Override
    void close();
}
