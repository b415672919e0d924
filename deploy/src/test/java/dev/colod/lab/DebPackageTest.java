package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.colod.buffer.Prerequisites;
import dev.colod.lab.TwoHostLab.Lab;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The Debian package, built once by {@code deploy/build-deb.sh}, installed by dpkg onto both lab hosts (each its own root:
 * the launchers find their jars next to themselves) and run from there: the package's colod protects the test
 * guest from both hosts and the package's coloctl reports it; the unit names the package's paths and the man pages
 * are in it.
 */
class DebPackageTest
{
    private static final ObjectMapper JSON = new ObjectMapper();

    private static String run(final Path dir, final String... cmd) throws Exception
    {
        final Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(300, TimeUnit.SECONDS)).as(String.join(" ", cmd)).isTrue();
        assertThat(p.exitValue()).as(String.join(" ", cmd) + ": " + out).isZero();
        return out.trim();
    }

    @Test
    void thePackageInstalledOnBothHostsProtectsTheGuest() throws Exception
    {
        new FailoverEndToEndTest().usable();
        Prerequisites.require("building the package", Files.isExecutable(Path.of("/usr/bin/help2man")) &&
            Files.isExecutable(Path.of("/usr/bin/dpkg-deb")) && Files.isExecutable(Path.of("/usr/bin/dpkg")) ? null : "help2man and dpkg-deb (deploy/test.sh installs them)");
        final Path repo = Path.of("..").toAbsolutePath().normalize();
        final String built = run(repo, "env", "SKIP_BUILD=1", "bash", "deploy/build-deb.sh");
        final Path deb = repo.resolve(built.lines().reduce((a, b) -> b).orElseThrow());
        assertThat(deb.getFileName().toString()).matches("colod_[0-9.]+_amd64\\.deb");
        final String contents = run(repo, "dpkg-deb", "-c", deb.toString());
        for (final String f : List.of("./usr/bin/colod", "./usr/bin/coloctl", "./lib/systemd/system/colod.service",
            "./etc/colod/colod.example.yaml", "./usr/share/man/man8/colod.8.gz", "./usr/share/man/man8/coloctl.8.gz",
            "./usr/share/man/man5/colod.yaml.5.gz", "./usr/share/bash-completion/completions/coloctl"))
        {
            assertThat(contents).as("the package holds " + f).contains(f);
        }
        assertThat(run(repo, "dpkg-deb", "-f", deb.toString(), "Depends")).contains("qemu-system-x86");

        Process primary = null;
        Process secondary = null;
        try (Lab lab = new Lab(FailoverEndToEndTest.GUEST))
        {
            final Path dir = lab.runDir;
            final Path hostA = dir.resolve("host-a");
            final Path hostB = dir.resolve("host-b");
            for (final Path host : List.of(hostA, hostB))
            {
                // installed by dpkg itself into each host's own root (its own package database; maintainer scripts run
                // with DPKG_ROOT set). The dependencies (Java, QEMU, iproute2, iptables) are this machine's, outside
                // that root: dpkg is told to go on without them, and only them
                final Path db = host.resolve("var/lib/dpkg");
                for (final String d : List.of("info", "updates", "triggers"))
                {
                    Files.createDirectories(db.resolve(d));
                }
                Files.writeString(db.resolve("status"), "");
                final String installed = run(repo, "dpkg", "--root=" + host, "--force-depends", "--force-script-chrootless",
                    "-i", deb.toString());
                assertThat(installed).contains("Setting up colod (");
                assertThat(installed.lines().filter(l -> l.startsWith("dpkg: error") || l.contains("subprocess")))
                    .as("dpkg: " + installed).isEmpty();
                final String st = run(repo, "dpkg", "--root=" + host, "-s", "colod");
                assertThat(st).contains("Status: install ok installed").contains("/etc/colod/colod.example.yaml");
            }
            assertThat(Files.readString(hostA.resolve("lib/systemd/system/colod.service")))
                .contains("ExecStart=/usr/bin/colod --config /etc/colod/colod.yaml").doesNotContain("/usr/local");
            final Path pRun = dir.resolve("p-run");
            final Path sRun = dir.resolve("s-run");
            Files.writeString(dir.resolve("primary.yaml"), lab.yaml("primary", pRun, 200, false, false));
            Files.writeString(dir.resolve("secondary.yaml"), lab.yaml("secondary", sRun, 200, false, false));
            try
            {
                secondary = start(lab.sec, hostB, dir.resolve("secondary.yaml"), dir.resolve("secondary.log"));
                primary = start(lab.pri, hostA, dir.resolve("primary.yaml"), dir.resolve("primary.log"));
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
                JsonNode s = null;
                while (s == null || !"protected".equals(s.path("state").asText()) || s.path("checkpoints").asLong() < 3)
                {
                    assertThat(System.nanoTime() - deadline).as("protected by the package's colod within 120 s; " +
                        "status " + s + "; log " + (Files.exists(dir.resolve("primary.log"))
                        ? Files.readString(dir.resolve("primary.log")) : "")).isNegative();
                    assertThat(primary.isAlive()).as("the package's colod runs").isTrue();
                    Thread.sleep(300);
                    s = status(hostA, pRun.resolve("colod.sock"));
                }
                System.out.println("the package's colod on both hosts: " + s.path("role").asText() + ", " +
                    s.path("state").asText() + ", " + s.path("checkpoints").asLong() + " checkpoints");
                assertThat(s.path("role").asText()).isEqualTo("primary");
            }
            finally
            {
                DaemonEndToEndTest.stopAll(lab, new Process[]{primary, secondary}, pRun, sRun);
            }
            // removal takes the programs and keeps the operator's configuration files (conffiles)
            run(repo, "dpkg", "--root=" + hostB, "--force-script-chrootless", "-r", "colod");
            assertThat(hostB.resolve("usr/bin/colod")).doesNotExist();
            assertThat(hostB.resolve("etc/colod/colod.example.yaml")).exists();
            assertThat(run(repo, "dpkg", "--root=" + hostB, "-s", "colod")).contains("Status: deinstall ok config-files");
        }
    }

    /** colod from an unpacked package tree {@code host}, in namespace {@code ns}. */
    private static Process start(final String ns, final Path host, final Path config, final Path log) throws Exception
    {
        return new ProcessBuilder("ip", "netns", "exec", ns, host.resolve("usr/bin/colod").toString(), "--config",
            config.toString()).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
            .start();
    }

    /** The package's coloctl status of the first VM, or null when colod does not answer yet. */
    private static JsonNode status(final Path host, final Path socket) throws Exception
    {
        final List<String> cmd = new ArrayList<>(List.of(host.resolve("usr/bin/coloctl").toString(), "--socket",
            socket.toString(), "status", "-o", "json"));
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(false).start();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor(30, TimeUnit.SECONDS);
        if (p.exitValue() != 0)
        {
            return null;
        }
        final JsonNode n = JSON.readTree(out);
        return n == null || n.isEmpty() ? null : n.get(0);
    }
}
