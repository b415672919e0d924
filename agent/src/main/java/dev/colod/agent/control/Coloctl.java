package dev.colod.agent.control;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.colod.agent.config.ColodConfig;
import dev.colod.agent.config.ConfigException;
import dev.colod.agent.config.ConfigLoader;
import dev.colod.agent.config.HostCheck;
import picocli.AutoComplete;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * coloctl: inspect and command colod over its control socket.
 * Exit codes: 0 done; 1 colod refused the request (e.g. unknown VM); 2 usage error; 3 colod not reachable;
 * 4 configuration file invalid; 5 this host lacks what a valid configuration needs.
 */
@Command(name = "coloctl", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class,
    description = "Inspect and command colod, the COLO checkpointing agent.",
    footer = {"", "Examples:", "  coloctl status", "  coloctl buffers web1 --watch", "  coloctl buffers -o json",
        "  coloctl checkpoint web1", "  coloctl failover web1", "  coloctl config check /etc/colod/colod.yaml",
        "  coloctl certs --dir /etc/colod/tls 198.19.0.1 198.19.0.2",
        "  source <(coloctl completion)", "",
        "Exit codes: 0 ok, 1 colod refused, 2 usage, 3 colod not reachable, 4 invalid configuration, 5 this host lacks " +
            "what the configuration needs (config check --host), 6 requested but not done within --wait's --timeout"},
    subcommands = {Coloctl.Status.class, Coloctl.Buffers.class, Coloctl.Events.class, Coloctl.Checkpoint.class, Coloctl.Failover.class, Coloctl.Standby.class, Coloctl.MaintenanceCmd.class,
        Coloctl.Reprotect.class, Coloctl.Config.class, Coloctl.Certs.class, Coloctl.Completion.class})
public final class Coloctl
{
    public static final int REFUSED = 1;
    public static final int UNREACHABLE = 3;
    public static final int BAD_CONFIG = 4;
    /** {@code config check --host}: the file is valid, but this host lacks what it needs. */
    public static final int HOST_LACKS = 5;
    /** {@code checkpoint}, {@code failover}, {@code reprotect}, {@code standby} with {@code --wait}: accepted, but not done in time. */
    public static final int NOT_DONE = 6;
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ObjectMapper YAML = new ObjectMapper(new com.fasterxml.jackson.dataformat.yaml.YAMLFactory());

    /** {@code -o}: a table, a wider table, or the data as JSON or YAML (the same fields, snake_case). */
    enum Output
    {
        TABLE, WIDE, JSON, YAML
    }

    /** The version of this build (the jar's Implementation-Version), for {@code --version} of every command. */
    public static final class Version implements CommandLine.IVersionProvider
    {
        @Override
        public String[] getVersion()
        {
            return new String[]{"coloctl " + version()};
        }
    }

    /** This build's version: the jar manifest's Implementation-Version, or "development" when run from classes. */
    public static String version()
    {
        final String v = Coloctl.class.getPackage().getImplementationVersion();
        return v == null ? "development" : v;
    }

    @Option(names = "--socket", description = "control socket (default: ${DEFAULT-VALUE})", defaultValue = "/run/colod/colod.sock",
        scope = CommandLine.ScopeType.INHERIT)
    Path socket;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(final String[] args)
    {
        final CommandLine cl = commandLine();
        final int code = cl.execute(args);
        // what was printed without a line end (the completion script's last part) is still buffered: flush it
        cl.getOut().flush();
        cl.getErr().flush();
        System.exit(code);
    }

    public static CommandLine commandLine()
    {
        return new CommandLine(new Coloctl());
    }

    /** One request, one reply; a refused request becomes exit code 1 with colod's message. */
    JsonNode call(final String request) throws ExitException
    {
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX))
        {
            c.connect(UnixDomainSocketAddress.of(socket));
            final ByteBuffer out = ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.UTF_8));
            while (out.hasRemaining())
            {
                c.write(out);
            }
            final ByteArrayOutputStream buf = new ByteArrayOutputStream();
            final ByteBuffer in = ByteBuffer.allocate(65_536);
            while (c.read(in.clear()) > 0)
            {
                buf.write(in.array(), 0, in.position());
            }
            final JsonNode reply = JSON.readTree(buf.toByteArray());
            if (reply == null || !reply.path("ok").asBoolean())
            {
                throw new ExitException(REFUSED, "colod: " + (reply == null ? "empty reply" : reply.path("error").asText()));
            }
            return reply;
        }
        catch (final IOException ex)
        {
            throw new ExitException(UNREACHABLE, "cannot reach colod at " + socket + ": " + ex.getMessage() +
                " (is colod running? try: systemctl status colod; or pass --socket)");
        }
    }

    static final class ExitException extends RuntimeException
    {
        final int code;

        ExitException(final int code, final String message)
        {
            super(message);
            this.code = code;
        }
    }

    abstract static class Sub implements Callable<Integer>
    {
        @CommandLine.ParentCommand
        Coloctl parent;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        PrintWriter out()
        {
            return spec.commandLine().getOut();
        }

        PrintWriter err()
        {
            return spec.commandLine().getErr();
        }

        /** {@code node} as JSON or YAML. */
        void print(final Output o, final JsonNode node)
        {
            try
            {
                out().print(o == Output.YAML ? YAML.writeValueAsString(node) : node.toPrettyString() + "\n");
            }
            catch (final com.fasterxml.jackson.core.JsonProcessingException ex)
            {
                throw new ExitException(REFUSED, "cannot print " + o + ": " + ex.getMessage());
            }
        }

        /**
         * Runs {@code once} once, or with {@code watch} every second until interrupted or until stdout is gone
         * ({@code | head} ends it); the screen is cleared between rounds only on a terminal, elsewhere a line with
         * the time separates them.
         */
        int repeat(final boolean watch, final Runnable once)
        {
            return repeat(watch, true, once);
        }

        /** As above; {@code separate}: false when each round only adds to what is printed (no clearing, no line). */
        int repeat(final boolean watch, final boolean separate, final Runnable once)
        {
            final boolean terminal = System.console() != null;
            do
            {
                if (watch && separate)
                {
                    out().print(terminal ? "\033[H\033[2J" : "--- " + java.time.LocalTime.now().withNano(0) + "\n");
                }
                once.run();
                out().flush();
                if (out().checkError() || System.out.checkError())
                {
                    return 0; // the reader went away
                }
                if (watch)
                {
                    try
                    {
                        Thread.sleep(1000);
                    }
                    catch (final InterruptedException ex)
                    {
                        return 0;
                    }
                }
            }
            while (watch);
            return 0;
        }

        @Override
        public Integer call()
        {
            try
            {
                return run();
            }
            catch (final ExitException ex)
            {
                spec.commandLine().getErr().println(ex.getMessage());
                return ex.code;
            }
        }

        abstract int run();

    }

    /** A command on one VM, sent to colod under the subcommand's own name; its reply is a message line. */
    abstract static class VmCommand extends Sub
    {
        @Parameters(paramLabel = "VM")
        String vm;

        @Option(names = "--wait", description = "wait until it is done: exit 0 when it is, 6 with the state and last " +
            "error when not within --timeout")
        boolean await;

        @Option(names = "--timeout", defaultValue = "60", paramLabel = "SECONDS", description = "how long --wait waits (default 60)")
        int waitSeconds;

        @Override
        int run()
        {
            final JsonNode before = await ? vmStatus() : null;
            out().println(parent.call("{\"command\":\"" + spec.name() + "\",\"vm\":" + JSON.valueToTree(vm) + extra() +
                "}").path("message").asText());
            if (!await)
            {
                return 0;
            }
            final long deadline = System.nanoTime() + waitSeconds * 1_000_000_000L;
            JsonNode now = before;
            while (System.nanoTime() - deadline < 0)
            {
                now = vmStatus();
                if (done(before, now))
                {
                    out().println(spec.name() + " done: vm " + vm + " is " + now.path("role").asText() + ", " +
                        now.path("state").asText());
                    return 0;
                }
                try
                {
                    Thread.sleep(100);
                }
                catch (final InterruptedException ex)
                {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            err().println(spec.name() + " not done within " + waitSeconds + " s: vm " + vm + " is " +
                now.path("role").asText() + ", " + now.path("state").asText() +
                (now.path("last_error").asText().isEmpty() ? "" : "; last error: " + now.path("last_error").asText()));
            return NOT_DONE;
        }

        /** Whether what was asked has happened, from the VM's status before and now. */
        abstract boolean done(JsonNode before, JsonNode now);

        /** More fields of the request, each as {@code ,"name":value} (none by default). */
        String extra()
        {
            return "";
        }

        private JsonNode vmStatus()
        {
            for (final JsonNode v : parent.call("{\"command\":\"status\"}").path("vms"))
            {
                if (vm.equals(v.path("vm").asText()))
                {
                    return v;
                }
            }
            throw new ExitException(REFUSED, "no vm '" + vm + "' in colod's status");
        }
    }

    @Command(name = "status", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Each VM: role, state, peer, last checkpoint age, checkpoints/s, pause p50/p99.")
    static final class Status extends Sub
    {
        @Option(names = {"-o", "--output"}, description = "table, wide, json or yaml (default table)",
            defaultValue = "table", converter = OutputConverter.class)
        Output output;

        @Option(names = {"-w", "--watch"}, description = "refresh every second until interrupted")
        boolean watch;

        @Override
        int run()
        {
            return repeat(watch, this::once);
        }

        private void once()
        {
            final JsonNode r = parent.call("{\"command\":\"status\"}");
            if (output == Output.JSON || output == Output.YAML)
            {
                print(output, r.path("vms"));
                return;
            }
            final boolean wide = output == Output.WIDE;
            final String maintenance = r.path("vms").path(0).path("maintenance").asText("");
            if (!maintenance.isEmpty())
            {
                out().println("MAINTENANCE: " + maintenance);
            }
            out().printf(Locale.ROOT, "%-12s %-9s %-13s %-22s %10s %8s %9s %9s %-9s" + (wide ? " %9s %10s %9s %s" : "") + "%n",
                "VM", "ROLE", "STATE", "PEER", "LAST-CKPT", "CKPT/S", "PAUSE-P50", "PAUSE-P99", "TRACKING", "LAST-ID",
                "FAILED", "FAILOVERS", "DISK");
            for (final JsonNode v : r.path("vms"))
            {
                final long age = v.path("last_checkpoint_age_ms").asLong();
                final boolean any = v.path("checkpoints").asLong() > 0;
                out().printf(Locale.ROOT, "%-12s %-9s %-13s %-22s %10s %8.1f %9s %9s %-9s" + (wide ? " %9d %10d %9d %s" : "") +
                    "%n", v.path("vm").asText(), v.path("role").asText(), v.path("state").asText(), v.path("peer").asText(),
                    age < 0 ? "never" : age + "ms ago", v.path("checkpoints_per_second").asDouble(),
                    any ? String.format(Locale.ROOT, "%.1fms", v.path("pause_p50_ms").asDouble()) : "-",
                    any ? String.format(Locale.ROOT, "%.1fms", v.path("pause_p99_ms").asDouble()) : "-",
                    // on 2 MiB pages: "kernel/2m"
                    v.path("write_tracking").asText() + (v.path("ram_page_kib").asLong() == 2048 ? "/2m" : ""),
                    v.path("last_checkpoint_id").asLong(),
                    v.path("checkpoints_failed").asLong(), v.path("failovers").asLong(), v.path("disk").asText("none"));
                final JsonNode steps = v.path("pause_steps");
                if (steps.size() > 0)
                {
                    final StringBuilder b = new StringBuilder("  pause steps p50/p99 ms:");
                    steps.fields().forEachRemaining(e -> b.append(String.format(Locale.ROOT, " %s %.1f/%.1f", e.getKey(),
                        e.getValue().path("p50_ms").asDouble(), e.getValue().path("p99_ms").asDouble())));
                    out().println(b);
                }
                final JsonNode causes = v.path("checkpoints_by_cause");
                if (causes.size() > 0)
                {
                    final StringBuilder b = new StringBuilder("  checkpoints by cause:");
                    causes.fields().forEachRemaining(e -> b.append(' ').append(e.getKey()).append(' ')
                        .append(e.getValue().asLong()));
                    b.append(String.format(Locale.ROOT, "; guest paused %.1f%% (recent)",
                        v.path("guest_paused_percent").asDouble()));
                    out().println(b);
                }
                final JsonNode cmp = v.path("comparison");
                if (cmp.size() > 0)
                {
                    out().printf(Locale.ROOT, "  hybrid: %d of %d frames matched (%.1f%%), %d out by comparison; " +
                        "checkpoints asked: mismatch %d, timeout %d; frames channel %s%n", cmp.path("frames_matched").asLong(),
                        cmp.path("frames_compared").asLong(), cmp.path("matched_percent").asDouble(),
                        cmp.path("released_by_comparison").asLong(), cmp.path("mismatches").asLong(),
                        cmp.path("compare_timeouts").asLong(), cmp.path("frames_channel").asText());
                    if (!cmp.path("last_checkpoint_cause").asText().isEmpty())
                    {
                        out().println("  hybrid, last checkpoint cause: " + cmp.path("last_checkpoint_cause").asText());
                    }
                }
                final JsonNode copy = v.path("copy_frames");
                if (copy.size() > 0)
                {
                    out().printf(Locale.ROOT, "  running copy: %s; inbound injected %d, stale %d, dropped %d; output sent %d; " +
                        "frames channel %s%n", v.path("running_copy").asText(), copy.path("inbound_injected").asLong(),
                        copy.path("inbound_stale").asLong(), copy.path("inbound_dropped").asLong(),
                        copy.path("digests_sent").asLong(), copy.path("frames_channel").asText());
                }
                if (v.has("replication"))
                {
                    out().println("  replication: " + v.path("replication").asText());
                }
                if (v.has("arbiter"))
                {
                    out().println("  arbiter: " + v.path("arbiter").asText() + " (fencing token " +
                        v.path("fencing_token").asLong() + ")");
                }
                if (!v.path("last_error").asText().isEmpty())
                {
                    final String at = v.path("last_error_at").asText();
                    out().println("  last error" + (at.isEmpty() ? "" : " (" + ago(at) + (v.path("last_error_old").asBoolean()
                        ? ", protected again since" : "") + ")") + ": " + v.path("last_error").asText());
                }
                if (!v.path("next_step").asText().isEmpty())
                {
                    out().println("  next: " + v.path("next_step").asText());
                }
            }
        }
    }

    /** How long ago ISO time {@code at} was: "12 s ago", "5 min ago", "3 h ago". */
    static String ago(final String at)
    {
        try
        {
            final long s = java.time.Duration.between(java.time.Instant.parse(at), java.time.Instant.now()).toSeconds();
            return s < 120 ? s + " s ago" : s < 7200 ? s / 60 + " min ago" : s / 3600 + " h ago";
        }
        catch (final java.time.format.DateTimeParseException ex)
        {
            return at;
        }
    }

    /** {@code -o} values, any case; anything else is a usage error naming the choices. */
    static final class OutputConverter implements CommandLine.ITypeConverter<Output>
    {
        @Override
        public Output convert(final String value)
        {
            try
            {
                return Output.valueOf(value.toUpperCase(Locale.ROOT));
            }
            catch (final IllegalArgumentException ex)
            {
                throw new CommandLine.TypeConversionException("'" + value + "' is not one of table, wide, json, yaml");
            }
        }
    }

    @Command(name = "buffers", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Per VM and NIC: frames and bytes held now, per epoch, oldest age, released, dropped.")
    static final class Buffers extends Sub
    {
        @Parameters(arity = "0..1", paramLabel = "VM", description = "only this VM")
        String vm;

        @Option(names = {"-o", "--output"}, description = "table, wide, json or yaml (default table)",
            defaultValue = "table", converter = OutputConverter.class)
        Output output;

        @Option(names = {"-w", "--watch"}, description = "refresh every second until interrupted")
        boolean watch;

        @Override
        int run()
        {
            final String req = vm == null ? "{\"command\":\"buffers\"}"
                : "{\"command\":\"buffers\",\"vm\":" + JSON.valueToTree(vm) + "}";
            return repeat(watch, () ->
            {
                final JsonNode r = parent.call(req);
                if (output == Output.JSON || output == Output.YAML)
                {
                    print(output, r.path("vms"));
                }
                else
                {
                    table(r, output == Output.WIDE);
                }
            });
        }

        private void table(final JsonNode r, final boolean wide)
        {
            out().printf(Locale.ROOT, "%-12s %-8s %-12s %8s %10s %-24s %9s %10s %9s" + (wide ? " %9s %11s %10s" : "") +
                " %s%n", "VM", "NIC", "MODE", "HELD", "HELD-B", "EPOCHS(id:frames)", "OLDEST", "RELEASED", "INBOUND",
                "PASSED", "BACKPRESSURE", "EARLY-CKPT", "DROPPED");
            for (final JsonNode v : r.path("vms"))
            {
                for (final JsonNode n : v.path("nics"))
                {
                    final StringBuilder epochs = new StringBuilder();
                    for (final JsonNode e : n.path("epochs"))
                    {
                        epochs.append(e.path("epoch").asLong() < 0 ? "open" : e.path("epoch").asText()).append(':')
                            .append(e.path("frames").asLong()).append(' ');
                    }
                    final String dropped = String.format(Locale.ROOT,
                        "limit-frames=%d limit-bytes=%d oversize=%d fenced=%d write-error=%d agent-restart=%d",
                        n.path("dropped_limit_frames").asLong(), n.path("dropped_limit_bytes").asLong(),
                        n.path("dropped_oversize").asLong(), n.path("dropped_fenced").asLong(),
                        n.path("dropped_write_error").asLong(), n.path("dropped_agent_restart").asLong());
                    final String head = String.format(Locale.ROOT, "%-12s %-8s %-12s %8d %10d %-24s %7dms %10d %9d",
                        v.path("vm").asText(), n.path("nic").asText(), n.path("mode").asText(), n.path("held_frames").asLong(),
                        n.path("held_bytes").asLong(), epochs.toString().trim(), n.path("oldest_held_age_ns").asLong() / 1_000_000,
                        n.path("released_frames").asLong(), n.path("inbound_frames").asLong());
                    out().println(head + (wide ? String.format(Locale.ROOT, " %9d %11d %10d", n.path("passed_frames").asLong(),
                        n.path("backpressure_stalls").asLong(), n.path("early_checkpoint_requests").asLong()) : "") + " " + dropped);
                }
                if (v.path("nics").isEmpty())
                {
                    out().printf("%-12s (no output buffers here: this host is the secondary)%n", v.path("vm").asText());
                }
            }
        }
    }

    @Command(name = "events", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class,
        description = "What changed, with the time colod saw it: each VM's role, protection state, failovers and " +
            "errors (kept in memory since colod started, the last 2000).")
    static final class Events extends Sub
    {
        @Parameters(arity = "0..1", paramLabel = "VM", description = "only this VM")
        String vm;

        @Option(names = "--since", paramLabel = "WHEN", description = "a duration back from now (30s, 10m, 2h, 1d) or " +
            "an ISO time (2026-12-03T10:15:00Z); default: everything kept")
        String since;

        @Option(names = {"-o", "--output"}, description = "table, wide, json or yaml (default table)",
            defaultValue = "table", converter = OutputConverter.class)
        Output output;

        @Option(names = {"-w", "--watch"}, description = "print new events every second until interrupted")
        boolean watch;

        @Override
        int run()
        {
            final long[] after = {since == null ? -1 : sinceMillis(since)};
            final java.util.Set<String> printed = new java.util.HashSet<>();
            final boolean table = output != Output.JSON && output != Output.YAML;
            if (table)
            {
                out().printf("%-24s %-12s %s%n", "TIME", "VM", "EVENT");
            }
            // --watch prints what is new each second (no screen clearing: events only add up)
            return repeat(watch, false, () ->
            {
                final JsonNode r = parent.call("{\"command\":\"events\",\"since_ms\":" + after[0] +
                    (vm == null ? "" : ",\"vm\":" + JSON.valueToTree(vm)) + "}");
                if (!table)
                {
                    print(output, r.path("events"));
                }
                for (final JsonNode e : table ? r.path("events") : JSON.createArrayNode())
                {
                    if (printed.add(e.toString()))
                    {
                        out().printf("%-24s %-12s %s%n", e.path("time").asText(), e.path("vm").asText(),
                            e.path("event").asText());
                        after[0] = Math.max(after[0], java.time.Instant.parse(e.path("time").asText()).toEpochMilli());
                    }
                }
            });
        }

        /** {@code 30s}, {@code 10m}, {@code 2h}, {@code 1d} back from now, or an ISO-8601 instant; else a usage error. */
        static long sinceMillis(final String when)
        {
            final java.util.regex.Matcher m = java.util.regex.Pattern.compile("(\\d+)([smhd])").matcher(when.trim());
            if (m.matches())
            {
                final long n = Long.parseLong(m.group(1));
                final long unit = switch (m.group(2))
                {
                    case "s" -> 1000L;
                    case "m" -> 60_000L;
                    case "h" -> 3_600_000L;
                    default -> 86_400_000L;
                };
                return System.currentTimeMillis() - n * unit;
            }
            try
            {
                return java.time.Instant.parse(when.trim()).toEpochMilli();
            }
            catch (final java.time.format.DateTimeParseException ex)
            {
                throw new ExitException(2, "--since " + when + ": give a duration (30s, 10m, 2h, 1d) or an ISO time " +
                    "such as 2026-12-03T10:15:00Z");
            }
        }
    }

    @Command(name = "checkpoint", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Take a checkpoint of VM now (on its primary).")
    static final class Checkpoint extends VmCommand
    {
        @Override
        boolean done(final JsonNode before, final JsonNode now)
        {
            return now.path("checkpoints").asLong() > before.path("checkpoints").asLong();
        }
    }

    @Command(name = "failover", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "On the secondary: resume VM here from the last committed checkpoint. "
        + "On the primary: stop protecting VM (it keeps running here).")
    static final class Failover extends VmCommand
    {
        @Option(names = "--dry-run", description = "only check: say what a failover would do now, or why it would be " +
            "refused (exit 1), fencing nothing")
        boolean dryRun;

        @Option(names = "--force", description = "resume even a standby that is known to be older than what the primary " +
            "serves (no arbiter: the primary ended the session and served on): only once the VM is stopped there")
        boolean force;

        @Override
        String extra()
        {
            return force ? ",\"force\":true" : "";
        }

        @Override
        int run()
        {
            if (!dryRun)
            {
                return super.run();
            }
            out().println(parent.call("{\"command\":\"failover\",\"dry-run\":true,\"vm\":" + JSON.valueToTree(vm) + "}")
                .path("message").asText());
            return 0;
        }

        @Override
        boolean done(final JsonNode before, final JsonNode now)
        {
            // on the secondary: the VM runs here; on the primary: protection stopped
            return "secondary".equals(before.path("role").asText()) ? "failed-over".equals(now.path("state").asText()) ||
                "primary".equals(now.path("role").asText()) : !"protected".equals(now.path("state").asText());
        }
    }

    @Command(name = "reprotect", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "After a failover with reprotect: manual, protect VM again (this host "
        + "is its primary now; the other host's colod must be running).")
    static final class Reprotect extends VmCommand
    {
        @Override
        boolean done(final JsonNode before, final JsonNode now)
        {
            return "protected".equals(now.path("state").asText());
        }
    }

    @Command(name = "standby", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "On a fenced host (the other host took VM over): stop "
        + "the fenced copy and stand by for VM here, as a restart of colod would (roles follow the VM: listen set).")
    static final class Standby extends VmCommand
    {
        @Override
        boolean done(final JsonNode before, final JsonNode now)
        {
            // standing by: waiting for the primary (connecting) or protected already
            return "secondary".equals(now.path("role").asText()) && ("connecting".equals(now.path("state").asText()) ||
                "protected".equals(now.path("state").asText()));
        }
    }

    @Command(name = "maintenance", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "This host's maintenance mode: "
        + "on: no failover starts here on its own (a lost primary is not taken over; coloctl failover still works), kept "
        + "across restarts and reboots; off: colod decides again; without an argument: whether it is on.")
    static final class MaintenanceCmd extends Sub
    {
        @Parameters(paramLabel = "on|off", arity = "0..1", description = "on or off (none: show)")
        String onOff;

        @Option(names = "--reason", paramLabel = "TEXT", description = "why (shown in status, events and the log)")
        String reason;

        @Override
        int run()
        {
            final String req;
            if (onOff == null)
            {
                req = "{\"command\":\"maintenance\"}";
            }
            else if ("on".equals(onOff) || "off".equals(onOff))
            {
                req = "{\"command\":\"maintenance\",\"on\":" + "on".equals(onOff) + ",\"reason\":" +
                    JSON.valueToTree(reason == null ? "" : reason) + "}";
            }
            else
            {
                throw new ExitException(2, "maintenance: give on or off (or nothing to show it), not '" + onOff + "'");
            }
            out().println(parent.call(req).path("message").asText());
            return 0;
        }
    }

    @Command(name = "config", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Configuration tools.", subcommands = Config.Check.class)
    static final class Config
    {
        @Command(name = "check", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Validate a colod.yaml without starting anything; with --host, also " +
            "check that this host has what it needs (commands, files, namespaces, bridges, backends, directories, etcd).")
        static final class Check implements Callable<Integer>
        {
            @Parameters(paramLabel = "FILE")
            Path file;

            @Option(names = "--host", description = "Also check this host against the file (exit 5 when it lacks something).")
            boolean host;

            @CommandLine.Spec
            CommandLine.Model.CommandSpec spec;

            @Override
            public Integer call()
            {
                try
                {
                    final ColodConfig c = ConfigLoader.load(file);
                    final int n = c.vms.size();
                    if (host)
                    {
                        final List<String> problems = HostCheck.problems(c);
                        if (!problems.isEmpty())
                        {
                            problems.forEach(line -> spec.commandLine().getErr().println(file + ": this host: " + line));
                            return HOST_LACKS;
                        }
                    }
                    spec.commandLine().getOut().println(file + ": OK (" + n + " vm" + (n == 1 ? "" : "s") +
                        (host ? "; this host has what it needs" : "") + ")");
                    return 0;
                }
                catch (final ConfigException ex)
                {
                    spec.commandLine().getErr().println(ex.getMessage());
                    return BAD_CONFIG;
                }
            }
        }
    }

    @Command(name = "certs", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Make a lab CA and host certificates for mutual TLS (PEM): DIR/ca.pem, " +
        "DIR/ca.key and DIR/NAME.pem, DIR/NAME.key per host. NAME is what the peer configures (its replication address " +
        "or DNS name). For production use your own CA.")
    static final class Certs implements Callable<Integer>
    {
        @Option(names = "--dir", required = true, description = "where to write the files")
        Path dir;

        @Option(names = "--days", defaultValue = "365", description = "validity of the host certificates (default 365)")
        int days;

        @Option(names = "--ca-days", defaultValue = "3650", description = "validity of a new CA (default 3650; at " +
            "least --days: a CA outlives its hosts)")
        int caDays;

        @Option(names = "--ca-name", defaultValue = "colod lab CA", description = "a new CA's common name")
        String caName;

        @Parameters(arity = "1..*", paramLabel = "NAME", description = "host names or addresses, one certificate each")
        List<String> names;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        /**
         * A new CA and host certificates in --dir; with a CA there already (ca.pem and ca.key, e.g. the operator's
         * CA copied there, or the one an earlier run made), it issues the host certificates from that CA, never
         * touching it, and refuses to overwrite a host's existing certificate.
         */
        @Override
        public Integer call() throws Exception
        {
            final PrintWriter err = spec.commandLine().getErr();
            if (days <= 0 || caDays <= 0)
            {
                err.println("--days and --ca-days must be positive, were " + days + " and " + caDays);
                return 2;
            }
            final dev.colod.agent.tls.Certs.Issued ca;
            if (Files.exists(dir.resolve("ca.pem")))
            {
                try
                {
                    ca = dev.colod.agent.tls.Certs.readAuthority(dir, "ca");
                }
                catch (final java.io.IOException | java.security.GeneralSecurityException ex)
                {
                    err.println(ex.getMessage());
                    return REFUSED;
                }
                spec.commandLine().getOut().println("issuing from the existing CA " + dir.resolve("ca.pem") + " (" +
                    ca.cert().getSubjectX500Principal().getName() + ", valid until " + ca.cert().getNotAfter().toInstant() + ")");
            }
            else
            {
                if (caDays < days)
                {
                    err.println("--ca-days " + caDays + " is shorter than --days " + days + ": a CA must outlive the " +
                        "certificates it signs");
                    return 2;
                }
                ca = dev.colod.agent.tls.Certs.authority(caName, Duration.ofDays(caDays));
                ca.write(dir, "ca");
            }
            final java.time.Instant caEnd = ca.cert().getNotAfter().toInstant();
            for (final String n : names)
            {
                if (Files.exists(dir.resolve(n + ".pem")))
                {
                    err.println(dir.resolve(n + ".pem") + " exists: not overwriting it (remove it to issue a new one)");
                    return REFUSED;
                }
                final java.time.Instant now = java.time.Instant.now();
                java.time.Instant end = now.plus(Duration.ofDays(days));
                if (end.isAfter(caEnd))
                {
                    err.println("note: " + n + "'s certificate ends with its CA, on " + caEnd);
                    end = caEnd;
                }
                dev.colod.agent.tls.Certs.host(ca, n, now.minusSeconds(60), end).write(dir, n);
                spec.commandLine().getOut().println("wrote " + dir.resolve(n + ".pem") + " and " + dir.resolve(n + ".key"));
            }
            spec.commandLine().getOut().println("CA: " + dir.resolve("ca.pem") + " (its key " + dir.resolve("ca.key") +
                " signs more hosts; keep it off the hosts)");
            return 0;
        }
    }

    @Command(name = "completion", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Print a bash/zsh completion script: source <(coloctl completion)")
    static final class Completion implements Callable<Integer>
    {
        /**
         * VM names for the commands that take one: asked from colod (coloctl status -o json) when the word being
         * completed is not an option; everything else goes to picocli's completion.
         */
        static final String VM_NAMES = String.join("\n", "",
            "# VM names, asked from the running colod, for the commands that take a VM",
            "function _coloctl_with_vms() {",
            "  local cur=${COMP_WORDS[COMP_CWORD]} i sub= sock=()",
            "  for ((i = 1; i < COMP_CWORD; i++)); do",
            "    case ${COMP_WORDS[i]} in",
            "      --socket) sock=(--socket \"${COMP_WORDS[i+1]}\"); ((i++)) ;;",
            "      --socket=*) sock=(\"${COMP_WORDS[i]}\") ;;",
            "      -*) ;;",
            "      *) sub=${COMP_WORDS[i]}; break ;;",
            "    esac",
            "  done",
            "  case $sub in",
            "    buffers|events|checkpoint|failover|reprotect|standby)",
            "      if [[ $cur != -* ]]; then",
            "        local vms",
            "        vms=$(coloctl \"${sock[@]}\" status -o json 2>/dev/null | sed -n 's/^ *\"vm\" *: *\"\\([^\"]*\\)\".*/\\1/p')",
            "        COMPREPLY=( $(compgen -W \"$vms\" -- \"$cur\") )",
            "        [ ${#COMPREPLY[@]} -gt 0 ] && return 0",
            "      fi ;;",
            "  esac",
            "  _complete_coloctl",
            "}",
            "complete -F _coloctl_with_vms -o default coloctl",
            "");

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call()
        {
            spec.commandLine().getOut().print(AutoComplete.bash("coloctl", spec.parent().commandLine()) + VM_NAMES);
            spec.commandLine().getOut().flush();
            return 0;
        }
    }
}
