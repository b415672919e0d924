package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.qemu.QmpClient;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Every pause of a VM, seen from outside colod: a second QMP monitor of the VM's QEMU (given to it with
 * {@code extra-args: [-qmp, unix:PATH,server=on,wait=off]}) on which QEMU reports each STOP and RESUME with its own
 * timestamp. What colod does to the VM cannot hide from it, whichever colod process did it.
 */
public final class PauseWatch implements AutoCloseable
{
    /** One pause: when it began (QEMU's clock, microseconds since the epoch) and how long it lasted. */
    public record Pause(long startMicros, long micros)
    {
    }

    private final QmpClient qmp;
    private final List<Pause> pauses = new ArrayList<>();
    /** When the VM stopped, or -1 while it runs. */
    private long stoppedAt = -1;

    private PauseWatch(final QmpClient qmp)
    {
        this.qmp = qmp;
    }

    /** The monitor's extra-args for a VM's colod.yaml (a YAML flow list). */
    public static String extraArgs(final Path socket)
    {
        return "    extra-args: [\"-qmp\", \"unix:" + socket + ",server=on,wait=off\"]";
    }

    public static PauseWatch attach(final Path socket) throws IOException
    {
        final QmpClient qmp = QmpClient.connect(socket, "pause-watch", 10_000);
        final PauseWatch w = new PauseWatch(qmp);
        qmp.onEvent(w::event);
        if (!w.running())
        {
            synchronized (w)
            {
                w.stoppedAt = nowMicros();
            }
        }
        return w;
    }

    private synchronized void event(final JsonNode e)
    {
        final JsonNode ts = e.path("timestamp");
        final long at = ts.path("seconds").asLong() * 1_000_000L + ts.path("microseconds").asLong();
        switch (e.path("event").asText())
        {
            case "STOP" -> stoppedAt = at;
            case "RESUME" ->
            {
                if (stoppedAt >= 0)
                {
                    pauses.add(new Pause(stoppedAt, at - stoppedAt));
                }
                stoppedAt = -1;
            }
            default ->
            {
            }
        }
    }

    /** QEMU says the VM runs (query-status). */
    public boolean running() throws IOException
    {
        return qmp.execute("query-status", null, 5_000).path("running").asBoolean();
    }

    /** How many pauses ended so far (a mark for {@link #since}). */
    public synchronized int mark()
    {
        return pauses.size();
    }

    /** The pauses that ended after {@code mark}, and the one going on now (its length so far), if any. */
    public synchronized List<Pause> since(final int mark)
    {
        final List<Pause> out = new ArrayList<>(pauses.subList(Math.min(mark, pauses.size()), pauses.size()));
        if (stoppedAt >= 0)
        {
            out.add(new Pause(stoppedAt, nowMicros() - stoppedAt));
        }
        return out;
    }

    /** The longest of {@code pauses} in microseconds (0 for none). */
    public static long longest(final List<Pause> pauses)
    {
        return pauses.stream().mapToLong(Pause::micros).max().orElse(0);
    }

    private static long nowMicros()
    {
        final java.time.Instant now = java.time.Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    @Override
    public void close()
    {
        qmp.close();
    }
}
