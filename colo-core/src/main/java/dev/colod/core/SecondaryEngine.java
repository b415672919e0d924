package dev.colod.core;

import dev.colod.core.protocol.AuthenticationException;
import dev.colod.core.protocol.ColoChannel;
import dev.colod.core.protocol.ColoCommand;
import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.VmShape;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.status.ColoCounters;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.security.SecureRandom;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import java.util.function.LongConsumer;

/**
 * The secondary side for one VM: listens for its primary, receives checkpoints into the sink's staging area,
 * commits each wholly received one, and fails over (resumes the VM from the last committed checkpoint) when
 * the primary is lost or an operator asks. A protocol error ends the session, never the standby image: the
 * secondary then waits for the primary to reconnect.
 * <p>
 * Threads: an acceptor (handshakes, one session at a time) and a session thread per session. Failover runs
 * on the session thread after its exit path, so a commit in progress always finishes first.
 */
public final class SecondaryEngine extends EngineBase<SecondaryEngine>
{
    private static final Logger LOG = LoggerFactory.getLogger(SecondaryEngine.class);
    private static final int CHUNK = 256 * 1024;
    /** Connections whose handshake may be in progress at once; a newer one evicts the oldest. */
    static final int MAX_PENDING_HANDSHAKES = 32;
    /** Pending handshakes one source address may have; its newest connection evicts its own oldest. */
    static final int MAX_PENDING_PER_SOURCE = 8;
    /** How often a failover asks the arbiter for the VM's key. */
    private static final long CLAIM_RETRY_MS = 50;
    private static final long CLAIM_REFUSED_RETRY_MS = 1000;

    private final InetSocketAddress bindAddress;
    private final VmStateSink sink;
    private final SecureRandom random = new SecureRandom();
    private ServerSocket server;
    private Thread acceptor;
    /** The newest fencing token seen (in a HELLO or won in a claim): an older primary is refused. */
    private final AtomicLong newestToken = new AtomicLong();
    private volatile LongConsumer tokenListener = t -> { };
    private volatile java.util.function.Supplier<String> holdFailovers = () -> null;
    private volatile String outdated;
    private volatile java.util.function.Consumer<String> outdatedListener = w -> { };
    /** Sockets accepted whose handshake has not completed, oldest first (under itself). */
    private final LinkedHashSet<Socket> pending = new LinkedHashSet<>();
    /** Connections dropped before their handshake completed: logged as a summary, not one line each. */
    private final DropLog dropped = new DropLog("dropped {} connection(s) before their handshake completed");
    /** Connections refused for a malformed HELLO: the first is logged, then a summary. */
    private final DropLog malformed = new DropLog("refused {} connection(s) for a malformed HELLO");
    private final ExecutorService handshakes = Executors.newCachedThreadPool(r ->
    {
        final Thread t = new Thread(r, "colo-secondary-handshake");
        t.setDaemon(true);
        return t;
    });
    private final ScheduledExecutorService deadlines = Executors.newSingleThreadScheduledExecutor(r ->
    {
        final Thread t = new Thread(r, "colo-secondary-handshake-deadline");
        t.setDaemon(true);
        return t;
    });
    /** State, session, failover, claim and grace: decided in one place, fed by the threads below. */
    private final StandbyDecisions<Session> decisions = new StandbyDecisions<>(failover);
    /** The threads that may run a session's end, a grace period or a failover; close() waits for them. */
    private volatile Thread sessionThread;
    private volatile Thread graceThread;
    private volatile Thread failoverThread;
    private volatile String peer = "";

    public SecondaryEngine(final ColoConfig config, final InetSocketAddress bindAddress, final VmStateSink sink,
        final ColoCounters counters, final ProtocolTap tap, final NanoClock clock)
    {
        super(Role.SECONDARY, config, counters, tap, clock);
        this.bindAddress = bindAddress;
        this.sink = sink;
    }

    /** The newest fencing token this host knows of (e.g. from its role file), before {@link #start()}. */
    public SecondaryEngine knownToken(final long token)
    {
        newestToken.accumulateAndGet(token, Math::max);
        return this;
    }

    /**
     * Asked before every failover this engine would start on its own (a lost primary, a grace period run out):
     * non-null is why it must not now (the host is in maintenance), and the engine stands by instead. An operator's
     * failover is never held.
     */
    public SecondaryEngine holdFailovers(final java.util.function.Supplier<String> why)
    {
        holdFailovers = why;
        return this;
    }

    /**
     * Without an arbiter, why this standby is older than what the primary serves (null: it is not known to be):
     * set when a session ends and the secondary stands by — the primary, alive, serves on unprotected from then on
     * (PROTOCOL §5) — and cleared by the next committed checkpoint. An operator's failover from an outdated
     * standby would run a second, older copy; the agent refuses it unless forced. With an arbiter, the arbiter
     * keeps this record (and refuses the claim) instead. {@code why}: what was recorded before (a restart).
     */
    public SecondaryEngine outdated(final String why)
    {
        outdated = why;
        return this;
    }

    /** Why this standby is outdated (no arbiter), or null. */
    public String outdated()
    {
        return outdated;
    }

    /** Told each change of {@link #outdated()} (null: current again): a place to persist it. */
    public SecondaryEngine onOutdated(final java.util.function.Consumer<String> listener)
    {
        outdatedListener = listener;
        return this;
    }

    private void recordOutdated(final String why)
    {
        if (!java.util.Objects.equals(outdated, why))
        {
            outdated = why;
            outdatedListener.accept(why);
        }
    }

    /** Told (on the thread that saw it) each newer token: a place to persist it, e.g. in the state directory. */
    public SecondaryEngine onNewerToken(final LongConsumer listener)
    {
        tokenListener = listener;
        return this;
    }

    private void sawToken(final long token)
    {
        if (token > newestToken.getAndAccumulate(token, Math::max))
        {
            try
            {
                tokenListener.accept(token);
            }
            catch (final RuntimeException ex)
            {
                LOG.error("vm={} could not record fencing token {}: {}", config.vmName(), token, ex.toString());
            }
        }
    }

    public long newestToken()
    {
        return newestToken.get();
    }

    public SecondaryEngine start() throws IOException
    {
        server = transport.newServerSocket();
        if (!server.isBound())
        {
            server.setReuseAddress(true);
            server.bind(bindAddress);
        }
        acceptor = new Thread(this::acceptLoop, "colo-secondary-" + config.vmName() + "-accept");
        acceptor.setDaemon(true);
        watchdog.start();
        acceptor.start();
        LOG.info("vm={} standing by on {} (last committed checkpoint {})", config.vmName(),
            server.getLocalSocketAddress(), sink.lastCommitted());
        if (arbiter.arbitrated() && sink.resumable())
        {
            awaitFirstPrimary();
        }
        return this;
    }

    /**
     * This colod starts with a resumable standby (it was restarted; the primary may have died meanwhile, even while
     * no colod ran here to see it): a live primary reconnects within its reconnect interval. If none does within
     * the heartbeat timeout and two reconnect intervals, the primary is treated as lost and the arbiter decides,
     * as for a loss seen in a session: it refuses while the primary serves on (it marked the standby outdated when
     * it lost this host) and takes the key only from a holder that was protected when it was lost. A primary that
     * connects meanwhile cancels the wait, or the claim.
     */
    private void awaitFirstPrimary()
    {
        final long waitMs = config.heartbeatTimeoutMs() + 2 * config.reconnectIntervalMs();
        claimUnlessPrimaryComes(waitMs, decisions.awaitingPeer(),
            "no primary connected within " + waitMs + " ms of this colod's start", "first-primary");
    }

    public InetSocketAddress localAddress()
    {
        return (InetSocketAddress)server.getLocalSocketAddress();
    }

    @Override
    public Role role()
    {
        return Role.SECONDARY;
    }

    /** Checkpoints are taken on the primary. */
    @Override
    public void requestCheckpoint()
    {
        throw new IllegalStateException("vm " + config.vmName() + " is the secondary here: checkpoints are taken on the primary");
    }

    @Override
    public ProtectionState state()
    {
        return decisions.state();
    }

    @Override
    public String peer()
    {
        return peer;
    }

    /**
     * Operator's failover: resume the VM here from the last committed checkpoint, now. The primary, if it is
     * still alive, is told (BYE failover) so it fences itself.
     */
    @Override
    public void requestFailover()
    {
        switch (decisions.operatorFailover())
        {
            case END_SESSION ->
            {
                final Session s = decisions.session();
                if (s != null)
                {
                    s.end(SessionEnd.Cause.REQUESTED, "failover requested by operator");
                }
                // the session thread fails over on its way out (also when it ended just now)
            }
            case CLAIM ->
            {
                final Thread t = new Thread(() -> claimAndFailOver("failover requested by operator", false),
                    "colo-secondary-" + config.vmName() + "-failover");
                t.setDaemon(true);
                failoverThread = t;
                t.start();
            }
            case NONE ->
            {
                // already required or done, or stopping
            }
        }
    }

    /**
     * Accepts and hands each connection to a handshake thread at once, so nothing a connection does (close
     * early, stall, send garbage, arrive in a flood) holds up the next. At most {@link #MAX_PENDING_HANDSHAKES}
     * handshakes are pending; a newer connection evicts the oldest, so a flood cannot keep a real primary,
     * whose HELLO follows its connect within milliseconds, out. Each handshake must complete within the sync
     * timeout, in total (not per read).
     */
    private void acceptLoop()
    {
        while (!decisions.stopped())
        {
            final Socket s;
            try
            {
                s = server.accept();
            }
            catch (final IOException ex)
            {
                if (decisions.stopped() || server.isClosed())
                {
                    if (!decisions.stopped())
                    {
                        LOG.error("vm={} listening socket closed: {}", config.vmName(), ex.toString());
                    }
                    return;
                }
                LOG.warn("vm={} accept failed, retrying: {}", config.vmName(), ex.toString());
                idleBriefly();
                continue;
            }
            final Socket evicted;
            synchronized (pending)
            {
                evicted = evictFor(s);
                pending.add(s);
            }
            // counted (once) and logged by its handshake thread, which sees the socket closed
            Closeables.closeQuietly(evicted);
            try
            {
                handshakes.execute(() -> handshake(s));
            }
            catch (final RuntimeException ex)
            {
                Closeables.closeQuietly(s); // stopping
            }
        }
    }

    /**
     * Under {@code pending}: the connection {@code s} displaces, or null. A source address has at most
     * {@link #MAX_PENDING_PER_SOURCE} pending handshakes (its own oldest goes first); when all
     * {@link #MAX_PENDING_HANDSHAKES} are taken, the oldest of the source with the most pending goes. So a flood from
     * other addresses never evicts the real primary, which has one or two handshakes pending at a time.
     */
    private Socket evictFor(final Socket s)
    {
        final Map<InetAddress, Integer> perSource = new HashMap<>();
        for (final Socket p : pending)
        {
            perSource.merge(p.getInetAddress(), 1, Integer::sum);
        }
        InetAddress from = null;
        if (perSource.getOrDefault(s.getInetAddress(), 0) >= MAX_PENDING_PER_SOURCE)
        {
            from = s.getInetAddress();
        }
        else if (pending.size() >= MAX_PENDING_HANDSHAKES)
        {
            from = Collections.max(perSource.entrySet(), Map.Entry.comparingByValue()).getKey();
        }
        if (from == null)
        {
            return null;
        }
        for (final Iterator<Socket> it = pending.iterator(); it.hasNext(); )
        {
            final Socket p = it.next();
            if (p.getInetAddress().equals(from))
            {
                it.remove();
                return p;
            }
        }
        return null;
    }

    private static void idleBriefly()
    {
        try
        {
            Thread.sleep(50);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }

    private void handshake(final Socket accepted)
    {
        final String who = accepted.getInetAddress().getHostAddress() + ":" + accepted.getPort();
        final ScheduledFuture<?> deadline = deadlines.schedule(() -> Closeables.closeQuietly(accepted),
            config.syncTimeoutMs(), TimeUnit.MILLISECONDS);
        Socket s = accepted;
        try
        {
            s.setTcpNoDelay(true);
            s.setSoTimeout((int)config.syncTimeoutMs());
            s = transport.secureServer(accepted);
            final Hello hello = Hello.readFrom(s.getInputStream());
            if (!deadline.cancel(false))
            {
                throw new SocketTimeoutException("handshake not complete within " + config.syncTimeoutMs() + " ms");
            }
            s.setSoTimeout(0);
            synchronized (pending)
            {
                pending.remove(accepted);
            }
            dispatch(s, hello, who);
        }
        catch (final IOException | RuntimeException ex)
        {
            deadline.cancel(false);
            final boolean wasPending;
            synchronized (pending)
            {
                wasPending = pending.remove(accepted);
            }
            if (ex instanceof AuthenticationException ae)
            {
                counters.refusedSessions.incrementAndGet();
                counters.authFailures.incrementAndGet();
                LOG.warn("vm={} {}", config.vmName(), ae.getMessage());
                Closeables.closeQuietly(s);
                return;
            }
            if (ex instanceof ProtocolException pe)
            {
                counters.refusedSessions.incrementAndGet();
                counters.protocolErrors.incrementAndGet();
                malformed.record(who, pe.getMessage());
                refuse(s, "hello.version".equals(pe.field()) ? Welcome.VERSION : Welcome.BAD_HELLO, pe.getMessage());
                return;
            }
            counters.abandonedHandshakes.incrementAndGet();
            final String why = ex instanceof EOFException ? "closed before its HELLO was complete"
                : !wasPending ? "evicted by newer connections or past the handshake deadline of " +
                    config.syncTimeoutMs() + " ms"
                : String.valueOf(ex.getMessage() == null ? ex.toString() : ex.getMessage());
            dropped.record(who, why);
            Closeables.closeQuietly(s);
        }
    }

    private void dispatch(final Socket s, final Hello hello, final String who) throws IOException
    {
        if (!hello.vmName().equals(config.vmName()))
        {
            counters.refusedSessions.incrementAndGet();
            refuse(s, Welcome.UNKNOWN_VM, "this secondary stands by for vm " + config.vmName() + ", not " + hello.vmName());
            return;
        }
        if (hello.channel() == Hello.CHANNEL_CONTROL && hello.shape().length > 0 && !config.vmShape().isEmpty())
        {
            final List<String> differ = VmShape.differences(config.vmShape(),
                new String(hello.shape(), java.nio.charset.StandardCharsets.UTF_8));
            if (!differ.isEmpty())
            {
                counters.refusedSessions.incrementAndGet();
                final String why = "vm " + config.vmName() + " differs between the hosts (a checkpoint of one would " +
                    "not run on the other): " + String.join("; ", differ);
                LOG.error("vm={} refused primary {}: {}", config.vmName(), who, why);
                lastError = why;
                refuse(s, Welcome.SHAPE, why);
                return;
            }
        }
        if (hello.channel() != Hello.CHANNEL_HEARTBEAT && hello.channel() != Hello.CHANNEL_FRAMES && hello.sessionId() != 0)
        {
            counters.refusedSessions.incrementAndGet();
            counters.protocolErrors.incrementAndGet();
            refuse(s, Welcome.BAD_HELLO, "bad hello.session-id " + Long.toHexString(hello.sessionId()) + " on a " +
                (hello.channel() == Hello.CHANNEL_PROBE ? "probe" : "control") + " channel, expected 0");
            return;
        }
        if (hello.channel() == Hello.CHANNEL_PROBE)
        {
            // a host that ran this VM before asks who runs it now: answer, open no session
            final boolean runsHere = decisions.runsHere();
            new Welcome(runsHere ? Welcome.FAILED_OVER : Welcome.OK, 0, 0, sink.lastCommitted(), newestToken.get(),
                runsHere ? "the VM was failed over to this host" : "").writeTo(s.getOutputStream());
            Closeables.closeQuietly(s);
            return;
        }
        if (hello.channel() == Hello.CHANNEL_HEARTBEAT)
        {
            final Session cur = decisions.session();
            if (cur == null || cur.id != hello.sessionId() || !cur.attachHeartbeat(s, hello))
            {
                counters.refusedSessions.incrementAndGet();
                refuse(s, Welcome.BAD_HELLO, "no session " + Long.toHexString(hello.sessionId()) + " awaits a heartbeat");
                return;
            }
            new Welcome(Welcome.OK, cur.id, cur.limit, sink.lastCommitted(), newestToken.get(), "")
                .writeTo(s.getOutputStream());
            cur.heartbeatAttached.countDown();
            return;
        }
        if (hello.channel() == Hello.CHANNEL_FRAMES)
        {
            final Session cur = decisions.session();
            if (cur == null || cur.id != hello.sessionId() || !cur.hybrid || cur.framesAttached.getCount() == 0)
            {
                counters.refusedSessions.incrementAndGet();
                refuse(s, Welcome.BAD_HELLO, "no hybrid session " + Long.toHexString(hello.sessionId()) +
                    " awaits a frames channel");
                return;
            }
            new Welcome(Welcome.OK, cur.id, cur.limit, sink.lastCommitted(), newestToken.get(), "")
                .writeTo(s.getOutputStream());
            try
            {
                frames.attach(s, who, FrameMirror.features(hello.shape()));
            }
            catch (final IOException ex)
            {
                Closeables.closeQuietly(s);
                throw ex;
            }
            cur.framesAttached.countDown();
            return;
        }
        final long newest = newestToken.get();
        final StandbyDecisions.Admission<Session> a = decisions.admit(hello.token(), newest, () ->
            new Session(newSessionId(), s, who, Math.min(config.maxStateBytes(), hello.maxStateBytes()), hello));
        if (a.claimAbandoned())
        {
            LOG.warn("vm={} primary {} is back while the failover waited for the arbiter: failover abandoned",
                config.vmName(), who);
        }
        switch (a.answer())
        {
            case FAILED_OVER ->
            {
                // the VM runs here: that answer (status 6) is the proof a primary fences on, whatever its token
                counters.refusedSessions.incrementAndGet();
                refuse(s, Welcome.FAILED_OVER, "the VM was failed over to this host");
            }
            case STALE_TOKEN ->
            {
                counters.refusedSessions.incrementAndGet();
                counters.staleTokens.incrementAndGet();
                LOG.error("vm={} refused primary {}: its fencing token {} is older than {}: another host took the VM " +
                    "over since", config.vmName(), who, hello.token(), newest);
                refuse(s, Welcome.STALE_TOKEN, "fencing token " + hello.token() + " is older than " + newest +
                    ": the VM was taken over since");
            }
            case BUSY ->
            {
                counters.refusedSessions.incrementAndGet();
                final Session cur = decisions.session();
                refuse(s, Welcome.BUSY, cur == null ? "the secondary is stopping" : "a session with " + cur.peer + " is active");
            }
            case ACCEPT ->
            {
                final Session ns = a.session();
                sawToken(hello.token());
                try
                {
                    new Welcome(Welcome.OK, ns.id, ns.limit, sink.lastCommitted(), newestToken.get(), "")
                        .writeTo(s.getOutputStream());
                }
                catch (final IOException ex)
                {
                    decisions.abandoned(ns);
                    throw ex;
                }
                peer = who;
                final Thread t = new Thread(ns::run, "colo-secondary-" + config.vmName() + "-session");
                t.setDaemon(true);
                sessionThread = t;
                t.start();
            }
        }
    }

    private long newSessionId()
    {
        long id;
        do
        {
            id = random.nextLong();
        }
        while (id == 0);
        return id;
    }

    private void refuse(final Socket s, final int status, final String why)
    {
        try
        {
            Welcome.refuse(status, newestToken.get(), why).writeTo(s.getOutputStream());
        }
        catch (final IOException ignore)
        {
            // the peer is gone; nothing to tell
        }
        Closeables.closeQuietly(s);
    }

    /** One protection session: owns the control socket and, once attached, the heartbeat. */
    private final class Session
    {
        final long id;
        final Socket control;
        final String peer;
        final long limit;
        final Hello hello;
        final CountDownLatch heartbeatAttached = new CountDownLatch(1);
        /** Hybrid mode: the frames channel was handed to the mirror. */
        final CountDownLatch framesAttached = new CountDownLatch(1);
        /** The primary asked for hybrid mode: this side runs a copy of the VM between checkpoints. */
        final boolean hybrid;
        final SessionEnd end = new SessionEnd();
        volatile Heartbeat heartbeat;

        Session(final long id, final Socket control, final String peer, final long limit, final Hello hello)
        {
            this.id = id;
            this.control = control;
            this.peer = peer;
            this.limit = limit;
            this.hello = hello;
            this.hybrid = hello.mode() == Hello.MODE_HYBRID;
        }

        synchronized boolean attachHeartbeat(final Socket s, final Hello h)
        {
            if (heartbeat != null)
            {
                return false;
            }
            heartbeat = new Heartbeat(s, peer, "colo-secondary-" + config.vmName(), h.heartbeatIntervalMs(),
                h.heartbeatTimeoutMs(), sink::lastCommitted, counters, end, () -> Heartbeat.abort(control));
            return true;
        }

        /**
         * Hybrid mode: the running copy stops at checkpoint-request ({@code suspend}) and runs again from the
         * committed checkpoint after vmstate-loaded. Not needed for the standby image to be right, so a failure is
         * logged and counted, never the end of the session.
         */
        private void runningCopy(final boolean suspend, final long checkpointId)
        {
            try
            {
                if (suspend)
                {
                    sink.suspendRunning(checkpointId);
                    counters.runningCopySuspends.incrementAndGet();
                }
                else
                {
                    sink.resumeRunning(checkpointId);
                    counters.runningCopyResumes.incrementAndGet();
                }
            }
            catch (final IOException | RuntimeException ex)
            {
                counters.runningCopyErrors.incrementAndGet();
                LOG.warn("vm={} the running copy could not be {} at checkpoint {}: {}", config.vmName(),
                    suspend ? "suspended" : "resumed", checkpointId, ex.getMessage());
            }
        }

        /** Ends the session from another thread: records why (unless a cause is already recorded) and cuts it. */
        void end(final SessionEnd.Cause cause, final String detail)
        {
            end.record(cause, detail);
            Closeables.closeQuietly(control);
        }

        void run()
        {
            long checkpointId = sink.lastCommitted() + 1;
            long staged = -1;
            boolean received = false;
            try
            {
                watchdog.watch(control, end);
                if (!heartbeatAttached.await(config.syncTimeoutMs(), TimeUnit.MILLISECONDS))
                {
                    throw new IOException("primary " + peer + " did not open its heartbeat channel within " +
                        config.syncTimeoutMs() + " ms");
                }
                heartbeat.start();
                if (hybrid && frames != FrameMirror.NONE && !framesAttached.await(config.syncTimeoutMs(), TimeUnit.MILLISECONDS))
                {
                    throw new IOException("primary " + peer + " did not open its frames channel within " +
                        config.syncTimeoutMs() + " ms");
                }
                final InputStream in = control.getInputStream();
                final ColoChannel ch = new ColoChannel(in,
                    new BufferedOutputStream(control.getOutputStream(), 64), peer, tap);
                ch.checkpointId(checkpointId);
                ch.put(ColoCommand.CHECKPOINT_READY);
                decisions.protecting(this);
                counters.sessionsStarted.incrementAndGet();
                LOG.info("vm={} protecting for primary {} (session {}, {} mode, limit {} bytes)", config.vmName(), peer,
                    Long.toHexString(id), hybrid ? "hybrid" : hello.mode() == Hello.MODE_STRICT ? "strict" : "speculative",
                    limit);
                final byte[] chunk = new byte[CHUNK];

                while (true)
                {
                    ch.checkpointId(checkpointId);
                    // idle wait: no deadline of its own; liveness of the primary is the heartbeat's job
                    final ColoCommand first = ch.get();
                    if (first != ColoCommand.CHECKPOINT_REQUEST)
                    {
                        throw ProtocolException.unexpected(first, ColoCommand.CHECKPOINT_REQUEST);
                    }
                    final long startNs = clock.nanoTime();
                    if (hybrid)
                    {
                        runningCopy(true, checkpointId);
                    }
                    watchdog.arm("sending checkpoint-reply", config.syncTimeoutMs());
                    ch.put(ColoCommand.CHECKPOINT_REPLY);
                    // the primary pauses and captures between reply and send: that may take a while
                    watchdog.arm("waiting for vmstate-send", config.transferTimeoutMs());
                    ch.expect(ColoCommand.VMSTATE_SEND);
                    watchdog.arm("waiting for vmstate-size", config.syncTimeoutMs());
                    final long size = ch.expectStateSize(limit);

                    watchdog.arm("receiving " + size + " bytes of vmstate", config.transferTimeoutMs());
                    sink.stage(checkpointId, size);
                    staged = checkpointId;
                    long done = 0;
                    while (done < size)
                    {
                        final int n = in.read(chunk, 0, (int)Math.min(CHUNK, size - done));
                        if (n < 0)
                        {
                            throw new EOFException("connection closed by primary " + peer + " after " + done + " of " +
                                size + " vmstate bytes of checkpoint " + checkpointId);
                        }
                        sink.stageWrite(chunk, 0, n);
                        done += n;
                        tap.stateProgress(done, size, checkpointId);
                    }
                    received = true;
                    counters.stateBytes.addAndGet(size);

                    // the state is wholly here: it is committed even if telling the primary fails
                    watchdog.arm("sending vmstate-received", config.syncTimeoutMs());
                    try
                    {
                        ch.put(ColoCommand.VMSTATE_RECEIVED);
                    }
                    finally
                    {
                        watchdog.disarm();
                        sink.commit(checkpointId);
                        if (outdated != null)
                        {
                            recordOutdated(null);
                        }
                        staged = -1;
                        received = false;
                        counters.lastCheckpointId.set(checkpointId);
                        counters.lastCheckpointNanos.set(clock.nanoTime());
                        counters.checkpointsCompleted.incrementAndGet();
                    }
                    watchdog.arm("sending vmstate-loaded", config.syncTimeoutMs());
                    ch.put(ColoCommand.VMSTATE_LOADED);
                    watchdog.disarm();
                    sink.loaded(checkpointId);
                    if (hybrid)
                    {
                        runningCopy(false, checkpointId);
                    }
                    counters.checkpointMicros.recordValue(Math.max(0, (clock.nanoTime() - startNs) / 1000));
                    checkpointId++;
                }
            }
            catch (final Throwable ex)
            {
                end(ex, staged, received);
            }
        }

        /** The one exit path of a session. */
        private void end(final Throwable ex, final long staged, final boolean received)
        {
            watchdog.disarm();
            if (staged >= 0 && !received)
            {
                sink.discard(staged);
                counters.discardedPartialCheckpoints.incrementAndGet();
                LOG.warn("vm={} discarded partly received checkpoint {}", config.vmName(), staged);
            }
            final Heartbeat hb = heartbeat;
            final SessionEnd.Outcome o = SessionEnd.classify(end.fail(ex, hb == null ? 0 : hello.heartbeatTimeoutMs()),
                false, peer, counters);
            if (hb != null)
            {
                hb.bye(o.cause() == SessionEnd.Cause.REQUESTED ? HeartbeatFrame.BYE_FAILOVER
                    : o.cause() == SessionEnd.Cause.STOPPING ? HeartbeatFrame.BYE_STOP : HeartbeatFrame.BYE_ERROR,
                    o.detail());
            }
            Closeables.closeQuietly(control);
            if (hybrid)
            {
                frames.detach();
            }
            counters.sessionsEnded.incrementAndGet();
            lastError = o.detail();
            final StandbyDecisions.Ended next = decisions.ended(this, o, config.peerRestartGraceMs());
            if (next.next() == StandbyDecisions.Next.CLAIM)
            {
                claimAndFailOver(o.detail(), o.peerLost());
                return;
            }
            if (next.next() == StandbyDecisions.Next.GRACE)
            {
                awaitPeer(o.detail(), next.graceToken());
                return;
            }
            if (!arbiter.arbitrated() && sink.lastCommitted() > 0)
            {
                recordOutdated("the primary " + peer + " serves on unprotected since its session with this host ended after " +
                    "checkpoint " + sink.lastCommitted() + " (" + java.time.Instant.now() + ": " + o.detail() + ")");
            }
            LOG.warn("vm={} session ended: {}; standing by with checkpoint {}", config.vmName(), o.detail(),
                sink.lastCommitted());
            exitListeners.publish(ExitEvent.ended(Role.SECONDARY, o.reason(), o.detail(), false, sink.lastCommitted(), ex));
        }
    }

    /**
     * The primary's agent is gone but its host is up: give it {@code peer-restart-grace-ms} to come back (a
     * restart or upgrade of colod under a running VM) before failing over. A new session cancels the wait.
     */
    private void awaitPeer(final String detail, final long token)
    {
        LOG.warn("vm={} {}; failing over in {} ms unless it comes back", config.vmName(), detail,
            config.peerRestartGraceMs());
        exitListeners.publish(ExitEvent.ended(Role.SECONDARY, ExitReason.ERROR, detail + "; awaiting the primary's agent", false,
            sink.lastCommitted(), null));
        claimUnlessPrimaryComes(config.peerRestartGraceMs(), token,
            detail + "; it did not come back within " + config.peerRestartGraceMs() + " ms", "grace");
    }

    /**
     * After {@code ms}, on a thread of its own: if no primary came (the wait {@code token} still stands, nothing
     * else decided), the primary is lost: claim and fail over, saying {@code why}.
     */
    private void claimUnlessPrimaryComes(final long ms, final long token, final String why, final String name)
    {
        final Thread t = new Thread(() ->
        {
            try
            {
                Thread.sleep(ms);
            }
            catch (final InterruptedException ex)
            {
                return;
            }
            if (decisions.graceExpired(token))
            {
                claimAndFailOver(why, true);
            }
        }, "colo-secondary-" + config.vmName() + "-" + name);
        t.setDaemon(true);
        graceThread = t;
        t.start();
    }

    /**
     * A failover is required: first the arbiter's key (waiting out the old holder's lease; never with an outdated
     * standby), then the resume. A primary that comes back meanwhile cancels the wait (see dispatch).
     */
    private void claimAndFailOver(final String why, final boolean peerLost)
    {
        final String held = failover.reason() == ExitReason.REQUEST ? null : holdFailovers.get();
        if (held != null)
        {
            decisions.resumeFailed();
            counters.failoversHeld.incrementAndGet();
            final String detail = why + "; NOT failing over: " + held;
            lastError = detail;
            LOG.error("vm={} {}; standing by with checkpoint {} (an operator's coloctl failover still resumes it)",
                config.vmName(), detail, sink.lastCommitted());
            exitListeners.publish(ExitEvent.ended(Role.SECONDARY, ExitReason.ERROR, detail, peerLost, sink.lastCommitted(),
                null));
            return;
        }
        if (arbiter.arbitrated())
        {
            final long generation = decisions.claimStarted();
            LOG.warn("vm={} {}: asking the arbiter for the VM before resuming it", config.vmName(), why);
            Arbiter.Verdict.Kind last = null;
            while (true)
            {
                if (!decisions.claimWanted(generation))
                {
                    return;
                }
                final Arbiter.Verdict v = arbiter.claimForFailover(sink.lastCommitted());
                if (v.kind() == Arbiter.Verdict.Kind.GRANTED)
                {
                    if (!decisions.claimGranted(generation))
                    {
                        arbiter.abandonClaim(sink.lastCommitted(), decisions.stopped()
                            ? "failover abandoned: colod stops" : "failover abandoned: the primary came back");
                        return;
                    }
                    sawToken(v.token());
                    LOG.warn("vm={} the arbiter grants this host the VM (token {})", config.vmName(), v.token());
                    break;
                }
                counters.arbiterWaits.incrementAndGet();
                lastError = "arbiter: " + v.detail();
                if (v.kind() != last)
                {
                    last = v.kind();
                    if (v.kind() == Arbiter.Verdict.Kind.REFUSED)
                    {
                        LOG.error("vm={} NOT FAILING OVER: {}; standing by for the primary", config.vmName(), v.detail());
                    }
                    else
                    {
                        LOG.warn("vm={} failover waits for the arbiter: {}", config.vmName(), v.detail());
                    }
                }
                try
                {
                    Thread.sleep(v.kind() == Arbiter.Verdict.Kind.REFUSED ? CLAIM_REFUSED_RETRY_MS : CLAIM_RETRY_MS);
                }
                catch (final InterruptedException ex)
                {
                    return;
                }
            }
        }
        doFailover(why, peerLost);
    }

    private void doFailover(final String why, final boolean peerLost)
    {
        final ExitReason reason = failover.reason();
        if (!decisions.resuming())
        {
            return;
        }
        final long committed = sink.lastCommitted();
        if (!sink.resumable())
        {
            decisions.resumeFailed();
            final String detail = why + (committed == 0 ? "; no checkpoint was ever committed, so there is nothing to resume"
                : "; the standby image is still being synchronised (no consistent checkpoint yet), so there is nothing to resume");
            LOG.error("vm={} CANNOT FAIL OVER: {}", config.vmName(), detail);
            exitListeners.publish(ExitEvent.ended(Role.SECONDARY, reason, detail, peerLost, 0, null));
            return;
        }
        LOG.warn("vm={} FAILING OVER: {}; resuming from checkpoint {}", config.vmName(), why, committed);
        try
        {
            sink.activate(committed);
            decisions.resumed();
            counters.failovers.incrementAndGet();
            LOG.warn("vm={} FAILED OVER: the VM runs here from checkpoint {}", config.vmName(), committed);
            exitListeners.publish(ExitEvent.failedOver(reason, why, peerLost, committed));
        }
        catch (final Exception ex)
        {
            decisions.resumeFailed();
            final String detail = why + "; resuming checkpoint " + committed + " failed: " + ex.getMessage();
            lastError = detail;
            LOG.error("vm={} FAILOVER FAILED: {}", config.vmName(), detail, ex);
            exitListeners.publish(ExitEvent.ended(Role.SECONDARY, ExitReason.ERROR, detail, peerLost, committed, ex));
        }
    }


    /**
     * Stops the engine: no new session, the active one ends (STOPPING), a grace period or a claim in progress is
     * called off, and their threads are waited for. A VM that runs here since a failover stays FAILED_OVER.
     */
    @Override
    public void close()
    {
        final Session s = decisions.stop();
        Closeables.closeQuietly(server);
        handshakes.shutdownNow();
        deadlines.shutdownNow();
        synchronized (pending)
        {
            pending.forEach(Closeables::closeQuietly);
            pending.clear();
        }
        if (s != null)
        {
            s.end(SessionEnd.Cause.STOPPING, "agent stopping");
        }
        for (final Thread t : new Thread[]{graceThread, failoverThread})
        {
            if (t != null)
            {
                t.interrupt(); // a sleeping grace period or claim retry; both see the stop and return
            }
        }
        for (final Thread t : new Thread[]{sessionThread, graceThread, failoverThread})
        {
            join(t);
        }
        watchdog.close();
    }

    private static void join(final Thread t)
    {
        if (t == null || t == Thread.currentThread())
        {
            return;
        }
        try
        {
            t.join(10_000);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }

    /** Abrupt end for tests: as if the process died (no goodbye, no failover). */
    void kill()
    {
        final Session s = decisions.stop();
        Closeables.closeQuietly(server);
        handshakes.shutdownNow();
        deadlines.shutdownNow();
        if (s != null)
        {
            s.end.record(SessionEnd.Cause.STOPPING, "killed");
            final Heartbeat hb = s.heartbeat;
            if (hb != null)
            {
                hb.close();
            }
            Closeables.closeQuietly(s.control);
        }
    }

    /**
     * Dropped handshakes are logged once, then at most every {@link #INTERVAL_NS} as a summary (how many, the last
     * one): a flood of connections must not flood the log too.
     */
    private final class DropLog
    {
        private static final long INTERVAL_NS = 10_000_000_000L;
        private final String what;
        private long windowStartNs = System.nanoTime() - INTERVAL_NS;
        private long since;

        DropLog(final String what)
        {
            this.what = what;
        }

        synchronized void record(final String who, final String why)
        {
            since++;
            final long now = System.nanoTime();
            if (now - windowStartNs >= INTERVAL_NS)
            {
                LOG.warn("vm={} " + what + " in the last {} s (last: {}: {})", config.vmName(), since,
                    Math.min(10, (now - windowStartNs) / 1_000_000_000L), who, why);
                since = 0;
                windowStartNs = now;
            }
        }
    }
}
