package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import static dev.colod.buffer.hybrid.TestFrames.CLIENT;
import static dev.colod.buffer.hybrid.TestFrames.GUEST;
import static dev.colod.buffer.hybrid.TestFrames.tcp;
import static org.assertj.core.api.Assertions.assertThat;

class SegmentSplitTest
{
    private static boolean ipv4HeaderValid(final byte[] f)
    {
        long sum = 0;
        for (int i = 0; i < 20; i += 2)
        {
            sum += FrameDigest.be16(f, FrameDigest.ETH_HEADER + i);
        }
        while ((sum >>> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >>> 16);
        }
        return sum == 0xFFFF;
    }

    @Test
    void cutsASegmentInTwoWithTheFinAndEveryChecksumWhereTheyBelong()
    {
        final byte[] f = tcp(GUEST, CLIENT, 80, 40000, 1001, 29, 0x19, 4071, 7, 5, null, "HEADERbody!".getBytes());
        final byte[][] parts = SegmentSplit.at(f, f.length, 6, 1000);
        final Segment first = Segment.of(parts[0], 0, parts[0].length);
        final Segment rest = Segment.of(parts[1], 0, parts[1].length);
        assertThat(new String(first.payload())).isEqualTo("HEADER");
        assertThat(first.seq()).isEqualTo(1001);
        assertThat(first.has(Segment.FIN)).as("the FIN comes after the last byte").isFalse();
        assertThat(first.window()).as("no more than the copy's window").isEqualTo(1000);
        assertThat(new String(rest.payload())).isEqualTo("body!");
        assertThat(rest.seq()).isEqualTo(1007);
        assertThat(rest.has(Segment.FIN)).isTrue();
        assertThat(rest.window()).as("the rest is clamped when it matches, as any segment").isEqualTo(4071);
        assertThat(rest.ack()).isEqualTo(first.ack()).isEqualTo(29);
        for (final byte[] p : parts)
        {
            assertThat(TestFrames.tcpChecksumValid(p)).isTrue();
            assertThat(ipv4HeaderValid(p)).isTrue();
            assertThat(FrameDigest.be16(p, FrameDigest.ETH_HEADER + 2)).isEqualTo(p.length - FrameDigest.ETH_HEADER);
        }
        assertThat(parts[0].length + parts[1].length).as("one header more").isEqualTo(f.length + 14 + 20 + 32);
    }

    @Test
    void cutsNothingOutsideThePayload()
    {
        final byte[] f = tcp(GUEST, CLIENT, 80, 40000, 1001, 29, 0x18, 4071, 7, 5, null, "abc".getBytes());
        assertThat(SegmentSplit.at(f, f.length, 0, -1)).isNull();
        assertThat(SegmentSplit.at(f, f.length, 3, -1)).isNull();
        assertThat(SegmentSplit.at(f, f.length, 1, -1)).isNotNull();
    }
}
