package dev.colod.agent.qemu;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * A QMP client over QEMU's unix socket: greeting and capabilities negotiation, commands with deadlines
 * (matched to replies by id), asynchronous events (STOP, RESUME, SHUTDOWN, MIGRATION...) to listeners.
 * Thread-safe; one reader thread per connection.
 */
public final class QmpClient implements AutoCloseable
{
    private static final Logger LOG = LoggerFactory.getLogger(QmpClient.class);
    private static final ObjectMapper JSON = new ObjectMapper();

    private final SocketChannel channel;
    private final OutputStream out;
    private final BufferedReader in;
    private final String vm;
    private final Map<String, CompletableFuture<JsonNode>> pending = new ConcurrentHashMap<>();
    private final List<Consumer<JsonNode>> eventListeners = new CopyOnWriteArrayList<>();
    private final AtomicLong ids = new AtomicLong();
    private final Thread reader;
    private volatile IOException broken;

    private QmpClient(final SocketChannel channel, final String vm) throws IOException
    {
        this.channel = channel;
        this.vm = vm;
        // not Channels.newInputStream/newOutputStream: both lock the channel's blockingLock, so a reader blocked
        // in read() would stall every write
        this.out = new OutputStream()
        {
            @Override
            public void write(final int b) throws IOException
            {
                write(new byte[]{(byte)b}, 0, 1);
            }

            @Override
            public void write(final byte[] b, final int off, final int len) throws IOException
            {
                final ByteBuffer buf = ByteBuffer.wrap(b, off, len);
                while (buf.hasRemaining())
                {
                    channel.write(buf);
                }
            }
        };
        this.in = new BufferedReader(new InputStreamReader(new InputStream()
        {
            @Override
            public int read() throws IOException
            {
                final byte[] one = new byte[1];
                return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
            }

            @Override
            public int read(final byte[] b, final int off, final int len) throws IOException
            {
                return channel.read(ByteBuffer.wrap(b, off, len));
            }
        }, StandardCharsets.UTF_8));
        this.reader = new Thread(this::readLoop, "qmp-" + vm);
        this.reader.setDaemon(true);
    }

    /** Connects, reads the greeting and negotiates capabilities, retrying the connect until {@code timeoutMs}. */
    public static QmpClient connect(final Path socket, final String vm, final long timeoutMs) throws IOException
    {
        final long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        IOException last = null;
        while (System.nanoTime() - deadline < 0)
        {
            SocketChannel ch = null;
            try
            {
                ch = SocketChannel.open(StandardProtocolFamily.UNIX);
                ch.connect(UnixDomainSocketAddress.of(socket));
                final QmpClient c = new QmpClient(ch, vm);
                final String greeting = c.in.readLine();
                if (greeting == null || !JSON.readTree(greeting).has("QMP"))
                {
                    throw new IOException("QMP socket " + socket + " of vm " + vm + " sent no greeting: " + greeting);
                }
                c.reader.start();
                c.execute("qmp_capabilities", null, timeoutMs);
                return c;
            }
            catch (final IOException ex)
            {
                last = ex;
                if (ch != null)
                {
                    ch.close();
                }
                try
                {
                    Thread.sleep(20);
                }
                catch (final InterruptedException ie)
                {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while connecting to QMP of vm " + vm, ie);
                }
            }
        }
        throw new IOException("cannot connect to QMP socket " + socket + " of vm " + vm + " within " + timeoutMs + " ms: " +
            (last == null ? "timeout" : last.getMessage()), last);
    }

    /** True once QEMU closed the QMP socket or reading it failed. */
    public boolean isBroken()
    {
        return broken != null;
    }

    public void onEvent(final Consumer<JsonNode> listener)
    {
        eventListeners.add(listener);
    }

    /** Runs one command; returns its "return" value. Errors carry QEMU's class and description. */
    public JsonNode execute(final String command, final Map<String, ?> arguments, final long timeoutMs) throws IOException
    {
        if (broken != null)
        {
            throw new IOException("QMP connection of vm " + vm + " is closed: " + broken.getMessage(), broken);
        }
        final String id = Long.toString(ids.incrementAndGet());
        final ObjectNode msg = JSON.createObjectNode();
        msg.put("execute", command);
        if (arguments != null && !arguments.isEmpty())
        {
            msg.set("arguments", JSON.valueToTree(arguments));
        }
        msg.put("id", id);
        final CompletableFuture<JsonNode> reply = new CompletableFuture<>();
        pending.put(id, reply);
        try
        {
            final byte[] bytes = (JSON.writeValueAsString(msg) + "\n").getBytes(StandardCharsets.UTF_8);
            synchronized (out)
            {
                out.write(bytes);
                out.flush();
            }
            LOG.debug("vm={} qmp -> {}", vm, msg);
            final JsonNode r = reply.get(timeoutMs, TimeUnit.MILLISECONDS);
            if (r.has("error"))
            {
                throw new QmpException(command, r.path("error").path("class").asText("?"),
                    r.path("error").path("desc").asText("?"));
            }
            return r.path("return");
        }
        catch (final TimeoutException ex)
        {
            throw new QmpException(command, "Timeout", "no reply from vm " + vm + " within " + timeoutMs + " ms");
        }
        catch (final InterruptedException ex)
        {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted waiting for QMP " + command, ex);
        }
        catch (final ExecutionException ex)
        {
            throw new IOException("QMP " + command + " of vm " + vm + " failed: " + ex.getCause().getMessage(), ex.getCause());
        }
        finally
        {
            pending.remove(id);
        }
    }

    private void readLoop()
    {
        try
        {
            String line;
            while ((line = in.readLine()) != null)
            {
                final JsonNode n = JSON.readTree(line);
                if (n.has("event"))
                {
                    LOG.debug("vm={} qmp event {}", vm, n);
                    for (final Consumer<JsonNode> l : eventListeners)
                    {
                        l.accept(n);
                    }
                    continue;
                }
                LOG.debug("vm={} qmp <- {}", vm, n);
                final CompletableFuture<JsonNode> f = pending.get(n.path("id").asText(""));
                if (f != null)
                {
                    f.complete(n);
                }
            }
            broken = new IOException("QEMU closed the QMP socket");
        }
        catch (final IOException ex)
        {
            broken = ex;
        }
        for (final CompletableFuture<JsonNode> f : pending.values())
        {
            f.completeExceptionally(broken);
        }
    }

    @Override
    public void close()
    {
        try
        {
            channel.close();
        }
        catch (final IOException ignore)
        {
            // closing
        }
    }
}
