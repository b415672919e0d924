package dev.colod.core;

import java.util.EnumSet;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;

/**
 * The secondary's decisions for one VM, in one place: its state (moves checked against {@link #MOVES}), the
 * session it serves, the failover (required, claimed from the arbiter, active, done), the generation of the
 * claim in progress and the token of the grace period in progress. Every method is an event from one of the
 * engine's threads (handshake, session, grace, failover, close) and is answered under this object's lock;
 * blocking work (sockets, the arbiter, the standby image) stays with the caller, outside the lock. {@code S} is the
 * engine's session type; nothing here touches a socket, so the decisions are unit-tested alone.
 */
final class StandbyDecisions<S>
{
    /** The secondary's moves. FAILED_OVER and STOPPED are final. */
    static final Map<ProtectionState, Set<ProtectionState>> MOVES = Map.of(
        ProtectionState.CONNECTING, EnumSet.of(ProtectionState.PROTECTED, ProtectionState.FAILING_OVER,
            ProtectionState.STOPPED),
        ProtectionState.PROTECTED, EnumSet.of(ProtectionState.CONNECTING, ProtectionState.FAILING_OVER,
            ProtectionState.STOPPED),
        // back to PROTECTED: the primary returned while the claim waited for the arbiter
        ProtectionState.FAILING_OVER, EnumSet.of(ProtectionState.FAILED_OVER, ProtectionState.CONNECTING,
            ProtectionState.PROTECTED, ProtectionState.STOPPED),
        ProtectionState.FAILED_OVER, EnumSet.noneOf(ProtectionState.class),
        ProtectionState.STOPPED, EnumSet.noneOf(ProtectionState.class));

    /** The answer to a primary's HELLO on the control channel. */
    enum Answer
    {
        /** A session starts ({@link Admission#session()}). */
        ACCEPT,
        /** The VM runs here since a failover (status 6): the proof a primary fences on, whatever its token. */
        FAILED_OVER,
        /** The HELLO's fencing token is older than the newest seen: another host took the VM over since. */
        STALE_TOKEN,
        /** A session is active. */
        BUSY
    }

    /** {@code claimAbandoned}: the primary came back while a failover waited for the arbiter; it was called off. */
    record Admission<S>(Answer answer, S session, boolean claimAbandoned)
    {
    }

    /** What follows the end of a session. */
    enum Next
    {
        /** A failover is required: claim the VM from the arbiter, then resume it. */
        CLAIM,
        /** The primary's agent went away, its host did not: wait {@code peer-restart-grace-ms} for it. */
        GRACE,
        /** Stand by for the primary (or stop). */
        STAND_BY
    }

    /** {@code graceToken}: the grace period started, to be passed to {@link #graceExpired}. */
    record Ended(Next next, long graceToken)
    {
    }

    /** What an operator's failover request needs done. */
    enum Request
    {
        /** Already required or done: nothing more. */
        NONE,
        /** End the active session ({@link #session()}); its thread fails over on its way out. */
        END_SESSION,
        /** No session: claim and fail over on a thread of its own. */
        CLAIM
    }

    private final FailoverState failover;
    private volatile ProtectionState state = ProtectionState.CONNECTING;
    private S session;
    private boolean claiming;
    private long claimGeneration;
    private long graceToken;
    private boolean stopped;

    StandbyDecisions(final FailoverState failover)
    {
        this.failover = failover;
    }

    ProtectionState state()
    {
        return state;
    }

    synchronized S session()
    {
        return session;
    }

    synchronized boolean stopped()
    {
        return stopped;
    }

    /** Moves to {@code to} if the table allows it from the current state. */
    private boolean enter(final ProtectionState to)
    {
        if (state == to)
        {
            return true;
        }
        if (!MOVES.get(state).contains(to))
        {
            return false;
        }
        state = to;
        return true;
    }

    /** A probe asks who runs the VM: true when it runs here (or is being resumed here). */
    synchronized boolean runsHere()
    {
        return failover.phase() != FailoverState.Phase.NONE;
    }

    /**
     * A primary's control HELLO with fencing token {@code token}, {@code newest} being the newest token seen; a new
     * session is made by {@code create} only when it is accepted.
     */
    synchronized Admission<S> admit(final long token, final long newest, final Supplier<S> create)
    {
        final boolean waitingForKey = failover.isPending() && claiming;
        if (failover.phase() != FailoverState.Phase.NONE && !waitingForKey)
        {
            return new Admission<>(Answer.FAILED_OVER, null, false);
        }
        if (token < newest)
        {
            return new Admission<>(Answer.STALE_TOKEN, null, false);
        }
        boolean abandoned = false;
        if (waitingForKey)
        {
            // the primary is back while we wait for its lease: it still runs the VM; protect it again
            claimGeneration++;
            claiming = false;
            failover.reset();
            abandoned = true;
        }
        if (session != null || stopped)
        {
            return new Admission<>(Answer.BUSY, null, abandoned);
        }
        session = create.get();
        graceToken++; // a primary is back: no failover for the agent that was gone
        return new Admission<>(Answer.ACCEPT, session, abandoned);
    }

    /** The accepted session could not even be answered: forget it. */
    synchronized void abandoned(final S s)
    {
        if (session == s)
        {
            session = null;
        }
    }

    /** {@code s} sent checkpoint-ready: the standby is protecting. */
    synchronized void protecting(final S s)
    {
        if (session == s)
        {
            enter(ProtectionState.PROTECTED);
        }
    }

    /**
     * Session {@code s} ended as {@code o} says; {@code graceMs} is {@code peer-restart-grace-ms}. Decides what
     * follows: a failover (required now if the primary was lost, or if its agent is gone and there is no grace),
     * a grace period, or standing by.
     */
    synchronized Ended ended(final S s, final SessionEnd.Outcome o, final long graceMs)
    {
        if (session == s)
        {
            session = null;
        }
        if (!stopped && (o.next() == SessionEnd.Next.FAIL_OVER && o.reason() == ExitReason.ERROR ||
            o.next() == SessionEnd.Next.AWAIT_PEER && graceMs == 0))
        {
            failover.require(ExitReason.ERROR);
        }
        if (failover.isPending() && !stopped)
        {
            return new Ended(Next.CLAIM, 0);
        }
        if (o.next() == SessionEnd.Next.AWAIT_PEER && !stopped)
        {
            enter(ProtectionState.CONNECTING);
            return new Ended(Next.GRACE, ++graceToken);
        }
        enter(stopped ? ProtectionState.STOPPED : ProtectionState.CONNECTING);
        return new Ended(Next.STAND_BY, 0);
    }

    /** A wait for a primary starts (see {@link #graceExpired}); a primary admitted meanwhile ends it. */
    synchronized long awaitingPeer()
    {
        return ++graceToken;
    }

    /** The grace period {@code token} ran out: true when the failover is now required (nothing came back meanwhile). */
    synchronized boolean graceExpired(final long token)
    {
        return graceToken == token && session == null && !stopped && failover.require(ExitReason.ERROR);
    }

    /** An operator asks for a failover. */
    synchronized Request operatorFailover()
    {
        if (stopped || !failover.require(ExitReason.REQUEST))
        {
            return Request.NONE;
        }
        return session != null ? Request.END_SESSION : Request.CLAIM;
    }

    /** A claim for the VM's key starts; returns its generation (a primary that comes back moves it on). */
    synchronized long claimStarted()
    {
        claiming = true;
        enter(ProtectionState.FAILING_OVER);
        return claimGeneration;
    }

    /** Whether the claim of {@code generation} is still wanted (no primary came back, not stopping). */
    synchronized boolean claimWanted(final long generation)
    {
        return generation == claimGeneration && !stopped;
    }

    /** The arbiter granted the claim of {@code generation}: true to go on, false when it is no longer wanted (resign). */
    synchronized boolean claimGranted(final long generation)
    {
        if (!claimWanted(generation))
        {
            return false;
        }
        claiming = false;
        return true;
    }

    /** The resume starts: false when it must not (not required, or stopping). */
    synchronized boolean resuming()
    {
        if (stopped || !failover.transition(FailoverState.Phase.REQUIRE, FailoverState.Phase.ACTIVE))
        {
            return false;
        }
        enter(ProtectionState.FAILING_OVER);
        return true;
    }

    /** The VM runs here now. */
    synchronized void resumed()
    {
        failover.transition(FailoverState.Phase.ACTIVE, FailoverState.Phase.COMPLETED);
        enter(ProtectionState.FAILED_OVER);
    }

    /** The failover could not happen (nothing to resume, or the resume failed): stand by again. */
    synchronized void resumeFailed()
    {
        failover.reset();
        enter(stopped ? ProtectionState.STOPPED : ProtectionState.CONNECTING);
    }

    /**
     * The engine stops: returns the session to end, if any. A VM that runs here stays FAILED_OVER, and one being
     * resumed right now becomes FAILED_OVER when that completes (the VM then runs here, stopped agent or not).
     */
    synchronized S stop()
    {
        stopped = true;
        if (failover.phase() != FailoverState.Phase.ACTIVE)
        {
            enter(ProtectionState.STOPPED);
        }
        return session;
    }
}
