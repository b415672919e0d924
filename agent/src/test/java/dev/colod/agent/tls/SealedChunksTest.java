package dev.colod.agent.tls;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Sealed chunks: what goes in comes out, and every altered, replayed, reordered, foreign or cut stream is refused. */
class SealedChunksTest
{
    private static final byte[] SECRET = "a secret both ends got inside their TLS session".getBytes();
    private static final SealedChunks.Keys OUT = SealedChunks.Keys.derive(SECRET, true);
    private static final int CHUNK = 64 << 10;

    /** 300 KiB written in uneven pieces and one flush: chunks of 64 KiB, one short, and the closing chunk. */
    private static byte[] payload()
    {
        final byte[] data = new byte[300 << 10];
        new Random(42).nextBytes(data);
        return data;
    }

    private static byte[] sealed(final byte[] data) throws IOException
    {
        final ByteArrayOutputStream wire = new ByteArrayOutputStream();
        try (SealedChunks.Output out = new SealedChunks.Output(wire, OUT, CHUNK))
        {
            int at = 0;
            for (int n = 1; at < data.length; n = n * 3 % 70_001 + 1)
            {
                final int len = Math.min(n, data.length - at);
                out.write(data, at, len);
                at += len;
                if (at > data.length / 2 && at - len <= data.length / 2)
                {
                    out.flush(); // a short chunk in the middle
                }
            }
        }
        return wire.toByteArray();
    }

    /** The wire split into its chunks (header and body). */
    private static List<byte[]> chunks(final byte[] wire)
    {
        final List<byte[]> c = new ArrayList<>();
        int at = 0;
        while (at < wire.length)
        {
            final int length = (wire[at] & 0xFF) << 24 | (wire[at + 1] & 0xFF) << 16 | (wire[at + 2] & 0xFF) << 8 |
                wire[at + 3] & 0xFF;
            c.add(java.util.Arrays.copyOfRange(wire, at, at + 5 + length));
            at += 5 + length;
        }
        return c;
    }

    private static byte[] join(final List<byte[]> chunks)
    {
        final ByteArrayOutputStream b = new ByteArrayOutputStream();
        chunks.forEach(b::writeBytes);
        return b.toByteArray();
    }

    private static byte[] open(final byte[] wire, final SealedChunks.Keys keys) throws IOException
    {
        try (InputStream in = new SealedChunks.Input(new ByteArrayInputStream(wire), keys))
        {
            return in.readAllBytes();
        }
    }

    @Test
    void whatIsWrittenIsReadBackInChunksAndTheStreamEndsAtTheClosingChunk() throws Exception
    {
        final byte[] data = payload();
        final byte[] wire = sealed(data);
        final List<byte[]> c = chunks(wire);
        assertThat(c.size()).as("chunks, with a short one and the closing one").isBetween(7, 8);
        assertThat(c.get(c.size() - 1)[4]).as("the last chunk's flags").isEqualTo((byte)SealedChunks.FLAG_LAST);
        assertThat(wire.length).as("wire size: data + 21 bytes per chunk").isEqualTo(data.length + 21 * c.size());
        assertThat(open(wire, OUT)).isEqualTo(data);
    }

    /** Reads {@code wire} back with reads of {@code size} bytes (large ones are opened straight into the reader's array). */
    private static byte[] openReading(final byte[] wire, final int size) throws IOException
    {
        final ByteArrayOutputStream got = new ByteArrayOutputStream();
        try (InputStream in = new SealedChunks.Input(new ByteArrayInputStream(wire), OUT))
        {
            final byte[] b = new byte[size];
            int n;
            while ((n = in.read(b, 0, size)) >= 0)
            {
                assertThat(n).as("a read returns data or the end, never 0").isPositive();
                got.write(b, 0, n);
            }
        }
        return got.toByteArray();
    }

    @Test
    void writesSealedAtOnceComeBackThroughTheBufferAndStraightIntoLargeReads() throws Exception
    {
        final byte[] data = payload();
        final ByteArrayOutputStream wire = new ByteArrayOutputStream();
        try (SealedChunks.Output out = new SealedChunks.Output(wire, OUT, CHUNK))
        {
            out.write(data, 0, 10); // buffered ...
            out.writeNow(data, 10, 0); // ... and sealed before what is written at once: a chunk of 10
            out.writeNow(data, 10, 200_000); // 3 full chunks and 3392 bytes
            out.writeNow(data, 200_010, 0); // nothing
            out.writeNow(data, 200_010, data.length - 200_010); // 65536 and 41654
        }
        final List<byte[]> c = chunks(wire.toByteArray());
        assertThat(c).hasSize(1 + 4 + 2 + 1);
        assertThat(c.get(0).length).isEqualTo(5 + 10 + 16);
        for (final int size : new int[]{1, 100, CHUNK - 1, CHUNK, 1 << 20})
        {
            assertThat(openReading(wire.toByteArray(), size)).as("reads of %d bytes", size).isEqualTo(data);
        }
        final List<byte[]> altered = chunks(wire.toByteArray());
        altered.get(2)[5000] ^= 1;
        assertThatThrownBy(() -> openReading(join(altered), 1 << 20)).as("opened straight into the reader's array")
            .hasMessageStartingWith("sealed chunk 2 failed authentication");
    }

    @Test
    void aFlippedBitIsRefusedNamingTheChunk()
    {
        final List<byte[]> c = chunksOf();
        c.get(2)[100] ^= 1;
        assertThatThrownBy(() -> open(join(c), OUT)).isInstanceOf(IOException.class)
            .hasMessage("sealed chunk 2 failed authentication: altered, replayed, out of order or sealed under another key");
    }

    @Test
    void aReplayedChunkIsRefused()
    {
        final List<byte[]> c = chunksOf();
        c.add(2, c.get(1).clone());
        assertThatThrownBy(() -> open(join(c), OUT)).hasMessageStartingWith("sealed chunk 2 failed authentication");
    }

    @Test
    void chunksOutOfOrderAreRefused()
    {
        final List<byte[]> c = chunksOf();
        final byte[] one = c.get(1);
        c.set(1, c.get(2));
        c.set(2, one);
        assertThatThrownBy(() -> open(join(c), OUT)).hasMessageStartingWith("sealed chunk 1 failed authentication");
    }

    @Test
    void aHeaderThatClaimsTheEndEarlyIsRefused()
    {
        final List<byte[]> c = chunksOf();
        c.get(1)[4] = SealedChunks.FLAG_LAST; // flags are authenticated: no early, clean end
        assertThatThrownBy(() -> open(join(c), OUT)).hasMessageStartingWith("sealed chunk 1 failed authentication");
    }

    @Test
    void aStreamCutAnywhereIsATruncationNotAnEnd()
    {
        final List<byte[]> c = chunksOf();
        final List<byte[]> noClosing = new ArrayList<>(c.subList(0, c.size() - 1));
        assertThatThrownBy(() -> open(join(noClosing), OUT)).isInstanceOf(EOFException.class)
            .hasMessage("sealed stream ended before chunk " + noClosing.size() + " without its closing chunk (the " +
                "connection was closed or cut)");
        final byte[] wire = join(c);
        final byte[] cut = java.util.Arrays.copyOf(wire, c.get(0).length + 1000);
        assertThatThrownBy(() -> open(cut, OUT)).isInstanceOf(EOFException.class)
            .hasMessageStartingWith("sealed stream truncated in chunk 1");
    }

    @Test
    void theOtherDirectionsKeysOrAnotherSecretOpenNothing()
    {
        final byte[] wire = wire();
        assertThatThrownBy(() -> open(wire, SealedChunks.Keys.derive(SECRET, false)))
            .hasMessageStartingWith("sealed chunk 0 failed authentication");
        assertThatThrownBy(() -> open(wire, SealedChunks.Keys.derive("another secret".getBytes(), true)))
            .hasMessageStartingWith("sealed chunk 0 failed authentication");
        assertThat(SealedChunks.Keys.derive(SECRET, true).key()).isNotEqualTo(SealedChunks.Keys.derive(SECRET, false).key());
    }

    @Test
    void aHeaderBeyondTheLargestChunkIsRefusedBeforeAnythingIsRead()
    {
        final byte[] bad = {0x7f, 0, 0, 0, 0};
        assertThatThrownBy(() -> open(bad, OUT)).hasMessage("sealed chunk 0: malformed header (length 2130706432, flags 0)");
    }

    private static byte[] wire()
    {
        try
        {
            return sealed(payload());
        }
        catch (final IOException ex)
        {
            throw new AssertionError(ex);
        }
    }

    private static List<byte[]> chunksOf()
    {
        return new ArrayList<>(chunks(wire()));
    }
}
