package dev.colod.core;

import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.status.ColoCounters;

import java.io.IOException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Why one protection session ended. Several threads may end a session — the session thread (a protocol or
 * I/O error), the heartbeat (peer lost, peer's goodbye), the watchdog (a missed deadline) and callers of
 * {@code close()} or {@code requestFailover()} — and the first to {@link #record} wins. Both engines turn the
 * recorded cause into their exit event and next state with {@link #classify}, so a session ends one way.
 */
final class SessionEnd
{
    enum Cause
    {
        /** The agent is stopping (close). */
        STOPPING,
        /** An operator asked: the primary stops protecting, the secondary fails over. */
        REQUESTED,
        /** The peer said goodbye because it took the VM over (BYE failover). */
        PEER_TOOK_OVER,
        /** The peer said goodbye for another reason. */
        PEER_ENDED,
        /** Primary: its own VM is gone (QEMU exited). Secondary: the primary said so (BYE vm-lost). */
        VM_LOST,
        /** No heartbeat within the timeout: the peer's host or the link is gone. */
        PEER_LOST,
        /**
         * The heartbeat connection was closed or reset without a goodbye: the peer's host is up (its kernel
         * answered), its agent is gone (crash, kill -9) and may come back.
         */
        PEER_CLOSED,
        /** A step overran its deadline; the watchdog cut the connection. */
        DEADLINE_MISSED,
        /** The peer sent something the protocol does not allow. */
        PROTOCOL_ERROR,
        /** Anything else that broke the session (I/O error, the VM refused to pause, ...). */
        FAILED
    }

    /** What the engine does next. */
    enum Next
    {
        /** Primary: run unprotected and connect again. Secondary: stand by for the next primary. */
        RECONNECT,
        /** Primary: keep the VM paused and drop held output, for good. */
        FENCE,
        /** Secondary: resume the VM here from the last committed checkpoint. */
        FAIL_OVER,
        /**
         * Secondary: the primary's agent is gone but its host is up; wait a grace period for it to come back
         * (its VM's output is held or dropped meanwhile: fail-closed) before failing over.
         */
        AWAIT_PEER,
        /** Nothing more: the engine stops (primary: the VM runs on unprotected). */
        STOP
    }

    record Recorded(Cause cause, String detail, Throwable error)
    {
    }

    /** The classification: the exit event's fields and the next state. */
    record Outcome(Cause cause, ExitReason reason, String detail, boolean peerLost, Next next, Throwable error)
    {
    }

    private final AtomicReference<Recorded> first = new AtomicReference<>();
    private final CountDownLatch recorded = new CountDownLatch(1);

    /** Records why the session ends; returns false (and changes nothing) if a cause was already recorded. */
    boolean record(final Cause cause, final String detail, final Throwable error)
    {
        if (first.compareAndSet(null, new Recorded(cause, detail, error)))
        {
            recorded.countDown();
            return true;
        }
        return false;
    }

    boolean record(final Cause cause, final String detail)
    {
        return record(cause, detail, null);
    }

    /** The heartbeat's verdict on a goodbye frame; {@code text} is the peer's own account (empty from old builds). */
    void recordBye(final int reason, final String text)
    {
        if (reason == HeartbeatFrame.BYE_VM_LOST)
        {
            record(Cause.VM_LOST, text.isEmpty() ? "its VM process exited" : text);
            return;
        }
        record(reason == HeartbeatFrame.BYE_FAILOVER ? Cause.PEER_TOOK_OVER : Cause.PEER_ENDED, byeReason(reason, text));
    }

    /** What a goodbye means, in words an operator can act on: the code's meaning and, when sent, the peer's reason. */
    static String byeReason(final int reason, final String text)
    {
        final String there = text.isEmpty() ? "" : ": " + text;
        return switch (reason)
        {
            case HeartbeatFrame.BYE_STOP -> "its colod is stopping (BYE stop)" + there;
            case HeartbeatFrame.BYE_FAILOVER -> "it took the VM over (BYE failover)" + there;
            default -> text.isEmpty() ? "an error there (BYE error, reason " + reason + "): its last error says which " +
                "(coloctl status on that host)" : "an error there (BYE error)" + there;
        };
    }

    boolean isRecorded()
    {
        return first.get() != null;
    }

    Recorded recorded()
    {
        return first.get();
    }

    /**
     * The session thread's failure: a protocol error is the cause at once; any other error waits up to
     * {@code verdictMs} for a better-informed writer (a dead peer closes both channels in no given order, and
     * the heartbeat tells a goodbye from a loss), then records itself.
     */
    Recorded fail(final Throwable ex, final long verdictMs)
    {
        if (ex instanceof ProtocolException)
        {
            record(Cause.PROTOCOL_ERROR, ex.getMessage(), ex);
        }
        else if (!isRecorded())
        {
            try
            {
                recorded.await(verdictMs, TimeUnit.MILLISECONDS);
            }
            catch (final InterruptedException ie)
            {
                Thread.currentThread().interrupt();
            }
            record(Cause.FAILED, ex instanceof IOException && ex.getMessage() != null ? ex.getMessage() : ex.toString(), ex);
        }
        return first.get();
    }

    /**
     * The one classifier of both engines: counts what went wrong and says what comes next for {@code role}.
     * Primary: the peer taking over fences; a request or a stop ends the engine; anything else reconnects.
     * Secondary: a lost primary or an operator's request fails over; a stop ends; anything else stands by.
     */
    static Outcome classify(final Recorded r, final boolean primary, final String peer, final ColoCounters counters)
    {
        final Cause c = r.cause();
        final String who = (primary ? "secondary " : "primary ") + peer;
        final String detail;
        switch (c)
        {
            case PEER_TOOK_OVER:
                detail = who + " took over the VM (failover requested there)";
                break;
            case PEER_ENDED:
                detail = who + " ended the session: " + r.detail();
                break;
            case PEER_LOST:
                detail = (primary ? "secondary" : "primary") + " lost: " + r.detail();
                break;
            case VM_LOST:
                detail = primary ? "the VM is gone here: " + r.detail() : who + " lost its VM (" + r.detail() + ")";
                break;
            case PEER_CLOSED:
                detail = (primary ? "secondary" : "primary") + " agent gone (its host is up): " + r.detail();
                break;
            case DEADLINE_MISSED:
                detail = "deadline missed " + r.detail() + " with " + who;
                break;
            case PROTOCOL_ERROR:
                detail = "protocol error from " + who + ": " + r.detail();
                break;
            case FAILED:
                detail = "session with " + who + " failed: " + r.detail();
                break;
            default:
                detail = r.detail();
        }
        switch (c)
        {
            case DEADLINE_MISSED:
                counters.deadlinesMissed.incrementAndGet();
                break;
            case PROTOCOL_ERROR:
                counters.protocolErrors.incrementAndGet();
                break;
            default:
                break;
        }
        final Next next;
        if (c == Cause.STOPPING)
        {
            next = Next.STOP;
        }
        else if (primary)
        {
            // a primary whose VM is gone hands it over: like a fence, nothing it held may leave
            next = c == Cause.PEER_TOOK_OVER || c == Cause.VM_LOST ? Next.FENCE : c == Cause.REQUESTED ? Next.STOP
                : Next.RECONNECT;
        }
        else
        {
            next = c == Cause.PEER_LOST || c == Cause.REQUESTED || c == Cause.VM_LOST ? Next.FAIL_OVER
                : c == Cause.PEER_CLOSED ? Next.AWAIT_PEER : Next.RECONNECT;
        }
        final boolean requested = c == Cause.STOPPING || c == Cause.REQUESTED ||
            (primary && c == Cause.PEER_TOOK_OVER);
        return new Outcome(c, requested ? ExitReason.REQUEST : ExitReason.ERROR, detail,
            c == Cause.PEER_LOST || c == Cause.PEER_CLOSED,
            next, r.error());
    }
}
