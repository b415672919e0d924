package dev.colod.buffer.tap;

import dev.colod.buffer.BufferLimits;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class EpochBufferTest
{
    /** Collects written frames as the first 4 bytes (sequence numbers). */
    private static final class Out implements EpochBuffer.FrameWriter
    {
        final List<Integer> seqs = new ArrayList<>();
        final List<Integer> lengths = new ArrayList<>();

        @Override
        public boolean write(final ByteBuffer arena, final int offset, final int length)
        {
            seqs.add(arena.getInt(offset));
            lengths.add(length);
            return true;
        }
    }

    private static boolean put(final EpochBuffer b, final int seq, final int len)
    {
        final int at = b.reserve();
        if (at < 0)
        {
            return false;
        }
        b.arena().putInt(at, seq);
        return b.append(at, len);
    }

    @Test
    void writesExactlyTheFramesBeforeTheMarkInArrivalOrder()
    {
        final EpochBuffer b = new EpochBuffer(new BufferLimits().conclude());
        final Out out = new Out();
        for (int i = 0; i < 10; i++)
        {
            put(b, i, 100 + i);
        }
        final long mark = b.tail();
        for (int i = 10; i < 15; i++)
        {
            put(b, i, 60);
        }
        assertThat(b.writeUpTo(mark, out)).isZero();
        assertThat(out.seqs).containsExactly(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        assertThat(out.lengths.get(3)).isEqualTo(103);
        assertThat(b.heldFrames()).isEqualTo(5);
        assertThat(b.heldBytes()).isEqualTo(300);
        b.writeUpTo(b.tail(), out);
        assertThat(out.seqs).hasSize(15).isSorted();
        assertThat(b.heldFrames()).isZero();
    }

    @Test
    void wrapsAroundTheArenaManyTimesKeepingOrderAndContent()
    {
        final BufferLimits limits = new BufferLimits().maxBytes(64 * 1024).maxFrameBytes(2048).maxFrames(1000).conclude();
        final EpochBuffer b = new EpochBuffer(limits);
        final Out out = new Out();
        int seq = 0;
        int expected = 0;
        for (int epoch = 1; epoch <= 500; epoch++)
        {
            final int n = 1 + (epoch * 7) % 40;
            for (int i = 0; i < n; i++)
            {
                assertThat(put(b, seq, 64 + (seq * 131) % 1400)).isTrue();
                seq++;
            }
            b.writeUpTo(b.tail(), out);
            for (; expected < seq; expected++)
            {
                assertThat(out.seqs.get(expected)).isEqualTo(expected);
                assertThat(out.lengths.get(expected)).isEqualTo(64 + (expected * 131) % 1400);
            }
        }
    }

    @Test
    void refusesAtTheFrameLimitAndTheByteLimit()
    {
        final EpochBuffer frames = new EpochBuffer(new BufferLimits().maxFrames(3).conclude());
        assertThat(put(frames, 1, 64) && put(frames, 2, 64) && put(frames, 3, 64)).isTrue();
        assertThat(frames.reserve()).isNegative();
        assertThat(frames.atFrameLimit()).isTrue();

        final EpochBuffer bytes = new EpochBuffer(new BufferLimits().maxBytes(10_000).maxFrameBytes(2000).conclude());
        int n = 0;
        while (put(bytes, n, 1500) && n < 100)
        {
            n++;
            assertThat(bytes.heldBytes()).isLessThanOrEqualTo(10_000);
        }
        assertThat(bytes.heldBytes()).isLessThanOrEqualTo(10_000);
        assertThat(n).isEqualTo(6);
        assertThat(bytes.atFrameLimit()).isFalse();
    }

    @Test
    void dropForgetsFramesUnwritten()
    {
        final EpochBuffer b = new EpochBuffer(new BufferLimits().conclude());
        final Out out = new Out();
        put(b, 1, 64);
        put(b, 2, 64);
        b.dropUpTo(b.tail());
        put(b, 3, 64);
        b.writeUpTo(b.tail(), out);
        assertThat(out.seqs).containsExactly(3);
        assertThat(b.heldBytes()).isZero();
    }

    @Test
    void aFrameWrittenAheadIsNotWrittenAgainAndItsSpaceIsFreeOnceTheFramesBeforeItLeft()
    {
        final EpochBuffer b = new EpochBuffer(new BufferLimits().conclude());
        final Out out = new Out();
        for (int i = 0; i < 5; i++)
        {
            put(b, i, 100);
        }
        assertThat(b.writeOne(2, out)).isTrue();
        assertThat(b.writeOne(3, out)).isTrue();
        assertThat(out.seqs).containsExactly(2, 3);
        assertThat(b.heldFrames()).as("frames 0 and 1 still hold their space before them").isEqualTo(5);
        assertThat(b.writeOne(0, out)).isTrue();
        assertThat(b.heldFrames()).as("the head passed 0, stopped at 1").isEqualTo(4);
        assertThat(b.writeUpTo(b.tail(), out)).isZero();
        assertThat(out.seqs).containsExactly(2, 3, 0, 1, 4);
        assertThat(b.heldFrames()).isZero();
        assertThat(b.heldBytes()).isZero();
        put(b, 5, 100);
        b.writeOne(5, out);
        assertThat(b.heldFrames()).as("written at the head: gone at once").isZero();
        assertThatThrownBy(() -> b.writeOne(5, out))
            .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("frame 5 is not held");
    }

    @Test
    void aHeldFrameMayBeReplacedByAShorterOne()
    {
        final EpochBuffer b = new EpochBuffer(new BufferLimits().conclude());
        final Out out = new Out();
        put(b, 1, 100);
        put(b, 2, 100);
        final byte[] shorter = new byte[60];
        ByteBuffer.wrap(shorter).putInt(0, 7);
        b.replace(0, shorter);
        assertThat(b.heldBytes()).isEqualTo(160);
        assertThatThrownBy(() -> b.replace(1, new byte[101])).isInstanceOf(IllegalArgumentException.class);
        b.writeUpTo(b.tail(), out);
        assertThat(out.seqs).containsExactly(7, 2);
        assertThat(out.lengths).containsExactly(60, 100);
        assertThat(b.heldBytes()).isZero();
    }
}
