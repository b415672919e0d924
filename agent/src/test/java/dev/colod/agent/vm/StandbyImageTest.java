package dev.colod.agent.vm;

import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.checkpoint.TestCheckpoints;
import dev.colod.agent.qemu.VmSpec;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
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
        return stream(flags, device, pages, fill, 0, new long[0], new byte[0][]);
    }

    /** As above, with disk extents of a {@code diskBytes} disk: each at its offset with its bytes. */
    private static byte[] stream(final int flags, final byte[] device, final long[] pages, final byte[] fill,
        final long diskBytes, final long[] offsets, final byte[][] extents)
    {
        final byte[][] bytes = new byte[pages.length][PAGE];
        for (int i = 0; i < pages.length; i++)
        {
            Arrays.fill(bytes[i], fill[i]);
        }
        return TestCheckpoints.encode((flags & CheckpointFormat.FLAG_FULL) != 0, (flags & CheckpointFormat.FLAG_BASE) != 0,
            RAM, device, pages, bytes, diskBytes, offsets, extents);
    }

    private static byte[] base(final byte fill)
    {
        return base(fill, 0, new long[0], new byte[0][]);
    }

    private static byte[] base(final byte fill, final long diskBytes, final long[] offsets, final byte[][] extents)
    {
        final long[] pages = new long[(int)(RAM / PAGE)];
        final byte[] f = new byte[pages.length];
        for (int i = 0; i < pages.length; i++)
        {
            pages[i] = i;
            f[i] = fill;
        }
        return stream(CheckpointFormat.FLAG_FULL | CheckpointFormat.FLAG_BASE, new byte[0], pages, f, diskBytes, offsets,
            extents);
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

    private static final long DISK = 1 << 20;

    private static byte[] filled(final int n, final int v)
    {
        final byte[] b = new byte[n];
        Arrays.fill(b, (byte)v);
        return b;
    }

    private Path disk(final long size) throws IOException
    {
        final Path d = dir.resolve("disk.raw");
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(d.toFile(), "rw"))
        {
            f.setLength(size);
        }
        return d;
    }

    private static byte diskByte(final Path disk, final long at) throws IOException
    {
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(disk))
        {
            final ByteBuffer b = ByteBuffer.allocate(1);
            ch.read(b, at);
            return b.get(0);
        }
    }

    @Test
    void aBaseZeroesTheDiskThenWritesItsExtentsAndACheckpointsExtentsLandOnlyAtCommit() throws Exception
    {
        final Path disk = disk(DISK);
        Files.write(disk, filled((int)DISK, 0x33)); // an old disk: what the base does not name must read as zeros
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE).disk(disk, true);
        final byte[] b = base((byte)5, DISK, new long[]{4096, 65536}, new byte[][]{filled(4096, 1), filled(70000, 2)});
        receive(image, 1, b, b.length);
        image.commit(1);
        assertThat(diskByte(disk, 0)).isEqualTo((byte)0);
        assertThat(diskByte(disk, 4096)).isEqualTo((byte)1);
        assertThat(diskByte(disk, 65536 + 69999)).isEqualTo((byte)2);
        assertThat(diskByte(disk, 65536 + 70000)).isEqualTo((byte)0);
        assertThat(Files.size(disk)).isEqualTo(DISK);

        final byte[] c = stream(0, "dev".getBytes(), new long[]{3}, new byte[]{9}, DISK, new long[]{4096, DISK - 512},
            new byte[][]{filled(4096, 7), filled(512, 8)});
        receive(image, 2, c, c.length);
        assertThat(diskByte(disk, 4096)).as("staged, not committed: the disk is still checkpoint 1's").isEqualTo((byte)1);
        image.commit(2);
        assertThat(diskByte(disk, 4096)).isEqualTo((byte)7);
        assertThat(diskByte(disk, DISK - 1)).isEqualTo((byte)8);
        assertThat(image.resumable()).isTrue();

        final byte[] cut = stream(0, "dev".getBytes(), new long[0], new byte[0], DISK, new long[]{0},
            new byte[][]{filled(4096, 9)});
        receive(image, 3, cut, cut.length - 100); // the primary died while sending it
        image.discard(3);
        assertThat(diskByte(disk, 0)).as("a checkpoint never wholly received never touches the disk").isEqualTo((byte)0);
    }

    @Test
    void aDiskThatDoesNotMatchThePrimarysIsRefusedNamingTheFile() throws Exception
    {
        final Path disk = disk(DISK / 2);
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE).disk(disk, true);
        final byte[] b = base((byte)5, DISK, new long[]{0}, new byte[][]{filled(512, 1)});
        assertThatThrownBy(() -> receive(image, 1, b, b.length)).isInstanceOf(IOException.class)
            .hasMessageContaining(disk.toString()).hasMessageContaining("524288 bytes")
            .hasMessageContaining("1048576 bytes");
        image.discard(1);

        Files.delete(disk);
        assertThatThrownBy(() -> receive(image, 2, b, b.length)).isInstanceOf(IOException.class)
            .hasMessageContaining("disk image " + disk + " is missing");
        image.discard(2);

        final StandbyImage diskless = new StandbyImage(dir.resolve("img2"), "t", NONE);
        assertThatThrownBy(() -> receive(diskless, 1, b, b.length)).isInstanceOf(IOException.class)
            .hasMessageContaining("no disk is configured");

        disk(DISK);
        final byte[] noDisk = base((byte)5);
        assertThatThrownBy(() -> receive(image, 3, noDisk, noDisk.length)).isInstanceOf(IOException.class)
            .hasMessageContaining("carries no disk");
    }

    @Test
    void eachDiskOfAVmGetsItsOwnExtentsAndADifferentNumberOfDisksIsRefused() throws Exception
    {
        final Path d0 = disk(DISK);
        final Path d1 = dir.resolve("data.raw");
        Files.write(d1, filled(8192, 0x44));
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE).disks(List.of(
            new VmSpec.Disk(d0, VmSpec.DiskFormat.RAW), new VmSpec.Disk(d1, VmSpec.DiskFormat.RAW)), true);
        final long[] pages = new long[(int)(RAM / PAGE)];
        final byte[][] bytes = new byte[pages.length][PAGE];
        for (int i = 0; i < pages.length; i++)
        {
            pages[i] = i;
        }
        final byte[] b = TestCheckpoints.encode(true, true, RAM, new byte[0], pages, bytes, new long[]{DISK, 8192},
            new int[]{1, 0}, new long[]{4096, 0}, new byte[][]{filled(4096, 6), filled(512, 5)});
        receive(image, 1, b, b.length);
        image.commit(1);
        assertThat(diskByte(d0, 0)).isEqualTo((byte)5);
        assertThat(diskByte(d0, 4096)).isEqualTo((byte)0);
        assertThat(diskByte(d1, 0)).as("zeroed by the base").isEqualTo((byte)0);
        assertThat(diskByte(d1, 8191)).isEqualTo((byte)6);

        final byte[] one = TestCheckpoints.encode(false, false, RAM, new byte[0], new long[0], new byte[0][],
            new long[]{DISK}, new int[]{0}, new long[]{0}, new byte[][]{filled(512, 9)});
        assertThatThrownBy(() -> receive(image, 2, one, one.length)).isInstanceOf(IOException.class)
            .hasMessageContaining("the primary replicates 1 disk(s) but 2 are configured for this VM here");
        image.discard(2);
        assertThat(diskByte(d0, 0)).isEqualTo((byte)5);
    }

    @Test
    void aLiveRoundAfterTheBaseAddsItsPagesKeepsTheDiskAndLeavesTheImageNotResumable() throws Exception
    {
        final Path disk = disk(DISK);
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE).disk(disk, true);
        final byte[] b = base((byte)5, DISK, new long[]{4096}, new byte[][]{filled(4096, 1)});
        receive(image, 1, b, b.length);
        image.commit(1);
        // a live round: BASE without FULL, a few pages, the disk table with no extents
        final byte[] round = stream(CheckpointFormat.FLAG_BASE, new byte[0], new long[]{7}, new byte[]{8}, DISK,
            new long[0], new byte[0][]);
        receive(image, 2, round, round.length);
        assertThat(Files.exists(dir.resolve("img").resolve("staging.ckpt"))).as("written straight in, like a base").isFalse();
        image.commit(2);
        assertThat(pageByte(image, 7)).isEqualTo((byte)8);
        assertThat(pageByte(image, 6)).as("the base's pages stay").isEqualTo((byte)5);
        assertThat(diskByte(disk, 4096)).as("a round does not start the disk over").isEqualTo((byte)1);
        assertThat(image.resumable()).as("still only a base").isFalse();
        final byte[] c = stream(0, "dev".getBytes(), new long[]{3}, new byte[]{9}, DISK, new long[0], new byte[0][]);
        receive(image, 3, c, c.length);
        image.commit(3);
        assertThat(image.resumable()).isTrue();
        assertThat(diskByte(disk, 4096)).isEqualTo((byte)1);
    }

    /** {@code stream} as a primary of format {@code version} would send it (CRC recomputed). */
    private static byte[] asVersion(final byte[] stream, final int version)
    {
        final ByteBuffer b = ByteBuffer.wrap(stream);
        b.putShort(4, (short)version);
        final CRC32C crc = new CRC32C();
        crc.update(stream, 0, stream.length - 4);
        b.putInt(stream.length - 4, (int)crc.getValue());
        return stream;
    }

    @Test
    void anOlderPrimarysFormatIsStillCommittedAndANewerOneIsRefusedNamingWhatThisBuildReads() throws Exception
    {
        final StandbyImage image = new StandbyImage(dir, "t", NONE);
        final byte[] b = asVersion(base((byte)5), CheckpointFormat.OLDEST_READ);
        receive(image, 1, b, b.length);
        image.commit(1);
        final byte[] delta = asVersion(stream(0, "dev".getBytes(), new long[]{3}, new byte[]{9}), CheckpointFormat.OLDEST_READ);
        receive(image, 2, delta, delta.length);
        image.commit(2);
        assertThat(image.resumable()).isTrue();

        final byte[] newer = asVersion(stream(0, "dev".getBytes(), new long[]{4}, new byte[]{7}), CheckpointFormat.VERSION + 1);
        assertThatThrownBy(() ->
        {
            receive(image, 3, newer, newer.length);
            image.commit(3);
        }).isInstanceOf(IOException.class).hasMessageContaining("unsupported version " + (CheckpointFormat.VERSION + 1))
            .hasMessageContaining("upgrade the secondary before the primary");
        assertThat(image.lastCommitted()).isEqualTo(2);
        assertThat(pageByte(image, 4)).as("untouched by the refused checkpoint").isEqualTo((byte)5);
    }

    @Test
    void anExtentOutsideTheDiskIsRefusedBeforeItIsWritten() throws Exception
    {
        final Path disk = disk(DISK);
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE).disk(disk, true);
        final byte[] b = base((byte)5, DISK, new long[]{DISK - 100}, new byte[][]{filled(512, 1)});
        assertThatThrownBy(() -> receive(image, 1, b, b.length)).isInstanceOf(IOException.class)
            .hasMessageContaining("outside the 1048576-byte disk");
        assertThat(Files.size(disk)).isEqualTo(DISK);
    }

    @Test
    void aCheckpointLargerThanTheFreeStagingSpaceIsRefusedBeforeItFillsIt() throws Exception
    {
        final StandbyImage image = new StandbyImage(dir.resolve("img"), "t", NONE);
        final byte[] full = stream(CheckpointFormat.FLAG_FULL, "d1".getBytes(), new long[]{0}, new byte[]{1});
        image.stage(1, 1L << 60); // as announced by vmstate-size
        assertThatThrownBy(() -> image.stageWrite(full, 0, 64)).isInstanceOf(IOException.class)
            .hasMessageContaining("staging area " + dir.resolve("img") + " is full");
    }
}
