package dev.colod.agent.bench;

import dev.colod.agent.tls.PeerTls;
import dev.colod.agent.tls.SealedChunks;
import dev.colod.core.Transport;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.function.Function;

/**
 * One stream over loopback, side by side (three alternating rounds): plaintext, JSSE's mutual TLS 1.3 (colod's
 * {@link PeerTls} with sealed chunks off), PeerTls as colod runs it (the TLS 1.3 handshake, then sealed chunks) and
 * {@link SealedChunks} alone at three chunk sizes over the plain socket. 1 MiB writes, the reader on its own thread.
 * What the sealed chunks buy the replication link (issue 23). Run:
 * {@code mvn -q install -DskipTests && mvn -q -pl agent exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.agent.bench.SealedBench}
 */
public final class SealedBench
{
    private static final int WRITE = 1 << 20;

    private SealedBench()
    {
    }

    public static void main(final String[] args) throws Exception
    {
        final long bytes = (args.length > 0 ? Long.parseLong(args[0]) : 4096) << 20;
        final Path dir = Files.createTempDirectory("colod-sealed-bench");
        final PeerTls tls = TlsBench.loopbackTls(dir, false);
        final PeerTls sealedTls = TlsBench.loopbackTls(dir, true);
        SealedChunks.awaitWarm(60_000);
        final byte[] secret = "bench secret, exchanged inside TLS in production".getBytes();
        System.out.printf(Locale.ROOT, "# one stream over loopback, %d MiB per point, %s%n", bytes >> 20, Runtime.version());
        final double[] sum = new double[6];
        for (int round = 0; round < 3; round++)
        {
            sum[0] += stream(Transport.DEFAULT, bytes, o -> o, i -> i);
            sum[1] += stream(tls, bytes, o -> o, i -> i);
            sum[2] += stream(sealedTls, bytes, o -> o, i -> i);
            for (int k = 0; k < 3; k++)
            {
                final int chunk = new int[]{16 << 10, 256 << 10, 1 << 20}[k];
                sum[3 + k] += stream(Transport.DEFAULT, bytes,
                    o -> new SealedChunks.Output(o, SealedChunks.Keys.derive(secret, true), chunk),
                    i -> new SealedChunks.Input(i, SealedChunks.Keys.derive(secret, true)));
            }
        }
        final String[] names = {"plaintext", "JSSE TLS 1.3", "TLS 1.3 handshake, then sealed chunks (PeerTls)", "sealed, 16 KiB chunks", "sealed, 256 KiB chunks",
            "sealed, 1 MiB chunks"};
        for (int i = 0; i < names.length; i++)
        {
            System.out.printf(Locale.ROOT, "| %s | %.2f GB/s | %.2fx |%n", names[i], sum[i] / 3, sum[i] / sum[0]);
        }
        try (var walk = Files.walk(dir))
        {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    /** GB/s of {@code bytes} from a writer to a reader thread through {@code transport} and the stream wrappers. */
    private static double stream(final Transport transport, final long bytes, final Function<OutputStream, OutputStream> out,
        final Function<InputStream, InputStream> in) throws Exception
    {
        try (ServerSocket ss = transport.newServerSocket())
        {
            ss.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            final CompletableFuture<Long> read = CompletableFuture.supplyAsync(() ->
            {
                try (Socket s = transport.secureServer(ss.accept()); InputStream i = in.apply(s.getInputStream()))
                {
                    final byte[] b = new byte[WRITE];
                    long n = 0;
                    for (int r; (r = i.read(b)) > 0; )
                    {
                        n += r;
                    }
                    return n;
                }
                catch (final IOException ex)
                {
                    throw new java.io.UncheckedIOException(ex);
                }
            });
            final Socket c = transport.newSocket();
            c.connect(ss.getLocalSocketAddress());
            final byte[] b = new byte[WRITE];
            new java.util.Random(1).nextBytes(b);
            final long t0;
            try (Socket s = transport.secureClient(c); OutputStream o = out.apply(s.getOutputStream()))
            {
                t0 = System.nanoTime();
                for (long sent = 0; sent < bytes; sent += WRITE)
                {
                    o.write(b);
                }
                o.close(); // sealed: the closing chunk; TLS: close_notify; then the socket's end
            }
            final long got = read.get();
            final double gbs = got / ((System.nanoTime() - t0) / 1e9) / 1e9;
            if (got != bytes)
            {
                throw new IllegalStateException("read " + got + " of " + bytes + " bytes");
            }
            return gbs;
        }
    }
}
