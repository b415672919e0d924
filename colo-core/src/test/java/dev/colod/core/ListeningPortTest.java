package dev.colod.core;

import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.status.ColoCounters;
import dev.colod.core.testing.MemorySink;
import dev.colod.core.testing.MemoryVm;
import dev.colod.core.testing.RecordingOutputCommit;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Whatever arrives at the secondary's port never keeps a legitimate primary from being served: connections that
 * close at every byte of the preamble, connections that send nothing, a flood of connections with random bytes.
 * The sync timeout is long (60 s) so that anything that waited for a bad connection would show.
 */
class ListeningPortTest
{
    private static final int SYNC_TIMEOUT_MS = 60_000;
    /** Another loopback address: the source of floods, so that they do not share the real primary's address. */
    private static final InetAddress ELSEWHERE = loopback(2);

    private static InetAddress loopback(final int last)
    {
        try
        {
            return InetAddress.getByAddress(new byte[]{127, 0, 0, (byte)last});
        }
        catch (final IOException ex)
        {
            throw new IllegalStateException(ex);
        }
    }

    private static ColoConfig config()
    {
        return base().syncTimeoutMs(SYNC_TIMEOUT_MS).peerRestartGraceMs(60_000);
    }

    private static ColoConfig base()
    {
        return dev.colod.core.testing.EnginePair.fastConfig(ColoConfig.Mode.STRICT);
    }

    private static byte[] validHello()
    {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        try
        {
            new Hello(Hello.CHANNEL_CONTROL, Hello.MODE_STRICT, 0, 8L << 20, 50, 500, 0, "vm-test", new byte[0]).writeTo(out);
        }
        catch (final IOException ex)
        {
            throw new IllegalStateException(ex);
        }
        return out.toByteArray();
    }

    private static boolean openAtServer(final Socket s) throws IOException
    {
        s.setSoTimeout(1);
        try
        {
            final InputStream in = s.getInputStream();
            return in.read() >= 0; // a refusal WELCOME would also be data: not a stall
        }
        catch (final SocketTimeoutException ex)
        {
            return true;
        }
        catch (final IOException ex)
        {
            return false;
        }
    }

    /** A started secondary on a loopback port with the long sync timeout. */
    private static SecondaryEngine secondary(final MemorySink sink, final ColoCounters counters) throws IOException
    {
        return new SecondaryEngine(config().conclude(), new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), sink,
            counters, ProtocolTap.NONE, NanoClock.SYSTEM).start();
    }

    private static PrimaryEngine primary(final InetSocketAddress at, final MemoryVm vm)
    {
        return new PrimaryEngine(config().conclude(), at, vm, new RecordingOutputCommit(), new ColoCounters(),
            ProtocolTap.NONE, NanoClock.SYSTEM).start();
    }

    @Test
    void earlyClosesStallsAndFloodsNeverKeepAPrimaryOut() throws Exception
    {
        final MemorySink sink = new MemorySink();
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = secondary(sink, counters);
             MemoryVm vm = new MemoryVm(4096, false))
        {
            final InetSocketAddress at = secondary.localAddress();
            // 1. close after every byte count of the preamble (0 .. all but one)
            final byte[] hello = validHello();
            for (int k = 0; k < hello.length; k++)
            {
                try (Socket s = new Socket(at.getAddress(), at.getPort()))
                {
                    s.getOutputStream().write(hello, 0, k);
                }
            }
            await().atMost(10, TimeUnit.SECONDS).until(() -> counters.abandonedHandshakes.get() == hello.length);

            // 2. connections that send nothing stay pending; a real primary is served meanwhile
            final List<Socket> stalled = new ArrayList<>();
            for (int i = 0; i < 5; i++)
            {
                stalled.add(new Socket(at.getAddress(), at.getPort()));
            }
            final PrimaryEngine first = primary(at, vm);
            try
            {
                await().atMost(30, TimeUnit.SECONDS).until(() -> first.counters().checkpointsCompleted.get() >= 3);
                for (final Socket s : stalled)
                {
                    assertThat(openAtServer(s)).as("the stalled connections are still pending, so nobody waited for them")
                        .isTrue();
                }
            }
            finally
            {
                first.close();
            }
            await().atMost(10, TimeUnit.SECONDS).until(() -> secondary.state() == ProtectionState.CONNECTING);

            // 3. a flood of connections with random bytes (some stall, some close) while the next primary connects
            final AtomicBoolean flooding = new AtomicBoolean(true);
            final AtomicLong sent = new AtomicLong();
            final Thread flood = new Thread(() ->
            {
                final Random random = new Random(7);
                final List<Socket> open = new ArrayList<>();
                while (flooding.get())
                {
                    try
                    {
                        final Socket s = new Socket(at.getAddress(), at.getPort(), ELSEWHERE, 0);
                        final byte[] junk = new byte[random.nextInt(80)];
                        random.nextBytes(junk);
                        if (random.nextBoolean() && junk.length > 6)
                        {
                            System.arraycopy(hello, 0, junk, 0, 6); // a plausible magic and version, then junk
                        }
                        s.getOutputStream().write(junk);
                        sent.incrementAndGet();
                        if (random.nextBoolean())
                        {
                            open.add(s);
                        }
                        else
                        {
                            s.close();
                        }
                    }
                    catch (final IOException ignore)
                    {
                        // the secondary closed it first: fine
                    }
                }
                open.forEach(Closeables::closeQuietly);
            }, "flood");
            flood.start();
            try
            {
                await().atMost(10, TimeUnit.SECONDS).until(() -> sent.get() >= 200);
                final PrimaryEngine second = primary(at, vm);
                try
                {
                    await().atMost(30, TimeUnit.SECONDS).until(() -> second.counters().checkpointsCompleted.get() >= 3);
                }
                finally
                {
                    second.close();
                }
            }
            finally
            {
                flooding.set(false);
                flood.join();
                stalled.forEach(Closeables::closeQuietly);
            }
            assertThat(counters.abandonedHandshakes.get() + counters.protocolErrors.get()).isGreaterThan(hello.length + 100);
            assertThat(sink.activatedAt()).as("nothing at the port causes a failover").isEqualTo(-1);
        }
    }

    /**
     * A flood of silent connections from another address never evicts a primary whose handshake is slow (as a TLS
     * handshake is: the third-party peer lost 2 of 3 attempts to "newest evicts oldest"), and each evicted
     * connection is counted once.
     */
    @Test
    void aSilentFloodFromElsewhereNeverEvictsASlowHandshakeAndEachEvictionCountsOnce() throws Exception
    {
        final MemorySink sink = new MemorySink();
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = secondary(sink, counters);
             MemoryVm vm = new MemoryVm(4096, false))
        {
            final InetSocketAddress at = secondary.localAddress();
            final List<Socket> silent = new ArrayList<>();
            final AtomicBoolean flooding = new AtomicBoolean(true);
            final AtomicLong sent = new AtomicLong();
            final Thread flood = new Thread(() ->
            {
                final java.util.ArrayDeque<Socket> open = new java.util.ArrayDeque<>();
                while (flooding.get())
                {
                    try
                    {
                        open.add(new Socket(at.getAddress(), at.getPort(), ELSEWHERE, 0));
                        sent.incrementAndGet();
                        if (open.size() > 200)
                        {
                            Closeables.closeQuietly(open.poll());
                        }
                    }
                    catch (final IOException ignore)
                    {
                        // the backlog is full for a moment: go on
                    }
                }
                open.forEach(Closeables::closeQuietly);
            }, "silent-flood");
            flood.start();
            try
            {
                await().atMost(10, TimeUnit.SECONDS).until(() -> sent.get() >= 500);
                // the primary's handshake takes 1.5 s before its HELLO, as a TLS handshake on a loaded host may: long
                // enough for the flood to open well over 32 connections meanwhile (it manages ~100/s here)
                final java.util.concurrent.atomic.AtomicInteger connects = new java.util.concurrent.atomic.AtomicInteger();
                final PrimaryEngine slow = new PrimaryEngine(config().conclude(), at, vm, new RecordingOutputCommit(),
                    new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM).transport(new Transport()
                    {
                        @Override
                        public Socket secureClient(final Socket connected) throws IOException
                        {
                            connects.incrementAndGet();
                            try
                            {
                                Thread.sleep(1_500);
                            }
                            catch (final InterruptedException ex)
                            {
                                Thread.currentThread().interrupt();
                            }
                            return connected;
                        }
                    }).start();
                try
                {
                    final long before = sent.get();
                    await().atMost(60, TimeUnit.SECONDS).until(() -> slow.counters().checkpointsCompleted.get() >= 3);
                    assertThat(sent.get() - before).as("the flood went on during the handshakes").isGreaterThan(64);
                    assertThat(connects.get()).as("control and heartbeat connected once each: nothing was evicted")
                        .isEqualTo(2);
                }
                finally
                {
                    slow.close();
                }
            }
            finally
            {
                flooding.set(false);
                flood.join();
                silent.forEach(Closeables::closeQuietly);
            }
            assertThat(sent.get()).isGreaterThan(500);
            assertThat(sink.activatedAt()).isEqualTo(-1);
        }
    }

    @Test
    void anEvictedHandshakeIsCountedOnce() throws Exception
    {
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = secondary(new MemorySink(), counters);
             MemoryVm vm = new MemoryVm(4096, false))
        {
            final InetSocketAddress at = secondary.localAddress();
            final List<Socket> silent = new ArrayList<>();
            try
            {
                for (int i = 0; i < SecondaryEngine.MAX_PENDING_PER_SOURCE + 3; i++)
                {
                    silent.add(new Socket(at.getAddress(), at.getPort(), ELSEWHERE, 0));
                }
                await().atMost(10, TimeUnit.SECONDS).until(() -> counters.abandonedHandshakes.get() >= 3);
                // a whole session later (every handshake thread has long finished with the evicted three): still 3
                final PrimaryEngine p = primary(at, vm);
                try
                {
                    await().atMost(30, TimeUnit.SECONDS).until(() -> p.counters().checkpointsCompleted.get() >= 3);
                }
                finally
                {
                    p.close();
                }
                assertThat(counters.abandonedHandshakes.get()).isEqualTo(3);
            }
            finally
            {
                silent.forEach(Closeables::closeQuietly);
            }
        }
    }

    /** PROTOCOL.md section 2: the session id is 0 on control and probe channels; anything else is status 5. */
    @Test
    void aControlOrProbeHelloWithASessionIdIsRefused() throws Exception
    {
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = secondary(new MemorySink(), counters))
        {
            for (final int channel : new int[]{Hello.CHANNEL_CONTROL, Hello.CHANNEL_PROBE})
            {
                try (Socket s = new Socket(secondary.localAddress().getAddress(), secondary.localAddress().getPort()))
                {
                    s.setSoTimeout(10_000);
                    new Hello(channel, Hello.MODE_STRICT, 42, 8L << 20, 50, 500, 0, "vm-test", new byte[0])
                        .writeTo(s.getOutputStream());
                    final dev.colod.core.protocol.Welcome w = dev.colod.core.protocol.Welcome.readFrom(s.getInputStream());
                    assertThat(w.status()).isEqualTo(dev.colod.core.protocol.Welcome.BAD_HELLO);
                    assertThat(w.reason()).contains("hello.session-id 2a");
                }
            }
            assertThat(counters.refusedSessions.get()).isEqualTo(2);
        }
    }
}
