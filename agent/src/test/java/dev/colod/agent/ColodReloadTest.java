package dev.colod.agent;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.LoggerFactory;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** SIGHUP: the log level follows the file; a file with errors changes nothing. */
class ColodReloadTest
{
    @TempDir
    Path dir;

    private Path config(final String logLevel) throws Exception
    {
        final Path kernel = Files.writeString(dir.resolve("vmlinuz"), "k");
        return Files.writeString(dir.resolve("colod.yaml"), String.join("\n", "runtime-dir: " + dir.resolve("run"),
            "ram-dir: " + dir.resolve("ram"), "state-dir: " + dir.resolve("state"), "log-level: " + logLevel, "vms:",
            "  - name: web1", "    role: primary", "    peer: 198.19.0.2:7600", "    memory-mib: 128", "    accel: tcg",
            "    kernel: " + kernel, "    nics:", "      - tap: vt0", "        mac: 52:54:00:12:34:56",
            "        bridge: br0", "arbiter: none", "insecure: true", ""));
    }

    @Test
    void sighupAppliesTheLogLevelAndABadFileChangesNothing() throws Exception
    {
        final Logger root = (Logger)LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        final Level before = root.getLevel();
        try
        {
            Colod.reload(config("debug"));
            assertThat(root.getLevel()).isEqualTo(Level.DEBUG);
            Files.writeString(dir.resolve("colod.yaml"), "log-level: warn\nvms: [\n");
            Colod.reload(dir.resolve("colod.yaml"));
            assertThat(root.getLevel()).as("a broken file changes nothing").isEqualTo(Level.DEBUG);
            Colod.reload(config("warn"));
            assertThat(root.getLevel()).isEqualTo(Level.WARN);
        }
        finally
        {
            root.setLevel(before);
        }
    }
}
