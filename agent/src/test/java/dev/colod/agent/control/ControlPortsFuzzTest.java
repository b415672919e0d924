package dev.colod.agent.control;

import dev.colod.core.ColoConfig;
import dev.colod.core.protocol.ProtocolTap;
import dev.colod.core.testing.EnginePair;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Whatever arrives at the control socket or the metrics endpoint (stalled clients, junk, a flood) never keeps
 * coloctl or a scrape from being answered.
 */
class ControlPortsFuzzTest
{
    @TempDir
    Path dir;
    private EnginePair pair;
    private ControlServer control;
    private MetricsServer metrics;
    private Path socket;
    private final List<AutoCloseable> open = new ArrayList<>();

    @BeforeEach
    void start() throws Exception
    {
        pair = new EnginePair(() -> EnginePair.fastConfig(ColoConfig.Mode.STRICT).checkpointDelayMs(50), 4096,
            ProtocolTap.NONE, ProtocolTap.NONE);
        final List<VmHandle> handles = List.of(VmHandle.primary("web1", pair.primary, List::of,
            () -> Map.of("write_tracking", "kernel"), Map::of));
        socket = dir.resolve("colod.sock");
        control = new ControlServer(socket, handles);
        metrics = new MetricsServer(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), handles);
    }

    @AfterEach
    void stop() throws Exception
    {
        for (final AutoCloseable c : open)
        {
            c.close();
        }
        metrics.close();
        control.close();
        pair.close();
    }

    private String status()
    {
        final StringWriter out = new StringWriter();
        final CommandLine cl = Coloctl.commandLine();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(new StringWriter()));
        assertThat(cl.execute("--socket", socket.toString(), "status")).isZero();
        return out.toString();
    }

    private SocketChannel unix() throws Exception
    {
        final SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX);
        c.connect(UnixDomainSocketAddress.of(socket));
        return c;
    }

    @Test
    @Timeout(60)
    void stalledJunkAndFloodingClientsNeverBlockColoctl() throws Exception
    {
        for (int i = 0; i < 5; i++)
        {
            open.add(unix()); // connected, never sends
        }
        assertThat(status()).contains("web1");
        final Random random = new Random(3);
        for (int i = 0; i < 200; i++)
        {
            try (SocketChannel c = unix())
            {
                final byte[] junk = new byte[1 + random.nextInt(5000)];
                random.nextBytes(junk);
                if (i % 3 == 0)
                {
                    junk[junk.length - 1] = '\n';
                }
                c.write(ByteBuffer.wrap(junk));
            }
            catch (final java.io.IOException ignore)
            {
                // the server may close first (request too long): fine
            }
        }
        for (int i = 0; i < 40; i++)
        {
            open.add(unix()); // more stalled clients than may be pending at once: the oldest are closed
        }
        assertThat(status()).contains("web1");
        assertThat(control.abandoned()).isPositive();
        // a well-formed but wrong request gets a clear error, not a hang
        try (SocketChannel c = unix())
        {
            c.write(ByteBuffer.wrap("{\"command\":\"reboot\"}\n".getBytes(StandardCharsets.UTF_8)));
            final ByteBuffer in = ByteBuffer.allocate(1024);
            while (c.read(in) > 0)
            {
                // until the server closes
            }
            assertThat(new String(in.array(), 0, in.position(), StandardCharsets.UTF_8)).contains("unknown command 'reboot'");
        }
    }

    @Test
    @Timeout(60)
    void stalledJunkAndFloodingClientsNeverBlockAScrape() throws Exception
    {
        for (int i = 0; i < 20; i++)
        {
            final Socket s = new Socket(InetAddress.getLoopbackAddress(), metrics.port());
            open.add(s);
        }
        final Random random = new Random(4);
        for (int i = 0; i < 200; i++)
        {
            try (Socket s = new Socket(InetAddress.getLoopbackAddress(), metrics.port()))
            {
                final byte[] junk = new byte[1 + random.nextInt(3000)];
                random.nextBytes(junk);
                s.getOutputStream().write(junk);
            }
            catch (final java.io.IOException ignore)
            {
                // refused or reset by the server: fine
            }
        }
        final java.net.http.HttpResponse<String> r = java.net.http.HttpClient.newHttpClient().send(
            java.net.http.HttpRequest.newBuilder(java.net.URI.create("http://127.0.0.1:" + metrics.port() + "/metrics"))
                .timeout(java.time.Duration.ofSeconds(10)).build(), java.net.http.HttpResponse.BodyHandlers.ofString());
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.body()).contains("colod_checkpoints_total");
    }
}
