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
    subcommands = {Coloctl.Status.class, Coloctl.Buffers.class, Coloctl.Checkpoint.class, Coloctl.Failover.class,
        Coloctl.Reprotect.class, Coloctl.Config.class, Coloctl.Certs.class, Coloctl.Completion.class})
public final class Coloctl
{
    public static final int REFUSED = 1;
    public static final int UNREACHABLE = 3;
    public static final int BAD_CONFIG = 4;
    /** {@code config check --host}: the file is valid, but this host lacks what it needs. */
    public static final int HOST_LACKS = 5;
    /** {@code checkpoint}, {@code failover}, {@code reprotect} with {@code --wait}: accepted, but not done in time. */
    public static final int NOT_DONE = 6;
    private static final ObjectMapper JSON = new ObjectMapper();

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
        System.exit(commandLine().execute(args));
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
            out().println(parent.call("{\"command\":\"" + spec.name() + "\",\"vm\":" + JSON.valueToTree(vm) + "}")
                .path("message").asText());
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
        @Option(names = {"-o", "--output"}, description = "table or json", defaultValue = "table")
        String output;

        @Override
        int run()
        {
            final JsonNode r = parent.call("{\"command\":\"status\"}");
            if ("json".equals(output))
            {
                out().println(r.path("vms").toPrettyString());
                return 0;
            }
            out().printf(Locale.ROOT, "%-12s %-9s %-13s %-22s %10s %8s %9s %9s %-8s%n", "VM", "ROLE", "STATE", "PEER",
                "LAST-CKPT", "CKPT/S", "PAUSE-P50", "PAUSE-P99", "TRACKING");
            for (final JsonNode v : r.path("vms"))
            {
                final long age = v.path("last_checkpoint_age_ms").asLong();
                out().printf(Locale.ROOT, "%-12s %-9s %-13s %-22s %10s %8.1f %7.1fms %7.1fms %-8s%n", v.path("vm").asText(),
                    v.path("role").asText(), v.path("state").asText(), v.path("peer").asText(),
                    age < 0 ? "never" : age + "ms ago", v.path("checkpoints_per_second").asDouble(),
                    v.path("pause_p50_ms").asDouble(), v.path("pause_p99_ms").asDouble(),
                    v.path("write_tracking").asText());
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
                    out().println("  last error: " + v.path("last_error").asText());
                }
            }
            return 0;
        }
    }

    @Command(name = "buffers", mixinStandardHelpOptions = true, versionProvider = Coloctl.Version.class, description = "Per VM and NIC: frames and bytes held now, per epoch, oldest age, released, dropped.")
    static final class Buffers extends Sub
    {
        @Parameters(arity = "0..1", paramLabel = "VM", description = "only this VM")
        String vm;

        @Option(names = {"-o", "--output"}, description = "table or json", defaultValue = "table")
        String output;

        @Option(names = {"-w", "--watch"}, description = "refresh every second until interrupted")
        boolean watch;

        @Override
        int run()
        {
            final String req = vm == null ? "{\"command\":\"buffers\"}"
                : "{\"command\":\"buffers\",\"vm\":" + JSON.valueToTree(vm) + "}";
            do
            {
                final JsonNode r = parent.call(req);
                if (watch)
                {
                    out().print("\033[H\033[2J");
                }
                if ("json".equals(output))
                {
                    out().println(r.path("vms").toPrettyString());
                }
                else
                {
                    table(r);
                }
                out().flush();
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

        private void table(final JsonNode r)
        {
            out().printf(Locale.ROOT, "%-12s %-8s %-12s %8s %10s %-24s %9s %10s %9s %s%n", "VM", "NIC", "MODE", "HELD",
                "HELD-B", "EPOCHS(id:frames)", "OLDEST", "RELEASED", "INBOUND", "DROPPED");
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
                    out().printf(Locale.ROOT, "%-12s %-8s %-12s %8d %10d %-24s %7dms %10d %9d %s%n", v.path("vm").asText(),
                        n.path("nic").asText(), n.path("mode").asText(), n.path("heldFrames").asLong(),
                        n.path("heldBytes").asLong(), epochs.toString().trim(), n.path("oldestHeldAgeNs").asLong() / 1_000_000,
                        n.path("releasedFrames").asLong(), n.path("inboundFrames").asLong(),
                        String.format(Locale.ROOT, "limit-frames=%d limit-bytes=%d oversize=%d fenced=%d write-error=%d agent-restart=%d",
                            n.path("droppedLimitFrames").asLong(), n.path("droppedLimitBytes").asLong(),
                            n.path("droppedOversize").asLong(), n.path("droppedFenced").asLong(),
                            n.path("droppedWriteError").asLong(), n.path("droppedAgentRestart").asLong()));
                }
                if (v.path("nics").isEmpty())
                {
                    out().printf("%-12s (no output buffers here: this host is the secondary)%n", v.path("vm").asText());
                }
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

        @Option(names = "--days", defaultValue = "365", description = "validity of the certificates (default 365)")
        int days;

        @Option(names = "--ca-name", defaultValue = "colod lab CA", description = "the CA's common name")
        String caName;

        @Parameters(arity = "1..*", paramLabel = "NAME", description = "host names or addresses, one certificate each")
        List<String> names;

        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws Exception
        {
            final Duration validity = Duration.ofDays(days);
            final dev.colod.agent.tls.Certs.Issued ca;
            if (Files.exists(dir.resolve("ca.pem")))
            {
                spec.commandLine().getErr().println(dir.resolve("ca.pem") + " exists: not overwriting a CA");
                return REFUSED;
            }
            ca = dev.colod.agent.tls.Certs.authority(caName, validity);
            ca.write(dir, "ca");
            for (final String n : names)
            {
                dev.colod.agent.tls.Certs.host(ca, n, validity).write(dir, n);
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
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call()
        {
            spec.commandLine().getOut().print(AutoComplete.bash("coloctl", spec.parent().commandLine()));
            return 0;
        }
    }
}
