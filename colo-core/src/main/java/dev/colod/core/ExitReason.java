package dev.colod.core;

/** Why a protection session ended (QEMU's COLO_EXIT reasons). */
public enum ExitReason
{
    /** An operator or the agent asked for it (stop, failover command). */
    REQUEST,
    /** Something failed: peer lost, protocol error, I/O error, missed deadline. */
    ERROR
}
