package dev.colod.core.protocol;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;

import static org.assertj.core.api.Assertions.assertThat;

/** Random and mutated byte streams into the decoders: only named, checked errors come out. */
class DecoderFuzzTest
{
    private static final long LIMIT = 4096;

    @Property(tries = 2000)
    void randomBytesGiveOnlyNamedProtocolErrorsOrEof(@ForAll("streams") final byte[] stream)
    {
        final ColoChannel ch = new ColoChannel(new ByteArrayInputStream(stream), new ByteArrayOutputStream(), "fuzz",
            ProtocolTap.NONE);
        try
        {
            // read like the secondary does: commands, and a size whenever the stream claims one
            for (int i = 0; i < 64; i++)
            {
                final ColoCommand c = ch.get();
                if (c == ColoCommand.VMSTATE_SEND)
                {
                    final long n = ch.expectStateSize(LIMIT);
                    assertThat(n).isBetween(0L, LIMIT);
                    // read the state the way the secondary does, so a short stream ends in a named EOF too
                    ColoChannel.readFully(ch.in(), new byte[(int)n], 0, (int)n, "vmstate");
                }
            }
        }
        catch (final ProtocolException ex)
        {
            assertThat(ex.field()).isIn("command", "vmstate-size");
            assertThat(ex.getMessage()).containsAnyOf("invalid command", "unexpected command", "vmstate-size");
        }
        catch (final EOFException ex)
        {
            assertThat(ex.getMessage()).containsAnyOf("reading command", "reading vmstate-size", "reading vmstate");
        }
        catch (final IOException ex)
        {
            throw new AssertionError("unexpected error kind: " + ex, ex);
        }
    }

    @Property(tries = 2000)
    void mutatedHellosAreRefusedByFieldNeverByCrash(@ForAll("hellos") final byte[] wire)
    {
        try
        {
            final Hello h = Hello.readFrom(new ByteArrayInputStream(wire));
            assertThat(h.vmName().getBytes(java.nio.charset.StandardCharsets.UTF_8).length).isBetween(1, 255);
            assertThat(h.shape().length).isLessThanOrEqualTo(Hello.MAX_SHAPE_BYTES);
        }
        catch (final ProtocolException ex)
        {
            assertThat(ex.field()).startsWith("hello.");
            assertThat(ex.getMessage()).contains(ex.field());
        }
        catch (final EOFException ex)
        {
            // truncated: fine, named by the caller as a connection that ended early
        }
        catch (final IOException ex)
        {
            throw new AssertionError("unexpected error kind: " + ex, ex);
        }
    }

    @Provide
    Arbitrary<byte[]> streams()
    {
        // mostly small ids so that valid-looking sequences, sizes and mutations all occur
        final Arbitrary<byte[]> word = Arbitraries.oneOf(
            Arbitraries.integers().between(0, 8).map(DecoderFuzzTest::be32),
            Arbitraries.integers().map(DecoderFuzzTest::be32),
            Arbitraries.bytes().array(byte[].class).ofMaxSize(7));
        return word.list().ofMaxSize(40).map(parts ->
        {
            final ByteArrayOutputStream out = new ByteArrayOutputStream();
            parts.forEach(out::writeBytes);
            return out.toByteArray();
        });
    }

    @Provide
    Arbitrary<byte[]> hellos() throws IOException
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        new Hello(0, 0, 0, 1 << 20, 100, 1000, 0, "vm-a", new byte[0]).writeTo(out);
        final byte[] valid = out.toByteArray();
        return Arbitraries.integers().between(0, valid.length - 1).list().ofMinSize(1).ofMaxSize(4)
            .flatMap(positions -> Arbitraries.bytes().list().ofSize(positions.size()).map(values ->
            {
                final byte[] copy = valid.clone();
                for (int i = 0; i < positions.size(); i++)
                {
                    copy[positions.get(i)] = values.get(i);
                }
                return copy;
            }))
            .injectDuplicates(0.01);
    }

    static byte[] be32(final int v)
    {
        return new byte[]{(byte)(v >>> 24), (byte)(v >>> 16), (byte)(v >>> 8), (byte)v};
    }
}
