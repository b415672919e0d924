package dev.colod.buffer.hybrid;

import java.util.HashMap;
import java.util.Map;

import static dev.colod.buffer.hybrid.FrameDigest.PROTO_TCP;
import static dev.colod.buffer.hybrid.FrameDigest.TCP_ACK;
import static dev.colod.buffer.hybrid.FrameDigest.TCP_SYN;
import static dev.colod.buffer.hybrid.FrameDigest.be16;
import static dev.colod.buffer.hybrid.FrameDigest.be32;
import static dev.colod.buffer.hybrid.FrameDigest.putBe32;

/**
 * The secondary's TCP sequence rewriter (docs/ARCHITECTURE.md, "TCP sequence rewriting"). A connection opened
 * since the last checkpoint has a different initial sequence number on each guest; the client only ever talks to
 * the primary's. The rewriter learns the secondary's ISN from its guest's SYN (or SYN-ACK) and the primary's from
 * the first acknowledgement that comes in for it (ack = ISN_p + 1), then shifts
 * <ul>
 * <li>inbound acknowledgement numbers and SACK blocks by -offset before a frame is injected (the secondary's
 * guest sees acknowledgements of what it sent; the TCP checksum is recomputed), and</li>
 * <li>outbound sequence numbers by +offset before a frame is digested (so it compares with the primary's).</li>
 * </ul>
 * Connections of the state a checkpoint set up are equal on both guests: {@link #reset} at each checkpoint.
 * Thread-safe (the injecting and the capturing thread share it).
 */
public final class TcpRewriter
{
    /** Connections tracked at most; beyond, new ones are not rewritten (they mismatch: a checkpoint follows). */
    static final int MAX_CONNECTIONS = 65536;

    private static final class Conn
    {
        final int isn;
        int offset;
        boolean known;

        Conn(final int isn)
        {
            this.isn = isn;
        }
    }

    private final Map<Long, Conn> conns = new HashMap<>();
    private long learned;
    private long rewrittenInbound;
    private long relayed;

    /** Forgets every connection: both guests hold the same state again. */
    public synchronized void reset()
    {
        conns.clear();
    }

    /** Connections whose offset is known, over the life of this rewriter. */
    public synchronized long learned()
    {
        return learned;
    }

    /** Inbound frames whose acknowledgement was shifted. */
    public synchronized long rewrittenInbound()
    {
        return rewrittenInbound;
    }

    /** A frame the secondary's guest sent: learns its ISN from a SYN, else shifts its sequence number in place. */
    public synchronized void outbound(final byte[] f, final int off, final int len)
    {
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end)
        {
            return;
        }
        final long key = key(f, ip, true);
        final int flags = f[ip.l4 + 13] & 0xFF;
        final int seq = be32(f, ip.l4 + 4);
        if ((flags & TCP_SYN) != 0)
        {
            final Conn c = conns.get(key);
            if ((c == null || c.isn != seq) && conns.size() < MAX_CONNECTIONS)
            {
                conns.put(key, new Conn(seq));
            }
            return;
        }
        final Conn c = conns.get(key);
        if (c != null && c.known && c.offset != 0)
        {
            putBe32(f, ip.l4 + 4, seq + c.offset);
        }
    }

    /**
     * After a failover to the running copy, on its way out: shifts the sequence number (and recomputes the checksum) of a
     * connection with a known offset, so its client, which knows the primary's numbers, keeps its connection. New
     * connections are not tracked any more. True if the frame changed.
     */
    public synchronized boolean relayOutbound(final byte[] f, final int off, final int len)
    {
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end || conns.isEmpty())
        {
            return false;
        }
        final Conn c = conns.get(key(f, ip, true));
        if (c == null || !c.known || c.offset == 0)
        {
            return false;
        }
        putBe32(f, ip.l4 + 4, be32(f, ip.l4 + 4) + c.offset);
        tcpChecksum(f, ip);
        relayed++;
        return true;
    }

    /** Frames shifted on their way out after a failover. */
    public synchronized long relayed()
    {
        return relayed;
    }

    /**
     * A frame for the secondary's guest (a copy of what the primary's received): learns the offset from the first
     * acknowledgement of a tracked connection, then shifts acknowledgements in place. True if the frame changed.
     */
    public synchronized boolean inbound(final byte[] f, final int off, final int len)
    {
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end)
        {
            return false;
        }
        final Conn c = conns.get(key(f, ip, false));
        final int flags = f[ip.l4 + 13] & 0xFF;
        if (c == null || (flags & TCP_ACK) == 0)
        {
            return false;
        }
        final int ack = be32(f, ip.l4 + 8);
        if (!c.known)
        {
            c.offset = ack - (c.isn + 1);
            c.known = true;
            learned++;
        }
        if (c.offset == 0)
        {
            return false;
        }
        putBe32(f, ip.l4 + 8, ack - c.offset);
        final int doff = ((f[ip.l4 + 12] & 0xFF) >> 4) * 4;
        final int sack = FrameDigest.option(f, ip.l4, Math.min(ip.l4 + doff, ip.end), FrameDigest.TcpOption.SACK);
        if (sack >= 0)
        {
            final int olen = f[sack + 1] & 0xFF;
            for (int p = sack + 2; p + 4 <= sack + olen; p += 4)
            {
                putBe32(f, p, be32(f, p) - c.offset);
            }
        }
        tcpChecksum(f, ip);
        rewrittenInbound++;
        return true;
    }

    /** The connection seen from the guest: its address and port, then the peer's. */
    private static long key(final byte[] f, final FrameDigest.Ip ip, final boolean fromGuest)
    {
        final int alen = ip.v4 ? 4 : 16;
        final int src = ip.addrs;
        final int dst = ip.addrs + alen;
        final int guestAddr = fromGuest ? src : dst;
        final int peerAddr = fromGuest ? dst : src;
        final int guestPort = be16(f, ip.l4 + (fromGuest ? 0 : 2));
        final int peerPort = be16(f, ip.l4 + (fromGuest ? 2 : 0));
        long h = 0xcbf29ce484222325L;
        for (int i = 0; i < alen; i++)
        {
            h = (h ^ (f[guestAddr + i] & 0xFF)) * 0x100000001b3L;
        }
        for (int i = 0; i < alen; i++)
        {
            h = (h ^ (f[peerAddr + i] & 0xFF)) * 0x100000001b3L;
        }
        h = (h ^ guestPort) * 0x100000001b3L;
        return (h ^ peerPort) * 0x100000001b3L;
    }

    /** Recomputes the TCP checksum of the segment (pseudo-header of IPv4 or IPv6). */
    static void tcpChecksum(final byte[] f, final FrameDigest.Ip ip)
    {
        f[ip.l4 + 16] = 0;
        f[ip.l4 + 17] = 0;
        final int alen = ip.v4 ? 4 : 16;
        final int segLen = ip.end - ip.l4;
        FrameDigest.putBe16(f, ip.l4 + 16,
            checksum(sum(f, ip.addrs, 2 * alen) + PROTO_TCP + segLen + sum(f, ip.l4, segLen)));
    }

    /** The Internet checksum (RFC 1071) of a {@link #sum}: folded to 16 bits, complemented. */
    static int checksum(long sum)
    {
        while ((sum >>> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >>> 16);
        }
        return ~(int)sum & 0xFFFF;
    }

    /** The sum of {@code b[at, at+n)} as big-endian 16-bit words (an odd last byte padded with zero). */
    static long sum(final byte[] b, final int at, final int n)
    {
        long s = 0;
        int i = 0;
        for (; i + 1 < n; i += 2)
        {
            s += (b[at + i] & 0xFF) << 8 | b[at + i + 1] & 0xFF;
        }
        if (i < n)
        {
            s += (b[at + i] & 0xFF) << 8;
        }
        return s;
    }
}
