package dev.colod.core;

/**
 * A protection session ended.
 *
 * @param role             "primary" or "secondary"
 * @param reason           request or error
 * @param detail           one line that says what happened, on what, and why
 * @param peerLost         the peer is gone (heartbeat or both channels lost without a goodbye)
 * @param lastCheckpointId the newest checkpoint that completed (primary: released; secondary: committed)
 * @param failedOver       the secondary resumed the VM from {@code lastCheckpointId}
 * @param cause            the failure, or null
 */
public record ExitEvent(String role, ExitReason reason, String detail, boolean peerLost, long lastCheckpointId,
                        boolean failedOver, Throwable cause)
{
    /** A session of {@code role} ended (or protection stopped); nothing was failed over. */
    public static ExitEvent ended(final Engine.Role role, final ExitReason reason, final String detail,
        final boolean peerLost, final long lastCheckpointId, final Throwable cause)
    {
        return new ExitEvent(role.label(), reason, detail, peerLost, lastCheckpointId, false, cause);
    }

    /** The secondary resumed the VM from checkpoint {@code committed}: it runs there now. */
    public static ExitEvent failedOver(final ExitReason reason, final String detail, final boolean peerLost,
        final long committed)
    {
        return new ExitEvent(Engine.Role.SECONDARY.label(), reason, detail, peerLost, committed, true, null);
    }
}
