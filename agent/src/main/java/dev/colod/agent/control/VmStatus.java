package dev.colod.agent.control;

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
            m.put("write_audited_pages", src.auditedPages());
            m.put("write_audit_misses", src.auditMisses());
            m.put("disk", disk(src.disk(), hasDisk));
            m.put("protection_start_pause_ms", counters.protectionStartPauseMicros.get() / 1000.0);
            return m;
        };
    }

    /** The secondary's fields: role, where a checkpoint's disk extents go, and (hybrid mode) the running copy. */
    public static Supplier<Map<String, Object>> secondary(final Supplier<Map<String, Object>> role, final Path diskImage,
        final RunningCopy copy, final ColoCounters counters)
    {
        return () ->
        {
            final Map<String, Object> m = new LinkedHashMap<>(role.get());
            m.put("write_tracking", "-");
            m.put("disk", diskImage == null ? "none" : "applied at commit to " + diskImage);
            if (copy != null)
            {
                final QemuProcess q = copy.running();
                m.put("running_copy", q == null ? "none yet (waits for the first committed checkpoint)"
                    : "QEMU pid " + q.pid() + ", last checkpoint loaded in " + copy.lastLoadMicros() / 1000.0 + " ms");
                m.put("running_copy_suspends", counters.runningCopySuspends.get());
                m.put("running_copy_resumes", counters.runningCopyResumes.get());
                m.put("running_copy_errors", counters.runningCopyErrors.get());
            }
            return m;
        };
    }

    /** What the primary does with the VM's disk, and what the last checkpoint carried of it. */
    static String disk(final DiskWrites d, final boolean hasDisk)
    {
        if (d == null)
        {
            return !hasDisk ? "none" : "NOT REPLICATED (disk.replicate: false): a failover resumes an older disk";
        }
        return "replicated, dirty bitmap granularity " + DiskWrites.GRANULARITY + " B; last checkpoint " +
            d.lastDiskBytes + " B in " + d.lastDiskMicros + " us";
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
