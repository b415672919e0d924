package dev.colod.agent.disk;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.colod.agent.qemu.VmSpec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * One disk of the secondary's committed image: the image file named in the VM's configuration here, which a
 * checkpoint's extents of that disk are written into at commit. A raw image is written at file offsets. A qcow2
 * image is written through QEMU's block layer: a {@code qemu-nbd} of this agent serves it on a unix socket beside
 * the committed RAM image ({@code disk<N>.sock}, {@code --cache=unsafe}: a flush writes qcow2's metadata into the
 * file but does not fsync it, as durable as the raw case and the RAM image on tmpfs), kept while checkpoints
 * arrive and stopped before anything else opens the image ({@link #release}); its pid file lets a later agent end
 * one that a killed agent left. Each apply ends with NBD_CMD_FLUSH, so the file is a whole qcow2 image between
 * commits. A base starts from an empty image: a raw file is truncated to zeros; a qcow2 image is created anew with
 * the same backing file, format, size and cluster size ({@code qemu-img create}).
 * <p>
 * Single-threaded: the secondary session's thread (and failover, after the session).
 */
public final class StandbyDisk
{
    private static final Logger LOG = LoggerFactory.getLogger(StandbyDisk.class);
    private static final long START_TIMEOUT_MS = 10_000;

    private final String vm;
    private final int index;
    private final VmSpec.Disk disk;
    private final Path socket;
    private final Path pidFile;
    private Process server;
    private NbdClient client;

    /** Disk {@code index} of {@code vm}, whose qemu-nbd (qcow2) has its socket and pid file in {@code dir}. */
    public StandbyDisk(final String vm, final int index, final VmSpec.Disk disk, final Path dir)
    {
        this.vm = vm;
        this.index = index;
        this.disk = disk;
        this.socket = dir.resolve("disk" + index + ".sock");
        this.pidFile = dir.resolve("disk" + index + ".nbd.pid");
    }

    public Path image()
    {
        return disk.image();
    }

    public VmSpec.DiskFormat format()
    {
        return disk.format();
    }

    /** Refuses, naming the file and what is wrong, a missing image or one whose guest-visible size is not {@code bytes}. */
    public void check(final long bytes, final long checkpointId) throws IOException
    {
        final Path img = disk.image();
        if (!Files.exists(img))
        {
            throw new IOException("vm " + vm + ": disk image " + img + " is missing");
        }
        if (!Files.isRegularFile(img))
        {
            throw new IOException("vm " + vm + ": disk image " + img + " is not a regular file");
        }
        final long size = ImageFiles.virtualSize(img, disk.format());
        if (size != bytes)
        {
            throw new IOException("vm " + vm + ": disk image " + img + " is " + size + " bytes, the primary's " +
                "disk " + index + " is " + bytes + " bytes (checkpoint " + checkpointId + "); both hosts need disks of " +
                "the same size");
        }
    }

    /** Where one apply writes: opened for it, {@link Writer#close closed} (flushed) at its end. */
    public interface Writer extends AutoCloseable
    {
        void write(long offset, ByteBuffer piece) throws IOException;

        @Override
        void close() throws IOException;
    }

    /** Opens the image for one apply; {@code zeroFirst}: a base, which starts from an empty image of {@code bytes}. */
    public Writer open(final long bytes, final boolean zeroFirst) throws IOException
    {
        if (disk.format() == VmSpec.DiskFormat.RAW)
        {
            final FileChannel f = FileChannel.open(disk.image(), StandardOpenOption.READ, StandardOpenOption.WRITE);
            try
            {
                if (zeroFirst)
                {
                    f.truncate(0);
                    f.write(ByteBuffer.allocate(1), bytes - 1);
                }
            }
            catch (final IOException ex)
            {
                f.close();
                throw ex;
            }
            return new Writer()
            {
                @Override
                public void write(final long offset, final ByteBuffer piece) throws IOException
                {
                    for (long p = offset; piece.hasRemaining(); )
                    {
                        p += f.write(piece, p);
                    }
                }

                @Override
                public void close() throws IOException
                {
                    f.close(); // not synced: as durable as the RAM image it goes with
                }
            };
        }
        if (zeroFirst)
        {
            release();
            recreateQcow2(bytes);
        }
        final NbdClient c = serve();
        // writes are pipelined (their answers collected at close, by the flush); after a failure the connection's
        // state is unknown, so qemu-nbd is stopped and the next apply (the redo log's, or the next checkpoint's)
        // starts a fresh one
        return new Writer()
        {
            @Override
            public void write(final long offset, final ByteBuffer piece) throws IOException
            {
                try
                {
                    c.write(offset, piece);
                }
                catch (final IOException | RuntimeException ex)
                {
                    release();
                    throw ex;
                }
            }

            @Override
            public void close() throws IOException
            {
                try
                {
                    c.flush();
                }
                catch (final IOException | RuntimeException ex)
                {
                    release();
                    throw ex;
                }
            }
        };
    }

    /** The connection to this disk's qemu-nbd, started if it does not run. */
    private NbdClient serve() throws IOException
    {
        if (client != null && server != null && server.isAlive())
        {
            return client;
        }
        release();
        Files.deleteIfExists(socket);
        final List<String> cmd = List.of("qemu-nbd", "--format=qcow2", "--cache=unsafe", "--persistent", "--shared=1",
            "--socket=" + socket, "--pid-file=" + pidFile, disk.image().toString());
        final Path log = socket.resolveSibling("disk" + index + ".nbd.out");
        server = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(START_TIMEOUT_MS);
        // the socket file appears at bind(), before qemu-nbd listens: a connect in between is refused, so retry
        while (true)
        {
            if (Files.exists(socket))
            {
                try
                {
                    client = NbdClient.connect(socket, "", List.of());
                    return client;
                }
                catch (final java.net.ConnectException notListeningYet)
                {
                    // again below
                }
            }
            if (!server.isAlive() || System.nanoTime() > deadline)
            {
                final String out = Files.exists(log) ? Files.readString(log).trim() : "";
                release();
                throw new IOException("vm " + vm + ": qemu-nbd for disk image " + disk.image() + " did not start" +
                    " within " + START_TIMEOUT_MS + " ms" + (out.isEmpty() ? "" : ": " + out));
            }
            sleep(2);
        }
    }

    /**
     * Stops this disk's qemu-nbd (also one an earlier agent left, by its pid file) so that QEMU or qemu-img may open
     * the image; what it was told is in the file (each apply flushed). Harmless when none runs.
     */
    public void release()
    {
        if (client != null)
        {
            client.close();
            client = null;
        }
        if (server != null)
        {
            server.destroy();
            try
            {
                if (!server.waitFor(START_TIMEOUT_MS, TimeUnit.MILLISECONDS))
                {
                    server.destroyForcibly().waitFor(START_TIMEOUT_MS, TimeUnit.MILLISECONDS);
                }
            }
            catch (final InterruptedException ex)
            {
                Thread.currentThread().interrupt();
            }
            server = null;
        }
        endLeftOver();
    }

    /** A qemu-nbd that a killed agent left on this disk: its pid file names it; ended if it serves our socket. */
    private void endLeftOver()
    {
        try
        {
            if (!Files.exists(pidFile))
            {
                return;
            }
            final long pid = Long.parseLong(Files.readString(pidFile).trim());
            final Path cmdline = Path.of("/proc/" + pid + "/cmdline");
            if (Files.exists(cmdline) && new String(Files.readAllBytes(cmdline), StandardCharsets.UTF_8)
                .contains("--socket=" + socket))
            {
                ProcessHandle.of(pid).ifPresent(h ->
                {
                    LOG.warn("vm={} ending qemu-nbd pid {} that an earlier colod left on {}", vm, pid, disk.image());
                    h.destroy();
                    h.onExit().orTimeout(START_TIMEOUT_MS, TimeUnit.MILLISECONDS).exceptionally(x -> null).join();
                });
            }
            Files.deleteIfExists(pidFile);
        }
        catch (final IOException | RuntimeException ex)
        {
            LOG.warn("vm={} could not check the qemu-nbd pid file {}: {}", vm, pidFile, ex.toString());
        }
    }

    /** The image created anew, empty, with the same backing file, size and cluster size. */
    private void recreateQcow2(final long bytes) throws IOException
    {
        final JsonNode info = new ObjectMapper().readTree(run(List.of("qemu-img", "info", "--output=json", "-U",
            disk.image().toString())));
        final List<String> cmd = new ArrayList<>(List.of("qemu-img", "create", "-q", "-f", "qcow2", "-o",
            "cluster_size=" + info.path("cluster-size").asLong(65536)));
        final String backing = info.path("backing-filename").asText("");
        if (!backing.isEmpty())
        {
            cmd.addAll(List.of("-b", backing, "-F", info.path("backing-filename-format").asText("raw")));
        }
        cmd.addAll(List.of(disk.image().toString(), Long.toString(bytes)));
        run(cmd);
    }

    private String run(final List<String> cmd) throws IOException
    {
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        try
        {
            if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0)
            {
                p.destroyForcibly();
                throw new IOException("vm " + vm + ": " + String.join(" ", cmd) + " failed: " + out);
            }
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted: " + String.join(" ", cmd), ex);
        }
        return out;
    }

    private static void sleep(final long ms)
    {
        try
        {
            Thread.sleep(ms);
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
        }
    }
}
