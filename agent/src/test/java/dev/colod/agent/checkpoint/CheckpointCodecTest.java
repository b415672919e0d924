package dev.colod.agent.checkpoint;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The one checkpoint codec: what the writer writes the reader reads back, and nothing damaged is ever accepted. */
class CheckpointCodecTest
{
    private static final long DISK = 1 << 20;

    /** What a checkpoint carries, as the test chose it. */
    record Content(boolean full, boolean base, long ramPages, byte[] device, long[] pages, byte[][] pageBytes,
                   long diskBytes, long[] offsets, byte[][] extents)
    {
        byte[] encode()
        {
            return TestCheckpoints.encode(full, base, ramPages * CheckpointFormat.PAGE, device, pages, pageBytes, diskBytes,
                offsets, extents);
        }
    }

    /** Everything a reader handed out. */
    static final class Recorded implements CheckpointReader.Visitor
    {
        CheckpointFormat.Header header;
        long pageCount = -1;
        final ByteArrayOutputStream device = new ByteArrayOutputStream();
        final List<Long> pages = new ArrayList<>();
        final List<byte[]> pageBytes = new ArrayList<>();
        long extents = -1;
        final byte[] disk = new byte[(int)DISK];

        @Override
        public void header(final CheckpointFormat.Header h, final long pages)
        {
            header = h;
            pageCount = pages;
        }

        @Override
        public void device(final ByteBuffer piece)
        {
            final byte[] b = new byte[piece.remaining()];
            piece.get(b);
            device.writeBytes(b);
        }

        @Override
        public void page(final long index, final ByteBuffer src, final int offset)
        {
            final byte[] b = new byte[CheckpointFormat.PAGE];
            src.get(offset, b);
            pages.add(index);
            pageBytes.add(b);
        }

        @Override
        public void extents(final long count)
        {
            extents = count;
        }

        @Override
        public void extentData(final int d, final long diskOffset, final ByteBuffer piece)
        {
            assertThat(d).isZero();
            piece.get(piece.position(), disk, (int)diskOffset, piece.remaining());
        }
    }

    @Provide
    Arbitrary<Content> contents()
    {
        final Arbitrary<Integer> ramPages = Arbitraries.integers().between(1, 16);
        return Combinators.combine(Arbitraries.of(true, false), ramPages, Arbitraries.bytes().array(byte[].class).ofMaxSize(300),
            Arbitraries.integers().between(0, 4), Arbitraries.integers().between(0, 3), Arbitraries.longs())
            .as((full, ram, device, pageCount, extentCount, seed) ->
            {
                final Random r = new Random(seed);
                final long[] pages = new long[Math.min(pageCount, ram)];
                final byte[][] bytes = new byte[pages.length][CheckpointFormat.PAGE];
                for (int i = 0; i < pages.length; i++)
                {
                    pages[i] = r.nextInt(ram);
                    r.nextBytes(bytes[i]);
                }
                final boolean withDisk = extentCount > 0 || r.nextBoolean();
                final long[] offsets = new long[extentCount];
                final byte[][] extents = new byte[extentCount][];
                for (int i = 0; i < extentCount; i++)
                {
                    extents[i] = new byte[1 + r.nextInt(3000)];
                    r.nextBytes(extents[i]);
                    offsets[i] = r.nextInt((int)DISK - extents[i].length + 1);
                }
                return new Content(full, false, ram, device, pages, bytes, withDisk ? DISK : 0, offsets, extents);
            });
    }

    /** Feeds {@code bytes} to a reader in pieces of the sizes {@code seed} picks. */
    private static Recorded read(final byte[] bytes, final long seed) throws IOException
    {
        final Recorded rec = new Recorded();
        final CheckpointReader reader = new CheckpointReader(bytes.length, "test", rec);
        final Random r = new Random(seed);
        for (int at = 0; at < bytes.length; )
        {
            final int n = Math.min(bytes.length - at, 1 + r.nextInt(r.nextBoolean() ? 16 : 9000));
            reader.feed(ByteBuffer.wrap(bytes, at, n));
            at += n;
        }
        reader.finish();
        return rec;
    }

    @Property(tries = 300)
    void whatTheWriterWritesTheReaderReadsBackInPiecesOfAnySize(@ForAll("contents") final Content c, @ForAll final long seed)
        throws IOException
    {
        final Recorded rec = read(c.encode(), seed);
        assertThat(rec.header).isEqualTo(CheckpointFormat.Header.of(c.full(), c.base(), c.ramPages() * CheckpointFormat.PAGE,
            c.device().length, c.diskBytes() == 0 ? new long[0] : new long[]{c.diskBytes()}));
        assertThat(rec.pageCount).isEqualTo(c.pages().length);
        assertThat(rec.device.toByteArray()).isEqualTo(c.device());
        assertThat(rec.pages).containsExactly(Arrays.stream(c.pages()).boxed().toArray(Long[]::new));
        for (int i = 0; i < c.pages().length; i++)
        {
            assertThat(rec.pageBytes.get(i)).isEqualTo(c.pageBytes()[i]);
        }
        assertThat(rec.extents).isEqualTo(c.extents().length);
        for (int i = 0; i < c.extents().length; i++)
        {
            if (!overlapsALaterOne(c, i))
            {
                assertThat(Arrays.copyOfRange(rec.disk, (int)c.offsets()[i], (int)c.offsets()[i] + c.extents()[i].length))
                    .as("extent %d", i).isEqualTo(c.extents()[i]);
            }
        }
    }

    private static boolean overlapsALaterOne(final Content c, final int i)
    {
        for (int j = i + 1; j < c.extents().length; j++)
        {
            if (c.offsets()[j] < c.offsets()[i] + c.extents()[i].length && c.offsets()[i] < c.offsets()[j] + c.extents()[j].length)
            {
                return true;
            }
        }
        return false;
    }

    @Property(tries = 100)
    void aStreamCutAtAnyByteIsIncompleteNeverAccepted(@ForAll("contents") final Content c) throws IOException
    {
        final byte[] bytes = c.encode();
        final CheckpointReader reader = new CheckpointReader(bytes.length, "test", CheckpointReader.Visitor.NONE);
        for (int at = 0; at < bytes.length; at++)
        {
            assertThatThrownBy(reader::finish).as("cut after %d of %d bytes", at, bytes.length)
                .isInstanceOf(IOException.class).hasMessageContaining("incomplete");
            reader.feed(ByteBuffer.wrap(bytes, at, 1));
        }
        reader.finish();
    }

    @Test
    void aFileTruncatedAtAnyByteIsRefusedWithANamedError() throws IOException
    {
        final byte[] bytes = new Content(false, false, 4, "dev".getBytes(), new long[]{2}, new byte[][]{filled(7)}, DISK,
            new long[]{4096}, new byte[][]{Arrays.copyOf(filled(9), 40)}).encode();
        for (int cut = 0; cut < bytes.length; cut++)
        {
            final int n = cut;
            assertThatThrownBy(() ->
            {
                final CheckpointReader reader = new CheckpointReader(n, "cut", CheckpointReader.Visitor.NONE);
                reader.feed(ByteBuffer.wrap(bytes, 0, n));
                reader.finish();
            }).as("truncated to %d of %d bytes", n, bytes.length).isInstanceOf(IOException.class)
                .hasMessageStartingWith("cut: ");
        }
    }

    @Property(tries = 300)
    void anyFlippedBitIsRefused(@ForAll("contents") final Content c, @ForAll @IntRange(min = 0, max = Integer.MAX_VALUE) final int where,
        @ForAll @IntRange(min = 0, max = 7) final int bit)
    {
        final byte[] bytes = c.encode();
        bytes[where % bytes.length] ^= (byte)(1 << bit);
        assertThatThrownBy(() -> read(bytes, where)).as("bit %d of byte %d", bit, where % bytes.length)
            .isInstanceOf(IOException.class).hasMessageStartingWith("test: ");
    }

    @Test
    void aWrongCrcNamesIt()
    {
        final byte[] bytes = new Content(true, false, 2, new byte[0], new long[]{0, 1}, new byte[][]{filled(1), filled(2)},
            0, new long[0], new byte[0][]).encode();
        bytes[bytes.length - 1] ^= 1;
        assertThatThrownBy(() -> read(bytes, 1)).isInstanceOf(IOException.class).hasMessageContaining("CRC mismatch");
    }

    @Test
    void extentsOfSeveralDisksReachTheirDiskAndAnExtentOutsideItsDiskIsRefused() throws IOException
    {
        final long[] sizes = {1 << 20, 8192};
        final byte[] a = {1, 2, 3};
        final byte[] b = {4, 5};
        final byte[] bytes = TestCheckpoints.encode(false, false, CheckpointFormat.PAGE, new byte[0], new long[0],
            new byte[0][], sizes, new int[]{1, 0}, new long[]{8190, 100}, new byte[][]{b, a});
        final List<String> seen = new ArrayList<>();
        final CheckpointReader r = new CheckpointReader(bytes.length, "test", new CheckpointReader.Visitor()
        {
            @Override
            public void extentData(final int disk, final long offset, final ByteBuffer piece)
            {
                seen.add(disk + "@" + offset + "+" + piece.remaining());
            }
        });
        r.feed(ByteBuffer.wrap(bytes));
        r.finish();
        assertThat(r.header().diskSizes()).containsExactly(sizes);
        assertThat(seen).containsExactly("1@8190+2", "0@100+3");

        final byte[] outside = TestCheckpoints.encode(false, false, CheckpointFormat.PAGE, new byte[0], new long[0],
            new byte[0][], sizes, new int[]{1}, new long[]{8191}, new byte[][]{b});
        assertThatThrownBy(() -> read(outside, 3)).isInstanceOf(IOException.class)
            .hasMessageContaining("disk extent 0 of 1 [8191, +2) is outside the 8192-byte disk 1");
        final byte[] noSuchDisk = TestCheckpoints.encode(false, false, CheckpointFormat.PAGE, new byte[0], new long[0],
            new byte[0][], sizes, new int[]{2}, new long[]{0}, new byte[][]{b});
        assertThatThrownBy(() -> read(noSuchDisk, 3)).isInstanceOf(IOException.class)
            .hasMessageContaining("names disk 2 of a checkpoint with 2");
    }

    @Test
    void aVersion3CheckpointOfAnOlderPrimaryIsStillRead() throws IOException
    {
        // version 3: field 32 is the size of its one disk, no disk table, extent offsets are plain offsets
        final ByteBuffer b = ByteBuffer.allocate(CheckpointFormat.HEADER + 8 + 8 + 12 + 2 + 4);
        b.putInt(CheckpointFormat.MAGIC).putShort((short)3).putShort((short)0).putLong(CheckpointFormat.PAGE)
            .putInt(CheckpointFormat.PAGE).putInt(0).putLong(0).putLong(DISK).putLong(0)
            .putLong(0).putLong(1).putLong(4096).putInt(2).put((byte)7).put((byte)8);
        final java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(b.array(), 0, b.position());
        b.putInt((int)crc.getValue());
        final Recorded rec = read(b.array(), 5);
        assertThat(rec.header.version()).isEqualTo(3);
        assertThat(rec.header.diskSizes()).containsExactly(DISK);
        assertThat(rec.disk[4096]).isEqualTo((byte)7);
        assertThat(rec.disk[4097]).isEqualTo((byte)8);
    }

    @Test
    void aWriterThatBreaksTheLayoutIsABug()
    {
        final CheckpointWriter w = new CheckpointWriter(new ByteArrayOutputStream(), 1 << 20, done -> { });
        assertThatThrownBy(() -> w.disk(0)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(() -> new CheckpointWriter(new ByteArrayOutputStream(), 1 << 20, done -> { })
            .header(CheckpointFormat.Header.of(false, false, CheckpointFormat.PAGE, 0), ByteBuffer.allocate(0), 2))
            .as("more pages than RAM").isInstanceOf(IllegalStateException.class);
    }

    private static byte[] filled(final int b)
    {
        final byte[] p = new byte[CheckpointFormat.PAGE];
        Arrays.fill(p, (byte)b);
        return p;
    }
}
