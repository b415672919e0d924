package dev.colod.agent.arbiter;

import dev.colod.buffer.Prerequisites;
import dev.colod.core.spi.Arbiter.Verdict;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** The etcd arbiter against a real etcd: the rules of docs/ARCHITECTURE.md, "Arbiter", one by one. */
class EtcdArbiterTest
{
    @TempDir
    Path dir;
    private LocalEtcd etcd;
    private final java.util.List<EtcdArbiter> arbiters = new java.util.ArrayList<>();

    private static int freePort() throws Exception
    {
        try (ServerSocket s = new ServerSocket(0))
        {
            return s.getLocalPort();
        }
    }

    @BeforeEach
    void start() throws Exception
    {
        Prerequisites.require("the etcd arbiter", LocalEtcd.missing());
        etcd = LocalEtcd.start(List.of("127.0.0.1"), freePort(), freePort(), null, dir.resolve("etcd"), dir.resolve("etcd.log"));
    }

    @AfterEach
    void stop()
    {
        arbiters.forEach(EtcdArbiter::close);
        if (etcd != null)
        {
            etcd.close(); // its data lives in the test's temporary directory
        }
    }

    private EtcdArbiter arbiter(final String host, final List<URI> endpoints)
    {
        final EtcdArbiter a = new EtcdArbiter(new EtcdArbiter.Settings(endpoints, "/colod-test", host, 2000, 500, 500), "vm1",
            Socket::new);
        arbiters.add(a);
        return a;
    }

    private EtcdArbiter arbiter(final String host)
    {
        return arbiter(host, etcd.clientUrls());
    }

    @Test
    void oneHolderAtATimeTheStandbyRecordDecidesAndTokensOnlyGrow() throws Exception
    {
        final EtcdArbiter a = arbiter("host-a");
        final EtcdArbiter b = arbiter("host-b");

        // never recorded current: no failover to an image nobody vouched for
        assertThat(b.claimForFailover(5).kind()).isEqualTo(Verdict.Kind.REFUSED);

        final Verdict first = a.goUnprotected(0);
        assertThat(first.kind()).isEqualTo(Verdict.Kind.GRANTED);
        assertThat(a.mayServeUnprotected()).isTrue();
        final long t1 = first.token();
        assertThat(t1).isPositive();
        final Verdict outdated = b.claimForFailover(5);
        assertThat(outdated.kind()).isEqualTo(Verdict.Kind.REFUSED);
        assertThat(outdated.detail()).contains("outdated").contains("host-a");

        a.protectedBy(5);
        await().atMost(10, TimeUnit.SECONDS).until(() -> b.claimForFailover(4).detail().contains("current as of 5"));
        assertThat(b.claimForFailover(4).kind()).as("an image older than the record").isEqualTo(Verdict.Kind.REFUSED);

        a.resign("test");
        assertThat(a.mayServeUnprotected()).isFalse();
        final Verdict taken = b.claimForFailover(5);
        assertThat(taken.kind()).isEqualTo(Verdict.Kind.GRANTED);
        assertThat(taken.token()).isGreaterThan(t1);
        assertThat(b.mayServeUnprotected()).isTrue();
        assertThat(b.takeovers()).as("nobody held the key: no takeover").isZero();

        final Verdict fenced = a.goUnprotected(5);
        assertThat(fenced.kind()).isEqualTo(Verdict.Kind.FENCE);
        assertThat(fenced.token()).isEqualTo(taken.token());
        assertThat(fenced.detail()).contains("host-b");
        assertThat(a.token()).isEqualTo(t1);
    }

    /**
     * Failover as fast as the heartbeat allows (ARCHITECTURE, "Takeover without waiting for the lease"): a holder that
     * was protected when it was lost (standby current) loses the key at once to the claim, under a live lease, and
     * its own next step fences it; whichever of the two transactions comes first wins, the other is refused.
     */
    @Test
    void aProtectedHolderLosesTheKeyAtOnceAndTheLoserOfTheRaceFences() throws Exception
    {
        final EtcdArbiter a = arbiter("host-a");
        final EtcdArbiter b = arbiter("host-b");
        final long t1 = a.goUnprotected(0).token();
        a.protectedBy(3);
        await().atMost(10, TimeUnit.SECONDS).until(() -> b.claimForFailover(2).detail().contains("current as of 3"));

        // the secondary first: the key moves although a's lease runs on; a's next step fences it
        assertThat(a.mayServeUnprotected()).as("a's lease is live").isTrue();
        // the first claim that sees a protected holder gives it a head start (it may still answer first)
        Verdict taken = b.claimForFailover(3);
        assertThat(taken.kind()).isEqualTo(Verdict.Kind.WAIT);
        assertThat(taken.detail()).contains("taking the key over unless it answers first");
        Thread.sleep(EtcdArbiter.TAKEOVER_AFTER_NS / 1_000_000 + 10);
        taken = b.claimForFailover(3);
        assertThat(taken.kind()).isEqualTo(Verdict.Kind.GRANTED);
        assertThat(taken.detail()).contains("over from host host-a");
        assertThat(taken.token()).isGreaterThan(t1);
        assertThat(b.takeovers()).isEqualTo(1);
        final Verdict fenced = a.goUnprotected(3);
        assertThat(fenced.kind()).isEqualTo(Verdict.Kind.FENCE);
        assertThat(fenced.token()).isEqualTo(taken.token());
        assertThat(a.token()).isEqualTo(t1);

        // the old holder's lease ending does not take the key from the new one
        a.close();
        Thread.sleep(3_000); // longer than the 2 s lease: etcd expires a's lease meanwhile
        final Verdict still = b.goUnprotected(3);
        assertThat(still.kind()).as("b still holds the key: %s", still.detail()).isEqualTo(Verdict.Kind.GRANTED);
    }

    @Test
    void aPrimaryThatGoesUnprotectedFirstWinsTheRaceAndTheClaimIsRefused() throws Exception
    {
        final EtcdArbiter a = arbiter("host-a");
        final EtcdArbiter b = arbiter("host-b");
        a.goUnprotected(0);
        a.protectedBy(3);
        await().atMost(10, TimeUnit.SECONDS).until(() -> b.claimForFailover(2).detail().contains("current as of 3"));
        // the link is cut: the primary asks first and lets its output out; the standby is outdated now
        assertThat(a.goUnprotected(3).kind()).isEqualTo(Verdict.Kind.GRANTED);
        final Verdict refused = b.claimForFailover(3);
        assertThat(refused.kind()).isEqualTo(Verdict.Kind.REFUSED);
        assertThat(refused.detail()).contains("outdated").contains("host-a");
        assertThat(b.takeovers()).isZero();
    }

    @Test
    void aHolderStopsServingBeforeItsLeaseCanLapseAndOnlyThenTheOtherHostGetsTheKey() throws Exception
    {
        // an unprotected holder (standby outdated): its lease is what keeps the key; when renewals stop it stops
        // serving first, then the key is free, and only a current standby could take it (none here: refused)
        final EtcdArbiter a = arbiter("host-a");
        final EtcdArbiter b = arbiter("host-b");
        assertThat(a.goUnprotected(0).kind()).isEqualTo(Verdict.Kind.GRANTED);
        a.close(); // renewals stop, as when the host freezes or loses the store
        boolean sawAStopFirst = false;
        while (true)
        {
            final boolean aServes = a.mayServeUnprotected();
            final boolean keyFree = b.goUnprotected(0).kind() == Verdict.Kind.GRANTED;
            if (keyFree)
            {
                assertThat(aServes).as("the old holder still considered its lease valid when the key moved").isFalse();
                break;
            }
            sawAStopFirst |= !aServes;
            Thread.sleep(20);
        }
        assertThat(sawAStopFirst).isTrue();
    }

    @Test
    void aRestartedAgentOnTheSameHostAdoptsItsLiveHold() throws Exception
    {
        final EtcdArbiter before = arbiter("host-a");
        final long token = before.goUnprotected(0).token();
        final EtcdArbiter after = arbiter("host-a");
        final Verdict v = after.goUnprotected(0);
        assertThat(v.kind()).isEqualTo(Verdict.Kind.GRANTED);
        assertThat(v.token()).isEqualTo(token);
    }

    @Test
    void overTlsWithClientCertificatesAndOnlyWithThem() throws Exception
    {
        final dev.colod.agent.tls.Certs.Issued ca = dev.colod.agent.tls.Certs.authority("etcd CA", java.time.Duration.ofDays(1));
        final Path tls = dir.resolve("etcd-tls");
        ca.write(tls, "ca");
        dev.colod.agent.tls.Certs.host(ca, "127.0.0.1", java.time.Duration.ofDays(1)).write(tls, "server");
        dev.colod.agent.tls.Certs.host(ca, "host-a", java.time.Duration.ofDays(1)).write(tls, "client");
        final javax.net.ssl.SSLContext client = dev.colod.agent.tls.PeerTls.context("TLS", tls.resolve("ca.pem"),
            tls.resolve("client.pem"), tls.resolve("client.key"));
        try (LocalEtcd secure = LocalEtcd.start(List.of("127.0.0.1"), freePort(), freePort(), null, dir.resolve("etcd-s"),
            dir.resolve("etcd-s.log"), new LocalEtcd.Tls(tls.resolve("ca.pem"), tls.resolve("server.pem"),
                tls.resolve("server.key"), client)))
        {
            assertThat(secure.clientUrls().get(0).getScheme()).isEqualTo("https");
            final EtcdArbiter a = new EtcdArbiter(new EtcdArbiter.Settings(secure.clientUrls(), "/colod-test", "host-a", 2000,
                500, 2000, client), "vm1", Socket::new);
            arbiters.add(a);
            assertThat(a.goUnprotected(0).kind()).isEqualTo(Verdict.Kind.GRANTED);

            // no client certificate: refused by etcd, so no grant
            final javax.net.ssl.SSLContext anonymous = dev.colod.agent.tls.PeerTls.context("TLS", tls.resolve("ca.pem"), null,
                null);
            final EtcdArbiter b = new EtcdArbiter(new EtcdArbiter.Settings(secure.clientUrls(), "/colod-test", "host-b", 2000,
                500, 2000, anonymous), "vm2", Socket::new);
            arbiters.add(b);
            final Verdict v = b.goUnprotected(0);
            assertThat(v.kind()).isEqualTo(Verdict.Kind.WAIT);
            assertThat(v.detail()).contains(secure.clientUrls().get(0).toString());
        }
    }

    @Test
    void anUnreachableStoreMeansWaitAndNamesTheEndpoint() throws Exception
    {
        final URI nowhere = URI.create("http://127.0.0.1:" + freePort());
        final EtcdArbiter a = arbiter("host-a", List.of(nowhere));
        final Verdict v = a.goUnprotected(0);
        assertThat(v.kind()).isEqualTo(Verdict.Kind.WAIT);
        assertThat(v.detail()).contains(nowhere.toString());
        assertThat(a.mayServeUnprotected()).isFalse();

        // a second endpoint that answers is used
        final EtcdArbiter b = arbiter("host-b", List.of(nowhere, etcd.clientUrls().get(0)));
        assertThat(b.goUnprotected(0).kind()).isEqualTo(Verdict.Kind.GRANTED);

        // the store dies: what was granted runs out with the lease; nothing new is granted (the standby could not
        // be marked outdated)
        etcd.close();
        assertThat(b.mayServeUnprotected()).isTrue();
        assertThat(b.goUnprotected(0).kind()).isEqualTo(Verdict.Kind.WAIT);
        await().atMost(10, TimeUnit.SECONDS).until(() -> !b.mayServeUnprotected());
    }
}
