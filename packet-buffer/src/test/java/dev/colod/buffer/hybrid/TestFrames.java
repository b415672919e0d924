package dev.colod.buffer.hybrid;

import java.nio.ByteBuffer;

/** Builds Ethernet/IPv4 frames for the hybrid-mode tests, with correct IP and TCP checksums. */
public final class TestFrames
{
    public static final int GUEST = 0xC6120A0A; // 198.18.10.10
    public static final int CLIENT = 0xC6120A64; // 198.18.10.100

    private TestFrames()
    {
    }

    /** One TCP segment; {@code tsval} < 0: no timestamp option; {@code sack} (pairs) adds a SACK option. */
    public static byte[] tcp(final int src, final int dst, final int sport, final int dport, final int seq, final int ack,
        final int flags, final int window, final int ipId, final long tsval, final int[] sack, final byte[] payload)
    {
        final int opts = (tsval >= 0 ? 12 : 0) + (sack == null ? 0 : 4 + 4 * sack.length);
        final int tcpLen = 20 + opts;
        final int total = 20 + tcpLen + payload.length;
        final ByteBuffer b = ByteBuffer.allocate(14 + total);
        b.put(new byte[]{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2}).putShort((short)0x0800);
        b.put((byte)0x45).put((byte)0).putShort((short)total).putShort((short)ipId).putShort((short)0x4000)
            .put((byte)64).put((byte)6).putShort((short)0).putInt(src).putInt(dst);
        b.putShort((short)sport).putShort((short)dport).putInt(seq).putInt(ack)
            .put((byte)(tcpLen / 4 << 4)).put((byte)flags).putShort((short)window).putShort((short)0).putShort((short)0);
        if (tsval >= 0)
        {
            b.put((byte)1).put((byte)1).put((byte)8).put((byte)10).putInt((int)tsval).putInt(7777);
        }
        if (sack != null)
        {
            b.put((byte)1).put((byte)1).put((byte)5).put((byte)(2 + 4 * sack.length));
            for (final int edge : sack)
            {
                b.putInt(edge);
            }
        }
        b.put(payload);
        final byte[] f = b.array();
        final FrameDigest.Ip ip = FrameDigest.Ip.of(f, 0, f.length);
        TcpRewriter.tcpChecksum(f, ip);
        return f;
    }

    /**
     * The record body the secondary sends for its copy's TCP segment {@code f} (kind 4: 8 bytes of flow, be32 seq, be32
     * ack, flags, payload).
     */
    public static byte[] tcpRecord(final byte[] f)
    {
        final long flow = FrameDigest.flow(f, 0, f.length);
        final Segment seg = Segment.of(f, 0, f.length);
        final byte[] rec = new byte[FramesCodec.TCP_HEADER + seg.payload().length];
        for (int i = 0; i < 8; i++)
        {
            rec[i] = (byte)(flow >>> (56 - 8 * i));
        }
        FrameDigest.putBe32(rec, 8, seg.seq());
        FrameDigest.putBe32(rec, 12, seg.ack());
        rec[16] = (byte)seg.flags();
        System.arraycopy(seg.payload(), 0, rec, FramesCodec.TCP_HEADER, seg.payload().length);
        return rec;
    }

    static byte[] fromGuest(final int seq, final int ack, final int flags, final String payload)
    {
        return tcp(GUEST, CLIENT, 80, 40000, seq, ack, flags, 500, 1, 1000, null, payload.getBytes());
    }

    static byte[] toGuest(final int seq, final int ack, final int flags, final String payload)
    {
        return tcp(CLIENT, GUEST, 40000, 80, seq, ack, flags, 500, 1, 2000, null, payload.getBytes());
    }

    /** True if the TCP checksum of {@code f} verifies (the one's complement sum over pseudo-header and segment is 0). */
    static boolean tcpChecksumValid(final byte[] f)
    {
        final byte[] copy = f.clone();
        final FrameDigest.Ip ip = FrameDigest.Ip.of(copy, 0, copy.length);
        final int was = FrameDigest.be16(copy, ip.l4 + 16);
        TcpRewriter.tcpChecksum(copy, ip);
        return FrameDigest.be16(copy, ip.l4 + 16) == was;
    }
}
