package dev.colod.agent.control;

import com.sun.net.httpserver.HttpServer;
import dev.colod.buffer.NicStats;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Opt-in Prometheus endpoint ({@code GET /metrics}, text exposition format 0.0.4), bound to 127.0.0.1 unless
 * configured otherwise. Every value is read from the same lock-free counters {@code coloctl} shows.
 */
public final class MetricsServer implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(MetricsServer.class);

    private final HttpServer server;
    private final List<VmHandle> vms;

    public MetricsServer(final InetSocketAddress listen, final List<VmHandle> vms) throws IOException
    {
        this.vms = List.copyOf(vms);
        server = HttpServer.create(listen, 8);
        server.createContext("/metrics", x ->
        {
            final byte[] body = render().getBytes(StandardCharsets.UTF_8);
            x.getResponseHeaders().add("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            x.sendResponseHeaders(200, body.length);
            try (OutputStream os = x.getResponseBody())
            {
                os.write(body);
            }
        });
        server.start();
        LOG.info("metrics on http://{}:{}/metrics", listen.getHostString(), server.getAddress().getPort());
    }

    public int port()
    {
        return server.getAddress().getPort();
    }

    String render()
    {
        final StringBuilder b = new StringBuilder();
        help(b, "colod_checkpoints_total", "counter", "checkpoints completed");
        help(b, "colod_checkpoints_failed_total", "counter", "checkpoints that failed (the session ended)");
        help(b, "colod_checkpoints_started_total", "counter",
            "checkpoints by what started them (timer, output, buffer, state, request)");
        help(b, "colod_guest_paused_seconds_total", "counter", "time the guest spent paused by checkpoints");
        help(b, "colod_state_bytes_total", "counter", "checkpoint state bytes shipped or received");
        help(b, "colod_pause_seconds", "summary", "time the VM was paused per checkpoint");
        help(b, "colod_pause_step_seconds", "summary",
            "time of each step of a checkpoint (stop, device, tracking, copy, transfer, commit, resume)");
        help(b, "colod_failovers_total", "counter", "failovers performed on this host");
        help(b, "colod_heartbeat_losses_total", "counter", "peers declared lost for missing heartbeats");
        help(b, "colod_protocol_errors_total", "counter", "sessions ended by a protocol error");
        help(b, "colod_protected", "gauge", "1 while the VM is protected");
        help(b, "colod_frames_held", "gauge", "guest frames held now");
        help(b, "colod_bytes_held", "gauge", "guest bytes held now");
        help(b, "colod_frames_released_total", "counter", "guest frames released after vmstate-received");
        help(b, "colod_frames_dropped_total", "counter", "guest frames dropped, by reason");
        help(b, "colod_hybrid_frames_total", "counter",
            "hybrid mode, primary: guest frames compared, matched by the running copy's, and let out by comparison");
        help(b, "colod_hybrid_comparison_checkpoints_total", "counter",
            "hybrid mode, primary: checkpoints comparison asked for, by cause (mismatch, compare-timeout, secondary-ahead)");
        help(b, "colod_hybrid_copy_frames_total", "counter",
            "hybrid mode, secondary: inbound frames injected into the running copy, stale, dropped; copy output sent");
        for (final VmHandle h : vms)
        {
            final Map<String, Object> s = h.status();
            final String l = "vm=\"" + h.name() + "\",role=\"" + s.get("role") + "\"";
            line(b, "colod_checkpoints_total", l, s.get("checkpoints"));
            line(b, "colod_checkpoints_failed_total", l, s.get("checkpoints_failed"));
            if (s.get("checkpoints_by_cause") instanceof Map<?, ?> causes)
            {
                causes.forEach((cause, n) -> line(b, "colod_checkpoints_started_total", l + ",cause=\"" + cause + "\"", n));
            }
            if (s.get("guest_paused_ms_total") instanceof Long ms)
            {
                line(b, "colod_guest_paused_seconds_total", l, ms / 1000.0);
            }
            line(b, "colod_state_bytes_total", l, s.get("state_bytes"));
            line(b, "colod_pause_seconds", l + ",quantile=\"0.5\"", ((Double)s.get("pause_p50_ms")) / 1000);
            line(b, "colod_pause_seconds", l + ",quantile=\"0.99\"", ((Double)s.get("pause_p99_ms")) / 1000);
            h.pauseSteps().forEach((step, hist) ->
            {
                line(b, "colod_pause_step_seconds", l + ",step=\"" + step + "\",quantile=\"0.5\"",
                    hist.getValueAtPercentile(50) / 1e6);
                line(b, "colod_pause_step_seconds", l + ",step=\"" + step + "\",quantile=\"0.99\"",
                    hist.getValueAtPercentile(99) / 1e6);
            });
            line(b, "colod_failovers_total", l, s.get("failovers"));
            line(b, "colod_heartbeat_losses_total", l, s.get("heartbeat_losses"));
            line(b, "colod_protocol_errors_total", l, s.get("protocol_errors"));
            line(b, "colod_protected", l, "protected".equals(s.get("state")) ? 1 : 0);
            if (s.get("comparison") instanceof Map<?, ?> c)
            {
                line(b, "colod_hybrid_frames_total", l + ",what=\"compared\"", c.get("frames_compared"));
                line(b, "colod_hybrid_frames_total", l + ",what=\"matched\"", c.get("frames_matched"));
                line(b, "colod_hybrid_frames_total", l + ",what=\"released-by-comparison\"", c.get("released_by_comparison"));
                line(b, "colod_hybrid_comparison_checkpoints_total", l + ",cause=\"mismatch\"", c.get("mismatches"));
                line(b, "colod_hybrid_comparison_checkpoints_total", l + ",cause=\"compare-timeout\"",
                    c.get("compare_timeouts"));
                line(b, "colod_hybrid_comparison_checkpoints_total", l + ",cause=\"secondary-ahead\"",
                    c.get("secondary_ahead"));
            }
            if (s.get("copy_frames") instanceof Map<?, ?> f)
            {
                line(b, "colod_hybrid_copy_frames_total", l + ",what=\"injected\"", f.get("inbound_injected"));
                line(b, "colod_hybrid_copy_frames_total", l + ",what=\"stale\"", f.get("inbound_stale"));
                line(b, "colod_hybrid_copy_frames_total", l + ",what=\"dropped\"", f.get("inbound_dropped"));
                line(b, "colod_hybrid_copy_frames_total", l + ",what=\"sent\"", f.get("digests_sent"));
            }
            for (final NicStats n : h.buffers())
            {
                final String nl = "vm=\"" + h.name() + "\",nic=\"" + n.nic() + "\"";
                line(b, "colod_frames_held", nl, n.heldFrames());
                line(b, "colod_bytes_held", nl, n.heldBytes());
                line(b, "colod_frames_released_total", nl, n.releasedFrames());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"limit-frames\"", n.droppedLimitFrames());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"limit-bytes\"", n.droppedLimitBytes());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"oversize\"", n.droppedOversize());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"fenced\"", n.droppedFenced());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"write-error\"", n.droppedWriteError());
                line(b, "colod_frames_dropped_total", nl + ",reason=\"agent-restart\"", n.droppedAgentRestart());
            }
        }
        return b.toString();
    }

    private static void help(final StringBuilder b, final String name, final String type, final String help)
    {
        b.append("# HELP ").append(name).append(' ').append(help).append('\n');
        b.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void line(final StringBuilder b, final String name, final String labels, final Object value)
    {
        b.append(name).append('{').append(labels).append("} ").append(String.format(Locale.ROOT, "%s", value)).append('\n');
    }

    @Override
    public void close()
    {
        server.stop(0);
    }
}
