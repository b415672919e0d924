package dev.colod.agent.vm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.zip.CRC32C;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The secondary's image: a live base goes straight into RAM and is not resumable until a checkpoint completes it. */
class StandbyImageTest
{
    private static final int PAGE = CheckpointFormat.PAGE;
    private static final long RAM = 64L * PAGE;

    @TempDir
    Path dir;

    private static final StandbyImage.Activation NONE = (image, id) -> { };

    /** A state stream with the given pages (each page filled with its fill byte). */
    private static byte[] stream(final int flags, final byte[] device, final long[] pages, final byte[] fill)
    {
        final ByteBuffer b = ByteBuffer.allocate((int)CheckpointFormat.size(device.length, pages.length));
        b.putInt(CheckpointFormat.MAGIC).putShort((short)CheckpointFormat.VERSION).putShort((short)flags).putLong(RAM)
            .putInt(PAGE).putInt(0).putLong(device.length).put(device).putLong(pages.length);
        for (int i = 0; i < pages.length; i++)
        {
            b.putLong(pages[i]);
            final byte[] p = new byte[PAGE];
            Arrays.fill(p, fill[i]);
            b.put(p);
        }
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, b.position());
        b.putInt((int)crc.getValue());
        return b.array();
    }

    private static byte[] base(final byte fill)
    {
        final long[] pages = new long[(int)(RAM / PAGE)];
        final byte[] f = new byte[pages.length];
        for (int i = 0; i < pages.length; i++)
        {
            pages[i] = i;
            f[i] = fill;
        }
        return stream(CheckpointFormat.FLAG_FULL | CheckpointFormat.FLAG_BASE, new byte[0], pages, f);
    }

    /** Feeds {@code bytes} in awkward pieces, as the network delivers them. */
    private static void receive(final StandbyImage image, final long id, final byte[] bytes, final int upTo) throws IOException
    {
        image.stage(id, bytes.length);
        int at = 0;
        int step = 7;
        while (at < upTo)
        {
            final int n = Math.min(step, upTo - at);
            image.stageWrite(bytes, at, n);
            at += n;
            step = step * 3 % 9001 + 1;
        }
    }

    private byte pageByte(final StandbyImage image, final int page) throws IOException
    {
        return Files.readAllBytes(image.ramFile())[page * PAGE + 17];
    }

    @Test
    void aBaseGoesIntoRamAtOnceAndBecomesResumableOnlyWithTheNextCheckpoint() throws Exception
    {
        final StandbyImage image = new StandbyImage(dir, "t", NONE);
        final byte[] b = base((byte)5);
        receive(image, 1, b, b.length);
        assertThat(Files.exists(dir.resolve("staging.ckpt"))).as("no staging copy of all of RAM").isFalse();
        image.commit(1);
        assertThat(image.lastCommitted()).isEqualTo(1);
        assertThat(image.resumable()).isFalse();
        assertThat(pageByte(image, 63)).isEqualTo((byte)5);

        final byte[] delta = stream(0, "dev".getBytes(), new long[]{3}, new byte[]{9});
        receive(image, 2, delta, delta.length);
        image.commit(2);
        assertThat(image.resumable()).isTrue();
        assertThat(pageByte(image, 3)).isEqualTo((byte)9);
        assertThat(Files.readString(image.deviceStateFile())).isEqualTo("dev");
        assertThat(new StandbyImage(dir, "t", NONE).resumable()).as("after a restart too").isTrue();
    }

    @Test
    void aCutOrCorruptBaseLeavesAnImageThatIsNotResumableEvenAfterARestart() throws Exception
    {
        final StandbyImage image = new StandbyImage(dir, "t", NONE);
        final byte[] delta = stream(CheckpointFormat.FLAG_FULL, "dev".getBytes(), new long[]{0}, new byte[]{1});
        receive(image, 1, delta, delta.length);
        image.commit(1);
        assertThat(image.resumable()).isTrue();

        final byte[] b = base((byte)7);
        receive(image, 2, b, b.length / 2); // the primary died half way
        image.discard(2);
        assertThat(image.resumable()).as("half its RAM is the new base").isFalse();
        assertThat(new StandbyImage(dir, "t", NONE).resumable()).isFalse();

        final byte[] bad = base((byte)8);
        bad[bad.length - 1] ^= 1;
        receive(image, 3, bad, bad.length);
        assertThatThrownBy(() -> image.commit(3)).isInstanceOf(IOException.class).hasMessageContaining("CRC mismatch");
        assertThat(image.resumable()).isFalse();
    }

    @Test
    void aRegularCheckpointIsStillCommittedWholeOrNotAtAll() throws Exception
    {
        final StandbyImage image = new StandbyImage(dir, "t", NONE);
        final byte[] full = stream(CheckpointFormat.FLAG_FULL, "d1".getBytes(), new long[]{0, 1}, new byte[]{1, 2});
        receive(image, 1, full, full.length);
        image.commit(1);
        final byte[] next = stream(0, "d2".getBytes(), new long[]{1}, new byte[]{3});
        receive(image, 2, next, next.length - 10);
        image.discard(2);
        assertThat(image.resumable()).isTrue();
        assertThat(image.lastCommitted()).isEqualTo(1);
        assertThat(pageByte(image, 1)).isEqualTo((byte)2);
        assertThat(Files.readString(image.deviceStateFile())).isEqualTo("d1");
    }
}
