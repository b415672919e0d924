package dev.colod.core;

import dev.colod.core.protocol.ColoChannel;
import dev.colod.core.protocol.ColoCommand;
import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.spi.OutputCommitListener;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * The primary side of the checkpoint protocol for one VM. One session thread connects to the secondary, runs
 * the preamble, then loops: wait for the next checkpoint (periodic or requested early), run one transaction.
 * When a session ends for any reason the VM keeps running unprotected, held output is released, an
 * {@link ExitEvent} is published, and the engine reconnects (unless stopped, fenced or refused for good).
 * <p>
 * Other threads talk to it only through {@link #requestCheckpoint()}, {@link #requestFailover()} and
 * {@link #close()}, which put a command on its queue.
 */
public final class PrimaryEngine implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(PrimaryEngine.class);
    private static final int CMD_CHECKPOINT = 1;
    private static final int CMD_WAKE = 2;

    private final ColoConfig config;
    private final InetSocketAddress secondary;
    private final VmStateSource source;
    private final OutputCommitListener output;
    private final ColoCounters counters;
    private final ProtocolTap tap;
    private final NanoClock clock;
    private final FailoverState failover = new FailoverState();
    private final LinkedBlockingQueue<Integer> commands = new LinkedBlockingQueue<>();
    private final ExitListeners exitListeners = new ExitListeners();
    private final Watchdog watchdog;
    private final Thread thread;
    private final String peer;

    private volatile Transport transport = Transport.DEFAULT;
    private volatile boolean stopped;
    private volatile ProtectionState state = ProtectionState.CONNECTING;
    private volatile Socket control;
    private volatile Heartbeat heartbeat;
    private volatile String lastError = "";
    private boolean paused;
    private volatile long lastCompleted;
    private volatile boolean killed;

    public PrimaryEngine(final ColoConfig config, final InetSocketAddress secondary, final VmStateSource source,
        final OutputCommitListener output, final ColoCounters counters, final ProtocolTap tap, final NanoClock clock)
    {
        this.config = config;
        this.secondary = secondary;
        this.source = source;
        this.output = output;
        this.counters = counters;
        this.tap = tap;
        this.clock = clock;
        this.peer = secondary.getHostString() + ":" + secondary.getPort();
        this.watchdog = new Watchdog("colo-primary-" + config.vmName() + "-watchdog", clock);
        this.thread = new Thread(this::run, "colo-primary-" + config.vmName());
    }

    /** Where sockets come from (before {@link #start()}). */
    public PrimaryEngine transport(final Transport t)
    {
        transport = t;
        return this;
    }

    public PrimaryEngine start()
    {
        thread.start();
        return this;
    }

    public void addExitListener(final Consumer<ExitEvent> listener)
    {
        exitListeners.add(listener);
    }

    public ProtectionState state()
    {
        return state;
    }

    public FailoverState failoverState()
    {
        return failover;
    }

    public ColoCounters counters()
    {
        return counters;
    }

    public String peer()
    {
        return peer;
    }

    public String lastError()
    {
        return lastError;
    }

    /** Ask for a checkpoint now instead of at the next period (e.g. the packet buffer nears its limit). */
    public void requestCheckpoint()
    {
        counters.checkpointsRequestedEarly.incrementAndGet();
        commands.offer(CMD_CHECKPOINT);
    }

    /**
     * Stop protecting (QEMU's "lost heartbeat" on the primary): the session ends with reason REQUEST after
     * the current step, the VM keeps running here, unprotected, and the engine does not reconnect.
     */
    public void requestFailover()
    {
        if (failover.require(ExitReason.REQUEST))
        {
            commands.offer(CMD_WAKE);
        }
    }

    private void run()
    {
        while (!stopped)
        {
            ExitEvent exit = null;
            try
            {
                runSession();
            }
            catch (final RefusedException ex)
            {
                lastError = ex.getMessage();
                LOG.warn("vm={} secondary {} refused the session: {}", config.vmName(), peer, ex.getMessage());
                if (ex.status == Welcome.FAILED_OVER)
                {
                    state = ProtectionState.FENCED;
                    holdFenced();
                    exit = new ExitEvent("primary", ExitReason.ERROR, ex.getMessage(), false, lastCompleted, false, ex);
                    exitListeners.publish(exit);
                    return;
                }
            }
            catch (final Throwable ex)
            {
                exit = endSession(ex);
            }
            if (exit != null)
            {
                exitListeners.publish(exit);
                if (exit.reason() == ExitReason.REQUEST)
                {
                    return;
                }
            }
            // until a session is up again the VM runs unprotected; the status says so, not "connecting"
            state = ProtectionState.UNPROTECTED;
            commands.clear();
            idle(config.reconnectIntervalMs());
            if (failover.isPending())
            {
                LOG.warn("vm={} protection stopped on request; not reconnecting", config.vmName());
                return;
            }
        }
        state = ProtectionState.STOPPED;
    }

    private void runSession() throws Exception
    {
        final Socket c = connect(Hello.CHANNEL_CONTROL, 0);
        control = c;
        watchdog.watch(c);
        final InputStream cin = c.getInputStream();
        final Welcome w = handshake(c, Hello.CHANNEL_CONTROL, 0);
        final Socket hbSocket = connect(Hello.CHANNEL_HEARTBEAT, w.sessionId());
        handshake(hbSocket, Hello.CHANNEL_HEARTBEAT, w.sessionId());
        final Heartbeat hb = new Heartbeat(hbSocket, peer, "colo-primary-" + config.vmName(),
            config.heartbeatIntervalMs(), config.heartbeatTimeoutMs(), () -> lastCompleted, counters,
            this::onPeerGone);
        heartbeat = hb;
        hb.start();

        final OutputStream cout = new BufferedOutputStream(c.getOutputStream(), 1 << 16);
        final ColoChannel ch = new ColoChannel(cin, cout, peer, tap);
        final long limit = w.maxStateBytes();
        long checkpointId = w.lastCommitted() + 1;
        ch.checkpointId(checkpointId);
        watchdog.arm("waiting for checkpoint-ready", config.syncTimeoutMs());
        ch.expect(ColoCommand.CHECKPOINT_READY);
        watchdog.disarm();

        counters.sessionsStarted.incrementAndGet();
        source.beginSession(checkpointId);
        output.protectionStarted(checkpointId);
        state = ProtectionState.PROTECTED;
        LOG.info("vm={} protected by {} (session {}, mode {}, first checkpoint {})", config.vmName(), peer,
            Long.toHexString(w.sessionId()), config.mode(), checkpointId);

        long nextDueNs = clock.nanoTime() + config.checkpointDelayMs() * 1_000_000L;
        while (true)
        {
            awaitTrigger(nextDueNs);
            checkSessionAlive();
            doCheckpoint(ch, checkpointId, limit);
            lastCompleted = checkpointId;
            checkpointId++;
            nextDueNs = clock.nanoTime() + config.checkpointDelayMs() * 1_000_000L;
        }
    }

    /**
     * One checkpoint, step after step in the order of the seed's sync diagram. Any failure throws to the
     * single exit path in {@link #endSession(Throwable)}.
     */
    private void doCheckpoint(final ColoChannel ch, final long id, final long limit) throws Exception
    {
        final long startNs = clock.nanoTime();
        ch.checkpointId(id);

        watchdog.arm("sending checkpoint-request", config.syncTimeoutMs());
        ch.put(ColoCommand.CHECKPOINT_REQUEST);
        watchdog.arm("waiting for checkpoint-reply", config.syncTimeoutMs());
        ch.expect(ColoCommand.CHECKPOINT_REPLY);

        watchdog.arm("pausing the VM", config.syncTimeoutMs());
        source.pause();
        paused = true;
        final long pausedNs = clock.nanoTime();
        // a failover may have been requested while we were pausing: check again now that the VM is still
        checkSessionAlive();
        output.epochSealed(id);

        watchdog.arm("capturing VM state", config.transferTimeoutMs());
        try (StateCapture capture = source.capture(id))
        {
            final long size = capture.sizeBytes();
            if (size < 0 || size > limit)
            {
                throw new IOException("checkpoint " + id + " state of " + size + " bytes exceeds the session limit of " +
                    limit + " bytes (max-state-bytes)");
            }
            if (config.mode() == ColoConfig.Mode.SPECULATIVE)
            {
                resume(pausedNs);
            }

            watchdog.arm("sending vmstate", config.transferTimeoutMs());
            ch.put(ColoCommand.VMSTATE_SEND);
            ch.putStateSize(size);
            capture.writeTo(ch.out(), done -> ch.tap().stateProgress(done, size, id));
            ch.out().flush();
            counters.stateBytes.addAndGet(size);
        }

        watchdog.arm("waiting for vmstate-received", config.transferTimeoutMs());
        ch.expect(ColoCommand.VMSTATE_RECEIVED);
        output.epochCommitted(id);

        watchdog.arm("waiting for vmstate-loaded", config.transferTimeoutMs());
        ch.expect(ColoCommand.VMSTATE_LOADED);
        watchdog.disarm();
        if (paused)
        {
            resume(pausedNs);
        }

        final long endNs = clock.nanoTime();
        counters.checkpointMicros.recordValue(Math.max(0, (endNs - startNs) / 1000));
        counters.lastCheckpointId.set(id);
        counters.lastCheckpointNanos.set(endNs);
        counters.checkpointsCompleted.incrementAndGet();
        LOG.debug("vm={} checkpoint {} done in {} us", config.vmName(), id, (endNs - startNs) / 1000);
    }

    private void resume(final long pausedNs) throws IOException
    {
        source.resume();
        paused = false;
        counters.pauseMicros.recordValue(Math.max(0, (clock.nanoTime() - pausedNs) / 1000));
    }

    /** The one exit path of a session: the VM runs on, output is released, the peer is told, callers learn why. */
    private ExitEvent endSession(final Throwable ex)
    {
        watchdog.disarm();
        if (killed)
        {
            return null;
        }
        final boolean wasProtected = state == ProtectionState.PROTECTED;
        final Heartbeat hb = heartbeat;
        if (hb != null && !stopped && !failover.isPending() && !(ex instanceof ProtocolException) &&
            watchdog.expiredStep() == null)
        {
            hb.awaitVerdict(config.heartbeatTimeoutMs());
        }
        final String lost = hb == null ? null : hb.lostDetail();
        final int peerBye = hb == null ? -1 : hb.peerByeReason();
        final String expired = watchdog.expiredStep();
        final boolean requested = failover.isPending() || stopped;

        final String detail;
        if (requested)
        {
            detail = stopped ? "agent stopping" : "protection stopped on request";
        }
        else if (peerBye == HeartbeatFrame.BYE_FAILOVER)
        {
            detail = "secondary " + peer + " took over the VM (failover requested there)";
        }
        else if (lost != null)
        {
            detail = "secondary lost: " + lost;
        }
        else if (expired != null)
        {
            counters.deadlinesMissed.incrementAndGet();
            detail = "deadline missed " + expired + " with " + peer;
        }
        else if (ex instanceof ProtocolException)
        {
            counters.protocolErrors.incrementAndGet();
            detail = "protocol error from " + peer + ": " + ex.getMessage();
        }
        else if (peerBye >= 0)
        {
            detail = "secondary " + peer + " ended the session (reason " + peerBye + ")";
        }
        else
        {
            detail = "session with " + peer + " failed: " + ex;
        }

        final boolean fence = !requested && peerBye == HeartbeatFrame.BYE_FAILOVER;
        if (paused && !fence)
        {
            try
            {
                source.resume();
                paused = false;
            }
            catch (final Exception rex)
            {
                LOG.error("vm={} could not resume the VM after a failed checkpoint: {}", config.vmName(), rex.toString());
            }
        }
        if (wasProtected)
        {
            counters.checkpointsFailed.incrementAndGet();
            counters.sessionsEnded.incrementAndGet();
            if (fence)
            {
                output.fenced(detail);
            }
            else
            {
                output.protectionLost(detail);
            }
        }
        if (hb != null)
        {
            hb.bye(requested ? HeartbeatFrame.BYE_STOP : HeartbeatFrame.BYE_ERROR);
        }
        closeQuietly(control);
        heartbeat = null;
        control = null;
        lastError = detail;

        if (fence)
        {
            state = ProtectionState.FENCED;
            holdFenced();
            LOG.error("vm={} FENCED: {}; the VM stays paused here", config.vmName(), detail);
            return new ExitEvent("primary", ExitReason.REQUEST, detail, false, lastCompleted, false, null);
        }
        if (!wasProtected && !requested)
        {
            LOG.warn("vm={} cannot protect: {}", config.vmName(), detail);
            return null;
        }
        state = ProtectionState.UNPROTECTED;
        if (requested)
        {
            LOG.warn("vm={} UNPROTECTED: {}", config.vmName(), detail);
        }
        else
        {
            LOG.error("vm={} UNPROTECTED: {}; the VM keeps running here without a standby", config.vmName(), detail,
                ex instanceof ProtocolException || lost != null || expired != null ? null : ex);
        }
        final ExitReason reason = requested ? ExitReason.REQUEST : ExitReason.ERROR;
        return new ExitEvent("primary", reason, detail, lost != null, lastCompleted, false, ex);
    }

    private void holdFenced()
    {
        if (!paused)
        {
            try
            {
                source.pause();
                paused = true;
            }
            catch (final Exception ex)
            {
                LOG.error("vm={} could not pause the fenced VM: {}", config.vmName(), ex.toString());
            }
        }
        stopped = true;
    }

    private void onPeerGone()
    {
        closeQuietly(control);
        commands.offer(CMD_WAKE);
    }

    private void checkSessionAlive() throws IOException
    {
        if (stopped || failover.isPending())
        {
            throw new IOException("session ended on request");
        }
        final Heartbeat hb = heartbeat;
        if (hb != null && (hb.lostDetail() != null || hb.peerByeReason() >= 0))
        {
            throw new IOException("peer gone");
        }
    }

    private void awaitTrigger(final long dueNs) throws IOException, InterruptedException
    {
        while (true)
        {
            checkSessionAlive();
            final long waitNs = dueNs - clock.nanoTime();
            if (waitNs <= 0)
            {
                commands.clear();
                return;
            }
            final Integer cmd = commands.poll(waitNs, TimeUnit.NANOSECONDS);
            if (cmd != null && cmd == CMD_CHECKPOINT)
            {
                commands.clear();
                return;
            }
        }
    }

    private void idle(final long ms)
    {
        try
        {
            // only close() or a failover request cuts the wait short; a late wake-up from the ended session
            // (its heartbeat's goodbye) must not make us reconnect at once
            final long deadline = clock.nanoTime() + ms * 1_000_000L;
            long left;
            while (!stopped && !failover.isPending() && (left = deadline - clock.nanoTime()) > 0)
            {
                commands.poll(left, TimeUnit.NANOSECONDS);
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            stopped = true;
        }
    }

    private Socket connect(final int channel, final long sessionId) throws IOException
    {
        final Socket s = transport.newSocket();
        try
        {
            s.setTcpNoDelay(true);
            s.connect(secondary, (int)config.connectTimeoutMs());
            return s;
        }
        catch (final IOException ex)
        {
            closeQuietly(s);
            throw new IOException("connect to secondary " + peer + " (" + (channel == 0 ? "control" : "heartbeat") +
                " channel) failed: " + ex.getMessage(), ex);
        }
    }

    private Welcome handshake(final Socket s, final int channel, final long sessionId) throws IOException
    {
        s.setSoTimeout((int)config.syncTimeoutMs());
        final int mode = config.mode() == ColoConfig.Mode.STRICT ? Hello.MODE_STRICT : Hello.MODE_SPECULATIVE;
        new Hello(channel, mode, sessionId, config.maxStateBytes(), config.heartbeatIntervalMs(),
            config.heartbeatTimeoutMs(), config.vmName(), new byte[0]).writeTo(s.getOutputStream());
        final Welcome w = Welcome.readFrom(s.getInputStream());
        s.setSoTimeout(0);
        if (w.status() != Welcome.OK)
        {
            closeQuietly(s);
            throw new RefusedException(w.status(), "secondary " + peer + " refused vm " + config.vmName() + ": " +
                Welcome.statusName(w.status()) + (w.reason().isEmpty() ? "" : " (" + w.reason() + ")"));
        }
        return w;
    }


    static void closeQuietly(final AutoCloseable c)
    {
        if (c != null)
        {
            try
            {
                c.close();
            }
            catch (final Exception ignore)
            {
                // nothing more to do with it
            }
        }
    }

    /** Stop the engine: ends the session with reason REQUEST; the VM keeps running unprotected. */
    @Override
    public void close()
    {
        stopped = true;
        commands.offer(CMD_WAKE);
        closeQuietly(control);
        try
        {
            thread.join(10_000);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
        watchdog.close();
        state = state == ProtectionState.FENCED ? ProtectionState.FENCED : ProtectionState.STOPPED;
    }

    /**
     * Fault injection: behave as if this process died at this instant. No goodbye to the peer, no resume, no
     * release of held output, no exit event. For tests and the demo's "host dies" step only.
     */
    public void kill()
    {
        killed = true;
        stopped = true;
        final Heartbeat hb = heartbeat;
        if (hb != null)
        {
            hb.close();
        }
        closeQuietly(control);
    }

    static final class RefusedException extends IOException
    {
        final int status;

        RefusedException(final int status, final String message)
        {
            super(message);
            this.status = status;
        }
    }
}
