package dev.colod.core.protocol;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.nio.ByteBuffer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ColoChannelTest
{
    private static ColoChannel reading(final byte[] bytes)
    {
        return new ColoChannel(new ByteArrayInputStream(bytes), new ByteArrayOutputStream(), "test-peer", ProtocolTap.NONE);
    }

    private static byte[] be32(final int... ids)
    {
        final ByteBuffer b = ByteBuffer.allocate(4 * ids.length);
        for (final int id : ids)
        {
            b.putInt(id);
        }
        return b.array();
    }

    @Test
    void writesEachCommandAsItsBigEndian32BitId() throws Exception
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        final ColoChannel ch = new ColoChannel(new ByteArrayInputStream(new byte[0]), out, "p", ProtocolTap.NONE);
        for (final ColoCommand c : ColoCommand.values())
        {
            if (c != ColoCommand.VMSTATE_SIZE)
            {
                ch.put(c);
            }
        }
        ch.putStateSize(0x0102030405060708L);
        assertThat(out.toByteArray()).isEqualTo(ByteBuffer.allocate(6 * 4 + 12)
            .putInt(0).putInt(1).putInt(2).putInt(3).putInt(5).putInt(6).putInt(4).putLong(0x0102030405060708L).array());
    }

    @Test
    void decodesTheSevenSeedIds() throws Exception
    {
        final ColoChannel ch = reading(be32(0, 1, 2, 3, 4, 5, 6));
        for (final ColoCommand c : ColoCommand.values())
        {
            assertThat(ch.get()).isEqualTo(c);
            assertThat(c.id()).isEqualTo(c.ordinal());
        }
    }

    @Test
    void refusesIdsOutsideZeroToSixAsUnsignedIncludingNegativeInts()
    {
        assertThatThrownBy(() -> reading(be32(7)).get()).isInstanceOf(ProtocolException.class)
            .hasMessage("invalid command 7 (0x7): valid ids are 0..6");
        assertThatThrownBy(() -> reading(be32(-1)).get()).isInstanceOf(ProtocolException.class)
            .hasMessage("invalid command 4294967295 (0xffffffff): valid ids are 0..6");
        assertThatThrownBy(() -> reading(be32(Integer.MIN_VALUE)).get())
            .hasMessageContaining("invalid command 2147483648");
    }

    @Test
    void unexpectedCommandNamesReceivedThenExpected()
    {
        assertThatThrownBy(() -> reading(be32(5)).expect(ColoCommand.VMSTATE_SEND))
            .isInstanceOf(ProtocolException.class)
            .hasMessage("unexpected command 5 (vmstate-received), expected 3 (vmstate-send)");
    }

    @Test
    void refusesStateSizeAboveLimitBeforeAnyoneAllocates()
    {
        final byte[] wire = ByteBuffer.allocate(12).putInt(4).putLong(1025).array();
        final ColoChannel ch = reading(wire);
        ch.checkpointId(9);
        assertThatThrownBy(() -> ch.expectStateSize(1024)).isInstanceOf(ProtocolException.class)
            .hasMessage("vmstate-size 1025 bytes for checkpoint 9 exceeds the limit of 1024 bytes")
            .extracting(e -> ((ProtocolException)e).field()).isEqualTo("vmstate-size");
        final byte[] negative = ByteBuffer.allocate(12).putInt(4).putLong(-1L).array();
        assertThatThrownBy(() -> reading(negative).expectStateSize(Long.MAX_VALUE))
            .hasMessageContaining("vmstate-size 18446744073709551615 bytes");
    }

    @Test
    void truncatedStreamSaysWhatWasBeingRead()
    {
        assertThatThrownBy(() -> reading(new byte[]{0, 0}).get()).isInstanceOf(EOFException.class)
            .hasMessageContaining("reading command (2 of 4 bytes)");
    }

    @Test
    void helloRoundTripsAndRefusalsNameTheField() throws Exception
    {
        final Hello h = new Hello(Hello.CHANNEL_CONTROL, Hello.MODE_SPECULATIVE, 0, 1 << 20, 100, 1000, 42, "web-1", new byte[0]);
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        h.writeTo(out);
        final byte[] wire = out.toByteArray();
        assertThat(wire).hasSize(Hello.FIXED_BYTES + 5);
        final Hello back = Hello.readFrom(new ByteArrayInputStream(wire));
        assertThat(back.vmName()).isEqualTo("web-1");
        assertThat(back.mode()).isEqualTo(Hello.MODE_SPECULATIVE);
        assertThat(back.maxStateBytes()).isEqualTo(1 << 20);
        assertThat(back.token()).isEqualTo(42);

        final byte[] badVersion = wire.clone();
        badVersion[5] = 9;
        assertThatThrownBy(() -> Hello.readFrom(new ByteArrayInputStream(badVersion)))
            .hasMessage("unsupported hello.version 9, this side speaks 2");
        final byte[] badMagic = wire.clone();
        badMagic[0] = 'X';
        assertThatThrownBy(() -> Hello.readFrom(new ByteArrayInputStream(badMagic))).hasMessageContaining("hello.magic");
    }
}
