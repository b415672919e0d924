package dev.colod.agent.control;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.colod.buffer.NicStats;
import dev.colod.core.ColoConfig;
import dev.colod.core.ProtectionState;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** coloctl against a running control socket with real (in-memory VM) engines behind it. */
class ColoctlTest
{
    @TempDir
    Path dir;
    private EnginePair pair;
    private ControlServer server;
    private Path socket;
    private final org.HdrHistogram.Histogram stop = new org.HdrHistogram.Histogram(3);

    record Run(int code, String out, String err)
    {
    }

    @BeforeEach
    void start() throws Exception
    {
        pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT).checkpointDelayMs(50), 4096,
            ProtocolTap.NONE, ProtocolTap.NONE);
        pair.awaitCheckpoints(3);
        stop.recordValue(900);
        // one 60-byte frame held in sealed epoch 7, as a NIC's ledger reports it
        final NicStats held = NicStats.of("vnet0", "hold").held(1, 60, 1_000_000)
            .epochs(List.of(new NicStats.EpochStats(7, 1, 60), new NicStats.EpochStats(-1, 0, 0))).build();
        socket = dir.resolve("colod.sock");
        server = new ControlServer(socket, List.of(
            VmHandle.primary("web1", pair.primary, () -> List.of(held),
                () -> Map.of("write_tracking", "kernel", "write_audit_misses", 0L, "ram_page_kib", 2048L),
                () -> Map.of("stop", stop)),
            VmHandle.secondary("web2", pair.secondary).failoverCheck(() -> standbyProblem)));
    }

    /** What the secondary's failover check finds (null: it could resume). */
    private volatile String standbyProblem;

    @AfterEach
    void stop()
    {
        server.close();
        pair.close();
    }

    private Run coloctl(final String... args)
    {
        return coloctl(socket, args);
    }

    /** coloctl with {@code args} against the control socket at {@code socket}, in this JVM. */
    static Run coloctl(final Path socket, final String... args)
    {
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final CommandLine cl = Coloctl.commandLine();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        final String[] all = new String[args.length + 2];
        all[0] = "--socket";
        all[1] = socket.toString();
        System.arraycopy(args, 0, all, 2, args.length);
        final int code = cl.execute(all);
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void controlSocketIsRootOnly() throws Exception
    {
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(socket))).isEqualTo("rw-------");
    }

    @Test
    void statusShowsEachVmAsTableAndJson() throws Exception
    {
        final Run table = coloctl("status");
        assertThat(table.code()).isZero();
        assertThat(table.out()).contains("VM", "STATE", "web1", "primary", "protected", "web2", "secondary", "TRACKING",
            "kernel/2m"); // web1's RAM on 2 MiB pages
        final Run json = coloctl("status", "-o", "json");
        assertThat(json.code()).isZero();
        final JsonNode vms = new ObjectMapper().readTree(json.out());
        assertThat(vms).hasSize(2);
        for (final String field : List.of("vm", "role", "state", "peer", "last_checkpoint_age_ms", "checkpoints",
            "checkpoints_per_second", "pause_p50_ms", "pause_p99_ms", "write_tracking", "last_error"))
        {
            assertThat(vms.get(0).has(field)).as(field).isTrue();
        }
        assertThat(vms.get(0).path("checkpoints").asLong()).isGreaterThanOrEqualTo(3);
        assertThat(vms.get(0).path("pause_steps").path("stop").path("p50_ms").asDouble()).isEqualTo(0.9);
        assertThat(table.out()).contains("pause steps p50/p99 ms: stop 0.9/0.9");
    }

    @Test
    void statusIsATableAWideTableYamlOrJsonAndWatchesWithoutScreenCodesOffATerminal() throws Exception
    {
        final Run wide = coloctl("status", "-o", "wide");
        assertThat(wide.code()).isZero();
        assertThat(wide.out()).contains("LAST-ID", "FAILOVERS", "web1");
        final Run yaml = coloctl("status", "-o", "YAML");
        assertThat(yaml.out()).contains("- vm: \"web1\"").contains("role: \"primary\"");
        assertThat(new ObjectMapper(new com.fasterxml.jackson.dataformat.yaml.YAMLFactory()).readTree(yaml.out()).get(1)
            .path("vm").asText()).isEqualTo("web2");
        final Thread t = new Thread(() -> coloctl("status", "--watch"));
        t.start();
        t.join(1500);
        t.interrupt();
        t.join(5000);
        assertThat(t.isAlive()).as("--watch ends when interrupted").isFalse();
    }

    @Test
    void buffersShowHeldFramesPerEpochAsTableAndJson() throws Exception
    {
        final Run table = coloctl("buffers", "web1");
        assertThat(table.code()).isZero();
        assertThat(table.out()).contains("vnet0", "7:1", "limit-frames=0");
        final JsonNode j = new ObjectMapper().readTree(coloctl("buffers", "-o", "json").out());
        final JsonNode nic = j.get(0).path("nics").get(0);
        assertThat(nic.path("nic").asText()).isEqualTo("vnet0");
        assertThat(nic.path("held_frames").asLong()).as("snake_case, as status").isEqualTo(1);
        assertThat(nic.path("epochs").get(0).path("epoch").asLong()).isEqualTo(7);
        for (final String f : List.of("held_bytes", "oldest_held_age_ns", "released_frames", "dropped_limit_frames",
            "dropped_limit_bytes", "dropped_fenced", "dropped_agent_restart", "inbound_frames", "passed_frames"))
        {
            assertThat(nic.has(f)).as(f).isTrue();
        }
        final Run yaml = coloctl("buffers", "web1", "-o", "yaml");
        assertThat(yaml.code()).isZero();
        assertThat(yaml.out()).contains("held_frames: 1").contains("- vm: \"web1\"");
        final Run wide = coloctl("buffers", "web1", "-o", "wide");
        assertThat(wide.out()).contains("PASSED", "BACKPRESSURE", "EARLY-CKPT");
        final Run bad = coloctl("buffers", "-o", "xml");
        assertThat(bad.code()).isEqualTo(2);
        assertThat(bad.err()).contains("'xml' is not one of table, wide, json, yaml");
    }

    @Test
    void checkpointAndFailoverCommandsReachTheEngines()
    {
        final long before = pair.primary.counters().checkpointsRequestedEarly.get();
        final Run ck = coloctl("checkpoint", "web1");
        assertThat(ck.code()).isZero();
        assertThat(ck.out()).contains("checkpoint requested for vm web1");
        assertThat(pair.primary.counters().checkpointsRequestedEarly.get()).isEqualTo(before + 1);

        final Run fo = coloctl("failover", "web2");
        assertThat(fo.code()).isZero();
        await().until(() -> pair.secondary.state() == ProtectionState.FAILED_OVER);
    }

    @Test
    void aFailoverTheStandbyCouldNotResumeIsRefusedBeforeAnythingIsFencedAndDryRunSaysSo()
    {
        standbyProblem = "the standby image holds no checkpoint yet";
        final Run dry = coloctl("failover", "--dry-run", "web2");
        assertThat(dry.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(dry.err()).contains("vm web2: a failover would be refused: the standby image holds no checkpoint yet");
        final Run fo = coloctl("failover", "web2");
        assertThat(fo.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(fo.err()).contains("failover refused, nothing was fenced: the standby image holds no checkpoint yet");
        assertThat(pair.primary.state()).as("the primary was not told to fence").isEqualTo(ProtectionState.PROTECTED);
        assertThat(pair.secondary.state()).isNotEqualTo(ProtectionState.FAILED_OVER);

        standbyProblem = null;
        final Run ok = coloctl("failover", "--dry-run", "web2");
        assertThat(ok.code()).as(ok.err()).isZero();
        assertThat(ok.out()).contains("vm web2: a failover would resume it here from checkpoint ");
        assertThat(pair.secondary.state()).as("a dry run does nothing").isNotEqualTo(ProtectionState.FAILED_OVER);
    }

    /** No arbiter: a standby the primary served past is not resumed by a plain failover (a second, older copy). */
    @Test
    void anOutdatedStandbyIsResumedOnlyWithForce() throws Exception
    {
        pair.primary.close(); // its colod stops (BYE stop); without an arbiter its VM serves on unprotected
        await().until(() -> pair.secondary.outdated() != null);
        final Run dry = coloctl("failover", "--dry-run", "web2");
        assertThat(dry.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(dry.err()).contains("a failover would be refused: the standby is outdated: the primary ")
            .contains("serves on unprotected since its session with this host ended after checkpoint ");
        final Run fo = coloctl("failover", "web2");
        assertThat(fo.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(fo.err()).contains("failover refused, nothing was fenced: the standby is outdated")
            .contains("coloctl failover --force");
        assertThat(pair.secondary.state()).isNotEqualTo(ProtectionState.FAILED_OVER);
        final JsonNode s = new ObjectMapper().readTree(coloctl("status", "-o", "json").out()).get(1);
        assertThat(s.path("standby_outdated").asText()).contains("its colod is stopping");

        final Run forced = coloctl("failover", "--force", "web2");
        assertThat(forced.code()).as(forced.err()).isZero();
        await().until(() -> pair.secondary.state() == ProtectionState.FAILED_OVER);
    }

    @Test
    void eventsSayWhatChangedAndWhenSinceAGivenTime() throws Exception
    {
        final Run first = coloctl("events");
        assertThat(first.code()).isZero();
        assertThat(first.out()).contains("TIME", "web1", "seen: primary, protected", "web2", "seen: secondary");
        final Run fo = coloctl("failover", "web2");
        assertThat(fo.code()).as(fo.err()).isZero();
        await().atMost(java.time.Duration.ofSeconds(30)).until(() -> coloctl("events", "web2", "--since", "1h").out()
            .contains("-> failed-over"));
        final JsonNode j = new ObjectMapper().readTree(coloctl("events", "web2", "-o", "json").out());
        assertThat(j.get(0).path("vm").asText()).isEqualTo("web2");
        assertThat(java.time.Instant.parse(j.get(0).path("time").asText())).isBefore(java.time.Instant.now().plusSeconds(1));
        assertThat(coloctl("events", "--since", java.time.Instant.now().plusSeconds(60).toString()).out())
            .as("nothing after a future time").doesNotContain("web1");
        final Run bad = coloctl("events", "--since", "yesterday");
        assertThat(bad.code()).isEqualTo(2);
        assertThat(bad.err()).contains("--since yesterday: give a duration (30s, 10m, 2h, 1d) or an ISO time");
    }

    @Test
    void waitReportsTheResultAndExitsSixWhenItDoesNotHappen()
    {
        final Run ck = coloctl("checkpoint", "--wait", "web1");
        assertThat(ck.code()).as(ck.err()).isZero();
        assertThat(ck.out()).contains("checkpoint done: vm web1 is primary, protected");

        // on the primary, failover stops protection
        final Run stopPrimary = coloctl("failover", "--wait", "--timeout", "30", "web1");
        assertThat(stopPrimary.code()).as(stopPrimary.err()).isZero();
        // accepted, but an unprotected primary takes no checkpoint: the script learns it
        final Run none = coloctl("checkpoint", "web1", "--wait", "--timeout=1");
        assertThat(none.code()).as(none.out() + none.err()).isEqualTo(Coloctl.NOT_DONE);
        assertThat(none.err()).contains("checkpoint not done within 1 s: vm web1 is primary, ");
        final Run status = coloctl("status");
        assertThat(status.out()).as("an unprotected primary says what to look at next")
            .contains("next: the VM runs here without a standby: is colod running on ");
        assertThat(VmHandle.nextStep("web1", "primary", "fenced", "198.19.0.2:7600")).contains("coloctl standby web1")
            .contains("restart colod here").contains("becomes the secondary of 198.19.0.2:7600");
        assertThat(VmHandle.nextStep("web1", "primary", "protected", "x")).isEmpty();
    }

    @Test
    void errorsHaveExitCodesScriptsCanRelyOn()
    {
        final Run unknown = coloctl("checkpoint", "nope");
        assertThat(unknown.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(unknown.err()).contains("no vm 'nope' here (known:").doesNotContain("Exception");
        final Run secondaryCheckpoint = coloctl("checkpoint", "web2");
        assertThat(secondaryCheckpoint.code()).isEqualTo(Coloctl.REFUSED);
        assertThat(secondaryCheckpoint.err()).contains("checkpoints are taken on the primary");

        final StringWriter err = new StringWriter();
        final CommandLine cl = Coloctl.commandLine();
        cl.setErr(new PrintWriter(err));
        assertThat(cl.execute("--socket", dir.resolve("missing.sock").toString(), "status")).isEqualTo(Coloctl.UNREACHABLE);
        assertThat(err.toString()).contains("cannot reach colod at").contains("is colod running?");
        assertThat(Coloctl.commandLine().execute("frobnicate")).isEqualTo(2);
    }

    @Test
    void configCheckReportsLineAndColumn() throws Exception
    {
        final Run ok = coloctl("config", "check", "../deploy/colod.example.yaml");
        assertThat(ok.code()).as(ok.err()).isZero();
        assertThat(ok.out()).contains("OK (1 vm)");
        final Path bad = dir.resolve("bad.yaml");
        Files.writeString(bad, "vms:\n  - name: x\n    rol: primary\n");
        final Run r = coloctl("config", "check", bad.toString());
        assertThat(r.code()).isEqualTo(Coloctl.BAD_CONFIG);
        assertThat(r.err()).contains("bad.yaml:3:5: unknown key 'rol'");
    }

    @Test
    void everySubcommandAnswersHelpAndVersion() throws Exception
    {
        for (final String sub : new String[]{"status", "buffers", "checkpoint", "failover", "reprotect", "standby",
            "maintenance", "events", "config", "certs", "completion"})
        {
            final Run help = coloctl(sub, "--help");
            assertThat(help.code()).as(sub + " --help: " + help.err()).isZero();
            assertThat(help.out()).contains("Usage: coloctl " + sub);
        }
        assertThat(coloctl("config", "check", "--help").out()).contains("--host");
        assertThat(coloctl("--version").out()).startsWith("coloctl ");
    }

    @Test
    void configCheckHostNamesWhatThisHostLacksAndExitsFive() throws Exception
    {
        final Path kernel = Files.writeString(dir.resolve("vmlinuz"), "k");
        final Path yaml = dir.resolve("host.yaml");
        Files.writeString(yaml, String.join("\n", "runtime-dir: " + dir.resolve("run"), "ram-dir: " + dir.resolve("ram"),
            "state-dir: " + dir.resolve("state"), "vms:", "  - name: web1", "    role: primary", "    peer: 198.19.0.2:7600",
            "    memory-mib: 128", "    accel: tcg", "    kernel: " + kernel, "    nics:", "      - tap: vt0",
            "        mac: 52:54:00:12:34:56", "        bridge: br-colot-none", "arbiter: none", "insecure: true", ""));
        assertThat(coloctl("config", "check", yaml.toString()).code()).as("the file itself is valid").isZero();
        final Run r = coloctl("config", "check", "--host", yaml.toString());
        assertThat(r.code()).as(r.err()).isEqualTo(Coloctl.HOST_LACKS);
        assertThat(r.err()).contains(yaml + ": this host: vms[0].nics[0].bridge: br-colot-none does not exist");
    }

    @Test
    void metricsEndpointServesPrometheusTextThatPromtoolAcceptsAndAnswersNothingElse() throws Exception
    {
        final dev.colod.agent.tls.Certs.Issued ca = dev.colod.agent.tls.Certs.authority("m", java.time.Duration.ofDays(9));
        ca.write(dir, "ca");
        try (MetricsServer m = new MetricsServer(new java.net.InetSocketAddress("127.0.0.1", 0), List.of(
            VmHandle.primary("web1", pair.primary, () -> List.of(dev.colod.buffer.NicStats.of("vnet0", "hold").build()),
            () -> Map.of("write_tracking", "kernel")), VmHandle.secondary("web2", pair.secondary)),
            List.of(dir.resolve("ca.pem"))))
        {
            final String base = "http://127.0.0.1:" + m.port();
            final java.net.HttpURLConnection c = (java.net.HttpURLConnection)new java.net.URL(base + "/metrics").openConnection();
            assertThat(c.getResponseCode()).isEqualTo(200);
            final String body = new String(c.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            assertThat(body).contains("# TYPE colod_checkpoints_total counter")
                .contains("colod_checkpoints_total{vm=\"web1\"}")
                .contains("colod_vm_role{vm=\"web1\",role=\"primary\"} 1")
                .contains("colod_vm_role{vm=\"web2\",role=\"secondary\"} 1")
                .contains("# TYPE colod_pause_seconds histogram")
                .contains("colod_pause_seconds_bucket{vm=\"web1\",le=\"+Inf\"}")
                .contains("colod_pause_seconds_count{vm=\"web1\"}")
                .contains("colod_held_bytes{vm=\"web1\",nic=\"vnet0\"} 0")
                .contains("colod_protected{vm=\"web2\"} 1")
                .contains("colod_build_info{version=")
                .contains("colod_certificate_expiry_timestamp_seconds{file=\"" + dir.resolve("ca.pem") + "\"} " +
                    ca.cert().getNotAfter().getTime() / 1000);
            assertThat(body).as("no series carries the role but colod_vm_role").doesNotContainPattern(
                "(?m)^colod_(?!vm_role).*role=");
            // each family's samples follow its own HELP and TYPE, never another's
            String family = null;
            for (final String line : body.split("\n"))
            {
                if (line.startsWith("# TYPE "))
                {
                    family = line.split(" ")[2];
                }
                else if (!line.startsWith("#"))
                {
                    assertThat(line).as("a sample under its family").startsWith(family);
                }
            }
            promtoolAccepts(body);

            for (final String[] bad : new String[][]{{"GET", "/metricsfoo", "404"}, {"POST", "/metrics", "405"},
                {"GET", "/healthz", "200"}})
            {
                final java.net.HttpURLConnection b = (java.net.HttpURLConnection)new java.net.URL(base + bad[1]).openConnection();
                b.setRequestMethod(bad[0]);
                assertThat(b.getResponseCode()).as(bad[0] + " " + bad[1]).isEqualTo(Integer.parseInt(bad[2]));
            }
        }
    }

    /** The Prometheus project's own checker (promtool check metrics) finds nothing wrong with {@code body}. */
    private static void promtoolAccepts(final String body) throws Exception
    {
        final Path promtool = Path.of("../build/tools/promtool").toAbsolutePath().normalize();
        dev.colod.buffer.Prerequisites.require("checking /metrics with promtool", Files.isExecutable(promtool) ? null
            : promtool + " (deploy/test.sh unpacks it from Debian's prometheus package)");
        final Process p = new ProcessBuilder(promtool.toString(), "check", "metrics").redirectErrorStream(true).start();
        p.getOutputStream().write(body.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        p.getOutputStream().close();
        final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as("promtool check metrics: " + out).isZero();
        assertThat(out.trim()).as("promtool's lint findings").isEmpty();
    }

    @Test
    void certsIssuesFromAnExistingCaAndTheCaOutlivesItsHosts() throws Exception
    {
        final Path tls = dir.resolve("tls");
        final Run first = coloctl("certs", "--dir", tls.toString(), "--days", "30", "198.19.0.1");
        assertThat(first.code()).as(first.err()).isZero();
        final java.security.cert.CertificateFactory f = java.security.cert.CertificateFactory.getInstance("X.509");
        final java.security.cert.X509Certificate ca;
        final java.security.cert.X509Certificate host1;
        try (java.io.InputStream in = Files.newInputStream(tls.resolve("ca.pem"));
             java.io.InputStream h = Files.newInputStream(tls.resolve("198.19.0.1.pem")))
        {
            ca = (java.security.cert.X509Certificate)f.generateCertificate(in);
            host1 = (java.security.cert.X509Certificate)f.generateCertificate(h);
        }
        assertThat(ca.getNotAfter()).as("the CA outlives its hosts").isAfter(host1.getNotAfter());
        final byte[] caBefore = Files.readAllBytes(tls.resolve("ca.pem"));

        // a replacement standby host, later: issued by the same CA, which stays as it was
        final Run more = coloctl("certs", "--dir", tls.toString(), "198.19.0.3");
        assertThat(more.code()).as(more.err()).isZero();
        assertThat(more.out()).contains("issuing from the existing CA");
        assertThat(Files.readAllBytes(tls.resolve("ca.pem"))).isEqualTo(caBefore);
        final java.security.cert.X509Certificate host3;
        try (java.io.InputStream h = Files.newInputStream(tls.resolve("198.19.0.3.pem")))
        {
            host3 = (java.security.cert.X509Certificate)f.generateCertificate(h);
        }
        host3.verify(ca.getPublicKey()); // signed by that CA

        assertThat(coloctl("certs", "--dir", tls.toString(), "198.19.0.3").err()).contains("exists: not overwriting it");
        final Run negative = coloctl("certs", "--dir", dir.resolve("t2").toString(), "--days", "-5", "h");
        assertThat(negative.code()).isEqualTo(2);
        assertThat(negative.err()).contains("--days and --ca-days must be positive");
        Files.delete(tls.resolve("ca.key"));
        assertThat(coloctl("certs", "--dir", tls.toString(), "198.19.0.4").err()).contains("ca.key does not: a CA cannot sign");
    }

    @Test
    void helpHasExamplesAndCompletionIsGenerated()
    {
        final Run help = coloctl("--help");
        assertThat(help.out()).contains("Examples:", "coloctl buffers web1 --watch", "Exit codes");
        final Run completion = coloctl("completion");
        assertThat(completion.out()).contains("complete -F").contains("buffers");
    }

    @Test
    void completionOffersTheVmNamesColodKnows() throws Exception
    {
        final Path script = dir.resolve("coloctl.bash");
        Files.writeString(script, coloctl("completion").out());
        // bash with the script and a coloctl that answers from this test's colod (in process, through this test)
        final String fakeStatus = coloctl("status", "-o", "json").out().replace("'", "'\\''");
        final Path asked = dir.resolve("asked");
        final String bash = "coloctl() { [ \"$1\" = --socket ] && echo \"socket $2\" >> " + asked + "; printf '%s\\n' '" + fakeStatus +
            "'; }\n. " + script + "\n" +
            "COMP_WORDS=(coloctl failover web2); COMP_CWORD=2; COMP_LINE='coloctl failover web2'; _coloctl_with_vms; " +
            "echo \"A:${COMPREPLY[*]}\"\n" +
            "COMP_WORDS=(coloctl --socket /x buffers ''); COMP_CWORD=4; COMP_LINE='coloctl --socket /x buffers '; " +
            "_coloctl_with_vms; echo \"B:${COMPREPLY[*]}\"\n";
        final Process p = new ProcessBuilder("bash", "-c", bash).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(out).isZero();
        assertThat(out).as(out).contains("A:web2").contains("B:web1 web2");
        assertThat(Files.readString(asked)).as("the --socket given on the line is asked").contains("socket /x");
    }
}
