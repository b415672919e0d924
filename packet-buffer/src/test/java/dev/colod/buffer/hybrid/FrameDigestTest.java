package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static dev.colod.buffer.hybrid.TestFrames.CLIENT;
import static dev.colod.buffer.hybrid.TestFrames.GUEST;
import static dev.colod.buffer.hybrid.TestFrames.tcp;
import static org.assertj.core.api.Assertions.assertThat;

/** What hybrid mode's normalisation ignores and what it compares (docs/ARCHITECTURE.md, "Normalisation"). */
class FrameDigestTest
{
    private static final int PA = 0x18;
    private static final int SYN_ACK = 0x12;
    private final FrameDigest d = new FrameDigest();
    private final byte[] body = "HTTP/1.0 200 OK\r\n".getBytes();

    private byte[] digest(final byte[] f)
    {
        return d.digest(f, 0, f.length);
    }

    @Test
    void fieldsThatDifferBetweenTwoGuestsAnsweringAlikeAreIgnored()
    {
        final byte[] a = tcp(GUEST, CLIENT, 80, 40000, 1000, 2000, PA, 500, 11, 123_456, null, body);
        final byte[] b = tcp(GUEST, CLIENT, 80, 40000, 1000, 2000, PA, 29200, 9999, 987_654, null, body);
        assertThat(a).isNotEqualTo(b); // IP id, IP and TCP checksums, window and TSval all differ
        assertThat(digest(a)).isEqualTo(digest(b));
        final byte[] padded = Arrays.copyOf(a, a.length + 6);
        assertThat(digest(padded)).as("Ethernet padding after the datagram").isEqualTo(digest(a));
    }

    @Test
    void theSequenceNumberOfASynIsIgnoredAndOfAnythingElseCompared()
    {
        assertThat(digest(tcp(GUEST, CLIENT, 80, 40000, 111, 2000, SYN_ACK, 500, 1, 5, null, new byte[0])))
            .isEqualTo(digest(tcp(GUEST, CLIENT, 80, 40000, 999_999, 2000, SYN_ACK, 500, 1, 5, null, new byte[0])));
        assertThat(digest(tcp(GUEST, CLIENT, 80, 40000, 111, 2000, PA, 500, 1, 5, null, body)))
            .isNotEqualTo(digest(tcp(GUEST, CLIENT, 80, 40000, 112, 2000, PA, 500, 1, 5, null, body)));
    }

    @Test
    void payloadFlagsAcknowledgementAndAddressesAreCompared()
    {
        final byte[] base = digest(tcp(GUEST, CLIENT, 80, 40000, 1, 2, PA, 500, 1, 5, null, body));
        final byte[] other = body.clone();
        other[9] = '5'; // "HTTP/1.0 500 OK"
        assertThat(digest(tcp(GUEST, CLIENT, 80, 40000, 1, 2, PA, 500, 1, 5, null, other))).isNotEqualTo(base);
        assertThat(digest(tcp(GUEST, CLIENT, 80, 40000, 1, 2, 0x19, 500, 1, 5, null, body))).isNotEqualTo(base);
        assertThat(digest(tcp(GUEST, CLIENT, 80, 40000, 1, 3, PA, 500, 1, 5, null, body))).isNotEqualTo(base);
        assertThat(digest(tcp(GUEST, CLIENT + 1, 80, 40000, 1, 2, PA, 500, 1, 5, null, body))).isNotEqualTo(base);
    }

    @Test
    void aFlowIsItsAddressesAndPorts()
    {
        final byte[] a = tcp(GUEST, CLIENT, 80, 40000, 1, 2, PA, 500, 1, 5, null, body);
        final byte[] b = tcp(GUEST, CLIENT, 80, 40000, 77, 88, 0x11, 9, 2, 6, null, new byte[0]);
        final byte[] c = tcp(GUEST, CLIENT, 80, 40001, 1, 2, PA, 500, 1, 5, null, body);
        assertThat(FrameDigest.flow(a, 0, a.length)).isEqualTo(FrameDigest.flow(b, 0, b.length))
            .isNotEqualTo(FrameDigest.flow(c, 0, c.length));
        assertThat(FrameDigest.describe(a, 0, a.length))
            .isEqualTo("tcp 198.18.10.10:80 > 198.18.10.100:40000 [PA] seq 1 payload 17, 83 bytes");
        assertThat(FrameDigest.describe(Arrays.copyOf(a, 54), 0, a.length)).as("from its headers alone")
            .isEqualTo(FrameDigest.describe(a, 0, a.length));
    }

    @Test
    void aCopysSelfAnnouncementsAreRecognised()
    {
        final byte[] rarp = new byte[60];
        rarp[12] = (byte)0x80;
        rarp[13] = 0x35;
        assertThat(FrameDigest.selfAnnouncement(rarp, 0, rarp.length)).isTrue();
        final byte[] garp = arp(GUEST, GUEST);
        assertThat(FrameDigest.selfAnnouncement(garp, 0, garp.length)).isTrue();
        final byte[] request = arp(GUEST, CLIENT);
        assertThat(FrameDigest.selfAnnouncement(request, 0, request.length)).isFalse();
    }

    private static byte[] arp(final int sender, final int target)
    {
        final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(42);
        b.put(new byte[12]).putShort((short)0x0806).putShort((short)1).putShort((short)0x0800).put((byte)6)
            .put((byte)4).putShort((short)1).put(new byte[6]).putInt(sender).put(new byte[6]).putInt(target);
        return b.array();
    }
}
