package dev.colod.core;

import java.nio.charset.StandardCharsets;
import java.util.EnumSet;
import java.util.Set;

/**
 * Configuration of one protected VM's checkpoint engine. Defaults sit next to each field (and nowhere else: the
 * agent's YAML sets only what the file names); {@link #conclude()} validates everything once and throws
 * {@link InvalidSettingException} naming the field by its YAML key. Mutable until concluded.
 */
public final class ColoConfig
{
    public enum Mode
    {
        /** The protocol's own order (PROTOCOL.md section 4): the primary resumes after {@code vmstate-loaded}. */
        STRICT,
        /** Remus-style: the primary resumes as soon as the state is captured; output is still held. */
        SPECULATIVE,
        /**
         * COarse-grained LOck-stepping (PROTOCOL.md section 10): the secondary runs a copy of the VM, suspended at
         * each checkpoint-request and resumed after vmstate-loaded. Built so far: the running copy; its inbound
         * frames and the comparison of outputs are not, so every frame still waits for a checkpoint, as in
         * speculative mode, whose pause this mode has.
         */
        HYBRID;

        /** Whether the primary resumes as soon as the state is captured (before the secondary has it). */
        public boolean resumesEarly()
        {
            return this != STRICT;
        }

        /** The modes in which the secondary's VM does not run between checkpoints (benchmarks and disk tests). */
        public static final Set<Mode> PERIODIC = EnumSet.of(STRICT, SPECULATIVE);

        /** Whether the secondary runs a copy of the VM between checkpoints. */
        public boolean secondaryRuns()
        {
            return this == HYBRID;
        }
    }

    private String vmName = "vm";
    private Mode mode = Mode.STRICT;
    /**
     * The default longest interval: 100 ms in periodic mode (every frame waits for a checkpoint); 10 s in hybrid
     * mode, where frames leave by comparison and the timer only bounds how far the two copies may drift apart
     * unseen, while each checkpoint costs a fresh copy (docs/ARCHITECTURE.md, "Checkpoints in hybrid mode").
     */
    public static final long PERIODIC_DELAY_MS = 100;
    public static final long HYBRID_DELAY_MS = 10_000;
    private long checkpointDelayMs = PERIODIC_DELAY_MS;
    private boolean checkpointDelaySet;
    private long maxStateBytes = 1L << 30;
    private int heartbeatIntervalMs = 100;
    private int heartbeatTimeoutMs = 1_000;
    private long syncTimeoutMs = 5_000;
    private long transferTimeoutMs = 60_000;
    private long connectTimeoutMs = 2_000;
    private long reconnectIntervalMs = 1_000;
    private long peerRestartGraceMs = 10_000;
    private boolean outputTrigger = true;
    private int maxPausedPercent = 30;
    private long minCheckpointGapMs = 0;
    private long outputLingerUs = 500;
    /** Hybrid: 500 ms, since a fresh copy runs behind at first (docs/ARCHITECTURE.md, BENCHMARKS.md run S). */
    private long compareTimeoutMs = 500;
    /** Hybrid: an HTTP Date stamped just after a second turned differs by one second between the copies. */
    private long httpDateToleranceMs = 1_000;
    private String vmShape = "";
    private boolean concluded;

    public ColoConfig conclude()
    {
        require(vmName != null && !vmName.isEmpty() &&
            vmName.getBytes(StandardCharsets.UTF_8).length <= 255,
            "vm-name", "must be 1..255 bytes of UTF-8, was " + vmName);
        require(mode != null, "mode", "must be strict, speculative or hybrid");
        if (!checkpointDelaySet)
        {
            checkpointDelayMs = mode.secondaryRuns() ? HYBRID_DELAY_MS : PERIODIC_DELAY_MS;
        }
        require(checkpointDelayMs >= 0 && checkpointDelayMs <= 3_600_000, "checkpoint-delay-ms",
            "must be 0..3600000, was " + checkpointDelayMs);
        require(maxStateBytes > 0, "max-state-bytes", "must be > 0, was " + maxStateBytes);
        require(heartbeatIntervalMs > 0, "heartbeat-interval-ms", "must be > 0, was " + heartbeatIntervalMs);
        require(heartbeatTimeoutMs >= 2 * heartbeatIntervalMs, "heartbeat-timeout-ms",
            "must be at least twice heartbeat-interval-ms (" + heartbeatIntervalMs + "), was " + heartbeatTimeoutMs);
        require(syncTimeoutMs > 0, "sync-timeout-ms", "must be > 0, was " + syncTimeoutMs);
        require(transferTimeoutMs > 0, "transfer-timeout-ms", "must be > 0, was " + transferTimeoutMs);
        require(connectTimeoutMs > 0, "connect-timeout-ms", "must be > 0, was " + connectTimeoutMs);
        require(reconnectIntervalMs > 0, "reconnect-interval-ms", "must be > 0, was " + reconnectIntervalMs);
        require(peerRestartGraceMs >= 0 && peerRestartGraceMs <= 600_000, "peer-restart-grace-ms",
            "must be 0..600000, was " + peerRestartGraceMs);
        require(maxPausedPercent >= 1 && maxPausedPercent <= 100, "max-paused-percent",
            "must be 1..100, was " + maxPausedPercent);
        require(compareTimeoutMs >= 1 && compareTimeoutMs <= 60_000, "compare-timeout-ms",
            "must be 1..60000, was " + compareTimeoutMs);
        require(httpDateToleranceMs >= 0 && httpDateToleranceMs <= 60_000, "http-date-tolerance-ms",
            "must be 0..60000, was " + httpDateToleranceMs);
        require(outputLingerUs >= 0 && outputLingerUs <= 1_000_000, "output-linger-us",
            "must be 0..1000000, was " + outputLingerUs);
        require(minCheckpointGapMs >= 0 && minCheckpointGapMs <= 3_600_000, "min-checkpoint-gap-ms",
            "must be 0..3600000, was " + minCheckpointGapMs);
        concluded = true;
        return this;
    }

    private static void require(final boolean ok, final String field, final String why)
    {
        InvalidSettingException.require(ok, field, why);
    }

    private void mutable()
    {
        if (concluded)
        {
            throw new IllegalStateException("configuration already concluded");
        }
    }

    public String vmName() { return vmName; }
    public Mode mode() { return mode; }
    public long checkpointDelayMs() { return checkpointDelayMs; }
    public long maxStateBytes() { return maxStateBytes; }
    public int heartbeatIntervalMs() { return heartbeatIntervalMs; }
    public int heartbeatTimeoutMs() { return heartbeatTimeoutMs; }
    public long syncTimeoutMs() { return syncTimeoutMs; }
    public long transferTimeoutMs() { return transferTimeoutMs; }
    public long connectTimeoutMs() { return connectTimeoutMs; }
    public long reconnectIntervalMs() { return reconnectIntervalMs; }
    /** Secondary: how long to wait for a primary whose agent is gone but whose host is up (0: fail over at once). */
    public long peerRestartGraceMs() { return peerRestartGraceMs; }
    /**
     * Primary: start a checkpoint as soon as the guest has sent a frame that is held (and none runs), instead of
     * waiting for {@link #checkpointDelayMs()}, which stays the longest interval (docs/ARCHITECTURE.md, "When a
     * checkpoint starts").
     */
    public boolean outputTrigger() { return outputTrigger; }
    /** Primary: the share of time the guest may spend paused by output-triggered checkpoints, in the long run. */
    public int maxPausedPercent() { return maxPausedPercent; }
    /** Primary: the least time between the end of one checkpoint and an output-triggered start of the next. */
    public long minCheckpointGapMs() { return minCheckpointGapMs; }
    /** Primary: how long an output-triggered checkpoint waits after the first held frame for the rest of a burst. */
    public long outputLingerUs() { return outputLingerUs; }
    /** Hybrid mode, primary: how long a held frame may wait for the secondary's matching one before a checkpoint. */
    public long compareTimeoutMs() { return compareTimeoutMs; }
    /**
     * Hybrid mode, primary: how far apart the two guests' HTTP {@code Date:} values may be in output that is otherwise
     * the same (0: compared byte for byte; docs/ARCHITECTURE.md, "Hybrid mode", normalisation).
     */
    public long httpDateToleranceMs() { return httpDateToleranceMs; }
    /** What must be the same about the VM on both hosts ({@link dev.colod.core.protocol.VmShape}); empty: not compared. */
    public String vmShape() { return vmShape; }

    public ColoConfig vmName(final String v) { mutable(); vmName = v; return this; }
    public ColoConfig mode(final Mode v) { mutable(); mode = v; return this; }
    public ColoConfig checkpointDelayMs(final long v) { mutable(); checkpointDelayMs = v; checkpointDelaySet = true; return this; }
    public ColoConfig maxStateBytes(final long v) { mutable(); maxStateBytes = v; return this; }
    public ColoConfig heartbeatIntervalMs(final int v) { mutable(); heartbeatIntervalMs = v; return this; }
    public ColoConfig heartbeatTimeoutMs(final int v) { mutable(); heartbeatTimeoutMs = v; return this; }
    public ColoConfig syncTimeoutMs(final long v) { mutable(); syncTimeoutMs = v; return this; }
    public ColoConfig transferTimeoutMs(final long v) { mutable(); transferTimeoutMs = v; return this; }
    public ColoConfig connectTimeoutMs(final long v) { mutable(); connectTimeoutMs = v; return this; }
    public ColoConfig reconnectIntervalMs(final long v) { mutable(); reconnectIntervalMs = v; return this; }
    public ColoConfig peerRestartGraceMs(final long v) { mutable(); peerRestartGraceMs = v; return this; }
    public ColoConfig outputTrigger(final boolean v) { mutable(); outputTrigger = v; return this; }
    public ColoConfig maxPausedPercent(final int v) { mutable(); maxPausedPercent = v; return this; }
    public ColoConfig minCheckpointGapMs(final long v) { mutable(); minCheckpointGapMs = v; return this; }
    public ColoConfig outputLingerUs(final long v) { mutable(); outputLingerUs = v; return this; }
    public ColoConfig compareTimeoutMs(final long v) { mutable(); compareTimeoutMs = v; return this; }
    public ColoConfig httpDateToleranceMs(final long v) { mutable(); httpDateToleranceMs = v; return this; }
    public ColoConfig vmShape(final String v) { mutable(); vmShape = v; return this; }
}
