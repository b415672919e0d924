package dev.colod.core;

import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.status.ColoCounters;
import dev.colod.core.testing.MemorySink;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterProperty;
import net.jqwik.api.lifecycle.BeforeProperty;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Mutated primary streams against a real secondary engine on loopback: the session ends with an error that
 * names the offending id or field, nothing is allocated beyond the state-size limit, the committed image is
 * never a partial one, and the secondary keeps standing by (it accepts the next session).
 */
class SecondaryFuzzTest
{
    private static final long LIMIT = 64 * 1024;

    private MemorySink sink;
    private SecondaryEngine secondary;
    private final LinkedBlockingQueue<ExitEvent> exits = new LinkedBlockingQueue<>();

    @BeforeProperty
    void start() throws IOException
    {
        sink = new MemorySink();
        secondary = new SecondaryEngine(new ColoConfig().vmName("fuzz").maxStateBytes(LIMIT).syncTimeoutMs(2_000)
            .transferTimeoutMs(2_000).conclude(), new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), sink,
            new ColoCounters(), dev.colod.core.protocol.ProtocolTap.NONE, NanoClock.SYSTEM).start();
        secondary.addExitListener(exits::add);
    }

    @AfterProperty
    void stop()
    {
        secondary.close();
        assertThat(sink.largestStage()).isLessThanOrEqualTo(LIMIT);
        assertThat(sink.activatedAt()).as("a bad stream never causes a failover").isEqualTo(-1);
    }

    @Property(tries = 100)
    void mutatedStreamsEndTheSessionWithANamedErrorAndBoundedMemory(@ForAll("streams") final byte[] stream)
        throws Exception
    {
        final long committedBefore = sink.lastCommitted();
        final byte[] committedImageBefore = sink.committed();
        try (Socket control = new Socket(); Socket hb = new Socket())
        {
            control.connect(secondary.localAddress(), 2_000);
            control.setSoTimeout(5_000);
            new Hello(0, 0, 0, LIMIT, 30, 300, 0, "fuzz", new byte[0]).writeTo(control.getOutputStream());
            final Welcome w = Welcome.readFrom(control.getInputStream());
            assertThat(w.status()).as("secondary still stands by: %s", w.reason()).isEqualTo(Welcome.OK);
            hb.connect(secondary.localAddress(), 2_000);
            new Hello(1, 0, w.sessionId(), LIMIT, 30, 300, 0, "fuzz", new byte[0]).writeTo(hb.getOutputStream());
            assertThat(Welcome.readFrom(hb.getInputStream()).status()).isEqualTo(Welcome.OK);
            // a live primary beats; the secondary then never mistakes the end of a bad stream for a lost peer
            final Thread beats = new Thread(() ->
            {
                try
                {
                    while (!Thread.currentThread().isInterrupted())
                    {
                        new HeartbeatFrame(HeartbeatFrame.BEAT, 0, 0).writeTo(hb.getOutputStream());
                        Thread.sleep(30);
                    }
                }
                catch (final IOException | InterruptedException ex)
                {
                    // session over
                }
            });
            beats.start();
            final InputStream in = control.getInputStream();
            assertThat(in.readNBytes(4)).containsExactly(0, 0, 0, 0); // checkpoint-ready

            try
            {
                control.getOutputStream().write(stream);
                control.shutdownOutput();
                in.readAllBytes();
            }
            catch (final IOException ex)
            {
                // the secondary may close first, having refused the stream: that is the point
            }
            beats.interrupt();
            beats.join();
            try
            {
                new HeartbeatFrame(HeartbeatFrame.BYE, HeartbeatFrame.BYE_STOP, 0).writeTo(hb.getOutputStream());
            }
            catch (final IOException ex)
            {
                // the secondary ended the session and closed the heartbeat channel already
            }
        }
        final ExitEvent e = exits.poll(10, TimeUnit.SECONDS);
        assertThat(e).as("session ended").isNotNull();
        assertThat(e.failedOver()).isFalse();
        assertThat(e.detail()).containsAnyOf("invalid command", "unexpected command", "vmstate-size", "closed by",
            "ended the session", "Socket closed", "Connection reset", "deadline missed");
        assertThat(sink.largestStage()).isLessThanOrEqualTo(LIMIT);
        // the committed image is whole: either unchanged, or exactly one of the states the stream carried
        if (sink.lastCommitted() == committedBefore)
        {
            assertThat(sink.committed()).isSameAs(committedImageBefore);
        }
        else
        {
            assertThat(sink.committed().length).isLessThanOrEqualTo((int)LIMIT);
        }
    }

    @Provide
    Arbitrary<byte[]> streams()
    {
        final Arbitrary<byte[]> valid = Arbitraries.integers().between(0, 3000).list().ofMinSize(1).ofMaxSize(3)
            .map(SecondaryFuzzTest::validStream);
        return Arbitraries.oneOf(
            valid,
            valid.flatMap(SecondaryFuzzTest::mutate),
            Arbitraries.bytes().array(byte[].class).ofMaxSize(64),
            Arbitraries.longs().map(n -> concat(be32(1), be32(3), be32(4), be64(n))));
    }

    private static Arbitrary<byte[]> mutate(final byte[] valid)
    {
        return Arbitraries.integers().between(0, Math.min(valid.length - 1, 40)).list().ofMinSize(1).ofMaxSize(3)
            .flatMap(pos -> Arbitraries.bytes().list().ofSize(pos.size()).flatMap(vals ->
                Arbitraries.integers().between(1, valid.length).map(cut ->
                {
                    final byte[] copy = java.util.Arrays.copyOf(valid, cut);
                    for (int i = 0; i < pos.size(); i++)
                    {
                        if (pos.get(i) < copy.length)
                        {
                            copy[pos.get(i)] = vals.get(i);
                        }
                    }
                    return copy;
                })));
    }

    /** request, send, size, state bytes per checkpoint; the secondary's replies are drained by the reader. */
    private static byte[] validStream(final List<Integer> sizes)
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (final int n : sizes)
        {
            out.writeBytes(concat(be32(1), be32(3), be32(4), be64(n), new byte[n]));
        }
        return out.toByteArray();
    }

    private static byte[] concat(final byte[]... parts)
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (final byte[] p : parts)
        {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    private static byte[] be32(final int v)
    {
        return new byte[]{(byte)(v >>> 24), (byte)(v >>> 16), (byte)(v >>> 8), (byte)v};
    }

    private static byte[] be64(final long v)
    {
        final ByteArrayOutputStream b = new ByteArrayOutputStream();
        try
        {
            new DataOutputStream(b).writeLong(v);
        }
        catch (final IOException ex)
        {
            throw new IllegalStateException(ex);
        }
        return b.toByteArray();
    }
}
