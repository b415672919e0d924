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

        @Override
        public boolean canReleaseOpen()
        {
            return !sealedWaiting;
        }

        @Override
        public void releaseOpen(final long mark, final long frames, final long bytes)
        {
            releases.add(new long[]{mark, frames, bytes});
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
        return tcp(GUEST, CLIENT, 80, port, 1, 2, PA, 500, 1, 5, null, payload.getBytes());
    }

    private void primary(final Comparer c, final byte[] f)
    {
        c.primary(ByteBuffer.wrap(f), 0, f.length, ++mark, System.nanoTime());
    }

    private byte[] digestRecord(final byte[] f)
    {
        final byte[] rec = new byte[FramesCodec.DIGEST_LENGTH];
        final long flow = FrameDigest.flow(f, 0, f.length);
        for (int i = 0; i < 8; i++)
        {
            rec[i] = (byte)(flow >>> (56 - 8 * i));
        }
        digester.digest(f, 0, f.length, rec, 8);
        return rec;
    }

    @Test
    void matchedFramesLeaveInOrderPerNicWhateverOrderTheFlowsInterleaveIn()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(7);
        c.secondaryEra(7, System.nanoTime());
        final byte[] a1 = frame(40000, "a1");
        final byte[] b1 = frame(40001, "b1");
        final byte[] a2 = frame(40000, "a2");
        primary(c, a1);
        primary(c, b1);
        primary(c, a2);
        c.digest(7, digestRecord(b1), System.nanoTime()); // b1 matches, but a1 before it is not matched yet
        assertThat(ledger.releases).isEmpty();
        c.digest(7, digestRecord(a1), System.nanoTime());
        assertThat(ledger.releases).hasSize(1);
        assertThat(ledger.releases.get(0)[0]).as("mark after b1").isEqualTo(2);
        assertThat(ledger.releases.get(0)[1]).isEqualTo(2);
        c.digest(7, digestRecord(a2), System.nanoTime());
        assertThat(ledger.releases.get(1)[0]).isEqualTo(3);
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
        c.digest(1, digestRecord(f), System.nanoTime());
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
        c.digest(3, digestRecord(frame(40000, "value 42")), System.nanoTime());
        assertThat(ledger.asked).containsExactly(Comparer.Cause.MISMATCH);
        assertThat(c.stats().lastCause()).startsWith("mismatch: tcp 198.18.10.10:80 > 198.18.10.100:40000");
        final byte[] later = frame(40001, "y");
        primary(c, later);
        c.digest(3, digestRecord(later), System.nanoTime());
        assertThat(ledger.releases).as("nothing leaves after a mismatch until the checkpoint").isEmpty();
        c.sealed(4);
        c.secondaryEra(4, System.nanoTime());
        primary(c, later);
        c.digest(4, digestRecord(later), System.nanoTime());
        assertThat(ledger.releases).hasSize(1);
    }

    @Test
    void digestsOfAnotherEraNeverMatch()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, true);
        c.sealed(5);
        c.secondaryEra(4, System.nanoTime()); // the secondary still runs the copy of checkpoint 4
        final byte[] f = frame(40000, "same bytes");
        primary(c, f);
        c.digest(4, digestRecord(f), System.nanoTime());
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
    }

    @Test
    void withoutReleaseMatchesAreCountedButNothingLeavesEarly()
    {
        final Comparer c = new Comparer(ledger, 50_000_000L, false);
        c.sealed(1);
        c.secondaryEra(1, System.nanoTime());
        final byte[] f = frame(40000, "x");
        primary(c, f);
        c.digest(1, digestRecord(f), System.nanoTime());
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
        c.digest(1, digestRecord(f), System.nanoTime());
        assertThat(ledger.releases).isEmpty();
        ledger.sealedWaiting = false;
        c.released();
        assertThat(ledger.releases).hasSize(1);
    }
}
