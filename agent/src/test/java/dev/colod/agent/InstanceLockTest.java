package dev.colod.agent;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** One colod per runtime directory, and the refusal says who holds it. */
class InstanceLockTest
{
    @TempDir
    Path dir;

    @Test
    void aSecondColodIsRefusedNamingTheFirstsPidAndMayStartOnceItIsGone() throws Exception
    {
        final long pid = ProcessHandle.current().pid();
        try (InstanceLock first = InstanceLock.acquire(dir))
        {
            assertThat(Files.readString(dir.resolve("colod.lock")).trim()).isEqualTo(Long.toString(pid));
            assertThatThrownBy(() -> InstanceLock.acquire(dir)).isInstanceOf(IOException.class)
                .hasMessageContaining("another colod (pid " + pid + ")")
                .hasMessageContaining("runtime-dir " + dir);
        }
        InstanceLock.acquire(dir).close();
    }

    @Test
    void aLockHeldByAnotherProcessIsRefusedToo() throws Exception
    {
        // a JVM of its own takes the lock (fcntl, as colod does) and writes its pid, as a running colod would
        final Path file = dir.resolve("colod.lock");
        final Path holderSource = dir.resolve("Holder.java");
        Files.writeString(holderSource, "import java.nio.*; import java.nio.channels.*; import java.nio.file.*;\n" +
            "public class Holder { public static void main(String[] a) throws Exception {\n" +
            "  try (FileChannel ch = FileChannel.open(Path.of(a[0]), StandardOpenOption.CREATE, StandardOpenOption.WRITE);\n" +
            "       FileLock l = ch.lock()) {\n" +
            "    ch.truncate(0); ch.write(ByteBuffer.wrap((ProcessHandle.current().pid() + \"\\n\").getBytes()), 0);\n" +
            "    Thread.sleep(60_000); } } }\n");
        final String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        final Process holder = new ProcessBuilder(java, holderSource.toString(), file.toString()).start();
        try
        {
            final long deadline = System.nanoTime() + 30_000_000_000L;
            String refused = "";
            while (!refused.contains("pid " + holder.pid()) && System.nanoTime() < deadline)
            {
                try
                {
                    InstanceLock.acquire(dir).close();
                }
                catch (final IOException ex)
                {
                    refused = ex.getMessage();
                }
                Thread.sleep(20); // the holder has not taken the lock, or not written its pid, yet
            }
            assertThat(refused).as("refused while another process holds the lock, naming it")
                .contains("another colod (pid " + holder.pid() + ")");
        }
        finally
        {
            holder.destroyForcibly().waitFor();
        }
    }
}
