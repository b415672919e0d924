package dev.colod.core.protocol;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The BYE frame's reason text (docs/PROTOCOL.md, section 5): carried, cut, bounded and made one printable line. */
class HeartbeatFrameTest
{
    private static HeartbeatFrame roundTrip(final HeartbeatFrame f) throws IOException
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        f.writeTo(out);
        return HeartbeatFrame.readFrom(new ByteArrayInputStream(out.toByteArray()), new byte[HeartbeatFrame.SIZE]);
    }

    @Test
    void aByeCarriesItsReasonAndABeatItsCheckpoint() throws IOException
    {
        final HeartbeatFrame bye = roundTrip(HeartbeatFrame.bye(HeartbeatFrame.BYE_ERROR,
            "staging area /var/lib/colod/web1 full: needs 268435456 bytes, 1024 free"));
        assertThat(bye.type()).isEqualTo(HeartbeatFrame.BYE);
        assertThat(bye.arg()).isEqualTo(HeartbeatFrame.BYE_ERROR);
        assertThat(bye.text()).isEqualTo("staging area /var/lib/colod/web1 full: needs 268435456 bytes, 1024 free");
        final HeartbeatFrame beat = roundTrip(new HeartbeatFrame(HeartbeatFrame.BEAT, 0, 77));
        assertThat(beat.value()).isEqualTo(77);
        assertThat(beat.text()).isEmpty();
    }

    @Test
    void aByeOfAnOlderBuildHasNoText() throws IOException
    {
        final byte[] old = {0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
        final HeartbeatFrame bye = HeartbeatFrame.readFrom(new ByteArrayInputStream(old), new byte[HeartbeatFrame.SIZE]);
        assertThat(bye.arg()).isEqualTo(HeartbeatFrame.BYE_ERROR);
        assertThat(bye.text()).isEmpty();
    }

    @Test
    void aLongReasonIsCutOnACharacterBoundary() throws IOException
    {
        final String euro = "\u20ac".repeat(600); // 3 bytes each: 1800 bytes
        final HeartbeatFrame bye = roundTrip(HeartbeatFrame.bye(HeartbeatFrame.BYE_ERROR, euro));
        assertThat(bye.text()).isEqualTo("\u20ac".repeat(341));
        final String emoji = "\ud83d\ude00".repeat(400); // 4 bytes each, surrogate pairs
        assertThat(roundTrip(HeartbeatFrame.bye(HeartbeatFrame.BYE_ERROR, emoji)).text())
            .isEqualTo("\ud83d\ude00".repeat(256));
    }

    @Test
    void aReasonLengthAboveTheLimitIsAProtocolError()
    {
        final byte[] bad = {0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 1};
        assertThatThrownBy(() -> HeartbeatFrame.readFrom(new ByteArrayInputStream(bad), new byte[HeartbeatFrame.SIZE]))
            .isInstanceOf(ProtocolException.class).hasMessage("bad heartbeat.bye-length 1025, expected 0..1024");
    }

    @Test
    void aReasonIsOneLineOfText() throws IOException
    {
        final byte[] head = {0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 19};
        final byte[] text = "full\nFAKE log line\u001b".getBytes(StandardCharsets.UTF_8);
        final byte[] all = new byte[head.length + text.length];
        System.arraycopy(head, 0, all, 0, head.length);
        System.arraycopy(text, 0, all, head.length, text.length);
        assertThat(HeartbeatFrame.readFrom(new ByteArrayInputStream(all), new byte[HeartbeatFrame.SIZE]).text())
            .isEqualTo("full?FAKE log line?");
    }

    @Test
    void aTruncatedReasonIsAnError()
    {
        final byte[] cut = {0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 'a', 'b'};
        assertThatThrownBy(() -> HeartbeatFrame.readFrom(new ByteArrayInputStream(cut), new byte[HeartbeatFrame.SIZE]))
            .isInstanceOf(IOException.class);
    }
}
