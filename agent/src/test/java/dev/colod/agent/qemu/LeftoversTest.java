package dev.colod.agent.qemu;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

class LeftoversTest
{
    @Test
    void reportsAndRemovesWhatADeadRunLeft(@TempDir final Path dir) throws Exception
    {
        Files.writeString(dir.resolve("qemu.pid"), "999999999\n");
        Files.writeString(dir.resolve("qmp.sock"), "");
        assertThat(Leftovers.scan(dir)).containsExactly(
            "stale pidfile " + dir.resolve("qemu.pid") + " (no such QEMU process)",
            "stale socket " + dir.resolve("qmp.sock"));
        assertThat(Leftovers.removeStale(dir)).hasSize(2);
        assertThat(Leftovers.scan(dir)).isEmpty();
    }

    @Test
    void neverTouchesFilesOfAProcessThatStillRunsAsQemu(@TempDir final Path dir) throws Exception
    {
        // this JVM is alive but is not QEMU: its pidfile counts as stale
        Files.writeString(dir.resolve("qemu.pid"), Long.toString(ProcessHandle.current().pid()));
        assertThat(Leftovers.scan(dir)).singleElement().asString().startsWith("stale pidfile");
    }
}
