package dev.colod.buffer.hybrid;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Records of the frames channel (PROTOCOL.md section 10): round trip and refusals naming what is wrong. */
class FramesCodecTest
{
    @Test
    void recordsRoundTrip() throws IOException
    {
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        final DataOutputStream out = new DataOutputStream(bytes);
        FramesCodec.write(out, FramesCodec.INBOUND, 1, new byte[]{9, 8, 7}, 0, 3);
        FramesCodec.writeEra(out, FramesCodec.ALL_NICS, 42);
        final DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes.toByteArray()));
        final FramesCodec.Record r = new FramesCodec.Record();
        assertThat(FramesCodec.read(in, r, "peer")).isTrue();
        assertThat(r.kind).isEqualTo(FramesCodec.INBOUND);
        assertThat(r.nic).isEqualTo(1);
        assertThat(r.length).isEqualTo(3);
        assertThat(r.body[2]).isEqualTo((byte)7);
        assertThat(FramesCodec.read(in, r, "peer")).isTrue();
        assertThat(r.kind).isEqualTo(FramesCodec.ERA);
        assertThat(r.nic).isEqualTo(255);
        assertThat(r.be64()).isEqualTo(42);
        assertThat(FramesCodec.read(in, r, "peer")).as("clean end").isFalse();
    }

    @Test
    void badRecordsAreRefusedByName()
    {
        final FramesCodec.Record r = new FramesCodec.Record();
        assertThatThrownBy(() -> FramesCodec.read(stream(7, 0, 0, 0), r, "198.18.0.1:7600"))
            .hasMessage("frames channel from 198.18.0.1:7600: unknown record kind 7");
        assertThatThrownBy(() -> FramesCodec.read(stream(FramesCodec.DIGEST, 0, 0, 12), r, "p"))
            .hasMessage("frames channel from p: record kind 2 has length 12, expected 40");
        assertThatThrownBy(() -> FramesCodec.read(stream(FramesCodec.TCP, 0, 0, 16), r, "p"))
            .hasMessage("frames channel from p: record kind 4 has length 16, expected at least 17");
        assertThatThrownBy(() -> FramesCodec.read(stream(FramesCodec.TCP_WINDOW, 0, 0, 18), r, "p"))
            .hasMessage("frames channel from p: record kind 5 has length 18, expected at least 19");
        assertThatThrownBy(() -> FramesCodec.read(stream(FramesCodec.INBOUND, 0, 0, 5, 1, 2), r, "p"))
            .isInstanceOf(EOFException.class);
    }

    private static DataInputStream stream(final int... b)
    {
        final byte[] bytes = new byte[b.length];
        for (int i = 0; i < b.length; i++)
        {
            bytes[i] = (byte)b[i];
        }
        return new DataInputStream(new ByteArrayInputStream(bytes));
    }
}
