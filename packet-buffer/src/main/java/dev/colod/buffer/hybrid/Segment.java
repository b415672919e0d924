package dev.colod.buffer.hybrid;

import java.util.Arrays;

import static dev.colod.buffer.hybrid.FrameDigest.PROTO_TCP;
import static dev.colod.buffer.hybrid.FrameDigest.be32;

/**
 * What hybrid mode compares of one TCP segment: sequence and acknowledgement numbers, flags, payload; and the
 * window field as sent (scaled units), which is not compared but may be clamped ({@link TcpFlow#copyWindow}); and
 * {@code l4}, where the TCP header starts in the frame (for the clamp).
 */
record Segment(int seq, int ack, int flags, byte[] payload, int window, int l4)
{
    static final int FIN = 0x01;
    static final int SYN = 0x02;
    static final int RST = 0x04;
    static final int ACK = 0x10;

    /** The segment in an Ethernet frame, or null if the frame is no TCP over IPv4 or IPv6. */
    static Segment of(final byte[] f, final int off, final int len)
    {
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, off, len);
        if (ip == null || ip.proto != PROTO_TCP || ip.l4 + 20 > ip.end)
        {
            return null;
        }
        final int doff = ((f[ip.l4 + 12] & 0xFF) >> 4) * 4;
        final int from = Math.min(ip.l4 + Math.max(20, doff), ip.end);
        return new Segment(be32(f, ip.l4 + 4), be32(f, ip.l4 + 8), f[ip.l4 + 13] & 0xFF,
            Arrays.copyOfRange(f, from, ip.end), FrameDigest.be16(f, ip.l4 + 14), ip.l4 - off);
    }

    boolean has(final int flag)
    {
        return (flags & flag) != 0;
    }
}
