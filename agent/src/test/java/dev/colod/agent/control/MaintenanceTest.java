package dev.colod.agent.control;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** A host's maintenance mode: kept in the state directory, one line of reason, switched and shown by coloctl. */
class MaintenanceTest
{
    @TempDir
    Path dir;

    private static String coloctl(final Path socket, final int exit, final String... args)
    {
        final ColoctlTest.Run r = ColoctlTest.coloctl(socket, args);
        assertThat(r.code()).as(r.out() + " " + r.err()).isEqualTo(exit);
        return r.out() + r.err();
    }

    @Test
    void itOutlastsTheProcessAndSaysWhyInOneLine()
    {
        final Maintenance m = new Maintenance(dir.resolve("state"));
        assertThat(m.why()).isNull();
        assertThat(m.on("firmware\nupdate")).startsWith("this host is in maintenance since ").contains("(firmware update)")
            .endsWith("no failover starts here on its own (coloctl maintenance off ends it)");
        assertThat(new Maintenance(dir.resolve("state")).why()).as("a new colod finds it").contains("(firmware update)");
        assertThat(m.off()).isTrue();
        assertThat(m.off()).isFalse();
        assertThat(new Maintenance(dir.resolve("state")).why()).isNull();
    }

    @Test
    void coloctlSwitchesItAndEveryViewShowsIt() throws Exception
    {
        final Maintenance m = new Maintenance(dir.resolve("state"));
        final Path socket = dir.resolve("colod.sock");
        try (ControlServer server = new ControlServer(socket, List.of(), m))
        {
            assertThat(coloctl(socket, 0, "maintenance")).contains("this host is not in maintenance");
            assertThat(coloctl(socket, 0, "maintenance", "on", "--reason", "rack move")).contains("(rack move)");
            assertThat(Files.exists(m.file())).isTrue();
            assertThat(coloctl(socket, 0, "maintenance")).contains("since").contains("(rack move)");
            assertThat(coloctl(socket, 0, "events")).contains("maintenance on: this host is in maintenance since");
            assertThat(coloctl(socket, 2, "maintenance", "maybe")).contains("give on or off");
            assertThat(coloctl(socket, 0, "maintenance", "off")).contains("maintenance off");
            assertThat(coloctl(socket, 0, "maintenance", "off")).contains("was not in maintenance");
            assertThat(new ObjectMapper().readTree(coloctl(socket, 0, "events", "-o", "json")).toString())
                .contains("maintenance off");

            // events --watch prints each new event once, as it comes, and ends when interrupted
            final StringWriter watched = new StringWriter();
            final CommandLine cl = Coloctl.commandLine();
            cl.setOut(new PrintWriter(watched, true));
            final Thread t = new Thread(() -> cl.execute("--socket", socket.toString(), "events", "--watch"));
            t.start();
            coloctl(socket, 0, "maintenance", "on", "--reason", "second round");
            org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(30))
                .until(() -> watched.toString().contains("(second round)"));
            t.interrupt();
            t.join(5000);
            assertThat(t.isAlive()).as("--watch ends when interrupted").isFalse();
            assertThat(watched.toString().lines().filter(l -> l.endsWith(" maintenance off")))
                .as("each event once: " + watched).hasSize(1);
        }
    }
}
