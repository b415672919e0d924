package dev.colod.core.spi;

/**
 * Who has the right to serve a VM: one key per VM in a lease store (etcd), held under a lease by whichever host
 * may serve, and one record of whether the standby is current. The engines ask; they never decide alone when the
 * replication link is gone (docs/ARCHITECTURE.md, "Arbiter").
 * <p>
 * Rules the engines keep with it:
 * <ul>
 * <li>The primary lets output out unacknowledged (unprotected) only after {@link #goUnprotected} said
 * {@link Verdict.Kind#GRANTED}, and only while {@link #mayServeUnprotected()} stays true.</li>
 * <li>The secondary resumes the VM only after {@link #claimForFailover} said {@link Verdict.Kind#GRANTED}.</li>
 * <li>The token of a grant travels in the protocol: a peer that has seen a newer one refuses an older one.</li>
 * </ul>
 * Calls may block for a network round trip (bounded by the implementation's request timeout); none is made on a
 * path that holds a checkpoint up.
 */
public interface Arbiter extends AutoCloseable
{
    /** No arbiter: every request is granted at once (labs only: a partition runs two copies). */
    Arbiter NONE = new Arbiter()
    {
        @Override
        public boolean arbitrated()
        {
            return false;
        }

        @Override
        public boolean mayServeUnprotected()
        {
            return true;
        }

        @Override
        public long token()
        {
            return 0;
        }

        @Override
        public Verdict goUnprotected(final long lastAcknowledged)
        {
            return new Verdict(Verdict.Kind.GRANTED, 0, "unarbitrated");
        }

        @Override
        public void protectedBy(final long checkpoint)
        {
        }

        @Override
        public Verdict claimForFailover(final long committed)
        {
            return new Verdict(Verdict.Kind.GRANTED, 0, "unarbitrated");
        }

        @Override
        public void resign(final String why)
        {
        }

        @Override
        public String describe()
        {
            return "none (unarbitrated: a partition runs two copies)";
        }

        @Override
        public void close()
        {
        }
    };

    /**
     * An answer of the arbiter.
     *
     * @param kind   what the caller may do
     * @param token  the fencing token: of this host's hold when GRANTED, of the other holder when FENCE
     * @param detail why, for logs and status
     */
    record Verdict(Kind kind, long token, String detail)
    {
        public enum Kind
        {
            /** Go ahead: this host holds the VM's key. */
            GRANTED,
            /** Not now (store unreachable, the other host's lease still runs): keep output held, ask again. */
            WAIT,
            /** Another host holds the key with a newer token: it runs the VM; stop here for good. */
            FENCE,
            /** Never (the standby is outdated: resuming it would roll clients back): stand by. */
            REFUSED
        }
    }

    /** False for {@link #NONE}. */
    boolean arbitrated();

    /**
     * Whether this host may let output out unacknowledged right now: it holds the key under a lease that cannot
     * have expired yet, counting from when the renewal that granted it was sent, less a safety margin. Cheap;
     * polled by the primary.
     */
    boolean mayServeUnprotected();

    /** The token of this host's newest hold (kept after the hold lapsed; 0 if it never held the key). */
    long token();

    /**
     * Primary, protection lost: take or keep the key and mark the standby outdated (its image stops at
     * {@code lastAcknowledged}) in one step, so the standby can never resume a state older than output clients
     * have seen.
     */
    Verdict goUnprotected(long lastAcknowledged);

    /** Primary, protected again: the standby is current as of {@code checkpoint}. Asynchronous, retried. */
    void protectedBy(long checkpoint);

    /**
     * Secondary: one attempt to take the key for a failover. Granted only when no host holds it (the old
     * holder's lease ran out or was given up) and the standby is current, with {@code committed} its image.
     */
    Verdict claimForFailover(long committed);

    /**
     * Secondary, before an operator's failover fences anything: why the store would refuse to let this standby
     * (image at {@code committed}) resume — it is outdated, or older than recorded — or null if it would not (or
     * cannot tell: the claim decides). Reads only.
     */
    default String whyNotResumable(final long committed)
    {
        return null;
    }

    /**
     * Secondary: a granted claim is given up before anything resumed (colod stops, or the primary came back):
     * the standby, at {@code committed}, is recorded current again (the claim had marked it outdated) and the key
     * given up, so a later failover (e.g. by the next colod here) may still resume it.
     */
    default void abandonClaim(final long committed, final String why)
    {
        resign(why);
    }

    /** Give up the key now (after fencing, or a claim that is no longer wanted), so the other host need not wait. */
    void resign(String why);

    /** One line for status and logs: store, key, holder, token, lease left. */
    String describe();

    @Override
    void close();
}
