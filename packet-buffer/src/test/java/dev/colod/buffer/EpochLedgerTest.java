package dev.colod.buffer;

import io.netty.channel.IoEventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.colod.buffer.hybrid.InboundSink;
import dev.colod.buffer.hybrid.TestFrames;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The ledger's bookkeeping over an in-memory backend whose frames are numbers: which frames an epoch holds,
 * what each transition lets go or drops, and what it counts. The real backends run the shared contract.
 */
class EpochLedgerTest
{
    private static MultiThreadIoEventLoopGroup group;

    @BeforeAll
    static void startLoop()
    {
        group = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
    }

    @AfterAll
    static void stopLoop()
    {
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS).syncUninterruptibly();
    }

    /** Frames are sequence numbers; a mark is the number of frames ever held. */
    private static final class Numbers implements Backend
    {
        final List<Long> queue = new ArrayList<>();
        final List<Long> out = new ArrayList<>();
        final List<Long> dropped = new ArrayList<>();
        long next;
        FrameLedger ledger;

        /** The guest sends one frame of {@code bytes} (on the loop, as a backend does). */
        void send(final int bytes)
        {
            ledger.loop().call(() ->
            {
                switch (ledger.mode())
                {
                    case HOLD:
                        queue.add(next++);
                        ledger.held(bytes, System.nanoTime());
                        break;
                    case PASS_THROUGH:
                        out.add(next++);
                        ledger.passed();
                        break;
                    default:
                        next++;
                        ledger.dropped(FrameLedger.Drop.FENCED);
                }
            });
        }

        @Override
        public long mark()
        {
            return next;
        }

        @Override
        public int letGo(final long mark)
        {
            while (!queue.isEmpty() && queue.get(0) < mark)
            {
                out.add(queue.remove(0));
            }
            return 0;
        }

        /** The guest sends the frame {@code f}, held with its bytes for comparison (hybrid mode). */
        void send(final byte[] f)
        {
            ledger.loop().call(() ->
            {
                queue.add(next++);
                ledger.heldFrame(ByteBuffer.wrap(f), 0, f.length, next, System.nanoTime());
            });
        }

        @Override
        public int letGoOne(final long seq)
        {
            queue.remove(seq);
            out.add(seq);
            return 0;
        }

        @Override
        public void drop(final long mark)
        {
            while (!queue.isEmpty() && queue.get(0) < mark)
            {
                dropped.add(queue.remove(0));
            }
        }

        @Override
        public void close()
        {
        }
    }

    private static Numbers backend;

    private static EpochLedger ledger(final BufferLimits limits) throws Exception
    {
        backend = new Numbers();
        final EpochLedger l = EpochLedger.open("n0", (IoEventLoop)group.next(), limits.conclude(), x ->
        {
            backend.ledger = x;
            return backend;
        });
        return l;
    }

    /** Waits for posted releases: a call runs after everything posted before it. */
    private static void drain(final EpochLedger l)
    {
        l.loop().call(() -> { });
    }

    @Test
    void aFrameReleasedByComparisonLeavesOnceAndIsCountedOnce() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits());
        l.compareWith(0, new InboundSink()
        {
            @Override
            public void inbound(final int nic, final ByteBuffer buf, final int off, final int len)
            {
            }

            @Override
            public void era(final int nic, final long epoch)
            {
            }
        }, 500_000_000L, true, 0);
        l.hold(1);
        l.seal(1); // era 1: what the guest sends now is compared with the copy of checkpoint 1
        l.release(1); // (nothing waits behind a sealed epoch once it is acknowledged)
        l.mirrorSide().secondaryEra(1, System.nanoTime());
        final byte[] a = TestFrames.tcp(TestFrames.GUEST, TestFrames.CLIENT, 80, 40000, 1, 2, 0x18, 500, 1, 5, null,
            "first".getBytes());
        final byte[] b = TestFrames.tcp(TestFrames.GUEST, TestFrames.CLIENT, 80, 40001, 1, 2, 0x18, 500, 1, 5, null,
            "second".getBytes());
        backend.send(a);
        backend.send(b);
        final byte[] rec = TestFrames.tcpRecord(b);
        l.mirrorSide().tcp(1, rec, rec.length, -1, System.nanoTime());
        drain(l);
        assertThat(backend.out).as("b matched; a, of another connection, waits").containsExactly(1L);
        NicStats s = l.stats();
        assertThat(s.releasedFrames()).isEqualTo(1);
        assertThat(s.releasedBytes()).isEqualTo(b.length);
        assertThat(s.heldFrames()).isEqualTo(1);
        assertThat(s.heldBytes()).isEqualTo(a.length);
        l.seal(2); // a never matched: it leaves with its checkpoint
        l.release(2);
        drain(l);
        assertThat(backend.out).containsExactly(1L, 0L);
        s = l.stats();
        assertThat(s.releasedFrames()).isEqualTo(2);
        assertThat(s.releasedBytes()).isEqualTo(a.length + b.length);
        assertThat(s.heldFrames()).isZero();
        assertThat(s.heldBytes()).isZero();
    }

    @Test
    void releasesExactlyTheSealedEpochAndCountsIt() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits());
        l.hold(1);
        for (int i = 0; i < 10; i++)
        {
            backend.send(100);
        }
        l.seal(1);
        for (int i = 0; i < 5; i++)
        {
            backend.send(60);
        }
        assertThat(l.stats().epochs()).containsExactly(new NicStats.EpochStats(1, 10, 1000),
            new NicStats.EpochStats(-1, 5, 300));
        l.release(1);
        drain(l);
        assertThat(backend.out).containsExactly(0L, 1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L);
        final NicStats s = l.stats();
        assertThat(s.heldFrames()).isEqualTo(5);
        assertThat(s.heldBytes()).isEqualTo(300);
        assertThat(s.releasedFrames()).isEqualTo(10);
        assertThat(s.releasedBytes()).isEqualTo(1000);
        assertThat(s.oldestHeldAgeNs()).isPositive();
        assertThat(l.lastReleaseFrames()).isEqualTo(10);
    }

    @Test
    void releasingANewerEpochReleasesOlderOnesFirstAndEmptyEpochsCostNothing() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits());
        l.hold(1);
        backend.send(64);
        l.seal(1);
        l.seal(2); // an empty epoch
        backend.send(64);
        l.seal(3);
        backend.send(64);
        l.release(3);
        drain(l);
        assertThat(backend.out).containsExactly(0L, 1L);
        assertThat(l.stats().heldFrames()).isEqualTo(1);
        assertThat(l.stats().epochs()).containsExactly(new NicStats.EpochStats(-1, 1, 64));
    }

    @Test
    void passThroughLetsSealedAndOpenEpochsOutThenPasses() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits());
        l.hold(1);
        backend.send(64);
        l.seal(1);
        backend.send(64);
        l.passThrough("test");
        backend.send(64);
        assertThat(backend.out).containsExactly(0L, 1L, 2L);
        final NicStats s = l.stats();
        assertThat(s.mode()).isEqualTo("pass-through");
        assertThat(s.releasedFrames()).isEqualTo(2);
        assertThat(s.passedFrames()).isEqualTo(1);
        assertThat(s.heldFrames()).isZero();
        assertThat(s.epochs()).containsExactly(new NicStats.EpochStats(-1, 0, 0));
    }

    @Test
    void fenceDropsEverythingHeldAndLaterAndALateReleaseLetsNothingOut() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits());
        l.hold(1);
        backend.send(64);
        l.seal(1);
        backend.send(64);
        l.fence("test");
        l.release(1);
        backend.send(64);
        drain(l);
        assertThat(backend.out).isEmpty();
        assertThat(backend.dropped).containsExactly(0L, 1L);
        assertThat(l.stats().droppedFenced()).isEqualTo(3);
        assertThat(l.stats().mode()).isEqualTo("fenced");
    }

    @Test
    void highWaterMarkAsksOncePerEpochUntilTheSeal() throws Exception
    {
        final EpochLedger l = ledger(new BufferLimits().maxFrames(10).highWaterPercent(50));
        l.hold(1);
        for (int i = 0; i < 4; i++)
        {
            backend.send(64);
        }
        assertThat(l.wantsCheckpoint()).isFalse();
        backend.send(64);
        assertThat(l.wantsCheckpoint()).isTrue();
        backend.send(64);
        assertThat(l.stats().earlyCheckpointRequests()).isEqualTo(1);
        l.seal(1);
        assertThat(l.wantsCheckpoint()).isFalse();
        l.release(1);
        drain(l);
        for (int i = 0; i < 5; i++)
        {
            backend.send(64);
        }
        assertThat(l.wantsCheckpoint()).isTrue();
        assertThat(l.stats().earlyCheckpointRequests()).isEqualTo(2);
    }
}
