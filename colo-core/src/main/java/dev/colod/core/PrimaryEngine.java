package dev.colod.core;

import dev.colod.core.protocol.ColoChannel;
import dev.colod.core.protocol.ColoCommand;
import dev.colod.core.protocol.HeartbeatFrame;
import dev.colod.core.protocol.Hello;
import dev.colod.core.protocol.ProtocolException;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.protocol.Welcome;
import dev.colod.core.spi.FrameMirror;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.spi.OutputCommit;
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
import java.util.EnumSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;

/**
 * The primary side of the checkpoint protocol for one VM. One session thread connects to the secondary, runs
 * the preamble, then loops: wait for the next checkpoint (periodic or requested early), run one transaction.
 * Whoever ends a session first records why ({@link SessionEnd}); the one exit path classifies it: the VM keeps
 * running unprotected with its held output let out and the engine reconnects, or (the secondary took over) the
 * VM stays paused and held output is dropped, for good. An {@link ExitEvent} is published either way.
 * <p>
 * States ({@link ProtectionState}): CONNECTING -> PROTECTED <-> UNPROTECTED, and from any of them to the final
 * FENCED or STOPPED; {@link #enter} refuses every other move. Other threads talk to it only through
 * {@link #requestCheckpoint()}, {@link #requestFailover()} and {@link #close()}; output asks for an early
 * checkpoint by {@link OutputCommit#wantsCheckpoint()}, which the engine polls while it waits.
 */
public final class PrimaryEngine extends EngineBase<PrimaryEngine>
{
    private static final Logger LOG = LoggerFactory.getLogger(PrimaryEngine.class);
    private static final int CMD_CHECKPOINT = 1;
    private static final int CMD_WAKE = 2;
    /** The open epoch took its first frame (from the output's thread). */
    private static final int CMD_OUTPUT = 3;
    /** How often the wait between checkpoints looks at {@link OutputCommit#wantsCheckpoint()}. */
    private static final long OUTPUT_POLL_NS = 1_000_000L;
    /** How often unprotected output checks that the lease still covers it (well inside the safety margin). */
    private static final long LEASE_GUARD_MS = 10;
    /** How often held output asks the arbiter again while unprotected. */
    private static final long ARBITER_RETRY_NS = 200_000_000L;
    private static final Map<ProtectionState, Set<ProtectionState>> MOVES = Map.of(
        ProtectionState.CONNECTING, EnumSet.of(ProtectionState.PROTECTED, ProtectionState.UNPROTECTED,
            ProtectionState.FENCED, ProtectionState.STOPPED),
        ProtectionState.PROTECTED, EnumSet.of(ProtectionState.UNPROTECTED, ProtectionState.FENCED, ProtectionState.STOPPED),
        ProtectionState.UNPROTECTED, EnumSet.of(ProtectionState.PROTECTED, ProtectionState.FENCED, ProtectionState.STOPPED),
        ProtectionState.FENCED, EnumSet.noneOf(ProtectionState.class),
        ProtectionState.STOPPED, EnumSet.noneOf(ProtectionState.class));

    private final InetSocketAddress secondary;
    private final VmStateSource source;
    private final OutputCommit output;
    private final LinkedBlockingQueue<Integer> commands = new LinkedBlockingQueue<>();
    private final AtomicReference<ProtectionState> state = new AtomicReference<>(ProtectionState.CONNECTING);
    private final Thread thread;
    private final String peer;
    /** Why protection cannot start, said once and then once a minute with a count, not at every reconnect. */
    private final RepeatedWarning notProtecting;

    private volatile boolean closing;
    private volatile boolean killed;
    private volatile SessionEnd session;
    private volatile Socket control;
    private volatile Heartbeat heartbeat;
    private volatile long lastCompleted;
    private boolean paused;
    private boolean firstOfSession;
    /** Session thread: the pause budget of output-triggered checkpoints, and when the last one ended. */
    private PauseBudget budget;
    private long lastEndNs;
    private long lastCycleEndNs;
    /** Hybrid mode: since when the frames channel has been down in this session (0: it runs). */
    private long uncomparedSinceNs;
    /** Output lets frames out unacknowledged (unprotected, granted by the arbiter). Session thread only. */
    private boolean passing;
    private long lastArbiterAskNs;
    private Arbiter.Verdict.Kind lastVerdict;

    public PrimaryEngine(final ColoConfig config, final InetSocketAddress secondary, final VmStateSource source,
        final OutputCommit output, final ColoCounters counters, final ProtocolTap tap, final NanoClock clock)
    {
        super(Role.PRIMARY, config, counters, tap, clock);
        this.secondary = secondary;
        this.source = source;
        this.output = output;
        this.peer = secondary.getHostString() + ":" + secondary.getPort();
        this.notProtecting = new RepeatedWarning(clock, m -> LOG.warn("vm={} {}", config.vmName(), m));
        this.thread = new Thread(this::run, "colo-primary-" + config.vmName());
    }

    @Override
    public Role role()
    {
        return Role.PRIMARY;
    }

    public PrimaryEngine start()
    {
        output.onOpenOutput(() -> commands.offer(CMD_OUTPUT)); // wakes the wait for a trigger at once
        watchdog.start();
        thread.start();
        return this;
    }

    @Override
    public ProtectionState state()
    {
        return state.get();
    }

    @Override
    public String peer()
    {
        return peer;
    }

    /** Ask for a checkpoint now instead of at the next period (an operator's {@code coloctl checkpoint}). */
    @Override
    public void requestCheckpoint()
    {
        counters.checkpointsRequestedEarly.incrementAndGet();
        commands.offer(CMD_CHECKPOINT);
    }

    /**
     * Stop protecting (QEMU's "lost heartbeat" on the primary): the session ends with reason REQUEST after
     * the current step, the VM keeps running here, unprotected, and the engine does not reconnect.
     */
    @Override
    public void requestFailover()
    {
        if (failover.require(ExitReason.REQUEST))
        {
            final SessionEnd s = session;
            if (s != null)
            {
                s.record(SessionEnd.Cause.REQUESTED, "protection stopped on request");
            }
            commands.offer(CMD_WAKE);
        }
    }

    /** Moves to {@code to} if that is a move the state machine allows from the current state. */
    private boolean enter(final ProtectionState to)
    {
        while (true)
        {
            final ProtectionState from = state.get();
            if (from == to)
            {
                return true;
            }
            if (!MOVES.get(from).contains(to))
            {
                return false;
            }
            if (state.compareAndSet(from, to))
            {
                return true;
            }
        }
    }

    private boolean isFinal()
    {
        return MOVES.get(state.get()).isEmpty();
    }

    private void run()
    {
        if (arbiter.arbitrated())
        {
            // until the arbiter grants this host the VM, nothing leaves unacknowledged
            output.hold(lastCompleted + 1);
            if (!unprotectedOutput("starting"))
            {
                // another host holds the VM's key (e.g. a failover while this host's colod restarted): it runs
                // the VM; the copy here is fenced, not left running with its output cut
                fencedByArbiter(null);
                return;
            }
        }
        while (!closing && !isFinal())
        {
            final SessionEnd end = new SessionEnd();
            session = end;
            if (closing)
            {
                end.record(SessionEnd.Cause.STOPPING, "agent stopping");
            }
            if (failover.isPending())
            {
                end.record(SessionEnd.Cause.REQUESTED, "protection stopped on request");
            }
            SessionEnd.Outcome outcome = null;
            try
            {
                runSession(end);
            }
            catch (final RefusedException ex)
            {
                lastError = ex.getMessage();
                notProtecting.warn("secondary " + peer + " refused the session: " + ex.getMessage());
                if (ex.status == Welcome.STALE_TOKEN && arbiter.arbitrated())
                {
                    // not proof of a newer owner: the newer token may be this host's own earlier hold (a restarted
                    // colod that has not learned it yet). Only the arbiter proves another owner; until it answers,
                    // output stays held and the VM runs on
                    counters.staleTokenRefusals.incrementAndGet();
                    if (!unprotectedOutput("the secondary refused fencing token " + ex.token))
                    {
                        fencedByArbiter(ex);
                        return;
                    }
                }
                else if (ex.status == Welcome.FAILED_OVER || ex.status == Welcome.STALE_TOKEN)
                {
                    output.fence(ex.getMessage()); // whatever is held (e.g. since an adoption) never leaves
                    fenceHere(ex.getMessage());
                    exitListeners.publish(ExitEvent.ended(Role.PRIMARY, ExitReason.ERROR, ex.getMessage(), false,
                        lastCompleted, ex));
                    return;
                }
            }
            catch (final Throwable ex)
            {
                outcome = endSession(end, ex);
            }
            if (outcome != null && outcome.next() != SessionEnd.Next.RECONNECT)
            {
                return;
            }
            // until a session is up again the VM runs unprotected; the status says so, not "connecting"
            enter(ProtectionState.UNPROTECTED);
            commands.clear();
            if (!idleUnprotected(config.reconnectIntervalMs()))
            {
                return; // fenced: the arbiter gave the VM to the other host
            }
            if (failover.isPending())
            {
                LOG.warn("vm={} protection stopped on request; not reconnecting", config.vmName());
                return;
            }
        }
    }

    private void runSession(final SessionEnd end) throws Exception
    {
        final Socket c = connect(Hello.CHANNEL_CONTROL, 0);
        control = c;
        watchdog.watch(c, end);
        final InputStream cin = c.getInputStream();
        final Welcome w = handshake(c, Hello.CHANNEL_CONTROL, 0);
        final Socket hbSocket = connect(Hello.CHANNEL_HEARTBEAT, w.sessionId());
        handshake(hbSocket, Hello.CHANNEL_HEARTBEAT, w.sessionId());
        final Heartbeat hb = new Heartbeat(hbSocket, peer, "colo-primary-" + config.vmName(),
            config.heartbeatIntervalMs(), config.heartbeatTimeoutMs(), () -> lastCompleted, counters, end,
            this::onPeerGone);
        heartbeat = hb;
        hb.start();
        if (config.mode() == ColoConfig.Mode.HYBRID)
        {
            // hybrid: inbound frames go to the secondary's running copy, its digests come back for comparison
            final Socket fs = connect(Hello.CHANNEL_FRAMES, w.sessionId());
            handshake(fs, Hello.CHANNEL_FRAMES, w.sessionId());
            frames.attach(fs, peer);
        }
        uncomparedSinceNs = 0;

        final OutputStream cout = new BufferedOutputStream(c.getOutputStream(), 1 << 16);
        final ColoChannel ch = new ColoChannel(cin, cout, peer, tap);
        final long limit = w.maxStateBytes();
        long checkpointId = w.lastCommitted() + 1;
        ch.checkpointId(checkpointId);
        watchdog.arm("waiting for checkpoint-ready", config.syncTimeoutMs());
        ch.expect(ColoCommand.CHECKPOINT_READY);
        watchdog.disarm();

        checkSessionAlive(end);
        counters.sessionsStarted.incrementAndGet();
        source.beginSession(checkpointId);
        // the live first synchronisation: all of RAM while the guest runs; output still passes (unprotected)
        try (StateCapture base = source.liveBase(checkpointId))
        {
            if (base != null)
            {
                syncBase(ch, checkpointId, limit, base);
                lastCompleted = checkpointId;
                checkpointId++;
                // live rounds: what the guest wrote during the base, then during each round, until little is left
                for (StateCapture round = source.liveRound(checkpointId); round != null;
                     round = source.liveRound(checkpointId))
                {
                    try (StateCapture r = round)
                    {
                        syncRound(ch, checkpointId, limit, r);
                    }
                    lastCompleted = checkpointId;
                    checkpointId++;
                }
            }
        }
        output.hold(checkpointId);
        firstOfSession = true;
        enter(ProtectionState.PROTECTED);
        notProtecting.clear();
        LOG.info("vm={} protected by {} (session {}, mode {}, first checkpoint {})", config.vmName(), peer,
            Long.toHexString(w.sessionId()), config.mode(), checkpointId);

        passing = false;
        final long firstId = checkpointId;
        // hybrid: the secondary's copy runs from the first checkpoint on, so take it at once, not an interval later
        long nextDueNs = clock.nanoTime() +
            (config.mode() == ColoConfig.Mode.HYBRID ? 0 : config.checkpointDelayMs() * 1_000_000L);
        // the bucket holds one interval's worth of pause (20 ms..1 s): a burst (one request's few checkpoints) goes
        // at once after a quiet spell
        budget = new PauseBudget(config.maxPausedPercent(),
            Math.min(1_000_000_000L, Math.max(20_000_000L, config.checkpointDelayMs() * 1_000_000L)), clock.nanoTime());
        lastEndNs = clock.nanoTime();
        lastCycleEndNs = lastEndNs;
        while (true)
        {
            triggered(awaitTrigger(end, nextDueNs));
            doCheckpoint(end, ch, checkpointId, limit);
            lastEndNs = clock.nanoTime();
            lastCompleted = checkpointId;
            if (checkpointId == firstId)
            {
                arbiter.protectedBy(checkpointId); // the standby is current again: it may take over
            }
            checkpointId++;
            nextDueNs = clock.nanoTime() + config.checkpointDelayMs() * 1_000_000L;
        }
    }

    /**
     * One checkpoint, step after step in the order of the protocol's transaction (PROTOCOL.md section 4). Any failure throws to the
     * single exit path in {@link #endSession}.
     */
    private void doCheckpoint(final SessionEnd end, final ColoChannel ch, final long id, final long limit) throws Exception
    {
        final long startNs = clock.nanoTime();
        ch.checkpointId(id);

        request(ch, "");

        watchdog.arm("pausing the VM", config.syncTimeoutMs());
        source.pause();
        paused = true;
        final long pausedNs = clock.nanoTime();
        // a failover may have been requested while we were pausing: check again now that the VM is still
        checkSessionAlive(end);
        output.seal(id);

        watchdog.arm("capturing VM state", config.transferTimeoutMs());
        long sendNs;
        try (StateCapture capture = source.capture(id))
        {
            checkSize(capture, "checkpoint " + id + " state", limit);
            if (config.mode().resumesEarly() && !capture.needsPausedVm())
            {
                resume(pausedNs);
            }
            sendNs = clock.nanoTime();
            send(ch, id, capture, "vmstate");
        }

        await(ColoCommand.VMSTATE_RECEIVED, ch, "");
        final long receivedNs = clock.nanoTime();
        output.release(id);
        counters.transferMicros.recordValue(Math.max(0, (receivedNs - sendNs) / 1000));
        await(ColoCommand.VMSTATE_LOADED, ch, "");
        counters.commitMicros.recordValue(Math.max(0, (clock.nanoTime() - receivedNs) / 1000));
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

    /**
     * The base transaction of a live first synchronisation: the transaction's seven messages without a pause and without
     * an epoch (the secondary stages and commits it as a base it cannot resume from on its own).
     */
    private void syncBase(final ColoChannel ch, final long id, final long limit, final StateCapture base) throws Exception
    {
        final long startNs = clock.nanoTime();
        final long size = syncLive(ch, id, limit, base, "base image " + id, " (base)", "the base image");
        counters.baseSyncMicros.recordValue(Math.max(0, (clock.nanoTime() - startNs) / 1000));
        LOG.info("vm={} base image {} ({} MiB) synchronised live in {} ms", config.vmName(), id, size >> 20,
            (clock.nanoTime() - startNs) / 1_000_000);
    }

    /** A live round after the base: the same transaction, not a consistent state either (flags BASE, not FULL). */
    private void syncRound(final ColoChannel ch, final long id, final long limit, final StateCapture round) throws Exception
    {
        final long startNs = clock.nanoTime();
        final long size = syncLive(ch, id, limit, round, "live round " + id, " (live round)", "a live round");
        counters.liveRounds.incrementAndGet();
        LOG.info("vm={} live round {} ({} MiB written during the one before) synchronised in {} ms", config.vmName(), id,
            size >> 20, (clock.nanoTime() - startNs) / 1_000_000);
    }

    /** One transaction of a capture read while the guest runs (a base or a live round); returns its size in bytes. */
    private long syncLive(final ColoChannel ch, final long id, final long limit, final StateCapture capture,
        final String sized, final String which, final String sent) throws Exception
    {
        ch.checkpointId(id);
        final long size = checkSize(capture, sized, limit);
        request(ch, which);
        send(ch, id, capture, sent);
        await(ColoCommand.VMSTATE_RECEIVED, ch, which);
        await(ColoCommand.VMSTATE_LOADED, ch, which);
        return size;
    }

    /** The transaction's first two messages: checkpoint-request, then the secondary's checkpoint-reply. */
    private void request(final ColoChannel ch, final String which) throws IOException
    {
        watchdog.arm("sending checkpoint-request" + which, config.syncTimeoutMs());
        ch.put(ColoCommand.CHECKPOINT_REQUEST);
        await(ColoCommand.CHECKPOINT_REPLY, ch, which);
    }

    /** Waits for the secondary's {@code reply} within the step's deadline; disarmed after the last, vmstate-loaded. */
    private void await(final ColoCommand reply, final ColoChannel ch, final String which) throws IOException
    {
        watchdog.arm("waiting for " + reply.wireName() + which, reply == ColoCommand.CHECKPOINT_REPLY
            ? config.syncTimeoutMs() : config.transferTimeoutMs());
        ch.expect(reply);
        if (reply == ColoCommand.VMSTATE_LOADED)
        {
            watchdog.disarm();
        }
    }

    /** A state's size, refused (naming {@code what}) above the session's limit. */
    private static long checkSize(final StateCapture state, final String what, final long limit) throws IOException
    {
        final long size = state.sizeBytes();
        if (size < 0 || size > limit)
        {
            throw new IOException(what + " of " + size + " bytes exceeds the session limit of " + limit +
                " bytes (max-state-bytes)");
        }
        return size;
    }

    /** vmstate-send, vmstate-size and the state's bytes. */
    private void send(final ColoChannel ch, final long id, final StateCapture state, final String what) throws IOException
    {
        final long size = state.sizeBytes();
        watchdog.arm("sending " + what, config.transferTimeoutMs());
        ch.put(ColoCommand.VMSTATE_SEND);
        ch.putStateSize(size);
        state.writeTo(ch.out(), done -> ch.tap().stateProgress(done, size, id));
        ch.out().flush();
        counters.stateBytes.addAndGet(size);
    }

    private void resume(final long pausedNs) throws IOException
    {
        source.resume();
        paused = false;
        final long now = clock.nanoTime();
        final long pauseNs = Math.max(0, now - pausedNs);
        final long pauseMicros = pauseNs / 1000;
        counters.pauseMicros.recordValue(pauseMicros);
        counters.pausedNanos.addAndGet(pauseNs);
        if (budget != null)
        {
            budget.paused(pauseNs, now);
            final long cycleNs = now - lastCycleEndNs;
            lastCycleEndNs = now;
            if (cycleNs > 0)
            {
                // moving average over about the last 16 checkpoints
                final long share = Math.min(10_000, pauseNs * 10_000 / cycleNs);
                final long old = counters.pausedShareBasisPoints.get();
                counters.pausedShareBasisPoints.set(old + (share - old) / 16);
            }
        }
        if (firstOfSession)
        {
            firstOfSession = false;
            counters.protectionStartPauseMicros.set(pauseMicros);
        }
    }

    /**
     * The one exit path of a session: the recorded cause is classified; the VM runs on with its output let out,
     * or (fenced) stays paused with its output dropped; the peer is told; callers learn why.
     */
    private SessionEnd.Outcome endSession(final SessionEnd end, final Throwable ex)
    {
        watchdog.disarm();
        if (killed)
        {
            return null;
        }
        final boolean wasProtected = state.get() == ProtectionState.PROTECTED;
        final Heartbeat hb = heartbeat;
        // whether the VM died may take a glance of up to 100 ms (a killed QEMU's exit trails its broken QMP socket),
        // during which a VM paused mid-checkpoint stays paused: not when colod stops, which ends the session itself
        final String vmLost = closing ? null : source.lostCause();
        if (vmLost != null && wasProtected)
        {
            end.record(SessionEnd.Cause.VM_LOST, vmLost, ex);
        }
        final SessionEnd.Outcome o = SessionEnd.classify(end.fail(ex, hb == null ? 0 : config.heartbeatTimeoutMs()),
            true, peer, counters);
        boolean fence = o.next() == SessionEnd.Next.FENCE;
        String fenceWhy = o.detail();
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
        try
        {
            source.endSession();
        }
        catch (final RuntimeException rex)
        {
            LOG.warn("vm={} source at the end of the session: {}", config.vmName(), rex.toString());
        }
        if (wasProtected)
        {
            counters.checkpointsFailed.incrementAndGet();
            counters.sessionsEnded.incrementAndGet();
            if (fence)
            {
                output.fence(o.detail());
            }
            else if (!unprotectedOutput(o.detail()))
            {
                // also when colod stops (or protection is stopped on request) and the VM runs on: output passes
                // unprotected only once the arbiter recorded the standby outdated, so the other host can never
                // resume from it while this copy serves. Not granted: held output stays held (a colod that stops
                // then leaves the output cut, as a crash would)
                fence = true; // the arbiter gave the VM to the other host meanwhile (output is fenced already)
                fenceWhy = lastError;
            }
        }
        if (hb != null)
        {
            hb.bye(o.cause() == SessionEnd.Cause.VM_LOST ? HeartbeatFrame.BYE_VM_LOST
                : o.reason() == ExitReason.REQUEST && !fence ? HeartbeatFrame.BYE_STOP : HeartbeatFrame.BYE_ERROR,
                fence ? "fenced: " + fenceWhy : o.detail());
        }
        Closeables.closeQuietly(control);
        frames.detach();
        heartbeat = null;
        control = null;
        lastError = o.detail();

        if (fence)
        {
            lastError = fenceWhy;
            fenceHere(fenceWhy);
            exitListeners.publish(ExitEvent.ended(Role.PRIMARY, o.reason(), fenceWhy, false, lastCompleted, null));
            return new SessionEnd.Outcome(o.cause(), o.reason(), fenceWhy, o.peerLost(), SessionEnd.Next.FENCE, o.error());
        }
        if (o.next() == SessionEnd.Next.RECONNECT && !wasProtected)
        {
            notProtecting.warn("cannot protect: " + o.detail());
            return o;
        }
        enter(ProtectionState.UNPROTECTED);
        if (o.reason() == ExitReason.REQUEST)
        {
            LOG.warn("vm={} UNPROTECTED: {}", config.vmName(), o.detail());
        }
        else
        {
            LOG.error("vm={} UNPROTECTED: {}; the VM keeps running here without a standby", config.vmName(), o.detail(),
                o.cause() == SessionEnd.Cause.FAILED ? ex : null);
        }
        exitListeners.publish(ExitEvent.ended(Role.PRIMARY, o.reason(), o.detail(), o.peerLost(), lastCompleted, ex));
        return o;
    }

    /**
     * Protection is lost: output may leave unacknowledged only if the arbiter grants this host the VM (and marks
     * the standby outdated). Granted: pass-through. Not now: keep holding (never pass-through without the
     * lease). Fence: the other host holds the key with a newer token; output is fenced and false returned.
     */
    private boolean unprotectedOutput(final String why)
    {
        lastArbiterAskNs = clock.nanoTime();
        final Arbiter.Verdict v = arbiter.goUnprotected(lastCompleted);
        final Arbiter.Verdict.Kind before = lastVerdict;
        lastVerdict = v.kind();
        switch (v.kind())
        {
            case GRANTED ->
            {
                if (!passing)
                {
                    output.passThrough(why);
                    passing = true;
                    if (arbiter.arbitrated())
                    {
                        counters.arbiterGrants.incrementAndGet();
                        LOG.warn("vm={} the arbiter grants this host the VM unprotected (token {}): output passes",
                            config.vmName(), v.token());
                    }
                }
                return true;
            }
            case FENCE ->
            {
                output.fence(v.detail());
                passing = false;
                lastError = v.detail();
                return false;
            }
            default ->
            {
                if (passing || before != v.kind())
                {
                    LOG.error("vm={} HOLDING all output: {} ({})", config.vmName(), why, v.detail());
                }
                output.hold(lastCompleted + 1);
                passing = false;
                counters.arbiterWaits.incrementAndGet();
                lastError = "arbiter: " + v.detail();
                return true;
            }
        }
    }

    /**
     * Waits between reconnects while unprotected. Output that passes stops passing before the lease could have
     * lapsed; output that is held asks the arbiter again every {@link #ARBITER_RETRY_NS}. False when fenced.
     */
    private boolean idleUnprotected(final long ms)
    {
        if (!arbiter.arbitrated())
        {
            idle(ms);
            return true;
        }
        final long deadline = clock.nanoTime() + ms * 1_000_000L;
        while (!closing && !failover.isPending() && clock.nanoTime() - deadline < 0)
        {
            if (passing && !arbiter.mayServeUnprotected())
            {
                output.hold(lastCompleted + 1);
                passing = false;
                counters.leaseLapses.incrementAndGet();
                LOG.error("vm={} the lease could lapse: HOLDING all output until the arbiter grants it again",
                    config.vmName());
            }
            if (!passing && clock.nanoTime() - lastArbiterAskNs > ARBITER_RETRY_NS && !unprotectedOutput("unprotected"))
            {
                fencedByArbiter(null);
                return false;
            }
            idle(LEASE_GUARD_MS);
        }
        return true;
    }

    /** The arbiter gave the VM to the other host ({@link #unprotectedOutput} said so, output is fenced): stop here. */
    private void fencedByArbiter(final Throwable cause)
    {
        fenceHere(lastError);
        exitListeners.publish(ExitEvent.ended(Role.PRIMARY, ExitReason.ERROR, lastError, false, lastCompleted, cause));
    }

    /** The secondary runs the VM now: keep it paused here, for good. */
    private void fenceHere(final String why)
    {
        enter(ProtectionState.FENCED);
        if (!paused)
        {
            try
            {
                source.pause();
                paused = true;
            }
            catch (final Exception ex)
            {
                if (source.lostCause() == null)
                {
                    LOG.error("vm={} could not pause the fenced VM: {}", config.vmName(), ex.toString());
                }
            }
        }
        LOG.error("vm={} FENCED: {}; the VM stays paused here", config.vmName(), why);
        arbiter.resign("fenced"); // the other host need not wait out this host's lease
    }

    private void onPeerGone()
    {
        Heartbeat.abort(control);
        commands.offer(CMD_WAKE);
    }

    private static void checkSessionAlive(final SessionEnd end) throws IOException
    {
        final SessionEnd.Recorded r = end.recorded();
        if (r != null)
        {
            throw new IOException("session ending: " + r.cause() + " (" + r.detail() + ")");
        }
    }

    /** What started a checkpoint (counted per cause, shown by {@code coloctl status}). */
    enum Trigger
    {
        TIMER, OUTPUT, BUFFER, STATE, REQUEST, MISMATCH, COMPARE_TIMEOUT
    }

    private void triggered(final Trigger t)
    {
        (switch (t)
        {
            case TIMER -> counters.checkpointsByTimer;
            case OUTPUT -> counters.checkpointsByOutput;
            case BUFFER -> counters.checkpointsByBuffer;
            case STATE -> counters.checkpointsByState;
            case REQUEST -> counters.checkpointsByRequest;
            case MISMATCH -> counters.checkpointsByMismatch;
            case COMPARE_TIMEOUT -> counters.checkpointsByCompareTimeout;
        }).incrementAndGet();
    }

    /**
     * Hybrid mode: whether nothing has compared held output for {@code compare-timeout-ms} (the frames channel is
     * down). A channel that fails only for a moment, or as the session ends, starts no checkpoint.
     */
    private boolean uncompared(final long now)
    {
        if (frames.comparing())
        {
            uncomparedSinceNs = 0;
            return false;
        }
        if (uncomparedSinceNs == 0)
        {
            uncomparedSinceNs = now;
        }
        return now - uncomparedSinceNs >= config.compareTimeoutMs() * 1_000_000L;
    }

    /**
     * Waits until the next checkpoint is due, output or the VM's state wants one early, or one is requested. With
     * the output trigger on, a held frame in the open epoch starts one as soon as the pause budget and the minimum
     * gap allow (docs/ARCHITECTURE.md, "When a checkpoint starts").
     */
    private Trigger awaitTrigger(final SessionEnd end, final long dueNs) throws IOException, InterruptedException
    {
        boolean deferred = false;
        long outputSeenNs = 0;
        while (true)
        {
            checkSessionAlive(end);
            if (output.wantsCheckpoint())
            {
                counters.checkpointsRequestedEarly.incrementAndGet();
                commands.clear();
                return Trigger.BUFFER;
            }
            final String compared = output.comparisonWants();
            if (compared != null)
            {
                commands.clear();
                return "compare-timeout".equals(compared) ? Trigger.COMPARE_TIMEOUT : Trigger.MISMATCH;
            }
            if (source.wantsCheckpoint())
            {
                counters.checkpointsRequestedByState.incrementAndGet();
                commands.clear();
                return Trigger.STATE;
            }
            final long now = clock.nanoTime();
            long waitNs = dueNs - now;
            if (waitNs <= 0)
            {
                commands.clear();
                return Trigger.TIMER;
            }
            // hybrid mode: held output waits for comparison, which asks for a checkpoint when it must; once the
            // frames channel has been down for the compare timeout, held output asks for one as in periodic mode
            if (config.outputTrigger() && (config.mode() != ColoConfig.Mode.HYBRID || uncompared(now))
                && output.holdsOpenOutput())
            {
                if (outputSeenNs == 0)
                {
                    outputSeenNs = now;
                }
                final long earliest = Math.max(Math.max(budget.earliestNs(now),
                    lastEndNs + config.minCheckpointGapMs() * 1_000_000L), outputSeenNs + config.outputLingerUs() * 1_000L);
                if (earliest - now <= 0)
                {
                    commands.clear();
                    return Trigger.OUTPUT;
                }
                if (!deferred && budget.budgetNs() <= 0)
                {
                    deferred = true;
                    counters.outputTriggerDeferrals.incrementAndGet();
                }
                waitNs = Math.min(waitNs, earliest - now);
            }
            final Integer cmd = commands.poll(Math.min(waitNs, OUTPUT_POLL_NS), TimeUnit.NANOSECONDS);
            if (cmd != null && cmd == CMD_CHECKPOINT)
            {
                commands.clear();
                return Trigger.REQUEST;
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
            while (!closing && !failover.isPending() && (left = deadline - clock.nanoTime()) > 0)
            {
                commands.poll(left, TimeUnit.NANOSECONDS);
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            closing = true;
        }
    }
    private Socket connect(final int channel, final long sessionId) throws IOException
    {
        try
        {
            return open(config, secondary, transport);
        }
        catch (final IOException ex)
        {
            throw new IOException("connect to secondary " + peer + " (" + Hello.channelName(channel) +
                " channel) failed: " + ex.getMessage(), ex);
        }
    }

    /** A connection to the secondary's port, secured by the transport, with the sync timeout for the handshake. */
    private static Socket open(final ColoConfig config, final InetSocketAddress to, final Transport transport)
        throws IOException
    {
        final Socket s = transport.newSocket();
        try
        {
            s.setTcpNoDelay(true);
            s.connect(to, (int)config.connectTimeoutMs());
            s.setSoTimeout((int)config.syncTimeoutMs());
            return transport.secureClient(s);
        }
        catch (final IOException ex)
        {
            Closeables.closeQuietly(s);
            throw ex;
        }
    }

    /** This host's HELLO for {@code channel}. */
    private static Hello hello(final ColoConfig config, final int channel, final long sessionId, final long token)
    {
        final int mode = switch (config.mode())
        {
            case STRICT -> Hello.MODE_STRICT;
            case SPECULATIVE -> Hello.MODE_SPECULATIVE;
            case HYBRID -> Hello.MODE_HYBRID;
        };
        return new Hello(channel, mode, sessionId, config.maxStateBytes(), config.heartbeatIntervalMs(),
            config.heartbeatTimeoutMs(), token, config.vmName(), (channel == Hello.CHANNEL_CONTROL ? config.vmShape()
                : channel == Hello.CHANNEL_FRAMES ? FrameMirror.FEATURES : "")
                .getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }

    private Welcome handshake(final Socket s, final int channel, final long sessionId) throws IOException
    {
        s.setSoTimeout((int)config.syncTimeoutMs());
        final Hello hello = hello(config, channel, sessionId, arbiter.token());
        hello.writeTo(s.getOutputStream());
        final Welcome w = Welcome.readFrom(s.getInputStream());
        s.setSoTimeout(0);
        if (w.status() == Welcome.OK && w.sessionId() == 0)
        {
            Closeables.closeQuietly(s);
            throw new ProtocolException("welcome.session-id", "bad welcome.session-id 0 for an accepted " +
                Hello.channelName(channel) + " channel from secondary " + peer);
        }
        if (w.status() != Welcome.OK)
        {
            Closeables.closeQuietly(s);
            throw new RefusedException(w.status(), hello.token(), "secondary " + peer + " refused vm " + config.vmName() + ": " +
                Welcome.statusName(w.status()) + (w.reason().isEmpty() ? "" : " (" + w.reason() + ")"));
        }
        return w;
    }

    /**
     * Asks the peer at {@code peer}, before this host starts the VM as primary, whether it stands by
     * ({@link Welcome#OK}) or runs the VM since a failover ({@link Welcome#FAILED_OVER}). Opens no session.
     * Throws if the peer cannot be reached within the connect and sync timeouts.
     */
    public static int probe(final ColoConfig config, final InetSocketAddress peer, final Transport transport)
        throws IOException
    {
        try (Socket s = open(config, peer, transport))
        {
            hello(config, Hello.CHANNEL_PROBE, 0, 0).writeTo(s.getOutputStream());
            return Welcome.readFrom(s.getInputStream()).status();
        }
    }

    /** Stop the engine: ends the session with reason REQUEST; the VM keeps running unprotected. */
    @Override
    public void close()
    {
        closing = true;
        final SessionEnd s = session;
        if (s != null)
        {
            s.record(SessionEnd.Cause.STOPPING, "agent stopping");
        }
        commands.offer(CMD_WAKE);
        // aborted, not closed: a TLS close from this thread waits for the session thread's read and drains input,
        // which stretched the pause of a checkpoint in flight when colod stopped (116-133 ms, DaemonRestartTest)
        Heartbeat.abort(control);
        try
        {
            thread.join(10_000);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
        watchdog.close();
        enter(ProtectionState.STOPPED);
    }

    /**
     * Fault injection for colo-core's own tests: behave as if this process died at this instant. No goodbye to
     * the peer, no resume, no release of held output, no exit event.
     */
    void kill()
    {
        killed = true;
        closing = true;
        final Heartbeat hb = heartbeat;
        if (hb != null)
        {
            hb.close();
        }
        Closeables.closeQuietly(control);
    }

    static final class RefusedException extends IOException
    {
        final int status;
        /** The token this host's HELLO carried. */
        final long token;

        RefusedException(final int status, final long token, final String message)
        {
            super(message);
            this.status = status;
            this.token = token;
        }
    }
}
