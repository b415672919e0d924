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
import java.util.Map;

/**
 * Opt-in Prometheus endpoint ({@code GET /metrics}, text exposition format 0.0.4; {@code GET /healthz} answers
 * "ok" while colod runs), bound to 127.0.0.1 unless configured otherwise (an IPv6 address in brackets). Every value
 * is read from the same lock-free counters {@code coloctl} shows; series carry {@code vm} (and {@code nic},
 * {@code cause}, ...) but never the role, which is a series of its own ({@code colod_vm_role}), so a failover
 * does not break every series. Metric names and what each means: docs/OPERATIONS.md, "Metrics".
 */
public final class MetricsServer implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(MetricsServer.class);

    private final HttpServer server;
    private final List<VmHandle> vms;
    private final List<java.nio.file.Path> certificates;
    private volatile Maintenance maintenance;

    public MetricsServer(final InetSocketAddress listen, final List<VmHandle> vms) throws IOException
    {
        this(listen, vms, List.of());
    }

    /** Exposes this host's maintenance mode as {@code colod_maintenance}. */
    public MetricsServer maintenance(final Maintenance m)
    {
        maintenance = m;
        return this;
    }

    /** As above; {@code certificates}: PEM files whose certificates' expiry is exposed (TLS, etcd client). */
    public MetricsServer(final InetSocketAddress listen, final List<VmHandle> vms, final List<java.nio.file.Path> certificates)
        throws IOException
    {
        this.vms = List.copyOf(vms);
        this.certificates = List.copyOf(certificates);
        server = HttpServer.create(listen, 8);
        // one context for every path: anything but GET /metrics and GET /healthz is answered as such (404, 405)
        server.createContext("/", x ->
        {
            final String path = x.getRequestURI().getPath();
            final boolean known = "/metrics".equals(path) || "/healthz".equals(path);
            int code = 200;
            String type = "text/plain; charset=utf-8";
            final String text;
            if (!known)
            {
                code = 404;
                text = "not found: " + path + " (GET /metrics or /healthz)\n";
            }
            else if (!"GET".equals(x.getRequestMethod()) && !"HEAD".equals(x.getRequestMethod()))
            {
                code = 405;
                x.getResponseHeaders().add("Allow", "GET, HEAD");
                text = "method " + x.getRequestMethod() + " not allowed (GET)\n";
            }
            else if ("/healthz".equals(path))
            {
                text = "ok\n";
            }
            else
            {
                type = "text/plain; version=0.0.4; charset=utf-8";
                text = render();
            }
            final byte[] body = text.getBytes(StandardCharsets.UTF_8);
            x.getResponseHeaders().add("Content-Type", type);
            final boolean head = "HEAD".equals(x.getRequestMethod());
            x.sendResponseHeaders(code, head ? -1 : body.length);
            try (OutputStream os = x.getResponseBody())
            {
                if (!head)
                {
                    os.write(body);
                }
            }
        });
        server.start();
        LOG.info("metrics on http://{}/metrics", hostPort(listen.getHostString(), server.getAddress().getPort()));
    }

    /** host:port, an IPv6 host in brackets. */
    static String hostPort(final String host, final int port)
    {
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
    }

    public int port()
    {
        return server.getAddress().getPort();
    }

    String render()
    {
        final Exposition e = new Exposition();
        e.declare("colod_build_info", "gauge", "colod's version (always 1)");
        e.sample("colod_build_info", 1, "version", Coloctl.version());
        final Maintenance m = maintenance;
        if (m != null)
        {
            e.declare("colod_maintenance", "gauge", "1 while this host is in maintenance (no failover starts here on its own)");
            e.sample("colod_maintenance", m.why() == null ? 0 : 1);
        }
        declare(e);
        e.declare("colod_certificate_expiry_timestamp_seconds", "gauge",
            "when a certificate colod uses expires (Unix time): alert well before it (the replication link refuses then)");
        for (final java.nio.file.Path f : certificates)
        {
            e.sample("colod_certificate_expiry_timestamp_seconds", notAfter(f), "file", f.toString());
        }
        for (final VmHandle h : vms)
        {
            vm(e, h);
        }
        return e.render();
    }

    /** The first certificate's notAfter in PEM file {@code f}, Unix seconds; null when it cannot be read. */
    static Long notAfter(final java.nio.file.Path f)
    {
        try (java.io.InputStream in = java.nio.file.Files.newInputStream(f))
        {
            final java.security.cert.X509Certificate c = (java.security.cert.X509Certificate)
                java.security.cert.CertificateFactory.getInstance("X.509").generateCertificate(in);
            return c.getNotAfter().getTime() / 1000;
        }
        catch (final IOException | java.security.GeneralSecurityException | RuntimeException ex)
        {
            return null;
        }
    }

    private static void declare(final Exposition e)
    {
        e.declare("colod_vm_role", "gauge", "1 for this host's role in the VM's protection (primary, secondary)")
            .declare("colod_vm_state", "gauge", "1 for the VM's protection state on this host (protected, unprotected, fenced, ...)")
            .declare("colod_protected", "gauge", "1 while the VM is protected")
            .declare("colod_last_checkpoint_age_seconds", "gauge",
                "time since the last completed checkpoint (absent before the first): alert when it grows")
            .declare("colod_last_checkpoint_id", "gauge", "id of the last completed checkpoint")
            .declare("colod_checkpoints_total", "counter", "checkpoints completed")
            .declare("colod_checkpoints_failed_total", "counter", "checkpoints that failed (the session ended)")
            .declare("colod_checkpoints_started_total", "counter",
                "checkpoints by what started them (timer, output, buffer, state, request, mismatch, compare-timeout)")
            .declare("colod_output_trigger_deferrals_total", "counter",
                "output-triggered checkpoints deferred by the pause budget (backpressure on the guest's output)")
            .declare("colod_guest_paused_seconds_total", "counter", "time the guest spent paused by checkpoints")
            .declare("colod_state_bytes_total", "counter", "checkpoint state bytes shipped or received")
            .declare("colod_pause_seconds", "histogram", "time the VM was paused per checkpoint")
            .declare("colod_pause_step_seconds", "histogram",
                "time of each step of a checkpoint (stop, device, tracking, disk, copy, transfer, commit, resume)")
            .declare("colod_write_audit_misses_total", "counter",
                "pages the write-tracking audit found changed but not tracked (should stay 0)")
            .declare("colod_disk_throttles_total", "counter",
                "times the guest's disk writes were held back because it ran more than twice the early-checkpoint size ahead")
            .declare("colod_disk_throttled_seconds_total", "counter", "time the guest's disk writes were held back")
            .declare("colod_failovers_total", "counter", "failovers performed on this host")
            .declare("colod_failovers_held_total", "counter",
                "failovers this host would have started on its own, held because it is in maintenance")
            .declare("colod_heartbeat_losses_total", "counter", "peers declared lost for missing heartbeats")
            .declare("colod_protocol_errors_total", "counter", "sessions ended by a protocol error")
            .declare("colod_arbiter_grants_total", "counter", "times the arbiter granted this host the VM")
            .declare("colod_arbiter_waits_total", "counter", "times this host waited for the arbiter")
            .declare("colod_lease_lapses_total", "counter", "arbiter leases that lapsed")
            .declare("colod_stale_tokens_refused_total", "counter", "peers refused for an older fencing token")
            .declare("colod_auth_failures_total", "counter", "connections refused by mutual TLS or peer-name checks")
            .declare("colod_handshakes_abandoned_total", "counter", "connections that never completed a handshake")
            .declare("colod_tls_channels_total", "counter",
                "replication channels secured by mutual TLS 1.3, by how their data went after the handshake: layer=" +
                "sealed (sealed chunks) or records (TLS records: the peer, or this host, did not offer sealed chunks)")
            .declare("colod_sessions_refused_total", "counter", "sessions this host refused (shape, token, busy)")
            .declare("colod_held_frames", "gauge", "guest frames held now, per NIC")
            .declare("colod_held_bytes", "gauge", "guest bytes held now, per NIC")
            .declare("colod_frames_released_total", "counter", "guest frames released after their checkpoint")
            .declare("colod_frames_passed_total", "counter", "guest frames passed unheld (unprotected)")
            .declare("colod_frames_inbound_total", "counter", "frames to the guest, per NIC")
            .declare("colod_frames_dropped_total", "counter", "guest frames dropped, by reason")
            .declare("colod_backpressure_stalls_total", "counter", "times a full buffer stopped reading the guest's frames")
            .declare("colod_hybrid_frames_total", "counter",
                "hybrid mode, primary: guest frames compared, matched by the running copy's (of them: with HTTP Date values " +
                "apart within the tolerance), and let out by comparison")
            .declare("colod_hybrid_comparison_checkpoints_total", "counter",
                "hybrid mode, primary: checkpoints comparison asked for, by cause (mismatch, compare-timeout, secondary-ahead)")
            .declare("colod_hybrid_copy_frames_total", "counter",
                "hybrid mode, secondary: inbound frames injected into the running copy, stale, dropped; copy output sent");
    }

    private static void vm(final Exposition e, final VmHandle h)
    {
        final Map<String, Object> s = h.status();
        final String vm = h.name();
        e.sample("colod_vm_role", 1, "vm", vm, "role", String.valueOf(s.get("role")));
        e.sample("colod_vm_state", 1, "vm", vm, "state", String.valueOf(s.get("state")));
        e.sample("colod_protected", "protected".equals(s.get("state")) ? 1 : 0, "vm", vm);
        if (s.get("last_checkpoint_age_ms") instanceof Long age && age >= 0)
        {
            e.sample("colod_last_checkpoint_age_seconds", age / 1000.0, "vm", vm);
        }
        e.sample("colod_last_checkpoint_id", s.get("last_checkpoint_id"), "vm", vm);
        e.sample("colod_checkpoints_total", s.get("checkpoints"), "vm", vm);
        e.sample("colod_checkpoints_failed_total", s.get("checkpoints_failed"), "vm", vm);
        if (s.get("checkpoints_by_cause") instanceof Map<?, ?> causes)
        {
            causes.forEach((cause, n) -> e.sample("colod_checkpoints_started_total", n, "vm", vm, "cause", String.valueOf(cause)));
        }
        e.sample("colod_output_trigger_deferrals_total", s.get("output_trigger_deferrals"), "vm", vm);
        if (s.get("guest_paused_ms_total") instanceof Long ms)
        {
            e.sample("colod_guest_paused_seconds_total", ms / 1000.0, "vm", vm);
        }
        e.sample("colod_state_bytes_total", s.get("state_bytes"), "vm", vm);
        e.histogram("colod_pause_seconds", h.pauseHistogram(), Exposition.PAUSE_BUCKETS, "vm", vm);
        h.pauseSteps().forEach((step, hist) ->
            e.histogram("colod_pause_step_seconds", hist, Exposition.PAUSE_BUCKETS, "vm", vm, "step", step));
        e.sample("colod_write_audit_misses_total", s.get("write_audit_misses"), "vm", vm);
        if (s.get("disk_throttles") != null)
        {
            e.sample("colod_disk_throttles_total", s.get("disk_throttles"), "vm", vm);
            e.sample("colod_disk_throttled_seconds_total", ((Number)s.get("disk_throttled_ms")).longValue() / 1000.0, "vm", vm);
        }
        e.sample("colod_failovers_total", s.get("failovers"), "vm", vm);
        e.sample("colod_failovers_held_total", s.get("failovers_held"), "vm", vm);
        e.sample("colod_heartbeat_losses_total", s.get("heartbeat_losses"), "vm", vm);
        e.sample("colod_protocol_errors_total", s.get("protocol_errors"), "vm", vm);
        e.sample("colod_arbiter_grants_total", s.get("arbiter_grants"), "vm", vm);
        e.sample("colod_arbiter_waits_total", s.get("arbiter_waits"), "vm", vm);
        e.sample("colod_lease_lapses_total", s.get("lease_lapses"), "vm", vm);
        e.sample("colod_stale_tokens_refused_total", s.get("stale_tokens_refused"), "vm", vm);
        e.sample("colod_auth_failures_total", s.get("auth_failures"), "vm", vm);
        e.sample("colod_handshakes_abandoned_total", s.get("abandoned_handshakes"), "vm", vm);
        if (s.get("tls_sealed_channels") != null)
        {
            e.sample("colod_tls_channels_total", s.get("tls_sealed_channels"), "vm", vm, "layer", "sealed");
            e.sample("colod_tls_channels_total", s.get("tls_record_channels"), "vm", vm, "layer", "records");
        }
        e.sample("colod_sessions_refused_total", s.get("sessions_refused"), "vm", vm);
        if (s.get("comparison") instanceof Map<?, ?> c)
        {
            e.sample("colod_hybrid_frames_total", c.get("frames_compared"), "vm", vm, "what", "compared");
            e.sample("colod_hybrid_frames_total", c.get("frames_matched"), "vm", vm, "what", "matched");
            e.sample("colod_hybrid_frames_total", c.get("released_by_comparison"), "vm", vm, "what", "released-by-comparison");
            e.sample("colod_hybrid_frames_total", c.get("http_dates_tolerated"), "vm", vm, "what", "http-dates-tolerated");
            e.sample("colod_hybrid_frames_total", c.get("teardowns_tolerated"), "vm", vm, "what", "teardowns-tolerated");
            e.sample("colod_hybrid_frames_total", c.get("segments_split"), "vm", vm, "what", "segments-split");
            e.sample("colod_hybrid_comparison_checkpoints_total", c.get("mismatches"), "vm", vm, "cause", "mismatch");
            e.sample("colod_hybrid_comparison_checkpoints_total", c.get("compare_timeouts"), "vm", vm, "cause",
                "compare-timeout");
            e.sample("colod_hybrid_comparison_checkpoints_total", c.get("secondary_ahead"), "vm", vm, "cause",
                "secondary-ahead");
        }
        if (s.get("copy_frames") instanceof Map<?, ?> f)
        {
            e.sample("colod_hybrid_copy_frames_total", f.get("inbound_injected"), "vm", vm, "what", "injected");
            e.sample("colod_hybrid_copy_frames_total", f.get("inbound_stale"), "vm", vm, "what", "stale");
            e.sample("colod_hybrid_copy_frames_total", f.get("inbound_dropped"), "vm", vm, "what", "dropped");
            e.sample("colod_hybrid_copy_frames_total", f.get("digests_sent"), "vm", vm, "what", "sent");
        }
        for (final NicStats n : h.buffers())
        {
            final String nic = n.nic();
            e.sample("colod_held_frames", n.heldFrames(), "vm", vm, "nic", nic);
            e.sample("colod_held_bytes", n.heldBytes(), "vm", vm, "nic", nic);
            e.sample("colod_frames_released_total", n.releasedFrames(), "vm", vm, "nic", nic);
            e.sample("colod_frames_passed_total", n.passedFrames(), "vm", vm, "nic", nic);
            e.sample("colod_frames_inbound_total", n.inboundFrames(), "vm", vm, "nic", nic);
            e.sample("colod_backpressure_stalls_total", n.backpressureStalls(), "vm", vm, "nic", nic);
            e.sample("colod_frames_dropped_total", n.droppedLimitFrames(), "vm", vm, "nic", nic, "reason", "limit-frames");
            e.sample("colod_frames_dropped_total", n.droppedLimitBytes(), "vm", vm, "nic", nic, "reason", "limit-bytes");
            e.sample("colod_frames_dropped_total", n.droppedOversize(), "vm", vm, "nic", nic, "reason", "oversize");
            e.sample("colod_frames_dropped_total", n.droppedFenced(), "vm", vm, "nic", nic, "reason", "fenced");
            e.sample("colod_frames_dropped_total", n.droppedWriteError(), "vm", vm, "nic", nic, "reason", "write-error");
            e.sample("colod_frames_dropped_total", n.droppedAgentRestart(), "vm", vm, "nic", nic, "reason", "agent-restart");
        }
    }

    @Override
    public void close()
    {
        server.stop(0);
    }
}
