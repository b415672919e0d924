package dev.colod.agent.tls;

import dev.colod.core.ColoConfig;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.status.ColoCounters;
import dev.colod.core.testing.EnginePair;
import dev.colod.core.testing.MemorySink;
import dev.colod.core.testing.MemoryVm;
import dev.colod.core.testing.RecordingOutputCommit;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

/**
 * Mutual TLS on real engines over loopback: a good pair protects; a peer with no certificate, one from another
 * CA, an expired one, one for another name, or plaintext is refused before any VM state moves, with the reason,
 * and the secondary still serves the good primary afterwards.
 */
class PeerTlsTest
{
    private static final String HOST = "127.0.0.1";

    @TempDir
    Path dir;
    private Certs.Issued ca;

    @BeforeEach
    void pki() throws Exception
    {
        ca = Certs.authority("test CA", Duration.ofDays(1));
        ca.write(dir, "ca");
        Certs.host(ca, HOST, Duration.ofDays(1)).write(dir, "good");
        Certs.host(ca, "198.18.9.9", Duration.ofDays(1)).write(dir, "wrong-name");
        final Instant past = Instant.now().minus(Duration.ofDays(10));
        Certs.host(ca, HOST, past, past.plus(Duration.ofDays(1))).write(dir, "expired");
        final Certs.Issued other = Certs.authority("other CA", Duration.ofDays(1));
        other.write(dir.resolve("other"), "ca");
        Certs.host(other, HOST, Duration.ofDays(1)).write(dir, "other-ca");
    }

    private PeerTls tls(final String name) throws Exception
    {
        return PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve(name + ".pem"), dir.resolve(name + ".key"),
            HOST);
    }

    private static ColoConfig config()
    {
        return EnginePair.fastConfig(ColoConfig.Mode.STRICT).conclude();
    }

    @Test
    void onlyAPeerWithAGoodCertificateForTheConfiguredNameIsServed() throws Exception
    {
        final MemorySink sink = new MemorySink();
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = new SecondaryEngine(config(), new InetSocketAddress(InetAddress.getByName(HOST), 0),
            sink, counters, ProtocolTap.NONE, NanoClock.SYSTEM).transport(tls("good")).start();
             MemoryVm vm = new MemoryVm(1 << 16, false))
        {
            final InetSocketAddress at = secondary.localAddress();
            int refused = 0;
            for (final String bad : new String[]{"wrong-name", "expired", "other-ca"})
            {
                assertThatThrownBy(() -> PrimaryEngine.probe(config(), at, tls(bad))).as(bad).isInstanceOf(java.io.IOException.class);
                refused++;
                final int want = refused;
                await().atMost(10, TimeUnit.SECONDS).until(() -> counters.authFailures.get() == want);
            }
            // plaintext against the TLS port
            assertThatThrownBy(() -> PrimaryEngine.probe(config(), at, Transport.DEFAULT)).isInstanceOf(java.io.IOException.class);
            await().atMost(10, TimeUnit.SECONDS).until(() -> counters.authFailures.get() == 4);
            // a TLS client without any certificate
            final javax.net.ssl.SSLContext anonymous = javax.net.ssl.SSLContext.getInstance("TLSv1.3");
            final javax.net.ssl.TrustManagerFactory tmf = javax.net.ssl.TrustManagerFactory.getInstance("PKIX");
            final java.security.KeyStore trust = java.security.KeyStore.getInstance("PKCS12");
            trust.load(null, null);
            trust.setCertificateEntry("ca", ca.cert());
            tmf.init(trust);
            anonymous.init(null, tmf.getTrustManagers(), null);
            try (javax.net.ssl.SSLSocket s = (javax.net.ssl.SSLSocket)anonymous.getSocketFactory().createSocket(at.getAddress(),
                at.getPort()))
            {
                s.setSoTimeout(5000);
                s.startHandshake(); // TLS 1.3: the server's refusal of the missing certificate arrives with the first read
                assertThatThrownBy(() -> s.getInputStream().read()).isInstanceOf(java.io.IOException.class);
            }
            catch (final javax.net.ssl.SSLException expected)
            {
                // refused during the handshake: also right
            }
            await().atMost(10, TimeUnit.SECONDS).until(() -> counters.authFailures.get() == 5);
            assertThat(sink.stagedIds).as("no VM state moved for a refused peer").isEmpty();
            assertThat(counters.sessionsStarted.get()).isZero();

            // the good primary is served, in TLS, and its probe sees the secondary standing by
            assertThat(PrimaryEngine.probe(config(), at, tls("good"))).isEqualTo(Welcome.OK);
            final PrimaryEngine primary = new PrimaryEngine(config(), at, vm, new RecordingOutputCommit(), new ColoCounters(),
                ProtocolTap.NONE, NanoClock.SYSTEM).transport(tls("good")).start();
            try
            {
                await().atMost(20, TimeUnit.SECONDS).until(() -> primary.counters().checkpointsCompleted.get() >= 3);
            }
            finally
            {
                primary.close();
            }
            assertThat(counters.authFailures.get()).isEqualTo(5);
        }
    }

    @Test
    void buildsWithAndWithoutSealedChunksProtectTogether() throws Exception
    {
        for (final boolean[] offers : new boolean[][]{{true, true}, {false, true}, {true, false}})
        {
            final PeerTls primaryTls = PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("good.pem"),
                dir.resolve("good.key"), HOST, offers[0]);
            final PeerTls secondaryTls = PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("good.pem"),
                dir.resolve("good.key"), HOST, offers[1]);
            final MemorySink sink = new MemorySink();
            try (SecondaryEngine secondary = new SecondaryEngine(config(), new InetSocketAddress(InetAddress.getByName(HOST), 0),
                sink, new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM).transport(secondaryTls).start();
                 MemoryVm vm = new MemoryVm(1 << 20, false);
                 PrimaryEngine primary = new PrimaryEngine(config(), secondary.localAddress(), vm, new RecordingOutputCommit(),
                     new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM).transport(primaryTls).start())
            {
                await().atMost(20, TimeUnit.SECONDS).until(() -> primary.counters().checkpointsCompleted.get() >= 3);
                final boolean sealed = offers[0] && offers[1];
                assertThat(sealed ? primaryTls.sealedChannels() : primaryTls.recordChannels())
                    .as("channels in %s, offers %s", sealed ? "sealed chunks" : "TLS records", java.util.Arrays.toString(offers))
                    .isGreaterThanOrEqualTo(2);
                assertThat(sealed ? primaryTls.recordChannels() : primaryTls.sealedChannels()).isZero();
                assertThat(sealed ? secondaryTls.recordChannels() : secondaryTls.sealedChannels()).isZero();
            }
        }
    }

    @Test
    void aPrimaryRefusesASecondaryWithTheWrongName() throws Exception
    {
        final ColoCounters counters = new ColoCounters();
        try (SecondaryEngine secondary = new SecondaryEngine(config(), new InetSocketAddress(InetAddress.getByName(HOST), 0),
            new MemorySink(), counters, ProtocolTap.NONE, NanoClock.SYSTEM).transport(tls("wrong-name")).start())
        {
            assertThatThrownBy(() -> PrimaryEngine.probe(config(), secondary.localAddress(), tls("good")))
                .hasMessageContaining("not the configured peer " + HOST);
        }
    }

    @Test
    void badFilesAreNamed() throws Exception
    {
        Files.writeString(dir.resolve("junk.pem"), "not a certificate");
        assertThatThrownBy(() -> PeerTls.load(Transport.DEFAULT, dir.resolve("junk.pem"), dir.resolve("good.pem"),
            dir.resolve("good.key"), HOST)).hasMessageContaining("junk.pem");
        assertThatThrownBy(() -> PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("good.pem"),
            dir.resolve("missing.key"), HOST)).hasMessageContaining("missing.key").hasMessageContaining("no such file");
        assertThatThrownBy(() -> PeerTls.load(Transport.DEFAULT, dir.resolve("ca.pem"), dir.resolve("good.pem"),
            dir.resolve("expired.key"), HOST)).hasMessageContaining("expired.key").hasMessageContaining("does not belong");
    }
}
