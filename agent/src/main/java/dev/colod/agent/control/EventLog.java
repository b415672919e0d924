package dev.colod.agent.control;

import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * What {@code coloctl events} shows: each VM's changes of role, protection state, failovers and last error, with
 * the time colod saw them, newest last; the last {@value #MAX} kept in memory (since colod started). Fed by
 * {@link #observe} with each VM's status (the control server samples every {@value #SAMPLE_MS} ms), so a change
 * that is undone within one sample can be missed; the engines' own logs have every transition.
 */
final class EventLog
{
    static final int MAX = 2000;
    static final long SAMPLE_MS = 200;

    /** One change: when, which VM, what (e.g. "state protected -> unprotected: secondary ... ended the session"). */
    record Event(Instant at, String vm, String what)
    {
    }

    private record Seen(String role, String state, long failovers, String lastError)
    {
    }

    private final Deque<Event> events = new ArrayDeque<>();
    private final Map<String, Seen> seen = new HashMap<>();

    /** Compares {@code status} of {@code vm} with what was seen before and records each difference at {@code at}. */
    synchronized void observe(final String vm, final Map<String, Object> status, final Instant at)
    {
        final Seen now = new Seen(String.valueOf(status.get("role")), String.valueOf(status.get("state")),
            status.get("failovers") instanceof Number n ? n.longValue() : 0,
            status.get("last_error") == null ? "" : String.valueOf(status.get("last_error")));
        final Seen before = seen.put(vm, now);
        if (before == null)
        {
            add(new Event(at, vm, "seen: " + now.role() + ", " + now.state() +
                (now.lastError().isEmpty() ? "" : "; last error: " + now.lastError())));
            return;
        }
        if (!before.role().equals(now.role()))
        {
            add(new Event(at, vm, "role " + before.role() + " -> " + now.role()));
        }
        if (now.failovers() > before.failovers())
        {
            add(new Event(at, vm, "failover " + now.failovers() + " on this host"));
        }
        if (!before.state().equals(now.state()))
        {
            add(new Event(at, vm, "state " + before.state() + " -> " + now.state() +
                (now.lastError().isEmpty() || Objects.equals(before.lastError(), now.lastError()) ? "" : ": " + now.lastError())));
        }
        else if (!now.lastError().isEmpty() && !now.lastError().equals(before.lastError()))
        {
            add(new Event(at, vm, "error: " + now.lastError()));
        }
    }

    /** What host-wide events (maintenance) name instead of a VM; every VM's events include them. */
    static final String HOST = "(host)";

    /** Records {@code what} happened to {@code vm} (or {@link #HOST}) at {@code at}. */
    synchronized void note(final String vm, final String what, final Instant at)
    {
        add(new Event(at, vm, what));
    }

    private void add(final Event e)
    {
        events.addLast(e);
        while (events.size() > MAX)
        {
            events.removeFirst();
        }
    }

    /** Events at or after {@code since} (null: all kept), of {@code vm} (null: every VM), oldest first. */
    synchronized List<Event> since(final Instant since, final String vm)
    {
        final List<Event> out = new ArrayList<>();
        for (final Event e : events)
        {
            if ((since == null || !e.at().isBefore(since)) && (vm == null || vm.equals(e.vm()) || HOST.equals(e.vm())))
            {
                out.add(e);
            }
        }
        return out;
    }
}
