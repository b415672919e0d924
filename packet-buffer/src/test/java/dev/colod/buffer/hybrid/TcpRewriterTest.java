package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import static dev.colod.buffer.hybrid.TestFrames.CLIENT;
import static dev.colod.buffer.hybrid.TestFrames.GUEST;
import static dev.colod.buffer.hybrid.TestFrames.fromGuest;
import static dev.colod.buffer.hybrid.TestFrames.tcp;
import static dev.colod.buffer.hybrid.TestFrames.toGuest;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The secondary's sequence rewriter on a connection opened since the last checkpoint: the guests chose different
 * ISNs (primary P, secondary S); the client acknowledges P's.
 */
class TcpRewriterTest
{
    private static final int SYN = 0x02;
    private static final int SYN_ACK = 0x12;
    private static final int ACK = 0x10;
    private static final int PA = 0x18;
    private static final int P = 0x7000_0000;
    private static final int S = 0x1234_5678;
    private static final int C = 5000;
    private final TcpRewriter rewriter = new TcpRewriter();
    private final FrameDigest digest = new FrameDigest();

    @Test
    void afterTheClientsFirstAckBothDirectionsAreShiftedAndTheSecondarysOutputDigestsLikeThePrimarys()
    {
        rewriter.outbound(fromGuest(S, C + 1, SYN_ACK, ""), 0, 54 + 12);
        final byte[] ack = toGuest(C + 1, P + 1, ACK, "");
        assertThat(rewriter.inbound(ack, 0, ack.length)).isTrue();
        assertThat(FrameDigest.be32(ack, 34 + 8)).as("the client's ack, in the secondary's numbers").isEqualTo(S + 1);
        assertThat(TestFrames.tcpChecksumValid(ack)).as("checksum recomputed").isTrue();
        assertThat(rewriter.learned()).isEqualTo(1);

        final byte[] secondarys = fromGuest(S + 1, C + 1, PA, "HTTP/1.0 200 OK\r\n");
        final byte[] primarys = fromGuest(P + 1, C + 1, PA, "HTTP/1.0 200 OK\r\n");
        assertThat(digest.digest(secondarys, 0, secondarys.length)).isNotEqualTo(digest.digest(primarys, 0, primarys.length));
        rewriter.outbound(secondarys, 0, secondarys.length);
        assertThat(digest.digest(secondarys, 0, secondarys.length)).isEqualTo(digest.digest(primarys, 0, primarys.length));
    }

    @Test
    void sackBlocksAreShiftedToo()
    {
        rewriter.outbound(fromGuest(S, C + 1, SYN_ACK, ""), 0, 66);
        final byte[] first = toGuest(C + 1, P + 1, ACK, "");
        rewriter.inbound(first, 0, first.length);
        final byte[] sack = tcp(CLIENT, GUEST, 40000, 80, C + 1, P + 1, ACK, 500, 3, 2000,
            new int[]{P + 1449, P + 2897}, new byte[0]);
        rewriter.inbound(sack, 0, sack.length);
        final int at = FrameDigest.option(sack, 34, 34 + 20 + 12 + 12, FrameDigest.TcpOption.SACK);
        assertThat(FrameDigest.be32(sack, at + 2)).isEqualTo(S + 1449);
        assertThat(FrameDigest.be32(sack, at + 6)).isEqualTo(S + 2897);
        assertThat(TestFrames.tcpChecksumValid(sack)).isTrue();
    }

    @Test
    void aConnectionTheGuestOpensIsLearnedFromTheServersSynAck()
    {
        rewriter.outbound(tcp(GUEST, CLIENT, 33000, 443, S, 0, SYN, 500, 1, 10, null, new byte[0]), 0, 66);
        final byte[] synAck = tcp(CLIENT, GUEST, 443, 33000, C, P + 1, SYN_ACK, 500, 1, 10, null, new byte[0]);
        assertThat(rewriter.inbound(synAck, 0, synAck.length)).isTrue();
        assertThat(FrameDigest.be32(synAck, 34 + 8)).isEqualTo(S + 1);
    }

    @Test
    void connectionsOfTheCheckpointedStateAndAfterAResetAreLeftAlone()
    {
        final byte[] untracked = toGuest(C + 1, P + 1, ACK, "");
        final byte[] before = untracked.clone();
        assertThat(rewriter.inbound(untracked, 0, untracked.length)).isFalse();
        assertThat(untracked).isEqualTo(before);

        rewriter.outbound(fromGuest(S, C + 1, SYN_ACK, ""), 0, 66);
        rewriter.reset(); // a checkpoint made both guests equal
        final byte[] after = toGuest(C + 1, P + 1, ACK, "");
        assertThat(rewriter.inbound(after, 0, after.length)).isFalse();
    }

    @Test
    void afterAFailoverTheCopysSegmentsLeaveInThePrimarysNumbersWithValidChecksums()
    {
        rewriter.outbound(fromGuest(S, C + 1, SYN_ACK, ""), 0, 66);
        final byte[] ack = toGuest(C + 1, P + 1, ACK, "");
        rewriter.inbound(ack, 0, ack.length);
        final byte[] out = fromGuest(S + 1, C + 1, PA, "HTTP/1.0 200 OK\r\n");
        assertThat(rewriter.relayOutbound(out, 0, out.length)).isTrue();
        assertThat(FrameDigest.be32(out, 34 + 4)).isEqualTo(P + 1);
        assertThat(TestFrames.tcpChecksumValid(out)).isTrue();
        final byte[] other = tcp(GUEST, CLIENT, 80, 40001, S, C, PA, 500, 1, 10, null, "x".getBytes());
        assertThat(rewriter.relayOutbound(other, 0, other.length)).as("a connection it never tracked").isFalse();
        assertThat(rewriter.relayed()).isEqualTo(1);
    }
}
