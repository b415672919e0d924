package dev.colod.core.status;

import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Every counter of one engine, in one place. Written by the engine's threads, read by anyone (control
 * socket, metrics) without locks.
 */
public final class ColoCounters
{
    public final AtomicLong checkpointsCompleted = new AtomicLong();
    public final AtomicLong checkpointsFailed = new AtomicLong();
    public final AtomicLong checkpointsRequestedEarly = new AtomicLong();
    /** Hybrid mode: checkpoints because the guests' output differed (mismatch, or the secondary far ahead). */
    public final AtomicLong checkpointsByMismatch = new AtomicLong();
    /** Hybrid mode: checkpoints because a primary frame found no match within the compare timeout. */
    public final AtomicLong checkpointsByCompareTimeout = new AtomicLong();
    /** Checkpoints taken early because the VM's state asked (e.g. its disk writes reached their limit). */
    public final AtomicLong checkpointsRequestedByState = new AtomicLong();
    public final AtomicLong stateBytes = new AtomicLong();
    public final AtomicLong lastCheckpointId = new AtomicLong();
    /** System.nanoTime of the last completed checkpoint; 0 if none. */
    public final AtomicLong lastCheckpointNanos = new AtomicLong();
    public final AtomicLong sessionsStarted = new AtomicLong();
    public final AtomicLong sessionsEnded = new AtomicLong();
    public final AtomicLong protocolErrors = new AtomicLong();
    public final AtomicLong deadlinesMissed = new AtomicLong();
    public final AtomicLong heartbeatsSent = new AtomicLong();
    public final AtomicLong heartbeatsReceived = new AtomicLong();
    public final AtomicLong heartbeatLosses = new AtomicLong();
    public final AtomicLong refusedSessions = new AtomicLong();
    public final AtomicLong discardedPartialCheckpoints = new AtomicLong();
    public final AtomicLong failovers = new AtomicLong();
    /** Secondary: failovers it would have started on its own, held because the host is in maintenance. */
    public final AtomicLong failoversHeld = new AtomicLong();
    /** Primary: times the arbiter granted this host the VM unprotected. */
    public final AtomicLong arbiterGrants = new AtomicLong();
    /** Primary: times the arbiter said "not now" while unprotected (output held). Secondary: failover claims not granted. */
    public final AtomicLong arbiterWaits = new AtomicLong();
    /** Primary: times unprotected output stopped passing because the lease could lapse. */
    public final AtomicLong leaseLapses = new AtomicLong();
    /** Checkpoints by what started them: the interval ran out (timer). */
    public final AtomicLong checkpointsByTimer = new AtomicLong();
    /** ... the guest sent a frame that is held (output trigger). */
    public final AtomicLong checkpointsByOutput = new AtomicLong();
    /** ... held output neared its limit (buffer high-water mark). */
    public final AtomicLong checkpointsByBuffer = new AtomicLong();
    /** ... the VM's state wanted one (e.g. write tracking near its bound). */
    public final AtomicLong checkpointsByState = new AtomicLong();
    /** ... an operator asked ({@code coloctl checkpoint}). */
    public final AtomicLong checkpointsByRequest = new AtomicLong();
    /** Output-triggered checkpoints that waited for the pause budget (the guest had been paused its share). */
    public final AtomicLong outputTriggerDeferrals = new AtomicLong();
    /** Total time the guest spent paused by checkpoints, ns. */
    public final AtomicLong pausedNanos = new AtomicLong();
    /** Share of time paused over the recent checkpoints (moving average), in basis points (1/100 %). */
    public final AtomicLong pausedShareBasisPoints = new AtomicLong();
    /** Sessions refused because the peer's fencing token was older than one already seen. */
    public final AtomicLong staleTokens = new AtomicLong();
    /** Primary: refusals for a stale token that the arbiter did not confirm (this host's own earlier hold): not fenced. */
    public final AtomicLong staleTokenRefusals = new AtomicLong();
    /** Connections refused by authentication (TLS: no or a bad certificate, the wrong name, plaintext). */
    public final AtomicLong authFailures = new AtomicLong();
    /** Connections closed before their handshake completed (early close, stall past the deadline, eviction, TLS). */
    public final AtomicLong abandonedHandshakes = new AtomicLong();
    /** Hybrid mode, secondary: times the running copy was suspended and resumed, and times that failed. */
    public final AtomicLong runningCopySuspends = new AtomicLong();
    public final AtomicLong runningCopyResumes = new AtomicLong();
    public final AtomicLong runningCopyErrors = new AtomicLong();
    /** Time the VM spent paused per checkpoint, microseconds. */
    public final Histogram pauseMicros = new ConcurrentHistogram(60_000_000L, 2);
    /** Whole transaction time per checkpoint (request to loaded), microseconds. */
    public final Histogram checkpointMicros = new ConcurrentHistogram(600_000_000L, 2);
    /** From vmstate-send to vmstate-received: the state on the wire and staged by the secondary. */
    public final Histogram transferMicros = new ConcurrentHistogram(600_000_000L, 2);
    /** From vmstate-received to vmstate-loaded: the secondary's commit. */
    public final Histogram commitMicros = new ConcurrentHistogram(600_000_000L, 2);
    /** Pause of the first checkpoint of the latest session (protection start), microseconds. */
    public final AtomicLong protectionStartPauseMicros = new AtomicLong(-1);
    /** Live first synchronisations (base images), from request to vmstate-loaded. */
    public final Histogram baseSyncMicros = new ConcurrentHistogram(3_600_000_000L, 2);
    /** Live rounds sent after a base (what the guest wrote during it), before the first paused checkpoint. */
    public final AtomicLong liveRounds = new AtomicLong();
}
