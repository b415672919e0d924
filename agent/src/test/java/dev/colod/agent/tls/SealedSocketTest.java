package dev.colod.agent.tls;

import dev.colod.core.Transport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import javax.net.ssl.SSLSocket;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Sealed chunks on a real mutual-TLS connection over loopback, through a relay that records (and may alter) what
 * crosses the wire: both ends agree on them only when both offer them; data flows both ways, larger than a chunk;
 * the wire shows a TLS 1.3 handshake and then no plaintext; a bit flipped after the handshake is refused by name.
 */
class SealedSocketTest
{
    private static final String HOST = "127.0.0.1";
    private static final byte[] MARK = "colod-plaintext-marker-".getBytes(StandardCharsets.US_ASCII);

    @TempDir
    Path dir;
    private final ExecutorService pool = Executors.newCachedThreadPool();
    private ServerSocket listener;
    private Relay relay;

    @BeforeEach
    void pki() throws Exception
    {
        final Certs.Issued ca = Certs.authority("test CA", Duration.ofDays(1));
        ca.write(dir, "ca");
        Certs.host(ca, HOST, Duration.ofDays(1)).write(dir, "host");
        listener = new ServerSocket(0, 4, InetAddress.getByName(HOST));
        relay = new Relay(listener.getLocalPort());
    }

    @AfterEach
    void close() throws Exception
    {
        relay.close();
        listener.close();
        pool.shutdownNow();
        assertThat(pool.awaitTermination(10, TimeUnit.SECONDS)).isTrue();
    }

    private PeerTls tls(final boolean offerSealed) throws IOException
    {
        return PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("host.pem"), dir.resolve("host.key"),
            HOST, offerSealed);
    }

    /** A connected pair through the relay: [0] the opener's channel, [1] the listener's. */
    private Socket[] pair(final PeerTls opener, final PeerTls listening) throws Exception
    {
        final CompletableFuture<Socket> server = CompletableFuture.supplyAsync(() ->
        {
            try
            {
                final Socket a = listener.accept();
                a.setSoTimeout(20_000);
                return listening.secureServer(a);
            }
            catch (final IOException ex)
            {
                throw new IllegalStateException(ex);
            }
        }, pool);
        final Socket c = new Socket();
        c.connect(new InetSocketAddress(HOST, relay.port()), 10_000);
        c.setSoTimeout(20_000);
        final Socket client = opener.secureClient(c);
        return new Socket[]{client, server.get(20, TimeUnit.SECONDS)};
    }

    private static byte[] payload(final int bytes)
    {
        final byte[] b = new byte[bytes];
        new Random(7).nextBytes(b);
        for (int at = 0; at + MARK.length <= bytes; at += 4096)
        {
            System.arraycopy(MARK, 0, b, at, MARK.length); // plaintext a relay could spot if it crossed unsealed
        }
        return b;
    }

    /** Sends {@code data} from {@code from} to {@code to} (writes in pieces, flushes like an engine) and reads it back. */
    private byte[] carry(final Socket from, final Socket to, final byte[] data) throws Exception
    {
        final CompletableFuture<byte[]> got = CompletableFuture.supplyAsync(() ->
        {
            try
            {
                final byte[] b = new byte[data.length];
                new DataInputStream(to.getInputStream()).readFully(b);
                return b;
            }
            catch (final IOException ex)
            {
                throw new IllegalStateException(ex);
            }
        }, pool);
        final OutputStream out = from.getOutputStream();
        for (int at = 0; at < data.length; )
        {
            final int n = Math.min(data.length - at, at % 3 == 0 ? 700_000 : 13);
            out.write(data, at, n);
            at += n;
        }
        out.flush();
        return got.get(30, TimeUnit.SECONDS);
    }

    @Test
    void bothNewEndsCarryDataInSealedChunksAfterAMutualTls13Handshake() throws Exception
    {
        final PeerTls opener = tls(true);
        final PeerTls listening = tls(true);
        final Socket[] s = pair(opener, listening);
        try
        {
            assertThat(s[0]).isInstanceOf(SealedSocket.class);
            assertThat(s[1]).isInstanceOf(SealedSocket.class);
            assertThat(((SealedSocket)s[0]).tls().getSession().getProtocol()).isEqualTo("TLSv1.3");
            assertThat(((SealedSocket)s[1]).tls().getSession().getPeerCertificates()).isNotEmpty();
            final byte[] big = payload(3 * SealedSocket.CHUNK_BYTES + 12345);
            assertThat(carry(s[0], s[1], big)).isEqualTo(big);
            final byte[] back = payload(100_000);
            assertThat(carry(s[1], s[0], back)).isEqualTo(back);
            assertThat(opener.sealedChannels()).isEqualTo(1);
            assertThat(listening.sealedChannels()).isEqualTo(1);
            assertThat(opener.recordChannels() + listening.recordChannels()).isZero();
        }
        finally
        {
            closeBoth(s);
        }
        final byte[] upstream = relay.upstream();
        assertThat(upstream[0]).as("a TLS handshake record opens the connection").isEqualTo((byte)0x16);
        assertThat(upstream.length).isGreaterThan(3 * SealedSocket.CHUNK_BYTES);
        assertThat(indexOf(upstream, MARK)).as("no plaintext on the wire").isEqualTo(-1);
        assertThat(indexOf(relay.downstream(), MARK)).as("no plaintext on the wire").isEqualTo(-1);
    }

    @Test
    void anEndThatDoesNotOfferSealedChunksKeepsBothOnTlsRecords() throws Exception
    {
        for (final boolean[] offers : new boolean[][]{{false, true}, {true, false}, {false, false}})
        {
            final PeerTls opener = tls(offers[0]);
            final PeerTls listening = tls(offers[1]);
            final Socket[] s = pair(opener, listening);
            try
            {
                assertThat(s[0]).as(Arrays.toString(offers)).isInstanceOf(SSLSocket.class);
                assertThat(s[1]).as(Arrays.toString(offers)).isInstanceOf(SSLSocket.class);
                final byte[] data = payload(SealedSocket.CHUNK_BYTES + 99);
                assertThat(carry(s[0], s[1], data)).isEqualTo(data);
                assertThat(carry(s[1], s[0], data)).isEqualTo(data);
                assertThat(opener.recordChannels()).isEqualTo(1);
                assertThat(listening.recordChannels()).isEqualTo(1);
                assertThat(opener.sealedChannels() + listening.sealedChannels()).isZero();
            }
            finally
            {
                closeBoth(s);
            }
        }
    }

    @Test
    void aBitFlippedOnTheWireAfterTheHandshakeIsRefusedByChunk() throws Exception
    {
        final Socket[] s = pair(tls(true), tls(true));
        try
        {
            // the listener has read the opener's secret: everything the opener sends from here on is sealed
            relay.flipUpstreamAt(relay.upstreamCount() + 5 + 100); // inside chunk 1's ciphertext (chunk 0 is below)
            final OutputStream out = s[0].getOutputStream();
            out.write(new byte[50]); // chunk 0: 5 + 50 + 16 = 71 bytes, untouched
            out.write(new byte[500]); // chunk 1: its byte 100 - 71 = 29 of the body flipped
            final InputStream in = s[1].getInputStream();
            assertThat(in.readNBytes(50)).isEqualTo(new byte[50]);
            assertThatThrownBy(() -> in.read()).isInstanceOf(IOException.class)
                .hasMessageStartingWith("sealed chunk 1 failed authentication");
        }
        finally
        {
            closeBoth(s);
        }
    }

    @Test
    void aClosingChunkIsACleanEndAndAnAbortIsNot() throws Exception
    {
        final Socket[] s = pair(tls(true), tls(true));
        try
        {
            s[0].getOutputStream().write(new byte[10]);
            s[0].shutdownOutput();
            final InputStream in = s[1].getInputStream();
            assertThat(in.readNBytes(10)).hasSize(10);
            assertThat(in.read()).as("the closing chunk ends the stream cleanly").isEqualTo(-1);
            s[1].getOutputStream().write(new byte[10]);
            s[1].close(); // an abort: no closing chunk
            final InputStream back = s[0].getInputStream();
            assertThat(back.readNBytes(10)).hasSize(10);
            assertThatThrownBy(back::read).isInstanceOf(java.io.EOFException.class)
                .hasMessageContaining("without its closing chunk");
        }
        finally
        {
            closeBoth(s);
        }
        final Socket[] t = pair(tls(true), tls(true));
        try
        {
            final OutputStream out = t[0].getOutputStream();
            out.write(new byte[10]);
            out.close(); // a deliberate end: the closing chunk, then the socket closes
            assertThat(t[0].isClosed()).isTrue();
            final InputStream in = t[1].getInputStream();
            assertThat(in.readNBytes(10)).hasSize(10);
            assertThat(in.read()).isEqualTo(-1);
        }
        finally
        {
            closeBoth(t);
        }
    }

    /** Closes both ends without JSSE's wait for the other's close_notify (as the engines' abort does). */
    private static void closeBoth(final Socket[] s) throws IOException
    {
        for (final Socket x : s)
        {
            if (!x.isClosed())
            {
                x.setSoTimeout(1);
            }
            x.close();
        }
    }

    private static int indexOf(final byte[] hay, final byte[] needle)
    {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++)
        {
            for (int j = 0; j < needle.length; j++)
            {
                if (hay[i + j] != needle[j])
                {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    /** A TCP relay on loopback for one connection at a time: records both directions, may flip one upstream byte. */
    private final class Relay implements AutoCloseable
    {
        private final ServerSocket front;
        private final int target;
        private final ByteArrayOutputStream up = new ByteArrayOutputStream();
        private final ByteArrayOutputStream down = new ByteArrayOutputStream();
        private final AtomicInteger upCount = new AtomicInteger();
        private final java.util.List<Socket> open = new java.util.ArrayList<>();
        private volatile long flipAt = -1;

        Relay(final int target) throws IOException
        {
            this.front = new ServerSocket(0, 4, InetAddress.getByName(HOST));
            this.target = target;
            pool.submit(this::accept);
        }

        int port()
        {
            return front.getLocalPort();
        }

        int upstreamCount()
        {
            return upCount.get();
        }

        void flipUpstreamAt(final long offset)
        {
            flipAt = offset;
        }

        synchronized byte[] upstream()
        {
            return up.toByteArray();
        }

        synchronized byte[] downstream()
        {
            return down.toByteArray();
        }

        private void accept()
        {
            while (!front.isClosed())
            {
                try
                {
                    final Socket a = front.accept();
                    final Socket b = new Socket(HOST, target);
                    synchronized (this)
                    {
                        open.add(a);
                        open.add(b);
                    }
                    pool.submit(() -> pump(a, b, true));
                    pool.submit(() -> pump(b, a, false));
                }
                catch (final IOException ex)
                {
                    return;
                }
            }
        }

        private void pump(final Socket from, final Socket to, final boolean upstream)
        {
            final byte[] buf = new byte[65536];
            try
            {
                final InputStream in = from.getInputStream();
                final OutputStream out = to.getOutputStream();
                int n;
                while ((n = in.read(buf)) > 0)
                {
                    if (upstream)
                    {
                        final int before = upCount.getAndAdd(n);
                        final long f = flipAt;
                        if (f >= before && f < before + n)
                        {
                            buf[(int)(f - before)] ^= 0x01;
                        }
                    }
                    synchronized (this)
                    {
                        (upstream ? up : down).write(buf, 0, n);
                    }
                    out.write(buf, 0, n);
                }
                to.shutdownOutput(); // half-close passes through: a closing chunk and then the other direction
            }
            catch (final IOException ex)
            {
                // the test closed its ends
            }
        }

        @Override
        public synchronized void close() throws IOException
        {
            front.close();
            for (final Socket s : open)
            {
                s.close();
            }
        }
    }
}
