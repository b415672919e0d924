package dev.colod.buffer.hybrid;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Hybrid mode's comparison of one NIC, on the primary (docs/ARCHITECTURE.md, "Hybrid mode"). Every frame the
 * primary's guest sends in the open epoch is checked against what the secondary's guest sent since it resumed from
 * the same checkpoint (the same era): a TCP segment against the copy's byte stream of that connection
 * ({@link TcpFlow}: the same bytes at the same sequence numbers, the same SYN, FIN and RST, and the copy has
 * acknowledged at least as much), so the two guests may cut their streams into different segments; any other frame
 * by its digest, per flow and in order. A matched frame may
 * leave without waiting for a checkpoint, in its flow's order (an unmatched frame of the same flow before it holds it
 * back; one of another flow does not: each released frame is one the copy sent too, whatever the order). A
 * digest that differs from the frame at the same place of its flow, or a frame left unmatched for longer than
 * the timeout after both sides run the same era, asks for a checkpoint; from then on nothing more is compared
 * until it seals the open epoch.
 * <p>
 * Single-threaded: everything runs on the NIC's loop.
 */
public final class Comparer
{
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Comparer.class);

    /** What the comparer needs of its NIC's ledger. */
    public interface Ledger
    {
        /** True if the open epoch's frames may leave now (no sealed epoch waits before them). */
        boolean canReleaseOpen();

        /**
         * Lets one frame of the open epoch out now, ahead of older frames still held: the one of {@code bytes} held
         * just before {@code endMark}.
         */
        void releaseOne(long endMark, int bytes);

        /**
         * Lets {@code first} out now, a new frame cut from the one of {@code bytes} held just before {@code endMark},
         * which is replaced by {@code rest} and stays held ({@link SegmentSplit}).
         */
        void releaseSplit(long endMark, int bytes, byte[] first, byte[] rest);

        /** Asks the engine for a checkpoint now. */
        void wantCheckpoint(Cause cause);

        /** Runs {@code r} on the loop after {@code delayNs}. */
        void schedule(Runnable r, long delayNs);
    }

    public enum Cause
    {
        MISMATCH, COMPARE_TIMEOUT, SECONDARY_AHEAD;

        public String label()
        {
            return name().toLowerCase().replace('_', '-');
        }
    }

    /**
     * How long a TCP segment waits with only the start of its bytes sent by the copy before that start leaves alone. The
     * copy's guest may have sent the same bytes in two writes and hold the second until the client acknowledges the
     * first (Nagle's algorithm), an acknowledgement the client only sends for what it got: the primary's whole segment,
     * which waits for the copy's second part. Only the timer waited that out, then a checkpoint.
     */
    static final long SPLIT_AFTER_NS = 50_000_000L;

    /** Digests of the secondary's frames kept at most while waiting for the primary's (all flows). */
    static final int MAX_WAITING_DIGESTS = 8192;

    /**
     * Bytes of a frame kept to describe it if it ever causes a checkpoint: Ethernet, the longest IPv4 header and the
     * fixed TCP header (everything {@link FrameDigest#describe} reads), so no text is made for frames that match.
     */
    private static final int HEAD_BYTES = FrameDigest.ETH_HEADER + 60 + 20;

    static final class Pending
    {
        final long endMark;
        final int bytes;
        final long heldNs;
        final long flow;
        final byte[] digest;
        /** The frame's first {@link #HEAD_BYTES}, for {@link #what()}. */
        private final byte[] head;
        /** TCP segments: what is compared instead of the digest (null otherwise). */
        final Segment tcp;
        /** TCP: which connection on its address and port pair, in this era ({@link TcpFlow#primaryArrived}). */
        int incarnation;
        boolean matched;
        /** When it matched (nanoTime), for the wait accounting. */
        long matchedNs;

        /** Where the frame is held (the backend's arena), until it leaves or is sealed: for a window clamp. */
        final ByteBuffer buf;
        final int at;

        Pending(final long endMark, final int bytes, final long heldNs, final long flow, final byte[] digest,
            final byte[] head, final Segment tcp, final ByteBuffer buf, final int at)
        {
            this.buf = buf;
            this.at = at;
            this.head = head;
            this.tcp = tcp;
            this.endMark = endMark;
            this.bytes = bytes;
            this.heldNs = heldNs;
            this.flow = flow;
            this.digest = digest;
        }

        /** The frame described for logs and status (only when it causes a checkpoint). */
        String what()
        {
            return FrameDigest.describe(head, 0, bytes);
        }
    }

    private final Ledger ledger;
    private final long timeoutNs;
    private final boolean releaseMatched;
    private final long dateToleranceMs;
    private final FrameDigest digester = new FrameDigest();
    private byte[] frame = new byte[2048];

    /** The open epoch's frames by flow, oldest first, until they leave or are sealed. */
    private final Map<Long, ArrayDeque<Pending>> open = new HashMap<>();
    private final Map<Long, ArrayDeque<Pending>> waitingPrimary = new HashMap<>();
    private final Map<Long, ArrayDeque<byte[]>> waitingSecondary = new HashMap<>();
    /** TCP connections: what the copy sent, and the primary's segments waiting for it, by flow. */
    private final Map<Long, TcpFlow> tcpFlows = new HashMap<>();
    private final java.util.Set<Long> waitingTcp = new java.util.HashSet<>();
    private int waitingDigests;
    private long era = -1;
    private long secondaryEra = -1;
    /** When both sides began to run the same era; 0 while they do not. */
    private long alignedNs;
    private boolean broken;
    private boolean timerArmed;

    /** Why comparison last asked for a checkpoint, for status and logs. */
    private volatile String lastCause = "";
    private volatile long compared;
    private volatile long matched;
    private volatile long releasedByComparison;
    /** Sum over matched frames of held → matched; over frames released by comparison of matched → released, and its max. */
    private volatile long matchWaitNs;
    private volatile long behindNs;
    private volatile long behindMaxNs;
    /** Matched frames and their held → matched waits by {@link WaitKind}, and the part of it before the copy ran. */
    private final AtomicLongArray waitCount = new AtomicLongArray(WaitKind.values().length);
    private final AtomicLongArray waitNs = new AtomicLongArray(WaitKind.values().length);
    private volatile long waitBeforeCopyNs;
    private volatile long digests;
    private volatile long staleDigests;
    private volatile long retransmissionsPassed;
    private volatile long windowsClamped;
    private volatile long datesTolerated;
    private volatile long teardownsTolerated;
    private volatile long segmentsSplit;
    private final long[] checkpointsAsked = new long[Cause.values().length];
    private volatile long[] checkpointsAskedView = new long[Cause.values().length];

    /**
     * {@code releaseMatched}: let matched frames out before their checkpoint. Only sound when a failover continues
     * the secondary's running copy (the state that produced the same frames); otherwise matches are counted only.
     */
    public Comparer(final Ledger ledger, final long timeoutNs, final boolean releaseMatched)
    {
        this(ledger, timeoutNs, releaseMatched, 0);
    }

    /** As above; {@code dateToleranceMs}: how far apart the guests' HTTP Date values may be ({@link HttpDates}; 0: not at all). */
    public Comparer(final Ledger ledger, final long timeoutNs, final boolean releaseMatched, final long dateToleranceMs)
    {
        this.ledger = ledger;
        this.timeoutNs = timeoutNs;
        this.releaseMatched = releaseMatched;
        this.dateToleranceMs = dateToleranceMs;
    }

    /** A frame of the primary's guest was held in the open epoch ({@code len} bytes at {@code at} of {@code buf}). */
    public void primary(final ByteBuffer buf, final int at, final int len, final long endMark, final long nowNs)
    {
        if (era < 0)
        {
            return; // no checkpoint sealed yet in this session: nothing to compare against
        }
        if (frame.length < len)
        {
            frame = new byte[len];
        }
        buf.get(at, frame, 0, len);
        final Segment seg = Segment.of(frame, 0, len);
        final Pending p = new Pending(endMark, len, nowNs, FrameDigest.flow(frame, 0, len),
            seg == null ? digester.digest(frame, 0, len) : null, Arrays.copyOf(frame, Math.min(len, HEAD_BYTES)), seg,
            buf, at);
        open.computeIfAbsent(p.flow, k -> new ArrayDeque<>()).addLast(p);
        compared++;
        if (broken)
        {
            return;
        }
        if (seg != null)
        {
            final TcpFlow f = tcpFlows.computeIfAbsent(p.flow, k -> new TcpFlow(dateToleranceMs));
            p.incarnation = f.primaryArrived(seg);
            f.waiting.addLast(p);
            settle(p.flow, f);
            if (!p.matched && !broken)
            {
                waitingTcp.add(p.flow);
                armTimer(nowNs);
            }
            return;
        }
        final ArrayDeque<byte[]> theirs = waitingSecondary.get(p.flow);
        if (theirs != null && !theirs.isEmpty())
        {
            waitingDigests--;
            decide(p, theirs.pollFirst());
            return;
        }
        waitingPrimary.computeIfAbsent(p.flow, k -> new ArrayDeque<>()).addLast(p);
        armTimer(nowNs);
    }

    /**
     * A frame that arrived for the primary's guest ({@code len} bytes at {@code at} of {@code buf}): a client's TCP
     * acknowledgement tells which of the guest's retransmissions carry nothing new ({@link TcpFlow#delivered}).
     */
    public void inbound(final ByteBuffer buf, final int at, final int len)
    {
        if (era < 0 || broken)
        {
            return;
        }
        final int head = Math.min(len, HEAD_BYTES);
        buf.get(at, frame, 0, head);
        final long ack = FrameDigest.tcpAck(frame, 0, len);
        if (ack < 0)
        {
            if (FrameDigest.tcpOpening(frame, 0, len))
            {
                final TcpFlow f = tcpFlows.get(FrameDigest.reverseFlow(frame, 0, len));
                if (f != null)
                {
                    f.clientSyn();
                }
            }
            return;
        }
        final long flow = FrameDigest.reverseFlow(frame, 0, len);
        final TcpFlow f = tcpFlows.computeIfAbsent(flow, k -> new TcpFlow(dateToleranceMs));
        final long finEnd = FrameDigest.tcpFinEnd(frame, 0, len);
        if (finEnd >= 0)
        {
            f.clientFin((int)finEnd);
        }
        if ((f.clientAcked((int)ack) || finEnd >= 0) && !f.waiting.isEmpty())
        {
            settle(flow, f);
        }
    }

    /** A digest of the secondary's output of era {@code theirEra}: 8 bytes of flow, then the digest, in {@code body}. */
    public void digest(final long theirEra, final byte[] body, final long nowNs)
    {
        digests++;
        if (theirEra != era || broken || era < 0)
        {
            staleDigests++;
            return;
        }
        final long flow = be64(body, 0);
        final ArrayDeque<Pending> ours = waitingPrimary.get(flow);
        final byte[] d = Arrays.copyOfRange(body, 8, 8 + FrameDigest.DIGEST_BYTES);
        if (ours != null && !ours.isEmpty())
        {
            decide(ours.pollFirst(), d);
            return;
        }
        if (waitingDigests >= MAX_WAITING_DIGESTS)
        {
            lastCause = MAX_WAITING_DIGESTS + " of the secondary's frames found no counterpart";
            ask(Cause.SECONDARY_AHEAD);
            return;
        }
        waitingSecondary.computeIfAbsent(flow, k -> new ArrayDeque<>()).addLast(d);
        waitingDigests++;
    }

    /**
     * A TCP segment of the secondary's output of era {@code theirEra} (after sequence rewriting): 8 bytes of flow,
     * be32 seq, be32 ack, flags, payload, in {@code body[0, length)}.
     */
    public void tcp(final long theirEra, final byte[] body, final int length, final long nowNs)
    {
        tcp(theirEra, body, length, -1, nowNs);
    }

    /** As above, with the window field of the copy's segment ({@code window}; -1 if the secondary did not say). */
    public void tcp(final long theirEra, final byte[] body, final int length, final int window, final long nowNs)
    {
        digests++;
        if (theirEra != era || broken || era < 0)
        {
            staleDigests++;
            return;
        }
        final long flow = be64(body, 0);
        final TcpFlow f = tcpFlows.computeIfAbsent(flow, k -> new TcpFlow(dateToleranceMs));
        if (!f.copy(body, length, window))
        {
            lastCause = "the secondary's TCP output of one connection passed " + TcpFlow.MAX_STREAM + " bytes unverified";
            ask(Cause.SECONDARY_AHEAD);
            return;
        }
        settle(flow, f);
    }

    /** Decides the waiting primary segments of {@code f} in order, as far as what the copy sent allows. */
    private void settle(final long flow, final TcpFlow f)
    {
        while (!f.waiting.isEmpty() && !broken)
        {
            final Pending p = f.waiting.peekFirst();
            final TcpFlow.Verdict v = f.check(p.tcp, p.incarnation);
            if (v == TcpFlow.Verdict.WAIT)
            {
                break;
            }
            f.waiting.pollFirst();
            if (v == TcpFlow.Verdict.DIFFERS)
            {
                mismatchAt(p, f.outrun(p.incarnation) ? "; the copy answered a newer connection on this port pair" : "");
                return;
            }
            if (v == TcpFlow.Verdict.DELIVERED)
            {
                retransmissionsPassed++;
            }
            else if (v == TcpFlow.Verdict.MATCH_DATES)
            {
                datesTolerated++;
            }
            else if (v == TcpFlow.Verdict.TEARDOWN)
            {
                teardownsTolerated++;
            }
            clampWindow(p, f.copyWindow);
            matchedNow(p);
        }
        releaseMatched(flow);
    }

    /**
     * {@code p} matched: counted, and how long it waited for the copy's counterpart (the copy's lag as a frame sees
     * it). How long it then waits for the frames of its flow before it ({@link #releaseMatched}) is counted there: the
     * two together say whether hybrid mode's latency is the copy's or the in-order release's.
     */
    private void matchedNow(final Pending p)
    {
        p.matched = true;
        p.matchedNs = System.nanoTime();
        matched++;
        matchWaitNs += p.matchedNs - p.heldNs;
        final int kind = WaitKind.of(p.tcp).ordinal();
        waitCount.incrementAndGet(kind);
        waitNs.addAndGet(kind, p.matchedNs - p.heldNs);
        if (alignedNs > p.heldNs)
        {
            waitBeforeCopyNs += Math.min(alignedNs, p.matchedNs) - p.heldNs;
        }
    }

    /**
     * Lowers the window of the primary's matched segment {@code p} to the copy's ({@link TcpFlow#copyWindow}), in the
     * held frame, checksum updated (RFC 1624). {@code p} acknowledges no more than the copy did, so the client is then
     * offered no byte beyond what the copy's guest takes.
     */
    private void clampWindow(final Pending p, final int copyWindow)
    {
        if (copyWindow < 0 || !p.tcp.has(Segment.ACK) || p.tcp.has(Segment.SYN) || p.tcp.window() <= copyWindow)
        {
            return;
        }
        final int win = p.at + p.tcp.l4() + 14;
        final int sum = p.at + p.tcp.l4() + 16;
        final int old = p.buf.getShort(win) & 0xFFFF;
        p.buf.putShort(win, (short)copyWindow);
        // HC' = ~(~HC + ~m + m')
        int c = ~p.buf.getShort(sum) & 0xFFFF;
        c += ~old & 0xFFFF;
        c += copyWindow & 0xFFFF;
        c = (c & 0xFFFF) + (c >>> 16);
        c = (c & 0xFFFF) + (c >>> 16);
        p.buf.putShort(sum, (short)~c);
        windowsClamped++;
    }

    private void mismatchAt(final Pending p, final String why)
    {
        lastCause = "mismatch: " + p.what() + why;
        ask(Cause.MISMATCH);
    }

    /**
     * Comparing failed with {@code ex} (a fault of this code, never of the guests): what is held is not released by
     * comparison any more in this era; a checkpoint is asked, counted as a mismatch, which releases it. The NIC's loop
     * goes on.
     */
    public void failed(final RuntimeException ex)
    {
        if (broken)
        {
            return;
        }
        LOG.error("era {}: comparing failed; asking for a checkpoint instead", era, ex);
        lastCause = "comparison failed: " + ex;
        ask(Cause.MISMATCH);
    }

    /** Forgets everything waiting to be compared. */
    private void forgetWaiting()
    {
        tcpFlows.clear();
        waitingTcp.clear();
        waitingPrimary.clear();
        waitingSecondary.clear();
        waitingDigests = 0;
    }

    /** The secondary's copy resumed from checkpoint {@code theirEra}. */
    public void secondaryEra(final long theirEra, final long nowNs)
    {
        secondaryEra = theirEra;
        alignedNs = theirEra == era ? nowNs : 0;
        armTimer(nowNs);
    }

    /** The VM paused for checkpoint {@code epoch}: what is open is sealed into it; comparison restarts from it. */
    public void sealed(final long epoch)
    {
        open.clear();
        forgetWaiting();
        broken = false;
        era = epoch;
        alignedNs = secondaryEra == era ? System.nanoTime() : 0;
    }

    /** A sealed epoch left: matched open frames that waited behind it may follow. */
    public void released()
    {
        for (final long flow : open.keySet().toArray(new Long[0]))
        {
            releaseMatched(flow);
        }
    }

    /** The session ended: nothing is compared until the next {@link #sealed}. */
    public void detached()
    {
        sealed(-1);
        secondaryEra = -1;
    }

    private void decide(final Pending p, final byte[] theirs)
    {
        if (!Arrays.equals(p.digest, theirs))
        {
            mismatchAt(p, "");
            return;
        }
        matchedNow(p);
        releaseMatched(p.flow);
    }

    /** Lets the matched frames at the head of {@code flow}'s open frames out, in order. */
    private void releaseMatched(final long flow)
    {
        if (!releaseMatched || !ledger.canReleaseOpen())
        {
            return;
        }
        final ArrayDeque<Pending> q = open.get(flow);
        if (q == null)
        {
            return;
        }
        final long now = System.nanoTime();
        while (!q.isEmpty() && q.peekFirst().matched)
        {
            final Pending p = q.pollFirst();
            behindNs += now - p.matchedNs;
            behindMaxNs = Math.max(behindMaxNs, now - p.matchedNs);
            ledger.releaseOne(p.endMark, p.bytes);
            releasedByComparison++;
        }
        if (q.isEmpty())
        {
            open.remove(flow);
        }
    }

    private void ask(final Cause cause)
    {
        if (broken)
        {
            return;
        }
        broken = true;
        forgetWaiting();
        checkpointsAsked[cause.ordinal()]++;
        checkpointsAskedView = checkpointsAsked.clone();
        if (LOG.isDebugEnabled())
        {
            LOG.debug("era {}: checkpoint asked ({}): {}", era, cause.label(), lastCause);
        }
        ledger.wantCheckpoint(cause);
    }

    private void armTimer(final long nowNs)
    {
        if (timerArmed || alignedNs == 0 || waitingPrimary.isEmpty() && waitingTcp.isEmpty())
        {
            return;
        }
        timerArmed = true;
        ledger.schedule(this::onTimer, Math.max(Math.min(timeoutNs / 4, SPLIT_AFTER_NS), 100_000L));
    }

    private void onTimer()
    {
        timerArmed = false;
        if (broken || alignedNs == 0)
        {
            return;
        }
        final long now = System.nanoTime();
        for (final ArrayDeque<Pending> q : waitingPrimary.values())
        {
            if (timedOut(q.peekFirst(), now))
            {
                return;
            }
        }
        final java.util.Iterator<Long> it = waitingTcp.iterator();
        while (it.hasNext())
        {
            final long flow = it.next();
            final TcpFlow f = tcpFlows.get(flow);
            if (f == null || f.waiting.isEmpty())
            {
                it.remove();
            }
            else if (timedOut(f.waiting.peekFirst(), now))
            {
                return;
            }
            else if (now - Math.max(f.waiting.peekFirst().heldNs, alignedNs) >= SPLIT_AFTER_NS)
            {
                split(flow, f, f.waiting.peekFirst());
                if (broken)
                {
                    return; // comparing what was left asked for a checkpoint: nothing waits any more
                }
            }
        }
        armTimer(now);
    }

    /**
     * Lets the start of {@code p} out that the copy sent exactly ({@link TcpFlow#sentPrefix}), if {@code p} is the
     * first frame of its flow still held; the rest waits in its place.
     */
    private void split(final long flow, final TcpFlow f, final Pending p)
    {
        final ArrayDeque<Pending> q = open.get(flow);
        if (!releaseMatched || !ledger.canReleaseOpen() || q == null || q.peekFirst() != p)
        {
            return;
        }
        final int k = f.sentPrefix(p.tcp, p.incarnation);
        if (k == 0)
        {
            return;
        }
        final byte[] whole = new byte[p.bytes];
        p.buf.get(p.at, whole, 0, p.bytes);
        final byte[][] parts = SegmentSplit.at(whole, p.bytes, k, p.tcp.has(Segment.ACK) ? f.copyWindow : -1);
        if (parts == null)
        {
            return;
        }
        ledger.releaseSplit(p.endMark, p.bytes, parts[0], parts[1]);
        final byte[] rest = parts[1];
        final Pending r = new Pending(p.endMark, rest.length, p.heldNs, p.flow, null,
            Arrays.copyOf(rest, Math.min(rest.length, HEAD_BYTES)), Segment.of(rest, 0, rest.length), p.buf, p.at);
        r.incarnation = p.incarnation;
        q.pollFirst();
        q.addFirst(r);
        f.waiting.pollFirst();
        f.waiting.addFirst(r);
        segmentsSplit++;
        releasedByComparison++;
        settle(flow, f);
    }

    private boolean timedOut(final Pending p, final long now)
    {
        if (p != null && now - Math.max(p.heldNs, alignedNs) >= timeoutNs)
        {
            final TcpFlow f = p.tcp == null ? null : tcpFlows.get(p.flow);
            lastCause = "no match within " + timeoutNs / 1_000_000 + " ms: " + p.what() + (f == null ? "" : f.lagBehind(p.tcp));
            ask(Cause.COMPARE_TIMEOUT);
            return true;
        }
        return false;
    }

    static long be64(final byte[] b, final int at)
    {
        long v = 0;
        for (int i = 0; i < 8; i++)
        {
            v = v << 8 | b[at + i] & 0xFF;
        }
        return v;
    }

    /** Counters, readable from any thread. */
    public Stats stats()
    {
        final long[] asked = checkpointsAskedView;
        final long[] waits = new long[waitNs.length()];
        final long[] waitMicros = new long[waitNs.length()];
        for (int i = 0; i < waitMicros.length; i++)
        {
            waits[i] = waitCount.get(i);
            waitMicros[i] = waitNs.get(i) / 1000;
        }
        return new Stats(compared, matched, releasedByComparison, digests, staleDigests, asked[Cause.MISMATCH.ordinal()],
            asked[Cause.COMPARE_TIMEOUT.ordinal()], asked[Cause.SECONDARY_AHEAD.ordinal()], lastCause, matchWaitNs / 1000,
            behindNs / 1000, behindMaxNs / 1000, new Waits(waits, waitMicros, waitBeforeCopyNs / 1000),
            retransmissionsPassed, windowsClamped, datesTolerated, teardownsTolerated, segmentsSplit);
    }

    /** What a matched frame was, for the wait accounting: what the copy's lag delays. */
    public enum WaitKind
    {
        /** A TCP segment with payload. */
        DATA,
        /** A TCP segment with no payload and only ACK (a window update or acknowledgement). */
        ACK,
        /** A TCP SYN, FIN or RST without payload. */
        CONTROL,
        /** Anything compared by digest (ARP, ICMP, UDP, IPv6 control). */
        OTHER;

        static WaitKind of(final Segment tcp)
        {
            if (tcp == null)
            {
                return OTHER;
            }
            if (tcp.payload().length > 0)
            {
                return DATA;
            }
            return tcp.has(Segment.SYN | Segment.FIN | Segment.RST) ? CONTROL : ACK;
        }

        public String label()
        {
            return name().toLowerCase();
        }
    }

    /**
     * Matched frames by {@link WaitKind} (indexed by ordinal): how many, and their held → matched waits summed;
     * {@code beforeCopyMicros}: the part of all those waits before the copy of the frame's era ran (the load of a
     * checkpoint on the secondary), the rest is the running copy's lag.
     */
    public record Waits(long[] count, long[] micros, long beforeCopyMicros)
    {
        public static final Waits NONE = new Waits(new long[WaitKind.values().length],
            new long[WaitKind.values().length], 0);

        /** Mean wait of {@code kind} in ms (0 if none matched). */
        public double meanMs(final WaitKind kind)
        {
            final int i = kind.ordinal();
            return count[i] == 0 ? 0 : micros[i] / 1000.0 / count[i];
        }

        public Waits plus(final Waits o)
        {
            final long[] c = count.clone();
            final long[] m = micros.clone();
            for (int i = 0; i < c.length; i++)
            {
                c[i] += o.count[i];
                m[i] += o.micros[i];
            }
            return new Waits(c, m, beforeCopyMicros + o.beforeCopyMicros);
        }
    }

    /**
     * What comparison did on one NIC. {@code matchWaitMicros}: summed over matched frames, the time from held to
     * matched (the copy's lag); {@code behindMicros} / {@code behindMaxMicros}: summed over frames released by
     * comparison, and the longest, the time from matched to released (waiting for unmatched frames before it);
     * {@code retransmissionsPassed}: of the matched, TCP retransmissions of bytes the client had acknowledged;
     * {@code windowsClamped}: matched segments whose window was lowered to the copy's; {@code datesTolerated}: matched
     * segments whose HTTP Date values differed within the tolerance ({@link HttpDates}); {@code teardownsTolerated}:
     * last segments of finished connections that ended with ACK on one guest and RST on the other
     * ({@link TcpFlow.Verdict#TEARDOWN}); {@code segmentsSplit}: held segments whose start left alone because the copy
     * had sent only that ({@link SegmentSplit}).
     */
    public record Stats(long compared, long matched, long releasedByComparison, long digests, long staleDigests,
        long mismatches, long timeouts, long secondaryAhead, String lastCause, long matchWaitMicros, long behindMicros,
        long behindMaxMicros, Waits waits, long retransmissionsPassed, long windowsClamped, long datesTolerated,
        long teardownsTolerated, long segmentsSplit)
    {
        public static final Stats NONE = new Stats(0, 0, 0, 0, 0, 0, 0, 0, "", 0, 0, 0, Waits.NONE, 0, 0, 0, 0, 0);
    }
}
