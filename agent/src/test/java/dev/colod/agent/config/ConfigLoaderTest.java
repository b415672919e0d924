package dev.colod.agent.config;

import dev.colod.buffer.BufferLimits;
import dev.colod.core.ColoConfig;
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
        "arbiter: none",
        "insecure: true",
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
    void theArbiterIsRequiredAndItsFieldsAreChecked() throws Exception
    {
        final ConfigException missing = error(GOOD.replace("arbiter: none\n", ""));
        assertThat(missing.getMessage()).contains("missing field arbiter").contains("arbiter: none");
        final ConfigException word = error(GOOD.replace("arbiter: none", "arbiter: maybe"));
        assertThat(word.getMessage()).contains("colod.yaml:13:").contains("invalid arbiter").contains("'maybe'");
        final ConfigException url = error(GOOD.replace("arbiter: none", "arbiter:\n  etcd: [\"198.18.0.9:2379\"]"));
        assertThat(url.getMessage()).contains("arbiter.etcd[0]").contains("http://host:port");
        final ConfigException margin = error(GOOD.replace("arbiter: none",
            "arbiter:\n  etcd: [\"http://198.18.0.9:2379\"]\n  lease-ttl-ms: 2000\n  safety-margin-ms: 1500"));
        assertThat(margin.getMessage()).contains("colod.yaml:16:").contains("arbiter.safety-margin-ms");
        final ColodConfig c = ConfigLoader.parse("colod.yaml", GOOD.replace("arbiter: none",
            "host-name: a\narbiter:\n  etcd: [\"http://198.18.0.9:2379\", \"http://198.18.0.10:2379\"]"));
        assertThat(c.arbiter.none()).isFalse();
        assertThat(c.arbiter.etcd).hasSize(2);
        assertThat(c.arbiter.leaseTtlMs).isEqualTo(3000);
        assertThat(c.hostName).isEqualTo("a");
        assertThat(ConfigLoader.parse("colod.yaml", GOOD).arbiter.none()).isTrue();
    }

    @Test
    void bindsAGoodFileWithDefaults() throws Exception
    {
        final ColodConfig c = ConfigLoader.parse("colod.yaml", GOOD);
        assertThat(c.vms).singleElement().satisfies(v ->
        {
            assertThat(v.role).isEqualTo(ColodConfig.Role.PRIMARY);
            assertThat(v.engine().mode()).isEqualTo(ColoConfig.Mode.STRICT);
            assertThat(v.engine().heartbeatTimeoutMs()).isEqualTo(1000);
            assertThat(v.engine().checkpointDelayMs()).isEqualTo(100);
            assertThat(v.engine().maxStateBytes()).isEqualTo((128L + 64) << 20);
            assertThat(v.nics.get(0).limits().policy()).isEqualTo(BufferLimits.Policy.DROP);
            assertThat(v.nics.get(0).limits().maxFrames()).isEqualTo(new BufferLimits().maxFrames());
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
    void everyBindingProblemOfTheFileComesInOneRun()
    {
        final ConfigException ex = error("colour: blue\n" + GOOD.replace("memory-mib: 128", "memory-mib: lots")
            .replace("    checkpoint-delay-ms: 100", "    mode: sloppy").replace("        bridge: br0", "        bridge: br0\n" +
            "        brige: br1"));
        assertThat(ex.getMessage().lines().toList()).as(ex.getMessage()).containsExactly(
            "colod.yaml:1:1: unknown key 'colour' in the top level (known keys: " + knownTop(ex) + ")",
            "colod.yaml:7:17: wrong type for vms[0].memory-mib: 'lots' is not a whole number",
            "colod.yaml:9:5: invalid vms[0].mode: must be strict, speculative or hybrid, was 'sloppy'",
            "colod.yaml:14:9: unknown key 'brige' in vms[0].nics[0] (known keys: " + knownNic(ex) + ")");
    }

    private static String knownTop(final ConfigException ex)
    {
        final String m = ex.getMessage().lines().findFirst().orElseThrow();
        return m.substring(m.indexOf("(known keys: ") + 13, m.length() - 1);
    }

    private static String knownNic(final ConfigException ex)
    {
        final String m = ex.getMessage().lines().reduce((a, b) -> b).orElseThrow();
        assertThat(m).contains("bridge").contains("mac").contains("tap");
        return m.substring(m.indexOf("(known keys: ") + 13, m.length() - 1);
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
    void aComponentsOwnCheckIsReportedAtItsLine()
    {
        final ConfigException hb = error(GOOD.replace("    checkpoint-delay-ms: 100", "    heartbeat-timeout-ms: 150"));
        assertThat(hb.getMessage()).isEqualTo("colod.yaml:8:5: invalid vms[0].heartbeat-timeout-ms: must be at least " +
            "twice heartbeat-interval-ms (100), was 150");
        final ConfigException bytes = error(GOOD.replace("        bridge: br0", "        bridge: br0\n        max-bytes: 100"));
        assertThat(bytes.getMessage()).isEqualTo("colod.yaml:13:9: invalid vms[0].nics[0].max-bytes: must be " +
            "9216 (max-frame-bytes)..1073741824, was 100");
    }

    @Test
    void aChoiceOutsideItsListNamesTheChoices()
    {
        final ConfigException mode = error(GOOD.replace("    checkpoint-delay-ms: 100", "    mode: sloppy"));
        assertThat(mode.getMessage()).isEqualTo("colod.yaml:8:5: invalid vms[0].mode: must be strict, speculative or " +
            "hybrid, was 'sloppy'");
        final ConfigException stop = error("on-stop: halt\n" + GOOD);
        assertThat(stop.getMessage()).isEqualTo("colod.yaml:1:1: invalid on-stop: must be leave-running or stop, was 'halt'");
    }

    @Test
    void ramPageSizeIsFourKibOrTwoMibInWholePages() throws Exception
    {
        assertThat(ConfigLoader.parse("colod.yaml", GOOD).vms.get(0).ramPageSize).isEqualTo(ColodConfig.RamPageSize.PAGE_4K);
        final ColodConfig huge = ConfigLoader.parse("colod.yaml", "hugepage-dir: /mnt/huge\n" +
            GOOD.replace("    checkpoint-delay-ms: 100", "    ram-page-size: 2m"));
        assertThat(huge.vms.get(0).ramPageSize).isEqualTo(ColodConfig.RamPageSize.PAGE_2M);
        assertThat(huge.hugepageDir).isEqualTo("/mnt/huge");
        final ConfigException bad = error(GOOD.replace("    checkpoint-delay-ms: 100", "    ram-page-size: 1g"));
        assertThat(bad.getMessage()).isEqualTo("colod.yaml:8:5: invalid vms[0].ram-page-size: must be 4k or 2m, was '1g'");
        final ConfigException odd = error(GOOD.replace("    checkpoint-delay-ms: 100", "    ram-page-size: 2m")
            .replace("memory-mib: 128", "memory-mib: 129"));
        assertThat(odd.getMessage()).isEqualTo("colod.yaml:6:5: invalid vms[0].memory-mib: must be a multiple of 2 with " +
            "ram-page-size: 2m (whole 2 MiB pages), was 129");
    }

    @Test
    void aVmBootsItsKernelOrItsDiskAndNothingHalfOfBoth(@org.junit.jupiter.api.io.TempDir final Path dir) throws Exception
    {
        final ConfigException none = error(GOOD.replace("    kernel: /boot/vmlinuz\n", ""));
        assertThat(none.getMessage()).contains("missing field vms[0].kernel (or a disk: to boot from)");
        final Path disk = dir.resolve("boot.img");
        java.nio.file.Files.write(disk, new byte[1 << 20]);
        final String fromDisk = GOOD.replace("    kernel: /boot/vmlinuz\n", "    disk:\n      image: " + disk + "\n");
        assertThat(ConfigLoader.parse("colod.yaml", fromDisk).vms.get(0).kernel).as("boots from its disk").isNull();
        final ConfigException initrd = error(fromDisk.replace("    disk:", "    initrd: /boot/initrd.img\n    disk:"));
        assertThat(initrd.getMessage()).contains("invalid vms[0].initrd: needs kernel (a VM that boots from its disk " +
            "takes its initramfs from there)");
    }

    @Test
    void everyProblemOfTheFileComesInOneRunInFileOrder()
    {
        final ConfigException ex = error(GOOD.replace("runtime-dir: /run/colod", "runtime-dir: run/colod")
            .replace("checkpoint-delay-ms: 100", "checkpoint-delay-ms: -5")
            .replace("52:54:00:12:34:56", "52:54:00:12:34")
            .replace("insecure: true", "insecure: false"));
        assertThat(ex.getMessage().split("\n")).containsExactly(
            "colod.yaml:1:1: invalid runtime-dir: must be an absolute path",
            "colod.yaml:1:1: missing field tls: give the PEM files (tls: {ca: ..., cert: ..., key: ...}; `coloctl certs` " +
                "makes a lab CA) or set 'insecure: true' for plaintext replication (labs only)",
            "colod.yaml:8:5: invalid vms[0].checkpoint-delay-ms: must be 0..3600000, was -5",
            "colod.yaml:11:9: invalid vms[0].nics[0].mac: must be a MAC like 52:54:00:12:34:56, was '52:54:00:12:34'");
        assertThat(ex.line()).isEqualTo(1);
    }

    @Test
    void sealedChunksAreOnUnlessTheTlsSectionTurnsThemOff() throws Exception
    {
        final String tls = "tls:\n  ca: /etc/colod/ca.pem\n  cert: /etc/colod/a.pem\n  key: /etc/colod/a.key\n";
        assertThat(ConfigLoader.parse("colod.yaml", GOOD.replace("insecure: true\n", tls)).tls.sealedChunks).isTrue();
        assertThat(ConfigLoader.parse("colod.yaml", GOOD.replace("insecure: true\n", tls + "  sealed-chunks: false\n"))
            .tls.sealedChunks).isFalse();
        final ConfigException ex = error(GOOD.replace("insecure: true\n", tls + "  sealed-chunks: sometimes\n"));
        assertThat(ex.getMessage()).isEqualTo("colod.yaml:18:18: wrong type for tls.sealed-chunks: 'sometimes' is not true or false");
    }

    @Test
    void theVmsShapeIsWhatTheOtherHostCompares() throws Exception
    {
        assertThat(ConfigLoader.parse("colod.yaml", GOOD).vms.get(0).engine().vmShape())
            .isEqualTo("accel=kvm memory-mib=128 vcpus=1 nics=52:54:00:12:34:56");
    }

    @Test
    void hybridModeNeedsTheTapBackendAndAComparableTimeout()
    {
        final ConfigException xdp = error(GOOD.replace("    checkpoint-delay-ms: 100", "    mode: hybrid")
            .replace("        bridge: br0", "        bridge: br0\n        buffer: xdp"));
        assertThat(xdp.getMessage()).startsWith("colod.yaml:").contains("invalid vms[0].nics[0].buffer: hybrid mode " +
            "compares the frames the TAP backend reads: use buffer: tap, was xdp");
        final ConfigException timeout = error(GOOD.replace("    checkpoint-delay-ms: 100",
            "    mode: hybrid\n    compare-timeout-ms: 0"));
        assertThat(timeout.getMessage()).isEqualTo("colod.yaml:9:5: invalid vms[0].compare-timeout-ms: must be " +
            "1..60000, was 0");
        final ConfigException dates = error(GOOD.replace("    checkpoint-delay-ms: 100",
            "    mode: hybrid\n    http-date-tolerance-ms: -1"));
        assertThat(dates.getMessage()).isEqualTo("colod.yaml:9:5: invalid vms[0].http-date-tolerance-ms: must be " +
            "0..60000, was -1");
    }

    @Test
    void httpDatesAreToleratedASecondApartUnlessTheFileSaysOtherwise() throws Exception
    {
        final String hybrid = GOOD.replace("    checkpoint-delay-ms: 100", "    mode: hybrid");
        assertThat(ConfigLoader.parse("colod.yaml", hybrid).vms.get(0).engine().httpDateToleranceMs()).isEqualTo(1000);
        assertThat(ConfigLoader.parse("colod.yaml", hybrid.replace("    mode: hybrid", "    mode: hybrid\n" +
            "    http-date-tolerance-ms: 0")).vms.get(0).engine().httpDateToleranceMs()).isZero();
    }

    @Test
    void theLongestIntervalDefaultsByMode() throws Exception
    {
        final String none = GOOD.replace("    checkpoint-delay-ms: 100\n", "");
        assertThat(ConfigLoader.parse("colod.yaml", none).vms.get(0).engine().checkpointDelayMs())
            .as("periodic: every frame waits for a checkpoint").isEqualTo(100);
        assertThat(ConfigLoader.parse("colod.yaml", none.replace("  - name:", "  - mode: hybrid\n    name:"))
            .vms.get(0).engine().checkpointDelayMs()).as("hybrid: the timer only bounds the drift").isEqualTo(10_000);
        assertThat(ConfigLoader.parse("colod.yaml", GOOD.replace("    checkpoint-delay-ms: 100",
            "    mode: hybrid\n    checkpoint-delay-ms: 100")).vms.get(0).engine().checkpointDelayMs())
            .as("what the file says").isEqualTo(100);
    }

    @Test
    void theExampleFileIsValid() throws Exception
    {
        final ColodConfig c = ConfigLoader.load(Path.of("../deploy/colod.example.yaml"));
        assertThat(c.vms).isNotEmpty();
    }

    @Test
    void aDiskImageMustBeAnExistingRegularFileAndSetsTheDefaultStateLimit(@org.junit.jupiter.api.io.TempDir final Path dir)
        throws Exception
    {
        final ConfigException relative = error(GOOD.replace("    nics:", "    disk:\n      image: web1.raw\n    nics:"));
        assertThat(relative.getMessage()).startsWith("colod.yaml:10:").contains("vms[0].disk.image: must be an absolute path");
        final ConfigException missing = error(GOOD.replace("    nics:", "    disk:\n      image: " + dir.resolve("none.raw") +
            "\n    nics:"));
        assertThat(missing.getMessage()).startsWith("colod.yaml:10:").contains("none.raw does not exist");
        final ConfigException notFile = error(GOOD.replace("    nics:", "    disk:\n      image: " + dir + "\n    nics:"));
        assertThat(notFile.getMessage()).contains("is not a regular file");

        final Path img = dir.resolve("web1.raw");
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(img.toFile(), "rw"))
        {
            f.setLength(1L << 30);
        }
        final ColodConfig c = ConfigLoader.parse("colod.yaml", GOOD.replace("    nics:", "    disk:\n      image: " + img +
            "\n    nics:"));
        assertThat(c.vms.get(0).disk.replicate).isTrue();
        assertThat(c.vms.get(0).engine().maxStateBytes()).as("RAM + disk + 64 MiB")
            .isEqualTo((128L << 20) + (1L << 30) + (64L << 20));
    }

    /** A file with just a qcow2 header: version 3, virtual size {@code size}, backing file {@code backing} (or none). */
    private static Path qcow2(final Path file, final long size, final String backing) throws Exception
    {
        final java.nio.ByteBuffer h = java.nio.ByteBuffer.allocate(1024);
        h.putInt(0x514649fb).putInt(3);
        if (backing != null)
        {
            h.putLong(512).putInt(backing.length());
            h.put(512, backing.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        }
        h.putLong(24, size);
        java.nio.file.Files.write(file, h.array());
        return file;
    }

    @Test
    void aVmHasAListOfRawAndQcow2DisksAndEachMistakeIsNamedAtItsEntry(@org.junit.jupiter.api.io.TempDir final Path dir)
        throws Exception
    {
        final Path raw = dir.resolve("data.raw");
        java.nio.file.Files.write(raw, new byte[1 << 20]);
        final Path sys = qcow2(dir.resolve("sys.qcow2"), 8L << 30, null);
        final String two = "    disks:\n      - image: " + sys + "\n        format: qcow2\n      - image: " + raw + "\n";
        final ColodConfig c = ConfigLoader.parse("colod.yaml", GOOD.replace("    nics:", two + "    nics:"));
        assertThat(c.vms.get(0).disks).hasSize(2);
        assertThat(c.vms.get(0).engine().maxStateBytes()).as("RAM + both disks as the guest sees them + 64 MiB")
            .isEqualTo((128L << 20) + (8L << 30) + (1L << 20) + (64L << 20));
        assertThat(c.vms.get(0).engine().vmShape()).endsWith(" disks=qcow2:none,raw:none");

        final ConfigException both = error(GOOD.replace("    nics:", "    disk:\n      image: " + raw + "\n" + two + "    nics:"));
        assertThat(both.getMessage()).contains("vms[0].disk: give disk: (one disk) or disks: (a list), not both");
        final ConfigException rawSaysQcow2 = error(GOOD.replace("    nics:", two.replace("        format: qcow2\n", "") +
            "    nics:"));
        assertThat(rawSaysQcow2.getMessage()).contains("vms[0].disks[0].format: " + sys + " is a qcow2 image; say format: qcow2");
        final ConfigException qcow2SaysRaw = error(GOOD.replace("    nics:", "    disks:\n      - image: " + raw +
            "\n        format: qcow2\n    nics:"));
        assertThat(qcow2SaysRaw.getMessage()).contains("vms[0].disks[0].format: " + raw + " is not a qcow2 image");
        qcow2(dir.resolve("top.qcow2"), 1L << 30, "base.qcow2");
        final ConfigException noBacking = error(GOOD.replace("    nics:", "    disks:\n      - image: " +
            dir.resolve("top.qcow2") + "\n        format: qcow2\n    nics:"));
        assertThat(noBacking.getMessage()).contains("names backing file " + dir.resolve("base.qcow2") +
            ", which does not exist here");
        final ConfigException hybrid = error(GOOD.replace("    checkpoint-delay-ms: 100", "    mode: hybrid")
            .replace("    nics:", two + "    nics:"));
        assertThat(hybrid.getMessage()).contains("vms[0].disks[0].format: hybrid mode runs its copy on a qcow2 overlay");
    }
}
