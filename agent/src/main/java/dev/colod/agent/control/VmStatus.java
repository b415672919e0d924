package dev.colod.agent.control;

import dev.colod.buffer.hybrid.Comparer;
import dev.colod.buffer.hybrid.CopyMirror;
import dev.colod.buffer.hybrid.PrimaryMirror;

import dev.colod.agent.disk.DiskSet;
import dev.colod.agent.disk.DiskWrites;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.vm.QemuStateSource;
import dev.colod.agent.vm.RunningCopy;
import dev.colod.core.spi.Arbiter;
import dev.colod.core.status.ColoCounters;
import org.HdrHistogram.Histogram;

import java.nio.file.Path;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

/**
 * The VM-specific fields of {@code coloctl status} (docs/OPERATIONS.md) and the pause steps of the metrics, built
 * from what the wiring hands over; {@link VmHandle} adds the engine's own fields.
 */
public final class VmStatus
{
    private VmStatus()
    {
    }

    /** Who arbitrates, the token, the replication channel, and (roles that follow the VM) since when and failovers. */
    public static Map<String, Object> role(final Arbiter arbiter, final String replication, final Instant since,
        final long failovers)
    {
        final Map<String, Object> m = new LinkedHashMap<>();
        m.put("arbiter", arbiter.describe());
        m.put("fencing_token", arbiter.token());
        m.put("replication", replication);
        if (since != null)
        {
            m.put("role_since", since.toString());
            m.put("failovers", failovers);
        }
        return m;
    }

    /** The primary's fields: role, write tracking and its audit, the disk, the pause at protection start. */
    public static Supplier<Map<String, Object>> primary(final QemuStateSource src, final ColoCounters counters,
        final boolean hasDisk, final Supplier<Map<String, Object>> role)
    {
        return () ->
        {
            final Map<String, Object> m = new LinkedHashMap<>(role.get());
            m.put("write_tracking", src.writeTracking());
            m.put("ram_page_kib", src.ramPageBytes() / 1024);
            m.put("write_audited_pages", src.auditedPages());
            m.put("write_audit_misses", src.auditMisses());
            m.put("disk", disk(src.disk(), hasDisk));
            if (src.disk() != null)
            {
                // the write governor: times the guest's disk writes waited for the next checkpoint, and how long
                m.put("disk_throttles", src.diskThrottles.get());
                m.put("disk_throttled_ms", src.diskThrottledMicros.get() / 1000);
            }
            m.put("protection_start_pause_ms", counters.protectionStartPauseMicros.get() / 1000.0);
            return m;
        };
    }

    /** The secondary's fields: role, where a checkpoint's disk extents go, and (hybrid mode) the running copy. */
    public static Supplier<Map<String, Object>> secondary(final Supplier<Map<String, Object>> role, final List<Path> diskImages,
        final RunningCopy copy, final CopyMirror mirror, final ColoCounters counters)
    {
        return () ->
        {
            final Map<String, Object> m = new LinkedHashMap<>(role.get());
            m.put("write_tracking", "-");
            m.put("disk", diskImages.isEmpty() ? "none" : "applied at commit to " +
                diskImages.stream().map(Path::toString).collect(java.util.stream.Collectors.joining(", ")));
            if (copy != null)
            {
                final QemuProcess q = copy.running();
                m.put("running_copy", q == null ? "none yet (waits for the first committed checkpoint)"
                    : "QEMU pid " + q.pid() + ", last checkpoint loaded in " + copy.lastLoadMicros() / 1000.0 + " ms");
                m.put("running_copy_suspends", counters.runningCopySuspends.get());
                m.put("running_copy_resumes", counters.runningCopyResumes.get());
                m.put("running_copy_errors", counters.runningCopyErrors.get());
            }
            if (mirror != null)
            {
                m.put("copy_frames", copyFrames(mirror.stats()));
            }
            return m;
        };
    }

    /**
     * Hybrid mode, primary: the frames channel and, summed over the NICs, what comparison did (frames compared,
     * matched, let out by comparison, checkpoints it asked for by cause, digests received and of an older era).
     */
    public static Map<String, Object> comparison(final PrimaryMirror.Stats channel, final List<Comparer.Stats> nics)
    {
        long compared = 0;
        long matched = 0;
        long released = 0;
        long digests = 0;
        long stale = 0;
        long mismatches = 0;
        long timeouts = 0;
        long ahead = 0;
        long retransmissions = 0;
        long clamped = 0;
        long dates = 0;
        long teardowns = 0;
        long split = 0;
        long waitUs = 0;
        long behindUs = 0;
        long behindMaxUs = 0;
        Comparer.Waits waits = Comparer.Waits.NONE;
        String last = "";
        for (final Comparer.Stats n : nics)
        {
            waits = waits.plus(n.waits());
            waitUs += n.matchWaitMicros();
            behindUs += n.behindMicros();
            behindMaxUs = Math.max(behindMaxUs, n.behindMaxMicros());
            last = n.lastCause().isEmpty() ? last : n.lastCause();
            compared += n.compared();
            matched += n.matched();
            released += n.releasedByComparison();
            digests += n.digests();
            stale += n.staleDigests();
            mismatches += n.mismatches();
            timeouts += n.timeouts();
            ahead += n.secondaryAhead();
            retransmissions += n.retransmissionsPassed();
            clamped += n.windowsClamped();
            dates += n.datesTolerated();
            teardowns += n.teardownsTolerated();
            split += n.segmentsSplit();
        }
        final Map<String, Object> m = new LinkedHashMap<>();
        m.put("frames_channel", channel.open() ? "open" : "closed");
        m.put("inbound_copied", channel.inboundCopied());
        m.put("inbound_copy_dropped", channel.inboundDropped());
        m.put("frames_compared", compared);
        m.put("frames_matched", matched);
        m.put("matched_percent", compared == 0 ? 0.0 : Math.round(matched * 1000.0 / compared) / 10.0);
        m.put("released_by_comparison", released);
        // of the matched: retransmissions of bytes the client had acknowledged (the copy need not resend them)
        m.put("retransmissions_passed", retransmissions);
        // matched segments that offered the client more window than the copy's: lowered to it
        m.put("windows_clamped", clamped);
        // matched segments whose HTTP Date values differed by no more than http-date-tolerance-ms
        m.put("http_dates_tolerated", dates);
        // last segments of finished connections that one guest ended with ACK, the other with RST
        m.put("teardowns_tolerated", teardowns);
        // held segments whose start left alone: the copy had sent only that (and waited for the client's ACK of it)
        m.put("segments_split", split);
        // the copy's lag as a frame sees it (held -> matched), and the wait behind an epoch that waits for its checkpoint
        m.put("match_wait_mean_ms", matched == 0 ? 0.0 : Math.round(waitUs / (double)matched) / 1000.0);
        final Map<String, Object> byKind = new LinkedHashMap<>();
        for (final Comparer.WaitKind k : Comparer.WaitKind.values())
        {
            byKind.put(k.label(), Math.round(waits.meanMs(k) * 1000) / 1000.0);
        }
        m.put("match_wait_mean_ms_by_kind", byKind);
        m.put("match_wait_before_copy_ms", waits.beforeCopyMicros() / 1000.0);
        m.put("release_wait_mean_ms", released == 0 ? 0.0 : Math.round(behindUs / (double)released) / 1000.0);
        m.put("release_wait_max_ms", behindMaxUs / 1000.0);
        m.put("mismatches", mismatches);
        m.put("compare_timeouts", timeouts);
        m.put("secondary_ahead", ahead);
        m.put("last_checkpoint_cause", last);
        m.put("digests_received", digests);
        m.put("digests_stale", stale);
        return m;
    }

    /** Hybrid mode, secondary: what the frames channel did for the running copy. */
    public static Map<String, Object> copyFrames(final CopyMirror.Stats s)
    {
        final Map<String, Object> m = new LinkedHashMap<>();
        m.put("frames_channel", s.open() ? "open" : "closed");
        m.put("inbound_injected", s.injected());
        m.put("inbound_stale", s.inboundStale());
        m.put("inbound_dropped", s.inboundOverflow());
        m.put("copy_frames_captured", s.captured());
        m.put("copy_announcements_skipped", s.announcements());
        m.put("digests_sent", s.digestsSent());
        m.put("tcp_connections_rewritten", s.connectionsRewritten());
        m.put("tcp_acks_rewritten", s.acksRewritten());
        return m;
    }

    /** What the primary does with the VM's disk, and what the last checkpoint carried of it. */
    static String disk(final DiskSet d, final boolean hasDisk)
    {
        if (d == null)
        {
            return !hasDisk ? "none" : "NOT REPLICATED (disk.replicate: false): a failover resumes an older disk";
        }
        final int n = d.disks().size();
        return (n == 1 ? "" : n + " disks ") + "replicated, dirty bitmap granularity " + DiskWrites.GRANULARITY +
            " B; last checkpoint " + d.lastDiskBytes + " B in " + d.lastDiskMicros + " us";
    }

    /** Each step of a checkpoint, its histogram in microseconds, in order (a snapshot per call). */
    public static Supplier<Map<String, Histogram>> pauseSteps(final QemuStateSource src, final ColoCounters counters)
    {
        return () ->
        {
            final QemuStateSource.Timings t = src.timings();
            final Map<String, Histogram> steps = new LinkedHashMap<>();
            steps.put("stop", t.stop());
            steps.put("device", t.device());
            steps.put("tracking", t.tracking());
            steps.put("copy", t.copy());
            if (src.disk() != null)
            {
                steps.put("disk", src.disk().diskMicros);
            }
            steps.put("transfer", counters.transferMicros);
            steps.put("commit", counters.commitMicros);
            steps.put("resume", t.resume());
            return steps;
        };
    }
}
