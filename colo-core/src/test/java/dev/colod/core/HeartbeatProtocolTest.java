package dev.colod.core;

import dev.colod.core.protocol.ColoCommand;
import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.status.ColoCounters;
import dev.colod.core.testing.EnginePair;
import dev.colod.core.testing.MemorySink;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The heartbeat channel's rules (docs/PROTOCOL.md, section 5): a malformed frame from a live primary is a protocol
 * error that ends the session with BYE 1, and the secondary stands by instead of taking it for a lost peer; the
 * reaction to a lost peer does not wait for the socket's close.
 */
class HeartbeatProtocolTest
{
    /** type 9, and a BEAT with a non-zero argument. */
    @ParameterizedTest
    @ValueSource(strings = {"unknown-type", "beat-with-argument"})
    void aMalformedHeartbeatFrameEndsTheSessionAndTheSecondaryStandsBy(final String what) throws Exception
    {
        final MemorySink sink = new MemorySink();
        final LinkedBlockingQueue<ExitEvent> exits = new LinkedBlockingQueue<>();
        final ColoCounters counters = new ColoCounters();
        // a short grace: before the fix the secondary took the bad frame for a vanished agent and failed over after it
        final SecondaryEngine secondary = new SecondaryEngine(new ColoConfig().vmName("hb").maxStateBytes(4096)
            .syncTimeoutMs(2_000).transferTimeoutMs(2_000).peerRestartGraceMs(200).conclude(),
            new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), sink, counters, ProtocolTap.NONE,
            NanoClock.SYSTEM).start();
        secondary.addExitListener(exits::add);
        try
        {
            try (Socket control = new Socket(); Socket hb = new Socket())
            {
                final long session = open(secondary, control, hb);
                final byte[] bad = new byte[HeartbeatFrame.SIZE];
                new HeartbeatFrame("unknown-type".equals(what) ? 9 : HeartbeatFrame.BEAT,
                    "unknown-type".equals(what) ? 0 : 5, 0).encode(bad);
                hb.getOutputStream().write(bad);
                hb.getOutputStream().flush();

                // the secondary says goodbye with reason 1 (error): the session ended on purpose, nobody was lost
                HeartbeatFrame bye;
                do
                {
                    bye = HeartbeatFrame.readFrom(hb.getInputStream(), new byte[HeartbeatFrame.SIZE]);
                }
                while (bye.type() == HeartbeatFrame.BEAT);
                assertThat(bye.type()).isEqualTo(HeartbeatFrame.BYE);
                assertThat(bye.arg()).isEqualTo(HeartbeatFrame.BYE_ERROR);
                assertThat(bye.text()).as("the goodbye says why").contains("protocol error");
                assertThat(session).isNotZero();
            }
            final ExitEvent e = exits.poll(10, TimeUnit.SECONDS);
            assertThat(e).as("session ended").isNotNull();
            assertThat(e.detail()).contains("protocol error").contains("unknown-type".equals(what) ? "heartbeat.type" :
                "heartbeat.arg");
            assertThat(e.failedOver()).isFalse();
            assertThat(counters.protocolErrors.get()).isEqualTo(1);
            assertThat(counters.heartbeatLosses.get()).isZero();

            // it stands by: the next primary is welcome, and the VM never resumed here
            try (Socket control = new Socket(); Socket hb = new Socket())
            {
                assertThat(open(secondary, control, hb)).isNotZero();
                new HeartbeatFrame(HeartbeatFrame.BYE, HeartbeatFrame.BYE_STOP, 0).writeTo(hb.getOutputStream());
            }
            assertThat(exits.poll(10, TimeUnit.SECONDS)).isNotNull();
            assertThat(sink.activatedAt()).as("a malformed frame is never a failover").isEqualTo(-1);
            assertThat(secondary.state()).isNotEqualTo(ProtectionState.FAILED_OVER);
        }
        finally
        {
            secondary.close();
        }
    }

    /**
     * What the secondary refused for reaches the primary's status: its BYE carries its own account of the end
     * (before, the primary could only say "reason 1" and point at the other host).
     */
    @Test
    void theSecondarysReasonReachesThePrimary() throws Exception
    {
        final String why = "staging area /var/lib/colod/vm-test full: needs 1048576 bytes, 4096 free";
        final ProtocolTap refuse = new ProtocolTap()
        {
            @Override
            public void afterReceive(final ColoCommand command, final long checkpointId) throws IOException
            {
                if (command == ColoCommand.VMSTATE_SIZE && checkpointId == 3)
                {
                    throw new IOException(why);
                }
            }
        };
        try (EnginePair pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT)
            .reconnectIntervalMs(600_000), 1 << 16, ProtocolTap.NONE, refuse))
        {
            final ExitEvent secondary = EnginePair.next(pair.secondaryExits, "secondary");
            assertThat(secondary.detail()).contains(why).doesNotContain("java.io");
            final ExitEvent primary = EnginePair.next(pair.primaryExits, "primary");
            assertThat(primary.detail()).startsWith("secondary ").contains("ended the session: an error there (BYE error): ")
                .contains(why).doesNotContain("java.io");
            assertThat(pair.primary.lastError()).contains(why);
            assertThat(primary.failedOver()).isFalse();
        }
    }

    /** HELLO on both channels, WELCOME, checkpoint-ready; returns the session id. */
    private static long open(final SecondaryEngine secondary, final Socket control, final Socket hb) throws IOException
    {
        control.connect(secondary.localAddress(), 2_000);
        control.setSoTimeout(10_000);
        new Hello(0, 0, 0, 4096, 50, 2_000, 0, "hb", new byte[0]).writeTo(control.getOutputStream());
        final Welcome w = Welcome.readFrom(control.getInputStream());
        assertThat(w.status()).as(w.reason()).isEqualTo(Welcome.OK);
        hb.connect(secondary.localAddress(), 2_000);
        hb.setSoTimeout(10_000);
        new Hello(1, 0, w.sessionId(), 4096, 50, 2_000, 0, "hb", new byte[0]).writeTo(hb.getOutputStream());
        assertThat(Welcome.readFrom(hb.getInputStream()).status()).isEqualTo(Welcome.OK);
        assertThat(control.getInputStream().readNBytes(4)).containsExactly(0, 0, 0, 0); // checkpoint-ready
        return w.sessionId();
    }

    @Test
    void aLostPeerIsReportedBeforeTheSocketIsClosed() throws Exception
    {
        // a socket whose close blocks, as a TLS socket's does while it drains a silent peer
        final CountDownLatch closing = new CountDownLatch(1);
        final CountDownLatch mayClose = new CountDownLatch(1);
        final Socket silent = new Socket()
        {
            @Override
            public InputStream getInputStream()
            {
                return new InputStream()
                {
                    @Override
                    public int read() throws IOException
                    {
                        throw new SocketTimeoutException("silent peer");
                    }
                };
            }

            @Override
            public OutputStream getOutputStream()
            {
                return OutputStream.nullOutputStream();
            }

            @Override
            public synchronized void close() throws IOException
            {
                closing.countDown();
                try
                {
                    mayClose.await(30, TimeUnit.SECONDS);
                }
                catch (final InterruptedException ex)
                {
                    Thread.currentThread().interrupt();
                }
                super.close();
            }
        };
        final SessionEnd end = new SessionEnd();
        final CountDownLatch reacted = new CountDownLatch(1);
        final Heartbeat hb = new Heartbeat(silent, "silent", "test", 50, 100, () -> 0, new ColoCounters(), end,
            reacted::countDown);
        hb.start();
        try
        {
            assertThat(reacted.await(30, TimeUnit.SECONDS)).as("the engine is told while the close still drains").isTrue();
            assertThat(end.recorded().cause()).isEqualTo(SessionEnd.Cause.PEER_LOST);
        }
        finally
        {
            mayClose.countDown();
            hb.close();
        }
        assertThat(closing.await(30, TimeUnit.SECONDS)).isTrue();
    }
}
