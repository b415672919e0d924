package dev.colod.lab;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.vm.QemuFailover;
import dev.colod.agent.vm.StandbyImage;
import dev.colod.os.Netns;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Both forms of device state a secondary may hold, with the real test guest and real QEMUs: what this build's
 * primary saves ({@code xen-save-devices-state}: devices alone, checkpoint format 3) and what a primary of the
 * build before saved ({@code migrate} with x-ignore-shared: a whole migration stream, format 2, read during a
 * rolling upgrade). Each is recognised from its bytes and loaded by a QEMU started for its form, which then runs
 * the guest; loading the devices-alone form into a QEMU started for the other shows why the form matters.
 */
class DeviceStateFormsTest
{
    private final String ns = "colot-f-" + ProcessHandle.current().pid() % 100000;
    private Path dir;
    private VmSpec spec;
    private QemuProcess qemu;

    @BeforeEach
    void start() throws Exception
    {
        FailoverEndToEndTest.requireLab();
        dir = Files.createTempDirectory("colot-forms");
        Netns.add(ns);
        spec = new VmSpec("forms", 128, 1, FailoverEndToEndTest.GUEST.resolve("vmlinuz"),
            FailoverEndToEndTest.GUEST.resolve("initrd.img"), "console=ttyS0 quiet",
            List.of(new VmSpec.Nic("fmt0", "52:54:00:c0:10:0a")), "tcg", dir, List.of(), List.of()).check();
    }

    @AfterEach
    void stop()
    {
        if (qemu != null)
        {
            qemu.kill();
        }
        Netns.delete(ns);
        TwoHostLab.deleteTree(dir);
    }

    @Test
    void eachFormIsRecognisedAndLoadedByAQemuStartedForItAndTheGuestRunsOn() throws Exception
    {
        final Path ram = dir.resolve("a.ram");
        qemu = QemuProcess.start(spec, dir.resolve("run-a"), ram, QemuProcess.Incoming.NONE, ns);
        Thread.sleep(3000); // the guest boots: its devices have state worth saving
        qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        final Path devices = dir.resolve("devices.state");
        qemu.qmp().execute("xen-save-devices-state", Map.of("filename", devices.toString(), "live", false),
            QemuProcess.QMP_TIMEOUT_MS);
        final Path stream = dir.resolve("stream.state");
        qemu.qmp().execute("migrate", Map.of("uri", "exec:cat > " + stream), QemuProcess.QMP_TIMEOUT_MS);
        awaitMigration(qemu);
        final Path image = dir.resolve("image.ram");
        Files.copy(ram, image, StandardCopyOption.REPLACE_EXISTING);
        qemu.kill();
        qemu = null;

        assertThat(QemuProcess.Incoming.of(devices)).isEqualTo(QemuProcess.Incoming.DEVICE_STATE);
        assertThat(QemuProcess.Incoming.of(stream)).isEqualTo(QemuProcess.Incoming.MIGRATION_STREAM);
        assertThat(Files.size(devices)).as("devices alone are much smaller than a stream with the ROM pages")
            .isLessThan(Files.size(stream));

        for (final Path state : List.of(devices, stream))
        {
            final Path copy = dir.resolve("b.ram");
            Files.copy(image, copy, StandardCopyOption.REPLACE_EXISTING);
            qemu = QemuProcess.start(spec, dir.resolve("run-b"), copy, QemuProcess.Incoming.of(state), ns);
            qemu.qmp().execute("migrate-incoming", Map.of("uri", "exec:cat " + state), QemuProcess.QMP_TIMEOUT_MS);
            awaitMigration(qemu);
            qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
            Thread.sleep(500);
            assertThat(qemu.qmp().execute("query-status", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText())
                .as("the guest runs on from " + state.getFileName()).isEqualTo("running");
            assertThat(qemu.isAlive()).isTrue();
            qemu.kill();
            qemu = null;
        }

        // control: the devices-alone form in a QEMU started for a whole stream is refused by QEMU
        final Path copy = dir.resolve("c.ram");
        Files.copy(image, copy, StandardCopyOption.REPLACE_EXISTING);
        qemu = QemuProcess.start(spec, dir.resolve("run-c"), copy, QemuProcess.Incoming.MIGRATION_STREAM, ns);
        final QemuProcess wrong = qemu;
        assertThatThrownBy(() ->
        {
            wrong.qmp().execute("migrate-incoming", Map.of("uri", "exec:cat " + devices), QemuProcess.QMP_TIMEOUT_MS);
            awaitMigration(wrong);
        }).isInstanceOf(IOException.class);
        assertThat(Files.readString(dir.resolve("run-c").resolve("qemu.out"))).contains("Configuration section missing");
    }

    @Test
    void aFailoverThatQemuRefusesSaysQemusOwnReason() throws Exception
    {
        final Path ram = dir.resolve("a.ram");
        qemu = QemuProcess.start(spec, dir.resolve("run-a"), ram, QemuProcess.Incoming.NONE, ns);
        Thread.sleep(3000);
        qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        final Path image = dir.resolve("image");
        Files.createDirectories(image);
        final Path devices = image.resolve("device.state");
        qemu.qmp().execute("xen-save-devices-state", Map.of("filename", devices.toString(), "live", false),
            QemuProcess.QMP_TIMEOUT_MS);
        Files.copy(ram, image.resolve("ram"), StandardCopyOption.REPLACE_EXISTING);
        qemu.kill();
        qemu = null;
        // the device state cut in half, as a disk full or a bug would leave it: QEMU refuses it, and says why
        final byte[] whole = Files.readAllBytes(devices);
        Files.write(devices, java.util.Arrays.copyOf(whole, whole.length / 2));
        final QemuFailover f = new QemuFailover(spec, dir.resolve("run-f"), ns);
        final StandbyImage standby = new StandbyImage(image, "forms", f);
        assertThatThrownBy(() -> f.activate(standby, 1)).isInstanceOf(IOException.class)
            .hasMessageContaining("resuming checkpoint 1 failed")
            .hasMessageContaining("; QEMU said: qemu-system-x86_64:");
        f.close();
    }

    /** Waits for the migration to end; throws unless it completed. */
    private static void awaitMigration(final QemuProcess q) throws Exception
    {
        final String status = q.awaitMigration();
        if (!"completed".equals(status))
        {
            throw new IOException("migration ended " + status);
        }
    }
}
