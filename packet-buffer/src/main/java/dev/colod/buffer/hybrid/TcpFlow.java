package dev.colod.buffer.hybrid;

import java.util.ArrayDeque;
import java.util.Arrays;

/**
 * One TCP connection as the primary compares it (docs/ARCHITECTURE.md, "Comparing TCP"): the byte stream the
 * secondary's copy sent (by sequence number, after rewriting), its SYNs, FIN, RST and highest acknowledgement, and
 * the primary's segments waiting for them. A primary segment matches when the copy sent the same bytes at the
 * same sequence numbers, a SYN, FIN or RST where it has one, and acknowledged at least as much: then the copy's
 * state holds everything the segment tells the client, however the two guests cut their streams into segments.
 */
final class TcpFlow
{
    /** Bytes of one connection kept at most beyond what the primary has verified. */
    static final int MAX_STREAM = 4 << 20;
    /** Bytes kept below the verified point, for the primary's retransmissions. */
    private static final int KEEP_BEHIND = 64 << 10;

    enum Verdict
    {
        MATCH, WAIT, DIFFERS,
        /** A match with HTTP Date values the tolerance allows ({@link HttpDates}). */
        MATCH_DATES,
        /** A retransmission of bytes the client already acknowledged, with nothing new in it: leaves as a match. */
        DELIVERED,
        /**
         * The last word of a connection the client has finished with both ways (it acknowledged this side's FIN and
         * sent its own): an ACK of the client's FIN where the copy reset, or a reset where the copy acknowledged the
         * client's FIN. Leaves as a match ({@link #endsAlike}).
         */
        TEARDOWN
    }

    final ArrayDeque<Comparer.Pending> waiting = new ArrayDeque<>();
    /** How far apart the two guests' HTTP Date values may be (0: compared byte for byte). */
    private final long dateToleranceMs;
    /**
     * Connections on this address and port pair so far in this era, as each side showed them: a SYN with a sequence
     * number other than that side's last SYN starts the next (a client reuses a port within one era; both guests
     * answer its new SYN). Everything else below is of the copy's latest connection.
     */
    private int copyIncarnation;
    private boolean copySynKnown;
    private int copySynSeq;
    private int primaryIncarnation;
    private boolean primarySynKnown;
    private int primarySynSeq;
    /** SYNs the copy sent in its latest connection. */
    private int copySyns;
    private boolean ackKnown;
    private int maxAck;
    private boolean rst;
    private boolean finKnown;
    private int finSeq;
    private boolean started;
    /** Sequence number of {@code data[0]}. */
    private int base;
    private byte[] data = new byte[4096];
    private int len;
    private boolean verifiedAny;
    private int verified;
    /**
     * The window field of the copy's segment with the highest acknowledgement (-1: unknown): the copy takes bytes up
     * to that acknowledgement plus this window (scaled as the primary's, the same connection). A segment of the
     * primary that acknowledges no more than the copy must offer the client no more window than this, or the client
     * may send what the copy, whose guest reads more slowly, must drop (it then waits for a retransmission that the
     * held acknowledgements never ask for).
     */
    int copyWindow = -1;
    /** The highest acknowledgement the client sent for this connection in this era (seen inbound). */
    private boolean clientAckKnown;
    private int clientAck;
    /** The sequence number after the client's FIN, once it sent one (seen inbound). */
    private boolean clientFinKnown;
    private int clientFinEnd;

    TcpFlow(final long dateToleranceMs)
    {
        this.dateToleranceMs = dateToleranceMs;
    }

    /**
     * A segment of the primary's guest arrived (in its order): the incarnation of the connection it belongs to, for
     * {@link Comparer.Pending#incarnation}.
     */
    int primaryArrived(final Segment p)
    {
        if (p.has(Segment.SYN) && (!primarySynKnown || p.seq() != primarySynSeq))
        {
            primaryIncarnation++;
            primarySynKnown = true;
            primarySynSeq = p.seq();
        }
        return primaryIncarnation;
    }

    /** The client sent a SYN: a new connection on this pair, whose acknowledgements start anew. */
    void clientSyn()
    {
        clientAckKnown = false;
        clientFinKnown = false;
    }

    /** The client sent its FIN; {@code end}: the sequence number after it. */
    void clientFin(final int end)
    {
        clientFinKnown = true;
        clientFinEnd = end;
    }

    /**
     * True if {@code p} only ends, differently from the copy, a connection that is over for the client: the client
     * acknowledged every byte and the FIN of this side (the copy's FIN, at the place the primary's matched) and sent
     * its own FIN; {@code p}, right after this side's FIN, carries nothing, and either resets where the copy
     * acknowledged the client's FIN, or acknowledges exactly the client's FIN where the copy reset. Whether the last
     * segment a client gets is an ACK or an RST depends on the guest's TIME_WAIT table (full, a closed socket answers a
     * FIN or a late ACK with RST), which differs between two guests by when their timers ran; the client ends the
     * connection either way, having everything both ways, and the copy's state holds the connection as finished.
     */
    private boolean endsAlike(final Segment p)
    {
        if (p.payload().length > 0 || p.has(Segment.SYN | Segment.FIN) || !finKnown || !clientAckKnown
            || !clientFinKnown || clientAck - (finSeq + 1) < 0 || p.seq() != finSeq + 1)
        {
            return false;
        }
        if (p.has(Segment.RST))
        {
            return ackKnown && maxAck - clientFinEnd >= 0;
        }
        return rst && p.has(Segment.ACK) && p.ack() == clientFinEnd;
    }

    /** The client acknowledged {@code ack}; true if that is more than before. */
    boolean clientAcked(final int ack)
    {
        if (clientAckKnown && ack - clientAck <= 0)
        {
            return false;
        }
        clientAck = ack;
        clientAckKnown = true;
        return true;
    }

    /**
     * True if the client has acknowledged every byte (and the FIN) of {@code p}: {@code p} is a retransmission of what
     * the client already has, which tells it nothing new, so the copy need not send it again (it may not: its own
     * retransmission timer, running behind, may never fire before the client's acknowledgement reaches it).
     */
    boolean delivered(final Segment p)
    {
        final int n = p.payload().length;
        if (!clientAckKnown || n == 0 && !p.has(Segment.FIN) || p.has(Segment.SYN) || p.has(Segment.RST))
        {
            return false;
        }
        final int end = p.seq() + n + (p.has(Segment.FIN) ? 1 : 0);
        return end - clientAck <= 0;
    }

    /**
     * What the copy sent: a record body (8 bytes of flow, be32 seq, be32 ack, flags, payload) of {@code length}
     * bytes. False if the connection's unverified bytes passed {@link #MAX_STREAM}.
     */
    boolean copy(final byte[] body, final int length)
    {
        return copy(body, length, -1);
    }

    /** As {@link #copy(byte[], int)}, with the segment's window field ({@code window}, -1 if not known). */
    boolean copy(final byte[] body, final int length, final int window)
    {
        final int seq = FrameDigest.be32(body, 8);
        final int ack = FrameDigest.be32(body, 12);
        final int flags = body[16] & 0xFF;
        final int n = length - 17;
        if ((flags & Segment.SYN) != 0)
        {
            if (!copySynKnown || seq != copySynSeq)
            {
                nextCopyIncarnation(seq);
            }
            copySyns++;
        }
        if ((flags & Segment.RST) != 0)
        {
            rst = true;
        }
        if ((flags & Segment.ACK) != 0 && (!ackKnown || ack - maxAck >= 0))
        {
            maxAck = ack;
            ackKnown = true;
            // a SYN's window is never scaled and an RST's means nothing: unknown until the next segment
            copyWindow = (flags & (Segment.SYN | Segment.RST)) == 0 ? window : -1;
        }
        if ((flags & Segment.FIN) != 0)
        {
            finKnown = true;
            finSeq = seq + n;
        }
        if (n <= 0)
        {
            return true;
        }
        if (!started || seq - (base + len) > 0)
        {
            // the first bytes, or a gap (a frame of the copy's this side never saw): start over from here; primary
            // segments before it cannot be verified and wait for the timeout
            started = true;
            base = seq;
            len = 0;
        }
        final int skip = base + len - seq; // bytes already here (a retransmission by the copy)
        if (skip >= n)
        {
            return true;
        }
        trim();
        if (len + n - skip > data.length)
        {
            if (len + n - skip > MAX_STREAM)
            {
                return false;
            }
            data = Arrays.copyOf(data, Math.max(data.length * 2, len + n - skip));
        }
        System.arraycopy(body, 17 + skip, data, len, n - skip);
        len += n - skip;
        return true;
    }

    /** The copy answered a new SYN on this pair: what it showed of the connection before is of an older one. */
    private void nextCopyIncarnation(final int synSeq)
    {
        copyIncarnation++;
        copySynKnown = true;
        copySynSeq = synSeq;
        copySyns = 0;
        ackKnown = false;
        rst = false;
        finKnown = false;
        started = false;
        len = 0;
        verifiedAny = false;
        copyWindow = -1;
    }

    /**
     * Whether the primary's segment {@code p} of connection {@code incarnation} ({@link #primaryArrived}) matches what
     * the copy sent, must wait for more, or differs. A segment of an older connection than the copy's latest can
     * no longer be matched (the copy has moved on to the next connection on this pair without sending it): it
     * differs.
     */
    Verdict check(final Segment p, final int incarnation)
    {
        if (incarnation != copyIncarnation)
        {
            return incarnation > copyIncarnation ? Verdict.WAIT : Verdict.DIFFERS;
        }
        return check(p);
    }

    /**
     * How many of the waiting segment {@code p}'s payload bytes the copy sent exactly, at the same place, when that is
     * a part of them and not all: the start of {@code p} may leave alone (everything else it says, its acknowledgement,
     * the copy said too). 0 if not, or if {@code p} carries a SYN or RST.
     */
    int sentPrefix(final Segment p, final int incarnation)
    {
        final int n = p.payload().length;
        final int off = p.seq() - base;
        if (incarnation != copyIncarnation || n == 0 || !started || off < 0 || off >= len
            || p.has(Segment.SYN | Segment.RST) || p.has(Segment.ACK) && (!ackKnown || p.ack() - maxAck > 0))
        {
            return 0;
        }
        final int have = Math.min(n, len - off);
        return have < n && Arrays.mismatch(data, off, off + have, p.payload(), 0, have) < 0 ? have : 0;
    }

    /** True if the copy has answered a newer connection on this pair than {@code incarnation}. */
    boolean outrun(final int incarnation)
    {
        return incarnation < copyIncarnation;
    }

    /** {@link #check(Segment, int)} within one connection. */
    private Verdict check(final Segment p)
    {
        if (delivered(p))
        {
            // only what it acknowledges must be in the copy too, as for any segment
            return p.has(Segment.ACK) && (!ackKnown || p.ack() - maxAck > 0) ? Verdict.WAIT : Verdict.DELIVERED;
        }
        final int n = p.payload().length;
        boolean wait = false;
        boolean dates = false;
        if (n > 0)
        {
            final int off = p.seq() - base;
            if (!started || off < 0 || off > len)
            {
                wait = true;
            }
            else
            {
                final int have = Math.max(0, Math.min(n, len - off));
                final HttpDates.Result r = HttpDates.compare(data, off, p.payload(), 0, have, dateToleranceMs);
                if (r == HttpDates.Result.DIFFERS || r == HttpDates.Result.INCOMPLETE && have == n)
                {
                    return Verdict.DIFFERS;
                }
                dates = r == HttpDates.Result.TOLERATED;
                wait = have < n;
            }
        }
        if (p.has(Segment.FIN))
        {
            if (finKnown && finSeq != p.seq() + n)
            {
                return Verdict.DIFFERS;
            }
            wait |= !finKnown;
        }
        // a retransmitted SYN-ACK (the client resent its SYN) tells the client nothing the first did not
        wait |= p.has(Segment.SYN) && copySyns == 0;
        wait |= p.has(Segment.RST) && !rst;
        wait |= p.has(Segment.ACK) && (!ackKnown || p.ack() - maxAck > 0);
        if (wait)
        {
            return endsAlike(p) ? Verdict.TEARDOWN : Verdict.WAIT;
        }
        final int end = p.seq() + n;
        if (!verifiedAny || end - verified > 0)
        {
            verified = end;
            verifiedAny = true;
        }
        return dates ? Verdict.MATCH_DATES : Verdict.MATCH;
    }

    /** What the copy has shown of this connection, against the primary's segment {@code p}: for a compare timeout. */
    String lagBehind(final Segment p)
    {
        final StringBuilder b = new StringBuilder("; the copy ");
        if (!p.has(Segment.ACK))
        {
            b.append(rst ? "sent an RST" : "sent no RST");
        }
        else if (!ackKnown)
        {
            b.append("acknowledged nothing yet");
        }
        else if (p.ack() - maxAck > 0)
        {
            b.append("acknowledged ").append(p.ack() - maxAck).append(" bytes less");
        }
        else
        {
            b.append("acknowledged as much");
        }
        final int n = p.payload().length;
        if (n > 0)
        {
            if (!started)
            {
                b.append(", sent none of its ").append(n).append(" bytes");
            }
            else if (p.seq() - base < 0)
            {
                b.append(", sent bytes from ").append(base - p.seq()).append(" after its start only");
            }
            else
            {
                b.append(", sent ").append(Math.max(0, Math.min(n, base + len - p.seq()))).append(" of its ").append(n)
                    .append(" bytes");
            }
        }
        else if (p.has(Segment.FIN))
        {
            b.append(finKnown ? ", sent its FIN elsewhere" : ", sent no FIN");
        }
        return b.toString();
    }

    /** Forgets bytes far below what the primary has verified. */
    private void trim()
    {
        if (!verifiedAny)
        {
            return;
        }
        final int drop = verified - KEEP_BEHIND - base;
        if (drop > 0 && drop <= len)
        {
            System.arraycopy(data, drop, data, 0, len - drop);
            len -= drop;
            base += drop;
        }
    }
}
