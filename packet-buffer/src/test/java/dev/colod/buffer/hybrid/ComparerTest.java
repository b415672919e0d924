package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import static dev.colod.buffer.hybrid.TestFrames.CLIENT;
import static dev.colod.buffer.hybrid.TestFrames.GUEST;
import static dev.colod.buffer.hybrid.TestFrames.tcp;
import static org.assertj.core.api.Assertions.assertThat;

/** The primary's comparison of one NIC, driven by hand (the ledger faked: this is the logic above it). */
class ComparerTest
{
    private static final int PA = 0x18;

    /** What the comparer asked of its ledger. */
    private static final class FakeLedger implements Comparer.Ledger
    {
        boolean sealedWaiting;
        final List<long[]> releases = new ArrayList<>();
        final List<Comparer.Cause> asked = new ArrayList<>();
        final List<Runnable> timers = new ArrayList<>();
        final List<byte[][]> splits = new ArrayList<>();

        @Override
        public boolean canReleaseOpen()
        {
            return !sealedWaiting;
        }

        @Override
        public void releaseOne(final long endMark, final int bytes)
        {
            releases.add(new long[]{endMark, bytes});
        }

        @Override
        public void releaseSplit(final long endMark, final int bytes, final byte[] first, final byte[] rest)
        {
            splits.add(new byte[][]{first, rest});
        }

        @Override
        public void wantCheckpoint(final Comparer.Cause cause)
        {
            asked.add(cause);
        }

        @Override
        public void schedule(final Runnable r, final long delayNs)
        {
            timers.add(r);
        }
    }

    private final FakeLedger ledger = new FakeLedger();
    private final FrameDigest digester = new FrameDigest();
    private long mark;

    private static byte[] frame(final int port, final String payload)
    {
        return frame(port, 1, payload);
    }

    private static byte[] frame(final int port, final int seq, final String payload)
    {
        return tcp(GUEST, CLIENT, 80, port, seq, 2, PA, 500, 1, 5, null, payload.getBytes());
    }

    private void primary(final Comparer c, final byte[] f)
    {
        c.primary(ByteBuffer.wrap(f), 0, f.length, ++mark, System.nanoTime());
    }

    /** The record the secondary sends for its copy's frame {@code f}: a digest (non-TCP) or the segment (TCP). */
    private byte[] record(final byte[] f)
    {
        if (Segment.of(f, 0, f.length) != null)
        {
            return TestFrames.tcpRecord(f);
        }
        final long flow = FrameDigest.flow(f, 0, f.length);
        final byte[] rec = new byte[FramesCodec.DIGEST_LENGTH];
        for (int i = 0; i < 8; i++)
        {
            rec[i] = (byte)(flow >>> (56 - 8 * i));
        }
        digester.digest(f, 0, f.length, rec, 8);
        return rec;
    }

    /** Hands the copy's frame {@code f} of era {@code era} to {@code c} as the frames channel would. */
    private void copySent(final Comparer c, final long era, final byte[] f)
    {
        final byte[] rec = record(f);
        if (Segment.of(f, 0, f.length) == null)
        {
            c.digest(era, rec, System.nanoTime());
        }
        else
        {
            c.tcp(era, rec, rec.length, System.nanoTime());
        }
    }

    private static byte[] udp(final int port, final String payload)
    {
        final byte[] p = payload.getBytes();
        final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(14 + 28 + p.length);
        b.put(new byte[12]).putShort((short)0x0800);
        b.put((byte)0x45).put((byte)0).putShort((short)(28 + p.length)).putShort((short)1).putShort((short)0)
            .put((byte)64).put((byte)17).putShort((short)0).putInt(GUEST).putInt(CLIENT);
        b.putShort((short)53).putShort((short)port).putShort((short)(8 + p.length)).putShort((short)0).put(p);
        return b.array();
    }

    @Test
    void aMatchedFrameLeavesAtOnceWhateverOtherFlowsWaitFor()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(7);
        c.secondaryEra(7, System.nanoTime());
        final byte[] a1 = frame(40000, 1, "a1");
        final byte[] b1 = frame(40001, 1, "b1");
        final byte[] a2 = frame(40000, 3, "a2");
        primary(c, a1);
        primary(c, b1);
        primary(c, a2);
        copySent(c, 7, b1); // b1 matches; a1 of another connection, before it, is not matched yet
        assertThat(ledger.releases).hasSize(1);
        assertThat(ledger.releases.get(0)[0]).as("mark after b1").isEqualTo(2);
        copySent(c, 7, a1);
        assertThat(ledger.releases).hasSize(2);
        copySent(c, 7, a2);
        assertThat(ledger.releases).hasSize(3);
        assertThat(ledger.releases.get(1)[0]).isEqualTo(1);
        assertThat(ledger.releases.get(2)[0]).isEqualTo(3);
        assertThat(c.stats().matched()).isEqualTo(3);
        assertThat(c.stats().releasedByComparison()).isEqualTo(3);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void aDigestThatArrivesFirstWaitsForItsFrame()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        final byte[] f = frame(40000, "x");
        copySent(c, 1, f);
        primary(c, f);
        assertThat(ledger.releases).hasSize(1);
    }

    @Test
    void aDifferentAnswerAsksForACheckpointAndNothingIsComparedUntilItSeals()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(3);
        c.secondaryEra(3, System.nanoTime());
        primary(c, frame(40000, "value 41"));
        copySent(c, 3, frame(40000, "value 42"));
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
        assertThat(c.stats().lastCause()).startsWith("mismatch: tcp 198.18.10.10:80 > 198.18.10.100:40000");
        final byte[] later = frame(40001, "y");
        primary(c, later);
        copySent(c, 3, later);
        assertThat(ledger.releases).as("nothing leaves after a mismatch until the checkpoint").isEmpty();
        c.sealed(4);
        c.secondaryEra(4, System.nanoTime());
        primary(c, later);
        copySent(c, 4, later);
        assertThat(ledger.releases).hasSize(1);
    }

    @Test
    void tcpMatchesByByteStreamHoweverTheCopyCutsItIntoSegments()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        // the primary sends "Content: 42\n" and its FIN in one segment, the copy in three
        primary(c, tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA | 0x01, 500, 1, 5, null, "Content: 42\n".getBytes()));
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA, 900, 9, 6, null, "Content".getBytes()));
        assertThat(ledger.releases).isEmpty();
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 107, 7, PA, 900, 9, 6, null, ": 42\n".getBytes()));
        assertThat(ledger.releases).as("the bytes are there, the FIN is not yet").isEmpty();
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 112, 7, 0x11, 900, 9, 6, null, new byte[0]));
        assertThat(ledger.releases).hasSize(1);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void aTcpSegmentWaitsUntilTheCopyAcknowledgedAsMuch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, tcp(GUEST, CLIENT, 80, 40000, 100, 500, 0x10, 500, 1, 5, null, new byte[0]));
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 100, 400, 0x10, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).as("the copy has not received bytes 400..500 yet").isEmpty();
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 100, 500, 0x10, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).hasSize(1);
    }

    /** A segment of port 40000 from the guest, without payload. */
    private static byte[] bare(final int seq, final int ack, final int flags)
    {
        return tcp(GUEST, CLIENT, 80, 40000, seq, ack, flags, 500, 1, 5, null, new byte[0]);
    }

    private static byte[] answer(final int seq, final int ack, final String payload)
    {
        return tcp(GUEST, CLIENT, 80, 40000, seq, ack, PA | 0x01, 500, 1, 5, null, payload.getBytes());
    }

    @Test
    void aClientThatReusesItsPortWithinAnEraStartsANewConnectionOnBothSides()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        // the first connection on 198.18.10.100:40000, its client sequence numbers around 0x70000000
        client(c, tcp(CLIENT, GUEST, 40000, 80, 0x70000000, 0, 0x02, 500, 1, 5, null, new byte[0]));
        primary(c, bare(1000, 0x70000001, 0x12));
        copySent(c, 1, bare(7000, 0x70000001, 0x12)); // the copy's own ISN: SYNs are not rewritten
        primary(c, answer(1001, 0x70000020, "old answer"));
        copySent(c, 1, answer(1001, 0x70000020, "old answer"));
        assertThat(ledger.releases).hasSize(2);
        // the same pair again, a new connection: client numbers around 0x10000000, lower than the old ones
        client(c, tcp(CLIENT, GUEST, 40000, 80, 0x10000000, 0, 0x02, 500, 1, 5, null, new byte[0]));
        primary(c, bare(900_000, 0x10000001, 0x12));
        copySent(c, 1, bare(5000, 0x10000001, 0x12));
        assertThat(ledger.releases).hasSize(3);
        // the primary acknowledges the 28-byte request the copy has not acknowledged yet: the old connection's
        // higher acknowledgement must not count for it
        primary(c, bare(900_001, 0x1000001D, 0x10));
        assertThat(ledger.releases).as("the copy acknowledged only the SYN of this connection").hasSize(3);
        // the answer, far from where the old connection's bytes were: waits, is not compared with them
        primary(c, answer(900_001, 0x1000001D, "new answer"));
        assertThat(ledger.releases).hasSize(3);
        copySent(c, 1, bare(900_001, 0x1000001D, 0x10));
        copySent(c, 1, answer(900_001, 0x1000001D, "new answer"));
        assertThat(ledger.releases).hasSize(5);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void aSegmentOfAConnectionTheCopyHasMovedOnFromIsAMismatch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, bare(1000, 0x70000001, 0x12));
        copySent(c, 1, bare(7000, 0x70000001, 0x12));
        // the primary acknowledges the client's FIN; the copy never does, it answers a new SYN on the pair instead
        primary(c, bare(1001, 0x70000002, 0x10));
        copySent(c, 1, bare(5000, 0x10000001, 0x12));
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
        assertThat(c.stats().lastCause()).contains("newer connection");
        assertThat(ledger.releases).hasSize(1);
    }

    @Test
    void aFaultInComparingAsksForACheckpointInstead()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        c.failed(new IllegalStateException("a bug"));
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
        assertThat(c.stats().lastCause()).contains("comparison failed").contains("a bug");
    }

    /**
     * A connection over for the client: the guests answered "GET" with "ok" and FIN (server bytes 1001..1003, FIN at
     * 1003), the client acknowledged it all ({@code clientAckedFin}) and sent its FIN (client bytes 501..503, FIN at
     * 504: the sequence number after it is 505).
     */
    private Comparer finished(final boolean clientAckedFin)
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, answer(1001, 504, "ok"));
        copySent(c, 1, answer(1001, 504, "ok"));
        client(c, tcp(CLIENT, GUEST, 40000, 80, 504, clientAckedFin ? 1004 : 1003, 0x11, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).hasSize(1);
        return c;
    }

    @Test
    void aResetWhereTheCopyAcknowledgedTheClientsFinEndsAFinishedConnectionAlike()
    {
        final Comparer c = finished(true);
        copySent(c, 1, bare(1004, 505, 0x10)); // the copy's guest had a TIME_WAIT slot: it acknowledges the FIN
        primary(c, bare(1004, 0, 0x04)); // the primary's had none: its closed socket resets
        assertThat(ledger.releases).hasSize(2);
        assertThat(c.stats().teardownsTolerated()).isEqualTo(1);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void anAckOfTheClientsFinWhereTheCopyResetEndsAFinishedConnectionAlike()
    {
        final Comparer c = finished(true);
        primary(c, bare(1004, 505, 0x10));
        assertThat(ledger.releases).as("the copy has shown nothing yet").hasSize(1);
        copySent(c, 1, bare(1004, 0, 0x04));
        assertThat(ledger.releases).hasSize(2);
        assertThat(c.stats().teardownsTolerated()).isEqualTo(1);
    }

    @Test
    void aResetWaitsWhileTheClientLacksTheFin()
    {
        final Comparer c = finished(false);
        copySent(c, 1, bare(1004, 505, 0x10));
        primary(c, bare(1004, 0, 0x04));
        assertThat(ledger.releases).as("the client has not acknowledged the FIN: a reset may cost it the answer").hasSize(1);
        assertThat(c.stats().teardownsTolerated()).isZero();
    }

    @Test
    void aRetransmittedSynAckMatchesTheCopysOne()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, bare(1000, 501, 0x12));
        primary(c, bare(1000, 501, 0x12)); // the client resent its SYN: the primary answers again
        copySent(c, 1, bare(7000, 501, 0x12)); // the copy, whose listen queue dropped the first SYN, answers once
        assertThat(ledger.releases).hasSize(2);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void theStartOfASegmentTheCopySentAloneLeavesAloneAndTheRestWhenTheCopySendsIt() throws Exception
    {
        final Comparer c = new Comparer(ledger, 1_000_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        // the primary's guest sent header and body in one segment; the copy's sent the header, and holds the body
        // until the client acknowledges the header (Nagle), which the client never got
        primary(c, answer(1001, 29, "HEADERbody"));
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 1001, 29, PA, 500, 1, 5, null, "HEADER".getBytes()));
        assertThat(ledger.releases).isEmpty();
        ledger.timers.remove(0).run();
        assertThat(ledger.splits).as("not before the copy had the time to send the rest").isEmpty();
        Thread.sleep(Comparer.SPLIT_AFTER_NS / 1_000_000 + 10);
        ledger.timers.remove(0).run();
        assertThat(ledger.splits).hasSize(1);
        assertThat(new String(Segment.of(ledger.splits.get(0)[0], 0, ledger.splits.get(0)[0].length).payload()))
            .isEqualTo("HEADER");
        assertThat(c.stats().segmentsSplit()).isEqualTo(1);
        assertThat(ledger.releases).as("the rest waits for the copy's").isEmpty();
        // the client acknowledged the header: the copy sends the body and its FIN
        copySent(c, 1, answer(1007, 29, "body"));
        assertThat(ledger.releases).hasSize(1);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void aSegmentTheCopySentDifferentlyOrNotAtAllIsNotCut() throws Exception
    {
        final Comparer c = new Comparer(ledger, 1_000_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, answer(1001, 29, "HEADERbody"));
        primary(c, tcp(GUEST, CLIENT, 80, 40001, 1001, 29, PA, 500, 1, 5, null, "other".getBytes()));
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 1001, 28, PA, 500, 1, 5, null, "HEADER".getBytes()));
        Thread.sleep(Comparer.SPLIT_AFTER_NS / 1_000_000 + 10);
        ledger.timers.remove(0).run();
        assertThat(ledger.splits).as("the copy acknowledged less: the start would tell the client more").isEmpty();
        assertThat(ledger.asked).isEmpty();
    }

    /** The client's frame {@code f} arrives for the primary's guest. */
    private static void client(final Comparer c, final byte[] f)
    {
        c.inbound(ByteBuffer.wrap(f), 0, f.length);
    }

    @Test
    void aRetransmissionOfBytesTheClientAcknowledgedLeavesWithoutTheCopyResendingThem()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        // the copy already has the client's FIN (acknowledged 8), its answer went out in the last era
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 117, 8, 0x10, 500, 1, 5, null, new byte[0]));
        // the primary's retransmission timer fired first: its answer's last 16 bytes and FIN again
        primary(c, tcp(GUEST, CLIENT, 80, 40000, 100, 7, 0x19, 500, 1, 5, null, "0123456789abcdef".getBytes()));
        assertThat(ledger.releases).as("the copy never sends these bytes again in this era").isEmpty();
        client(c, tcp(CLIENT, GUEST, 40000, 80, 7, 116, 0x10, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).as("the client has bytes 100..115, not the FIN").isEmpty();
        client(c, tcp(CLIENT, GUEST, 40000, 80, 8, 117, 0x11, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).as("everything in it the client already acknowledged").hasSize(1);
        assertThat(c.stats().retransmissionsPassed()).isEqualTo(1);
        assertThat(ledger.asked).isEmpty();
    }

    @Test
    void aRetransmissionStillWaitsUntilTheCopyAcknowledgedWhatItAcknowledges()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        client(c, tcp(CLIENT, GUEST, 40000, 80, 9, 116, 0x10, 500, 1, 5, null, new byte[0]));
        // delivered bytes, but acknowledging client bytes up to 9 the copy has not acknowledged yet
        primary(c, tcp(GUEST, CLIENT, 80, 40000, 100, 9, 0x18, 500, 1, 5, null, "0123456789abcdef".getBytes()));
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 116, 7, 0x10, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).as("the copy lacks client bytes 7..8").isEmpty();
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 116, 9, 0x10, 500, 1, 5, null, new byte[0]));
        assertThat(ledger.releases).hasSize(1);
    }

    @Test
    void aMatchedSegmentOffersTheClientNoMoreWindowThanTheCopy()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        final byte[] ours = tcp(GUEST, CLIENT, 80, 40000, 100, 500, 0x10, 900, 1, 5, null, new byte[0]);
        final ByteBuffer held = ByteBuffer.allocateDirect(ours.length + 10);
        held.put(10, ours);
        c.primary(held, 10, ours.length, ++mark, System.nanoTime());
        // the copy's guest reads more slowly: it acknowledged as much with a smaller window, then once more
        final byte[] theirs = tcp(GUEST, CLIENT, 80, 40000, 100, 500, 0x10, 300, 1, 5, null, new byte[0]);
        final byte[] rec = record(theirs);
        c.tcp(1, rec, rec.length, 300, System.nanoTime());
        assertThat(ledger.releases).hasSize(1);
        final byte[] out = new byte[ours.length];
        held.get(10, out);
        assertThat(ByteBuffer.wrap(out).getShort(14 + 20 + 14) & 0xFFFF).as("window").isEqualTo(300);
        assertThat(TestFrames.tcpChecksumValid(out)).isTrue();
        assertThat(c.stats().windowsClamped()).isEqualTo(1);

        // a segment that offers no more than the copy is left as it is
        final byte[] small = tcp(GUEST, CLIENT, 80, 40000, 100, 500, 0x10, 200, 2, 5, null, new byte[0]);
        final ByteBuffer held2 = ByteBuffer.wrap(small.clone());
        c.primary(held2, 0, small.length, ++mark, System.nanoTime());
        assertThat(ledger.releases).hasSize(2);
        assertThat(held2.array()).isEqualTo(small);
        assertThat(c.stats().windowsClamped()).isEqualTo(1);
    }

    @Test
    void tcpBytesThatDifferAtTheSamePlaceAreAMismatch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA, 500, 1, 5, null, "value 4".getBytes()));
        primary(c, tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA, 500, 1, 5, null, "value 41".getBytes()));
        assertThat(ledger.asked).as("not waiting for the 8th byte: the 7th already differs").isEmpty();
        copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 107, 7, PA, 500, 1, 5, null, "2".getBytes()));
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
    }

    @Test
    void anHttpDateASecondApartMatchesWithinTheToleranceAndOnlyThen()
    {
        final String a = "HTTP/1.1 200 OK\r\nDate: Thu, 03 Dec 2026 18:59:59 GMT\r\n\r\ncounter 41\n";
        final String b = a.replace("18:59:59", "19:00:00");
        for (final long tolerance : new long[]{1000, 0})
        {
            final FakeLedger l = new FakeLedger();
            final Comparer c = new Comparer(l, 50_000_000L, true, tolerance);
            c.sealed(1);
            c.secondaryEra(1, System.nanoTime());
            copySent(c, 1, tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA, 500, 1, 5, null, b.getBytes()));
            final byte[] ours = tcp(GUEST, CLIENT, 80, 40000, 100, 7, PA, 500, 1, 5, null, a.getBytes());
            c.primary(ByteBuffer.wrap(ours), 0, ours.length, ++mark, System.nanoTime());
            if (tolerance > 0)
            {
                assertThat(l.releases).as("released by comparison").hasSize(1);
                assertThat(l.asked).isEmpty();
                assertThat(c.stats().datesTolerated()).isEqualTo(1);
            }
            else
            {
                assertThat(l.releases).as("control: byte for byte").isEmpty();
                assertThat(l.asked).containsExactly(Comparer.Cause.MISMATCH);
                assertThat(c.stats().datesTolerated()).isZero();
            }
        }
    }

    @Test
    void otherFramesMatchByDigestInOrderPerFlow()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        primary(c, udp(5000, "answer 1"));
        copySent(c, 1, udp(5000, "answer 1"));
        assertThat(ledger.releases).hasSize(1);
        primary(c, udp(5000, "answer 2"));
        copySent(c, 1, udp(5000, "answer 3"));
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
    }

    @Test
    void digestsOfAnotherEraNeverMatch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(5);
        c.secondaryEra(4, System.nanoTime()); // the secondary still runs the copy of checkpoint 4
        final byte[] f = frame(40000, "same bytes");
        primary(c, f);
        copySent(c, 4, f);
        assertThat(ledger.releases).isEmpty();
        assertThat(c.stats().staleDigests()).isEqualTo(1);
    }

    @Test
    void aFrameLeftUnmatchedPastTheTimeoutAsksForACheckpoint() throws Exception
    {
        final Comparer c = new Comparer(ledger, 1_000_000L, true);
        c.sealed(2);
        c.secondaryEra(2, System.nanoTime());
        primary(c, frame(40000, "never answered"));
        assertThat(ledger.timers).isNotEmpty();
        Thread.sleep(5);
        ledger.timers.remove(0).run();
        assertThat(ledger.asked).containsExactly(Comparer.Cause.COMPARE_TIMEOUT);
        assertThat(c.stats().lastCause()).as("what the copy showed of that connection")
            .endsWith("; the copy acknowledged nothing yet, sent none of its 14 bytes");
    }

    @Test
    void withoutReleaseMatchesAreCountedButNothingLeavesEarly()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, false);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        final byte[] f = frame(40000, "x");
        primary(c, f);
        copySent(c, 1, f);
        assertThat(c.stats().matched()).isEqualTo(1);
        assertThat(ledger.releases).isEmpty();
    }

    @Test
    void matchedFramesWaitBehindASealedEpoch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        ledger.sealedWaiting = true;
        final byte[] f = frame(40000, "x");
        primary(c, f);
        copySent(c, 1, f);
        assertThat(ledger.releases).isEmpty();
        ledger.sealedWaiting = false;
        c.released();
        assertThat(ledger.releases).hasSize(1);
    }
}
