package dev.colod.lab;

import com.fasterxml.jackson.databind.JsonNode;
import dev.colod.agent.checkpoint.CheckpointFormat;
import dev.colod.agent.disk.DiskWrites;
import dev.colod.agent.disk.NbdClient;
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
 * {@link DiskWrites} and {@link NbdClient} against a real QEMU with a real raw image (no guest OS: the writes are
 * made through QEMU's block layer with the monitor's qemu-io, exactly where a guest's virtio-blk writes land): a
 * capture holds exactly the extents written since the last one, with their bytes, and nothing written after its
 * pause; a base lists every allocated extent; nothing of colod's is left in QEMU afterwards.
 */
class DiskWritesTest
{
    private static final long DISK = 16 << 20;
    private final String ns = "colot-d-" + ProcessHandle.current().pid() % 100000;
    private Path dir;
    private QemuProcess qemu;

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
        final VmSpec spec = new VmSpec("dw", 32, 1, null, null, null, List.of(new VmSpec.Nic("dwt0", "52:54:00:c0:10:09")),
            "tcg", dir, List.of(), img).check();
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

    /** A write through QEMU's block layer, as the guest's virtio-blk makes it. */
    private void write(final long offset, final int length, final int pattern) throws IOException
    {
        final JsonNode r = qemu.qmp().execute("human-monitor-command", Map.of("command-line",
            "qemu-io -d /machine/peripheral/" + VmSpec.DISK_NODE + "-dev/virtio-backend \"write -P " + pattern + " " +
                offset + " " + length + "\""), QemuProcess.QMP_TIMEOUT_MS);
        assertThat(r.asText()).as("qemu-io (it prints its errors here, its success to QEMU's stdout)").isEmpty();
    }

    /** The records of a capture: offset to bytes. */
    private static Map<Long, byte[]> records(final DiskWrites.Captured c)
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
        try (DiskWrites d = DiskWrites.open(qemu))
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
        try (DiskWrites d = DiskWrites.open(qemu))
        {
            final List<long[]> got = new ArrayList<>();
            {
                final DiskWrites.Base base = d.base();
                base.stream(r ->
                {
                    final long off = r.getLong(0);
                    final int len = r.getInt(8);
                    assertThat(r.remaining()).isEqualTo(CheckpointFormat.EXTENT_HEADER + len);
                    got.add(new long[]{off, len, r.get(CheckpointFormat.EXTENT_HEADER), r.get(r.limit() - 1)});
                });
                assertThat(base.extents().dataBytes()).isEqualTo(4096 + (2L << 20));
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
