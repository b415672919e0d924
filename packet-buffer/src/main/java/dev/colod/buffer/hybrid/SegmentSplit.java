package dev.colod.buffer.hybrid;

import java.util.Arrays;

import static dev.colod.buffer.hybrid.FrameDigest.ETH_HEADER;
import static dev.colod.buffer.hybrid.FrameDigest.PROTO_TCP;
import static dev.colod.buffer.hybrid.FrameDigest.be32;
import static dev.colod.buffer.hybrid.FrameDigest.putBe16;
import static dev.colod.buffer.hybrid.FrameDigest.putBe32;

/**
 * Cuts a TCP segment (an Ethernet frame, IPv4 or IPv6) in two at a payload offset: the first part carries the first
 * bytes and no FIN, the second the rest (sequence number moved on) and the segment's FIN; both with their IP length and
 * every checksum set. Hybrid mode lets the first part out when the copy sent exactly those bytes and waits for the rest
 * (docs/ARCHITECTURE.md, "A segment the copy sent only the start of").
 */
final class SegmentSplit
{
    private SegmentSplit()
    {
    }

    /**
     * The two frames {@code f[0, len)} becomes when cut after {@code k} payload bytes ({@code 0 < k <} payload), the
     * first offering at most {@code window} (the copy's; -1: as it is); null if {@code f} is no TCP segment that long.
     */
    static byte[][] at(final byte[] f, final int len, final int k, final int window)
    {
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, 0, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end)
        {
            return null;
        }
        final int payload = ip.l4 + ((f[ip.l4 + 12] & 0xFF) >> 4) * 4;
        final int n = ip.end - payload;
        if (payload > ip.end || k <= 0 || k >= n)
        {
            return null;
        }
        final byte[] first = Arrays.copyOf(f, payload + k);
        first[ip.l4 + 13] &= (byte)~Segment.FIN;
        if (window >= 0 && FrameDigest.be16(first, ip.l4 + 14) > window)
        {
            putBe16(first, ip.l4 + 14, window);
        }
        final byte[] rest = new byte[payload + n - k];
        System.arraycopy(f, 0, rest, 0, payload);
        System.arraycopy(f, payload + k, rest, payload, n - k);
        putBe32(rest, ip.l4 + 4, be32(f, ip.l4 + 4) + k);
        return new byte[][]{seal(first, ip.v4), seal(rest, ip.v4)};
    }

    /** Sets the IP length and the IPv4 header and TCP checksums of {@code f}, whose datagram runs to its end. */
    private static byte[] seal(final byte[] f, final boolean v4)
    {
        final int ip = ETH_HEADER;
        if (v4)
        {
            final int ihl = (f[ip] & 0x0F) * 4;
            putBe16(f, ip + 2, f.length - ip);
            putBe16(f, ip + 10, 0);
            putBe16(f, ip + 10, TcpRewriter.checksum(TcpRewriter.sum(f, ip, ihl)));
        }
        else
        {
            putBe16(f, ip + 4, f.length - ip - 40);
        }
        TcpRewriter.tcpChecksum(f, FrameDigest.Ip.of(f, 0, f.length));
        return f;
    }
}
