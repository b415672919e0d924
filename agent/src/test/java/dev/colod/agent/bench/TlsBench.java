package dev.colod.agent.bench;

import dev.colod.agent.tls.Certs;
import dev.colod.agent.tls.PeerTls;
import dev.colod.agent.tls.SealedChunks;
import dev.colod.core.Transport;
import dev.colod.core.bench.CheckpointBench;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;

/**
 * What mutual TLS costs the replication link: 64 MiB (and 1 MiB) checkpoints per second over loopback, plaintext,
 * TLS 1.3 in records (JSSE) and TLS 1.3 with sealed chunks side by side in one run, alternating, three rounds each. Run:
 * {@code mvn -q install -DskipTests && mvn -q -pl agent exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.agent.bench.TlsBench}
 */
public final class TlsBench
{
    private TlsBench()
    {
    }

    /**
     * Mutual TLS between two ends on 127.0.0.1: a CA and one host certificate for both, written into {@code dir} the
     * first time. {@code sealed} false: TLS records only.
     */
    static PeerTls loopbackTls(final Path dir, final boolean sealed) throws Exception
    {
        if (!Files.exists(dir.resolve("ca.pem")))
        {
            final Certs.Issued ca = Certs.authority("bench CA", Duration.ofDays(1));
            ca.write(dir, "ca");
            Certs.host(ca, "127.0.0.1", Duration.ofDays(1)).write(dir, "host");
        }
        return PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("host.pem"), dir.resolve("host.key"),
            "127.0.0.1", sealed);
    }

    public static void main(final String[] args) throws Exception
    {
        final double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 4.0;
        final Path dir = Files.createTempDirectory("colod-tls-bench");
        final PeerTls records = loopbackTls(dir, false);
        final PeerTls sealed = loopbackTls(dir, true);
        SealedChunks.awaitWarm(60_000); // the JIT's AES-GCM for large calls, as colod warms it at start
        System.out.printf(Locale.ROOT, "# TLS cost on the replication link, loopback, %.1f s per point, %s, %s%n", seconds,
            Runtime.version(), javax.net.ssl.SSLContext.getDefault().getProvider());
        for (final int size : new int[]{1 << 20, 64 << 20})
        {
            double plain = 0;
            double inRecords = 0;
            double inChunks = 0;
            for (int round = 0; round < 3; round++)
            {
                plain += CheckpointBench.checkpoints(size, seconds, Transport.DEFAULT, Transport.DEFAULT)[0];
                inRecords += CheckpointBench.checkpoints(size, seconds, records, records)[0];
                inChunks += CheckpointBench.checkpoints(size, seconds, sealed, sealed)[0];
            }
            plain /= 3;
            inRecords /= 3;
            inChunks /= 3;
            System.out.printf(Locale.ROOT, "checkpoint %8d B: plaintext %7.1f /s (%.2f GB/s), TLS 1.3 records %7.1f /s " +
                "(%.2f GB/s): %.2fx, TLS 1.3 + sealed chunks %7.1f /s (%.2f GB/s): %.2fx%n", size, plain,
                plain * size / 1e9, inRecords, inRecords * size / 1e9, inRecords / plain, inChunks, inChunks * size / 1e9,
                inChunks / plain);
        }
        if (sealed.sealedChannels() == 0 || records.sealedChannels() != 0)
        {
            throw new IllegalStateException("the sealed run did not use sealed chunks, or the records run did");
        }
        try (var walk = Files.walk(dir))
        {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
