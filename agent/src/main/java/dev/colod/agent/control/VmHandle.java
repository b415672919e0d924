package dev.colod.agent.control;

import dev.colod.buffer.NicStats;
import dev.colod.core.Engine;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.status.ColoCounters;
import org.HdrHistogram.Histogram;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Supplier;

/**
 * What the control socket sees of one protected VM: its engine (primary or secondary) and its output-commit
 * buffers. Reads are lock-free snapshots; commands go to the engine's own queue.
 */
public final class VmHandle
{
    /** What the handle shows now; replaced whole when this host's role for the VM changes (a failover). */
    private record View(Engine engine, Supplier<List<NicStats>> buffers,
                        Supplier<Map<String, Object>> details, Supplier<Map<String, Histogram>> pauseSteps,
                        Runnable reprotect)
    {
    }

    private final String name;
    private volatile View view;
    /** The secondary's check that a failover could resume the VM here: null when it can, else why not. */
    private volatile Supplier<String> failoverCheck = () -> null;
    private volatile StandBy standBy;
    private long lastCount;
    private long lastCountNanos = System.nanoTime();
    private double rate;
    /** The last error as last seen, and when it was first seen (status is sampled every 200 ms by the control server). */
    private String errorSeen = "";
    private java.time.Instant errorAt;
    /** When the VM last became protected here (after {@link #errorAt}: the error is old). */
    private java.time.Instant protectedSince;
    private String stateSeen = "";

    private VmHandle(final String name, final View view)
    {
        this.name = name;
        this.view = view;
    }

    /**
     * {@code details}: the primary's VM-specific status fields (how written pages are found, the tracking audit,
     * the pause at protection start), added to {@link #status()} in the order given.
     */
    public static VmHandle primary(final String name, final PrimaryEngine e, final Supplier<List<NicStats>> buffers,
        final Supplier<Map<String, Object>> details)
    {
        return primary(name, e, buffers, details, Map::of);
    }

    /** As above, with the histograms (microseconds) of each step of a checkpoint, in order. */
    public static VmHandle primary(final String name, final PrimaryEngine e, final Supplier<List<NicStats>> buffers,
        final Supplier<Map<String, Object>> details, final Supplier<Map<String, Histogram>> pauseSteps)
    {
        return new VmHandle(name, new View(e, buffers, details, pauseSteps, null));
    }

    /**
     * This host became the VM's primary (a failover): show {@code e} from now on. {@code reprotect}, if not null,
     * starts protection on {@code coloctl reprotect} (reprotect: manual).
     */
    public void becamePrimary(final PrimaryEngine e, final Supplier<List<NicStats>> buffers,
        final Supplier<Map<String, Object>> details, final Supplier<Map<String, Histogram>> pauseSteps,
        final Runnable reprotect)
    {
        view = new View(e, buffers, details, pauseSteps, reprotect);
    }

    /**
     * What {@code coloctl standby} runs on a fenced primary: close this host's side of the VM (its paused copy stops)
     * and open it again as the secondary, as a restart of colod would, shown through this same handle ({@link #replaceWith}).
     */
    public VmHandle onStandBy(final StandBy action)
    {
        standBy = action;
        return this;
    }

    /** The fenced host's way back to standing by, without restarting colod. */
    @FunctionalInterface
    public interface StandBy
    {
        void run() throws Exception;
    }

    /** Whether this host's copy of the VM is fenced (paused for good: the other host runs it). */
    public boolean fenced()
    {
        return view.engine().state() == dev.colod.core.ProtectionState.FENCED;
    }

    /** Why {@code standby} is refused in the VM's state now. */
    public String notFenced()
    {
        final Engine e = view.engine();
        return "vm " + name + " is not fenced here (it is " + e.role().label() + ", " + stateLabel(e) +
            "): standby clears a fence, nothing else";
    }

    /** Makes this fenced host the VM's secondary (the fence cleared the safe way); the action refuses any other state. */
    public void standBy() throws Exception
    {
        final StandBy action = standBy;
        if (action == null)
        {
            throw new IllegalStateException("vm " + name + " cannot stand by from here (no control of its side)");
        }
        action.run();
    }

    /** This host's side of the VM was opened again (standby): show the new one from now on, under the same name. */
    public void replaceWith(final VmHandle fresh)
    {
        failoverCheck = fresh.failoverCheck;
        view = fresh.view;
    }

    /** Runs the pending manual re-protection, if any. */
    public void reprotect()
    {
        final View v = view;
        if (v.reprotect() == null)
        {
            throw new IllegalStateException("vm " + name + " is not waiting for a manual re-protection here");
        }
        v.reprotect().run();
        view = new View(v.engine(), v.buffers(), v.details(), v.pauseSteps(), null);
    }

    /** Each step of a checkpoint: its histogram in microseconds (stop, device, tracking, copy, transfer, commit, resume). */
    public Map<String, Histogram> pauseSteps()
    {
        return view.pauseSteps().get();
    }

    public static VmHandle secondary(final String name, final SecondaryEngine e)
    {
        return secondary(name, e, () -> Map.of("write_tracking", "-"));
    }

    /** A secondary with its own status fields (e.g. role history). */
    public static VmHandle secondary(final String name, final SecondaryEngine e, final Supplier<Map<String, Object>> details)
    {
        return new VmHandle(name, new View(e, List::of, details, Map::of, null));
    }

    public String name()
    {
        return name;
    }

    /** The fields of {@code coloctl status}, documented in docs/OPERATIONS.md. */
    public synchronized Map<String, Object> status()
    {
        final View v = view;
        final Engine engine = v.engine();
        final ColoCounters c = engine.counters();
        final long now = System.nanoTime();
        final long count = c.checkpointsCompleted.get();
        if (now - lastCountNanos > 500_000_000L)
        {
            rate = (count - lastCount) / ((now - lastCountNanos) / 1e9);
            lastCount = count;
            lastCountNanos = now;
        }
        final long last = c.lastCheckpointNanos.get();
        final Map<String, Object> m = new LinkedHashMap<>();
        m.put("vm", name);
        m.put("role", engine.role().label());
        m.put("state", stateLabel(engine));
        m.put("peer", engine.peer());
        m.put("last_checkpoint_id", c.lastCheckpointId.get());
        m.put("last_checkpoint_age_ms", last == 0 ? -1 : (now - last) / 1_000_000);
        m.put("checkpoints", count);
        m.put("checkpoints_per_second", Math.round(rate * 10) / 10.0);
        m.put("checkpoints_failed", c.checkpointsFailed.get());
        m.put("checkpoints_early_output", c.checkpointsRequestedEarly.get());
        m.put("checkpoints_early_state", c.checkpointsRequestedByState.get());
        final Map<String, Object> causes = new LinkedHashMap<>();
        causes.put("timer", c.checkpointsByTimer.get());
        causes.put("output", c.checkpointsByOutput.get());
        causes.put("buffer", c.checkpointsByBuffer.get());
        causes.put("state", c.checkpointsByState.get());
        causes.put("request", c.checkpointsByRequest.get());
        causes.put("mismatch", c.checkpointsByMismatch.get());
        causes.put("compare-timeout", c.checkpointsByCompareTimeout.get());
        m.put("checkpoints_by_cause", causes);
        m.put("output_trigger_deferrals", c.outputTriggerDeferrals.get());
        m.put("guest_paused_percent", c.pausedShareBasisPoints.get() / 100.0);
        m.put("guest_paused_ms_total", c.pausedNanos.get() / 1_000_000);
        m.put("pause_p50_ms", c.pauseMicros.getValueAtPercentile(50) / 1000.0);
        m.put("pause_p99_ms", c.pauseMicros.getValueAtPercentile(99) / 1000.0);
        m.put("state_bytes", c.stateBytes.get());
        m.put("heartbeat_losses", c.heartbeatLosses.get());
        m.put("protocol_errors", c.protocolErrors.get());
        m.put("failovers", c.failovers.get());
        m.put("failovers_held", c.failoversHeld.get());
        m.put("arbiter_grants", c.arbiterGrants.get());
        m.put("arbiter_waits", c.arbiterWaits.get());
        m.put("lease_lapses", c.leaseLapses.get());
        m.put("stale_tokens_refused", c.staleTokens.get());
        m.put("stale_token_refusals_unconfirmed", c.staleTokenRefusals.get());
        m.put("abandoned_handshakes", c.abandonedHandshakes.get());
        m.put("auth_failures", c.authFailures.get());
        m.put("sessions_refused", c.refusedSessions.get());
        new TreeMap<>(v.details().get()).forEach(m::put);
        final Map<String, Object> steps = new LinkedHashMap<>();
        v.pauseSteps().get().forEach((step, h) -> steps.put(step, Map.of("p50_ms", h.getValueAtPercentile(50) / 1000.0,
            "p99_ms", h.getValueAtPercentile(99) / 1000.0)));
        m.put("pause_steps", steps);
        final String error = engine.lastError() == null ? "" : engine.lastError();
        final java.time.Instant at = java.time.Instant.now();
        if (!error.equals(errorSeen))
        {
            errorSeen = error;
            errorAt = error.isEmpty() ? null : at;
        }
        final String state = String.valueOf(m.get("state"));
        if ("protected".equals(state) && !state.equals(stateSeen))
        {
            protectedSince = at;
        }
        stateSeen = state;
        m.put("last_error", error);
        m.put("last_error_at", errorAt == null ? "" : errorAt.toString());
        // recovered since: protection resumed after the error was seen
        m.put("last_error_old", errorAt != null && protectedSince != null && protectedSince.isAfter(errorAt));
        final String next = nextStep(name, String.valueOf(m.get("role")), state, String.valueOf(m.get("peer")));
        if (!next.isEmpty())
        {
            m.put("next_step", next);
        }
        if (engine instanceof SecondaryEngine s && s.outdated() != null)
        {
            // no arbiter: the primary served on unprotected after the session ended; an operator's failover needs --force
            m.put("standby_outdated", s.outdated());
        }
        return m;
    }

    /** Every checkpoint's pause, microseconds: the engine's own histogram (for exposition; read only). */
    public Histogram pauseHistogram()
    {
        return view.engine().counters().pauseMicros;
    }

    /** What an operator does next in {@code state} (empty when nothing is needed). */
    static String nextStep(final String vm, final String role, final String state, final String peer)
    {
        return switch (state)
        {
            case "fenced" -> "this host's copy of the VM is paused (fenced): the other host runs it. Make this host stand " +
                "by for it: coloctl standby " + vm + " (or restart colod here); it stops the paused copy and becomes the " +
                "secondary of " + peer;
            case "unprotected" -> "the VM runs here without a standby: is colod running on " + peer +
                "? (coloctl status there; its last error says why it refused)";
            case "connecting" -> "primary".equals(role) ? "waiting for the secondary at " + peer + " (coloctl status there)"
                : "standing by: waiting for the primary to connect (coloctl status on the primary)";
            case "failed-over" -> "the VM runs here since a failover; it is protected again once the other host's colod " +
                "runs (with listen set) or after coloctl reprotect";
            default -> "";
        };
    }

    public List<NicStats> buffers()
    {
        return view.buffers().get();
    }

    public void checkpoint()
    {
        view.engine().requestCheckpoint();
    }

    /**
     * On the secondary: {@code check} says whether a failover could resume the VM here now (null) or why not; an
     * operator's failover runs it first and is refused, with nothing fenced, when it cannot.
     */
    public VmHandle failoverCheck(final Supplier<String> check)
    {
        failoverCheck = check;
        return this;
    }

    /** What a failover would do now, or an {@link IllegalStateException} saying why it would be refused. */
    public String failoverDryRun()
    {
        final Engine e = view.engine();
        if (!(e instanceof SecondaryEngine))
        {
            return "vm " + name + ": a failover here stops protecting it; it keeps running here (this host is its " +
                e.role().label() + ")";
        }
        final String why = refusal((SecondaryEngine)e, false);
        if (why != null)
        {
            throw new IllegalStateException("vm " + name + ": a failover would be refused: " + why);
        }
        return "vm " + name + ": a failover would resume it here from checkpoint " + e.counters().lastCheckpointId.get() +
            " and tell the primary (if it answers) to fence itself; checked: the standby image is resumable and what " +
            "QEMU needs is here";
    }

    /**
     * Asks for a failover; on the secondary refused (nothing fenced) when {@link #failoverCheck} says it cannot resume,
     * and, unless {@code force}, when the standby is known to be older than what the primary serves (no arbiter).
     */
    public void failover(final boolean force)
    {
        final Engine e = view.engine();
        if (e instanceof SecondaryEngine s)
        {
            final String why = refusal(s, force);
            if (why != null)
            {
                throw new IllegalStateException("vm " + name + ": failover refused, nothing was fenced: " + why);
            }
        }
        e.requestFailover();
    }

    public void failover()
    {
        failover(false);
    }

    /**
     * Why a failover on secondary {@code s} would be refused now, or null: it cannot resume ({@link #failoverCheck}),
     * or, unless {@code force}, its standby is older than what the primary serves (no arbiter).
     */
    private String refusal(final SecondaryEngine s, final boolean force)
    {
        final String why = failoverCheck.get();
        if (why != null)
        {
            return why;
        }
        final String outdated = s.outdated();
        return outdated != null && !force ? outdatedWhy(outdated) : null;
    }

    /** The engine's state as status and messages show it ({@code secondary-after-fence}). */
    private static String stateLabel(final Engine e)
    {
        return e.state().name().toLowerCase().replace('_', '-');
    }

    private static String outdatedWhy(final String outdated)
    {
        return "the standby is outdated: " + outdated + "; resuming it would run a second, older copy of the VM. Stop " +
            "the VM there first, then coloctl failover --force (or let the primary connect again: its next checkpoint " +
            "makes the standby current)";
    }
}
