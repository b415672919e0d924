package dev.colod.lab;

import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.agent.vm.RunningCopy;
import dev.colod.os.Netns;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The secondary's running copy of hybrid mode with the real test guest and real QEMUs (docs/ARCHITECTURE.md,
 * "Hybrid mode"): a QEMU on a private mapping of the committed RAM image runs and writes without ever changing the
 * image, and after each commit the next copy holds exactly the primary's RAM. The control shows that a copy on a
 * shared mapping would write the image, so the first assertion bites.
 */
class RunningCopyTest
{
    private static final int MIB = 128;
    private final String ns = "colot-rc-" + ProcessHandle.current().pid() % 100000;
    private Path dir;
    private VmSpec spec;
    private QemuProcess primary;
    private QemuProcess other;
    private RunningCopy copy;

    @BeforeEach
    void start() throws Exception
    {
        FailoverEndToEndTest.requireLab();
        dir = Files.createTempDirectory("colot-copy");
        Netns.add(ns);
        spec = new VmSpec("copy", MIB, 1, FailoverEndToEndTest.GUEST.resolve("vmlinuz"),
            FailoverEndToEndTest.GUEST.resolve("initrd.img"), "console=ttyS0 quiet",
            List.of(new VmSpec.Nic("rc0", "52:54:00:c0:10:0b")), "tcg", dir, List.of(), List.of()).check();
        Files.createDirectories(dir.resolve("image"));
    }

    @AfterEach
    void stop()
    {
        if (copy != null)
        {
            copy.close();
        }
        for (final QemuProcess q : new QemuProcess[]{primary, other})
        {
            if (q != null)
            {
                q.kill();
            }
        }
        Netns.delete(ns);
        TwoHostLab.deleteTree(dir);
    }

    /** Checkpoint: the primary pauses, its device state and RAM become the image's (RAM written in place, as a commit does). */
    private void commit(final Path image, final Path device) throws Exception
    {
        primary.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
        final Path tmp = dir.resolve("device.state.tmp");
        primary.qmp().execute("xen-save-devices-state", Map.of("filename", tmp.toString(), "live", false),
            QemuProcess.QMP_TIMEOUT_MS);
        Files.move(tmp, device, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        try (FileChannel from = FileChannel.open(primary.ramFile(), StandardOpenOption.READ);
             FileChannel to = FileChannel.open(image, StandardOpenOption.WRITE))
        {
            long done = 0;
            while (done < from.size())
            {
                done += from.transferTo(done, from.size() - done, to.position(done));
            }
        }
    }

    private static long crc(final Path file) throws IOException
    {
        final CRC32C c = new CRC32C();
        try (FileChannel f = FileChannel.open(file, StandardOpenOption.READ))
        {
            final ByteBuffer b = ByteBuffer.allocateDirect(1 << 20);
            while (f.read(b.clear()) > 0)
            {
                c.update(b.flip());
            }
        }
        return c.getValue();
    }

    /** Guest-physical RAM of {@code q} as QEMU sees it. */
    private byte[] dump(final QemuProcess q, final String name) throws Exception
    {
        final Path out = dir.resolve(name);
        q.qmp().execute("pmemsave", Map.of("val", 0, "size", (long)MIB << 20, "filename", out.toString()),
            QemuProcess.QMP_TIMEOUT_MS);
        return Files.readAllBytes(out);
    }

    private static int pagesDiffering(final byte[] a, final byte[] b)
    {
        int n = 0;
        for (int at = 0; at < a.length; at += 4096)
        {
            if (!Arrays.equals(a, at, at + 4096, b, at, at + 4096))
            {
                n++;
            }
        }
        return n;
    }

    private static String status(final QemuProcess q) throws IOException
    {
        return q.qmp().execute("query-status", null, QemuProcess.QMP_TIMEOUT_MS).path("status").asText();
    }

    @Test
    void aCopyOnAPrivateMappingNeverWritesTheImageAndAfterEachCommitHoldsThePrimarysRam() throws Exception
    {
        primary = QemuProcess.start(spec, dir.resolve("run-p"), dir.resolve("primary.ram"), QemuProcess.Incoming.NONE, ns);
        Thread.sleep(3000); // the guest boots
        final Path image = dir.resolve("image/ram");
        final Path device = dir.resolve("image/device.state");
        Files.copy(primary.ramFile(), image);
        copy = new RunningCopy(spec, dir.resolve("copies"), ns, image, device);
        copy.prepare(); // the first copy starts while the guest runs on
        for (long n = 1; n <= 4; n++)
        {
            copy.pause();
            commit(image, device);
            copy.commit(n);
            final QemuProcess c = copy.running();
            assertThat(status(c)).as("the copy waits, paused, for vmstate-loaded").isEqualTo("paused");
            assertThat(pagesDiffering(dump(c, "copy.dump"), dump(primary, "primary.dump")))
                .as("pages of checkpoint %d where the copy differs from the primary", n).isZero();
            final long committed = crc(image);
            copy.resume(n);
            primary.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
            Thread.sleep(1500); // both guests run and write their RAM
            assertThat(crc(image)).as("the image after the copy of checkpoint %d ran", n).isEqualTo(committed);
            assertThat(status(c)).isEqualTo("running");
            assertThat(c.isAlive()).isTrue();
            System.out.printf("running copy %d: checkpoint %d loaded in %.1f ms, RAM equal to the primary's, image " +
                "unchanged while it ran%n", c.pid(), n, copy.lastLoadMicros() / 1000.0);
        }
        assertThat(copy.lastLoadMicros()).isPositive();
    }

    @Test
    void controlACopyOnASharedMappingWritesTheImage() throws Exception
    {
        primary = QemuProcess.start(spec, dir.resolve("run-p"), dir.resolve("primary.ram"), QemuProcess.Incoming.NONE, ns);
        Thread.sleep(3000);
        final Path image = dir.resolve("image/ram");
        final Path device = dir.resolve("image/device.state");
        Files.copy(primary.ramFile(), image);
        commit(image, device);
        primary.kill();
        primary = null;
        final VmSpec shared = new VmSpec("copy", MIB, 1, spec.kernel(), spec.initrd(), spec.append(),
            List.of(new VmSpec.Nic("rc1", "52:54:00:c0:10:0b")), "tcg", dir, List.of(), List.of());
        other = QemuProcess.start(shared, dir.resolve("run-shared"), image, QemuProcess.Incoming.DEVICE_STATE, ns,
            Map.of(), true);
        other.qmp().execute("migrate-incoming", Map.of("uri", "exec:cat " + device), QemuProcess.QMP_TIMEOUT_MS);
        assertThat(other.awaitMigration()).isEqualTo("completed");
        final long committed = crc(image);
        other.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        // a running Linux guest writes its RAM all the time (timers, jiffies): wait for it, however slowly TCG runs
        final long deadline = System.nanoTime() + 60_000_000_000L;
        while (crc(image) == committed && System.nanoTime() < deadline)
        {
            Thread.sleep(200);
        }
        assertThat(crc(image)).as("a shared mapping writes the guest's changes into the image").isNotEqualTo(committed);
    }
}
