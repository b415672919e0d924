package dev.colod.core.bench;

import dev.colod.core.ColoConfig;
import dev.colod.core.NanoClock;
import dev.colod.core.PrimaryEngine;
import dev.colod.core.SecondaryEngine;
import dev.colod.core.Transport;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.spi.OutputCommit;
import dev.colod.core.spi.StateCapture;
import dev.colod.core.spi.VmStateSink;
import dev.colod.core.spi.VmStateSource;
import dev.colod.core.status.ColoCounters;
import dev.colod.core.testing.MemoryVm;

import java.io.DataInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.Locale;

/**
 * Checkpoint transactions per second over loopback TCP for 0 B, 1 MiB and 64 MiB of state, side by side with
 * a raw TCP ping-pong and a raw bulk transfer on the same machine in the same run.
 * Run: {@code mvn -q -pl colo-core test-compile exec:java -Dexec.classpathScope=test
 * -Dexec.mainClass=dev.colod.core.bench.CheckpointBench}
 */
public final class CheckpointBench
{
    private static final int CHUNK = 256 * 1024;

    public static void main(final String[] args) throws Exception
    {
        final double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 3.0;
        System.out.printf(Locale.ROOT, "# colo-core checkpoint benchmark, loopback, %.1f s per point, %s%n", seconds,
            Runtime.version());
        final double rttUs = pingPongMicros(seconds);
        System.out.printf(Locale.ROOT, "raw TCP ping-pong (4 B each way): %.1f us per round trip%n", rttUs);
        final double rawGBs = bulkGBs(64 << 20, seconds);
        System.out.printf(Locale.ROOT, "raw TCP bulk (64 MiB, 256 KiB writes): %.2f GB/s%n", rawGBs);

        for (final int size : new int[]{0, 1 << 20, 64 << 20})
        {
            final double[] r = checkpoints(size, seconds);
            final double perSec = r[0];
            final double usPer = 1e6 / perSec;
            final double gbs = size * perSec / 1e9;
            System.out.printf(Locale.ROOT,
                "checkpoint %8d B: %8.1f /s, %9.1f us each (%.2fx three raw round trips), %.2f GB/s (%.2f of raw bulk)," +
                " pause p50 %d us%n", size, perSec, usPer, usPer / (3 * rttUs), gbs, gbs / rawGBs, (long)r[1]);
        }
    }

    static double pingPongMicros(final double seconds) throws Exception
    {
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress()))
        {
            final Thread echo = new Thread(() ->
            {
                try (Socket s = server.accept())
                {
                    s.setTcpNoDelay(true);
                    final InputStream in = s.getInputStream();
                    final OutputStream out = s.getOutputStream();
                    final byte[] b = new byte[4];
                    while (in.readNBytes(b, 0, 4) == 4)
                    {
                        out.write(b);
                    }
                }
                catch (final Exception ignore)
                {
                    // client closed
                }
            });
            echo.start();
            try (Socket c = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))
            {
                c.setTcpNoDelay(true);
                final byte[] b = new byte[4];
                final InputStream in = c.getInputStream();
                final OutputStream out = c.getOutputStream();
                for (int i = 0; i < 5_000; i++)
                {
                    out.write(b);
                    in.readNBytes(b, 0, 4);
                }
                long n = 0;
                final long start = System.nanoTime();
                final long end = start + (long)(seconds * 1e9);
                long now;
                do
                {
                    for (int i = 0; i < 1000; i++)
                    {
                        out.write(b);
                        in.readNBytes(b, 0, 4);
                    }
                    n += 1000;
                    now = System.nanoTime();
                }
                while (now < end);
                return (now - start) / 1e3 / n;
            }
            finally
            {
                echo.join();
            }
        }
    }

    static double bulkGBs(final int size, final double seconds) throws Exception
    {
        try (ServerSocket server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress()))
        {
            final Thread sink = new Thread(() ->
            {
                try (Socket s = server.accept())
                {
                    final DataInputStream in = new DataInputStream(s.getInputStream());
                    final OutputStream out = s.getOutputStream();
                    final byte[] staging = new byte[size];
                    while (true)
                    {
                        int done = 0;
                        while (done < size)
                        {
                            final int r = in.read(staging, done, Math.min(CHUNK, size - done));
                            if (r < 0)
                            {
                                return;
                            }
                            done += r;
                        }
                        out.write(1);
                    }
                }
                catch (final Exception ignore)
                {
                    // client closed
                }
            });
            sink.start();
            try (Socket c = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort()))
            {
                c.setTcpNoDelay(true);
                final byte[] data = new byte[size];
                final OutputStream out = c.getOutputStream();
                final InputStream in = c.getInputStream();
                long n = 0;
                final long start = System.nanoTime();
                final long end = start + (long)(seconds * 1e9);
                long now;
                do
                {
                    for (int off = 0; off < size; off += CHUNK)
                    {
                        out.write(data, off, Math.min(CHUNK, size - off));
                    }
                    in.read();
                    n++;
                    now = System.nanoTime();
                }
                while (now < end || n < 3);
                return (double)n * size / ((now - start) / 1e9) / 1e9;
            }
            finally
            {
                sink.join();
            }
        }
    }

    /** Returns {checkpoints per second, pause p50 us}. */
    static double[] checkpoints(final int size, final double seconds) throws Exception
    {
        return checkpoints(size, seconds, Transport.DEFAULT, Transport.DEFAULT);
    }

    /** Checkpoints per second and pause p50 µs, with the secondary and primary on the given transports (e.g. TLS). */
    public static double[] checkpoints(final int size, final double seconds, final Transport secondaryTransport,
        final Transport primaryTransport) throws Exception
    {
        final byte[] state = new byte[size];
        final FixedSource source = new FixedSource(state);
        final PreallocatedSink sink = new PreallocatedSink(size);
        final ColoConfig cfg = new ColoConfig().vmName("bench").checkpointDelayMs(0).maxStateBytes(Math.max(1, size))
            .transferTimeoutMs(60_000);
        try (SecondaryEngine sec = new SecondaryEngine(cfg.conclude(), new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            sink, new ColoCounters(), ProtocolTap.NONE, NanoClock.SYSTEM).transport(secondaryTransport).start())
        {
            final ColoConfig pcfg = new ColoConfig().vmName("bench").checkpointDelayMs(0).maxStateBytes(Math.max(1, size))
                .transferTimeoutMs(60_000).conclude();
            final ColoCounters counters = new ColoCounters();
            try (PrimaryEngine pri = new PrimaryEngine(pcfg, sec.localAddress(), source, OutputCommit.NONE,
                counters, ProtocolTap.NONE, NanoClock.SYSTEM).transport(primaryTransport).start())
            {
                final long warm = size >= (64 << 20) ? 3 : 200;
                while (counters.checkpointsCompleted.get() < warm)
                {
                    Thread.sleep(1);
                }
                counters.pauseMicros.reset();
                final long c0 = counters.checkpointsCompleted.get();
                final long t0 = System.nanoTime();
                Thread.sleep((long)(seconds * 1000));
                final long c1 = counters.checkpointsCompleted.get();
                final long t1 = System.nanoTime();
                return new double[]{(c1 - c0) / ((t1 - t0) / 1e9), counters.pauseMicros.getValueAtPercentile(50)};
            }
        }
    }

    /** A paused VM whose state is a fixed array: measures the protocol, not a copy. */
    static final class FixedSource implements VmStateSource
    {
        private final byte[] state;

        FixedSource(final byte[] state)
        {
            this.state = state;
        }

        @Override
        public void beginSession(final long firstCheckpointId)
        {
        }

        @Override
        public void pause()
        {
        }

        @Override
        public StateCapture capture(final long checkpointId)
        {
            return new MemoryVm.ArrayCapture(state);
        }

        @Override
        public void resume()
        {
        }
    }

    /** Staging and committed images allocated once; commit swaps them, as a real double-buffered sink would. */
    static final class PreallocatedSink implements VmStateSink
    {
        private byte[] staging;
        private byte[] committed;
        private int pos;
        private volatile long last;

        PreallocatedSink(final int size)
        {
            staging = new byte[size];
            committed = new byte[size];
        }

        @Override
        public long lastCommitted()
        {
            return last;
        }

        @Override
        public void stage(final long checkpointId, final long sizeBytes)
        {
            pos = 0;
        }

        @Override
        public void stageWrite(final byte[] buf, final int off, final int len)
        {
            System.arraycopy(buf, off, staging, pos, len);
            pos += len;
        }

        @Override
        public void commit(final long checkpointId)
        {
            final byte[] t = committed;
            committed = staging;
            staging = t;
            last = checkpointId;
        }

        @Override
        public void discard(final long checkpointId)
        {
        }

        @Override
        public void activate(final long checkpointId)
        {
        }
    }
}
