package dev.colod.agent.config;

import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ConfigLoaderTest
{
    private static final String GOOD = String.join("\n",
        "runtime-dir: /run/colod",
        "vms:",
        "  - name: web1",
        "    role: primary",
        "    peer: 198.19.0.2:7600",
        "    memory-mib: 128",
        "    kernel: /boot/vmlinuz",
        "    checkpoint-delay-ms: 100",
        "    nics:",
        "      - tap: vt0",
        "        mac: 52:54:00:12:34:56",
        "        bridge: br0",
        "");

    private static ConfigException error(final String yaml)
    {
        try
        {
            ConfigLoader.parse("colod.yaml", yaml);
        }
        catch (final ConfigException ex)
        {
            return ex;
        }
        throw new AssertionError("accepted: " + yaml);
    }

    @Test
    void bindsAGoodFileWithDefaults() throws Exception
    {
        final ColodConfig c = ConfigLoader.parse("colod.yaml", GOOD);
        assertThat(c.vms).singleElement().satisfies(v ->
        {
            assertThat(v.mode).isEqualTo("strict");
            assertThat(v.heartbeatTimeoutMs).isEqualTo(1000);
            assertThat(v.nics.get(0).policy).isEqualTo("drop");
        });
    }

    @Test
    void unknownKeyNamesLineColumnAndKnownKeys()
    {
        final ConfigException ex = error(GOOD.replace("    checkpoint-delay-ms: 100", "    checkpoint-dely-ms: 100"));
        assertThat(ex.getMessage()).startsWith("colod.yaml:8:5: unknown key 'checkpoint-dely-ms' in vms[0]")
            .contains("checkpoint-delay-ms");
        assertThat(ex.line()).isEqualTo(8);
        assertThat(ex.column()).isEqualTo(5);
    }

    @Test
    void wrongTypeNamesLineColumnAndField()
    {
        final ConfigException ex = error(GOOD.replace("memory-mib: 128", "memory-mib: lots"));
        assertThat(ex.getMessage()).startsWith("colod.yaml:6:17: wrong type for vms[0].memory-mib: 'lots' is not a whole number");
    }

    @Test
    void missingFieldNamesWhereItShouldBe()
    {
        final ConfigException ex = error(GOOD.replace("        mac: 52:54:00:12:34:56\n", ""));
        assertThat(ex.getMessage()).startsWith("colod.yaml:10:").contains("missing field vms[0].nics[0].mac");
    }

    @Test
    void impossibleValueNamesLineColumnAndWhy()
    {
        final ConfigException ex = error(GOOD.replace("checkpoint-delay-ms: 100", "checkpoint-delay-ms: -5"));
        assertThat(ex.getMessage()).isEqualTo("colod.yaml:8:5: invalid vms[0].checkpoint-delay-ms: must be 0..3600000, was -5");
        final ConfigException mac = error(GOOD.replace("52:54:00:12:34:56", "52:54:00:12:34"));
        assertThat(mac.getMessage()).startsWith("colod.yaml:11:9: invalid vms[0].nics[0].mac");
    }

    @Test
    void theExampleFileIsValid() throws Exception
    {
        final ColodConfig c = ConfigLoader.load(Path.of("../deploy/colod.example.yaml"));
        assertThat(c.vms).isNotEmpty();
    }
}
