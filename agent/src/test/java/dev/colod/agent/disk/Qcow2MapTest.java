package dev.colod.agent.disk;

import dev.colod.buffer.Prerequisites;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@link Qcow2Map} against images made by qemu-img (no QEMU running): a plain image's data clusters are found where
 * qemu-img put each guest offset's bytes, zero and unallocated clusters are told apart, and a compressed image is
 * left to QEMU ({@link Qcow2Map#ELSEWHERE}).
 */
class Qcow2MapTest
{
    @TempDir
    Path dir;

    private static void run(final String... cmd) throws IOException, InterruptedException
    {
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as(String.join(" ", cmd) + ": " + out).isZero();
    }

    private static String missingQemuImg()
    {
        return Files.isExecutable(Path.of("/usr/bin/qemu-img")) ? null : "qemu-img (Debian package qemu-utils)";
    }

    /** A raw file of 4 MiB whose cluster k (64 KiB) holds byte k + 1, except cluster 5 (zeros). */
    private Path raw() throws IOException
    {
        final Path f = dir.resolve("src.raw");
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "rw"))
        {
            r.setLength(4 << 20);
            for (int k = 0; k < 64; k++)
            {
                if (k != 5 && k % 3 != 0)
                {
                    final byte[] b = new byte[65536];
                    Arrays.fill(b, (byte)(k + 1));
                    r.seek(k * 65536L);
                    r.write(b);
                }
            }
        }
        return f;
    }

    @Test
    void findsEachDataClusterWhereQemuImgWroteIt() throws Exception
    {
        Prerequisites.require("qcow2 mapping", missingQemuImg());
        final Path img = dir.resolve("plain.qcow2");
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw().toString(), img.toString());
        try (FileChannel f = FileChannel.open(img, StandardOpenOption.READ))
        {
            final Qcow2Map map = Qcow2Map.read(f);
            assertThat(map).isNotNull();
            assertThat(map.clusterSize()).isEqualTo(65536);
            for (int k = 0; k < 64; k++)
            {
                final long at = map.fileOffset(k * 65536L + 100);
                if (k == 5 || k % 3 == 0)
                {
                    assertThat(at).as("cluster %d: never written, so not in the file", k)
                        .isIn(Qcow2Map.ELSEWHERE, Qcow2Map.ZERO);
                    continue;
                }
                assertThat(at).as("cluster %d", k).isPositive();
                final ByteBuffer b = ByteBuffer.allocate(1);
                f.read(b, at);
                assertThat(b.get(0)).as("the byte at cluster %d + 100", k).isEqualTo((byte)(k + 1));
            }
        }
    }

    @Test
    void aCompressedClusterIsLeftToQemu() throws Exception
    {
        Prerequisites.require("qcow2 mapping", missingQemuImg());
        final Path img = dir.resolve("compressed.qcow2");
        run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw().toString(), img.toString());
        try (FileChannel f = FileChannel.open(img, StandardOpenOption.READ))
        {
            final Qcow2Map map = Qcow2Map.read(f);
            assertThat(map.fileOffset(65536L + 100)).isEqualTo(Qcow2Map.ELSEWHERE);
        }
    }
}
