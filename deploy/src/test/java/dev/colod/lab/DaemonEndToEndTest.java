package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.colod.agent.control.Coloctl;
import dev.colod.lab.TwoHostLab.Client;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Two colod daemons as real processes, each inside its own host namespace with its own colod.yaml, inspected
 * with coloctl over their control sockets; the primary host (colod and QEMU) is killed with SIGKILL and the
 * secondary daemon takes over; then the secondary daemon is stopped with SIGTERM.
 */
class DaemonEndToEndTest
{
    private static final ObjectMapper JSON = new ObjectMapper();

    static Process colod(final String ns, final Path config, final Path log) throws Exception
    {
        final String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        return new ProcessBuilder("ip", "netns", "exec", ns, java, "-cp", System.getProperty("java.class.path"),
            "-Dlogback.configurationFile=" + Path.of("../deploy/demo-logback.xml").toAbsolutePath(),
            "dev.colod.agent.Colod", "--config", config.toString()).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
            .start();
    }

    /** What one coloctl command said: its exit status, standard output and standard error. */
    record Answer(int exit, String out, String err)
    {
    }

    static Answer run(final Path socket, final String... args)
    {
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final CommandLine cl = Coloctl.commandLine();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        final List<String> all = new ArrayList<>(List.of("--socket", socket.toString()));
        all.addAll(List.of(args));
        final int exit = cl.execute(all.toArray(new String[0]));
        return new Answer(exit, out.toString(), err.toString());
    }

    /** A command's JSON answer, or null if it failed or did not answer JSON. */
    static JsonNode coloctl(final Path socket, final String... args)
    {
        final Answer c = run(socket, args);
        if (c.exit() != 0)
        {
            return null;
        }
        try
        {
            return JSON.readTree(c.out());
        }
        catch (final Exception ex)
        {
            return null;
        }
    }

    /** The first VM's status as coloctl shows it, or an empty object if colod does not answer. */
    static JsonNode status(final Path socket)
    {
        final JsonNode s = coloctl(socket, "status", "-o", "json");
        return s == null ? JSON.createObjectNode() : s.get(0);
    }

    /** Ends the colod processes and every QEMU they started (by the pids they recorded), and their RAM files. */
    static void stopAll(final Lab lab, final Process[] colods, final Path... runDirs) throws Exception
    {
        for (final Process proc : colods)
        {
            if (proc != null)
            {
                proc.descendants().forEach(ProcessHandle::destroyForcibly);
                proc.destroyForcibly();
            }
        }
        for (final Path run : runDirs)
        {
            final Path pid = run.resolve("e2e/qemu.pid");
            if (Files.exists(pid))
            {
                ProcessHandle.of(Long.parseLong(Files.readString(pid).trim())).ifPresent(ProcessHandle::destroyForcibly);
            }
        }
        Thread.sleep(300);
        TwoHostLab.deleteTree(lab.ramDir("primary"));
        TwoHostLab.deleteTree(lab.ramDir("secondary"));
    }

    static JsonNode awaitStatus(final Path socket, final Predicate<JsonNode> ok, final String what, final Process p,
        final Path log) throws Exception
    {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
        while (true)
        {
            final JsonNode s = coloctl(socket, "status", "-o", "json");
            if (s != null && ok.test(s.get(0)))
            {
                return s.get(0);
            }
            if (System.nanoTime() - deadline > 0 || (p != null && !p.isAlive()))
            {
                throw new AssertionError("no " + what + " within 90 s (alive " + (p == null || p.isAlive()) + "); status " +
                    s + "; log:\n" + Files.readString(log));
            }
            Thread.sleep(200);
        }
    }

    @Test
    void twoDaemonsProtectTheGuestAndTheSecondaryTakesOverWhenThePrimaryHostDies() throws Exception
    {
        new FailoverEndToEndTest().usable();
        Process primary = null;
        Process secondary = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Path dir = lab.runDir;
            final Path pRun = dir.resolve("p-run");
            final Path sRun = dir.resolve("s-run");
            Files.writeString(dir.resolve("primary.yaml"), lab.yaml("primary", pRun, 200, false, false));
            Files.writeString(dir.resolve("secondary.yaml"), lab.yaml("secondary", sRun, 200, false, false));
            try
            {
                secondary = colod(lab.sec, dir.resolve("secondary.yaml"), dir.resolve("secondary.log"));
                primary = colod(lab.pri, dir.resolve("primary.yaml"), dir.resolve("primary.log"));
                final JsonNode p = awaitStatus(pRun.resolve("colod.sock"),
                    s -> "protected".equals(s.path("state").asText()) && s.path("checkpoints").asLong() >= 3,
                    "protection", primary, dir.resolve("primary.log"));
                assertThat(p.path("role").asText()).isEqualTo("primary");
                assertThat(p.path("peer").asText()).contains("198.19.0.2");
                assertThat(p.path("replication").asText()).startsWith("mutual TLS 1.3, peer 198.19.0.2; channels so far: ")
                    .endsWith(" in sealed chunks, 0 in TLS records");
                assertThat(p.path("tls_sealed_channels").asLong()).as("control and heartbeat at least").isGreaterThanOrEqualTo(2);
                assertThat(p.path("arbiter").asText()).contains("held by this host");
                assertThat(p.path("fencing_token").asLong()).isPositive();

                try (Client client = new Client(lab.cli))
                {
                    while (client.values().size() < 4)
                    {
                        Thread.sleep(50);
                    }
                    final JsonNode buffers = coloctl(pRun.resolve("colod.sock"), "buffers", "e2e", "-o", "json");
                    assertThat(buffers.get(0).path("nics").get(0).path("released_frames").asLong())
                        .as("frames held and released by the daemon's output commit").isPositive();

                    // the primary host dies: its colod and its QEMU, at once
                    final long qemuPid = Long.parseLong(Files.readString(pRun.resolve("e2e/qemu.pid")).trim());
                    final long killedAt = System.nanoTime();
                    primary.destroyForcibly();
                    ProcessHandle.of(qemuPid).ifPresent(ProcessHandle::destroyForcibly);
                    final JsonNode s = awaitStatus(sRun.resolve("colod.sock"),
                        x -> "failed-over".equals(x.path("state").asText()), "failover", secondary,
                        dir.resolve("secondary.log"));
                    assertThat(s.path("failovers").asLong()).isEqualTo(1);
                    final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                    while (client.countSince(killedAt) < 3)
                    {
                        assertThat(System.nanoTime() - deadline).as("client answered after failover").isNegative();
                        Thread.sleep(50);
                    }
                    client.close();
                    FailoverEndToEndTest.assertStrictlyIncreasing(client.values());
                }

                // SIGTERM stops the secondary daemon cleanly; the VM it resumed keeps running (on-stop: leave-running)
                final long failedOverQemu = Long.parseLong(Files.readString(sRun.resolve("e2e/qemu.pid")).trim());
                secondary.destroy();
                assertThat(secondary.waitFor(30, TimeUnit.SECONDS)).as("colod stops on SIGTERM").isTrue();
                assertThat(Files.exists(sRun.resolve("colod.sock"))).as("control socket removed").isFalse();
                assertThat(ProcessHandle.of(failedOverQemu).map(ProcessHandle::isAlive).orElse(false)).isTrue();
                ProcessHandle.of(failedOverQemu).ifPresent(ProcessHandle::destroyForcibly);
            }
            finally
            {
                stopAll(lab, new Process[]{primary, secondary}, pRun, sRun);
            }
        }
    }
}
