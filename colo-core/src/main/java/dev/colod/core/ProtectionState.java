package dev.colod.core;

/** What an engine is doing now, as {@code coloctl status} shows it. */
public enum ProtectionState
{
    /** Primary: connecting to the secondary. Secondary: standing by, waiting for a primary. */
    CONNECTING,
    /** A session runs: checkpoints flow, output is held. */
    PROTECTED,
    /** Primary only: no secondary; the VM runs and its output passes straight through. */
    UNPROTECTED,
    /** Secondary: the primary is lost and the VM is being resumed here. */
    FAILING_OVER,
    /** Secondary: the VM runs here now, from the last committed checkpoint. */
    FAILED_OVER,
    /** Primary: the secondary took over on request; the VM here stays paused so it never runs twice. */
    FENCED,
    STOPPED
}
