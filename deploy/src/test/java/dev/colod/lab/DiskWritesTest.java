package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.disk.DiskSet;
import dev.colod.agent.disk.DiskWrites;
import dev.colod.agent.disk.NbdClient;
import dev.colod.agent.disk.StandbyDisk;
import dev.colod.agent.qemu.QemuProcess;
import dev.colod.agent.qemu.VmSpec;
import dev.colod.os.Netns;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@link DiskSet}, {@link DiskWrites} and {@link NbdClient} against a real QEMU with a real raw image and a real
 * qcow2 image on a backing file (no guest OS: the writes are made through QEMU's block layer with the monitor's
 * qemu-io, exactly where a guest's virtio-blk writes land): a capture holds exactly the extents written since the
 * last one, with their bytes, and nothing written after its pause; a base lists every allocated extent (of a qcow2
 * disk: what its top image holds); a {@link StandbyDisk} that applies them through qemu-nbd ends up with the same
 * disk as QEMU's ({@code qemu-img compare}); nothing of colod's is left in QEMU afterwards.
 */
class DiskWritesTest
{
    private static final long DISK = 16 << 20;
    private final String ns = "colot-d-" + ProcessHandle.current().pid() % 100000;
    private Path dir;
    private Path qcow2;
    private QemuProcess qemu;

    private static byte[] filled(final int n, final int v)
    {
        final byte[] b = new byte[n];
        java.util.Arrays.fill(b, (byte)v);
        return b;
    }

    private static String run(final String... cmd) throws IOException, InterruptedException
    {
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as(String.join(" ", cmd) + ": " + out).isZero();
        return out;
    }

    @BeforeEach
    void start() throws Exception
    {
        FailoverEndToEndTest.requireLab();
        dir = Files.createTempDirectory("colot-disk");
        final Path img = dir.resolve("disk.raw");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw"))
        {
            f.setLength(DISK);
        }
        Netns.add(ns);
        // disk 1: qcow2 on a raw backing file whose first 64 KiB hold 0x31
        final Path backing = dir.resolve("backing.raw");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw"))
        {
            f.setLength(DISK);
            f.write(filled(65536, 0x31));
        }
        qcow2 = dir.resolve("disk1.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing.toString(), qcow2.toString(),
            Long.toString(DISK));
        final VmSpec spec = new VmSpec("dw", 32, 1, null, null, null, List.of(new VmSpec.Nic("dwt0", "52:54:00:c0:10:09")),
            "tcg", dir, List.of(), List.of(new VmSpec.Disk(img, VmSpec.DiskFormat.RAW),
            new VmSpec.Disk(qcow2, VmSpec.DiskFormat.QCOW2))).check();
        qemu = QemuProcess.start(spec, dir.resolve("run"), dir.resolve("dw.ram"), QemuProcess.Incoming.NONE, ns);
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

    /** A write to disk 0 through QEMU's block layer, as the guest's virtio-blk makes it. */
    private void write(final long offset, final int length, final int pattern) throws IOException
    {
        write(0, offset, length, pattern);
    }

    /** A write to disk {@code disk} through QEMU's block layer. */
    private void write(final int disk, final long offset, final int length, final int pattern) throws IOException
    {
        io(disk, "write -P " + pattern + " " + offset + " " + length);
    }

    /** A qemu-io command on disk {@code disk}'s device. */
    private void io(final int disk, final String command) throws IOException
    {
        final JsonNode r = qemu.qmp().execute("human-monitor-command", Map.of("command-line",
            "qemu-io -d /machine/peripheral/" + VmSpec.diskNode(disk) + "-dev/virtio-backend \"" + command + "\""),
            QemuProcess.QMP_TIMEOUT_MS);
        assertThat(r.asText()).as("qemu-io (it prints its errors here, its success to QEMU's stdout)").isEmpty();
    }

    /** The records of a capture: address (disk index in bits 63..48, offset) to bytes. */
    private static Map<Long, byte[]> records(final DiskSet.Captured c)
    {
        final Map<Long, byte[]> out = new TreeMap<>();
        final ByteBuffer b = c.records().duplicate();
        for (int i = 0; i < c.count(); i++)
        {
            final long off = b.getLong();
            final byte[] data = new byte[b.getInt()];
            b.get(data);
            out.put(off, data);
        }
        assertThat(b.hasRemaining()).isFalse();
        return out;
    }

    private static boolean all(final byte[] b, final int v)
    {
        for (final byte x : b)
        {
            if (x != (byte)v)
            {
                return false;
            }
        }
        return true;
    }

    @Test
    void aCaptureHoldsExactlyWhatWasWrittenSinceTheLastOneAndNothingLater() throws Exception
    {
        try (DiskSet d = DiskSet.open(qemu))
        {
            write(0, 4096, 0x11); // before tracking starts: in no capture
            d.restart();
            write(8192, 4096, 0x55);
            write(1 << 20, 70_000, 0x66); // not a multiple of the granularity: the whole 4 KiB blocks go
            write(DISK - 512, 512, 0x77);
            qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
            final Map<Long, byte[]> first = records(d.capturePaused());
            qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
            write(8192, 512, 0x88); // after the pause: only in the next capture

            assertThat(first.keySet()).containsExactly(8192L, 1L << 20, DISK - 4096);
            assertThat(first.get(8192L)).hasSize(4096).matches(b -> all(b, 0x55));
            assertThat(first.get(1L << 20)).hasSize(73_728);
            assertThat(all(java.util.Arrays.copyOf(first.get(1L << 20), 70_000), 0x66)).isTrue();
            assertThat(first.get(DISK - 4096)[4095]).isEqualTo((byte)0x77);

            qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
            final Map<Long, byte[]> second = records(d.capturePaused());
            assertThat(second.keySet()).containsExactly(8192L);
            assertThat(second.get(8192L)[0]).isEqualTo((byte)0x88);
            assertThat(second.get(8192L)[600]).isEqualTo((byte)0x55);
            assertThat(records(d.capturePaused())).as("nothing written since").isEmpty();
            qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        assertThat(ours()).as("bitmaps and exports left in QEMU").isEmpty();
    }

    @Test
    void aBaseListsEveryAllocatedExtentAndStreamsTheirBytes() throws Exception
    {
        write(0, 4096, 0x21);
        write(5 << 20, 2 << 20, 0x22); // longer than one record: split at 1 MiB
        try (DiskSet d = DiskSet.open(qemu))
        {
            final List<long[]> got = new ArrayList<>();
            {
                final DiskSet.Base base = d.base();
                base.stream(r ->
                {
                    final long off = r.getLong(0);
                    final int len = r.getInt(8);
                    assertThat(r.remaining()).isEqualTo(CheckpointFormat.EXTENT_HEADER + len);
                    got.add(new long[]{off, len, r.get(CheckpointFormat.EXTENT_HEADER), r.get(r.limit() - 1)});
                });
                assertThat(base.dataBytes()).isEqualTo(4096 + (2L << 20));
            }
            assertThat(got).extracting(x -> x[0]).containsExactly(0L, 5L << 20, 6L << 20);
            assertThat(got).extracting(x -> x[1]).containsExactly(4096L, 1L << 20, 1L << 20);
            assertThat(got).allMatch(x -> x[2] == x[3] && (x[2] == 0x21 || x[2] == 0x22));
            // tracking runs from the base on
            write(12 << 20, 4096, 0x23);
            qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
            assertThat(records(d.capturePaused()).keySet()).containsExactly(12L << 20);
            qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        assertThat(ours()).isEmpty();
    }

    @Test
    void aQcow2DiskOnABackingFileIsCapturedThroughQemuAndAStandbyAppliesItThroughQemuNbdToTheSameDisk() throws Exception
    {
        write(1, 1 << 20, 4096, 0x41); // in the top image before the base: one 64 KiB cluster
        final Path standby = dir.resolve("standby.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", dir.resolve("backing.raw").toString(),
            standby.toString(), Long.toString(DISK));
        final StandbyDisk target = new StandbyDisk("dw", 1, new VmSpec.Disk(standby, VmSpec.DiskFormat.QCOW2), dir);
        try (DiskSet d = DiskSet.open(qemu))
        {
            assertThat(d.sizes()).containsExactly(DISK, DISK);
            final List<ByteBuffer> base = new ArrayList<>();
            d.base().stream(r -> base.add(copy(r)));
            final List<Long> addresses = base.stream().map(r -> r.getLong(0)).toList();
            assertThat(addresses).as("disk 1 sends only its top image's cluster, not the backing file's data")
                .containsExactly(CheckpointFormat.address(1, 1 << 20));
            assertThat(base.get(0).getInt(8)).isEqualTo(65536);
            assertThat(base.get(0).get(CheckpointFormat.EXTENT_HEADER)).isEqualTo((byte)0x41);
            apply(target, base, true);

            write(1, 0, 4096, 0x42); // over the backing file's 0x31
            write(1, 8 << 20, 8192, 0x43);
            write(0, 4096, 512, 0x44);
            io(1, "write -z " + (12 << 20) + " 65536"); // a zero cluster
            qemu.qmp().execute("stop", null, QemuProcess.QMP_TIMEOUT_MS);
            final DiskSet.Captured c = d.capturePaused();
            final Map<Long, byte[]> got = records(c);
            assertThat(got.keySet()).containsExactly(4096L, CheckpointFormat.address(1, 0),
                CheckpointFormat.address(1, 8 << 20), CheckpointFormat.address(1, 12 << 20));
            assertThat(got.get(CheckpointFormat.address(1, 0))).hasSize(4096).matches(b -> all(b, 0x42));
            assertThat(got.get(CheckpointFormat.address(1, 12 << 20))).hasSize(65536).matches(b -> all(b, 0));
            final DiskWrites q = d.disks().get(1);
            System.out.printf("qcow2 capture: %d bytes from its file, %d through QEMU%n", q.lastDirectBytes(),
                q.lastQemuBytes());
            assertThat(q.lastDirectBytes()).as("allocated clusters read from the file (its own L1/L2 tables)")
                .isEqualTo(4096 + 8192);
            assertThat(q.lastQemuBytes()).as("nothing else to read through QEMU (Qcow2MapTest: compressed clusters)")
                .isZero();
            final List<ByteBuffer> pieces = new ArrayList<>();
            final ByteBuffer r = c.records().duplicate();
            while (r.hasRemaining())
            {
                final int len = r.getInt(r.position() + 8);
                final ByteBuffer one = r.slice(r.position(), CheckpointFormat.EXTENT_HEADER + len);
                r.position(r.position() + CheckpointFormat.EXTENT_HEADER + len);
                if (CheckpointFormat.diskOf(one.getLong(0)) == 1)
                {
                    pieces.add(one);
                }
            }
            apply(target, pieces, false);
            target.release();
            assertThat(run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", qcow2.toString(), standby.toString()))
                .contains("Images are identical");
            assertThat(ImageFilesCheck.backing(standby)).isEqualTo(dir.resolve("backing.raw"));
            qemu.qmp().execute("cont", null, QemuProcess.QMP_TIMEOUT_MS);
        }
        finally
        {
            target.release();
        }
        assertThat(ours()).isEmpty();
    }

    private static ByteBuffer copy(final ByteBuffer r)
    {
        final ByteBuffer c = ByteBuffer.allocate(r.remaining());
        c.put(r.duplicate()).flip();
        return c;
    }

    /** Writes extent records of disk 1 into {@code target} as one apply. */
    private static void apply(final StandbyDisk target, final List<ByteBuffer> records, final boolean base) throws IOException
    {
        try (StandbyDisk.Writer w = target.open(DISK, base))
        {
            for (final ByteBuffer rec : records)
            {
                final ByteBuffer r = rec.duplicate();
                final long address = r.getLong();
                final int len = r.getInt();
                assertThat(CheckpointFormat.diskOf(address)).isEqualTo(1);
                w.write(CheckpointFormat.offsetOf(address), r.slice(r.position(), len));
            }
        }
    }

    /** The backing file a qcow2 image names. */
    private static final class ImageFilesCheck
    {
        static Path backing(final Path image) throws IOException
        {
            return dev.colod.agent.disk.ImageFiles.backingFile(image);
        }
    }

    /** colod's bitmaps and exports still in QEMU. */
    private List<String> ours() throws IOException
    {
        final List<String> left = new ArrayList<>();
        for (final JsonNode n : qemu.qmp().execute("query-named-block-nodes", Map.of("flat", true), QemuProcess.QMP_TIMEOUT_MS))
        {
            n.path("dirty-bitmaps").forEach(b -> left.add("bitmap " + b.path("name").asText()));
        }
        qemu.qmp().execute("query-block-exports", null, QemuProcess.QMP_TIMEOUT_MS)
            .forEach(e -> left.add("export " + e.path("id").asText()));
        return left;
    }
}
