package dev.colod.agent.control;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.colod.buffer.NicStats;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * colod's control socket: a unix socket, mode 0600 (root only), one JSON request line in, one JSON response
 * line out, then close (docs/OPERATIONS.md, "Control socket"). Requests:
 * {@code {"command":"status"}}, {@code {"command":"buffers","vm":"web1"}} (vm optional),
 * {@code {"command":"checkpoint","vm":"web1"}}, {@code {"command":"failover","vm":"web1"}} (with
 * {@code "dry-run":true}: only what it would do, or why it would be refused),
 * {@code {"command":"reprotect","vm":"web1"}}, {@code {"command":"standby","vm":"web1"}} (a fenced host stands by),
 * {@code {"command":"maintenance","on":true,"reason":"..."}} (false: off; no "on": ask).
 * Responses: {@code {"ok":true,...}} or {@code {"ok":false,"error":"..."}}.
 */
public final class ControlServer implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(ControlServer.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Buffer statistics in the same naming style as status: snake_case (held_frames, dropped_agent_restart...). */
    private static final ObjectMapper SNAKE = new ObjectMapper()
        .setPropertyNamingStrategy(com.fasterxml.jackson.databind.PropertyNamingStrategies.SNAKE_CASE);
    private static final int MAX_REQUEST = 4096;
    static final int MAX_PENDING = 16;
    static final long REQUEST_DEADLINE_MS = 5000;

    private final Path path;
    private final Maintenance maintenance;
    private final Map<String, VmHandle> vms = new ConcurrentHashMap<>();
    private final ServerSocketChannel server;
    private final Thread thread;
    private volatile boolean running = true;
    private final LinkedHashSet<SocketChannel> pending = new LinkedHashSet<>();
    private final AtomicLong abandoned = new AtomicLong();
    private final ExecutorService workers = Executors.newCachedThreadPool(r ->
    {
        final Thread t = new Thread(r, "colod-control-client");
        t.setDaemon(true);
        return t;
    });
    private final ScheduledExecutorService deadlines =
        Executors.newSingleThreadScheduledExecutor(r ->
        {
            final Thread t = new Thread(r, "colod-control-deadline");
            t.setDaemon(true);
            return t;
        });

    private final EventLog events = new EventLog();

    public ControlServer(final Path path, final List<VmHandle> handles) throws IOException
    {
        this(path, handles, null);
    }

    /** {@code maintenance}: this host's maintenance mode (null: the socket has no maintenance command). */
    public ControlServer(final Path path, final List<VmHandle> handles, final Maintenance maintenance) throws IOException
    {
        this.path = path;
        this.maintenance = maintenance;
        handles.forEach(h -> vms.put(h.name(), h));
        sampleEvents();
        deadlines.scheduleWithFixedDelay(this::sampleEvents, EventLog.SAMPLE_MS, EventLog.SAMPLE_MS,
            java.util.concurrent.TimeUnit.MILLISECONDS);
        Files.createDirectories(path.getParent());
        Files.deleteIfExists(path);
        server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path));
        Files.setPosixFilePermissions(path, PosixFilePermissions.fromString("rw-------"));
        thread = new Thread(this::serve, "colod-control");
        thread.setDaemon(true);
        thread.start();
        LOG.info("control socket {} (mode 0600)", path);
    }

    /**
     * Accepts and hands each connection to its own short-lived thread, so a client that stalls, sends junk or
     * never reads its reply holds up nobody else. A request must arrive within {@link #REQUEST_DEADLINE_MS};
     * at most {@link #MAX_PENDING} connections are served at once, a newer one closing the oldest.
     */
    private void serve()
    {
        while (running)
        {
            final SocketChannel c;
            try
            {
                c = server.accept();
            }
            catch (final IOException ex)
            {
                if (running)
                {
                    LOG.warn("control socket: {}", ex.toString());
                }
                if (!server.isOpen())
                {
                    return;
                }
                continue;
            }
            SocketChannel evicted = null;
            synchronized (pending)
            {
                if (pending.size() >= MAX_PENDING)
                {
                    final Iterator<SocketChannel> oldest = pending.iterator();
                    evicted = oldest.next();
                    oldest.remove();
                }
                pending.add(c);
            }
            if (evicted != null)
            {
                abandoned.incrementAndGet();
                closeQuietly(evicted);
            }
            try
            {
                workers.execute(() -> serveOne(c));
            }
            catch (final RuntimeException ex)
            {
                closeQuietly(c); // closing
            }
        }
    }

    private void serveOne(final SocketChannel c)
    {
        ScheduledFuture<?> deadline = deadlines.schedule(() -> closeQuietly(c),
            REQUEST_DEADLINE_MS, TimeUnit.MILLISECONDS);
        try (c)
        {
            final ByteBuffer in = ByteBuffer.allocate(MAX_REQUEST);
            while (in.hasRemaining() && c.read(in) > 0)
            {
                if (in.get(in.position() - 1) == '\n')
                {
                    break;
                }
            }
            // the deadline bounds the client (its request, then reading the reply), not the command: standby
            // closes and opens a VM's side, which may take longer
            deadline.cancel(false);
            final String reply = handle(new String(in.array(), 0, in.position(), StandardCharsets.UTF_8).trim());
            deadline = deadlines.schedule(() -> closeQuietly(c), REQUEST_DEADLINE_MS, TimeUnit.MILLISECONDS);
            final ByteBuffer out = ByteBuffer.wrap((reply + "\n").getBytes(StandardCharsets.UTF_8));
            while (out.hasRemaining())
            {
                c.write(out);
            }
        }
        catch (final IOException ex)
        {
            if (running)
            {
                abandoned.incrementAndGet();
                LOG.info("control socket: a client went away or stalled past {} ms: {}", REQUEST_DEADLINE_MS, ex.toString());
            }
        }
        finally
        {
            deadline.cancel(false);
            synchronized (pending)
            {
                pending.remove(c);
            }
        }
    }

    private static void closeQuietly(final SocketChannel c)
    {
        try
        {
            c.close();
        }
        catch (final IOException ignore)
        {
            // gone already
        }
    }

    /** Connections closed before a reply: went away, stalled past the deadline, or evicted by newer ones. */
    public long abandoned()
    {
        return abandoned.get();
    }

    String handle(final String line)
    {
        final ObjectNode r = JSON.createObjectNode();
        try
        {
            final JsonNode req = JSON.readTree(line);
            final String cmd = req.path("command").asText("");
            final String vm = req.path("vm").asText(null);
            switch (cmd)
            {
                case "status":
                {
                    final ArrayNode a = r.putArray("vms");
                    final String held = maintenance == null ? null : maintenance.why();
                    vms.values().stream().sorted((x, y) -> x.name().compareTo(y.name())).forEach(h ->
                    {
                        final ObjectNode o = JSON.valueToTree(h.status());
                        o.put("maintenance", held == null ? "" : held);
                        a.add(o);
                    });
                    break;
                }
                case "buffers":
                {
                    final ArrayNode a = r.putArray("vms");
                    for (final VmHandle h : vm == null ? vms.values().stream().sorted((x, y) -> x.name().compareTo(y.name())).toList()
                        : List.of(find(vm)))
                    {
                        final ObjectNode o = a.addObject();
                        o.put("vm", h.name());
                        final ArrayNode nics = o.putArray("nics");
                        for (final NicStats s : h.buffers())
                        {
                            nics.add(SNAKE.valueToTree(s));
                        }
                    }
                    break;
                }
                case "events":
                {
                    final long sinceMs = req.path("since_ms").asLong(-1);
                    if (vm != null)
                    {
                        find(vm);
                    }
                    final ArrayNode a = r.putArray("events");
                    for (final EventLog.Event e : events.since(sinceMs < 0 ? null : java.time.Instant.ofEpochMilli(sinceMs), vm))
                    {
                        a.addObject().put("time", e.at().toString()).put("vm", e.vm()).put("event", e.what());
                    }
                    break;
                }
                case "checkpoint":
                    find(vm).checkpoint();
                    r.put("message", "checkpoint requested for vm " + vm);
                    break;
                case "failover":
                    if (req.path("dry-run").asBoolean(false))
                    {
                        r.put("message", find(vm).failoverDryRun());
                        break;
                    }
                    find(vm).failover(req.path("force").asBoolean(false));
                    r.put("message", "failover requested for vm " + vm);
                    break;
                case "reprotect":
                    find(vm).reprotect();
                    r.put("message", "protection of vm " + vm + " starts again");
                    break;
                case "maintenance":
                {
                    if (maintenance == null)
                    {
                        throw new IllegalStateException("this colod has no maintenance mode");
                    }
                    final JsonNode on = req.path("on");
                    if (on.isBoolean() && on.asBoolean())
                    {
                        final String why = maintenance.on(req.path("reason").asText(""));
                        LOG.warn("maintenance on: {}", why);
                        events.note(EventLog.HOST, "maintenance on: " + why, java.time.Instant.now());
                        r.put("message", why);
                    }
                    else if (on.isBoolean())
                    {
                        final boolean was = maintenance.off();
                        if (was)
                        {
                            LOG.warn("maintenance off: failovers start on their own here again");
                            events.note(EventLog.HOST, "maintenance off", java.time.Instant.now());
                        }
                        r.put("message", was ? "maintenance off: failovers start on their own here again"
                            : "this host was not in maintenance");
                    }
                    else
                    {
                        final String why = maintenance.why();
                        r.put("message", why == null ? "this host is not in maintenance" : why);
                    }
                    r.put("maintenance", maintenance.why() == null ? "" : maintenance.why());
                    break;
                }
                case "standby":
                    find(vm).standBy();
                    r.put("message", "vm " + vm + ": the fenced copy is stopped and this host stands by for it (protected " +
                        "once its primary connects)");
                    break;
                default:
                    throw new IllegalArgumentException("unknown command '" + cmd +
                        "' (status, buffers, events, checkpoint, failover, reprotect, standby, maintenance)");
            }
            r.put("ok", true);
        }
        catch (final Exception ex)
        {
            r.removeAll();
            r.put("ok", false);
            r.put("error", ex.getMessage() != null ? ex.getMessage() : ex.toString());
        }
        return r.toString();
    }

    /** Every VM's status into the event log (a change becomes an event). */
    private void sampleEvents()
    {
        final java.time.Instant now = java.time.Instant.now();
        for (final VmHandle h : vms.values())
        {
            try
            {
                events.observe(h.name(), h.status(), now);
            }
            catch (final RuntimeException ex)
            {
                LOG.debug("vm={} status for the event log: {}", h.name(), ex.toString());
            }
        }
    }

    private VmHandle find(final String vm)
    {
        if (vm == null)
        {
            throw new IllegalArgumentException("which vm? (one of " + String.join(", ", vms.keySet()) + ")");
        }
        final VmHandle h = vms.get(vm);
        if (h == null)
        {
            throw new IllegalArgumentException("no vm '" + vm + "' here (known: " + String.join(", ", vms.keySet()) + ")");
        }
        return h;
    }

    @Override
    public void close()
    {
        running = false;
        workers.shutdownNow();
        deadlines.shutdownNow();
        try
        {
            server.close();
            Files.deleteIfExists(path);
        }
        catch (final IOException ex)
        {
            LOG.warn("closing control socket: {}", ex.toString());
        }
    }
}
