package dev.colod.agent.arbiter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.colod.core.spi.Arbiter;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.URI;
import java.util.List;
import java.util.function.LongConsumer;
import javax.net.ssl.SSLContext;

/**
 * The arbiter on etcd (docs/ARCHITECTURE.md, "Arbiter"). Per VM two keys under {@code prefix/vms/<vm>/}:
 * <ul>
 * <li>{@code owner} = "{@code <host> <lease id>}", attached to that host's lease: whoever holds it may serve. Its
 * mod revision is the fencing token (it only grows: a new holder creates the key anew, or takes it over from a
 * protected holder by writing it under its own lease; the holder never rewrites it).</li>
 * <li>{@code standby} = "{@code current|outdated <checkpoint> <host> <token>}", no lease: whether the other host's
 * image may be resumed. The primary writes "outdated" in the same transaction that lets it serve unprotected,
 * and "current" once a new session committed its first checkpoint; a failover claim requires "current" and
 * that the record did not change between its read and the claim.</li>
 * </ul>
 * The lease is renewed every third of its TTL; this host considers it valid until the TTL after the renewal
 * request was <em>sent</em>, less {@code safetyMarginMs} (monotonic clock).
 */
public final class EtcdArbiter implements Arbiter
{
    private static final Logger LOG = LoggerFactory.getLogger(EtcdArbiter.class);
    private static final long RETRY_MS = 200;
    /** How long a protected holder's record must stay unchanged before a claim takes the key from it. */
    static final long TAKEOVER_AFTER_NS = 50_000_000L;

    /**
     * @param endpoints        etcd client URLs (http)
     * @param prefix           key prefix, e.g. {@code /colod}
     * @param host             this host's name as the peers know it
     * @param leaseTtlMs       lease TTL asked for (etcd rounds up to whole seconds and to its minimum)
     * @param safetyMarginMs   stop serving unprotected this long before the lease could expire
     * @param requestTimeoutMs connect and read timeout of one request
     * @param tls              for https endpoints: trusts the etcd CA, presents the client certificate (null: http)
     */
    public record Settings(List<URI> endpoints, String prefix, String host, long leaseTtlMs, long safetyMarginMs,
                           int requestTimeoutMs, SSLContext tls)
    {
        /** Plain http endpoints. */
        public Settings(final List<URI> endpoints, final String prefix, final String host, final long leaseTtlMs,
            final long safetyMarginMs, final int requestTimeoutMs)
        {
            this(endpoints, prefix, host, leaseTtlMs, safetyMarginMs, requestTimeoutMs, null);
        }
    }

    private record Owner(String host, long lease, long token)
    {
    }

    private record Standby(boolean current, long checkpoint, String host, long token, long modRevision)
    {
    }

    private final Settings settings;
    private final String vm;
    private final EtcdGateway etcd;
    private final String ownerKey;
    private final String standbyKey;
    private final Thread renewer;

    private volatile boolean closed;
    private volatile long leaseId;
    private volatile long leaseTtlMs;
    private volatile long validUntilNs;
    private volatile long heldToken;
    private volatile long lastToken;
    private volatile String lastProblem = "";
    /** Bumped by every decision that makes a pending "current" write wrong (under this). */
    private long generation;
    private volatile LongConsumer onHeld = t -> { };
    private long spareLease;
    /** Under this: the holder token and standby revision a claim last saw, and when it first saw them. */
    private String takeoverSeen = "";
    private long takeoverSeenNs;
    /** Claims that took the key from a holder that was protected, without waiting for its lease. */
    private volatile long counterTakeovers;
    private long spareGrantedNs;

    public EtcdArbiter(final Settings settings, final String vm, final EtcdGateway.SocketFactory sockets)
    {
        this.settings = settings;
        this.vm = vm;
        this.etcd = new EtcdGateway(settings.endpoints(), settings.requestTimeoutMs(), sockets, settings.tls());
        this.ownerKey = settings.prefix() + "/vms/" + vm + "/owner";
        this.standbyKey = settings.prefix() + "/vms/" + vm + "/standby";
        this.renewer = new Thread(this::renewLoop, "colod-" + vm + "-lease");
        this.renewer.setDaemon(true);
        this.renewer.start();
    }

    @Override
    public boolean arbitrated()
    {
        return true;
    }

    @Override
    public boolean mayServeUnprotected()
    {
        return heldToken != 0 && System.nanoTime() - validUntilNs < 0;
    }

    @Override
    public long token()
    {
        return lastToken;
    }

    /**
     * The newest token this host held for the VM before this process (what the colod before it recorded in the
     * state directory): HELLOs never carry an older one, even before this process learns its own hold.
     */
    public EtcdArbiter knownToken(final long token)
    {
        learn(token);
        return this;
    }

    /** Told each token this host takes or adopts (on the thread that took it): a place to persist it. */
    public EtcdArbiter onHeldToken(final LongConsumer listener)
    {
        onHeld = listener;
        return this;
    }

    private void learn(final long token)
    {
        if (token > lastToken)
        {
            lastToken = token;
        }
    }

    /** Failover claims that took the key from a protected holder at once (no lease waited out). */
    public long takeovers()
    {
        return counterTakeovers;
    }

    /** The token of the current hold, 0 when this host holds no key. */
    public long heldToken()
    {
        return heldToken;
    }

    @Override
    public synchronized Verdict goUnprotected(final long lastAcknowledged)
    {
        generation++;
        try
        {
            final String outdated = "outdated " + lastAcknowledged + " " + settings.host();
            if (mayServeUnprotected())
            {
                final JsonNode r = txn(compareMod(ownerKey, heldToken), List.of(put(standbyKey, outdated + " " + heldToken, 0)),
                    List.of(range(ownerKey)));
                if (r.path("succeeded").asBoolean())
                {
                    return granted(heldToken, "holds the key");
                }
                final Owner o = owner(r);
                dropHold("the key changed: " + (o == null ? "gone" : "held by " + o.host()));
                if (o != null && !o.host().equals(settings.host()))
                {
                    return fence(o);
                }
            }
            final long sentNs = System.nanoTime();
            final long lease = grant();
            final JsonNode r = txn(compareCreate(ownerKey, 0),
                List.of(put(ownerKey, settings.host() + " " + lease, lease), put(standbyKey, outdated + " " + lastToken, 0)),
                List.of(range(ownerKey)));
            if (r.path("succeeded").asBoolean())
            {
                final long token = r.path("header").path("revision").asLong();
                hold(lease, token, sentNs);
                return granted(token, "took the key");
            }
            revoke(lease);
            final Owner o = owner(r);
            if (o == null)
            {
                return waitFor("the key vanished during the request; asking again");
            }
            if (o.host().equals(settings.host()))
            {
                return adopt(o, sentNs) ? goUnprotectedAgain(lastAcknowledged)
                    : waitFor("this host's earlier hold (token " + o.token() + ") is ending; asking again");
            }
            return fence(o);
        }
        catch (final IOException ex)
        {
            return waitFor(ex.getMessage());
        }
    }

    private Verdict goUnprotectedAgain(final long lastAcknowledged)
    {
        return mayServeUnprotected() ? goUnprotected(lastAcknowledged) : waitFor("adopted an earlier hold without time left");
    }

    /** The key holds this host's name under a lease of an earlier process: keep that lease if it still lives. */
    private boolean adopt(final Owner o, final long sentNs) throws IOException
    {
        learn(o.token()); // this host's own earlier hold: its token is this host's, whether its lease lives or not
        final long ttl = keepAlive(o.lease());
        if (ttl <= 0)
        {
            return false;
        }
        leaseTtlMs = ttl;
        hold(o.lease(), o.token(), sentNs);
        LOG.info("vm={} adopted this host's earlier hold of the key (token {}, lease {})", vm, o.token(), o.lease());
        return true;
    }

    @Override
    public void protectedBy(final long checkpoint)
    {
        final long mine;
        synchronized (this)
        {
            mine = ++generation;
        }
        final Thread t = new Thread(() ->
        {
            while (!closed)
            {
                synchronized (this)
                {
                    if (generation != mine)
                    {
                        return; // a later decision (unprotected, claim, resign) owns the record now
                    }
                    try
                    {
                        if (markCurrent(checkpoint))
                        {
                            return;
                        }
                    }
                    catch (final IOException ex)
                    {
                        lastProblem = ex.getMessage();
                    }
                }
                sleep(RETRY_MS);
            }
        }, "colod-" + vm + "-standby-current");
        t.setDaemon(true);
        t.start();
    }

    /** Under this: write "current" under this host's hold, taking the key first if no host holds it. */
    private boolean markCurrent(final long checkpoint) throws IOException
    {
        if (heldToken == 0)
        {
            final long sentNs = System.nanoTime();
            final long lease = grant();
            final JsonNode r = txn(compareCreate(ownerKey, 0), List.of(put(ownerKey, settings.host() + " " + lease, lease)),
                List.of(range(ownerKey)));
            if (!r.path("succeeded").asBoolean())
            {
                revoke(lease);
                final Owner o = owner(r);
                if (o != null && o.host().equals(settings.host()) && adopt(o, sentNs))
                {
                    return markCurrent(checkpoint);
                }
                lastProblem = o == null ? "the key vanished; asking again" : "host " + o.host() + " holds the key (token " +
                    o.token() + "): the standby cannot be marked current";
                return o != null; // another holder: nothing this host may write; it learns more when it next asks
            }
            hold(lease, r.path("header").path("revision").asLong(), sentNs);
        }
        final JsonNode r = txn(compareMod(ownerKey, heldToken),
            List.of(put(standbyKey, "current " + checkpoint + " " + settings.host() + " " + heldToken, 0)), List.of());
        if (r.path("succeeded").asBoolean())
        {
            LOG.info("vm={} standby recorded current as of checkpoint {} (token {})", vm, checkpoint, heldToken);
            lastProblem = "";
            return true;
        }
        dropHold("the key changed while marking the standby current");
        return false;
    }

    /** Why the standby record refuses a resume of an image at {@code committed}, or null if it allows it. */
    private static Verdict refusal(final Standby sb, final long committed, final String standbyKey)
    {
        if (sb == null)
        {
            return new Verdict(Verdict.Kind.REFUSED, 0, "no primary ever recorded this standby current (" + standbyKey +
                " is missing): there is nothing consistent to resume");
        }
        if (!sb.current())
        {
            return new Verdict(Verdict.Kind.REFUSED, sb.token(), "the standby is outdated: host " + sb.host() +
                " ran the VM unprotected after checkpoint " + sb.checkpoint() + " (token " + sb.token() +
                "); resuming here would roll clients back");
        }
        if (committed < sb.checkpoint())
        {
            return new Verdict(Verdict.Kind.REFUSED, sb.token(), "this standby has checkpoint " + committed +
                " but was recorded current as of " + sb.checkpoint());
        }
        return null;
    }

    @Override
    public String whyNotResumable(final long committed)
    {
        try
        {
            final Verdict v = refusal(standby(etcd.call("/v3/kv/range", rangeBody(standbyKey))), committed, standbyKey);
            return v == null ? null : v.detail();
        }
        catch (final Exception ex)
        {
            return null; // the store cannot be read now: the claim itself will wait for it
        }
    }

    @Override
    public synchronized Verdict claimForFailover(final long committed)
    {
        generation++;
        try
        {
            final Standby sb = standby(etcd.call("/v3/kv/range", rangeBody(standbyKey)));
            final Verdict refused = refusal(sb, committed, standbyKey);
            if (refused != null)
            {
                return refused;
            }
            // the owner as it is now: none (its lease ran out or was given up), or a holder that was protected when
            // it was lost (the standby is current, so it let out nothing the standby lacks): take the key from it
            // at once in one compare-and-swap on both records, instead of waiting out its lease. Its own next
            // step (goUnprotected or markCurrent) compares the owner key's revision and fails: it fences.
            final Owner holder = owner(etcd.call("/v3/kv/range", rangeBody(ownerKey)));
            if (holder != null && !holder.host().equals(settings.host()))
            {
                // a head start for a live holder that lost only the link: the same loss reaches it within the same
                // heartbeat timeout, and its goUnprotected (standby outdated) then wins the race. Take over only
                // when the same holder and the same standby record were already seen TAKEOVER_AFTER_NS ago.
                final long now = System.nanoTime();
                final String seen = holder.token() + "/" + sb.modRevision();
                if (!seen.equals(takeoverSeen))
                {
                    takeoverSeen = seen;
                    takeoverSeenNs = now;
                }
                if (now - takeoverSeenNs < TAKEOVER_AFTER_NS)
                {
                    return new Verdict(Verdict.Kind.WAIT, holder.token(), "host " + holder.host() + " was protected " +
                        "when it was lost (standby current as of checkpoint " + sb.checkpoint() + "): taking the key " +
                        "over unless it answers first");
                }
            }
            final long sentNs = System.nanoTime();
            final long lease = spareLease(sentNs);
            final ArrayNode compare = holder == null ? compareCreate(ownerKey, 0) : compareMod(ownerKey, holder.token());
            compare.add(EtcdGateway.compareMod(standbyKey, sb.modRevision()));
            final JsonNode r = txn(compare, List.of(put(ownerKey, settings.host() + " " + lease, lease),
                put(standbyKey, "outdated " + committed + " " + settings.host() + " 0", 0)), List.of(range(ownerKey)));
            if (r.path("succeeded").asBoolean())
            {
                spareLease = 0;
                final long token = r.path("header").path("revision").asLong();
                hold(lease, token, spareGrantedNs);
                if (holder != null)
                {
                    counterTakeovers++;
                    LOG.warn("vm={} took the VM's key over from host {} (token {}): it was protected when it was lost " +
                        "(standby current as of checkpoint {}), so no lease had to run out", vm, holder.host(),
                        holder.token(), sb.checkpoint());
                }
                return granted(token, (holder == null ? "took the key" : "took the key over from host " + holder.host()) +
                    " for a failover from checkpoint " + committed);
            }
            final Owner o = owner(r);
            return o == null ? waitFor("the standby record changed; asking again")
                : new Verdict(Verdict.Kind.WAIT, o.token(), "host " + o.host() + " holds the VM's key (token " + o.token() +
                    "): waiting out its lease");
        }
        catch (final IOException ex)
        {
            return waitFor(ex.getMessage());
        }
    }

    private long spareLease(final long nowNs) throws IOException
    {
        if (spareLease == 0 || nowNs - spareGrantedNs > leaseTtlMs * 1_000_000L / 2)
        {
            spareGrantedNs = nowNs;
            spareLease = grant();
        }
        return spareLease;
    }

    @Override
    public synchronized void abandonClaim(final long committed, final String why)
    {
        final long token = heldToken;
        if (token != 0)
        {
            try
            {
                final JsonNode r = txn(compareMod(ownerKey, token), List.of(put(standbyKey, "current " + committed + " " +
                    settings.host() + " " + token, 0)), List.of());
                if (r.path("succeeded").asBoolean())
                {
                    LOG.warn("vm={} standby recorded current again as of checkpoint {}: {} before anything resumed", vm,
                        committed, why);
                }
            }
            catch (final IOException ex)
            {
                LOG.warn("vm={} could not record the standby current again ({}): {}", vm, why, ex.getMessage());
            }
        }
        resign(why);
    }

    @Override
    public synchronized void resign(final String why)
    {
        generation++;
        final long lease = leaseId;
        dropHold(why);
        if (lease != 0)
        {
            try
            {
                revoke(lease);
                LOG.warn("vm={} gave up the VM's key ({}): lease {} revoked", vm, why, lease);
            }
            catch (final IOException ex)
            {
                LOG.warn("vm={} gave up the VM's key ({}), but revoking lease {} failed: {}; it runs out by itself", vm,
                    why, lease, ex.getMessage());
            }
        }
    }

    @Override
    public String describe()
    {
        final long leftMs = (validUntilNs - System.nanoTime()) / 1_000_000L;
        final String hold = heldToken != 0 ? "held by this host (token " + heldToken + ", lease " + Long.toHexString(leaseId) +
            (leftMs > 0 ? ", valid " + leftMs + " ms more" : ", could have lapsed") + ")"
            : "not held by this host" + (lastToken != 0 ? " (last token " + lastToken + ")" : "");
        return "etcd " + etcd.endpoints() + " key " + ownerKey + ": " + hold +
            (lastProblem.isEmpty() ? "" : "; last problem: " + lastProblem);
    }

    @Override
    public void close()
    {
        closed = true;
        renewer.interrupt();
    }

    // ---- lease ----------------------------------------------------------------------------------------------

    private void hold(final long lease, final long token, final long sentNs)
    {
        leaseId = lease;
        heldToken = token;
        learn(token);
        try
        {
            onHeld.accept(token);
        }
        catch (final RuntimeException ex)
        {
            LOG.error("vm={} could not record the held token {}: {}", vm, token, ex.toString());
        }
        validUntilNs = sentNs + (leaseTtlMs - settings.safetyMarginMs()) * 1_000_000L;
        renewer.interrupt(); // renew on the new lease's schedule
    }

    private void dropHold(final String why)
    {
        if (heldToken != 0)
        {
            LOG.warn("vm={} no longer holds the VM's key: {}", vm, why);
        }
        heldToken = 0;
        leaseId = 0;
        validUntilNs = System.nanoTime();
    }

    private void renewLoop()
    {
        while (!closed)
        {
            final long lease = leaseId;
            long pauseMs = Math.max(100, leaseTtlMs / 3);
            if (lease != 0)
            {
                final long sentNs = System.nanoTime();
                try
                {
                    final long ttl = keepAlive(lease);
                    synchronized (this)
                    {
                        if (leaseId == lease)
                        {
                            if (ttl > 0)
                            {
                                leaseTtlMs = ttl;
                                validUntilNs = sentNs + (ttl - settings.safetyMarginMs()) * 1_000_000L;
                            }
                            else
                            {
                                dropHold("lease " + Long.toHexString(lease) + " expired at the store");
                            }
                        }
                    }
                    lastProblem = "";
                }
                catch (final IOException ex)
                {
                    lastProblem = "renewing the lease: " + ex.getMessage();
                    pauseMs = Math.min(pauseMs, RETRY_MS);
                }
            }
            sleep(lease == 0 ? 1000 : pauseMs);
        }
    }

    private static void sleep(final long ms)
    {
        try
        {
            Thread.sleep(ms);
        }
        catch (final InterruptedException ignore)
        {
            // woken early: a new lease to renew, or closing
        }
    }

    private long grant() throws IOException
    {
        final ObjectNode body = EtcdGateway.object();
        body.put("TTL", Math.max(1, (settings.leaseTtlMs() + 999) / 1000));
        final JsonNode r = etcd.call("/v3/lease/grant", body);
        final long id = r.path("ID").asLong();
        final long ttlS = r.path("TTL").asLong();
        if (id == 0 || ttlS <= 0)
        {
            throw new IOException("lease grant answered without a lease: " + r);
        }
        leaseTtlMs = ttlS * 1000;
        if (leaseTtlMs <= settings.safetyMarginMs())
        {
            throw new IOException("the store grants a TTL of " + leaseTtlMs + " ms, not more than the safety margin of " +
                settings.safetyMarginMs() + " ms");
        }
        return id;
    }

    /** Remaining TTL in ms granted by the renewal, 0 if the lease is gone. */
    private long keepAlive(final long lease) throws IOException
    {
        final ObjectNode body = EtcdGateway.object();
        body.put("ID", Long.toString(lease));
        return etcd.call("/v3/lease/keepalive", body).path("TTL").asLong() * 1000;
    }

    private void revoke(final long lease) throws IOException
    {
        final ObjectNode body = EtcdGateway.object();
        body.put("ID", Long.toString(lease));
        etcd.call("/v3/lease/revoke", body);
    }

    // ---- transactions -----------------------------------------------------------------------------------------

    private JsonNode txn(final ArrayNode compare, final List<ObjectNode> success, final List<ObjectNode> failure)
        throws IOException
    {
        final ObjectNode body = EtcdGateway.object();
        body.set("compare", compare);
        body.putArray("success").addAll(success);
        body.putArray("failure").addAll(failure);
        return etcd.call("/v3/kv/txn", body);
    }

    private static ArrayNode compareCreate(final String key, final long createRevision)
    {
        final ArrayNode a = EtcdGateway.object().arrayNode();
        a.add(EtcdGateway.compareCreate(key, createRevision));
        return a;
    }

    private static ArrayNode compareMod(final String key, final long modRevision)
    {
        final ArrayNode a = EtcdGateway.object().arrayNode();
        a.add(EtcdGateway.compareMod(key, modRevision));
        return a;
    }

    private static ObjectNode put(final String key, final String value, final long lease)
    {
        final ObjectNode p = EtcdGateway.object();
        p.put("key", EtcdGateway.b64(key));
        p.put("value", EtcdGateway.b64(value));
        if (lease != 0)
        {
            p.put("lease", Long.toString(lease));
        }
        final ObjectNode op = EtcdGateway.object();
        op.set("requestPut", p);
        return op;
    }

    private static ObjectNode range(final String key)
    {
        final ObjectNode op = EtcdGateway.object();
        op.set("requestRange", rangeBody(key));
        return op;
    }

    private static ObjectNode rangeBody(final String key)
    {
        final ObjectNode r = EtcdGateway.object();
        r.put("key", EtcdGateway.b64(key));
        return r;
    }

    /** The owner key from a range, or from a failed transaction's range (null: no key). */
    private static Owner owner(final JsonNode answer)
    {
        if (answer.has("kvs"))
        {
            return ownerOf(answer.path("kvs"));
        }
        for (final JsonNode resp : answer.path("responses"))
        {
            final Owner o = ownerOf(resp.path("response_range").path("kvs"));
            if (o != null)
            {
                return o;
            }
        }
        return null;
    }

    private static Owner ownerOf(final JsonNode kvs)
    {
        if (!kvs.isArray() || kvs.size() == 0)
        {
            return null;
        }
        final JsonNode kv = kvs.get(0);
        final String[] v = EtcdGateway.unb64(kv.get("value")).split(" ");
        return new Owner(v[0], v.length > 1 ? parseLong(v[1]) : 0, kv.path("mod_revision").asLong());
    }

    private static Standby standby(final JsonNode range)
    {
        final JsonNode kvs = range.path("kvs");
        if (!kvs.isArray() || kvs.size() == 0)
        {
            return null;
        }
        final JsonNode kv = kvs.get(0);
        final String[] v = EtcdGateway.unb64(kv.get("value")).split(" ");
        return new Standby("current".equals(v[0]), v.length > 1 ? parseLong(v[1]) : 0, v.length > 2 ? v[2] : "?",
            v.length > 3 ? parseLong(v[3]) : 0, kv.path("mod_revision").asLong());
    }

    private static long parseLong(final String s)
    {
        try
        {
            return Long.parseLong(s);
        }
        catch (final NumberFormatException ex)
        {
            return 0;
        }
    }

    private Verdict granted(final long token, final String how)
    {
        lastProblem = "";
        return new Verdict(Verdict.Kind.GRANTED, token, how + " (token " + token + ")");
    }

    private Verdict fence(final Owner o)
    {
        lastToken = Math.max(lastToken, heldToken);
        return new Verdict(Verdict.Kind.FENCE, o.token(), "host " + o.host() + " holds the VM's key (token " + o.token() +
            "): it runs the VM now");
    }

    private Verdict waitFor(final String why)
    {
        lastProblem = why;
        return new Verdict(Verdict.Kind.WAIT, lastToken, why);
    }
}
